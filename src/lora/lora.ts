// Enabling LoRA on a model: every base weight is frozen and the target projections get low-rank
// adapters, in the Hugging Face PEFT layout (the default) or in Keras's per-head layout.
import { LoratuneError } from "../errors.js";
import { Random } from "../generation/random.js";
import type { Linear } from "../models/layers.js";
import type { CausalLM } from "../models/model.js";
import type { LoraLayout, LoraSpec } from "../models/summary.js";
import { Tensor } from "../tensor.js";

export type { LoraLayout, LoraSpec };

export const LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"] as const;

export interface LoraOptions {
  rank: number;
  /** Scale is alpha / rank; alpha defaults to the rank (scale 1), as in Keras. */
  alpha?: number;
  targets?: string[];
  layout?: LoraLayout;
  /** Seed of A's random initialisation. */
  seed?: number;
}

/** The projection name of a Linear, e.g. "q_proj" for model.layers.0.self_attn.q_proj.weight. */
export function projectionOf(linear: Linear): string {
  const parts = linear.name.split(".");
  return parts[parts.length - 2]!;
}

/** The module name PEFT uses for a Linear: its weight name without ".weight". */
export function moduleOf(linear: Linear): string {
  return linear.name.replace(/\.weight$/, "");
}

/**
 * Freezes the model and adds adapters to the target projections. A is initialised as PEFT does
 * (Kaiming-uniform with a = sqrt(5), i.e. uniform(±1/sqrt(in))) or, in the Keras layout, as Keras's
 * he_uniform over its per-head kernel; B starts at zero so the model is unchanged at first.
 */
export function enableLora(model: CausalLM, options: LoraOptions): LoraSpec {
  const spec = validateLoraOptions(options);
  const rng = new Random(options.seed ?? 0);
  for (const w of model.weights().values()) w.requiresGrad = false;
  const { numHeads, numKvHeads } = model.config;
  for (const linear of model.linears()) {
    const projection = projectionOf(linear);
    if (!spec.targets.includes(projection)) continue;
    const heads = spec.layout === "keras" ? ({ q_proj: numHeads, k_proj: numKvHeads, v_proj: numKvHeads } as Record<string, number>)[projection] ?? 1 : 1;
    const fanIn = linear.inFeatures * heads;
    const bound = heads === 1 ? 1 / Math.sqrt(linear.inFeatures) : Math.sqrt(6 / fanIn);
    const A = Tensor.zeros([heads * spec.rank, linear.inFeatures]);
    for (let i = 0; i < A.size; i++) A.f32[i] = (2 * rng.next() - 1) * bound;
    const B = Tensor.zeros([linear.outFeatures / heads, spec.rank]);
    A.requiresGrad = B.requiresGrad = true;
    linear.lora = { A, B, scale: spec.alpha! / spec.rank, groups: heads };
  }
  model.lora = spec;
  return spec;
}

export function validateLoraOptions(options: LoraOptions): LoraSpec {
  const { rank } = options;
  if (!Number.isInteger(rank) || rank < 1) throw new LoratuneError(`LoRA rank must be a whole number >= 1, got ${rank}`, { field: "rank" });
  const alpha = options.alpha ?? rank;
  if (!(alpha > 0) || !Number.isFinite(alpha)) throw new LoratuneError(`LoRA alpha must be > 0, got ${alpha}`, { field: "alpha" });
  const targets = options.targets ?? ["q_proj", "v_proj"];
  if (targets.length === 0) throw new LoratuneError("LoRA needs at least one target projection", { field: "targets" });
  for (const t of targets) {
    if (!(LORA_TARGETS as readonly string[]).includes(t)) {
      throw new LoratuneError(`unknown LoRA target "${t}" (targets: ${LORA_TARGETS.join(", ")})`, { field: "targets" });
    }
  }
  const layout = options.layout ?? "peft";
  if (layout !== "peft" && layout !== "keras") throw new LoratuneError(`unknown LoRA layout "${layout}" (peft, keras)`, { field: "layout" });
  return { rank, alpha, targets, layout };
}

/** The adapters' tensors by PEFT-style name (module.lora_A.weight / module.lora_B.weight). */
export function loraParameters(model: CausalLM): Map<string, Tensor> {
  const params = new Map<string, Tensor>();
  for (const linear of model.linears()) {
    if (!linear.lora) continue;
    params.set(`${moduleOf(linear)}.lora_A.weight`, linear.lora.A);
    params.set(`${moduleOf(linear)}.lora_B.weight`, linear.lora.B);
  }
  return params;
}

/** Everything that trains: adapters, and base weights that were left trainable (full fine-tuning). */
export function trainableParameters(model: CausalLM): Map<string, Tensor> {
  const params = new Map<string, Tensor>();
  for (const [name, w] of model.weights()) if (w.requiresGrad) params.set(name, w);
  for (const [name, t] of loraParameters(model)) params.set(name, t);
  return params;
}
