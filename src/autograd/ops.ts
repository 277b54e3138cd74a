// Differentiable fused ops. Each computes its forward with one native kernel and, when recording,
// saves what its backward kernel needs. Shapes: activations are [T, features] row-major f32.
import { GateKind, native } from "../backend/native.js";
import { releaseData, Tensor } from "../tensor.js";
import { accumulateGrad, addGrad, tapeFor } from "./tape.js";

function dims2(t: Tensor, what: string): [number, number] {
  if (t.shape.length !== 2) throw new Error(`${what} must be 2-D, got [${t.shape.join(", ")}]`);
  return [t.shape[0]!, t.shape[1]!];
}

/** y = x · wᵀ with x [T,in] and w [out,in] (f32, or bf16 when frozen). */
export function linear(x: Tensor, w: Tensor): Tensor {
  const [T, inF] = dims2(x, "linear input");
  const [outF, wIn] = dims2(w, "linear weight");
  if (wIn !== inF) throw new Error(`linear: input has ${inF} features, weight [${w.shape.join(", ")}] expects ${wIn}`);
  const y = Tensor.empty([T, outF]);
  native.gemm(false, true, T, outF, inF, 1, x.f32, inF, w.weights, inF, 0, y.f32, outF);
  // x is read again only for a trainable weight's gradient.
  tapeFor(y, x, w)?.record(y, w.requiresGrad ? [x] : [], () => {
    if (!y.grad) return;
    const dy = y.grad.f32;
    // dx = dy · w ; dw = dyᵀ · x
    accumulateGrad(x, true, (dst, fresh) =>
      native.gemm(false, false, T, inF, outF, 1, dy, outF, w.weights, inF, fresh ? 0 : 1, dst, inF));
    accumulateGrad(w, true, (dst, fresh) =>
      native.gemm(true, false, outF, inF, T, 1, dy, outF, x.f32, inF, fresh ? 0 : 1, dst, inF));
  });
  return y;
}

/** dst = alpha * src when fresh (dst undefined), else dst += alpha * src. */
function addInto(dst: Float32Array, fresh: boolean, alpha: number, src: Float32Array): void {
  if (!fresh) return native.axpy(dst.length, alpha, src, dst);
  dst.set(src);
  if (alpha !== 1) native.scale(dst.length, alpha, dst);
}

/** The same values viewed with another shape (no copy). */
export function reshape(x: Tensor, shape: readonly number[]): Tensor {
  const out = x.reshape(shape);
  tapeFor(out, x)?.record(out, [], () => {
    if (!out.grad) return;
    accumulateGrad(x, true, (dst, fresh) => addInto(dst, fresh, 1, out.grad!.f32));
  }, { outputIsView: true });
  return out;
}

/** a + scale * b (same shapes). */
export function addScaled(a: Tensor, b: Tensor, scale = 1): Tensor {
  if (a.size !== b.size) throw new Error(`add: sizes differ (${a.size} vs ${b.size})`);
  const out = scale === 1 ? Tensor.empty(a.shape) : a.clone();
  if (scale === 1) native.add(a.size, a.f32, b.f32, out.f32);
  else native.axpy(a.size, scale, b.f32, out.f32);
  tapeFor(out, a, b)?.record(out, [], () => {
    if (!out.grad) return;
    const dy = out.grad.f32;
    accumulateGrad(a, true, (dst, fresh) => addInto(dst, fresh, 1, dy));
    accumulateGrad(b, true, (dst, fresh) => addInto(dst, fresh, scale, dy));
  });
  return out;
}

