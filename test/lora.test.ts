// LoRA layouts and merging on the tiny Gemma fixtures: Keras's per-head layout equals a PEFT adapter
// with a block-diagonal B, its gradients match central finite differences of an independent float64
// re-implementation, and merged weights (f32 and bf16) reproduce base + adapter; the merged model
// written as a Hugging Face checkpoint loads back and decodes the same tokens.
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { native } from "../src/backend/native.js";
import { lmHeadCrossEntropy } from "../src/autograd/ops.js";
import { record } from "../src/autograd/tape.js";
import { LoratuneError } from "../src/errors.js";
import { TextGenerator } from "../src/generation/generate.js";
import { Random } from "../src/generation/random.js";
import { SafetensorsFile } from "../src/io/safetensors.js";
import type { ModelConfig } from "../src/models/config.js";
import type { Linear } from "../src/models/layers.js";
import { loadModelDir } from "../src/models/load.js";
import type { CausalLM } from "../src/models/model.js";
import { enableLora, loraParameters, moduleOf, type LoraOptions } from "../src/lora/lora.js";
import { mergeLora, saveModel } from "../src/lora/merge.js";
import { Tensor } from "../src/tensor.js";
import { maxAbs, maxAbsDiff, WORD_TOKENIZER } from "./helpers.js";

const fixtures = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../test/fixtures");
const TINY = path.join(fixtures, "gemma-tiny");
const STD02 = path.join(fixtures, "gemma-tiny-std0.2");
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "loratune-lora-"));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

const IDS = [2, 213, 287, 262, 424, 213, 75, 50, 75, 21, 475, 139];
const PROMPT = [2, 111, 377, 80, 333];



/** Logits [T, vocab] of the model for ids. */
function logitsOf(model: CausalLM, ids: number[]): Float32Array {
  const { vocabSize: V, hiddenSize: H } = model.config;
  const h = model.forward(Int32Array.from(ids));
  const out = new Float32Array(ids.length * V);
  native.gemm(false, true, ids.length, V, H, 1, h.f32, H, model.lmHead.weights, H, 0, out, V);
  return out;
}

function greedy(model: CausalLM, n = 16): number[] {
  return new TextGenerator(model).generate({ ids: PROMPT }, { sampler: "greedy", maxNewTokens: n, stopTokenIds: [] }).newIds;
}

/** enableLora, then A and B drawn normal(0, std) so the adapter changes the model a lot. */
function randomLora(model: CausalLM, options: LoraOptions, std: number, seed: number): void {
  enableLora(model, options);
  const rng = new Random(seed);
  for (const t of loraParameters(model).values()) for (let i = 0; i < t.size; i++) t.f32[i] = std * rng.normal();
}

// ---------------------------------------------------------------------------------------------
// An independent float64 Gemma with LoRA, written from the fixture README's description.

interface RefLora {
  A: Float64Array; // [groups * r, in]
  B: Float64Array; // [out / groups, r]
  groups: number;
  scale: number;
}

class RefGemma {
  readonly w = new Map<string, Float64Array>();
  loras = new Map<string, RefLora>();

  constructor(readonly c: ModelConfig, weights: Map<string, Tensor>) {
    for (const [name, t] of weights) this.w.set(name, Float64Array.from(t.toArray()));
  }

  private W(name: string): Float64Array {
    return this.w.get(name)!;
  }

  /** y = x Wᵀ (+ LoRA), x [T, inF]. */
  private linear(module: string, x: Float64Array, T: number, inF: number): Float64Array {
    const W = this.W(`${module}.weight`);
    const outF = W.length / inF;
    const y = new Float64Array(T * outF);
    for (let t = 0; t < T; t++) {
      for (let o = 0; o < outF; o++) {
        let s = 0;
        for (let i = 0; i < inF; i++) s += x[t * inF + i]! * W[o * inF + i]!;
        y[t * outF + o] = s;
      }
    }
    const lora = this.loras.get(module);
    if (lora) {
      const R = lora.A.length / inF;
      const r = R / lora.groups;
      const d = outF / lora.groups;
      for (let t = 0; t < T; t++) {
        const down = new Float64Array(R);
        for (let j = 0; j < R; j++) {
          let s = 0;
          for (let i = 0; i < inF; i++) s += x[t * inF + i]! * lora.A[j * inF + i]!;
          down[j] = s;
        }
        for (let h = 0; h < lora.groups; h++) {
          for (let i = 0; i < d; i++) {
            let s = 0;
            for (let j = 0; j < r; j++) s += down[h * r + j]! * lora.B[i * r + j]!;
            y[t * outF + h * d + i] += lora.scale * s;
          }
        }
      }
    }
    return y;
  }

