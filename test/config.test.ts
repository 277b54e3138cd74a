import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { after, describe, test } from "node:test";
import { LoratuneError } from "../src/errors.js";
import { configToJson, expectedWeightShapes, parseConfig, readConfig } from "../src/models/config.js";
import { listPresets, resolvePreset } from "../src/models/presets.js";

const fixture = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../test/fixtures/gemma-tiny");
const fixtureJson = JSON.parse(fs.readFileSync(path.join(fixture, "config.json"), "utf8")) as Record<string, unknown>;
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "loratune-config-"));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

const FILE = "/models/x/config.json";

/** parseConfig on the fixture's JSON with some keys changed (undefined removes a key). */
function parseWith(changes: Record<string, unknown>) {
  const json: Record<string, unknown> = { ...fixtureJson, ...changes };
  for (const [k, v] of Object.entries(changes)) if (v === undefined) delete json[k];
  return parseConfig(json, FILE);
}

function assertRejects(changes: Record<string, unknown>, field: string, detail: RegExp): void {
  assert.throws(() => parseWith(changes), (e: unknown) => {
    assert.ok(e instanceof LoratuneError, `expected LoratuneError, got ${String(e)}`);
    assert.equal(e.file, FILE);
    assert.equal(e.field, field);
    assert.ok(e.message.includes(FILE) && e.message.includes(field), e.message);
    assert.match(e.message, detail);
    return true;
  });
}

describe("parseConfig", () => {
  test("the gemma-tiny fixture", () => {
    const c = readConfig(fixture);
    assert.deepEqual(c, {
      modelType: "gemma",
      architecture: "GemmaForCausalLM",
      vocabSize: 512,
      hiddenSize: 64,
      intermediateSize: 256,
      numLayers: 2,
      numHeads: 4,
      numKvHeads: 1,
      headDim: 16,
      rmsNormEps: 1e-6,
      ropeTheta: 10000,
      maxPositions: 128,
      activation: "gelu_tanh",
      tieWordEmbeddings: true,
      bosTokenId: 2,
      eosTokenIds: [1],
      padTokenId: 0,
      torchDtype: "float32",
    });
  });

  test("defaults: kv heads, head_dim, rope_theta, tied embeddings, gemma token ids", () => {
    const c = parseWith({
      num_key_value_heads: undefined, head_dim: undefined, rope_theta: undefined, tie_word_embeddings: undefined,
      bos_token_id: undefined, eos_token_id: undefined, pad_token_id: undefined, torch_dtype: undefined,
    });
    assert.equal(c.numKvHeads, 4);
    assert.equal(c.headDim, 16);
    assert.equal(c.ropeTheta, 10000);
    assert.equal(c.tieWordEmbeddings, true);
    assert.deepEqual([c.bosTokenId, c.eosTokenIds, c.padTokenId], [2, [1], 0]);
  });

  test("activations: Gemma 1's \"gelu\" means the tanh approximation; hidden_activation wins over hidden_act", () => {
    assert.equal(parseWith({ hidden_activation: undefined, hidden_act: "gelu" }).activation, "gelu_tanh");
    assert.equal(parseWith({ hidden_activation: null, hidden_act: "silu" }).activation, "silu");
    assert.equal(parseWith({ hidden_activation: "gelu_pytorch_tanh", hidden_act: "silu" }).activation, "gelu_tanh");
  });

  test("eos_token_id may be a list", () => {
    assert.deepEqual(parseWith({ eos_token_id: [1, 107] }).eosTokenIds, [1, 107]);
  });

  test("unknown model_type lists the supported ones", () => {
    assertRejects({ model_type: "llama" }, "model_type", /"llama" is not supported \(supported: gemma\)/);
    assertRejects({ model_type: undefined }, "model_type", /missing \(supported: gemma\)/);
  });

  test("missing, non-numeric and non-positive sizes name the field", () => {
    assertRejects({ vocab_size: undefined }, "vocab_size", /missing/);
    assertRejects({ hidden_size: "64" }, "hidden_size", /positive integer, got "64"/);
    assertRejects({ num_hidden_layers: 0 }, "num_hidden_layers", /positive integer, got 0/);
    assertRejects({ intermediate_size: 2.5 }, "intermediate_size", /positive integer/);
    assertRejects({ num_attention_heads: -4 }, "num_attention_heads", /positive integer/);
    assertRejects({ rms_norm_eps: "tiny" }, "rms_norm_eps", /positive number/);
    assertRejects({ rope_theta: 0 }, "rope_theta", /positive number/);
  });

  test("structural errors", () => {
    assertRejects({ num_key_value_heads: 3 }, "num_key_value_heads", /multiple of num_key_value_heads/);
    assertRejects({ head_dim: undefined, hidden_size: 66 }, "head_dim", /not a multiple of num_attention_heads/);
    assertRejects({ head_dim: 15 }, "head_dim", /even/);
    assertRejects({ hidden_activation: "relu" }, "hidden_activation", /"relu" is not supported/);
    assertRejects({ tie_word_embeddings: "yes" }, "tie_word_embeddings", /true or false/);
    assertRejects({ bos_token_id: -1 }, "bos_token_id", /token id/);
    assertRejects({ attention_bias: true }, "attention_bias", /not supported/);
    assertRejects({ rope_scaling: { type: "linear", factor: 2 } }, "rope_scaling", /not supported/);
  });

  test("readConfig: a missing or broken config.json names the file", () => {
    assert.throws(() => readConfig(tmp), (e: unknown) => e instanceof LoratuneError && e.message.includes(path.join(tmp, "config.json")) && /missing/.test(e.message));
    fs.writeFileSync(path.join(tmp, "config.json"), "{ broken");
    assert.throws(() => readConfig(tmp), (e: unknown) => e instanceof LoratuneError && /not valid JSON/.test(e.message));
    assert.throws(() => parseConfig([], FILE), LoratuneError);
  });

  test("configToJson is the inverse of parseConfig", () => {
    for (const json of [fixtureJson, { ...fixtureJson, eos_token_id: [1, 107], tie_word_embeddings: false, hidden_activation: "silu" }]) {
      const c = parseConfig(json, FILE);
      assert.deepEqual(parseConfig(configToJson(c), FILE), c);
    }
  });
});

