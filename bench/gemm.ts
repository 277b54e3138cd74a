// GEMM throughput against numpy (OpenBLAS) in the same run, on the shapes of a Gemma-2B layer:
// [512,2048] x [2048,2048] in each transpose form, bf16 weights, and a decode (M = 1) product.
import os from "node:os";
import { native } from "../src/backend/native.js";
import { emit, median, round, runPython } from "./common.js";

interface Form {
  form: string;
  tA: boolean;
  tB: boolean;
  bf16: boolean;
}

const FORMS: Form[] = [
  { form: "A·B", tA: false, tB: false, bf16: false },
  { form: "A·Bᵀ", tA: false, tB: true, bf16: false },
  { form: "Aᵀ·B", tA: true, tB: false, bf16: false },
  { form: "A·Bᵀ bf16", tA: false, tB: true, bf16: true },
  { form: "A·B bf16", tA: false, tB: false, bf16: true },
];

function random(n: number, seed: number): Float32Array {
  const a = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    a[i] = s / 2 ** 31 - 1;
  }
  return a;
}

function toBf16(x: Float32Array): Uint16Array {
  const u = new Uint32Array(x.buffer, x.byteOffset, x.length);
  const h = new Uint16Array(x.length);
  for (let i = 0; i < x.length; i++) h[i] = u[i] >>> 16;
  return h;
}

/** Seconds per call of f: median over `reps` timed calls after `warm` untimed ones. */
function timeIt(f: () => void, reps: number, warm = 2): number[] {
  for (let i = 0; i < warm; i++) f();
  const ts: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t = process.hrtime.bigint();
    f();
    ts.push(Number(process.hrtime.bigint() - t) / 1e9);
  }
  return ts;
}

// numpy timing of the same products; prints {"form": [seconds per call, ...], ...} as JSON.
function numpyScript(M: number, N: number, K: number, reps: number): string {
  return `
import json, time
import numpy as np
M, N, K, reps = ${M}, ${N}, ${K}, ${reps}
rng = np.random.default_rng(0)
a = rng.standard_normal((M, K), dtype=np.float32); at = np.ascontiguousarray(a.T)
b = rng.standard_normal((K, N), dtype=np.float32); bt = np.ascontiguousarray(b.T)
c = np.empty((M, N), dtype=np.float32)
forms = {"A·B": lambda: np.matmul(a, b, out=c), "A·Bᵀ": lambda: np.matmul(a, bt.T, out=c),
         "Aᵀ·B": lambda: np.matmul(at.T, b, out=c)}
out = {}
for name, f in forms.items():
    for _ in range(2): f()
    ts = []
    for _ in range(reps):
        t = time.perf_counter(); f(); ts.append(time.perf_counter() - t)
    out[name] = ts
print(json.dumps(out))
`;
}

export async function benchGemm(): Promise<void> {
  const M = 512, K = 2048, N = 2048, reps = 9, rounds = 3;
  const flops = 2 * M * N * K;
  const A = random(M * K, 1), Bf = random(K * N, 2), C = new Float32Array(M * N);
  const Bh = toBf16(Bf);
  // LORATUNE_GEMM_KERNEL=avx2-fma (or portable) measures another kernel than the best one.
  if (process.env.LORATUNE_GEMM_KERNEL) native.setGemmKernel(process.env.LORATUNE_GEMM_KERNEL);
  const kernel = native.gemmKernel();
  const threads = native.numThreads();

  // Ours and numpy take turns, `rounds` times, so that both see the same machine load.
  const ours = new Map<string, number[]>(), peer = new Map<string, number[]>();
  let havePeer = true;
  for (let r = 0; r < rounds; r++) {
    for (const f of FORMS) {
      const B = f.bf16 ? Bh : Bf;
      const lda = f.tA ? M : K, ldb = f.tB ? K : N;
      const ts = timeIt(() => native.gemm(f.tA, f.tB, M, N, K, 1, A, lda, B, ldb, 0, C, N), reps);
      ours.set(f.form, [...(ours.get(f.form) ?? []), ...ts]);
    }
    if (havePeer) {
      const p = runPython(numpyScript(M, N, K, reps)) as Record<string, number[]> | null;
      if (p === null) havePeer = false;
      else for (const [k, v] of Object.entries(p)) peer.set(k, [...(peer.get(k) ?? []), ...v]);
    }
  }
  for (const f of FORMS) {
    const ts = ours.get(f.form)!;
    const o = flops / median(ts) / 1e9;
    // numpy has no bf16: its f32 product of the same form is the peer.
    const pts = havePeer ? peer.get(f.form.replace(" bf16", "")) : undefined;
    const p = pts ? flops / median(pts) / 1e9 : null;
    emit({
      name: "gemm", form: f.form, shape: [M, K, N], ours: round(o), peer: p === null ? null : round(p),
      unit: "GFLOP/s", ratio: p === null ? null : round(o / p), peer_name: "numpy+OpenBLAS", kernel, threads,
      // The machine is shared: the fastest call of each side and the load show how noisy the run was.
      ours_best: round(flops / Math.min(...ts) / 1e9), peer_best: pts ? round(flops / Math.min(...pts) / 1e9) : null,
      load1: round(os.loadavg()[0], 2),
    });
  }

  // Decode: one token against a bf16 weight stored [N,K], as in a model's forward pass. Bound by
  // how fast the weights stream from memory, so it is reported in GB/s of weight read.
  {
    const Kd = 2048, Nd = 2048 * 8;
    const x = random(Kd, 3), W = toBf16(random(Nd * Kd, 4)), y = new Float32Array(Nd);
    const ts = timeIt(() => native.gemm(false, true, 1, Nd, Kd, 1, x, Kd, W, Kd, 0, y, Nd), 21, 3);
    const gbs = (Nd * Kd * 2) / median(ts) / 1e9;
    emit({
      name: "gemm", form: "decode A·Bᵀ bf16", shape: [1, Kd, Nd], ours: round(gbs), peer: null, unit: "GB/s",
      ratio: null, gflops: round((2 * Nd * Kd) / median(ts) / 1e9), kernel, threads,
    });
  }
}