  private norm(x: Float64Array, T: number, w: Float64Array): Float64Array {
    const H = w.length;
    const y = new Float64Array(x.length);
    for (let t = 0; t < T; t++) {
      let ms = 0;
      for (let i = 0; i < H; i++) ms += x[t * H + i]! ** 2;
      const rs = 1 / Math.sqrt(ms / H + this.c.rmsNormEps);
      for (let i = 0; i < H; i++) y[t * H + i] = x[t * H + i]! * rs * (1 + w[i]!);
    }
    return y;
  }

  private rope(x: Float64Array, T: number, heads: number): void {
    const D = this.c.headDim;
    for (let t = 0; t < T; t++) {
      for (let h = 0; h < heads; h++) {
        const o = (t * heads + h) * D;
        for (let i = 0; i < D / 2; i++) {
          const a = t * this.c.ropeTheta ** (-2 * i / D);
          const x1 = x[o + i]!, x2 = x[o + i + D / 2]!;
          x[o + i] = x1 * Math.cos(a) - x2 * Math.sin(a);
          x[o + i + D / 2] = x1 * Math.sin(a) + x2 * Math.cos(a);
        }
      }
    }
  }

  /** Mean next-token cross-entropy over ids. */
  loss(ids: number[]): number {
    const c = this.c;
    const T = ids.length, H = c.hiddenSize, D = c.headDim, Hq = c.numHeads, Hkv = c.numKvHeads, I = c.intermediateSize;
    const E = this.W("model.embed_tokens.weight");
    let h = new Float64Array(T * H);
    const embedScale = Math.fround(Math.sqrt(H));
    for (let t = 0; t < T; t++) for (let i = 0; i < H; i++) h[t * H + i] = E[ids[t]! * H + i]! * embedScale;
    for (let l = 0; l < c.numLayers; l++) {
      const p = `model.layers.${l}`;
      const x = this.norm(h, T, this.W(`${p}.input_layernorm.weight`));
      const q = this.linear(`${p}.self_attn.q_proj`, x, T, H);
      const k = this.linear(`${p}.self_attn.k_proj`, x, T, H);
      const v = this.linear(`${p}.self_attn.v_proj`, x, T, H);
      this.rope(q, T, Hq);
      this.rope(k, T, Hkv);
      const a = new Float64Array(T * Hq * D);
      for (let hq = 0; hq < Hq; hq++) {
        const kv = Math.floor(hq / (Hq / Hkv));
        for (let t = 0; t < T; t++) {
          const s = new Float64Array(t + 1);
          let m = -Infinity;
          for (let u = 0; u <= t; u++) {
            let dot = 0;
            for (let i = 0; i < D; i++) dot += q[(t * Hq + hq) * D + i]! * k[(u * Hkv + kv) * D + i]!;
            s[u] = dot * D ** -0.5;
            m = Math.max(m, s[u]!);
          }
          let z = 0;
          for (let u = 0; u <= t; u++) z += (s[u] = Math.exp(s[u]! - m));
          for (let u = 0; u <= t; u++) {
            for (let i = 0; i < D; i++) a[(t * Hq + hq) * D + i] += (s[u]! / z) * v[(u * Hkv + kv) * D + i]!;
          }
        }
      }
      const o = this.linear(`${p}.self_attn.o_proj`, a, T, Hq * D);
      for (let i = 0; i < h.length; i++) h[i] += o[i]!;
      const y = this.norm(h, T, this.W(`${p}.post_attention_layernorm.weight`));
      const g = this.linear(`${p}.mlp.gate_proj`, y, T, H);
      const up = this.linear(`${p}.mlp.up_proj`, y, T, H);
      const m = new Float64Array(T * I);
      for (let i = 0; i < m.length; i++) {
        const z = g[i]!;
        m[i] = 0.5 * z * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (z + 0.044715 * z ** 3))) * up[i]!;
      }
      const down = this.linear(`${p}.mlp.down_proj`, m, T, I);
      h = h.map((value, i) => value + down[i]!);
    }
    const f = this.norm(h, T, this.W("model.norm.weight"));
    let total = 0;
    for (let t = 0; t + 1 < T; t++) {
      const logits = new Float64Array(c.vocabSize);
      let mx = -Infinity;
      for (let vv = 0; vv < c.vocabSize; vv++) {
        let s = 0;
        for (let i = 0; i < H; i++) s += f[t * H + i]! * E[vv * H + i]!;
        logits[vv] = s;
        mx = Math.max(mx, s);
      }
      let z = 0;
      for (const s of logits) z += Math.exp(s - mx);
      total += mx + Math.log(z) - logits[ids[t + 1]!]!;
    }
    return total / (T - 1);
  }
}

