// Layers shared by the model families: a linear projection that can carry a LoRA adapter, and the
// key/value cache used while generating.
import { addScaled, linear, reshape } from "../autograd/ops.js";
import { dispose, recording } from "../autograd/tape.js";
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
    return this.addLora(x, linear(x, this.weight));
  }

  /** y + the adapter's update of x, or y itself without an adapter. */
  addLora(x: Tensor, y: Tensor): Tensor {
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

/**
 * Projections of the same input (q, k, v; gate, up) whose weights lie one after another in one
 * buffer, each Linear's weight a view of its rows. Outside training one product with the whole
 * buffer computes them all: a decoding step then makes one pass over the rows rather than one per
 * projection, each pass waking the threads. Training runs each projection on its own, as usual.
 */
export class StackedLinears {
  private constructor(readonly linears: readonly Linear[], private readonly stacked: Tensor) {}

  /** Moves the weights into one buffer; null when they differ in dtype or input size. */
  static stack(linears: readonly Linear[]): StackedLinears | null {
    const [first] = linears;
    if (!first || linears.some((l) => l.weight.dtype !== first.weight.dtype || l.inFeatures !== first.inFeatures)) return null;
    if (new Set(linears.map((l) => l.weight.data.buffer)).size !== linears.length) return null;
    const rows = linears.reduce((n, l) => n + l.outFeatures, 0);
    const stacked = Tensor.empty([rows, first.inFeatures], first.weight.dtype);
    let at = 0;
    for (const l of linears) {
      const own = l.weight, size = own.size;
      stacked.data.set(own.data, at);
      l.weight = new Tensor(own.shape, own.dtype, stacked.data.subarray(at, at + size));
      own.release(false); // weights are not reallocated: keeping the memory would only add to the RSS
      at += size;
    }
    return new StackedLinears(linears, stacked);
  }

  forward(x: Tensor): Tensor[] {
    if (recording()) return this.linears.map((l) => l.forward(x));
    const T = x.shape[0]!, rows = this.stacked.shape[0]!;
    const all = linear(x, this.stacked);
    let column = 0;
    const outs = this.linears.map((l) => {
      const width = l.outFeatures;
      const y = Tensor.empty([T, width]);
      for (let t = 0; t < T; t++) y.f32.set(all.f32.subarray(t * rows + column, t * rows + column + width), t * width);
      column += width;
      return l.addLora(x, y);
    });
    all.release();
    return outs;
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
