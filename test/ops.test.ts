// Tests of the element-wise / row-wise native kernels (native/ops.cc) against float64 references,
// central finite differences, the gemma-tiny AdamW golden values and exhaustive conversion tables.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import path from "node:path";
import { native } from "../src/backend/native.js";
import { uniform } from "./helpers.js";

const here = path.dirname(fileURLToPath(import.meta.url));
// Works from test/ (ts sources) and from dist/test/ (compiled).
const repoRoot = path.basename(path.dirname(here)) === "dist" ? path.resolve(here, "../..") : path.resolve(here, "..");

// ---------------------------------------------------------------------------------------------
// Helpers


function normals(n: number, seed: number, std = 1, mean = 0): Float32Array {
  const r = uniform(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const u = Math.max(r(), 1e-12);
    out[i] = mean + std * Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * r());
  }
  return out;
}

function toF64(a: ArrayLike<number>): Float64Array {
  return Float64Array.from(a as ArrayLike<number>);
}

/** |got - want| <= atol + rtol * |want| elementwise; reports the worst element. */
function assertClose(got: ArrayLike<number>, want: ArrayLike<number>, atol: number, rtol: number, what: string): void {
  assert.equal(got.length, want.length, `${what}: length`);
  let worst = -1;
  let worstExcess = 0;
  for (let i = 0; i < got.length; i++) {
    const g = got[i];
    const w = want[i];
    if (Number.isNaN(w) && Number.isNaN(g)) continue;
    const excess = Math.abs(g - w) - (atol + rtol * Math.abs(w));
    if (!(excess <= 0) && (worst < 0 || !(excess <= worstExcess))) {
      worst = i;
      worstExcess = excess;
    }
  }
  if (worst >= 0) assert.fail(`${what}: element ${worst} is ${got[worst]}, expected ${want[worst]} (atol ${atol}, rtol ${rtol})`);
}

/** Central finite-difference gradient of a float64 function with respect to every element of x. */
function fdGrad(f: () => number, x: Float64Array, h = 1e-6): Float64Array {
  const g = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) {
    const x0 = x[i];
    const hi = h * Math.max(1, Math.abs(x0));
    x[i] = x0 + hi;
    const fp = f();
    x[i] = x0 - hi;
    const fm = f();
    x[i] = x0;
    g[i] = (fp - fm) / (2 * hi);
  }
  return g;
}

const f32bits = (x: number): number => new Uint32Array(Float32Array.of(x).buffer)[0];
const bitsF32 = (b: number): number => new Float32Array(Uint32Array.of(b).buffer)[0];

function bf16Decode(h: number): number {
  return bitsF32((h & 0xffff) << 16 >>> 0);
}

/** Independent bf16 round-to-nearest-even: picks the nearer of the two bf16 neighbours in float64. */
function bf16Ref(bits: number): number {
  bits >>>= 0;
  const exp = (bits >>> 23) & 0xff;
  const mant = bits & 0x7fffff;
  if (exp === 0xff && mant !== 0) return ((bits >>> 16) | 0x40) & 0xffff;  // NaN stays (quiet) NaN
  if (exp === 0xff) return bits >>> 16;  // inf
  const f = Math.abs(bitsF32(bits));
  const sign = bits >>> 31;
  const lo = (bits >>> 16) & 0x7fff;  // truncated magnitude
  const vLo = bf16Decode(lo);
  const vHi = lo + 1 === 0x7f80 ? 2 ** 128 : bf16Decode(lo + 1);
  const dl = f - vLo;
  const du = vHi - f;
  const mag = dl < du ? lo : du < dl ? lo + 1 : (lo & 1) === 0 ? lo : lo + 1;
  return ((sign << 15) | mag) & 0xffff;
}

/** IEEE half -> number (exact). */
function f16Decode(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >>> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

function bf16Array(a: Float32Array): Uint16Array {
  const out = new Uint16Array(a.length);
  for (let i = 0; i < a.length; i++) out[i] = bf16Ref(f32bits(a[i]));
  return out;
}

function throwsNative(fn: () => unknown, message: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof Error, "an Error");
    assert.equal((e as { code?: string }).code, "LORATUNE_NATIVE");
    assert.match(e.message, message);
    return true;
  });
}

// ---------------------------------------------------------------------------------------------
// float64 references

function rmsnormRef(T: number, dim: number, eps: number, addOne: boolean, x: Float64Array, w: Float64Array): Float64Array {
  const out = new Float64Array(T * dim);
  for (let t = 0; t < T; t++) {
    let ss = 0;
    for (let j = 0; j < dim; j++) ss += x[t * dim + j] ** 2;
    const r = 1 / Math.sqrt(ss / dim + eps);
    for (let j = 0; j < dim; j++) out[t * dim + j] = x[t * dim + j] * r * (addOne ? 1 + w[j] : w[j]);
  }
  return out;
}

