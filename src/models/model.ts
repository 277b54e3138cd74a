// What every causal language model family offers to generation, training and adapters.
import type { Tensor } from "../tensor.js";
import type { ModelConfig } from "./config.js";
import type { KVCache, Linear } from "./layers.js";

export interface ForwardOptions {
  /** Generation: attend to the cached tokens and append these to the cache. */
  cache?: KVCache;
  /** Called with intermediate hidden states (embed_scaled, layer{i}_out, final_norm_out). */
  observe?: (name: string, hidden: Tensor) => void;
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
}