/** RMSNorm over the last dimension; Gemma scales by (1 + w), Llama by w. */
export function rmsnorm(x: Tensor, w: Tensor, eps: number, addOne: boolean): Tensor {
  const [T, dim] = dims2(x, "rmsnorm input");
  const out = Tensor.empty(x.shape);
  const rstd = Tensor.empty([T]);
  native.rmsnorm(T, dim, eps, addOne, x.f32, w.weights, out.f32, rstd.f32);
  tapeFor(out, x, w)?.record(out, [x], () => {
    if (!out.grad) return;
    const dw = w.requiresGrad ? (w.grad ??= Tensor.zeros(w.shape)).f32 : null;
    if (!x.requiresGrad) {
      const dx = Tensor.empty(x.shape); // scratch when only dw is wanted
      native.rmsnormBackward(T, dim, addOne, x.f32, w.weights, rstd.f32, out.grad.f32, dx.f32, dw);
      dx.release();
    }
    accumulateGrad(x, false, (dst) =>
      native.rmsnormBackward(T, dim, addOne, x.f32, w.weights, rstd.f32, out.grad!.f32, dst, dw));
  }, { scratch: [rstd] });
  return out;
}

/** Rotary position embedding (half-split) on x [T, heads*headDim]. */
export function rope(x: Tensor, heads: number, headDim: number, theta: number, positions: Int32Array): Tensor {
  const [T] = dims2(x, "rope input");
  const out = x.clone();
  native.rope(T, heads, headDim, theta, positions, out.f32, false);
  tapeFor(out, x)?.record(out, [], () => {
    if (!out.grad) return;
    const dy = out.grad.f32;
    accumulateGrad(x, false, (dst) => {
      dst.set(dy);
      native.rope(T, heads, headDim, theta, positions, dst, true);
    });
  });
  return out;
}

export interface AttentionShape {
  heads: number;
  kvHeads: number;
  headDim: number;
  scale: number;
}

/** Causal self-attention over a whole sequence: q [T, heads*D], k and v [T, kvHeads*D]. */
export function attention(q: Tensor, k: Tensor, v: Tensor, s: AttentionShape): Tensor {
  const [T] = dims2(q, "attention query");
  const out = Tensor.empty(q.shape);
  const tape = tapeFor(out, q, k, v);
  const lse = tape ? Tensor.empty([s.heads, T]) : null;
  native.attentionForward(T, T, s.heads, s.kvHeads, s.headDim, 0, s.scale, q.f32, k.f32, v.f32, out.f32, lse?.f32 ?? null);
  tape?.record(out, [q, k, v, out], () => {
    if (!out.grad) return;
    const dq = Tensor.empty(q.shape), dk = Tensor.empty(k.shape), dv = Tensor.empty(v.shape);
    native.attentionBackward(T, T, s.heads, s.kvHeads, s.headDim, 0, s.scale, q.f32, k.f32, v.f32, out.f32,
      lse!.f32, out.grad.f32, dq.f32, dk.f32, dv.f32);
    addGrad(q, dq);
    addGrad(k, dk);
    addGrad(v, dv);
  }, { scratch: [lse!] });
  return out;
}

/** act(gate) * up, elementwise. */
export function gated(gate: Tensor, up: Tensor, kind: GateKind): Tensor {
  const out = Tensor.empty(gate.shape);
  native.gatedActivation(gate.size, kind, gate.f32, up.f32, out.f32);
  tapeFor(out, gate, up)?.record(out, [gate, up], () => {
    if (!out.grad) return;
    const dGate = Tensor.empty(gate.shape), dUp = Tensor.empty(up.shape);
    native.gatedActivationBackward(gate.size, kind, gate.f32, up.f32, out.grad.f32, dGate.f32, dUp.f32);
    addGrad(gate, dGate);
    addGrad(up, dUp);
  });
  return out;
}

/** Rows of `table` [rows, dim] picked by ids, times `scale`. */
export function embedding(ids: Int32Array, table: Tensor, scale: number): Tensor {
  const [rows, dim] = dims2(table, "embedding table");
  const out = Tensor.empty([ids.length, dim]);
  native.embedding(ids.length, dim, rows, scale, ids, table.weights, out.f32);
  tapeFor(out, table)?.record(out, [], () => {
    if (!out.grad) return;
    accumulateGrad(table, true, (dst, fresh) => {
      if (fresh) dst.fill(0);
      native.embeddingBackward(ids.length, dim, rows, scale, ids, out.grad!.f32, dst);
    });
  });
  return out;
}

export interface LossResult {
  /** Mean cross-entropy over the counted tokens, a scalar tensor on the tape. */
  loss: Tensor;
  /** Counted tokens whose most likely prediction was the target. */
  correct: number;
  /** Tokens counted (targets >= 0). */
  count: number;
}

