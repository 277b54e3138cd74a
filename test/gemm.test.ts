// GEMM against a float64 reference: odd sizes, all transposes, bf16 B, alpha/beta, strided views,
// every kernel this CPU can run, and argument errors (thrown, never a crash).
import { test } from "node:test";
import assert from "node:assert/strict";
import { native } from "../src/backend/native.js";
import { uniform } from "./helpers.js";

/** Values in [-1, 1). */
function rng(seed: number): () => number {
  const u = uniform(seed);
  return () => u() * 2 - 1;
}

function fill(n: number, r: () => number): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = r();
  return a;
}

// bf16 by truncation of random floats is fine for a test: the kernel only widens.
function toBf16(x: Float32Array): { bits: Uint16Array; values: Float32Array } {
  const u = new Uint32Array(x.buffer.slice(x.byteOffset, x.byteOffset + x.byteLength));
  const bits = new Uint16Array(x.length);
  const w = new Uint32Array(x.length);
  for (let i = 0; i < x.length; i++) {
    bits[i] = u[i] >>> 16;
    w[i] = bits[i] << 16;
  }
  return { bits, values: new Float32Array(w.buffer) };
}

interface Case {
  tA: boolean;
  tB: boolean;
  M: number;
  N: number;
  K: number;
  alpha?: number;
  beta?: number;
  bf16?: boolean;
  pad?: number; // extra elements per row beyond the width (strided views)
}

