// LoRA adapters in the Hugging Face PEFT layout: save -> load round trips (PEFT and Keras layouts),
// the files PEFT expects, PEFT options (rank_pattern, alpha_pattern, use_rslora), and a clear error
// for every adapter that does not fit the model or uses something loratune does not compute.
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { native } from "../src/backend/native.js";
import { LoratuneError } from "../src/errors.js";
import { Random } from "../src/generation/random.js";
import { SafetensorsFile, writeSafetensors } from "../src/io/safetensors.js";
import { loadModelDir } from "../src/models/load.js";
import type { CausalLM } from "../src/models/model.js";
import { loadAdapter, readLoratuneRecord, saveAdapter, type LoadedAdapter } from "../src/lora/adapter.js";
import { enableLora, loraParameters, moduleOf, type LoraOptions, type LoraSpec } from "../src/lora/lora.js";
import { Tensor } from "../src/tensor.js";
import { maxAbsDiff } from "./helpers.js";

const fixtures = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../test/fixtures");
const STD02 = path.join(fixtures, "gemma-tiny-std0.2");
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "loratune-adapter-"));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

const IDS = [2, 213, 287, 262, 424, 213, 75, 50, 75, 21, 475, 139];
const Q0 = "base_model.model.model.layers.0.self_attn.q_proj";

function logitsOf(model: CausalLM, ids: number[] = IDS): Float32Array {
  const { vocabSize: V, hiddenSize: H } = model.config;
  const h = model.forward(Int32Array.from(ids));
  const out = new Float32Array(ids.length * V);
  native.gemm(false, true, ids.length, V, H, 1, h.f32, H, model.lmHead.weights, H, 0, out, V);
  return out;
}

function fresh(): CausalLM {
  return loadModelDir(STD02).model;
}

function withRandomLora(options: LoraOptions, seed: number): { model: CausalLM; spec: LoraSpec } {
  const model = fresh();
  const spec = enableLora(model, options);
  const rng = new Random(seed);
  for (const t of loraParameters(model).values()) for (let i = 0; i < t.size; i++) t.f32[i] = 0.15 * rng.normal();
  return { model, spec };
}

/** The "loratune" record saved in an adapter's safetensors header. */
function loratuneRecordOf(dir: string): Record<string, any> {
  const f = SafetensorsFile.open(path.join(dir, "adapter_model.safetensors"));
  try {
    return readLoratuneRecord(f.metadata.loratune)!;
  } finally {
    f.close();
  }
}

function readJson(file: string): Record<string, any> {
  return JSON.parse(fs.readFileSync(file, "utf8"));
}

/** Loads collecting warnings instead of printing them. */
function load(model: CausalLM, dir: string): LoadedAdapter {
  return loadAdapter(model, dir, { onWarning: () => {} });
}

const peftDir = path.join(tmp, "peft");
const peft = withRandomLora({ rank: 4, alpha: 8, targets: ["q_proj", "v_proj", "o_proj", "gate_proj", "up_proj"] }, 1);
saveAdapter(peft.model, peftDir, { baseModel: STD02, spec: peft.spec });

/** A copy of the PEFT adapter with its config (and optionally its tensors) changed. */
function variant(name: string, edit: (config: Record<string, any>) => void, tensors?: Array<[string, Tensor]>): string {
  const dir = path.join(tmp, name);
  fs.mkdirSync(dir);
  const config = readJson(path.join(peftDir, "adapter_config.json"));
  edit(config);
  fs.writeFileSync(path.join(dir, "adapter_config.json"), JSON.stringify(config));
  if (tensors) writeSafetensors(path.join(dir, "adapter_model.safetensors"), tensors, { format: "pt" });
  else fs.copyFileSync(path.join(peftDir, "adapter_model.safetensors"), path.join(dir, "adapter_model.safetensors"));
  return dir;
}

/** The PEFT adapter's tensors, read back. */
function savedTensors(): Array<[string, Tensor]> {
  const f = SafetensorsFile.open(path.join(peftDir, "adapter_model.safetensors"));
  try {
    return f.names().map((n) => [n, f.read(n, "f32")] as [string, Tensor]);
  } finally {
    f.close();
  }
}