/** Mean next-token loss and LoRA gradients of the f32 model (autograd). */
function autogradLoss(model: CausalLM, ids: number[]): number {
  for (const t of loraParameters(model).values()) t.grad = null;
  const targets = Int32Array.from(ids, (_, t) => (t + 1 < ids.length ? ids[t + 1]! : -1));
  const { result, tape } = record(() => lmHeadCrossEntropy(model.forward(Int32Array.from(ids)), model.lmHead, targets));
  tape.backward(result.loss);
  return result.loss.f32[0]!;
}

function refFromModel(model: CausalLM): RefGemma {
  const ref = new RefGemma(model.config, model.weights());
  for (const l of model.linears()) {
    if (!l.lora) continue;
    ref.loras.set(moduleOf(l), {
      A: Float64Array.from(l.lora.A.f32), B: Float64Array.from(l.lora.B.f32), groups: l.lora.groups, scale: l.lora.scale,
    });
  }
  return ref;
}

describe("Keras per-head layout", () => {
  it("equals a PEFT adapter of rank heads*r with block-diagonal B (std0.2 fixture, logits within 1e-5)", () => {
    const keras = loadModelDir(STD02).model;
    randomLora(keras, { rank: 2, alpha: 4, targets: ["q_proj", "k_proj", "v_proj", "o_proj"], layout: "keras" }, 0.2, 7);
    const peft = loadModelDir(STD02).model;
    const heads = keras.config.numHeads;
    const peftLinears = new Map(peft.linears().map((l) => [l.name, l]));
    let grouped = 0;
    for (const k of keras.linears()) {
      if (!k.lora) continue;
      const { A, B, scale, groups } = k.lora;
      if (k.name.includes("q_proj")) assert.equal(groups, heads);
      if (groups > 1) grouped++;
      const r = B.shape[1]!, d = B.shape[0]!, R = groups * r;
      const full = Tensor.zeros([k.outFeatures, R]);
      for (let h = 0; h < groups; h++) for (let i = 0; i < d; i++) for (let j = 0; j < r; j++) full.f32[(h * d + i) * R + h * r + j] = B.f32[i * r + j]!;
      peftLinears.get(k.name)!.lora = { A: A.clone(), B: full, scale, groups: 1 };
    }
    assert.ok(grouped >= 2, "q_proj of both layers uses the per-head layout");
    const a = logitsOf(keras, IDS);
    const b = logitsOf(peft, IDS);
    const base = logitsOf(loadModelDir(STD02).model, IDS);
    assert.ok(maxAbsDiff(a, base) > 0.5, "the adapter changes the logits");
    const d = maxAbsDiff(a, b);
    assert.ok(d < 1e-5, `keras vs block-diagonal PEFT: max |diff| ${d}`);
  });

  for (const layout of ["keras", "peft"] as const) {
    it(`${layout} layout: A and B gradients match float64 central differences (gemma-tiny)`, () => {
      const { model } = loadModelDir(TINY);
      randomLora(model, { rank: 2, alpha: 4, targets: ["q_proj", "k_proj", "v_proj", "o_proj", "up_proj"], layout }, 0.3, 11);
      const loss32 = autogradLoss(model, IDS);
      const ref = refFromModel(model);
      const loss64 = ref.loss(IDS);
      assert.ok(Math.abs(loss32 - loss64) < 1e-5, `f32 loss ${loss32} vs f64 ${loss64}`);
      // Float64 re-computation: truncation ~eps², rounding ~1e-16 / eps, both far below the f32 gradients' error.
      const eps = 1e-4;
      const rng = new Random(5);
      let checked = 0;
      for (const linear of model.linears()) {
        if (!linear.lora) continue;
        const module = moduleOf(linear);
        const refLora = ref.loras.get(module)!;
        for (const part of ["A", "B"] as const) {
          const grad = linear.lora[part].grad!.f32;
          const theta = refLora[part];
          const fd = (direction: (i: number) => number) => {
            const saved = theta.slice();
            for (let i = 0; i < theta.length; i++) theta[i] = saved[i]! + eps * direction(i);
            const up = ref.loss(IDS);
            for (let i = 0; i < theta.length; i++) theta[i] = saved[i]! - eps * direction(i);
            const down = ref.loss(IDS);
            theta.set(saved);
            return (up - down) / (2 * eps);
          };
          const tol = 1e-4 * maxAbs(grad) + 1e-9;
          assert.ok(maxAbs(grad) > 0, `${module}.${part}: zero gradient`);
          // The whole tensor along a random ±1 direction ...
          const signs = Float64Array.from(theta, () => (rng.next() < 0.5 ? -1 : 1));
          let dot = 0;
          for (let i = 0; i < grad.length; i++) dot += grad[i]! * signs[i]!;
          const dirFd = fd((i) => signs[i]!);
          assert.ok(Math.abs(dot - dirFd) <= tol * Math.sqrt(grad.length),
            `${module}.${part} directional: autograd ${dot} vs finite difference ${dirFd}`);
          // ... and single entries: the largest gradient and a few random ones.
          let top = 0;
          for (let i = 1; i < grad.length; i++) if (Math.abs(grad[i]!) > Math.abs(grad[top]!)) top = i;
          for (const i of [top, ...Array.from({ length: 4 }, () => rng.int(grad.length))]) {
            const g = fd((j) => (j === i ? 1 : 0));
            assert.ok(Math.abs(grad[i]! - g) <= tol, `${module}.${part}[${i}]: autograd ${grad[i]} vs finite difference ${g} (tol ${tol})`);
            checked++;
          }
        }
      }
      assert.ok(checked >= 40, `checked ${checked} entries`);
    });
  }
});

