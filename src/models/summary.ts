// A Keras-like model summary computed from the config alone (no weights needed): layers, output
// shapes, parameter counts, and what LoRA adds and leaves trainable in either adapter layout.
import { LoratuneError } from "../errors.js";
import type { ModelConfig } from "./config.js";

/**
 * "peft": A (r, in) and B (out, r) per projection, as Hugging Face PEFT stores them.
 * "keras": KerasNLP's EinsumDense layout, where A keeps the kernel's leading axes (per head).
 */
export type LoraLayout = "peft" | "keras";

export interface LoraSpec {
  rank: number;
  alpha?: number;
  /** Projection names: q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj. */
  targets: string[];
  layout: LoraLayout;
}

export interface SummaryRow {
  /** Module name in the Hugging Face layout, e.g. "model.layers.0.self_attn.q_proj". */
  name: string;
  kind: string;
  /** 0: a top-level layer, 1: a sub-layer of a decoder block, 2: a LoRA adapter of a sub-layer. */
  depth: number;
  /** Output shape; null stands for the batch and sequence axes. */
  shape: Array<number | null>;
  /** Shapes of the weights this row holds itself (a decoder block's are in its sub-rows). */
  weights: number[][];
  params: number;
  /** How many of `params` are trained. */
  trainable: number;
}

export interface Summary {
  config: ModelConfig;
  lora?: LoraSpec;
  rows: SummaryRow[];
  totalParams: number;
  trainableParams: number;
  nonTrainableParams: number;
  /** The checkpoint's dtype, used for the base weights; LoRA adapters are f32. */
  weightDtype: "f32" | "bf16" | "f16";
  bytesByDtype: Record<string, number>;
  totalBytes: number;
  trainableBytes: number;
  nonTrainableBytes: number;
}

type Projection = "q_proj" | "k_proj" | "v_proj" | "o_proj" | "gate_proj" | "up_proj" | "down_proj";

const PROJECTIONS: readonly Projection[] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];
const DTYPE_BYTES = { f32: 4, bf16: 2, f16: 2 } as const;

