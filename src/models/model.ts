// What every causal language model family offers to generation, training and adapters.
import type { LoraOptions } from "../lora/lora.js";
import type { Tensor } from "../tensor.js";
import type { ModelConfig } from "./config.js";
import type { LoraSpec } from "./summary.js";
import type { KVCache, Linear } from "./layers.js";

export interface ForwardOptions {
  /** Generation: attend to the cached tokens and append these to the cache. */
  cache?: KVCache;
  /** Called with intermediate hidden states (embed_scaled, layer{i}_out, final_norm_out), valid only during the call. */
  observe?: (name: string, hidden: Tensor) => void;
  /**
   * Training: keep only each block's input and recompute the block's activations during the
   * backward pass (activation checkpointing): less memory for about one more forward pass.
   */
  checkpointActivations?: boolean;
}

export interface CausalLM {
  readonly config: ModelConfig;
  /** Final hidden states [T, hidden] (after the last norm) for token ids at the next positions. */
  forward(ids: Int32Array, options?: ForwardOptions): Tensor;
  /** The output projection [vocab, hidden] (the embedding when tied). */
  readonly lmHead: Tensor;
  /** Every projection, by Hugging Face name (the places LoRA adapters go). */
  linears(): Linear[];
  /** Every weight by Hugging Face name. */
  weights(): Map<string, Tensor>;
  newCache(maxLength: number): KVCache;
  /** Keras's enable_lora: freezes the base and adds adapters (see src/lora/lora.ts). */
  enableLora(options: LoraOptions): LoraSpec;
  /** The LoRA adapters the model carries (set by enableLora and loadAdapter; null after a merge). */
  lora: LoraSpec | null;
  /** A Keras-like table of layers, shapes and parameter counts. */
  summary(): string;
}
