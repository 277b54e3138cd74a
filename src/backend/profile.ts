// Time per op kind: while a profile runs, every kernel of the `native` object is replaced by a
// wrapper that counts its calls and wall time (ops look `native.gemm` up at each call, so replacing
// the properties reaches them all). The wrappers only measure: arguments and results pass through.
import { type NativeKernels, native } from "./native.js";

export interface OpTime {
  kind: string;
  calls: number;
  ms: number;
  /** Floating-point work of the calls, in GFLOP, where it is known (GEMM: 2·M·N·K per call). */
  gflop?: number;
}

export interface ProfileReport {
  /** Wall time from start to stop. */
  wallMs: number;
  /** Sorted by ms, largest first; includes OTHER_KIND, the wall time spent outside the kernels. */
  ops: OpTime[];
}

/** The row for the time outside the kernels: JavaScript, and waiting. */
export const OTHER_KIND = "other (JavaScript, outside kernels)";
/** alloc and release together: allocating fresh pages can be slow, so their time is shown. */
const MEMORY_KIND = "memory (alloc, release)";
/** Settings and queries, not work: left unwrapped. */
const UNMEASURED = new Set<string>([
  "cachedBytes", "liveBytes", "numThreads", "setNumThreads", "gemmKernel", "setGemmKernel",
]);
/** A GEMM with M or N this small is a few matrix-vector products, with K this small a low-rank update: both bound by memory. */
const THIN = 8;

type Kernel = (...args: unknown[]) => unknown;

interface Running {
  started: number;
  originals: Map<string, Kernel>;
  times: Map<string, OpTime>;
}

let running: Running | null = null;

/** "gemm A·Bᵀ bf16", "gemv Aᵀ·B f32", "gemm A·B f32 K≤8" (rank-r LoRA products). */
function gemmKind(transA: boolean, transB: boolean, M: number, N: number, K: number, B: unknown): string {
  const shape = M <= THIN || N <= THIN ? "gemv" : "gemm";
  const form = `A${transA ? "ᵀ" : ""}·B${transB ? "ᵀ" : ""}`;
  const type = B instanceof Uint16Array ? "bf16" : "f32";
  return `${shape} ${form} ${type}${shape === "gemm" && K <= THIN ? ` K≤${THIN}` : ""}`;
}

function add(times: Map<string, OpTime>, kind: string, ms: number, gflop?: number): void {
  let t = times.get(kind);
  if (!t) times.set(kind, (t = gflop === undefined ? { kind, calls: 0, ms: 0 } : { kind, calls: 0, ms: 0, gflop: 0 }));
  t.calls++;
  t.ms += ms;
  if (gflop !== undefined) t.gflop! += gflop;
}

/** Starts timing every kernel call; throws if a profile is already running. */
export function startProfile(): void {
  if (running) throw new Error("a profile is already running: stopProfile() it first");
  const kernels = native as unknown as Record<string, unknown>;
  const state: Running = { started: performance.now(), originals: new Map(), times: new Map() };
  for (const [name, value] of Object.entries(kernels)) {
    if (typeof value !== "function" || UNMEASURED.has(name)) continue;
    const original = value as Kernel;
    state.originals.set(name, original);
    // A call that throws is not counted: it did no work.
    const measured: Kernel = name === "gemm"
      ? (...args) => {
        const t0 = performance.now();
        const result = original(...args);
        const [transA, transB, M, N, K, _alpha, _A, _lda, B] = args as Parameters<NativeKernels["gemm"]>;
        add(state.times, gemmKind(transA, transB, M, N, K, B), performance.now() - t0, (2 * M * N * K) / 1e9);
        return result;
      }
      : (...args) => {
        const t0 = performance.now();
        const result = original(...args);
        add(state.times, name === "alloc" || name === "release" ? MEMORY_KIND : name, performance.now() - t0);
        return result;
      };
    kernels[name] = measured;
  }
  running = state;
}

/** Puts the kernels back and reports the time per kind since startProfile(). */
export function stopProfile(): ProfileReport {
  if (!running) throw new Error("no profile is running: startProfile() first");
  const state = running;
  const wallMs = performance.now() - state.started;
  running = null;
  const kernels = native as unknown as Record<string, unknown>;
  for (const [name, original] of state.originals) kernels[name] = original;
  const ops = [...state.times.values()];
  const inKernels = ops.reduce((sum, t) => sum + t.ms, 0);
  ops.push({ kind: OTHER_KIND, calls: 0, ms: Math.max(0, wallMs - inKernels) });
  return { wallMs, ops: sortByTime(ops) };
}

function sortByTime(ops: OpTime[]): OpTime[] {
  return ops.sort((a, b) => b.ms - a.ms || a.kind.localeCompare(b.kind));
}

/** Sums reports (e.g. one per training update) into one. */
export function mergeProfiles(reports: readonly ProfileReport[]): ProfileReport {
  const times = new Map<string, OpTime>();
  let wallMs = 0;
  for (const r of reports) {
    wallMs += r.wallMs;
    for (const t of r.ops) {
      const sum = times.get(t.kind);
      if (!sum) times.set(t.kind, { ...t });
      else {
        sum.calls += t.calls;
        sum.ms += t.ms;
        if (t.gflop !== undefined) sum.gflop = (sum.gflop ?? 0) + t.gflop;
      }
    }
  }
  return { wallMs, ops: sortByTime([...times.values()]) };
}

/**
 * A table of the report per step: kind, calls/step, ms/step, share of the wall time, GFLOP/s where
 * the work is known. `steps` is how many steps (e.g. training updates) the report covers.
 */
export function formatProfile(report: ProfileReport, steps: number): string {
  if (!(steps > 0)) throw new RangeError(`steps must be > 0, got ${steps}`);
  const perStep = (x: number) => x / steps;
  const calls = (n: number) => (n === 0 ? "" : Number.isInteger(perStep(n)) ? String(perStep(n)) : perStep(n).toFixed(1));
  const rows = report.ops.map((t) => [
    t.kind, calls(t.calls), perStep(t.ms).toFixed(2),
    `${(report.wallMs > 0 ? (100 * t.ms) / report.wallMs : 0).toFixed(1)}%`,
    t.gflop !== undefined && t.ms > 0 ? (t.gflop / (t.ms / 1000)).toFixed(1) : "",
  ]);
  const header = ["kind", "calls/step", "ms/step", "share", "GFLOP/s"];
  const all = [header, ...rows, ["total", "", perStep(report.wallMs).toFixed(2), "100.0%", ""]];
  const widths = header.map((_, c) => Math.max(...all.map((r) => r[c]!.length)));
  const line = (r: string[]) => r.map((cell, c) => (c === 0 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join("  ").trimEnd();
  const legend = report.ops.some((t) => t.kind.startsWith("gemv") || t.kind.endsWith(`K≤${THIN}`))
    ? [`(gemv: M or N ≤ ${THIN}; K≤${THIN}: inner dimension ≤ ${THIN}, e.g. LoRA's rank-r products)`] : [];
  return [...all.map(line), ...legend].join("\n") + "\n";
}