const K0 = Math.sqrt(2 / Math.PI);
// PyTorch's gelu(approximate='tanh'), 0.5 x (1 + tanh(u)), written as x * sigmoid(2u) (the same function)
// so that float64 keeps its precision for negative x, where 1 + tanh(u) cancels.
const geluRef = (x: number): number => x / (1 + Math.exp(-2 * K0 * (x + 0.044715 * x * x * x)));
const siluRef = (x: number): number => x / (1 + Math.exp(-x));
const actRef = (kind: number, x: number): number => (kind === 0 ? geluRef(x) : siluRef(x));

function ceLossRef(V: number, row: ArrayLike<number>, off: number, target: number): number {
  if (target < 0) return 0;
  let m = -Infinity;
  for (let i = 0; i < V; i++) m = Math.max(m, row[off + i]);
  let s = 0;
  for (let i = 0; i < V; i++) s += Math.exp(row[off + i] - m);
  return m + Math.log(s) - row[off + target];
}

// ---------------------------------------------------------------------------------------------
// embedding

test("embedding gathers and scales rows (f32 and bf16 tables)", () => {
  const T = 7, dim = 45, rows = 11;
  const ids = Int32Array.from([3, 0, 10, 3, 7, 3, 1]);
  const table = normals(rows * dim, 1);
  const tableBf = bf16Array(table);
  const scale = Math.sqrt(dim);
  const fs = Math.fround(scale);
  for (const tb of [table, tableBf]) {
    const out = new Float32Array(T * dim).fill(NaN);
    native.embedding(T, dim, rows, scale, ids, tb, out);
    for (let t = 0; t < T; t++)
      for (let j = 0; j < dim; j++) {
        const v = tb instanceof Uint16Array ? bf16Decode(tb[ids[t] * dim + j]) : tb[ids[t] * dim + j];
        assert.equal(out[t * dim + j], Math.fround(v * fs));
      }
  }
  // Large enough to run on threads.
  const T2 = 900, dim2 = 64, rows2 = 50;
  const ids2 = Int32Array.from({ length: T2 }, (_, i) => (i * 7) % rows2);
  const tb2 = normals(rows2 * dim2, 2);
  const out2 = new Float32Array(T2 * dim2);
  native.embedding(T2, dim2, rows2, 1, ids2, tb2, out2);
  for (let t = 0; t < T2; t++) assert.equal(out2[t * dim2 + 5], tb2[ids2[t] * dim2 + 5]);
});

test("embeddingBackward accumulates repeated ids (finite differences)", () => {
  const T = 6, dim = 19, rows = 5;
  const ids = Int32Array.from([2, 4, 2, 0, 2, 4]);
  const scale = 1.5;
  const dOut = normals(T * dim, 3);
  const dTable = normals(rows * dim, 4);
  const before = toF64(dTable);
  native.embeddingBackward(T, dim, rows, scale, ids, dOut, dTable);
  // L(table) = sum dOut * embedding(table); dL/dtable by finite differences of the float64 forward.
  const tab64 = toF64(normals(rows * dim, 5));
  const L = (): number => {
    let s = 0;
    for (let t = 0; t < T; t++) for (let j = 0; j < dim; j++) s += dOut[t * dim + j] * scale * tab64[ids[t] * dim + j];
    return s;
  };
  const g = fdGrad(L, tab64);
  const want = before.map((b, i) => b + g[i]);
  assertClose(dTable, want, 1e-5, 1e-5, "dTable");
  // Rows never referenced keep their old values exactly.
  for (const r of [1, 3]) for (let j = 0; j < dim; j++) assert.equal(dTable[r * dim + j], Math.fround(before[r * dim + j]));

  // A large case split over threads by columns, with many repeats.
  const T2 = 400, dim2 = 256, rows2 = 3;
  const ids2 = Int32Array.from({ length: T2 }, (_, i) => i % rows2);
  const d2 = normals(T2 * dim2, 6);
  const tab2 = new Float32Array(rows2 * dim2);
  native.embeddingBackward(T2, dim2, rows2, 1, ids2, d2, tab2);
  const want2 = new Float64Array(rows2 * dim2);
  for (let t = 0; t < T2; t++) for (let j = 0; j < dim2; j++) want2[ids2[t] * dim2 + j] += d2[t * dim2 + j];
  assertClose(tab2, want2, 2e-5, 1e-5, "dTable (large)");
});

// ---------------------------------------------------------------------------------------------
// RMSNorm

