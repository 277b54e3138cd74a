// AdamW over the trainable parameters, with Keras 3's semantics by default: epsilon is "epsilon hat"
// (added after the bias correction was folded into the step size), decoupled weight decay
// p -= lr * wd * p applied before the update, and no decay for the variables Keras excludes
// (`exclude_from_weight_decay(var_names=["bias", "scale"])` in the walkthrough). The PyTorch
// placement of epsilon is the "torch" variant. The update itself is one native kernel per tensor.
import { AdamVariant, native } from "../backend/native.js";
import { LoratuneError } from "../errors.js";
import { Tensor } from "../tensor.js";

/** A learning rate, or a schedule giving it for the 0-based number of updates already made. */
export type LearningRate = number | ((step: number) => number);

export type AdamWVariant = "keras" | "torch";

export interface AdamWOptions {
  /** Default 5e-5 (the walkthrough's). A function is called with the 0-based update index, as Keras does. */
  learningRate?: LearningRate;
  /** Decoupled weight decay; default 0.01. */
  weightDecay?: number;
  beta1?: number;
  beta2?: number;
  /** Default 1e-7 (Keras's). */
  epsilon?: number;
  /**
   * Parameters whose name has one of these as a name part get no weight decay; default
   * ["bias", "scale"]. See weightDecayNameParts for how Hugging Face names map to Keras's.
   */
  excludeFromWeightDecay?: readonly string[];
  /** Where epsilon goes: "keras" (default) or "torch". */
  variant?: AdamWVariant;
  /** Clip the gradients to this global L2 norm before each step (Keras's `global_clipnorm`). */
  clipNorm?: number;
}

/** The optimizer's state for a checkpoint: the update count and m, v of every parameter. */
export interface AdamWState {
  /** Updates made so far. */
  step: number;
  variant: AdamWVariant;
  /** `m.<param>` and `v.<param>`, f32 tensors shaped like the parameters. */
  tensors: Map<string, Tensor>;
}

/**
 * The parts of a parameter name that exclusion patterns are matched against: the dot-separated
 * parts, plus "scale" for normalisation weights. Keras calls an RMSNorm/LayerNorm weight `scale`
 * (and its variable path ends in "/scale"), while Hugging Face names it `...layernorm.weight`,
 * `...norm.weight` (model.norm.weight, q_norm, k_norm, pre_feedforward_layernorm, ...), so a
 * `<something>norm.weight` parameter also answers to "scale". A bias is `<module>.bias` in both.
 * LoRA tensors (`....q_proj.lora_A.weight`) match neither, so every adapter tensor is decayed, as in
 * Keras (its LoRA variables are `lora_kernel_a` / `lora_kernel_b`).
 */
export function weightDecayNameParts(name: string): string[] {
  const parts = name.split(".");
  const last = parts[parts.length - 1];
  const owner = parts[parts.length - 2];
  if (last === "weight" && owner !== undefined && /norm$/i.test(owner)) parts.push("scale");
  return parts;
}

/** Whether `name` is decayed under these exclusions (a name part equal to one of them excludes it). */
export function usesWeightDecay(name: string, exclude: readonly string[]): boolean {
  const parts = weightDecayNameParts(name);
  return !exclude.some((e) => parts.includes(e));
}

/** The global L2 norm of the parameters' gradients (missing gradients count as zero). */
export function globalGradNorm(params: Iterable<Tensor>): number {
  let sum = 0;
  for (const p of params) if (p.grad) sum += native.sumSquares(p.grad.size, p.grad.f32);
  return Math.sqrt(sum);
}

/**
 * Scales all gradients so that their global L2 norm is at most `maxNorm`, as Keras's
 * `clip_by_global_norm` does (g * maxNorm / max(norm, maxNorm)). Returns the norm before clipping.
 * A non-finite norm is returned as is and nothing is scaled.
 */
export function clipGradNorm(params: Iterable<Tensor>, maxNorm: number): number {
  if (!(maxNorm > 0)) throw new LoratuneError(`clipNorm must be > 0, got ${maxNorm}`, { field: "clipNorm" });
  const list = [...params];
  const norm = globalGradNorm(list);
  if (Number.isFinite(norm) && norm > maxNorm) {
    const factor = maxNorm / norm;
    for (const p of list) if (p.grad) native.scale(p.grad.size, factor, p.grad.f32);
  }
  return norm;
}

function checkNumber(value: number, field: string, ok: (v: number) => boolean, what: string): number {
  if (typeof value !== "number" || !ok(value)) throw new LoratuneError(`${field} must be ${what}, got ${value}`, { field });
  return value;
}

export class AdamW {
  readonly params: Map<string, Tensor>;
  readonly weightDecay: number;
  readonly beta1: number;
  readonly beta2: number;
  readonly epsilon: number;
  readonly excludeFromWeightDecay: readonly string[];
  readonly variant: AdamWVariant;
  readonly clipNorm: number | undefined;
  learningRate: LearningRate;
  /** Updates made so far (Keras's `iterations`). */
  iterations = 0;
  private readonly m = new Map<string, Tensor>();
  private readonly v = new Map<string, Tensor>();
  private readonly decayed = new Map<string, boolean>();

