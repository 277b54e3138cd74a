// Reverse-mode automatic differentiation over fused ops. Model code writes only the forward pass;
// each op, when a tape is recording and one of its inputs requires a gradient, records a closure
// that runs its hand-written backward kernel. Frozen weights never get gradients.
//
// The tape also owns the memory of what its ops produced. Each step names the tensors its backward
// reads; once the last step that reads a tensor has run, and once a step has consumed its output's
// gradient, that memory goes back to the allocator. The backward pass therefore holds only the
// activations still ahead of it, rather than every activation and gradient of the step at once.
import { native } from "../backend/native.js";
import { releaseData, Tensor, tidy, type TensorData } from "../tensor.js";

interface Step {
  output: Tensor;
  saved: readonly Tensor[];
  backward: () => void;
}

export class Tape {
  private steps: Step[] = [];
  /** Buffers allocated by the ops on this tape (outputs and their private saved state). */
  private owned = new Set<ArrayBufferLike>();
  /** Buffers some recorded step reads in the backward pass. */
  private saved = new Set<ArrayBufferLike>();

  /**
   * Records the backward closure of the op that produced `output`. `saved` lists the tensors the
   * closure reads (inputs or outputs); `scratch` lists tensors the op allocated only for its
   * backward (e.g. normalisation statistics), freed like the rest after their last use. A view
   * (`outputIsView`) shares its input's memory, which is not the op's to free.
   */
  record(output: Tensor, saved: readonly Tensor[], backward: () => void,
    { scratch = [], outputIsView = false }: { scratch?: readonly Tensor[]; outputIsView?: boolean } = {}): void {
    if (!outputIsView) this.owned.add(output.data.buffer);
    for (const t of scratch) this.owned.add(t.data.buffer);
    const all = scratch.length ? [...saved, ...scratch] : saved;
    for (const t of all) this.saved.add(t.data.buffer);
    this.steps.push({ output, saved: all, backward });
  }

  /** Whether a recorded backward step reads this tensor's memory. */
  needs(t: Tensor): boolean {
    return this.saved.has(t.data.buffer);
  }

  /**
   * Seeds d(objective)/d(loss) = `weight` and runs the recorded backward closures newest first.
   * A weight other than 1 lets several losses (micro-batches, rows) add up to one weighted mean.
   */
  backward(loss: Tensor, weight = 1): void {
    if (loss.size !== 1) throw new Error("backward() needs a scalar loss");
    this.backwardFrom(loss, Tensor.from([weight], loss.shape));
  }

  /** Runs the backward pass from `output` with the given gradient d(objective)/d(output). */
  backwardFrom(output: Tensor, grad: Tensor): void {
    output.grad = grad;
    // The step that reads a buffer last in the backward pass is the oldest step that saves it.
    const lastReader = new Map<ArrayBufferLike, { step: number; data: TensorData }>();
    this.steps.forEach((s, i) => {
      for (const t of s.saved) if (!lastReader.has(t.data.buffer)) lastReader.set(t.data.buffer, { step: i, data: t.data });
    });
    const dueAfter: TensorData[][] = this.steps.map(() => []);
    for (const [buffer, { step, data }] of lastReader) if (this.owned.has(buffer)) dueAfter[step]!.push(data);

    for (let i = this.steps.length - 1; i >= 0; i--) {
      const step = this.steps[i]!;
      step.backward();
      // Every reader of the output ran before its producer, so its gradient is complete and spent.
      step.output.grad?.release();
      step.output.grad = null;
      for (const data of dueAfter[i]!) releaseData(data);
    }
    this.steps = [];
    this.owned.clear();
    this.saved.clear();
  }
}

let active: Tape | null = null;

/** Runs `forward` with a recording tape and returns its result and the tape. */
export function record<T>(forward: () => T): { result: T; tape: Tape } {
  const previous = active;
  const tape = new Tape();
  active = tape;
  try {
    return { result: forward(), tape };
  } finally {
    active = previous;
  }
}

/** Whether a tape is recording (a forward pass whose backward will follow). */
export function recording(): boolean {
  return active !== null;
}

/**
 * The tape an op should record on, or null: only while recording and when an input needs a gradient.
 * Marks `output` as needing a gradient in that case.
 */
export function tapeFor(output: Tensor, ...inputs: Array<Tensor | null | undefined>): Tape | null {
  if (!active || !inputs.some((t) => t?.requiresGrad)) return null;
  output.requiresGrad = true;
  return active;
}

/**
 * Frees intermediate tensors that the caller will not read again, unless a recorded backward step
 * still needs them (the tape frees those after their last use). Model code calls this so that
 * a forward pass holds only what its backward pass will read.
 */
export function dispose(...tensors: Tensor[]): void {
  for (const t of tensors) if (!active?.needs(t)) t.release();
}

/**
 * Activation checkpointing: computes `fn(x)` keeping none of its activations, and records one step
 * that, in the backward pass, computes it again on a tape of its own and runs that tape backward.
 * `fn` must be deterministic. Trainable weights inside `fn` receive their gradients as usual.
 */
export function checkpoint(x: Tensor, fn: (x: Tensor) => Tensor): Tensor {
  const tape = active;
  if (!tape) return fn(x);
  // Recording the first pass tells whether the output needs a gradient; its activations are freed here.
  const out = tidy(() => record(() => fn(x)).result);
  if (!out.requiresGrad) return out;
  tape.record(out, [x], () => {
    if (!out.grad) return;
    // An alias of x, so that the recomputation's input gradient is collected apart from x's.
    const input = new Tensor(x.shape, x.dtype, x.data);
    input.requiresGrad = x.requiresGrad;
    const { result, tape: inner } = record(() => fn(input));
    inner.backwardFrom(result, out.grad);
    if (input.grad) addGrad(x, input.grad);
  });
  return out;
}

/**
 * Adds a gradient into t.grad. `write(dst, fresh)` computes the gradient into dst: when fresh,
 * dst's contents are undefined and must be overwritten; otherwise the gradient is added to dst.
 * Kernels that can only overwrite pass `accumulates: false`, and get a scratch buffer when t
 * already has a gradient.
 */
export function accumulateGrad(t: Tensor, accumulates: boolean, write: (dst: Float32Array, fresh: boolean) => void): void {
  if (!t.requiresGrad) return;
  if (!t.grad) {
    t.grad = Tensor.empty(t.shape);
    write(t.grad.f32, true);
  } else if (accumulates) {
    write(t.grad.f32, false);
  } else {
    const scratch = Tensor.empty(t.shape);
    write(scratch.f32, true);
    native.add(t.size, t.grad.f32, scratch.f32, t.grad.f32);
    scratch.release();
  }
}

/** Adds a gradient computed into its own tensor `g`: it becomes t.grad when t has none yet, else it is added and freed. */
export function addGrad(t: Tensor, g: Tensor): void {
  if (t.requiresGrad && !t.grad) {
    t.grad = g;
    return;
  }
  if (t.requiresGrad) native.add(t.size, t.grad!.f32, g.f32, t.grad!.f32);
  g.release();
}