test("rmsnorm forward matches float64 (addOne true/false, f32 and bf16 weights)", () => {
  for (const [T, dim] of [[3, 37], [33, 1029], [2, 5]] as const) {
    const x = normals(T * dim, 10 + dim, 2, 0.3);
    const w = normals(dim, 11 + dim, 0.1);
    for (const addOne of [true, false]) {
      for (const wArr of [w, bf16Array(w)]) {
        const w64 = wArr instanceof Uint16Array ? Float64Array.from(wArr, bf16Decode) : toF64(wArr);
        const out = new Float32Array(T * dim);
        const rstd = new Float32Array(T);
        native.rmsnorm(T, dim, 1e-6, addOne, x, wArr, out, rstd);
        assertClose(out, rmsnormRef(T, dim, 1e-6, addOne, toF64(x), w64), 1e-6, 1e-6, `rmsnorm out ${T}x${dim} addOne=${addOne}`);
        for (let t = 0; t < T; t++) {
          let ss = 0;
          for (let j = 0; j < dim; j++) ss += x[t * dim + j] ** 2;
          assertClose([rstd[t]], [1 / Math.sqrt(ss / dim + 1e-6)], 0, 1e-6, "rstd");
        }
      }
    }
  }
});

test("rmsnormBackward: dx and dw against finite differences", () => {
  const T = 3, dim = 37;
  for (const addOne of [true, false]) {
    const x = normals(T * dim, 20, 1.5, 0.2);
    const w = normals(dim, 21, 0.3, addOne ? 0 : 1);
    const dOut = normals(T * dim, 22);
    const out = new Float32Array(T * dim);
    const rstd = new Float32Array(T);
    native.rmsnorm(T, dim, 1e-5, addOne, x, w, out, rstd);
    const dx = new Float32Array(T * dim).fill(NaN);
    const dw = normals(dim, 23);  // accumulated into
    const dw0 = toF64(dw);
    native.rmsnormBackward(T, dim, addOne, x, w, rstd, dOut, dx, dw);

    const x64 = toF64(x), w64 = toF64(w);
    const L = (): number => {
      const y = rmsnormRef(T, dim, 1e-5, addOne, x64, w64);
      let s = 0;
      for (let i = 0; i < y.length; i++) s += y[i] * dOut[i];
      return s;
    };
    const gx = fdGrad(L, x64);
    const gw = fdGrad(L, w64);
    assertClose(dx, gx, 2e-5, 1e-4, `dx addOne=${addOne}`);
    assertClose(dw, dw0.map((v, i) => v + gw[i]), 2e-5, 1e-4, `dw addOne=${addOne}`);

    // dw null leaves only dx; bf16 weights give the same dx as their f32 decode.
    const dx2 = new Float32Array(T * dim);
    const wb = bf16Array(w);
    native.rmsnormBackward(T, dim, addOne, x, wb, rstd, dOut, dx2, null);
    const dx3 = new Float32Array(T * dim);
    native.rmsnormBackward(T, dim, addOne, x, Float32Array.from(wb, bf16Decode), rstd, dOut, dx3, null);
    assert.deepEqual(dx2, dx3);
  }
  // Threaded sizes: compare with the analytic float64 gradient.
  const T2 = 20, dim2 = 2053;
  const x = normals(T2 * dim2, 30), w = normals(dim2, 31, 0.1), dOut = normals(T2 * dim2, 32);
  const out = new Float32Array(T2 * dim2), rstd = new Float32Array(T2);
  native.rmsnorm(T2, dim2, 1e-6, true, x, w, out, rstd);
  const dx = new Float32Array(T2 * dim2), dw = new Float32Array(dim2);
  native.rmsnormBackward(T2, dim2, true, x, w, rstd, dOut, dx, dw);
  const wantDx = new Float64Array(T2 * dim2), wantDw = new Float64Array(dim2);
  for (let t = 0; t < T2; t++) {
    let ss = 0, s = 0;
    for (let j = 0; j < dim2; j++) ss += x[t * dim2 + j] ** 2;
    const r = 1 / Math.sqrt(ss / dim2 + 1e-6);
    for (let j = 0; j < dim2; j++) s += dOut[t * dim2 + j] * (1 + w[j]) * x[t * dim2 + j];
    for (let j = 0; j < dim2; j++) {
      const i = t * dim2 + j;
      wantDx[i] = r * (1 + w[j]) * dOut[i] - (x[i] * r * r * r * s) / dim2;
      wantDw[j] += dOut[i] * x[i] * r;
    }
  }
  assertClose(dx, wantDx, 1e-5, 1e-4, "dx (large)");
  assertClose(dw, wantDw, 1e-5, 1e-4, "dw (large)");
});

// ---------------------------------------------------------------------------------------------
// Gated activations

