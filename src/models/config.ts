// Model configuration read from a Hugging Face config.json, validated with errors that name the
// field and the file, and the tensor names and shapes a checkpoint of that model must hold.
import fs from "node:fs";
import path from "node:path";
import { LoratuneError } from "../errors.js";

export type ModelType = "gemma";
export type Activation = "gelu_tanh" | "silu";

export interface ModelConfig {
  modelType: ModelType;
  architecture: string;
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  rmsNormEps: number;
  ropeTheta: number;
  maxPositions: number;
  activation: Activation;
  tieWordEmbeddings: boolean;
  bosTokenId: number;
  eosTokenIds: number[];
  padTokenId: number;
  torchDtype: string;
}

export const SUPPORTED_MODEL_TYPES: readonly ModelType[] = ["gemma"];

/**
 * Activation names in config.json. Gemma 1 configs say "gelu" but the model was trained with the
 * tanh approximation, and transformers runs Gemma with gelu_pytorch_tanh whatever the config says.
 */
const ACTIVATIONS: Record<string, Activation> = {
  gelu_pytorch_tanh: "gelu_tanh",
  gelu: "gelu_tanh",
  gelu_new: "gelu_tanh",
  gelu_fast: "gelu_tanh",
  silu: "silu",
  swish: "silu",
};

const GEMMA_DEFAULTS = { bosTokenId: 2, eosTokenId: 1, padTokenId: 0, rmsNormEps: 1e-6, ropeTheta: 10000, maxPositions: 8192 };

export function parseConfig(json: unknown, file: string): ModelConfig {
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw new LoratuneError("config must be a JSON object", { file });
  }
  const raw = json as Record<string, unknown>;
  const fail = (field: string, message: string, hint?: string) => new LoratuneError(message, { file, field, hint });

  const modelType = SUPPORTED_MODEL_TYPES.find((t) => t === raw.model_type);
  if (!modelType) {
    const got = raw.model_type === undefined ? "missing" : `${JSON.stringify(raw.model_type)} is not supported`;
    throw fail("model_type", `${got} (supported: ${SUPPORTED_MODEL_TYPES.join(", ")})`);
  }

  // Upper bounds far above any real model, so that a corrupt config fails here rather than in
  // an allocation or a loop over millions of layers.
  const positiveInt = (field: string, fallback?: number, max = 2 ** 24): number => {
    const v = raw[field] ?? fallback;
    if (v === undefined) throw fail(field, "missing (a positive integer)");
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v <= 0) throw fail(field, `must be a positive integer, got ${JSON.stringify(v)}`);
    if (v > max) throw fail(field, `${v} is beyond any supported model (at most ${max})`);
    return v;
  };
  const positiveNumber = (field: string, fallback: number): number => {
    const v = raw[field] ?? fallback;
    if (typeof v !== "number" || !Number.isFinite(v) || v <= 0) throw fail(field, `must be a positive number, got ${JSON.stringify(v)}`);
    return v;
  };
  const tokenId = (field: string, v: unknown): number => {
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0) throw fail(field, `must be a token id (an integer >= 0), got ${JSON.stringify(v)}`);
    return v;
  };

  const vocabSize = positiveInt("vocab_size");
  const hiddenSize = positiveInt("hidden_size");
  const intermediateSize = positiveInt("intermediate_size");
  const numLayers = positiveInt("num_hidden_layers", undefined, 1024);
  const numHeads = positiveInt("num_attention_heads", undefined, 4096);
  const numKvHeads = positiveInt("num_key_value_heads", numHeads, 4096);
  if (numHeads % numKvHeads !== 0) {
    throw fail("num_key_value_heads", `num_attention_heads (${numHeads}) must be a multiple of num_key_value_heads (${numKvHeads})`);
  }
  if (raw.head_dim === undefined && hiddenSize % numHeads !== 0) {
    throw fail("head_dim", `missing, and hidden_size (${hiddenSize}) is not a multiple of num_attention_heads (${numHeads})`);
  }
  const headDim = positiveInt("head_dim", hiddenSize / numHeads, 4096);
  if (headDim % 2 !== 0) throw fail("head_dim", `must be even for rotary embeddings, got ${headDim}`);

  const activationField = raw.hidden_activation !== undefined && raw.hidden_activation !== null ? "hidden_activation" : "hidden_act";
  const activationName = raw[activationField] ?? "gelu_pytorch_tanh";
  const activation = typeof activationName === "string" ? ACTIVATIONS[activationName] : undefined;
  if (!activation) {
    throw fail(activationField, `activation ${JSON.stringify(activationName)} is not supported (supported: ${Object.keys(ACTIVATIONS).join(", ")})`);
  }

  if (raw.attention_bias === true) throw fail("attention_bias", "attention biases are not supported for gemma");
  if (raw.rope_scaling !== undefined && raw.rope_scaling !== null) throw fail("rope_scaling", "RoPE scaling is not supported for gemma");

  const tie = raw.tie_word_embeddings ?? true;
  if (typeof tie !== "boolean") throw fail("tie_word_embeddings", `must be true or false, got ${JSON.stringify(tie)}`);

  const eosRaw = raw.eos_token_id ?? GEMMA_DEFAULTS.eosTokenId;
  const eosList = Array.isArray(eosRaw) ? eosRaw : [eosRaw];
  if (eosList.length === 0) throw fail("eos_token_id", "must name at least one token id");
  const eosTokenIds = eosList.map((v) => tokenId("eos_token_id", v));

  const architectures = raw.architectures;
  const architecture = Array.isArray(architectures) && typeof architectures[0] === "string" ? architectures[0] : "GemmaForCausalLM";
  // transformers 4.56+ writes "dtype"; older versions "torch_dtype".
  const dtype = raw.torch_dtype ?? raw.dtype ?? "float32";
  if (typeof dtype !== "string") throw fail("torch_dtype", `must be a string, got ${JSON.stringify(dtype)}`);

  return {
    modelType,
    architecture,
    vocabSize,
    hiddenSize,
    intermediateSize,
    numLayers,
    numHeads,
    numKvHeads,
    headDim,
    rmsNormEps: positiveNumber("rms_norm_eps", GEMMA_DEFAULTS.rmsNormEps),
    ropeTheta: positiveNumber("rope_theta", GEMMA_DEFAULTS.ropeTheta),
    maxPositions: positiveInt("max_position_embeddings", GEMMA_DEFAULTS.maxPositions),
    activation,
    tieWordEmbeddings: tie,
    bosTokenId: tokenId("bos_token_id", raw.bos_token_id ?? GEMMA_DEFAULTS.bosTokenId),
    eosTokenIds,
    padTokenId: tokenId("pad_token_id", raw.pad_token_id ?? GEMMA_DEFAULTS.padTokenId),
    torchDtype: dtype,
  };
}

