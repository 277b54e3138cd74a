// Attention and rotary-embedding kernels against float64 references: forward (out, lse), backward
// vs central finite differences and vs the analytic float64 gradients, rope at large positions,
// determinism, argument validation. The whole file runs a second time in a child process with
// LORATUNE_ATTENTION_PORTABLE=1 to cover the portable kernels.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { native } from "../src/backend/native.js";
import { uniform } from "./helpers.js";


function randomF32(n: number, r: () => number, amp = 1): Float32Array {
  const x = new Float32Array(n);
  for (let i = 0; i < n; i++) x[i] = (r() * 2 - 1) * amp;
  return x;
}

interface Shape {
  T: number;
  S: number;
  Hq: number;
  Hkv: number;
  D: number;
  offset: number;
  scale: number;
}

function shape(T: number, S: number, Hq: number, Hkv: number, D: number, offset = S - T): Shape {
  return { T, S, Hq, Hkv, D, offset, scale: Math.fround(1 / Math.sqrt(D)) };
}

// ---- float64 references

function attnRef(s: Shape, q: ArrayLike<number>, k: ArrayLike<number>, v: ArrayLike<number>) {
  const { T, S, Hq, Hkv, D, offset, scale } = s;
  const G = Hq / Hkv;
  const out = new Float64Array(T * Hq * D);
  const lse = new Float64Array(Hq * T);
  const P = new Float64Array(Hq * T * S); // probabilities, 0 where masked
  const sc = new Float64Array(S);
  for (let h = 0; h < Hq; h++) {
    const g = Math.floor(h / G);
    for (let t = 0; t < T; t++) {
      const p = offset + t;
      let m = -Infinity;
      for (let j = 0; j < S; j++) {
        if (j > p) {
          sc[j] = -Infinity;
          continue;
        }
        let dot = 0;
        for (let d = 0; d < D; d++) dot += q[(t * Hq + h) * D + d] * k[(j * Hkv + g) * D + d];
        sc[j] = scale * dot;
        m = Math.max(m, sc[j]);
      }
      let l = 0;
      for (let j = 0; j < S; j++) l += j > p ? 0 : Math.exp(sc[j] - m);
      lse[h * T + t] = m + Math.log(l);
      for (let j = 0; j <= Math.min(p, S - 1); j++) {
        const pj = Math.exp(sc[j] - m) / l;
        P[(h * T + t) * S + j] = pj;
        for (let d = 0; d < D; d++) out[(t * Hq + h) * D + d] += pj * v[(j * Hkv + g) * D + d];
      }
    }
  }
  return { out, lse, P };
}

/** Analytic float64 gradients of sum(dOut * attention(q, k, v)). */
function attnGradRef(s: Shape, q: ArrayLike<number>, k: ArrayLike<number>, v: ArrayLike<number>,
  dOut: ArrayLike<number>) {
  const { T, S, Hq, Hkv, D, scale } = s;
  const G = Hq / Hkv;
  const { out, P } = attnRef(s, q, k, v);
  const dq = new Float64Array(T * Hq * D);
  const dk = new Float64Array(S * Hkv * D);
  const dv = new Float64Array(S * Hkv * D);
  for (let h = 0; h < Hq; h++) {
    const g = Math.floor(h / G);
    for (let t = 0; t < T; t++) {
      const row = (t * Hq + h) * D;
      let di = 0;
      for (let d = 0; d < D; d++) di += dOut[row + d] * out[row + d];
      for (let j = 0; j < S; j++) {
        const p = P[(h * T + t) * S + j];
        if (p === 0) continue;
        const kr = (j * Hkv + g) * D;
        let dp = 0;
        for (let d = 0; d < D; d++) dp += dOut[row + d] * v[kr + d];
        const ds = p * (dp - di);
        for (let d = 0; d < D; d++) {
          dq[row + d] += scale * ds * k[kr + d];
          dk[kr + d] += scale * ds * q[row + d];
          dv[kr + d] += p * dOut[row + d];
        }
      }
    }
  }
  return { dq, dk, dv };
}

function invFreqF32(D: number, theta: number): number[] {
  const f: number[] = [];
  for (let i = 0; i < D / 2; i++) {
    const e = Math.fround((2 * i) / D);
    f.push(Math.fround(1 / Math.fround(Math.pow(Math.fround(theta), e))));
  }
  return f;
}