test("gatedActivation forward and backward (GELU-tanh and SiLU)", () => {
  const n = 203;
  const gate = normals(n, 40, 2.5);
  gate.set([0, -0, 30, -30, 1e-20, -1e-20, 8, -8, 100, -100], 0);
  const up = normals(n, 41);
  const dOut = normals(n, 42);
  for (const kind of [0, 1]) {
    const out = new Float32Array(n);
    native.gatedActivation(n, kind, gate, up, out);
    const want = Float64Array.from(gate, (g, i) => actRef(kind, g) * up[i]);
    assertClose(out, want, 1e-9, 2e-6, `forward kind=${kind}`);
    // and the tanh form itself
    for (let i = 0; i < n; i++) {
      const g = gate[i];
      const t = kind === 0 ? 0.5 * g * (1 + Math.tanh(K0 * (g + 0.044715 * g * g * g))) : g / (1 + Math.exp(-g));
      assert.ok(Math.abs(out[i] - t * up[i]) <= 1e-6 * (1 + Math.abs(t * up[i])), `tanh form ${g}`);
    }

    const dGate = new Float32Array(n).fill(NaN), dUp = new Float32Array(n).fill(NaN);
    native.gatedActivationBackward(n, kind, gate, up, dOut, dGate, dUp);
    // Element-wise function: central differences one element at a time.
    const fdAt = (f: (v: number) => number, v: number): number => {
      const h = 1e-6 * Math.max(1, Math.abs(v));
      return (f(v + h) - f(v - h)) / (2 * h);
    };
    const wantGate = Float64Array.from(gate, (g, i) => fdAt((v) => dOut[i] * actRef(kind, v) * up[i], g));
    const wantUp = Float64Array.from(up, (u, i) => fdAt((v) => dOut[i] * actRef(kind, gate[i]) * v, u));
    assertClose(dGate, wantGate, 1e-6, 1e-4, `dGate kind=${kind}`);
    assertClose(dUp, wantUp, 1e-6, 1e-4, `dUp kind=${kind}`);
  }
  // Threaded sizes agree with the single-call results chunk by chunk.
  const N = 40003;
  const g = normals(N, 43, 3), u = normals(N, 44), d = normals(N, 45);
  for (const kind of [0, 1]) {
    const out = new Float32Array(N);
    native.gatedActivation(N, kind, g, u, out);
    const dG = new Float32Array(N), dU = new Float32Array(N);
    native.gatedActivationBackward(N, kind, g, u, d, dG, dU);
    for (const i of [0, 7, 8, 12345, 32768, N - 1]) {
      assertClose([out[i]], [actRef(kind, g[i]) * u[i]], 1e-9, 2e-6, `large forward ${i}`);
      assertClose([dU[i]], [actRef(kind, g[i]) * d[i]], 1e-9, 2e-6, `large dUp ${i}`);
    }
  }
});

// ---------------------------------------------------------------------------------------------
// Cross-entropy

test("crossEntropy: loss, argmax, gradient (finite differences), gradScale and ignored rows", () => {
  const R = 4, V = 301;
  const logits = normals(R * V, 50, 3);
  const targets = Int32Array.from([5, 300, -1, 0]);
  const gradScale = Float32Array.from([0.5, 1, 2, 1 / 3]);
  const orig = Float32Array.from(logits);

  // Without gradScale the logits are left alone.
  const loss = new Float32Array(R), argmax = new Int32Array(R);
  native.crossEntropy(R, V, logits, targets, loss, argmax, null);
  assert.deepEqual(logits, orig);
  for (let r = 0; r < R; r++) {
    assertClose([loss[r]], [ceLossRef(V, orig, r * V, targets[r])], 2e-6, 1e-6, `loss ${r}`);
    let best = 0;
    for (let i = 1; i < V; i++) if (orig[r * V + i] > orig[r * V + best]) best = i;
    assert.equal(argmax[r], best, `argmax ${r}`);
  }
  assert.equal(loss[2], 0);

  const loss2 = new Float32Array(R), argmax2 = new Int32Array(R);
  native.crossEntropy(R, V, logits, targets, loss2, argmax2, gradScale);
  assert.deepEqual(loss2, loss);
  assert.deepEqual(argmax2, argmax);
  // d/dlogits of sum_r gradScale[r] * loss_r, by finite differences of the float64 loss, row by row.
  for (let r = 0; r < R; r++) {
    const row = toF64(orig.subarray(r * V, (r + 1) * V));
    const g = fdGrad(() => gradScale[r] * ceLossRef(V, row, 0, targets[r]), row, 1e-5);
    assertClose(logits.subarray(r * V, (r + 1) * V), g, 2e-8, 1e-4, `gradient row ${r}`);
  }
  assert.ok(logits.subarray(2 * V, 3 * V).every((v) => v === 0), "ignored row has zero gradient");
});

