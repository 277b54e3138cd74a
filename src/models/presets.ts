// Keras preset names mapped to Hugging Face repositories and Kaggle model handles. Each preset
// embeds its config.json so a summary needs no download.
import { LoratuneError } from "../errors.js";

export interface Preset {
  name: string;
  description: string;
  /** Hugging Face repository, "org/name". */
  hfRepo: string;
  /** Kaggle model instance, "owner/model/framework/variation" (the Hugging Face-format files). */
  kaggleHandle: string;
  /** The repository's config.json. */
  config: Record<string, unknown>;
}

/** google/gemma-2b's config.json (gemma-2b-it's is the same). */
const GEMMA_2B_CONFIG = {
  architectures: ["GemmaForCausalLM"],
  attention_bias: false,
  attention_dropout: 0.0,
  bos_token_id: 2,
  eos_token_id: 1,
  head_dim: 256,
  hidden_act: "gelu",
  hidden_size: 2048,
  initializer_range: 0.02,
  intermediate_size: 16384,
  max_position_embeddings: 8192,
  model_type: "gemma",
  num_attention_heads: 8,
  num_hidden_layers: 18,
  num_key_value_heads: 1,
  pad_token_id: 0,
  rms_norm_eps: 1e-6,
  rope_scaling: null,
  rope_theta: 10000.0,
  torch_dtype: "bfloat16",
  use_cache: true,
  vocab_size: 256000,
};

/** google/gemma-7b's config.json (gemma-7b-it's is the same). */
const GEMMA_7B_CONFIG = {
  ...GEMMA_2B_CONFIG,
  hidden_size: 3072,
  intermediate_size: 24576,
  num_attention_heads: 16,
  num_hidden_layers: 28,
  num_key_value_heads: 16,
};

const PRESETS: readonly Preset[] = [
  {
    name: "gemma_2b_en",
    description: "Gemma 2B base model (2.5B parameters, 18 layers)",
    hfRepo: "google/gemma-2b",
    kaggleHandle: "google/gemma/transformers/2b",
    config: GEMMA_2B_CONFIG,
  },
  {
    name: "gemma_instruct_2b_en",
    description: "Gemma 2B instruction-tuned model",
    hfRepo: "google/gemma-2b-it",
    kaggleHandle: "google/gemma/transformers/2b-it",
    config: GEMMA_2B_CONFIG,
  },
  {
    name: "gemma_7b_en",
    description: "Gemma 7B base model (8.5B parameters, 28 layers)",
    hfRepo: "google/gemma-7b",
    kaggleHandle: "google/gemma/transformers/7b",
    config: GEMMA_7B_CONFIG,
  },
  {
    name: "gemma_instruct_7b_en",
    description: "Gemma 7B instruction-tuned model",
    hfRepo: "google/gemma-7b-it",
    kaggleHandle: "google/gemma/transformers/7b-it",
    config: GEMMA_7B_CONFIG,
  },
];

export function listPresets(): readonly Preset[] {
  return PRESETS;
}

/** The preset of that name, or undefined. */
export function findPreset(name: string): Preset | undefined {
  return PRESETS.find((p) => p.name === name);
}

/** The preset of that name; an unknown name is an error listing the known ones. */
export function resolvePreset(name: string): Preset {
  const preset = findPreset(name);
  if (!preset) {
    throw new LoratuneError(`unknown preset "${name}" (known: ${PRESETS.map((p) => p.name).join(", ")})`, {
      hint: "or pass a Hugging Face repository (org/name) or a local checkpoint folder",
    });
  }
  return preset;
}