describe("saveAdapter / loadAdapter, PEFT layout", () => {
  it("writes PEFT's files, tensor names, shapes and config", () => {
    assert.deepEqual(fs.readdirSync(peftDir).sort(), ["adapter_config.json", "adapter_model.safetensors"]);
    const config = readJson(path.join(peftDir, "adapter_config.json"));
    const expected: Record<string, unknown> = {
      peft_type: "LORA", task_type: "CAUSAL_LM", r: 4, lora_alpha: 8, target_modules: ["q_proj", "v_proj", "o_proj", "gate_proj", "up_proj"],
      lora_dropout: 0, bias: "none", fan_in_fan_out: false, base_model_name_or_path: STD02, inference_mode: true, use_rslora: false,
      use_dora: false, init_lora_weights: true, modules_to_save: null, rank_pattern: {}, alpha_pattern: {}, layers_to_transform: null,
      revision: null,
    };
    for (const [k, v] of Object.entries(expected)) assert.deepEqual(config[k], v, k);
    assert.equal(config.loratune, undefined); // PEFT sees only its own keys
    const record = loratuneRecordOf(peftDir);
    assert.equal(record.layout, "peft");
    assert.deepEqual(record.base, {
      model_type: "gemma", hidden_size: 64, num_hidden_layers: 2, vocab_size: 512, num_attention_heads: 4, num_key_value_heads: 1, head_dim: 16,
    });
    const f = SafetensorsFile.open(path.join(peftDir, "adapter_model.safetensors"));
    try {
      assert.equal(f.names().length, 2 * 5 * 2);
      assert.deepEqual(f.info(`${Q0}.lora_A.weight`).shape, [4, 64]);
      assert.deepEqual(f.info(`${Q0}.lora_B.weight`).shape, [64, 4]);
      assert.deepEqual(f.info("base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight").shape, [16, 4]);
      assert.deepEqual(f.info("base_model.model.model.layers.1.mlp.gate_proj.lora_A.weight").shape, [4, 64]);
      assert.ok(f.names().every((n) => f.info(n).dtype === "F32"));
      assert.equal(f.metadata.format, "pt");
      const params = loraParameters(peft.model);
      for (const n of f.names()) assert.deepEqual(f.read(n, "f32").f32, params.get(n.slice("base_model.model.".length))!.f32, n);
    } finally {
      f.close();
    }
  });

  it("loads into a fresh model with identical outputs", () => {
    const model = fresh();
    const info = load(model, peftDir);
    assert.deepEqual(info.warnings, []);
    assert.deepEqual(info.spec, { rank: 4, alpha: 8, targets: ["q_proj", "v_proj", "o_proj", "gate_proj", "up_proj"], layout: "peft" });
    assert.equal(info.modules.length, 10);
    assert.ok(info.modules.every((m) => m.rank === 4 && m.scale === 2));
    assert.deepEqual(logitsOf(model), logitsOf(peft.model));
    assert.ok([...model.weights().values()].every((w) => !w.requiresGrad), "base weights are frozen");
    assert.ok([...loraParameters(model).values()].every((t) => t.requiresGrad), "adapters can train on");
  });

  it("replaces an adapter folder whole, and refuses to replace any other folder", () => {
    const dir = path.join(tmp, "replace");
    saveAdapter(peft.model, dir, { baseModel: "google/gemma-2b", spec: peft.spec });
    fs.writeFileSync(path.join(dir, "README.md"), "old card");
    const other = withRandomLora({ rank: 2, targets: ["k_proj"] }, 2);
    saveAdapter(other.model, dir, { baseModel: "google/gemma-2b", spec: other.spec });
    assert.deepEqual(fs.readdirSync(dir).sort(), ["adapter_config.json", "adapter_model.safetensors"]);
    const model = fresh();
    assert.deepEqual(load(model, dir).spec.targets, ["k_proj"]);
    assert.deepEqual(logitsOf(model), logitsOf(other.model));
    assert.deepEqual(fs.readdirSync(tmp).filter((n) => n.startsWith(".")), [], "no temporary folders remain");

    const notAdapter = path.join(tmp, "precious");
    fs.mkdirSync(notAdapter);
    fs.writeFileSync(path.join(notAdapter, "data.txt"), "keep");
    assert.throws(() => saveAdapter(other.model, notAdapter, { baseModel: "x", spec: other.spec }),
      (e: unknown) => e instanceof LoratuneError && /refusing to replace/.test(e.message));
    assert.deepEqual(fs.readdirSync(notAdapter), ["data.txt"]);
  });

  it("refuses to save without adapters, or with a spec that does not describe them", () => {
    const model = fresh();
    assert.throws(() => saveAdapter(model, path.join(tmp, "none"), { baseModel: "x", spec: peft.spec }),
      (e: unknown) => e instanceof LoratuneError && /no LoRA adapters/.test(e.message));
    assert.throws(() => saveAdapter(peft.model, path.join(tmp, "none"), { baseModel: "x", spec: { ...peft.spec, targets: ["q_proj"] } }),
      (e: unknown) => e instanceof LoratuneError && /v_proj/.test(e.message));
    assert.ok(!fs.existsSync(path.join(tmp, "none")));
  });
});

