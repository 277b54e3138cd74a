// Layers shared by the model families: a linear projection that can carry a LoRA adapter, and the
// key/value cache used while generating.
import { addScaled, linear, reshape } from "../autograd/ops.js";
import { dispose } from "../autograd/tape.js";
import { Tensor } from "../tensor.js";

/**
 * A low-rank update y += scale * (x · Aᵀ) · Bᵀ. In the PEFT layout (groups = 1) A is [rank, in] and
 * B [out, rank]. Keras's per-head layout (groups = heads) gives each head its own A rows and shares
 * one B: A is [heads * rank, in] and B [out / heads, rank], which equals a PEFT adapter of rank
 * heads * rank whose B is block-diagonal.
 */
export interface LoraAdapter {
  A: Tensor;
  B: Tensor;
  scale: number;
  groups: number;
}

/** A bias-free projection y = x · Wᵀ, W [out, in] in Hugging Face layout. */
export class Linear {
  lora: LoraAdapter | null = null;

  constructor(
    /** Hugging Face name of the weight, e.g. model.layers.0.self_attn.q_proj.weight. */
    readonly name: string,
    public weight: Tensor,
  ) {}

  get inFeatures(): number {
    return this.weight.shape[1]!;
  }

  get outFeatures(): number {
    return this.weight.shape[0]!;
  }

  forward(x: Tensor): Tensor {
    const y = linear(x, this.weight);
    if (!this.lora) return y;
    const { A, B, scale, groups } = this.lora;
    const T = x.shape[0]!;
    const down = linear(x, A);
    const delta = groups === 1 ? linear(down, B)
      : reshape(linear(reshape(down, [T * groups, B.shape[1]!]), B), [T, this.outFeatures]);
    const out = addScaled(y, delta, scale);
    dispose(y, delta);
    return out;
  }
}

/** Keys and values of the tokens seen so far, per layer: [maxLength, kvHeads * headDim] each. */
export class KVCache {
  readonly keys: Tensor[];
  readonly values: Tensor[];
  /** Tokens stored so far (the position of the next token). */
  length = 0;

  constructor(layers: number, readonly maxLength: number, readonly width: number) {
    this.keys = Array.from({ length: layers }, () => Tensor.zeros([maxLength, width]));
    this.values = Array.from({ length: layers }, () => Tensor.zeros([maxLength, width]));
  }

  /** Stores k and v [T, width] for `layer` at positions length..length+T-1. */
  write(layer: number, k: Tensor, v: Tensor): void {
    const T = k.shape[0]!;
    if (this.length + T > this.maxLength) {
      throw new Error(`the key/value cache holds ${this.maxLength} tokens; ${this.length + T} needed`);
    }
    this.keys[layer]!.f32.set(k.f32, this.length * this.width);
    this.values[layer]!.f32.set(v.f32, this.length * this.width);
  }

  /** Keys and values of positions 0..length+T-1 for `layer`, after write(). */
  view(layer: number, T: number): { k: Float32Array; v: Float32Array } {
    const n = (this.length + T) * this.width;
    return { k: this.keys[layer]!.f32.subarray(0, n), v: this.values[layer]!.f32.subarray(0, n) };
  }
}