function ropeRef(T: number, H: number, D: number, theta: number, pos: Int32Array, x: ArrayLike<number>,
  inverse: boolean): Float64Array {
  const out = Float64Array.from(x);
  const inv = invFreqF32(D, theta);
  const half = D / 2;
  for (let t = 0; t < T; t++) {
    for (let i = 0; i < half; i++) {
      const a = Math.fround(Math.fround(pos[t]) * inv[i]); // PyTorch: float32 angle
      const c = Math.cos(a);
      const sn = inverse ? -Math.sin(a) : Math.sin(a);
      for (let h = 0; h < H; h++) {
        const b = (t * H + h) * D;
        const x1 = x[b + i], x2 = x[b + i + half];
        out[b + i] = x1 * c - x2 * sn;
        out[b + i + half] = x1 * sn + x2 * c;
      }
    }
  }
  return out;
}

// ---- helpers

function maxErr(actual: ArrayLike<number>, expected: ArrayLike<number>, n = expected.length) {
  let err = 0, scale = 0;
  for (let i = 0; i < n; i++) {
    assert.ok(Number.isFinite(actual[i]), `non-finite value at ${i}: ${actual[i]}`);
    err = Math.max(err, Math.abs(actual[i] - expected[i]));
    scale = Math.max(scale, Math.abs(expected[i]));
  }
  return { err, scale };
}

function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, rel: number, what: string) {
  assert.equal(actual.length >= expected.length, true, `${what}: too short`);
  const { err, scale } = maxErr(actual, expected);
  assert.ok(err <= rel * Math.max(scale, 1e-3), `${what}: max error ${err} vs scale ${scale} (rel ${rel})`);
}

function inputs(s: Shape, seed: number) {
  const r = uniform(seed);
  return {
    q: randomF32(s.T * s.Hq * s.D, r, 1.5),
    k: randomF32(s.S * s.Hkv * s.D, r, 1.5),
    v: randomF32(s.S * s.Hkv * s.D, r),
    dOut: randomF32(s.T * s.Hq * s.D, r),
  };
}

function forward(s: Shape, q: Float32Array, k: Float32Array, v: Float32Array) {
  const out = new Float32Array(s.T * s.Hq * s.D).fill(NaN);
  const lse = new Float32Array(s.Hq * s.T).fill(NaN);
  native.attentionForward(s.T, s.S, s.Hq, s.Hkv, s.D, s.offset, s.scale, q, k, v, out, lse);
  return { out, lse };
}

function backward(s: Shape, x: ReturnType<typeof inputs>) {
  const { out, lse } = forward(s, x.q, x.k, x.v);
  const dq = new Float32Array(x.q.length).fill(NaN);
  const dk = new Float32Array(x.k.length).fill(NaN);
  const dv = new Float32Array(x.v.length).fill(NaN);
  native.attentionBackward(s.T, s.S, s.Hq, s.Hkv, s.D, s.offset, s.scale, x.q, x.k, x.v, out, lse, x.dOut, dq, dk, dv);
  return { dq, dk, dv };
}

// Start the thread pool before the first parallel call: native/threadpool.cc's workers can miss a
// loop that is posted before they have started (their first generation_ read races with run()).
native.numThreads();
await new Promise((resolve) => setTimeout(resolve, 50));

const name = (s: Shape) => `T=${s.T} S=${s.S} Hq=${s.Hq} Hkv=${s.Hkv} D=${s.D} offset=${s.offset}`;

// ---- forward

test("attentionForward matches the float64 reference (out and lse)", () => {
  const shapes = [
    shape(1, 1, 1, 1, 1),
    shape(5, 5, 4, 1, 8),
    shape(7, 7, 2, 2, 6),
    shape(3, 9, 2, 1, 10), // cache: offset 6
    shape(1, 13, 8, 1, 16), // decode
    shape(2, 6, 2, 1, 4, 1), // offset + T < S: keys beyond are masked
    shape(130, 130, 8, 1, 16), // several row blocks and key tiles, threaded
    shape(100, 170, 4, 2, 20), // D tail, offset 70
    shape(70, 70, 3, 3, 2),
    shape(1, 2100, 2, 1, 16), // long decode: the key range is split and merged
    shape(3, 2500, 4, 2, 24),
  ];
  let seed = 1;
  for (const s of shapes) {
    const { q, k, v } = inputs(s, seed++);
    const ref = attnRef(s, q, k, v);
    const got = forward(s, q, k, v);
    assertClose(got.out, ref.out, 1e-5, `out ${name(s)}`);
    assertClose(got.lse, ref.lse, 1e-6, `lse ${name(s)}`);
    // lse may be omitted
    const out2 = new Float32Array(got.out.length);
    native.attentionForward(s.T, s.S, s.Hq, s.Hkv, s.D, s.offset, s.scale, q, k, v, out2, null);
    assert.deepEqual(out2, got.out);
  }
});

