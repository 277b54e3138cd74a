// The fine-tuning workflow end to end on the tiny fixture: generations and measurements before and
// after, the adapter saved and reloaded, the report written.
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import type { Example } from "../src/data/formats.js";
import { loadModelDir } from "../src/models/load.js";
import { saveTokenizer, trainBpeTokenizer } from "../src/tokenizer/train.js";
import { runFinetune } from "../src/workflows/finetune.js";

const fixture = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../test/fixtures/gemma-tiny-std0.2");
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "loratune-workflow-"));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

const facts = ["red is a colour", "two plus two is four", "cats are animals", "the sun is a star", "water is wet", "ice is cold"];
const examples: Example[] = facts.map((fact, i) => {
  const prompt = `Instruction:\nSay fact ${i}.\n\nResponse:\n`;
  return { prompt, response: fact, text: prompt + fact, source: { file: "facts.jsonl", line: i + 1 } };
});

describe("runFinetune", () => {
  it("trains, measures before and after, saves an adapter that reloads, and writes the report", async () => {
    const base = path.join(tmp, "base");
    fs.cpSync(fixture, base, { recursive: true });
    fs.rmSync(path.join(base, "golden.safetensors")); // a checkpoint folder holds one set of weights
    saveTokenizer(base, trainBpeTokenizer(examples.map((e) => e.text), { vocabSize: 300 }));
    const out = path.join(tmp, "run");
    const printed: string[] = [];
    const outcome = await runFinetune({
      base: loadModelDir(base), baseName: base, train: examples, eval: examples,
      lora: { rank: 4, targets: ["q_proj", "v_proj"] },
      fit: { epochs: 3, seqLen: 64, learningRate: 1e-2, progress: false },
      out, prompts: [examples[0]!.prompt], stopRatePrompts: 3,
      sampler: { k: 5, seed: 2, maxLength: 48 }, print: (t) => printed.push(t),
    });
    const report = JSON.parse(fs.readFileSync(path.join(out, "report.json"), "utf8"));
    assert.equal(report.steps, 18);
    assert.ok(report.eval_loss_after < report.eval_loss_before, `${report.eval_loss_after} < ${report.eval_loss_before}`);
    for (const key of ["base_model", "adapter", "train_seconds", "stop_rate_before", "stop_rate_after"]) assert.ok(key in report, key);
    assert.equal(report.adapter, path.join(out, "adapter"));
    assert.ok(fs.existsSync(path.join(out, "adapter", "adapter_config.json")));
    assert.ok(fs.existsSync(path.join(out, "report.html")));
    assert.equal(fs.readFileSync(path.join(out, "train_log.jsonl"), "utf8").trim().split("\n").filter((l) => l.includes('"train"')).length, 18);
    assert.ok(printed.some((t) => t.includes("before fine-tuning")) && printed.some((t) => t.includes("after fine-tuning")));
    assert.equal(outcome.adapterDir, path.join(out, "adapter"));
  });
});