describe("expectedWeightShapes", () => {
  test("Gemma tensor names and shapes; lm_head only when untied", () => {
    const tied = expectedWeightShapes(readConfig(fixture));
    assert.equal(tied.size, 2 + 2 * 9);
    assert.deepEqual(tied.get("model.embed_tokens.weight"), [512, 64]);
    assert.deepEqual(tied.get("model.layers.1.self_attn.q_proj.weight"), [64, 64]);
    assert.deepEqual(tied.get("model.layers.1.self_attn.k_proj.weight"), [16, 64]);
    assert.deepEqual(tied.get("model.layers.0.self_attn.o_proj.weight"), [64, 64]);
    assert.deepEqual(tied.get("model.layers.0.mlp.down_proj.weight"), [64, 256]);
    assert.ok(!tied.has("lm_head.weight"));
    const untied = expectedWeightShapes(parseWith({ tie_word_embeddings: false }));
    assert.deepEqual(untied.get("lm_head.weight"), [512, 64]);
  });
});

describe("presets", () => {
  test("every preset's embedded config parses; Gemma 7B has 16 KV heads", () => {
    const names = listPresets().map((p) => p.name);
    assert.deepEqual(names, ["gemma_2b_en", "gemma_instruct_2b_en", "gemma_7b_en", "gemma_instruct_7b_en"]);
    for (const p of listPresets()) parseConfig(p.config, p.name);
    const c2b = parseConfig(resolvePreset("gemma_2b_en").config, "gemma_2b_en");
    assert.deepEqual([c2b.vocabSize, c2b.hiddenSize, c2b.numLayers, c2b.numHeads, c2b.numKvHeads, c2b.headDim, c2b.activation], [256000, 2048, 18, 8, 1, 256, "gelu_tanh"]);
    const c7b = parseConfig(resolvePreset("gemma_instruct_7b_en").config, "x");
    assert.deepEqual([c7b.hiddenSize, c7b.intermediateSize, c7b.numLayers, c7b.numHeads, c7b.numKvHeads], [3072, 24576, 28, 16, 16]);
    assert.equal(resolvePreset("gemma_instruct_2b_en").hfRepo, "google/gemma-2b-it");
    assert.equal(resolvePreset("gemma_7b_en").kaggleHandle, "google/gemma/transformers/7b");
  });

  test("an unknown preset lists the known ones", () => {
    assert.throws(() => resolvePreset("gemma_9b"), (e: unknown) => e instanceof LoratuneError && /gemma_2b_en, gemma_instruct_2b_en/.test(e.message));
  });
});
