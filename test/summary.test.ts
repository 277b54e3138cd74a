import assert from "node:assert/strict";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { describe, test } from "node:test";
import { LoratuneError } from "../src/errors.js";
import { SafetensorsFile } from "../src/io/safetensors.js";
import { parseConfig, readConfig } from "../src/models/config.js";
import { resolvePreset } from "../src/models/presets.js";
import { formatBytes, formatSummary, summarize, summaryJson } from "../src/models/summary.js";

const fixture = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../test/fixtures/gemma-tiny");
const gemma2b = parseConfig(resolvePreset("gemma_2b_en").config, "gemma_2b_en");
const gemma7b = parseConfig(resolvePreset("gemma_7b_en").config, "gemma_7b_en");
const qv = ["q_proj", "v_proj"];

describe("summarize", () => {
  test("Gemma 2B: 2,506,172,416 parameters, all trainable without LoRA", () => {
    const s = summarize(gemma2b);
    assert.equal(s.totalParams, 2_506_172_416);
    assert.equal(s.trainableParams, 2_506_172_416);
    assert.equal(s.nonTrainableParams, 0);
    assert.deepEqual(s.bytesByDtype, { bf16: 2_506_172_416 * 2 });
  });

  test("Gemma 7B: 8,537,680,896 parameters", () => {
    assert.equal(summarize(gemma7b).totalParams, 8_537_680_896);
  });

  test("LoRA rank 4 on q and v: PEFT layout trains 460,800", () => {
    const s = summarize(gemma2b, { rank: 4, targets: qv, layout: "peft" });
    assert.equal(s.trainableParams, 460_800);
    assert.equal(s.totalParams, 2_506_172_416 + 460_800);
    assert.equal(s.nonTrainableParams, 2_506_172_416);
    const a = s.rows.find((r) => r.name === "model.layers.0.self_attn.q_proj.lora_A")!;
    const b = s.rows.find((r) => r.name === "model.layers.0.self_attn.v_proj.lora_B")!;
    assert.deepEqual([a.weights, b.weights], [[[4, 2048]], [[256, 4]]]);
  });

  test("LoRA rank 4 on q and v: Keras layout trains 1,363,968 of 2,507,536,384", () => {
    const s = summarize(gemma2b, { rank: 4, alpha: 8, targets: qv, layout: "keras" });
    assert.equal(s.trainableParams, 1_363_968);
    assert.equal(s.totalParams, 2_507_536_384);
    assert.deepEqual(s.bytesByDtype, { bf16: 2_506_172_416 * 2, f32: 1_363_968 * 4 });
    assert.equal(s.trainableBytes, 1_363_968 * 4);
    const shapes = (name: string) => s.rows.find((r) => r.name === `model.layers.3.self_attn.${name}`)!.weights[0];
    assert.deepEqual(shapes("q_proj.lora_A"), [8, 2048, 4]);
    assert.deepEqual(shapes("q_proj.lora_B"), [4, 256]);
    assert.deepEqual(shapes("v_proj.lora_A"), [1, 2048, 4]);
    assert.deepEqual(shapes("v_proj.lora_B"), [4, 256]);
  });

  test("Keras adapter shapes for o_proj and the MLP", () => {
    const s = summarize(gemma2b, { rank: 2, targets: ["o_proj", "gate_proj", "down_proj"], layout: "keras" });
    const shapes = (name: string) => s.rows.find((r) => r.name === `model.layers.0.${name}`)!.weights[0];
    assert.deepEqual(shapes("self_attn.o_proj.lora_A"), [8, 256, 2]);
    assert.deepEqual(shapes("self_attn.o_proj.lora_B"), [2, 2048]);
    assert.deepEqual(shapes("mlp.gate_proj.lora_A"), [2048, 2]);
    assert.deepEqual(shapes("mlp.gate_proj.lora_B"), [2, 16384]);
    assert.deepEqual(shapes("mlp.down_proj.lora_A"), [16384, 2]);
    assert.deepEqual(shapes("mlp.down_proj.lora_B"), [2, 2048]);
  });

  test("bad LoRA settings are refused", () => {
    assert.throws(() => summarize(gemma2b, { rank: 4, targets: ["query"], layout: "peft" }), (e: unknown) => e instanceof LoratuneError && /unknown LoRA target "query"/.test(e.message));
    assert.throws(() => summarize(gemma2b, { rank: 0, targets: qv, layout: "peft" }), LoratuneError);
  });

  test("the tiny fixture's total equals the sizes in its model.safetensors", () => {
    const st = SafetensorsFile.open(path.join(fixture, "model.safetensors"));
    const stored = [...st.tensors.values()].reduce((sum, t) => sum + t.shape.reduce((a, b) => a * b, 1), 0);
    st.close();
    assert.equal(summarize(readConfig(fixture)).totalParams, stored);
  });

  test("an untied head is counted", () => {
    const untied = summarize({ ...gemma2b, tieWordEmbeddings: false });
    assert.equal(untied.totalParams, 2_506_172_416 + 256000 * 2048);
  });
});