/** Rows of logits held at once: bounds the [rows, vocab] buffer to about 256 MB (fewer, larger chunks let the GEMM amortise packing the vocabulary-sized weight). */
function chunkRows(vocab: number): number {
  return Math.max(1, Math.floor((256 << 20) / (4 * vocab)));
}

/**
 * Softmax cross-entropy of logits = hidden · headᵀ against targets (-1 = not counted), computed in
 * chunks of rows so that [T, vocab] logits are never held whole, and only for counted rows. The
 * gradient is computed in the same pass (the loss is always the last op) and scaled on backward.
 */
export function lmHeadCrossEntropy(hidden: Tensor, head: Tensor, targets: Int32Array): LossResult {
  const [T, dim] = dims2(hidden, "hidden states");
  const [vocab, headDim] = dims2(head, "LM head");
  if (headDim !== dim) throw new Error(`LM head [${head.shape.join(", ")}] does not match hidden size ${dim}`);
  if (targets.length !== T) throw new Error(`${targets.length} targets for ${T} positions`);
  const rows: number[] = [];
  for (let t = 0; t < T; t++) if (targets[t]! >= 0) rows.push(t);
  const count = rows.length;
  const loss = Tensor.zeros([1]);
  const tape = tapeFor(loss, hidden, head);
  const dHidden = tape && hidden.requiresGrad ? Tensor.zeros(hidden.shape) : null;
  const dHead = tape && head.requiresGrad ? Tensor.zeros(head.shape) : null;

  const chunk = Math.min(chunkRows(vocab), Math.max(1, count));
  const h = Tensor.empty([chunk * dim]).f32;
  const logits = Tensor.empty([chunk * vocab]).f32;
  const chunkTargets = new Int32Array(chunk);
  const chunkLoss = new Float32Array(chunk);
  const argmax = new Int32Array(chunk);
  const gradScale = tape ? new Float32Array(chunk).fill(1 / Math.max(1, count)) : null;
  const dh = dHidden ? Tensor.empty([chunk * dim]).f32 : null;
  let total = 0;
  let correct = 0;
  for (let start = 0; start < count; start += chunk) {
    const n = Math.min(chunk, count - start);
    for (let i = 0; i < n; i++) {
      const t = rows[start + i]!;
      h.set(hidden.f32.subarray(t * dim, (t + 1) * dim), i * dim);
      chunkTargets[i] = targets[t]!;
    }
    native.gemm(false, true, n, vocab, dim, 1, h, dim, head.weights, dim, 0, logits, vocab);
    native.crossEntropy(n, vocab, logits, chunkTargets, chunkLoss, argmax, gradScale);
    for (let i = 0; i < n; i++) {
      total += chunkLoss[i]!;
      if (argmax[i] === chunkTargets[i]) correct++;
    }
    if (dh && dHidden) {
      // logits now hold d(loss)/d(logits): dh = dlogits · head, scattered back to the rows.
      native.gemm(false, false, n, dim, vocab, 1, logits, vocab, head.weights, dim, 0, dh, dim);
      for (let i = 0; i < n; i++) dHidden.f32.set(dh.subarray(i * dim, (i + 1) * dim), rows[start + i]! * dim);
    }
    if (dHead) native.gemm(true, false, vocab, dim, n, 1, logits, vocab, h, dim, 1, dHead.f32, dim);
  }
  for (const scratch of [h, logits, dh]) if (scratch) releaseData(scratch);
  loss.f32[0] = count > 0 ? total / count : 0;
  tape?.record(loss, [], () => {
    const g = loss.grad ? loss.grad.f32[0]! : 0;
    // The usual seed is 1: then the gradient computed in the forward pass is the gradient, no copy.
    if (dHidden && g !== 1) native.scale(dHidden.size, g, dHidden.f32);
    if (dHead && g !== 1) native.scale(dHead.size, g, dHead.f32);
    if (dHidden) addGrad(hidden, dHidden);
    if (dHead) addGrad(head, dHead);
  });
  return { loss, correct, count };
}
