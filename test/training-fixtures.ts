// Shared by the training tests and their worker process: the tiny Gemma fixture with LoRA, a
// character-level tokenizer that fits its 512-token vocabulary, and short instruction examples.
// (No tests here.)
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { Example } from "../src/data/formats.js";
import { enableLora, type LoraOptions } from "../src/lora/lora.js";
import { loadModelDir } from "../src/models/load.js";
import type { CausalLM } from "../src/models/model.js";
import type { TrainingTokenizer } from "../src/training/batches.js";
import type { FitOptions } from "../src/training/trainer.js";

export const fixtureDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../test/fixtures/gemma-tiny");

/** One token per character: id 3 + (code point mod 509); BOS 2, EOS 1. */
export const charTokenizer: TrainingTokenizer & { decode(ids: number[]): string } = {
  bosId: 2,
  eosId: 1,
  encode(text: string, { addBos = true }: { addBos?: boolean } = {}): number[] {
    const ids = Array.from(text, (c) => 3 + (c.codePointAt(0)! % 509));
    return addBos ? [2, ...ids] : ids;
  },
  decode(ids: number[]): string {
    return ids.filter((i) => i > 2).map((i) => String.fromCodePoint(i - 3)).join("");
  },
};

const COLORS = ["red", "blue", "green", "gold", "pink", "gray"];

/** n short examples; example i comes from line i + 1 of "fake.jsonl". */
export function makeExamples(n: number, file = "fake.jsonl"): Example[] {
  return Array.from({ length: n }, (_, i) => {
    const prompt = `Q: color ${i % 7}?\nA: `;
    const response = `${COLORS[i % COLORS.length]}.`;
    return { prompt, response, text: prompt + response, source: { file, line: i + 1 } };
  });
}

export function tinyLoraModel(options: Partial<LoraOptions> = {}): CausalLM {
  const { model } = loadModelDir(fixtureDir);
  enableLora(model, { rank: 4, seed: 7, targets: ["q_proj", "v_proj", "o_proj", "down_proj"], ...options });
  return model;
}

/** The run the resume and kill tests repeat: 2 epochs of 5 examples, batch 2, shuffled, cosine with warm-up, eval. */
export const killRun = {
  train: makeExamples(5),
  eval: makeExamples(2, "eval.jsonl"),
  options: {
    epochs: 2, batchSize: 2, learningRate: 1e-2, schedule: "cosine", warmupSteps: 2, shuffle: true, seed: 3,
    clipNorm: 1, seqLen: 16,
  } satisfies FitOptions,
};