test("attentionForward with large scores stays finite and exact (online softmax rescaling)", () => {
  const s = { ...shape(100, 100, 2, 1, 16), scale: 4 };
  const { q, k, v } = inputs(s, 99);
  const ref = attnRef(s, q, k, v);
  const got = forward(s, q, k, v);
  assertClose(got.out, ref.out, 2e-5, "out");
  assertClose(got.lse, ref.lse, 1e-6, "lse");
});

// ---- backward

function fdGrads(s: Shape, x: ReturnType<typeof inputs>) {
  const q = Float64Array.from(x.q), k = Float64Array.from(x.k), v = Float64Array.from(x.v);
  const loss = () => {
    const { out } = attnRef(s, q, k, v);
    let L = 0;
    for (let i = 0; i < out.length; i++) L += out[i] * x.dOut[i];
    return L;
  };
  const eps = 1e-6;
  const grad = (a: Float64Array) => {
    const g = new Float64Array(a.length);
    for (let i = 0; i < a.length; i++) {
      const a0 = a[i];
      a[i] = a0 + eps;
      const lp = loss();
      a[i] = a0 - eps;
      const lm = loss();
      a[i] = a0;
      g[i] = (lp - lm) / (2 * eps);
    }
    return g;
  };
  return { dq: grad(q), dk: grad(k), dv: grad(v) };
}

test("attentionBackward matches central finite differences of the float64 reference", () => {
  const shapes = [
    shape(5, 5, 4, 1, 8), // GQA
    shape(7, 7, 2, 2, 6), // MHA, odd T
    shape(2, 5, 2, 1, 4), // cache: offset 3, T < S
    shape(1, 4, 2, 2, 4), // T = 1
    shape(2, 6, 2, 1, 4, 1), // keys beyond offset + T get zero gradients
    shape(9, 9, 4, 2, 3),
  ];
  let seed = 100;
  for (const s of shapes) {
    const x = inputs(s, seed++);
    const got = backward(s, x);
    const fd = fdGrads(s, x);
    assertClose(got.dq, fd.dq, 2e-5, `dq ${name(s)}`);
    assertClose(got.dk, fd.dk, 2e-5, `dk ${name(s)}`);
    assertClose(got.dv, fd.dv, 2e-5, `dv ${name(s)}`);
    // the analytic reference used below agrees with the finite differences
    const an = attnGradRef(s, x.q, x.k, x.v, x.dOut);
    assertClose(an.dq, fd.dq, 1e-7, `ref dq ${name(s)}`);
    assertClose(an.dk, fd.dk, 1e-7, `ref dk ${name(s)}`);
    assertClose(an.dv, fd.dv, 1e-7, `ref dv ${name(s)}`);
  }
});

test("attentionBackward matches the analytic float64 gradients on multi-tile shapes", () => {
  const shapes = [
    shape(130, 130, 4, 1, 16),
    shape(80, 150, 4, 2, 20), // offset 70, D tail, rows copied (1 < G < Hq)
    shape(67, 67, 2, 2, 8),
    shape(40, 200, 3, 1, 6, 100), // offset + T < S
  ];
  let seed = 200;
  for (const s of shapes) {
    const x = inputs(s, seed++);
    const got = backward(s, x);
    const an = attnGradRef(s, x.q, x.k, x.v, x.dOut);
    assertClose(got.dq, an.dq, 2e-5, `dq ${name(s)}`);
    assertClose(got.dk, an.dk, 2e-5, `dk ${name(s)}`);
    assertClose(got.dv, an.dv, 2e-5, `dv ${name(s)}`);
  }
});

test("attentionBackward recomputes P and dS when keeping them would take more than 64 MB", () => {
  // 81 row blocks of 72 rows x about 20 key tiles of 72, P and dS: 68 MB of tiles, past the limit.
  const s = shape(2900, 2900, 2, 1, 4);
  const x = inputs(s, 300);
  const got = backward(s, x);
  const an = attnGradRef(s, x.q, x.k, x.v, x.dOut);
  assertClose(got.dq, an.dq, 2e-5, `dq ${name(s)}`);
  assertClose(got.dk, an.dk, 2e-5, `dk ${name(s)}`);
  assertClose(got.dv, an.dv, 2e-5, `dv ${name(s)}`);
});