function product(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

function weightDtypeOf(torchDtype: string): Summary["weightDtype"] {
  if (torchDtype === "bfloat16") return "bf16";
  if (torchDtype === "float16") return "f16";
  return "f32";
}

function validateLora(lora: LoraSpec): void {
  if (!Number.isSafeInteger(lora.rank) || lora.rank <= 0) {
    throw new LoratuneError(`LoRA rank must be a positive integer, got ${lora.rank}`, { field: "rank" });
  }
  for (const t of lora.targets) {
    if (!(PROJECTIONS as readonly string[]).includes(t)) {
      throw new LoratuneError(`unknown LoRA target "${t}" (targets: ${PROJECTIONS.join(", ")})`, { field: "targets" });
    }
  }
}

/** The adapter pair of one projection: weight shapes and output shapes of A and B. */
function adapterShapes(config: ModelConfig, projection: Projection, rank: number, layout: LoraLayout) {
  const { hiddenSize: H, intermediateSize: I, numHeads: n, numKvHeads: kv, headDim: hd } = config;
  const inOut: Record<Projection, [number, number]> = {
    q_proj: [H, n * hd], k_proj: [H, kv * hd], v_proj: [H, kv * hd], o_proj: [n * hd, H],
    gate_proj: [H, I], up_proj: [H, I], down_proj: [I, H],
  };
  const [inputs, outputs] = inOut[projection];
  if (layout === "peft") {
    return { a: [rank, inputs], aOut: [null, null, rank], b: [outputs, rank], bOut: [null, null, outputs] };
  }
  // Keras: A is kernel.shape[:-1] + (r,), B is (r, kernel.shape[-1]).
  switch (projection) {
    case "q_proj":
    case "k_proj":
    case "v_proj": {
      const heads = projection === "q_proj" ? n : kv;
      return { a: [heads, H, rank], aOut: [null, null, heads, rank], b: [rank, hd], bOut: [null, null, heads, hd] };
    }
    case "o_proj":
      return { a: [n, hd, rank], aOut: [null, null, rank], b: [rank, H], bOut: [null, null, H] };
    default:
      return { a: [inputs, rank], aOut: [null, null, rank], b: [rank, outputs], bOut: [null, null, outputs] };
  }
}

/** Layers and parameter counts of the model (and of its LoRA adapters when given). */
export function summarize(config: ModelConfig, lora?: LoraSpec): Summary {
  if (lora) validateLora(lora);
  const { vocabSize: V, hiddenSize: H, intermediateSize: I, numHeads: n, numKvHeads: kv, headDim: hd } = config;
  const baseTrainable = !lora; // Keras semantics: without LoRA every weight is trainable
  const weightDtype = weightDtypeOf(config.torchDtype);
  const bytesByDtype: Record<string, number> = {};
  let trainableBytes = 0;
  const countBytes = (dtype: string, params: number, trainable: boolean) => {
    const bytes = params * DTYPE_BYTES[dtype as keyof typeof DTYPE_BYTES];
    bytesByDtype[dtype] = (bytesByDtype[dtype] ?? 0) + bytes;
    if (trainable) trainableBytes += bytes;
  };

  const rows: SummaryRow[] = [];
  const weightRow = (name: string, kind: string, depth: number, shape: Array<number | null>, weight: number[]): SummaryRow => {
    const params = product(weight);
    countBytes(weightDtype, params, baseTrainable);
    return { name, kind, depth, shape, weights: [weight], params, trainable: baseTrainable ? params : 0 };
  };
  const seq = (...dims: number[]): Array<number | null> => [null, null, ...dims];

  rows.push(weightRow("model.embed_tokens", "Embedding", 0, seq(H), [V, H]));
  for (let l = 0; l < config.numLayers; l++) {
    const p = `model.layers.${l}`;
    const sub: SummaryRow[] = [];
    const projection = (module: string, projectionName: Projection, weight: number[]) => {
      sub.push(weightRow(`${p}.${module}`, "Dense", 1, seq(weight[0]!), weight));
      if (!lora?.targets.includes(projectionName)) return;
      const shapes = adapterShapes(config, projectionName, lora.rank, lora.layout);
      for (const [suffix, weightShape, outShape] of [["lora_A", shapes.a, shapes.aOut], ["lora_B", shapes.b, shapes.bOut]] as const) {
        const params = product(weightShape);
        countBytes("f32", params, true);
        sub.push({ name: `${p}.${module}.${suffix}`, kind: `LoRA ${suffix.slice(-1)}`, depth: 2, shape: [...outShape], weights: [weightShape], params, trainable: params });
      }
    };
    sub.push(weightRow(`${p}.input_layernorm`, "RMSNorm", 1, seq(H), [H]));
    projection("self_attn.q_proj", "q_proj", [n * hd, H]);
    projection("self_attn.k_proj", "k_proj", [kv * hd, H]);
    projection("self_attn.v_proj", "v_proj", [kv * hd, H]);
    projection("self_attn.o_proj", "o_proj", [H, n * hd]);
    sub.push(weightRow(`${p}.post_attention_layernorm`, "RMSNorm", 1, seq(H), [H]));
    projection("mlp.gate_proj", "gate_proj", [I, H]);
    projection("mlp.up_proj", "up_proj", [I, H]);
    projection("mlp.down_proj", "down_proj", [H, I]);
    rows.push({
      name: p,
      kind: "DecoderBlock",
      depth: 0,
      shape: seq(H),
      weights: [],
      params: sub.reduce((s, r) => s + r.params, 0),
      trainable: sub.reduce((s, r) => s + r.trainable, 0),
    });
    rows.push(...sub);
  }
  rows.push(weightRow("model.norm", "RMSNorm", 0, seq(H), [H]));
  if (config.tieWordEmbeddings) {
    rows.push({ name: "lm_head", kind: "tied to model.embed_tokens", depth: 0, shape: seq(V), weights: [], params: 0, trainable: 0 });
  } else {
    rows.push(weightRow("lm_head", "Dense", 0, seq(V), [V, H]));
  }

  const top = rows.filter((r) => r.depth === 0);
  const totalParams = top.reduce((s, r) => s + r.params, 0);
  const trainableParams = top.reduce((s, r) => s + r.trainable, 0);
  const totalBytes = Object.values(bytesByDtype).reduce((a, b) => a + b, 0);
  return {
    config,
    lora,
    rows,
    totalParams,
    trainableParams,
    nonTrainableParams: totalParams - trainableParams,
    weightDtype,
    bytesByDtype,
    totalBytes,
    trainableBytes,
    nonTrainableBytes: totalBytes - trainableBytes,
  };
}

/** 2506172416 → "2,506,172,416". */
export function formatCount(n: number): string {
  return n.toLocaleString("en-US");
}

/** Bytes in Keras's style: powers of 1024, two decimals ("4.67 GB", "0.00 B"). */
export function formatBytes(bytes: number): string {
  const units = ["B", "KB", "MB", "GB", "TB", "PB"];
  let value = bytes;
  for (const unit of units.slice(0, -1)) {
    if (value / 1024 < 1) return `${value.toFixed(2)} ${unit}`;
    value /= 1024;
  }
  return `${value.toFixed(2)} ${units[units.length - 1]}`;
}

function formatShape(shape: Array<number | null>): string {
  return `(${shape.map((d) => (d === null ? "None" : String(d))).join(", ")})`;
}

/**
 * A boxed table like Keras's model.summary(): every decoder block as one row, the sub-layers (and
 * LoRA adapters) of the first block under it, then total, trainable and non-trainable counts.
 */
export function formatSummary(summary: Summary): string {
  const { config, lora } = summary;
  const firstBlock = "model.layers.0.";
  const shown = summary.rows.filter((r) => r.depth === 0 || r.name.startsWith(firstBlock));
  const cells = shown.map((r) => {
    const label = r.depth === 0 ? r.name : r.depth === 1 ? r.name.slice(firstBlock.length) : r.name.slice(r.name.lastIndexOf(".") + 1);
    return [`${"  ".repeat(r.depth)}${label} (${r.kind})`, formatShape(r.shape), formatCount(r.params)];
  });
  const header = ["Layer (type)", "Output shape", "Param #"];
  const widths = header.map((h, c) => Math.max(h.length, ...cells.map((row) => row[c]!.length)));
  const pad = (text: string, c: number) => (c === 2 ? text.padStart(widths[c]!) : text.padEnd(widths[c]!));
  const line = (left: string, fill: string, mid: string, right: string) => left + widths.map((w) => fill.repeat(w + 2)).join(mid) + right;
  const row = (values: string[], edge: string) => `${edge} ${values.map(pad).join(` ${edge} `)} ${edge}`;

  const out = [
    `Model: ${config.architecture} (${config.modelType}, vocabulary ${formatCount(config.vocabSize)}, hidden ${config.hiddenSize}, ${config.numLayers} layers)`,
    line("┏", "━", "┳", "┓"),
    row(header, "┃"),
    line("┡", "━", "╇", "┩"),
    ...cells.map((c) => row(c, "│")),
    line("└", "─", "┴", "┘"),
  ];
  if (lora) {
    out.push(` LoRA: rank ${lora.rank}${lora.alpha !== undefined ? `, alpha ${lora.alpha}` : ""} on ${lora.targets.join(", ")} (${lora.layout} layout)`);
  }
  out.push(
    ` Total params: ${formatCount(summary.totalParams)} (${formatBytes(summary.totalBytes)})`,
    ` Trainable params: ${formatCount(summary.trainableParams)} (${formatBytes(summary.trainableBytes)})`,
    ` Non-trainable params: ${formatCount(summary.nonTrainableParams)} (${formatBytes(summary.nonTrainableBytes)})`,
  );
  return `${out.join("\n")}\n`;
}

/** The summary's numbers as plain JSON (snake_case keys) for `--json` output. */
export function summaryJson(summary: Summary): Record<string, unknown> {
  const c = summary.config;
  return {
    model_type: c.modelType,
    architecture: c.architecture,
    total_params: summary.totalParams,
    trainable_params: summary.trainableParams,
    non_trainable_params: summary.nonTrainableParams,
    vocab_size: c.vocabSize,
    hidden_size: c.hiddenSize,
    intermediate_size: c.intermediateSize,
    num_layers: c.numLayers,
    num_heads: c.numHeads,
    num_kv_heads: c.numKvHeads,
    head_dim: c.headDim,
    tie_word_embeddings: c.tieWordEmbeddings,
    weight_dtype: summary.weightDtype,
    bytes_by_dtype: summary.bytesByDtype,
    total_bytes: summary.totalBytes,
    lora: summary.lora
      ? { rank: summary.lora.rank, alpha: summary.lora.alpha ?? null, targets: summary.lora.targets, layout: summary.lora.layout }
      : null,
  };
}
