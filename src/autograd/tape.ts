// Reverse-mode automatic differentiation over fused ops. Model code writes only the forward pass;
// each op, when a tape is recording and one of its inputs requires a gradient, records a closure
// that runs its hand-written backward kernel. Frozen weights never get gradients.
import { native } from "../backend/native.js";
import { Tensor } from "../tensor.js";

export class Tape {
  private steps: Array<() => void> = [];

  record(backward: () => void): void {
    this.steps.push(backward);
  }

  /**
   * Seeds d(objective)/d(loss) = `weight` and runs the recorded backward closures newest first.
   * A weight other than 1 lets several losses (micro-batches, rows) add up to one weighted mean.
   */
  backward(loss: Tensor, weight = 1): void {
    if (loss.size !== 1) throw new Error("backward() needs a scalar loss");
    const seed = Tensor.from([weight], loss.shape);
    loss.grad = seed;
    for (let i = this.steps.length - 1; i >= 0; i--) {
      this.steps[i]!();
      this.steps[i] = noop; // drop the saved activations as soon as they are used
    }
    this.steps = [];
  }
}

function noop(): void {}

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
  }
}

/** Adds a gradient computed into its own tensor `g`: it becomes t.grad when t has none yet. */
export function addGrad(t: Tensor, g: Tensor): void {
  if (!t.requiresGrad) return;
  if (!t.grad) t.grad = g;
  else native.add(t.size, t.grad.f32, g.f32, t.grad.f32);
}
