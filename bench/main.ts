// `npm run bench -- NAME...`: runs the named benchmarks (all when none are named); each prints
// JSON lines (see common.ts). Each benchmark runs in a process of its own, so that its peak RSS is
// its own.
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { benchDecode270m } from "./decode.js";
import { benchGemm } from "./gemm.js";
import { benchSeed270m } from "./seed.js";
import { benchTrain270m, benchTrain2b, benchTrain2bCheckpointed, benchTrainTiny } from "./train.js";

const BENCHES: Record<string, () => Promise<void>> = {
  gemm: benchGemm,
  "decode-270m": benchDecode270m,
  "train-tiny": benchTrainTiny,
  "train-270m": benchTrain270m,
  "train-2b": benchTrain2b,
  "train-2b-checkpointed": benchTrain2bCheckpointed,
  "seed-270m": benchSeed270m,
};

/** Set in the child process that runs one benchmark. */
const CHILD = "LORATUNE_BENCH_CHILD";

async function main(argv: string[]): Promise<void> {
  const names = argv.length ? argv : Object.keys(BENCHES);
  const unknown = names.filter((n) => !(n in BENCHES));
  if (unknown.length) {
    throw new Error(`unknown benchmark ${unknown.map((n) => JSON.stringify(n)).join(", ")}; ` +
      `the benchmarks are: ${Object.keys(BENCHES).join(", ")}`);
  }
  if (process.env[CHILD]) return BENCHES[names[0]!]!();
  for (const name of names) {
    const r = spawnSync(process.execPath, [fileURLToPath(import.meta.url), name], {
      stdio: "inherit", env: { ...process.env, [CHILD]: "1" },
    });
    if (r.status !== 0) throw new Error(`${name} failed (exit ${r.status ?? r.signal})`);
  }
}

main(process.argv.slice(2)).catch((e: Error) => {
  process.stderr.write(`bench: ${e.message}\n`);
  process.exitCode = 1;
});
