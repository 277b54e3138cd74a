// Tensors: a shape, a dtype and data in native memory (64-byte aligned, from the addon).
// f32 for activations and trainable weights, bf16 (as Uint16Array) for frozen weights, i32 for ids.
import os from "node:os";
import { native } from "./backend/native.js";

export type DType = "f32" | "bf16" | "i32";
export type TensorData = Float32Array | Uint16Array | Int32Array;

const BYTES: Record<DType, number> = { f32: 4, bf16: 2, i32: 4 };

export function sizeOf(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

// ---- memory ------------------------------------------------------------------------------------
// Tensors' memory comes from the addon as ArrayBuffers. A tensor's buffer, once given back, is kept
// here and leased again as it is, instead of being detached and made anew: V8 counts every new
// external ArrayBuffer as external memory, and a training step that made and dropped hundreds of MB
// of them started several full garbage collections per step, 130-190 ms each while a 256k-token
// tokenizer's 170 MB heap was alive (a 512-token step of the 270M shape took 3.2 s instead of 2.3 s).
// Each lease is a fresh typed-array view of the buffer: a release through an older view (a stale
// tensor, a second release) finds its lease gone and does nothing.

/** Buffers at hand, by byte length (a size class). */
const pool = new Map<number, ArrayBuffer[]>();
/** The same buffers, for membership. */
const atHand = new WeakSet<ArrayBufferLike>();
/** The view each leased buffer is currently lent through. */
const leases = new WeakMap<ArrayBufferLike, TensorData>();
let pooledBytes = 0;
let peakInUse = 0;
/** Beyond this, given-back buffers go back to the addon (which caches or frees them): an eighth of the memory, as the addon's cache. */
const POOL_LIMIT = os.totalmem() / 8;

/** Byte lengths round up to a class, as the addon's do: 64-byte steps when small, else four per power of two. */
function sizeClass(bytes: number): number {
  bytes = Math.max(bytes, 64);
  if (bytes <= 65536) return Math.ceil(bytes / 64) * 64;
  const step = 2 ** Math.floor(Math.log2(bytes - 1)) / 4;
  return Math.ceil(bytes / step) * step;
}

/** The smallest buffer at hand of the class of `bytes`, or of a class up to twice as big (varying sequence lengths ask for ever new sizes). */
function takeFromPool(bytes: number): ArrayBuffer | undefined {
  const cls = sizeClass(bytes);
  for (let c = cls; c <= 2 * cls; c = sizeClass(c + 1)) {
    const buffer = pool.get(c)?.pop();
    if (buffer) {
      pooledBytes -= c;
      atHand.delete(buffer);
      return buffer;
    }
    if (c <= 65536) break; // small classes: only the exact one
  }
  return undefined;
}

function lease(bytes: number, dtype: DType, zero: boolean): TensorData {
  const n = bytes / BYTES[dtype];
  const pooled = takeFromPool(bytes);
  const buffer = pooled ?? native.alloc(sizeClass(bytes), zero);
  const data = dtype === "f32" ? new Float32Array(buffer, 0, n) : dtype === "bf16" ? new Uint16Array(buffer, 0, n) : new Int32Array(buffer, 0, n);
  if (pooled && zero) data.fill(0);
  leases.set(buffer, data);
  peakInUse = Math.max(peakInUse, native.liveBytes() - pooledBytes);
  return data;
}

/**
 * Ends the lease `data` was lent through: the buffer goes back to the pool (or to the addon when
 * the pool is full or `reuse` is false). Data through an ended lease gives nothing back; data that
 * was never leased (e.g. weights read from a file) is released in the addon.
 */
function giveBack(data: TensorData, reuse = true): void {
  const buffer = data.buffer as ArrayBuffer;
  const current = leases.get(buffer);
  if (current === undefined) {
    if (buffer.byteLength > 0 && !atHand.has(buffer)) native.release(buffer, reuse);
    return;
  }
  if (current !== data) return;
  leases.delete(buffer);
  if (!reuse || pooledBytes + buffer.byteLength > POOL_LIMIT) return native.release(buffer, reuse);
  let list = pool.get(buffer.byteLength);
  if (!list) pool.set(buffer.byteLength, (list = []));
  list.push(buffer);
  atHand.add(buffer);
  pooledBytes += buffer.byteLength;
}

/** Bytes of native memory held by tensors (and other alloc() users) now, leaving out buffers at hand for reuse. */
export function memoryInUse(): number {
  return native.liveBytes() - pooledBytes;
}

/** The most memoryInUse() reached since the last reset (as seen at each allocation); `reset` starts anew from now. */
export function peakMemoryInUse(reset = false): number {
  const peak = Math.max(peakInUse, memoryInUse());
  if (reset) peakInUse = memoryInUse();
  return peak;
}

/** Tensors' data leased inside each open tidy() scope, innermost last. */
const scopes: TensorData[][] = [];

/**
 * Runs `fn` and gives back the memory of every tensor it allocated, except the buffers of the
 * tensors it returns and of those `keep` names afterwards (e.g. the parameters' gradients). Waiting
 * for garbage collection instead leaves fresh, slow-to-touch pages for every step.
 */
export function tidy<T>(fn: () => T, keep: () => Iterable<Tensor | null | undefined> = () => []): T {
  const scope: TensorData[] = [];
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
  for (const data of scope) {
    if (kept.has(data.buffer)) outer?.push(data);
    else giveBack(data);
  }
  return result;
}

/** Gives back the memory of tensor data leased by Tensor.zeros/empty (a no-op once given back). */
export function releaseData(data: TensorData): void {
  giveBack(data);
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
    const data = lease(sizeOf(shape) * BYTES[dtype], dtype, zero);
    scopes.at(-1)?.push(data);
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
   * Gives the memory back now, rather than at garbage collection: kept for reuse by the next
   * tensors, or returned to the system when `reuse` is false (a size not asked for again). The
   * tensor must not be used afterwards: its memory may hold another tensor's values. Releasing
   * twice is harmless.
   */
  release(reuse = true): void {
    giveBack(this.data, reuse);
  }

  /** Whether this tensor's memory has been given back (by release(), tidy() or the tape). */
  get released(): boolean {
    const current = leases.get(this.data.buffer);
    return this.data.buffer.byteLength === 0 || (current !== undefined ? current !== this.data : atHand.has(this.data.buffer));
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