test("attention is bit-for-bit deterministic and independent of the thread count", async () => {
  const s = shape(160, 160, 4, 1, 64);
  const x = inputs(s, 7);
  const threads = native.numThreads();
  const a = backward(s, x);
  const fa = forward(s, x.q, x.k, x.v);
  native.setNumThreads(1);
  try {
    const b = backward(s, x);
    const fb = forward(s, x.q, x.k, x.v);
    assert.deepEqual(b, a);
    assert.deepEqual(fb, fa);
  } finally {
    native.setNumThreads(threads);
  }
  await new Promise((resolve) => setTimeout(resolve, 50)); // let the new workers start (see above)
  assert.deepEqual(backward(s, x), a);
});

// ---- rope

test("rope matches the float32-angle reference up to position 8192, and inverse undoes it", () => {
  const cases = [
    { T: 6, H: 3, D: 16, theta: 10000 },
    { T: 40, H: 2, D: 256, theta: 10000 },
    { T: 9, H: 1, D: 2, theta: 500000 },
    { T: 700, H: 2, D: 128, theta: 10000 }, // the angle table is built on several threads
  ];
  const r = uniform(11);
  for (const c of cases) {
    const pos = new Int32Array(c.T);
    for (let t = 0; t < c.T; t++) pos[t] = t < 3 ? t : Math.floor(r() * 8193);
    pos[c.T - 1] = 8192;
    const x = randomF32(c.T * c.H * c.D, r);
    const y = x.slice();
    native.rope(c.T, c.H, c.D, c.theta, pos, y, false);
    const ref = ropeRef(c.T, c.H, c.D, c.theta, pos, x, false);
    const { err } = maxErr(y, ref);
    assert.ok(err < 1e-6, `rope D=${c.D}: max error ${err}`);
    const refInv = ropeRef(c.T, c.H, c.D, c.theta, pos, x, true);
    const yi = x.slice();
    native.rope(c.T, c.H, c.D, c.theta, pos, yi, true);
    assert.ok(maxErr(yi, refInv).err < 1e-6, "inverse rope vs reference");
    native.rope(c.T, c.H, c.D, c.theta, pos, y, true);
    assert.ok(maxErr(y, x).err < 1e-6, "inverse(rope(x)) == x");
  }
});

test("rope's reused angle table follows a change of positions or theta", () => {
  const r = uniform(12);
  const T = 300, H = 1, D = 64;
  const pos = Int32Array.from({ length: T }, (_, t) => t);
  const x = randomF32(T * H * D, r);
  const check = (theta: number, label: string) => {
    const y = x.slice();
    native.rope(T, H, D, theta, pos, y, false);
    assert.ok(maxErr(y, ropeRef(T, H, D, theta, pos, x, false)).err < 1e-6, label);
  };
  check(10000, "first call");
  check(10000, "same positions, the table reused");
  pos[T - 1] = 5000;
  check(10000, "one position changed");
  check(500000, "theta changed");
});

test("rope uses the half-split layout (known values at position 1)", () => {
  const x = new Float32Array([1, 0, 0, 0]); // D = 4: pairs (x0, x2) and (x1, x3)
  native.rope(1, 1, 4, 10000, new Int32Array([1]), x, false);
  assert.ok(Math.abs(x[0] - Math.cos(1)) < 1e-7 && Math.abs(x[2] - Math.sin(1)) < 1e-7, `${x}`);
  assert.equal(x[1], 0);
  assert.equal(x[3], 0);
});

// ---- validation

