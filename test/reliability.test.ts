// Bad input to model loading, prompts and the CLI: a clear error naming the file and the field or
// tensor, exit code 1 and no stack trace; and secrets never printed.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { LoratuneError } from "../src/errors.js";
import { TextGenerator } from "../src/generation/generate.js";
import { fetchModel } from "../src/io/hub.js";
import { checkMemory, loadModelDir } from "../src/models/load.js";
import { saveTokenizer, trainBpeTokenizer } from "../src/tokenizer/train.js";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const fixture = path.join(root, "test", "fixtures", "gemma-tiny");
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "loratune-reliability-"));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** A copy of the tiny checkpoint with config.json edited. */
function checkpointWith(name: string, edit: (config: Record<string, unknown>) => void): string {
  const dir = path.join(tmp, name);
  fs.mkdirSync(dir);
  fs.copyFileSync(path.join(fixture, "model.safetensors"), path.join(dir, "model.safetensors"));
  const config = JSON.parse(fs.readFileSync(path.join(fixture, "config.json"), "utf8"));
  edit(config);
  fs.writeFileSync(path.join(dir, "config.json"), JSON.stringify(config));
  return dir;
}

function loratune(...args: string[]) {
  const r = spawnSync(process.execPath, [path.join(root, "bin", "loratune.js"), ...args], {
    encoding: "utf8", env: { ...process.env, HF_HUB_OFFLINE: "1" }, timeout: 60_000,
  });
  return { code: r.status, stderr: r.stderr, stdout: r.stdout };
}

describe("model loading refuses what does not fit the config", () => {
  it("names a weight whose shape disagrees with config.json, expected and found", () => {
    const dir = checkpointWith("narrow-mlp", (c) => (c.intermediate_size = 128));
    assert.throws(() => loadModelDir(dir), (e: unknown) => e instanceof LoratuneError &&
      /tensor model\.layers\.0\.mlp\.(gate|up|down)_proj\.weight has shape \[\d+, \d+\] but config\.json implies \[\d+, \d+\]/.test(e.message) &&
      e.message.includes(dir));
  });

  it("names a tensor the config needs and the checkpoint lacks", () => {
    const dir = checkpointWith("three-layers", (c) => (c.num_hidden_layers = 3));
    assert.throws(() => loadModelDir(dir), /the checkpoint has no tensor model\.layers\.2\.\S+ \(expected shape/);
  });

  it("refuses a tokenizer whose vocabulary is larger than the model's", () => {
    const dir = checkpointWith("big-tokenizer", () => {});
    const text = fs.readFileSync(path.join(root, "assets", "data", "text", "tinyshakespeare.txt"), "utf8").slice(0, 100_000);
    saveTokenizer(dir, trainBpeTokenizer([text], { vocabSize: 600 }));
    assert.throws(() => loadModelDir(dir), /tokenizer\.json has \d+ tokens but config\.json says vocab_size 512/);
  });

  it("says how much memory the weights need and how much there is, before reading them", () => {
    assert.throws(() => checkMemory(5 * 2 ** 30, "/models/gemma-2b", 2 * 2 ** 30),
      /\/models\/gemma-2b: the weights need 5\.0 GiB of memory but only 2\.0 GiB is available/);
    assert.doesNotThrow(() => checkMemory(2 ** 20, "/models/tiny", 2 ** 30));
  });
});

describe("prompts", () => {
  const { model } = loadModelDir(fixture);
  it("refuses a prompt longer than the model's context", () => {
    const ids = Array.from({ length: 130 }, (_, i) => 3 + (i % 500));
    assert.throws(() => new TextGenerator(model).generate({ ids }, { maxNewTokens: 4 }),
      /the prompt has 130 tokens, which leaves no room under the length limit of 128 \(the model's context\)/);
  });
});

describe("the CLI's numbers", () => {
  it("refuses a learning rate <= 0 and a sequence length beyond the model's context", () => {
    const zero = loratune("finetune", "--model", fixture, "--data", "dolly", "--learning-rate", "0");
    assert.equal(zero.code, 1);
    assert.match(zero.stderr, /--learning-rate must be greater than 0, got 0/);
    const dir = checkpointWith("with-tokenizer", () => {});
    saveTokenizer(dir, trainBpeTokenizer(["some text to learn a few merges from ".repeat(50)], { vocabSize: 300 }));
    const long = loratune("finetune", "--model", dir, "--data", "dolly", "--seq-len", "4096");
    assert.equal(long.code, 1);
    assert.match(long.stderr, /--seq-len 4096 is beyond the model's context of 128 tokens/);
    assert.doesNotMatch(long.stderr, /\n\s+at /); // no stack trace
  });
});

describe("secrets", () => {
  it("never prints the Hugging Face token, in errors or on the CLI", async () => {
    const secret = "hf_NEVERPRINTME1234567890";
    const saved = process.env.HF_TOKEN;
    process.env.HF_TOKEN = secret;
    try {
      const cache = fs.mkdtempSync(path.join(tmp, "hf-"));
      await assert.rejects(fetchModel("gemma_2b_en", { cacheDir: cache, timeoutMs: 2000 }), (e: unknown) =>
        e instanceof LoratuneError && !`${e.message}${e.hint ?? ""}${e.stack ?? ""}`.includes(secret));
      const r = spawnSync(process.execPath, [path.join(root, "bin", "loratune.js"), "generate", "--model", "gemma_2b_en", "--prompt", "hi"], {
        encoding: "utf8", env: { ...process.env, HF_TOKEN: secret, HF_HOME: cache, LORATUNE_DEBUG: "1" }, timeout: 60_000,
      });
      assert.equal(r.status, 1);
      assert.ok(!(r.stdout + r.stderr).includes(secret));
    } finally {
      if (saved === undefined) delete process.env.HF_TOKEN;
      else process.env.HF_TOKEN = saved;
    }
  });
});