describe("saveAdapter / loadAdapter, Keras per-head layout", () => {
  const dir = path.join(tmp, "keras");
  const keras = withRandomLora({ rank: 2, alpha: 4, targets: ["q_proj", "v_proj"], layout: "keras" }, 3);
  saveAdapter(keras.model, dir, { baseModel: "gemma_2b_en", spec: keras.spec });

  it("exports rank heads*r with a block-diagonal B, keeping alpha/r through rank_pattern and alpha_pattern", () => {
    const config = readJson(path.join(dir, "adapter_config.json"));
    assert.equal(config.r, 2);
    assert.equal(config.lora_alpha, 4);
    assert.deepEqual(config.rank_pattern, { q_proj: 8 });
    assert.deepEqual(config.alpha_pattern, { q_proj: 16 });
    assert.deepEqual(loratuneRecordOf(dir).groups, { q_proj: 4, v_proj: 1 });
    assert.equal(loratuneRecordOf(dir).layout, "keras");
    const q = keras.model.linears().find((l) => l.name === "model.layers.0.self_attn.q_proj.weight")!;
    const f = SafetensorsFile.open(path.join(dir, "adapter_model.safetensors"));
    try {
      const A = f.read(`${Q0}.lora_A.weight`, "f32");
      const B = f.read(`${Q0}.lora_B.weight`, "f32");
      assert.deepEqual(A.shape, [8, 64]);
      assert.deepEqual(A.f32, q.lora!.A.f32);
      assert.deepEqual(B.shape, [64, 8]);
      const shared = q.lora!.B.f32; // [16, 2]
      for (let row = 0; row < 64; row++) {
        for (let col = 0; col < 8; col++) {
          const head = Math.floor(row / 16);
          const want = Math.floor(col / 2) === head ? shared[(row % 16) * 2 + (col % 2)]! : 0;
          assert.equal(B.f32[row * 8 + col], want, `B[${row}, ${col}]`);
        }
      }
      assert.deepEqual(f.info("base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight").shape, [16, 2]);
    } finally {
      f.close();
    }
  });

  it("loads back as PEFT adapters giving the Keras-layout model's logits within 1e-5", () => {
    const model = fresh();
    const info = load(model, dir);
    const q = info.modules.find((m) => m.module === "model.layers.0.self_attn.q_proj")!;
    const v = info.modules.find((m) => m.module === "model.layers.0.self_attn.v_proj")!;
    assert.deepEqual([q.rank, q.scale, v.rank, v.scale], [8, 2, 2, 2]);
    assert.ok(model.linears().every((l) => !l.lora || l.lora.groups === 1));
    const want = logitsOf(keras.model);
    assert.ok(maxAbsDiff(want, logitsOf(fresh())) > 0.1, "the adapter changes the logits");
    const d = maxAbsDiff(logitsOf(model), want);
    assert.ok(d < 1e-5, `max |diff| ${d}`);
  });
});