test("bad arguments throw errors instead of aborting", () => {
  const f = (n: number) => new Float32Array(n);
  const fwd = (T: number, S: number, Hq: number, Hkv: number, D: number, off: number,
    q = f(T * Hq * D), k = f(S * Hkv * D), v = f(S * Hkv * D), out = f(T * Hq * D),
    lse: Float32Array | null = f(Hq * T)) => () => native.attentionForward(T, S, Hq, Hkv, D, off, 0.5, q, k, v, out, lse);
  const err = { code: "LORATUNE_NATIVE" };
  assert.throws(fwd(2, 2, 3, 2, 4, 0), /multiple of Hkv/);
  assert.throws(fwd(2, 2, 2, 1, 4, 1), /exceeds S/);
  assert.throws(fwd(2, 2, 0, 1, 4, 0), /at least 1/);
  assert.throws(fwd(2, 2, 2, 1, 4, 0, f(15)), /q has 15 elements, needs 16/);
  assert.throws(fwd(2, 2, 2, 1, 4, 0, undefined, f(7)), /k has 7/);
  assert.throws(fwd(2, 2, 2, 1, 4, 0, undefined, undefined, f(7)), /v has 7/);
  assert.throws(fwd(2, 2, 2, 1, 4, 0, undefined, undefined, undefined, f(15)), /out has 15/);
  assert.throws(fwd(2, 2, 2, 1, 4, 0, undefined, undefined, undefined, undefined, f(3)), /lse has 3/);
  assert.throws(() => native.attentionForward(-1, 2, 2, 1, 4, 0, 0.5, f(16), f(8), f(8), f(16), null),
    /non-negative integer/);
  assert.throws(() => native.attentionForward(1.5, 2, 2, 1, 4, 0, 0.5, f(16), f(8), f(8), f(16), null),
    /non-negative integer/);
  assert.doesNotThrow(fwd(2, 2, 2, 1, 4, 0));
  const q = f(16);
  assert.throws(() => native.attentionForward(2, 2, 2, 1, 4, 0, 0.5, q, f(8), f(8), q, null), /must not overlap/);
  assert.throws(() => native.attentionForward(2, 2, 2, 1, 4, 0, 0.5, new Float64Array(16) as unknown as Float32Array,
    f(8), f(8), f(16), null), /Float32Array/);
  assert.throws(() => native.attentionForward(2, 2, 2, 1, 4, 0, NaN, f(16), f(8), f(8), f(16), null), /scale/);
  try {
    fwd(2, 2, 3, 2, 4, 0)();
    assert.fail("no error");
  } catch (e) {
    assert.equal((e as { code?: string }).code, err.code);
  }
  // backward
  const bwd = (lse: Float32Array, dk: Float32Array) => () =>
    native.attentionBackward(2, 2, 2, 1, 4, 0, 0.5, f(16), f(8), f(8), f(16), lse, f(16), f(16), dk, f(8));
  assert.doesNotThrow(bwd(f(4), f(8)));
  assert.throws(bwd(f(3), f(8)), /lse has 3/);
  assert.throws(bwd(f(4), f(7)), /dk has 7/);
  assert.throws(() => native.attentionBackward(2, 2, 2, 1, 4, 0, 0.5, f(16), f(8), f(8), f(16), null as unknown as
    Float32Array, f(16), f(16), f(8), f(8)), /lse is missing/);
  const dk = f(8);
  assert.throws(() => native.attentionBackward(2, 2, 2, 1, 4, 0, 0.5, f(16), f(8), f(8), f(16), f(4), f(16), f(16),
    dk, dk), /must not overlap/);
  // rope
  const pos = new Int32Array(2);
  assert.throws(() => native.rope(2, 1, 3, 10000, pos, f(6), false), /even/);
  assert.throws(() => native.rope(2, 1, 4, 10000, pos, f(7), false), /x has 7/);
  assert.throws(() => native.rope(2, 1, 4, 10000, new Int32Array(1), f(8), false), /positions has 1/);
  assert.throws(() => native.rope(2, 1, 4, 0, pos, f(8), false), /theta/);
  assert.throws(() => native.rope(2, 1, 4, 10000, new Float32Array(2) as unknown as Int32Array, f(8), false),
    /Int32Array/);
  // empty calls are fine
  native.attentionForward(0, 0, 1, 1, 4, 0, 0.5, f(0), f(0), f(0), f(0), null);
  native.rope(0, 1, 4, 10000, new Int32Array(0), f(0), false);
});

test("the portable kernels pass the same tests", { skip: process.env.LORATUNE_ATTENTION_PORTABLE === "1" }, () => {
  const env: NodeJS.ProcessEnv = { ...process.env, LORATUNE_ATTENTION_PORTABLE: "1" };
  delete env.NODE_TEST_CONTEXT; // run as a test process of its own, reporting to us through its exit code
  // Only the attention tests: rope and the argument checks do not depend on the kernel choice.
  const report = execFileSync(process.execPath, ["--test-reporter=tap", "--test-name-pattern=attention",
    fileURLToPath(import.meta.url)], { env, encoding: "utf8" });
  assert.match(report, /# pass 6\n/);
  assert.match(report, /# fail 0\n/);
});