test("crossEntropy on long rows is accurate (softmax per element, ties, tiny V)", () => {
  const R = 3, V = 70001;
  const logits = normals(R * V, 60, 4);
  logits[V + 100] = 30; logits[V + 60000] = 30;  // a tie: first index wins
  logits[2 * V + 70000] = 25;  // max in the scalar tail
  const targets = Int32Array.from([12345, 70000, 3]);
  const gs = Float32Array.from([1, 0.25, 3]);
  const orig = Float32Array.from(logits);
  const loss = new Float32Array(R), argmax = new Int32Array(R);
  native.crossEntropy(R, V, logits, targets, loss, argmax, gs);
  assert.equal(argmax[1], 100);
  assert.equal(argmax[2], 70000);
  for (let r = 0; r < R; r++) {
    const lse = ceLossRef(V, orig, r * V, targets[r]) + orig[r * V + targets[r]];
    assertClose([loss[r]], [lse - orig[r * V + targets[r]]], 5e-6, 1e-6, `loss ${r}`);
    const want = new Float64Array(V);
    for (let i = 0; i < V; i++) want[i] = (Math.exp(orig[r * V + i] - lse) - (i === targets[r] ? 1 : 0)) * gs[r];
    // each softmax entry to ~1e-6 relative: exercises the vectorised exp
    assertClose(logits.subarray(r * V, (r + 1) * V), want, 1e-12, 2e-6, `softmax row ${r}`);
  }
  // V < 8 and V = 1
  const l = new Float32Array(2), a = new Int32Array(2);
  const small = Float32Array.from([1, 2, 3, 1, 2, 3]);
  native.crossEntropy(2, 3, small, Int32Array.from([2, 0]), l, a, null);
  assertClose(l, [ceLossRef(3, [1, 2, 3], 0, 2), ceLossRef(3, [1, 2, 3], 0, 0)], 1e-6, 1e-6, "V=3");
  assert.deepEqual([...a], [2, 2]);
  const one = Float32Array.of(5);
  native.crossEntropy(1, 1, one, Int32Array.of(0), l, a, Float32Array.of(1));
  assert.equal(l[0], 0);
  assert.equal(one[0], 0);
  // -inf logits (masked vocabulary) contribute nothing
  const masked = Float32Array.from([-Infinity, 0, 0, -Infinity, -Infinity, -Infinity, -Infinity, -Infinity, -Infinity, 0]);
  native.crossEntropy(1, 10, masked, Int32Array.of(1), l, a, Float32Array.of(1));
  assertClose([l[0]], [Math.log(3)], 1e-6, 1e-6, "masked loss");
  assert.equal(masked[0], 0);
  assertClose([masked[1], masked[2]], [1 / 3 - 1, 1 / 3], 1e-7, 1e-6, "masked grad");
  // A NaN or +inf logit gives a NaN loss and gradient (as PyTorch does), never a silently finite one.
  for (const bad of [NaN, Infinity]) {
    for (const V2 of [5, 40]) {
      const row = normals(V2, 61);
      row[V2 - 2] = bad;
      native.crossEntropy(1, V2, row, Int32Array.of(1), l, a, Float32Array.of(1));
      assert.ok(Number.isNaN(l[0]), `loss with ${bad} (V=${V2})`);
      assert.ok(row.every(Number.isNaN), `gradient with ${bad}`);
    }
  }
});

// ---------------------------------------------------------------------------------------------
// AdamW

function readSafetensors(file: string): Map<string, { dtype: string; shape: number[]; data: Float32Array | Int32Array }> {
  const buf = readFileSync(file);
  const headerLen = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + headerLen).toString("utf8")) as Record<
    string,
    { dtype: string; shape: number[]; data_offsets: [number, number] }
  >;
  const base = 8 + headerLen;
  const out = new Map<string, { dtype: string; shape: number[]; data: Float32Array | Int32Array }>();
  for (const [name, info] of Object.entries(header)) {
    if (name === "__metadata__") continue;
    const [b, e] = info.data_offsets;
    const bytes = new Uint8Array(buf.subarray(base + b, base + e));  // copied: aligned
    const data = info.dtype === "F32" ? new Float32Array(bytes.buffer) : info.dtype === "I32" ? new Int32Array(bytes.buffer) : null;
    if (data) out.set(name, { dtype: info.dtype, shape: info.shape, data });
  }
  return out;
}

test("adamw matches the gemma-tiny golden step (Torch and Keras variants)", () => {
  const st = readSafetensors(path.join(repoRoot, "test/fixtures/gemma-tiny/golden.safetensors"));
  const targets = ["model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj",
    "model.layers.1.self_attn.q_proj", "model.layers.1.self_attn.v_proj"];
  let checked = 0;
  let variantsDiffer = 0;
  for (const t of targets) {
    for (const ab of ["lora_A", "lora_B"]) {
      const init = st.get(`lora.init.${t}.${ab}.weight`)!.data as Float32Array;
      const grad = st.get(`lora.grad.${t}.${ab}.weight`)!.data as Float32Array;
      const results: Float32Array[] = [];
      for (const [variant, key] of [[1, "adamw_torch"], [0, "adamw_keras"]] as const) {
        const want = st.get(`lora.${key}.${t}.${ab}.weight`)!.data as Float32Array;
        const n = init.length;
        const p = Float32Array.from(init), m = new Float32Array(n), v = new Float32Array(n);
        native.adamw(n, p, grad, m, v, 1e-3, 0.9, 0.999, 1e-7, 0.01, 1, variant);
        assertClose(p, want, 1e-7, 0, `${key} ${t}.${ab}`);
        assertClose(m, Float64Array.from(grad, (g) => 0.1 * g), 1e-12, 1e-6, "m");
        assertClose(v, Float64Array.from(grad, (g) => 0.001 * g * g), 1e-20, 1e-6, "v");
        results.push(p);
        checked++;
      }
      for (let i = 0; i < init.length; i++) variantsDiffer = Math.max(variantsDiffer, Math.abs(results[0][i] - results[1][i]));
    }
  }
  assert.equal(checked, 16);
  assert.ok(variantsDiffer > 1e-5, "the two epsilon placements are distinguishable");
});

