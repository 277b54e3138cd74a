// Helpers shared by the benchmarks: each benchmark prints one JSON line per measurement.
import { spawnSync } from "node:child_process";

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
  const env = { ...process.env };
  delete env.OPENBLAS_CORETYPE;
  delete env.OPENBLAS_L2_SIZE;
  const r = spawnSync("python3", ["-c", script], { env, encoding: "utf8", timeout: timeoutMs, maxBuffer: 64 << 20 });
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