describe("mergeLora", () => {
  const targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];

  for (const layout of ["peft", "keras"] as const) {
    it(`${layout} layout: the merged f32 model decodes the same greedy tokens, logits within 1e-4`, () => {
      const { model } = loadModelDir(STD02);
      const baseTokens = greedy(model);
      randomLora(model, { rank: 4, alpha: 8, targets, layout }, 0.15, 3);
      const adapterTokens = greedy(model);
      const adapterLogits = logitsOf(model, IDS);
      assert.notDeepEqual(adapterTokens, baseTokens, "the adapter must change what the model says");
      const merged = mergeLora(model);
      assert.equal(merged.length, 7 * model.config.numLayers);
      assert.equal(loraParameters(model).size, 0, "adapters are removed");
      assert.ok(model.linears().every((l) => l.weight.dtype === "f32"));
      assert.deepEqual(greedy(model), adapterTokens);
      const d = maxAbsDiff(logitsOf(model, IDS), adapterLogits);
      assert.ok(d < 1e-4, `merged vs adapter logits: max |diff| ${d}`);
    });
  }

  it("merges bf16 weights in f32 and rounds back to bf16", () => {
    const { model } = loadModelDir(STD02, { precision: "bf16" });
    randomLora(model, { rank: 4, alpha: 8, targets: ["q_proj", "v_proj", "down_proj"], layout: "keras" }, 0.15, 4);
    const expected = new Map<Linear, Float64Array>();
    for (const l of model.linears()) {
      if (!l.lora) continue;
      assert.equal(l.weight.dtype, "bf16");
      const { A, B, scale, groups } = l.lora;
      const W = Float64Array.from(l.weight.toArray());
      const inF = l.inFeatures, r = A.shape[0]! / groups, d = l.outFeatures / groups;
      for (let h = 0; h < groups; h++) {
        for (let i = 0; i < d; i++) {
          for (let c = 0; c < inF; c++) {
            let s = 0;
            for (let j = 0; j < r; j++) s += B.f32[i * r + j]! * A.f32[(h * r + j) * inF + c]!;
            W[(h * d + i) * inF + c] += scale * s;
          }
        }
      }
      expected.set(l, W);
    }
    const unmerged = logitsOf(model, IDS);
    mergeLora(model);
    let exact = 0, total = 0;
    for (const [l, W] of expected) {
      assert.equal(l.weight.dtype, "bf16", `${l.name} stays bf16`);
      const rounded = Tensor.from(Float32Array.from(W), [W.length], "bf16").data as Uint16Array;
      const got = l.weight.data as Uint16Array;
      for (let i = 0; i < W.length; i++) {
        total++;
        if (got[i] === rounded[i]) exact++;
        else assert.ok(Math.abs(got[i]! - rounded[i]!) === 1, `${l.name}[${i}]: bf16 ${got[i]} vs ${rounded[i]} (more than one ulp)`);
      }
    }
    assert.ok(exact / total > 0.999, `${exact} of ${total} merged values round exactly as the float64 merge`);
    // bf16 rounding of the merged weights moves the logits a little, no more.
    const d = maxAbsDiff(logitsOf(model, IDS), unmerged);
    assert.ok(d < 0.2 && d > 0, `bf16 merged vs adapter logits: max |diff| ${d}`);
  });

  it("rejects adapters that do not fit their weight, leaving the model untouched", () => {
    const { model } = loadModelDir(TINY);
    enableLora(model, { rank: 2, targets: ["q_proj", "v_proj"] });
    const v = model.linears().find((l) => l.name.endsWith("layers.1.self_attn.v_proj.weight"))!;
    v.lora!.B = Tensor.zeros([3, 2]);
    assert.throws(() => mergeLora(model), (e: unknown) => e instanceof LoratuneError && /v_proj/.test(e.message));
    assert.equal(loraParameters(model).size, 8);
  });
});

