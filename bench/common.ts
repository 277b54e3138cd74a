// Helpers shared by the benchmarks: each benchmark prints one JSON line per measurement.
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";

/** One measurement: ours vs a peer in the same unit; ratio = ours/peer (higher is better for us). */
export interface BenchLine {
  name: string;
  ours: number;
  peer: number | null;
  unit: string;
  ratio: number | null;
  [extra: string]: unknown;
}

export function median(xs: number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const h = s.length >> 1;
  return s.length % 2 ? s[h] : (s[h - 1] + s[h]) / 2;
}

/** Prints the line as one JSON object on stdout. */
export function emit(line: BenchLine): void {
  process.stdout.write(JSON.stringify(line) + "\n");
}

/** Peak resident set size of this process so far, in MiB (maxRSS is in KiB). */
export function peakRssMb(): number {
  return process.resourceUsage().maxRSS / 1024;
}

/** Rounds for display: 3 significant digits is plenty for noisy timings. */
export function round(x: number, digits = 3): number {
  return Number(x.toPrecision(digits));
}

/**
 * Runs `python3 -c script` and returns the parse of the last JSON line it prints, or null when
 * python3 or numpy is unavailable or the script fails. OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE are
 * removed from its environment: set on some machines for old OpenBLAS builds, they slow a current
 * numpy (see the environment notes), and the peer should run at its best.
 */
export function runPython(script: string, timeoutMs = 600_000): unknown {
  const r = spawnSync("python3", ["-c", script], { env: withoutOpenblasOverrides(), encoding: "utf8", timeout: timeoutMs, maxBuffer: 64 << 20 });
  if (r.error || r.status !== 0) return null;
  const lines = r.stdout.trim().split("\n").reverse();
  for (const l of lines) {
    try {
      return JSON.parse(l);
    } catch {
      // not JSON: keep looking upwards
    }
  }
  return null;
}

/** The object on the last line of a peer's output, or null when it is not JSON. */
export function lastJsonLine(stdout: string): Record<string, unknown> | null {
  try {
    return JSON.parse(stdout.trim().split("\n").pop() ?? "") as Record<string, unknown>;
  } catch {
    return null;
  }
}

/** Whether BENCH_PEER=0 asks to measure ours alone. */
export const peerSkipped = (): boolean => process.env.BENCH_PEER === "0";

/** Set on some machines for old OpenBLAS builds (see the environment notes); they slow a current one. */
const OPENBLAS_OVERRIDES = ["OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"];

export function withoutOpenblasOverrides(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  for (const name of OPENBLAS_OVERRIDES) delete env[name];
  return env;
}

/**
 * The PyTorch peer measured twice where this machine sets the OpenBLAS overrides: `asIs` runs
 * ../shared/bench/run-peer.sh in this environment, as the benchmark's definition says, and `best`
 * without the overrides, so OpenBLAS picks its own (faster) kernel. Where they are not set, both
 * are the one run. Null where the peer cannot run, or when BENCH_PEER=0 skips it.
 */
export interface PeerRuns {
  asIs: Record<string, unknown> | null;
  best: Record<string, unknown> | null;
}

export function runPeer(mode: "gen" | "train", shape: string): PeerRuns {
  const script = path.resolve("..", "shared", "bench", "run-peer.sh");
  if (peerSkipped() || !fs.existsSync(script)) return { asIs: null, best: null };
  const run = (env: NodeJS.ProcessEnv) => {
    const r = spawnSync("bash", [script, mode, shape], { env, encoding: "utf8", timeout: 3_600_000, maxBuffer: 64 << 20 });
    return r.status === 0 ? lastJsonLine(r.stdout) : null;
  };
  const asIs = run(process.env);
  const overridden = OPENBLAS_OVERRIDES.some((name) => process.env[name] !== undefined);
  return { asIs, best: overridden ? run(withoutOpenblasOverrides()) : asIs };
}

/** The peer's figures for a line: `key` is its throughput field, `ours` our throughput in the same unit. */
export function peerFields(peer: PeerRuns, key: string, ours: number): Pick<BenchLine, "peer" | "ratio"> & Record<string, unknown> {
  const value = (r: Record<string, unknown> | null, k: string) => (typeof r?.[k] === "number" ? (r[k] as number) : null);
  const asIs = value(peer.asIs, key), best = value(peer.best, key);
  return {
    peer: asIs,
    ratio: asIs ? round(ours / asIs) : null,
    peer_peak_rss_mb: value(peer.asIs, "peak_rss_mb"),
    peer_sgemm_gflops: value(peer.asIs, "sgemm_probe_gflops"),
    peer_best: best,
    ratio_best: best ? round(ours / best) : null,
    peer_best_sgemm_gflops: value(peer.best, "sgemm_probe_gflops"),
    peer_note: peer.asIs ? undefined : "peer not available (needs ../shared/bench/run-peer.sh and PyTorch) or skipped (BENCH_PEER=0)",
  };
}
