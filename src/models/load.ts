// Loading a model: a Hugging Face checkpoint folder (config.json, *.safetensors, tokenizer.json),
// or a preset / hub repository resolved to such a folder in the cache.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { LoratuneError } from "../errors.js";
import { CheckpointReader } from "../io/checkpoint.js";
import { fetchModel } from "../io/hub.js";
import type { DType } from "../tensor.js";
import { Tensor } from "../tensor.js";
import { Tokenizer } from "../tokenizer/tokenizer.js";
import { expectedWeightShapes, readConfig, type ModelConfig } from "./config.js";
import { GemmaModel } from "./gemma.js";
import type { CausalLM } from "./model.js";

/** How matrices are kept in memory: "auto" keeps f32 as f32 and stores bf16/f16 as bf16. Norms are always f32. */
export type WeightPrecision = "auto" | "bf16" | "f32";

export interface LoadOptions {
  precision?: WeightPrecision;
}

export interface LoadedModel {
  model: CausalLM;
  tokenizer: Tokenizer | null;
  config: ModelConfig;
  /** The checkpoint folder. */
  dir: string;
}

const families: Record<ModelConfig["modelType"], (config: ModelConfig, weight: (name: string) => Tensor) => CausalLM> = {
  gemma: (config, weight) => GemmaModel.fromWeights(config, weight),
};

/** Loads a model from a folder, or resolves a preset name or hub repository first. */
export async function loadModel(spec: string, options: LoadOptions = {}): Promise<LoadedModel> {
  const dir = fs.existsSync(spec) ? spec : await fetchModel(spec);
  return loadModelDir(dir, options);
}

export function loadModelDir(dir: string, options: LoadOptions = {}): LoadedModel {
  const config = readConfig(dir);
  const reader = CheckpointReader.open(dir);
  try {
    const expected = expectedWeightShapes(config);
    const precision = options.precision ?? "auto";
    const storage = new Map<string, DType>();
    let bytes = 0;
    for (const [name, shape] of expected) {
      if (!reader.has(name)) {
        throw new LoratuneError(`the checkpoint has no tensor ${name} (expected shape [${shape.join(", ")}])`, { file: dir });
      }
      const info = reader.info(name);
      if (info.shape.length !== shape.length || info.shape.some((d, i) => d !== shape[i])) {
        throw new LoratuneError(
          `tensor ${name} has shape [${info.shape.join(", ")}] but config.json implies [${shape.join(", ")}]`,
          { file: dir, field: name },
        );
      }
      const dtype: DType = shape.length === 1 || precision === "f32" ? "f32"
        : precision === "bf16" || info.dtype !== "F32" ? "bf16" : "f32";
      storage.set(name, dtype);
      bytes += shape.reduce((a, b) => a * b, 1) * (dtype === "f32" ? 4 : 2);
    }
    checkMemory(bytes, dir);
    const model = families[config.modelType](config, (name) => {
      const dtype = storage.get(name);
      if (!dtype) throw new LoratuneError(`the model asked for an unexpected tensor ${name}`, { file: dir });
      return reader.read(name, dtype);
    });
    const tokenizer = fs.existsSync(path.join(dir, "tokenizer.json")) ? Tokenizer.fromDir(dir) : null;
    if (tokenizer && tokenizer.vocabSize > config.vocabSize) {
      throw new LoratuneError(
        `tokenizer.json has ${tokenizer.vocabSize} tokens but config.json says vocab_size ${config.vocabSize}`,
        { file: path.join(dir, "tokenizer.json"), field: "vocab_size" },
      );
    }
    return { model, tokenizer, config, dir };
  } finally {
    reader.close();
  }
}

/** Refuses, before reading anything, to load weights that cannot fit in the memory available. */
export function checkMemory(bytes: number, dir: string, available = os.freemem()): void {
  if (bytes > available) {
    const gb = (n: number) => (n / 2 ** 30).toFixed(1);
    throw new LoratuneError(
      `the weights need ${gb(bytes)} GiB of memory but only ${gb(available)} GiB is available`,
      { file: dir, hint: "close other programs, or use a smaller model" },
    );
  }
}
