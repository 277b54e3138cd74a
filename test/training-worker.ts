// A training run in its own process, for the tests that kill it or take away its permissions.
// Usage: node dist/test/training-worker.js '<json>' with {mode: "run" | "readonly", dir, train?}.
// Run without arguments (as the test runner does with every file under test/), it does nothing.
import fs from "node:fs";
import { LoratuneError } from "../src/errors.js";
import { fit } from "../src/training/trainer.js";
import { killRun, makeExamples, charTokenizer, tinyLoraModel } from "./training-fixtures.js";

interface Job {
  mode: "run" | "readonly";
  dir: string;
  /** Training examples (default: killRun's). */
  train?: number;
}

async function main(job: Job): Promise<void> {
  const model = tinyLoraModel();
  const train = job.train ? makeExamples(job.train) : killRun.train;
  if (job.mode === "run") {
    const r = await fit(model, charTokenizer, { train, eval: killRun.eval }, {
      ...killRun.options, checkpointDir: job.dir, checkpointEvery: 1, resume: true,
    });
    process.stdout.write(JSON.stringify({ steps: r.steps, resumedFrom: r.resumedFrom, checkpoint: r.checkpoint }) + "\n");
    return;
  }
  // readonly: checkpoints at 3 and 6; after step 4 the folder loses its write permission.
  try {
    await fit(model, charTokenizer, { train: makeExamples(8) }, {
      epochs: 1, learningRate: 1e-2, checkpointDir: job.dir, checkpointEvery: 3,
      onStep: (e) => {
        if (e.step === 4) fs.chmodSync(job.dir, 0o555);
      },
    });
    process.stdout.write(JSON.stringify({ error: null }) + "\n");
  } catch (e) {
    if (!(e instanceof LoratuneError)) throw e;
    process.stdout.write(JSON.stringify({ error: e.message, file: e.file, hint: e.hint }) + "\n");
    process.exitCode = 3;
  }
}

const arg = process.argv[2];
if (arg !== undefined) await main(JSON.parse(arg) as Job);