test("adamw over several steps matches float64 formulas", () => {
  for (const n of [1003, 40003]) {
    const p0 = normals(n, 70, 0.5), g0 = normals(n, 71, 1e-2);
    for (const variant of [0, 1]) {
      const p = Float32Array.from(p0), m = new Float32Array(n), v = new Float32Array(n);
      const P = toF64(p0), M = new Float64Array(n), Vv = new Float64Array(n);
      const lr = 2e-3, b1 = 0.9, b2 = 0.95, eps = 1e-6, wd = 0.1;
      for (let step = 1; step <= 3; step++) {
        const g = g0.map((x, i) => x * (1 + 0.3 * step) + 1e-3 * Math.sin(i + step));
        native.adamw(n, p, g, m, v, lr, b1, b2, eps, wd, step, variant);
        const bc1 = 1 - b1 ** step, bc2 = 1 - b2 ** step;
        for (let i = 0; i < n; i++) {
          if (variant === 0) P[i] -= P[i] * wd * lr;
          else P[i] *= 1 - lr * wd;
          M[i] = b1 * M[i] + (1 - b1) * g[i];
          Vv[i] = b2 * Vv[i] + (1 - b2) * g[i] * g[i];
          if (variant === 0) P[i] -= (M[i] * lr * Math.sqrt(bc2) / bc1) / (Math.sqrt(Vv[i]) + eps);
          else P[i] -= lr * (M[i] / bc1) / (Math.sqrt(Vv[i] / bc2) + eps);
        }
      }
      assertClose(p, P, 2e-7, 1e-6, `adamw n=${n} variant=${variant}`);
      assertClose(m, M, 1e-9, 1e-5, "m");
      assertClose(v, Vv, 1e-12, 1e-5, "v");
    }
  }
});

// ---------------------------------------------------------------------------------------------
// BLAS-1

test("add, axpy, scale, sumSquares (small, tails and threaded sizes, aliasing)", () => {
  for (const n of [0, 1, 7, 8, 9, 1001, 40001]) {
    const a = normals(n, 80 + n), b = normals(n, 81 + n);
    const out = new Float32Array(n);
    native.add(n, a, b, out);
    assert.deepEqual(out, Float32Array.from(a, (x, i) => x + b[i]));
    const alias = Float32Array.from(a);
    native.add(n, alias, b, alias);
    assert.deepEqual(alias, out);

    const y = Float32Array.from(b);
    native.axpy(n, 0.75, a, y);
    assertClose(y, Float64Array.from(b, (x, i) => x + 0.75 * a[i]), 1e-6, 1e-6, `axpy n=${n}`);

    const s = Float32Array.from(a);
    native.scale(n, -0.5, s);
    assert.deepEqual(s, Float32Array.from(a, (x) => x * -0.5));

    let ss = 0;
    for (let i = 0; i < n; i++) ss += a[i] * a[i];
    const got = native.sumSquares(n, a);
    assert.ok(Math.abs(got - ss) <= 1e-12 * Math.max(1, ss), `sumSquares n=${n}: ${got} vs ${ss}`);
  }
  // Only the first n elements are touched.
  const x = Float32Array.from([1, 2, 3, 4]);
  native.scale(2, 10, x);
  assert.deepEqual([...x], [10, 20, 3, 4]);
  assert.equal(native.sumSquares(3, Float32Array.from([3, 4, 12, 100])), 169);
});

// ---------------------------------------------------------------------------------------------
// Conversions

test("bf16ToF32 and f16ToF32 are exact over all 65536 inputs", () => {
  const all = Uint16Array.from({ length: 65536 }, (_, i) => i);
  const f = new Float32Array(65536);
  native.bf16ToF32(65536, all, f);
  const fb = new Uint32Array(f.buffer);
  for (let i = 0; i < 65536; i++) assert.equal(fb[i], (i << 16) >>> 0, `bf16 ${i}`);

  const h = new Float32Array(65536);
  native.f16ToF32(65536, all, h);
  const hb = new Uint32Array(h.buffer);
  for (let i = 0; i < 65536; i++) {
    const want = f16Decode(i);
    if (Number.isNaN(want)) {
      // NaN keeps sign and payload: sign | all-ones exponent | mantissa << 13
      assert.equal(hb[i], (((i & 0x8000) << 16) | 0x7f800000 | ((i & 0x3ff) << 13)) >>> 0, `f16 NaN ${i}`);
    } else {
      assert.ok(Object.is(h[i], want), `f16 ${i.toString(16)}: ${h[i]} vs ${want}`);
    }
  }
});