describe("loadAdapter: PEFT options", () => {
  it("use_rslora scales by alpha/sqrt(r)", () => {
    const dir = variant("rslora", (c) => (c.use_rslora = true));
    const model = fresh();
    const info = load(model, dir);
    assert.ok(info.modules.every((m) => m.scale === 8 / Math.sqrt(4)));
    const reference = fresh();
    load(reference, peftDir);
    for (const l of reference.linears()) if (l.lora) l.lora.scale = 4;
    assert.deepEqual(logitsOf(model), logitsOf(reference));
  });

  it("honours rank_pattern and alpha_pattern per module, and reads BF16 factors", () => {
    const source = fresh();
    const rng = new Random(4);
    const tensors: Array<[string, Tensor]> = [];
    for (const l of source.linears()) {
      const isV = l.name.includes("v_proj");
      if (!isV && !l.name.includes("q_proj")) continue;
      const r = isV ? 2 : 4;
      const A = Tensor.from(Float32Array.from({ length: r * l.inFeatures }, () => 0.2 * rng.normal()), [r, l.inFeatures], isV ? "bf16" : "f32");
      const B = Tensor.from(Float32Array.from({ length: l.outFeatures * r }, () => 0.2 * rng.normal()), [l.outFeatures, r], isV ? "bf16" : "f32");
      tensors.push([`base_model.model.${moduleOf(l)}.lora_A.weight`, A], [`base_model.model.${moduleOf(l)}.lora_B.weight`, B]);
      l.lora = { A: A.toF32(), B: B.toF32(), scale: isV ? 3 : 8 / 4, groups: 1 };
    }
    const dir = variant("patterns", (c) => {
      delete c.loratune;
      c.target_modules = ["q_proj", "v_proj"];
      c.rank_pattern = { v_proj: 2 };
      c.alpha_pattern = { "model.layers.\\d+.self_attn.v_proj": 6 };
    }, tensors);
    const model = fresh();
    const info = load(model, dir);
    assert.deepEqual(info.modules.map((m) => [m.module.split(".").slice(2).join("."), m.rank, m.scale]), [
      ["0.self_attn.q_proj", 4, 2], ["0.self_attn.v_proj", 2, 3], ["1.self_attn.q_proj", 4, 2], ["1.self_attn.v_proj", 2, 3],
    ]);
    assert.deepEqual(logitsOf(model), logitsOf(source));
  });

  it("accepts a regular expression and all-linear as target_modules", () => {
    for (const target of ["model\\.layers\\.\\d+\\.(self_attn\\.(q|v|o)_proj|mlp\\.(gate|up)_proj)", "all-linear"]) {
      const model = fresh();
      load(model, variant(`target-${target.length}`, (c) => (c.target_modules = target)));
      assert.deepEqual(logitsOf(model), logitsOf(peft.model));
    }
  });

  it("warns, and still loads, when the adapter's base model differs in size", () => {
    const model = fresh();
    const record = loratuneRecordOf(peftDir);
    Object.assign(record.base, { hidden_size: 2048, num_hidden_layers: 18, vocab_size: 256000 });
    const recorded = variant("other-base", () => {});
    writeSafetensors(path.join(recorded, "adapter_model.safetensors"), savedTensors(), { format: "pt", loratune: JSON.stringify(record) });
    const warnings: string[] = [];
    loadAdapter(model, recorded, { onWarning: (m) => warnings.push(m) });
    assert.equal(warnings.length, 1);
    assert.match(warnings[0]!, /hidden_size 2048, num_hidden_layers 18, vocab_size 256000.*hidden_size 64, num_hidden_layers 2, vocab_size 512/);
    assert.equal(loraParameters(model).size, 20);

    const baseDir = path.join(tmp, "big-base");
    fs.mkdirSync(baseDir);
    fs.writeFileSync(path.join(baseDir, "config.json"), JSON.stringify({ ...readJson(path.join(STD02, "config.json")), num_hidden_layers: 18 }));
    const byPath = variant("base-by-path", (c) => {
      c.base_model_name_or_path = baseDir;
    }, savedTensors()); // without the loratune record
    assert.equal(load(fresh(), byPath).warnings.length, 1);
    assert.match(load(fresh(), byPath).warnings[0]!, /num_hidden_layers 18/);
    // A hub name cannot be checked without a download: no warning.
    assert.deepEqual(load(fresh(), variant("base-by-name", (c) => { delete c.loratune; c.base_model_name_or_path = "google/gemma-2b"; })).warnings, []);
  });
});