describe("formatSummary and summaryJson", () => {
  test("a Keras-like table with every decoder block and the first block's sub-layers", () => {
    const text = formatSummary(summarize(gemma2b));
    assert.match(text, /Layer \(type\)\s+┃ Output shape\s+┃\s+Param # ┃/);
    assert.match(text, /model\.embed_tokens \(Embedding\)\s+│ \(None, None, 2048\)\s+│\s+524,288,000 │/);
    for (let l = 0; l < 18; l++) assert.match(text, new RegExp(`model\\.layers\\.${l} \\(DecoderBlock\\)\\s+│ \\(None, None, 2048\\)\\s+│\\s+110,104,576 │`));
    assert.match(text, /self_attn\.q_proj \(Dense\)/);
    assert.equal(text.match(/self_attn\.q_proj/g)!.length, 1);
    assert.match(text, /lm_head \(tied to model\.embed_tokens\)\s+│ \(None, None, 256000\)/);
    assert.match(text, /Total params: 2,506,172,416 \(4\.67 GB\)/);
    assert.match(text, /Trainable params: 2,506,172,416 \(4\.67 GB\)/);
    assert.match(text, /Non-trainable params: 0 \(0\.00 B\)/);
    const widths = new Set(text.split("\n").filter((l) => /^[┏┃┡│└]/.test(l)).map((l) => l.length));
    assert.equal(widths.size, 1, "every table line has the same width");
  });

  test("LoRA adapters show under the first block and in the totals", () => {
    const text = formatSummary(summarize(gemma2b, { rank: 4, targets: qv, layout: "keras" }));
    assert.match(text, /lora_A \(LoRA A\)\s+│ \(None, None, 8, 4\)\s+│\s+65,536 │/);
    assert.match(text, /Total params: 2,507,536,384/);
    assert.match(text, /Trainable params: 1,363,968 \(5\.20 MB\)/);
    assert.match(text, /Non-trainable params: 2,506,172,416 \(4\.67 GB\)/);
  });

  test("summaryJson", () => {
    const json = summaryJson(summarize(gemma2b, { rank: 4, targets: qv, layout: "peft" }));
    assert.equal(json.total_params, 2_506_633_216);
    assert.equal(json.trainable_params, 460_800);
    assert.equal(json.non_trainable_params, 2_506_172_416);
    assert.equal(json.vocab_size, 256000);
    assert.equal(json.hidden_size, 2048);
    assert.equal(json.num_layers, 18);
    assert.deepEqual(json.lora, { rank: 4, alpha: null, targets: qv, layout: "peft" });
  });

  test("formatBytes follows Keras", () => {
    assert.equal(formatBytes(0), "0.00 B");
    assert.equal(formatBytes(1023), "1023.00 B");
    assert.equal(formatBytes(1024), "1.00 KB");
    assert.equal(formatBytes(2_506_172_416 * 4), "9.34 GB");
  });
});
