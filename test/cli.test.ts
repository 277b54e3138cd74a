// The `loratune` command line, run as a user runs it: output, JSON, exit codes and error messages.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { saveTokenizer, trainBpeTokenizer } from "../src/tokenizer/train.js";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const tiny = path.join(root, "test", "fixtures", "gemma-tiny");

function loratune(...args: string[]): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [path.join(root, "bin", "loratune.js"), ...args], {
    encoding: "utf8", env: { ...process.env, HF_TOKEN: "", HF_HUB_OFFLINE: "1" }, timeout: 60_000,
  });
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

describe("loratune summary", () => {
  it("counts gemma_2b_en's parameters from its preset, offline", () => {
    const r = loratune("summary", "--model", "gemma_2b_en", "--json");
    assert.equal(r.code, 0, r.stderr);
    const j = JSON.parse(r.stdout);
    assert.equal(j.total_params, 2_506_172_416);
    assert.equal(j.trainable_params, 2_506_172_416);
    assert.equal(j.vocab_size, 256000);
    assert.equal(j.hidden_size, 2048);
  });

  it("counts Keras-layout LoRA as the walkthrough printed, and PEFT-layout LoRA", () => {
    const keras = JSON.parse(loratune("summary", "--model", "gemma_2b_en", "--lora-rank", "4", "--lora-layout", "keras", "--json").stdout);
    assert.equal(keras.total_params, 2_507_536_384);
    assert.equal(keras.trainable_params, 1_363_968);
    const peft = JSON.parse(loratune("summary", "--model", "gemma_2b_en", "--lora-rank", "4", "--json").stdout);
    assert.equal(peft.trainable_params, 460_800);
  });

  it("prints a table for a checkpoint folder", () => {
    const r = loratune("summary", "--model", tiny);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /Total params: 0?[\d,]+/);
    assert.match(r.stdout, /model\.embed_tokens/);
  });
});

describe("loratune generate", () => {
  it("decodes the reference's greedy tokens from token ids, as one JSON line", () => {
    const r = loratune("generate", "--model", tiny, "--prompt-ids", "2,111,377,80,333", "--sampler", "greedy", "--max-new-tokens", "16", "--json");
    assert.equal(r.code, 0, r.stderr);
    const j = JSON.parse(r.stdout);
    assert.deepEqual(j.new_ids, Array(16).fill(333));
    assert.deepEqual(j.ids.slice(0, 5), [2, 111, 377, 80, 333]);
    assert.equal(j.ids.length, 21);
  });

  it("max-length counts the prompt, as in Keras", () => {
    const j = JSON.parse(loratune("generate", "--model", tiny, "--prompt-ids", "2,111,377", "--sampler", "greedy", "--max-length", "10", "--json").stdout);
    assert.equal(j.ids.length, 10);
    assert.equal(j.finish_reason, "length");
  });

  it("gives the same top-k draws for the same seed on every run", () => {
    const run = (seed: string) => JSON.parse(loratune("generate", "--model", path.join(root, "test", "fixtures", "gemma-tiny-std0.2"),
      "--prompt-ids", "2,111,377", "--sampler", "top-k", "--top-k", "5", "--seed", seed, "--max-new-tokens", "12", "--json").stdout).new_ids;
    assert.deepEqual(run("2"), run("2"));
    assert.notDeepEqual(run("2"), run("3"));
  });

  it("refuses a token id outside the vocabulary, naming it", () => {
    const r = loratune("generate", "--model", tiny, "--prompt-ids", "2,111,9999");
    assert.equal(r.code, 1);
    assert.match(r.stderr, /token id 9999 at position 2 is outside the vocabulary \(0\.\.511\)/);
    assert.doesNotMatch(r.stderr, /at .*\.js:\d+/); // no stack trace
  });

  it("refuses a prompt that leaves no room under the length limit", () => {
    const r = loratune("generate", "--model", tiny, "--prompt-ids", "2,3,4,5", "--max-length", "4");
    assert.equal(r.code, 1);
    assert.match(r.stderr, /the prompt has 4 tokens/);
  });
});

describe("loratune flags and errors", () => {
  it("suggests the nearest flag for an unknown one", () => {
    const r = loratune("generate", "--model", tiny, "--top_k", "5");
    assert.equal(r.code, 1);
    assert.match(r.stderr, /unknown flag --top_k .*did you mean --top-k\?/);
  });

  it("names the range of an out-of-range number", () => {
    const r = loratune("summary", "--model", "gemma_2b_en", "--lora-rank", "0");
    assert.equal(r.code, 1);
    assert.match(r.stderr, /--lora-rank must be at least 1, got 0/);
    const nan = loratune("finetune", "--model", tiny, "--data", "dolly", "--learning-rate", "NaN");
    assert.equal(nan.code, 1);
    assert.match(nan.stderr, /--learning-rate must be a number/);
  });

  it("suggests the nearest command", () => {
    const r = loratune("sumary");
    assert.equal(r.code, 1);
    assert.match(r.stderr, /did you mean `loratune summary`\?/);
  });

  it("says in two lines what to do when a preset cannot be downloaded", () => {
    const cache = fs.mkdtempSync(path.join(os.tmpdir(), "loratune-hf-"));
    const r = spawnSync(process.execPath, [path.join(root, "bin", "loratune.js"), "generate", "--model", "gemma_2b_en", "--prompt", "hi"], {
      encoding: "utf8", env: { ...process.env, HF_TOKEN: "", HF_HOME: cache }, timeout: 60_000,
    });
    assert.equal(r.status, 1);
    const lines = r.stderr.trim().split("\n");
    assert.equal(lines.length, 2, r.stderr);
    assert.match(lines[0]!, /cannot download google\/gemma-2b/);
    assert.match(lines[1]!, /HF_TOKEN/);
  });

  it("loratune data shows what the walkthrough's filter kept", () => {
    const r = loratune("data", "--data", "dolly", "--no-context", "--limit", "1000", "--sample", "1");
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /no-context\s+1,724 of 2,500 kept/);
    assert.match(r.stdout, /Instruction:/);
  });
});

describe("loratune finetune", () => {
  it("--profile prints the time per op kind; flags come from --config too", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "loratune-cli-finetune-"));
    try {
      const base = path.join(dir, "base");
      fs.cpSync(path.join(root, "test", "fixtures", "gemma-tiny-std0.2"), base, { recursive: true });
      fs.rmSync(path.join(base, "golden.safetensors")); // a checkpoint folder holds one set of weights
      const texts = ["red is a colour", "two plus two is four", "cats are animals", "the sun is a star"];
      saveTokenizer(base, trainBpeTokenizer(texts, { vocabSize: 300 }));
      const data = path.join(dir, "data.jsonl");
      fs.writeFileSync(data, texts.map((text) => JSON.stringify({ text })).join("\n") + "\n");
      const config = path.join(dir, "job.yaml");
      fs.writeFileSync(config, "profile: true\ncheckpoint-activations: true\nseq-len: 16\n");
      const r = loratune("finetune", "--config", config, "--model", base, "--data", data, "--format", "text", "--out", path.join(dir, "run"));
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /Profile: time per op kind, mean of 3 update\(s\) after the first\nkind +calls\/step +ms\/step +share +GFLOP\/s\n/);
      assert.match(r.stdout, /\ngemm A·Bᵀ f32 +\d+ +\d+\.\d\d +\d+\.\d% +\d+\.\d\n/);
      assert.match(r.stdout, /\nattentionBackward +2 /); // once per layer of the tiny model
      assert.match(r.stdout, /\ntotal +\d+\.\d\d +100\.0%\n/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
