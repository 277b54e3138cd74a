// A new model with random weights, for pre-training from scratch: matrices normal(0, std) as
// transformers' initializer_range does, norm weights zero (Gemma applies them as 1 + w).
import { Random } from "../generation/random.js";
import { Tensor } from "../tensor.js";
import { expectedWeightShapes, type ModelConfig } from "./config.js";
import { GemmaModel } from "./gemma.js";
import type { CausalLM } from "./model.js";

export function initModel(config: ModelConfig, { seed = 0, std = 0.02 } = {}): CausalLM {
  const rng = new Random(seed);
  const shapes = expectedWeightShapes(config);
  return GemmaModel.fromWeights(config, (name) => {
    const shape = shapes.get(name)!;
    const t = Tensor.zeros(shape);
    if (shape.length > 1) for (let i = 0; i < t.size; i++) t.f32[i] = rng.normal() * std;
    return t;
  });
}
