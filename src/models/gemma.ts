// Gemma (v1): embeddings scaled by sqrt(hidden), RMSNorm with (1 + w), rotary multi-query attention,
// GELU-tanh gated MLP, tied output embedding. Weights and names follow Hugging Face's GemmaForCausalLM.
import { GateKind, native } from "../backend/native.js";
import { addScaled, attention, embedding, gated, rmsnorm, rope } from "../autograd/ops.js";
import { checkpoint, dispose } from "../autograd/tape.js";
import { Tensor } from "../tensor.js";
import { enableLora, type LoraOptions } from "../lora/lora.js";
import type { ModelConfig } from "./config.js";
import { formatSummary, summarize, type LoraSpec } from "./summary.js";
import { KVCache, Linear, StackedLinears } from "./layers.js";
import type { CausalLM, ForwardOptions } from "./model.js";

export class GemmaBlock {
  private readonly qkv: StackedLinears | null;
  private readonly gateUp: StackedLinears | null;

  constructor(
    readonly config: ModelConfig,
    readonly inputNorm: Tensor,
    readonly q: Linear,
    readonly k: Linear,
    readonly v: Linear,
    readonly o: Linear,
    readonly postAttentionNorm: Tensor,
    readonly gate: Linear,
    readonly up: Linear,
    readonly down: Linear,
  ) {
    this.qkv = StackedLinears.stack([q, k, v]);
    this.gateUp = StackedLinears.stack([gate, up]);
  }

  forward(h: Tensor, layer: number, positions: Int32Array, cache?: KVCache): Tensor {
    const c = this.config;
    const x = rmsnorm(h, this.inputNorm, c.rmsNormEps, true);
    const [qProj, kProj, v] = this.qkv ? this.qkv.forward(x) : [this.q.forward(x), this.k.forward(x), this.v.forward(x)];
    const q = rope(qProj, c.numHeads, c.headDim, c.ropeTheta, positions);
    const k = rope(kProj, c.numKvHeads, c.headDim, c.ropeTheta, positions);
    const shape = { heads: c.numHeads, kvHeads: c.numKvHeads, headDim: c.headDim, scale: c.headDim ** -0.5 };
    const a = cache ? cachedAttention(q, k, v, layer, cache, shape) : attention(q, k, v, shape);
    const o = this.o.forward(a);
    const hAttn = addScaled(h, o);
    dispose(x, qProj, kProj, q, k, v, a, o);
    const y = rmsnorm(hAttn, this.postAttentionNorm, c.rmsNormEps, true);
    const [gate, up] = this.gateUp ? this.gateUp.forward(y) : [this.gate.forward(y), this.up.forward(y)];
    const m = gated(gate, up, c.activation === "silu" ? GateKind.Silu : GateKind.GeluTanh);
    const down = this.down.forward(m);
    const out = addScaled(hAttn, down);
    // What the backward pass reads stays (the tape frees it later); the rest goes now.
    dispose(y, gate, up, m, down);
    return out;
  }
}

/** Attention of new tokens over the cache (generation only: no gradients). */
function cachedAttention(q: Tensor, k: Tensor, v: Tensor, layer: number, cache: KVCache,
  s: { heads: number; kvHeads: number; headDim: number; scale: number }): Tensor {
  const T = q.shape[0]!;
  cache.write(layer, k, v);
  const kv = cache.view(layer, T);
  const out = Tensor.empty(q.shape);
  native.attentionForward(T, cache.length + T, s.heads, s.kvHeads, s.headDim, cache.length, s.scale,
    q.f32, kv.k, kv.v, out.f32, null);
  return out;
}

export class GemmaModel implements CausalLM {
  lora: LoraSpec | null = null;

  constructor(
    readonly config: ModelConfig,
    readonly embedTokens: Tensor,
    readonly blocks: GemmaBlock[],
    readonly finalNorm: Tensor,
    readonly lmHead: Tensor,
  ) {}

  /** Builds the model from a function returning each weight by its Hugging Face name. */
  static fromWeights(config: ModelConfig, weight: (name: string) => Tensor): GemmaModel {
    const blocks = Array.from({ length: config.numLayers }, (_, i) => {
      const p = `model.layers.${i}.`;
      const lin = (n: string) => new Linear(`${p}${n}.weight`, weight(`${p}${n}.weight`));
      return new GemmaBlock(config, weight(`${p}input_layernorm.weight`), lin("self_attn.q_proj"), lin("self_attn.k_proj"),
        lin("self_attn.v_proj"), lin("self_attn.o_proj"), weight(`${p}post_attention_layernorm.weight`),
        lin("mlp.gate_proj"), lin("mlp.up_proj"), lin("mlp.down_proj"));
    });
    const embed = weight("model.embed_tokens.weight");
    const head = config.tieWordEmbeddings ? embed : weight("lm_head.weight");
    return new GemmaModel(config, embed, blocks, weight("model.norm.weight"), head);
  }

  forward(ids: Int32Array, options: ForwardOptions = {}): Tensor {
    const { cache, observe } = options;
    const start = cache?.length ?? 0;
    const positions = Int32Array.from(ids, (_, t) => start + t);
    // sqrt(hidden) rounded to float32, as the reference computes it.
    let h = embedding(ids, this.embedTokens, Math.fround(Math.sqrt(this.config.hiddenSize)));
    observe?.("embed_scaled", h);
    this.blocks.forEach((block, i) => {
      const input = h;
      h = options.checkpointActivations
        ? checkpoint(input, (x) => block.forward(x, i, positions, cache))
        : block.forward(input, i, positions, cache);
      dispose(input);
      observe?.(`layer${i}_out`, h);
    });
    if (cache) cache.length += ids.length;
    const out = rmsnorm(h, this.finalNorm, this.config.rmsNormEps, true);
    observe?.("final_norm_out", out);
    return out;
  }

  linears(): Linear[] {
    return this.blocks.flatMap((b) => [b.q, b.k, b.v, b.o, b.gate, b.up, b.down]);
  }

  weights(): Map<string, Tensor> {
    const map = new Map<string, Tensor>([["model.embed_tokens.weight", this.embedTokens]]);
    this.blocks.forEach((b, i) => {
      map.set(`model.layers.${i}.input_layernorm.weight`, b.inputNorm);
      map.set(`model.layers.${i}.post_attention_layernorm.weight`, b.postAttentionNorm);
    });
    for (const l of this.linears()) map.set(l.name, l.weight);
    map.set("model.norm.weight", this.finalNorm);
    if (!this.config.tieWordEmbeddings) map.set("lm_head.weight", this.lmHead);
    return map;
  }

  newCache(maxLength: number): KVCache {
    return new KVCache(this.config.numLayers, maxLength, this.config.numKvHeads * this.config.headDim);
  }

  enableLora(options: LoraOptions): LoraSpec {
    return enableLora(this, options);
  }

  summary(): string {
    return formatSummary(summarize(this.config, this.lora ?? undefined));
  }
}

