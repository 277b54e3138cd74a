// `npm run bench -- NAME...`: runs the named benchmarks (all when none are named); each prints
// JSON lines (see common.ts).
import { benchDecode270m } from "./decode.js";
import { benchGemm } from "./gemm.js";
import { benchSeed270m } from "./seed.js";
import { benchTrain270m, benchTrainTiny } from "./train.js";

const BENCHES: Record<string, () => Promise<void>> = {
  gemm: benchGemm,
  "decode-270m": benchDecode270m,
  "train-tiny": benchTrainTiny,
  "train-270m": benchTrain270m,
  "seed-270m": benchSeed270m,
};

async function main(argv: string[]): Promise<void> {
  const names = argv.length ? argv : Object.keys(BENCHES);
  const unknown = names.filter((n) => !(n in BENCHES));
  if (unknown.length) {
    throw new Error(`unknown benchmark ${unknown.map((n) => JSON.stringify(n)).join(", ")}; ` +
      `the benchmarks are: ${Object.keys(BENCHES).join(", ")}`);
  }
  for (const n of names) await BENCHES[n]();
}

main(process.argv.slice(2)).catch((e: Error) => {
  process.stderr.write(`bench: ${e.message}\n`);
  process.exitCode = 1;
});