test("f32ToBf16 rounds to nearest even; NaN stays NaN", () => {
  const cases: Array<[number, number]> = [
    [0x3f800000, 0x3f80], [0x3f808000, 0x3f80], [0x3f818000, 0x3f82], [0x3f808001, 0x3f81], [0x3f807fff, 0x3f80],
    [0x80000000, 0x8000], [0x00000000, 0x0000], [0x7f800000, 0x7f80], [0xff800000, 0xff80],
    [0x7fc00000, 0x7fc0], [0x7f800001, 0x7fc0], [0xff800001, 0xffc0], [0xffffffff, 0xffff], [0x7fffffff, 0x7fff],
    [0x7f7fffff, 0x7f80], [0xff7fffff, 0xff80], [0x7f7f7fff, 0x7f7f], [0x7f7f8000, 0x7f80],
    [0x00000001, 0x0000], [0x00008000, 0x0000], [0x00018000, 0x0002], [0x80008001, 0x8001],
  ];
  const src = new Float32Array(new Uint32Array(cases.map((c) => c[0])).buffer);
  const dst = new Uint16Array(cases.length);
  native.f32ToBf16(cases.length, src, dst);
  for (let i = 0; i < cases.length; i++) {
    assert.equal(dst[i], cases[i][1], `0x${cases[i][0].toString(16)} -> 0x${dst[i].toString(16)}`);
    assert.equal(bf16Ref(cases[i][0]), cases[i][1], "reference agrees");
  }
  // Random bit patterns, including the odd-length tail.
  const n = 50001;
  const r = uniform(90);
  const bits = Uint32Array.from({ length: n }, () => Math.floor(r() * 4294967296));
  const out = new Uint16Array(n);
  native.f32ToBf16(n, new Float32Array(bits.buffer), out);
  for (let i = 0; i < n; i++) if (out[i] !== bf16Ref(bits[i])) assert.fail(`0x${bits[i].toString(16)} -> 0x${out[i].toString(16)}`);
  // Round trip of bf16 values is exact.
  const back = new Float32Array(n);
  native.bf16ToF32(n, out, back);
  const again = new Uint16Array(n);
  native.f32ToBf16(n, back, again);
  assert.deepEqual(again, out);
});

test("f16ToBf16 over all 65536 inputs", () => {
  const all = Uint16Array.from({ length: 65536 }, (_, i) => i);
  const out = new Uint16Array(65536);
  native.f16ToBf16(65536, all, out);
  for (let i = 0; i < 65536; i++) {
    const want = bf16Ref(f32bits(f16Decode(i)));
    const v = f16Decode(i);
    if (Number.isNaN(v)) {
      assert.ok(Number.isNaN(bf16Decode(out[i])), `NaN ${i}`);
      assert.equal(out[i] & 0x8000, i & 0x8000, "NaN sign");
    } else if (out[i] !== want) {
      assert.fail(`f16 0x${i.toString(16)} (${v}) -> 0x${out[i].toString(16)}, want 0x${want.toString(16)}`);
    }
  }
});

// ---------------------------------------------------------------------------------------------
// Errors (thrown, never aborting)