// Runs the case on every kernel this CPU can run, against one float64 reference.
function check(c: Case, seed: number, kernels: string[]): void {
  const r = rng(seed);
  const { tA, tB, M, N, K } = c;
  const alpha = c.alpha ?? 1;
  const beta = c.beta ?? 0;
  const pad = c.pad ?? 0;
  const [ar, ac] = tA ? [K, M] : [M, K];
  const [br, bc] = tB ? [N, K] : [K, N];
  const lda = ac + pad, ldb = bc + pad, ldc = N + pad;
  const A = fill(Math.max(0, (ar - 1) * lda + ac), r);
  let Bf = fill(Math.max(0, (br - 1) * ldb + bc), r);
  let B: Float32Array | Uint16Array = Bf;
  if (c.bf16) {
    const h = toBf16(Bf);
    B = h.bits;
    Bf = h.values;
  }
  const C0 = fill(Math.max(0, (M - 1) * ldc + N), r);
  if (beta === 0) C0.fill(NaN); // beta = 0 must not read C

  // op(A) as rows [M][K] and op(B)ᵀ as rows [N][K], in float64, so the reference is a dot product.
  const a = new Float64Array(M * K), bt = new Float64Array(N * K);
  for (let i = 0; i < M; i++) {
    if (tA) for (let k = 0; k < K; k++) a[i * K + k] = A[k * lda + i];
    else for (let k = 0; k < K; k++) a[i * K + k] = A[i * lda + k];
  }
  for (let k = 0; k < K; k++) {
    if (tB) for (let j = 0; j < N; j++) bt[j * K + k] = Bf[j * ldb + k];
    else for (let j = 0; j < N; j++) bt[j * K + k] = Bf[k * ldb + j];
  }
  // Large outputs: check every row and a spread of columns, always including the last ones.
  const stride = M * N > 20000 ? 7 : 1;
  const at: number[] = [], want: number[] = [], scale: number[] = [];
  for (let i = 0; i < M; i++)
    for (let j = 0; j < N; j++) {
      if (j % stride !== 0 && j < N - 20) continue;
      let s = 0, mag = 0;
      for (let k = 0, ai = i * K, bj = j * K; k < K; k++) {
        const p = a[ai + k] * bt[bj + k];
        s += p;
        mag += Math.abs(p);
      }
      const old = beta === 0 ? 0 : beta * C0[i * ldc + j];
      at.push(i * ldc + j);
      want.push(alpha * s + old);
      scale.push(Math.abs(alpha) * mag + Math.abs(old) + 1e-30);
    }

  const tol = 1e-5 * Math.sqrt(Math.max(K, 1));
  for (const kernel of kernels) {
    native.setGemmKernel(kernel);
    const C = C0.slice();
    native.gemm(tA, tB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    for (let e = 0; e < at.length; e++) {
      const got = C[at[e]];
      if (!(Math.abs(got - want[e]) <= tol * scale[e])) {
        const i = Math.floor(at[e] / ldc), j = at[e] % ldc;
        assert.fail(`${JSON.stringify(c)} on ${kernel}: C[${i},${j}] = ${got}, want ${want[e]}`);
      }
    }
    // Padding between rows is untouched.
    for (let i = 0; i + 1 < M; i++)
      for (let j = N; j < ldc; j++) if (!Object.is(C[i * ldc + j], C0[i * ldc + j])) assert.fail(`${kernel} wrote padding`);
  }
  native.setGemmKernel("auto");
}

const shapes: Array<[number, number, number]> = [
  [1, 1, 1], [7, 13, 5], [37, 65, 129], [1, 300, 257], [1, 33, 1000], [3, 129, 70], [4, 64, 64], [2, 17, 9],
  [5, 4, 300], [64, 3, 100], [130, 1, 33], [6, 16, 8], [13, 47, 300], [100, 70, 513], [65, 600, 31],
  [8, 50, 70], [300, 7, 40], [9, 9, 9],
];
const trans: Array<[boolean, boolean]> = [[false, false], [false, true], [true, false], [true, true]];

function availableKernels(): string[] {
  const names: string[] = [];
  for (const k of ["avx512", "avx2-fma", "portable"]) {
    try {
      native.setGemmKernel(k);
      names.push(k);
    } catch {
      // this CPU cannot run it
    }
  }
  native.setGemmKernel("auto");
  return names;
}
const kernels = availableKernels();

test(`gemm matches a float64 reference on odd sizes (${kernels.join(", ")})`, () => {
  let seed = 1;
  for (const [M, N, K] of shapes)
    for (const [tA, tB] of trans) {
      check({ tA, tB, M, N, K }, seed++, kernels);
      check({ tA, tB, M, N, K, bf16: true, alpha: 0.5, beta: 0.25 }, seed++, kernels);
      check({ tA, tB, M, N, K, pad: 3, alpha: -1.5, beta: 1 }, seed++, kernels);
    }
});

test(`gemm on larger, threaded products (${kernels.join(", ")})`, () => {
  let seed = 1000;
  for (const [tA, tB] of trans) {
    check({ tA, tB, M: 70, N: 1100, K: 300, pad: 5 }, seed++, kernels); // panel by panel, a part panel
    check({ tA, tB, M: 520, N: 300, K: 1500, bf16: true, beta: 0.5 }, seed++, kernels); // panels, two K blocks
    check({ tA, tB, M: 1030, N: 1040, K: 40, pad: 2 }, seed++, kernels); // packed block, several NC blocks
    check({ tA, tB, M: 300, N: 100, K: 4500, bf16: true, beta: 0.5 }, seed++, kernels); // packed, several K blocks
    check({ tA, tB, M: 1, N: 1100, K: 520, bf16: true, beta: 2 }, seed++, kernels); // decode
    check({ tA, tB, M: 3, N: 700, K: 400, bf16: true }, seed++, kernels);
    check({ tA, tB, M: 600, N: 2, K: 500, bf16: true, pad: 1 }, seed++, kernels); // LoRA rank
    check({ tA, tB, M: 2100, N: 24, K: 260, beta: 0.5 }, seed++, kernels); // several row blocks
    check({ tA, tB, M: 9, N: 40, K: 4500, beta: 0.5, bf16: true }, seed++, kernels); // panels, several K blocks
    check({ tA, tB, M: 20, N: 40, K: 16500, beta: 0.5, bf16: true, pad: 1 }, seed++, kernels); // panels, K split in parts
    check({ tA, tB, M: 9, N: 9, K: 270000, beta: 0.5, bf16: true }, seed++, kernels); // parts of the LM head's length
  }
});

test("gemm gives the same bits on one thread as on several (panels, K split, packed)", async () => {
  const r = uniform(77);
  const cases = [[40, 300, 700], [20, 40, 20000], [1100, 40, 300]].map(([M, N, K]) => ({
    M: M!, N: N!, K: K!,
    A: new Float32Array(M! * K!).map(() => r() - 0.5),
    B: toBf16(new Float32Array(N! * K!).map(() => r() - 0.5)).bits,
  }));
  const run = () => cases.map(({ M, N, K, A, B }) => {
    const C = new Float32Array(M * N);
    native.gemm(false, true, M, N, K, 1, A, K, B, K, 0, C, N);
    return C;
  });
  const threads = native.numThreads();
  const many = run();
  native.setNumThreads(1);
  try {
    assert.deepEqual(run(), many);
  } finally {
    native.setNumThreads(threads);
  }
  await new Promise((resolve) => setTimeout(resolve, 50)); // let the new workers start
});

test("gemmKernel names the kernel in use", () => {
  assert.ok(["avx512", "avx2-fma", "portable"].includes(native.gemmKernel()));
  assert.throws(() => native.setGemmKernel("nope"), /unknown kernel/);
});

test("beta = 0 ignores NaN in C; alpha = 0 and K = 0 only scale C", () => {
  const A = new Float32Array([1, 2, 3, 4]), B = new Float32Array([1, 0, 0, 1]);
  const C = new Float32Array(4).fill(NaN);
  native.gemm(false, false, 2, 2, 2, 1, A, 2, B, 2, 0, C, 2);
  assert.deepEqual([...C], [1, 2, 3, 4]);
  native.gemm(false, false, 2, 2, 2, 0, A, 2, B, 2, 2, C, 2);
  assert.deepEqual([...C], [2, 4, 6, 8]);
  native.gemm(false, false, 2, 2, 0, 1, new Float32Array(0), 0, new Float32Array(0), 2, 0, C, 2);
  assert.deepEqual([...C], [0, 0, 0, 0]);
  native.gemm(false, false, 0, 0, 0, 1, new Float32Array(0), 0, new Float32Array(0), 0, 0, new Float32Array(0), 0);
});

test("gemm rejects arrays and strides that do not fit, with an error", () => {
  const f = (n: number) => new Float32Array(n);
  const ok = () => native.gemm(false, false, 3, 4, 5, 1, f(15), 5, f(20), 4, 0, f(12), 4);
  ok();
  assert.throws(() => native.gemm(false, false, 3, 4, 5, 1, f(14), 5, f(20), 4, 0, f(12), 4), /A has 14 elements, needs 15/);
  assert.throws(() => native.gemm(false, false, 3, 4, 5, 1, f(15), 5, f(19), 4, 0, f(12), 4), /B has 19 elements/);
  assert.throws(() => native.gemm(false, false, 3, 4, 5, 1, f(15), 5, f(20), 4, 0, f(11), 4), /C has 11 elements/);
  assert.throws(() => native.gemm(false, false, 3, 4, 5, 1, f(15), 4, f(20), 4, 0, f(12), 4), /stride 4 is less than its row width 5/);
  assert.throws(() => native.gemm(false, true, 3, 4, 5, 1, f(15), 5, f(20), 4, 0, f(12), 4), /B \[N,K\] row stride/);
  assert.throws(() => native.gemm(true, false, 3, 4, 5, 1, f(15), 5, f(20), 4, 0, f(12), 4), /A has 15 elements, needs 23/);
  assert.throws(() => native.gemm(false, false, 3, 4, 5, 1, f(15), 5, f(20), 4, 0, f(12), 3), /C \[M,N\] row stride/);
  assert.throws(() => native.gemm(false, false, 3, 4, 5, 1, f(15), 5, new Int32Array(20) as never, 4, 0, f(12), 4), /B must be/);
  assert.throws(() => native.gemm(false, false, 3, 4, 5, 1, new Uint16Array(15) as never, 5, f(20), 4, 0, f(12), 4), /A must be a Float32Array/);
  assert.throws(() => native.gemm(false, false, -1, 4, 5, 1, f(15), 5, f(20), 4, 0, f(12), 4), /M must be a non-negative integer/);
  assert.throws(() => native.gemm(false, false, 1.5, 4, 5, 1, f(15), 5, f(20), 4, 0, f(12), 4), /non-negative integer/);
  assert.throws(() => native.gemm(false, false, 2 ** 40, 2 ** 40, 5, 1, f(15), 5, f(20), 2 ** 40, 0, f(12), 2 ** 40), /elements|too large/);
});