describe("loadAdapter: refusals", () => {
  const rejects = (dir: string, pattern: RegExp, label: string) => {
    const model = fresh();
    const before = withRandomLora({ rank: 2, targets: ["k_proj"] }, 9).model;
    // Copy another adapter onto `model` to check a failed load leaves it unchanged.
    model.linears().forEach((l, i) => (l.lora = before.linears()[i]!.lora));
    const want = logitsOf(model);
    assert.throws(() => load(model, dir), (e: unknown) => {
      assert.ok(e instanceof LoratuneError, `${label}: ${String(e)}`);
      assert.match(e.message, pattern, label);
      return true;
    });
    assert.deepEqual(logitsOf(model), want, `${label}: the model is unchanged`);
  };

  it("names the PEFT option it does not support", () => {
    rejects(variant("dora", (c) => (c.use_dora = true)), /use_dora: DoRA/, "use_dora");
    rejects(variant("bias", (c) => (c.bias = "lora_only")), /bias: is "lora_only"; only "none"/, "bias");
    rejects(variant("save", (c) => (c.modules_to_save = ["lm_head"])), /modules_to_save: is \["lm_head"\]/, "modules_to_save");
    rejects(variant("fifo", (c) => (c.fan_in_fan_out = true)), /fan_in_fan_out: is true/, "fan_in_fan_out");
    rejects(variant("ia3", (c) => (c.peft_type = "IA3")), /peft_type: is "IA3"; only LoRA/, "peft_type");
  });

  it("names unknown target modules", () => {
    rejects(variant("unknown-target", (c) => (c.target_modules = ["q_proj", "query_key_value"])),
      /unknown target module "query_key_value".*q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj/, "target_modules");
    rejects(variant("narrow-target", (c) => (c.target_modules = ["q_proj", "v_proj"])),
      /(o|gate|up)_proj\.lora_[AB]\.weight: is for module .*(o|gate|up)_proj, which target_modules \["q_proj","v_proj"\] does not include/, "tensor outside target_modules");
  });

  it("names the tensor whose shape does not fit, expected vs found", () => {
    rejects(variant("rank", (c) => (c.r = 8)),
      /tensor base_model\.model\.model\.layers\.\d\.\w+\.\w+_proj\.lora_[AB]\.weight has shape \[(4, \d+|\d+, 4)\] but \[(8, \d+|\d+, 8)\] is expected \(rank 8 from adapter_config\.json/, "r");
    const tensors = savedTensors().map(([n, t]): [string, Tensor] =>
      n === "base_model.model.model.layers.1.mlp.up_proj.lora_B.weight" ? [n, Tensor.zeros([128, 4])] : [n, t]);
    rejects(variant("shape", () => {}, tensors), /layers\.1\.mlp\.up_proj\.lora_B\.weight has shape \[128, 4\] but \[256, 4\] is expected/, "B shape");
  });

  it("refuses tensors for modules the model lacks, half adapters and stray tensors", () => {
    const layer5: Array<[string, Tensor]> = [...savedTensors(),
      ["base_model.model.model.layers.5.self_attn.q_proj.lora_A.weight", Tensor.zeros([4, 64])],
      ["base_model.model.model.layers.5.self_attn.q_proj.lora_B.weight", Tensor.zeros([64, 4])]];
    rejects(variant("layer5", () => {}, layer5), /layers\.5\.self_attn\.q_proj, which this model does not have/, "extra layer");
    const half = savedTensors().filter(([n]) => n !== `${Q0}.lora_B.weight`);
    rejects(variant("half", () => {}, half), /layers\.0\.self_attn\.q_proj has lora_A but no lora_B/, "half");
    const stray: Array<[string, Tensor]> = [...savedTensors(), [`${Q0}.lora_magnitude_vector`, Tensor.zeros([64])]];
    rejects(variant("stray", () => {}, stray), /DoRA/, "DoRA tensor");
  });

  it("refuses pickles and says what is missing", () => {
    const pickle = path.join(tmp, "pickle");
    fs.mkdirSync(pickle);
    fs.copyFileSync(path.join(peftDir, "adapter_config.json"), path.join(pickle, "adapter_config.json"));
    fs.writeFileSync(path.join(pickle, "adapter_model.bin"), "not really a pickle");
    rejects(pickle, /adapter_model\.bin \(PyTorch pickle\).*refused/, "pickle");
    const noConfig = path.join(tmp, "no-config");
    fs.mkdirSync(noConfig);
    fs.copyFileSync(path.join(peftDir, "adapter_model.safetensors"), path.join(noConfig, "adapter_model.safetensors"));
    rejects(noConfig, /adapter_config\.json: missing/, "no config");
    rejects(path.join(tmp, "nowhere"), /does not exist/, "no folder");
    rejects(path.join(peftDir, "adapter_config.json"), /is not a folder/, "a file");
  });
});