test("bad sizes, ids, targets, kinds and array types throw JavaScript errors", () => {
  const f = (n: number) => new Float32Array(n);
  throwsNative(() => native.add(4, f(3), f(4), f(4)), /a has 3 elements, needs 4/);
  throwsNative(() => native.add(4, f(4), f(4), f(2)), /out has 2 elements, needs 4/);
  throwsNative(() => native.add(-1, f(4), f(4), f(4)), /n must be a non-negative integer/);
  throwsNative(() => native.add(1.5, f(4), f(4), f(4)), /n must be a non-negative integer/);
  throwsNative(() => native.scale(2, 1, new Float64Array(2) as unknown as Float32Array), /x must be a typed array|x must be a Float32Array/);
  throwsNative(() => native.axpy(2, 1, new Int32Array(2) as unknown as Float32Array, f(2)), /x must be a Float32Array/);
  throwsNative(() => native.sumSquares(2, [1, 2] as unknown as Float32Array), /x must be a typed array/);
  throwsNative(() => (native.add as unknown as (n: number) => void)(2), /argument a is missing/);

  throwsNative(() => native.embedding(3, 2, 4, 1, Int32Array.from([0, 4, 1]), f(8), f(6)), /ids\[1\] = 4 is out of range \[0, 4\)/);
  throwsNative(() => native.embedding(3, 2, 4, 1, Int32Array.from([0, 1, -7]), f(8), f(6)), /ids\[2\] = -7/);
  throwsNative(() => native.embedding(3, 2, 4, 1, Float32Array.from([0, 1, 2]) as unknown as Int32Array, f(8), f(6)), /ids must be an Int32Array/);
  throwsNative(() => native.embedding(3, 2, 4, 1, Int32Array.from([0, 1, 2]), f(7), f(6)), /table has 7 elements, needs 8/);
  throwsNative(() => native.embedding(3, 2, 4, 1, Int32Array.from([0, 1, 2]), new Int32Array(8) as unknown as Float32Array, f(6)), /table must be a Float32Array or a Uint16Array/);
  throwsNative(() => native.embeddingBackward(2, 2, 4, 1, Int32Array.from([0, 9]), f(4), f(8)), /ids\[1\] = 9/);

  throwsNative(() => native.rmsnorm(2, 3, 1e-6, true, f(5), f(3), f(6), f(2)), /x has 5 elements, needs 6/);
  throwsNative(() => native.rmsnorm(2, 3, 1e-6, true, f(6), f(3), f(6), f(1)), /rstd has 1 elements, needs 2/);
  throwsNative(() => native.rmsnorm(2, 3, 1e-6, true, f(6), new Uint8Array(3) as unknown as Float32Array, f(6), f(2)), /w must be a Float32Array or a Uint16Array/);
  throwsNative(() => native.rmsnormBackward(2, 3, true, f(6), f(3), f(2), f(6), f(6), f(2)), /dw has 2 elements, needs 3/);

  throwsNative(() => native.gatedActivation(2, 2 as never, f(2), f(2), f(2)), /kind must be 0 \(GeluTanh\) or 1 \(Silu\)/);
  throwsNative(() => native.gatedActivationBackward(3, 0, f(3), f(3), f(3), f(2), f(3)), /dGate has 2 elements, needs 3/);

  const ce = (targets: number[], V = 5) =>
    native.crossEntropy(targets.length, V, f(targets.length * V), Int32Array.from(targets), f(targets.length), new Int32Array(targets.length), null);
  throwsNative(() => ce([0, 5]), /targets\[1\] = 5 is out of range \[0, 5\)/);
  throwsNative(() => ce([-2]), /targets\[0\] = -2/);
  throwsNative(() => native.crossEntropy(2, 5, f(9), Int32Array.from([0, 1]), f(2), new Int32Array(2), null), /logits has 9 elements, needs 10/);
  throwsNative(() => native.crossEntropy(2, 5, f(10), Int32Array.from([0, 1]), f(2), new Int32Array(2), f(1)), /gradScale has 1 elements, needs 2/);
  throwsNative(() => native.crossEntropy(1, 5, f(5), Int32Array.from([0]), f(1), f(1) as unknown as Int32Array, null), /argmax must be an Int32Array/);
  // A failed call leaves the logits untouched (targets are checked before any row is processed).
  const lg = Float32Array.from([1, 2, 3, 4]);
  assert.throws(() => native.crossEntropy(2, 2, lg, Int32Array.from([0, 7]), f(2), new Int32Array(2), f(2)));
  assert.deepEqual([...lg], [1, 2, 3, 4]);

  throwsNative(() => native.adamw(2, f(2), f(2), f(2), f(2), 1e-3, 0.9, 0.999, 1e-7, 0, 0, 0), /step counts from 1/);
  throwsNative(() => native.adamw(2, f(2), f(2), f(2), f(2), 1e-3, 0.9, 0.999, 1e-7, 0, 1, 3 as never), /variant must be 0 \(Keras\) or 1 \(Torch\)/);
  throwsNative(() => native.adamw(2, f(2), f(2), f(1), f(2), 1e-3, 0.9, 0.999, 1e-7, 0, 1, 0), /m has 1 elements, needs 2/);

  throwsNative(() => native.bf16ToF32(2, f(2) as unknown as Uint16Array, f(2)), /src must be a Uint16Array/);
  throwsNative(() => native.f32ToBf16(3, f(3), new Uint16Array(2)), /dst has 2 elements, needs 3/);
  throwsNative(() => native.f16ToBf16(1, new Uint16Array(1), f(1) as unknown as Uint16Array), /dst must be a Uint16Array/);
});

// ---------------------------------------------------------------------------------------------
// The portable (non-AVX2) loops: rerun this file in a child process with them forced.

test("the portable kernels pass the same tests", { skip: process.env.LORATUNE_OPS_PORTABLE === "1" }, () => {
  const env: NodeJS.ProcessEnv = { ...process.env, LORATUNE_OPS_PORTABLE: "1" };
  delete env.NODE_TEST_CONTEXT;
  const r = spawnSync(process.execPath, [fileURLToPath(import.meta.url)], { env, encoding: "utf8", timeout: 60_000 });
  assert.equal(r.status, 0, `portable run failed:\n${r.stdout}\n${r.stderr}`);
});