  /** `params`: the trainable tensors by name (frozen weights have no state and are never touched). */
  constructor(params: Map<string, Tensor>, options: AdamWOptions = {}) {
    this.params = new Map(params);
    this.learningRate = options.learningRate ?? 5e-5;
    if (typeof this.learningRate === "number") {
      checkNumber(this.learningRate, "learningRate", (v) => v >= 0 && Number.isFinite(v), "a finite number >= 0");
    }
    this.weightDecay = checkNumber(options.weightDecay ?? 0.01, "weightDecay", (v) => v >= 0 && Number.isFinite(v), "a finite number >= 0");
    this.beta1 = checkNumber(options.beta1 ?? 0.9, "beta1", (v) => v >= 0 && v < 1, "in [0, 1)");
    this.beta2 = checkNumber(options.beta2 ?? 0.999, "beta2", (v) => v >= 0 && v < 1, "in [0, 1)");
    this.epsilon = checkNumber(options.epsilon ?? 1e-7, "epsilon", (v) => v >= 0 && Number.isFinite(v), "a finite number >= 0");
    this.excludeFromWeightDecay = [...(options.excludeFromWeightDecay ?? ["bias", "scale"])];
    this.variant = options.variant ?? "keras";
    if (this.variant !== "keras" && this.variant !== "torch") {
      throw new LoratuneError(`unknown AdamW variant "${String(this.variant)}" (keras, torch)`, { field: "variant" });
    }
    if (options.clipNorm !== undefined) checkNumber(options.clipNorm, "clipNorm", (v) => v > 0, "> 0");
    this.clipNorm = options.clipNorm;
    for (const [name, p] of this.params) {
      if (p.dtype !== "f32") throw new LoratuneError(`trainable parameter ${name} is ${p.dtype}; AdamW updates f32 tensors`, { field: name });
      this.m.set(name, Tensor.zeros(p.shape));
      this.v.set(name, Tensor.zeros(p.shape));
      this.decayed.set(name, usesWeightDecay(name, this.excludeFromWeightDecay));
    }
  }

  /** Whether the named parameter gets weight decay. */
  decays(name: string): boolean {
    return this.decayed.get(name) ?? false;
  }

  /** The learning rate the next step() will use. */
  currentLearningRate(): number {
    const lr = typeof this.learningRate === "number" ? this.learningRate : this.learningRate(this.iterations);
    if (!Number.isFinite(lr) || lr < 0) throw new LoratuneError(`the learning-rate schedule gave ${lr} at step ${this.iterations}`, { field: "learningRate" });
    return lr;
  }

  /** Sets every gradient to none (the next backward pass starts from zero). */
  zeroGrad(): void {
    for (const p of this.params.values()) {
      if (p.grad) p.grad.release();
      p.grad = null;
    }
  }

  /**
   * One update from the parameters' gradients (a parameter without one gets a zero gradient, as
   * Keras gives every trainable variable a gradient), clipped first when clipNorm is set; then drops
   * the gradients. Returns the learning rate used.
   */
  step(): number {
    if (this.clipNorm !== undefined) clipGradNorm(this.params.values(), this.clipNorm);
    const lr = this.currentLearningRate();
    const t = this.iterations + 1;
    const variant = this.variant === "keras" ? AdamVariant.Keras : AdamVariant.Torch;
    for (const [name, p] of this.params) {
      const grad = p.grad ?? Tensor.zeros(p.shape);
      if (grad.size !== p.size) throw new Error(`gradient of ${name} has ${grad.size} values, the parameter ${p.size}`);
      const wd = this.decayed.get(name) ? this.weightDecay : 0;
      native.adamw(p.size, p.f32, grad.f32, this.m.get(name)!.f32, this.v.get(name)!.f32, lr,
        this.beta1, this.beta2, this.epsilon, wd, t, variant);
    }
    this.iterations = t;
    this.zeroGrad();
    return lr;
  }

  /** The state to checkpoint; the tensors are the live ones (write them before the next step). */
  state(): AdamWState {
    const tensors = new Map<string, Tensor>();
    for (const name of this.params.keys()) {
      tensors.set(`m.${name}`, this.m.get(name)!);
      tensors.set(`v.${name}`, this.v.get(name)!);
    }
    return { step: this.iterations, variant: this.variant, tensors };
  }

  /** Restores a state from state(); every parameter must have m and v of its shape. */
  loadState(state: AdamWState, where = "optimizer state"): void {
    if (state.variant !== this.variant) {
      throw new LoratuneError(`was written by the "${state.variant}" AdamW variant, this run uses "${this.variant}"`, { file: where });
    }
    if (!Number.isInteger(state.step) || state.step < 0) throw new LoratuneError(`bad step count ${state.step}`, { file: where });
    const expected = new Set<string>();
    for (const [name, p] of this.params) {
      for (const kind of ["m", "v"] as const) {
        const key = `${kind}.${name}`;
        expected.add(key);
        const t = state.tensors.get(key);
        if (!t) throw new LoratuneError(`has no ${key} for trainable parameter ${name}`, { file: where });
        if (t.size !== p.size || t.shape.length !== p.shape.length || t.shape.some((d, i) => d !== p.shape[i])) {
          throw new LoratuneError(`${key} has shape [${t.shape.join(", ")}], the parameter [${p.shape.join(", ")}]`, { file: where });
        }
        (kind === "m" ? this.m : this.v).get(name)!.f32.set(t.f32);
      }
    }
    for (const key of state.tensors.keys()) {
      if (!expected.has(key)) throw new LoratuneError(`holds ${key}, which is not a trainable parameter of this model`, { file: where });
    }
    this.iterations = state.step;
  }
}
