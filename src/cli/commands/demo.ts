import path from "node:path";
import { runDemo } from "../../workflows/demo.js";
import type { Command } from "../command.js";
import { interruptible } from "../interrupt.js";

export const demoCommand: Command = {
  name: "demo",
  summary: "the Gemma LoRA walkthrough end to end, offline, on a small Gemma-architecture model it makes itself",
  usage: "loratune demo --out DIR",
  flags: {
    out: { type: "string", help: "folder for the base model copy, adapter, logs and report", value: "DIR", default: "runs/demo" },
    examples: { type: "integer", help: "training examples (no-context Dolly rows)", min: 1, max: 1600, default: 1000 },
    "eval-examples": { type: "integer", help: "held-out examples for eval loss and stop rate", min: 1, max: 700, default: 100 },
    rank: { type: "integer", help: "LoRA rank", min: 1, default: 4 },
    "learning-rate": { type: "number", help: "LoRA learning rate", above: 0, default: 1e-3 },
    "cache-dir": { type: "string", help: "where the pre-trained base model is cached (default ~/.cache/loratune or $LORATUNE_CACHE)", value: "DIR" },
  },
  async run(flags) {
    return interruptible(async (signal) => {
      await runDemo({
        out: path.resolve(flags.out as string),
        examples: flags.examples as number,
        evalExamples: flags["eval-examples"] as number,
        rank: flags.rank as number,
        learningRate: flags["learning-rate"] as number,
        cacheDir: flags["cache-dir"] as string | undefined,
        signal,
      });
    });
  },
};