/** Reads and validates `dir/config.json`. */
export function readConfig(dir: string): ModelConfig {
  const file = path.join(dir, "config.json");
  let text: string;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch {
    throw new LoratuneError("missing: a model folder needs a Hugging Face config.json", {
      file,
      hint: "pass a folder in Hugging Face layout (config.json, *.safetensors, tokenizer.json) or a preset name",
    });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new LoratuneError(`not valid JSON: ${(e as Error).message}`, { file });
  }
  return parseConfig(json, file);
}

const ACTIVATION_NAMES: Record<Activation, string> = { gelu_tanh: "gelu_pytorch_tanh", silu: "silu" };

/** The Hugging Face config.json content for a config (the inverse of parseConfig). */
export function configToJson(config: ModelConfig): Record<string, unknown> {
  const activation = ACTIVATION_NAMES[config.activation];
  return {
    architectures: [config.architecture],
    model_type: config.modelType,
    vocab_size: config.vocabSize,
    hidden_size: config.hiddenSize,
    intermediate_size: config.intermediateSize,
    num_hidden_layers: config.numLayers,
    num_attention_heads: config.numHeads,
    num_key_value_heads: config.numKvHeads,
    head_dim: config.headDim,
    rms_norm_eps: config.rmsNormEps,
    rope_theta: config.ropeTheta,
    max_position_embeddings: config.maxPositions,
    hidden_act: activation,
    hidden_activation: activation,
    tie_word_embeddings: config.tieWordEmbeddings,
    attention_bias: false,
    bos_token_id: config.bosTokenId,
    eos_token_id: config.eosTokenIds.length === 1 ? config.eosTokenIds[0] : config.eosTokenIds,
    pad_token_id: config.padTokenId,
    torch_dtype: config.torchDtype,
  };
}

/** Hugging Face tensor names and shapes of a Gemma checkpoint, in model order. */
export function expectedWeightShapes(config: ModelConfig): Map<string, number[]> {
  const { vocabSize: V, hiddenSize: H, intermediateSize: I, numHeads, numKvHeads, headDim } = config;
  const shapes = new Map<string, number[]>();
  shapes.set("model.embed_tokens.weight", [V, H]);
  for (let l = 0; l < config.numLayers; l++) {
    const p = `model.layers.${l}`;
    shapes.set(`${p}.input_layernorm.weight`, [H]);
    shapes.set(`${p}.self_attn.q_proj.weight`, [numHeads * headDim, H]);
    shapes.set(`${p}.self_attn.k_proj.weight`, [numKvHeads * headDim, H]);
    shapes.set(`${p}.self_attn.v_proj.weight`, [numKvHeads * headDim, H]);
    shapes.set(`${p}.self_attn.o_proj.weight`, [H, numHeads * headDim]);
    shapes.set(`${p}.post_attention_layernorm.weight`, [H]);
    shapes.set(`${p}.mlp.gate_proj.weight`, [I, H]);
    shapes.set(`${p}.mlp.up_proj.weight`, [I, H]);
    shapes.set(`${p}.mlp.down_proj.weight`, [H, I]);
  }
  shapes.set("model.norm.weight", [H]);
  if (!config.tieWordEmbeddings) shapes.set("lm_head.weight", [V, H]);
  return shapes;
}
