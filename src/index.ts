// loratune's library API.
export { LoratuneError } from "./errors.js";
export { Tensor, type DType } from "./tensor.js";
export { native } from "./backend/native.js";
export { record, Tape } from "./autograd/tape.js";
export * as ops from "./autograd/ops.js";
export type { CausalLM, ForwardOptions } from "./models/model.js";
export { GemmaModel } from "./models/gemma.js";
export { Linear, KVCache, type LoraAdapter } from "./models/layers.js";
export { loadModel, loadModelDir, type LoadedModel, type LoadOptions, type WeightPrecision } from "./models/load.js";
export { parseConfig, readConfig, type ModelConfig } from "./models/config.js";
export { resolvePreset, listPresets } from "./models/presets.js";
export { summarize, formatSummary, summaryJson } from "./models/summary.js";
export { Tokenizer } from "./tokenizer/tokenizer.js";
export { TextGenerator, type GenerateOptions, type Generation, type Prompt } from "./generation/generate.js";
export { GreedySampler, TopKSampler, TopPSampler, RandomSampler, makeSampler, type Sampler } from "./generation/samplers.js";
export { Random } from "./generation/random.js";
