// The compiled C++ addon (native/*.cc, built by node-gyp at install) and the signatures of its
// kernels. All matrices are row-major; sizes are passed explicitly and checked against the arrays.
// A Uint16Array operand holds bf16 values (the upper half of an IEEE float32).
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import path from "node:path";

export type WeightArray = Float32Array | Uint16Array;

/** Activation of a gated MLP: out = act(gate) * up. */
export const enum GateKind {
  GeluTanh = 0,
  Silu = 1,
}

/** Where AdamW adds epsilon: Keras ("epsilon hat", after bias correction folds into lr) or PyTorch. */
export const enum AdamVariant {
  Keras = 0,
  Torch = 1,
}

export interface NativeKernels {
  /** 64-byte aligned native memory, zero-filled unless `zero` is false. Freed blocks are reused. */
  alloc(bytes: number, zero?: boolean): ArrayBuffer;
  /**
   * Gives an alloc() buffer back now (it is detached: later reads see an empty array), kept for
   * reuse, or returned to the system when `reuse` is false.
   */
  release(buffer: ArrayBuffer, reuse?: boolean): void;
  /** Bytes of released memory kept for reuse. */
  cachedBytes(): number;
  /** Bytes held by alloc() buffers not yet released or collected (size classes included). */
  liveBytes(): number;
  numThreads(): number;
  setNumThreads(threads: number): void;
  /** The GEMM micro-kernel picked at run time: "avx512", "avx2-fma" or "portable". */
  gemmKernel(): string;
  /** Forces a GEMM kernel ("avx512", "avx2-fma", "portable") or "auto" (the best); throws if the CPU lacks it. */
  setGemmKernel(kernel: string): void;

  /**
   * C = alpha * op(A) · op(B) + beta * C with op(A) [M,K] and op(B) [K,N]; A is stored [M,K]
   * (or [K,M] when transA), B [K,N] (or [N,K] when transB); lda/ldb/ldc are row strides.
   * A is f32; B is f32 or bf16. beta = 0 ignores C's old contents (even NaN).
   */
  gemm(transA: boolean, transB: boolean, M: number, N: number, K: number, alpha: number,
    A: Float32Array, lda: number, B: WeightArray, ldb: number, beta: number, C: Float32Array, ldc: number): void;

  /**
   * Causal grouped-query attention, tiled (the [T,S] score matrix is never stored whole).
   * q [T,Hq,D], k and v [S,Hkv,D]; query t is at position offset+t and sees keys 0..offset+t;
   * query head h reads kv head floor(h / (Hq/Hkv)). out [T,Hq,D]; lse [Hq,T] receives each
   * row's log-sum-exp of scaled scores for the backward (may be null when not training).
   */
  attentionForward(T: number, S: number, Hq: number, Hkv: number, D: number, offset: number, scale: number,
    q: Float32Array, k: Float32Array, v: Float32Array, out: Float32Array, lse: Float32Array | null): void;
  /** Gradients of attentionForward; dq, dk, dv are overwritten. */
  attentionBackward(T: number, S: number, Hq: number, Hkv: number, D: number, offset: number, scale: number,
    q: Float32Array, k: Float32Array, v: Float32Array, out: Float32Array, lse: Float32Array, dOut: Float32Array,
    dq: Float32Array, dk: Float32Array, dv: Float32Array): void;
  /**
   * Rotary embedding in place on x [T,H,D], half-split layout (x[:D/2], x[D/2:] rotate as pairs),
   * angle = positions[t] * theta^(-2i/D). inverse rotates by -angle, which is the backward.
   */
  rope(T: number, H: number, D: number, theta: number, positions: Int32Array, x: Float32Array, inverse: boolean): void;

  /** out[t] = table[ids[t]] * scale, out [T,dim]; ids are checked against rows. */
  embedding(T: number, dim: number, rows: number, scale: number, ids: Int32Array, table: WeightArray, out: Float32Array): void;
  /** dTable[ids[t]] += scale * dOut[t]. */
  embeddingBackward(T: number, dim: number, rows: number, scale: number, ids: Int32Array, dOut: Float32Array,
    dTable: Float32Array): void;
  /** out = x * rsqrt(mean(x²) + eps) * (addOne ? 1 + w : w) per row; rstd [T] saved for backward. */
  rmsnorm(T: number, dim: number, eps: number, addOne: boolean, x: Float32Array, w: WeightArray,
    out: Float32Array, rstd: Float32Array): void;
  /** dx overwritten; dw (may be null) accumulated. */
  rmsnormBackward(T: number, dim: number, addOne: boolean, x: Float32Array, w: WeightArray, rstd: Float32Array,
    dOut: Float32Array, dx: Float32Array, dw: Float32Array | null): void;
  /** out = act(gate) * up elementwise over n values. */
  gatedActivation(n: number, kind: GateKind, gate: Float32Array, up: Float32Array, out: Float32Array): void;
  /** dGate and dUp overwritten. */
  gatedActivationBackward(n: number, kind: GateKind, gate: Float32Array, up: Float32Array, dOut: Float32Array,
    dGate: Float32Array, dUp: Float32Array): void;
  /**
   * Softmax cross-entropy on rows of logits [R,V]: loss[r] = logsumexp(row) - row[targets[r]],
   * argmax[r] = index of the row's largest logit. When gradScale is given, each row of logits is
   * overwritten by its gradient (softmax - onehot(target)) * gradScale[r]. A target of -1 is ignored
   * (loss 0, gradient 0).
   */
  crossEntropy(R: number, V: number, logits: Float32Array, targets: Int32Array, loss: Float32Array,
    argmax: Int32Array, gradScale: Float32Array | null): void;
  /** One AdamW step in place (step counts from 1); weight decay is decoupled: p -= lr*wd*p. */
  adamw(n: number, param: Float32Array, grad: Float32Array, m: Float32Array, v: Float32Array, lr: number,
    beta1: number, beta2: number, eps: number, weightDecay: number, step: number, variant: AdamVariant): void;

  /** out = a + b (out may alias a or b). */
  add(n: number, a: Float32Array, b: Float32Array, out: Float32Array): void;
  /** y += alpha * x. */
  axpy(n: number, alpha: number, x: Float32Array, y: Float32Array): void;
  /** x *= alpha. */
  scale(n: number, alpha: number, x: Float32Array): void;
  /** Sum of x². (f64 accumulation) */
  sumSquares(n: number, x: Float32Array): number;
  /** Conversions between storage types (bf16 rounds to nearest even; f16 is IEEE half in a Uint16Array). */
  bf16ToF32(n: number, src: Uint16Array, dst: Float32Array): void;
  f32ToBf16(n: number, src: Float32Array, dst: Uint16Array): void;
  f16ToF32(n: number, src: Uint16Array, dst: Float32Array): void;
  f16ToBf16(n: number, src: Uint16Array, dst: Uint16Array): void;
}

function load(): NativeKernels {
  const require = createRequire(import.meta.url);
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
  const file = path.join(root, "build", "Release", "loratune.node");
  try {
    return require(file) as NativeKernels;
  } catch (e) {
    throw new Error(
      `loratune's native addon is missing or broken (${file}): run \`npm install\` (or \`npx node-gyp rebuild\`) ` +
        `in ${root}. Cause: ${(e as Error).message}`,
    );
  }
}

/** The addon, loaded once. */
export const native: NativeKernels = load();
