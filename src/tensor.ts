// Tensors: a shape, a dtype and data in native memory (64-byte aligned, from the addon).
// f32 for activations and trainable weights, bf16 (as Uint16Array) for frozen weights, i32 for ids.
import { native } from "./backend/native.js";

export type DType = "f32" | "bf16" | "i32";
export type TensorData = Float32Array | Uint16Array | Int32Array;

const BYTES: Record<DType, number> = { f32: 4, bf16: 2, i32: 4 };

export function sizeOf(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** Buffers allocated inside each open tidy() scope, innermost last. */
const scopes: ArrayBuffer[][] = [];

/**
 * Runs `fn` and gives back the memory of every tensor it allocated, except the buffers of the
 * tensors it returns and of those `keep` names afterwards (e.g. the parameters' gradients). Waiting
 * for garbage collection instead leaves fresh, slow-to-touch pages for every step.
 */
export function tidy<T>(fn: () => T, keep: () => Iterable<Tensor | null | undefined> = () => []): T {
  const scope: ArrayBuffer[] = [];
  scopes.push(scope);
  let result: T;
  try {
    result = fn();
  } finally {
    scopes.pop();
  }
  const kept = new Set<ArrayBufferLike>();
  const visit = (v: unknown, depth: number): void => {
    if (v instanceof Tensor) kept.add(v.data.buffer);
    else if (depth < 2 && v && typeof v === "object") for (const x of Object.values(v)) visit(x, depth + 1);
  };
  visit(result, 0);
  for (const t of keep()) if (t) kept.add(t.data.buffer);
  const outer = scopes.at(-1);
  for (const buffer of scope) {
    if (kept.has(buffer)) outer?.push(buffer);
    else native.release(buffer as ArrayBuffer);
  }
  return result;
}

export class Tensor {
  /** Set on parameters that are trained; the tape records ops whose inputs require gradients. */
  requiresGrad = false;
  /** Accumulated gradient (f32, same shape), created by the backward pass. */
  grad: Tensor | null = null;

  constructor(
    readonly shape: readonly number[],
    readonly dtype: DType,
    readonly data: TensorData,
  ) {
    if (data.length !== sizeOf(shape)) {
      throw new Error(`tensor data has ${data.length} elements but shape [${shape.join(", ")}] needs ${sizeOf(shape)}`);
    }
  }

  /** A zero-filled tensor in native memory. */
  static zeros(shape: readonly number[], dtype: DType = "f32"): Tensor {
    return Tensor.allocate(shape, dtype, true);
  }

  /** A tensor whose contents are undefined: for outputs that a kernel overwrites whole. */
  static empty(shape: readonly number[], dtype: DType = "f32"): Tensor {
    return Tensor.allocate(shape, dtype, false);
  }

  private static allocate(shape: readonly number[], dtype: DType, zero: boolean): Tensor {
    const n = sizeOf(shape);
    const buffer = native.alloc(n * BYTES[dtype], zero);
    scopes.at(-1)?.push(buffer);
    const data = dtype === "f32" ? new Float32Array(buffer) : dtype === "bf16" ? new Uint16Array(buffer) : new Int32Array(buffer);
    return new Tensor(shape, dtype, data);
  }

  /** A tensor holding a copy of `values`. */
  static from(values: ArrayLike<number>, shape: readonly number[] = [values.length], dtype: DType = "f32"): Tensor {
    const t = Tensor.zeros(shape, dtype);
    if (dtype === "bf16") {
      const src = values instanceof Float32Array ? values : Float32Array.from(values);
      native.f32ToBf16(src.length, src, t.data as Uint16Array);
    } else {
      t.data.set(values);
    }
    return t;
  }

  get size(): number {
    return this.data.length;
  }

  get bytes(): number {
    return this.data.byteLength;
  }

  /** The data as Float32Array (throws for other dtypes). */
  get f32(): Float32Array {
    if (this.dtype !== "f32") throw new Error(`expected an f32 tensor, got ${this.dtype}`);
    return this.data as Float32Array;
  }

  get i32(): Int32Array {
    if (this.dtype !== "i32") throw new Error(`expected an i32 tensor, got ${this.dtype}`);
    return this.data as Int32Array;
  }

  /** f32 or bf16 data, as the GEMM and other kernels take weights. */
  get weights(): Float32Array | Uint16Array {
    if (this.dtype === "i32") throw new Error("expected a floating-point tensor, got i32");
    return this.data as Float32Array | Uint16Array;
  }

  /**
   * Gives the memory back now, rather than at garbage collection: kept for reuse by tensors of
   * about the same size, or returned to the system when `reuse` is false (a size not asked for
   * again). The tensor (and any view of it) is empty afterwards; kernels given it fail their size checks.
   */
  release(reuse = true): void {
    native.release(this.data.buffer as ArrayBuffer, reuse);
  }

  /** Same data, another shape with as many elements. */
  reshape(shape: readonly number[]): Tensor {
    return new Tensor(shape, this.dtype, this.data);
  }

  /** A copy converted to f32. */
  toF32(): Tensor {
    const out = Tensor.empty(this.shape, "f32");
    if (this.dtype === "bf16") native.bf16ToF32(this.size, this.data as Uint16Array, out.f32);
    else out.f32.set(this.data);
    return out;
  }

  /** A copy converted to bf16 (round to nearest even). */
  toBf16(): Tensor {
    if (this.dtype === "bf16") return this.clone();
    const out = Tensor.empty(this.shape, "bf16");
    native.f32ToBf16(this.size, this.f32, out.data as Uint16Array);
    return out;
  }

  clone(): Tensor {
    const out = Tensor.empty(this.shape, this.dtype);
    out.data.set(this.data);
    return out;
  }

  /** Values as a plain array of numbers (bf16 widened), for tests and printing. */
  toArray(): number[] {
    return Array.from(this.dtype === "bf16" ? this.toF32().f32 : this.data);
  }
}