describe("saveModel", () => {
  const tokDir = path.join(tmp, "base-tokenizer");
  fs.mkdirSync(tokDir);
  const tokenizerJson = JSON.stringify(WORD_TOKENIZER);
  fs.writeFileSync(path.join(tokDir, "tokenizer.json"), tokenizerJson);
  fs.writeFileSync(path.join(tokDir, "tokenizer_config.json"), JSON.stringify({ bos_token: "<bos>", eos_token: "<eos>", pad_token: "<pad>" }));
  fs.writeFileSync(path.join(tokDir, "generation_config.json"), JSON.stringify({ bos_token_id: 2, eos_token_id: 1 }));

  function mergedModel(precision?: "bf16"): { model: CausalLM; tokens: number[] } {
    const { model } = loadModelDir(STD02, precision ? { precision } : {});
    randomLora(model, { rank: 4, alpha: 8, targets: ["q_proj", "v_proj", "o_proj", "up_proj"] }, 0.15, 9);
    mergeLora(model);
    return { model, tokens: greedy(model) };
  }

  it("writes a Hugging Face checkpoint that loads back and decodes the same greedy tokens", () => {
    const { model, tokens } = mergedModel();
    const out = path.join(tmp, "merged");
    const files = saveModel(model, out, { tokenizerDir: tokDir });
    assert.deepEqual(files.sort(), ["config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]);
    assert.deepEqual(fs.readdirSync(out).sort(), files);
    assert.equal(fs.readFileSync(path.join(out, "tokenizer.json"), "utf8"), tokenizerJson);
    const config = JSON.parse(fs.readFileSync(path.join(out, "config.json"), "utf8"));
    const original = JSON.parse(fs.readFileSync(path.join(STD02, "config.json"), "utf8"));
    for (const k of ["model_type", "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim", "torch_dtype"]) {
      assert.deepEqual(config[k], original[k], k);
    }
    const st = SafetensorsFile.open(path.join(out, "model.safetensors"));
    try {
      assert.equal(st.metadata.format, "pt");
      assert.deepEqual(st.names().sort(), [...model.weights().keys()].sort());
      assert.ok(!st.has("lm_head.weight"), "tied embeddings: no lm_head");
      assert.ok(st.names().every((n) => st.info(n).dtype === "F32"));
    } finally {
      st.close();
    }
    const loaded = loadModelDir(out);
    assert.ok(loaded.tokenizer, "the tokenizer was copied");
    assert.deepEqual(greedy(loaded.model), tokens);
    assert.ok(maxAbsDiff(logitsOf(loaded.model, IDS), logitsOf(model, IDS)) === 0, "identical weights give identical logits");
    // Writing again replaces the checkpoint whole, without leftovers.
    fs.writeFileSync(path.join(out, "stale.txt"), "old");
    saveModel(model, out);
    assert.deepEqual(fs.readdirSync(out).sort(), ["config.json", "model.safetensors"]);
    assert.deepEqual(fs.readdirSync(tmp).filter((n) => n.startsWith(".")), [], "no temporary folders remain");
  });

  it("shards beyond maxShardBytes with an index, as transformers names them", () => {
    const { model, tokens } = mergedModel();
    const out = path.join(tmp, "sharded");
    const files = saveModel(model, out, { maxShardBytes: 200_000 });
    const shards = files.filter((f) => /^model-\d{5}-of-\d{5}\.safetensors$/.test(f));
    assert.ok(shards.length >= 3, `shards: ${files.join(", ")}`);
    assert.ok(shards.every((f) => f.endsWith(`-of-${String(shards.length).padStart(5, "0")}.safetensors`)));
    const index = JSON.parse(fs.readFileSync(path.join(out, "model.safetensors.index.json"), "utf8"));
    let total = 0;
    for (const t of model.weights().values()) total += t.bytes;
    assert.equal(index.metadata.total_size, total);
    assert.deepEqual(Object.keys(index.weight_map).sort(), [...model.weights().keys()].sort());
    for (const f of shards) assert.ok(fs.statSync(path.join(out, f)).size < 200_000 + 70_000, `${f} size`);
    assert.deepEqual(greedy(loadModelDir(out).model), tokens);
  });

  it("keeps bf16: merged weights are bf16 and the checkpoint says bfloat16", () => {
    const { model, tokens } = mergedModel("bf16");
    assert.ok(model.linears().every((l) => l.weight.dtype === "bf16"));
    const out = path.join(tmp, "merged-bf16");
    saveModel(model, out);
    assert.equal(JSON.parse(fs.readFileSync(path.join(out, "config.json"), "utf8")).torch_dtype, "bfloat16");
    const st = SafetensorsFile.open(path.join(out, "model.safetensors"));
    try {
      for (const l of model.linears()) assert.equal(st.info(l.name).dtype, "BF16", l.name);
    } finally {
      st.close();
    }
    const loaded = loadModelDir(out).model;
    for (const l of loaded.linears()) {
      assert.equal(l.weight.dtype, "bf16");
      const mine = model.linears().find((m) => m.name === l.name)!;
      assert.deepEqual(l.weight.data, mine.weight.data, `${l.name} bit-identical`);
    }
    assert.deepEqual(greedy(loaded), tokens);
  });

  it("refuses to save unmerged adapters or to replace a folder that is not a checkpoint", () => {
    const { model } = loadModelDir(TINY);
    enableLora(model, { rank: 2 });
    assert.throws(() => saveModel(model, path.join(tmp, "never")), (e: unknown) => e instanceof LoratuneError && /mergeLora/.test(e.hint ?? ""));
    mergeLora(model);
    const other = path.join(tmp, "not-a-model");
    fs.mkdirSync(other);
    fs.writeFileSync(path.join(other, "notes.txt"), "keep me");
    assert.throws(() => saveModel(model, other), (e: unknown) => e instanceof LoratuneError && /refusing to replace/.test(e.message));
    assert.equal(fs.readFileSync(path.join(other, "notes.txt"), "utf8"), "keep me");
    assert.throws(() => saveModel(model, tokDir, { tokenizerDir: tokDir }), (e: unknown) => e instanceof LoratuneError);
    assert.ok(!fs.existsSync(path.join(tmp, "never")));
  });
});

describe("the Keras-like model API", () => {
  it("model.enableLora freezes the base, and model.summary() counts what trains", () => {
    const { model } = loadModelDir(STD02);
    assert.equal(model.lora, null);
    assert.match(model.summary(), /Trainable params: 0?[\d,]+/);
    const spec = model.enableLora({ rank: 4 });
    assert.deepEqual(model.lora, spec);
    assert.ok([...model.weights().values()].every((w) => !w.requiresGrad));
    // per layer q: A 4x64 + B 64x4 = 512, v: A 4x64 + B 16x4 = 320; two layers
    assert.match(model.summary(), /Trainable params: 1,664 /);
    mergeLora(model);
    assert.equal(model.lora, null);
  });
});
