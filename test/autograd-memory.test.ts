// The tape's memory management: activations are freed once the backward pass has read them for the
// last time, and activation checkpointing recomputes a block's activations with the same results.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { gated, linear, lmHeadCrossEntropy, rmsnorm } from "../src/autograd/ops.js";
import { checkpoint, record } from "../src/autograd/tape.js";
import { GateKind } from "../src/backend/native.js";
import { loraParameters } from "../src/lora/lora.js";
import type { CausalLM } from "../src/models/model.js";
import { memoryInUse, peakMemoryInUse, Tensor, tidy } from "../src/tensor.js";
import { tinyLoraModel } from "./training-fixtures.js";
import { uniform } from "./helpers.js";

const IDS = Int32Array.from([2, 213, 287, 262, 424, 213, 75, 50, 75, 21, 475, 139, 7, 99, 301, 5]);
const TARGETS = Int32Array.from(IDS, (_, t) => (t + 1 < IDS.length ? IDS[t + 1]! : -1));

function randomTensor(shape: number[], seed: number, requiresGrad = false): Tensor {
  const next = uniform(seed);
  const t = Tensor.from(Array.from({ length: shape.reduce((a, b) => a * b) }, () => next() - 0.5), shape);
  t.requiresGrad = requiresGrad;
  return t;
}

/** A LoRA model whose B matrices are not zero, so that every adapter weight gets a gradient. */
function model(): CausalLM {
  const m = tinyLoraModel();
  let seed = 11;
  for (const [name, t] of loraParameters(m)) if (name.includes("lora_B")) t.f32.set(randomTensor(t.shape as number[], seed++).f32);
  return m;
}

/** Loss, LoRA gradients (copied) and the peak of live native memory over one step. */
function step(m: CausalLM, checkpointActivations: boolean): { loss: number; grads: Map<string, Float32Array>; peak: number; base: number } {
  const params = loraParameters(m);
  for (const t of params.values()) t.grad = null;
  const base = memoryInUse();
  peakMemoryInUse(true);
  const loss = tidy(() => {
    const { result, tape } = record(() => lmHeadCrossEntropy(m.forward(IDS, { checkpointActivations }), m.lmHead, TARGETS));
    tape.backward(result.loss);
    return result.loss.f32[0]!;
  }, () => Array.from(params.values(), (p) => p.grad));
  const peak = peakMemoryInUse() - base;
  const grads = new Map(Array.from(params, ([name, t]) => [name, t.grad!.f32.slice()]));
  return { loss, grads, peak, base };
}

describe("activation checkpointing", () => {
  it("gives the same loss and adapter gradients as keeping every activation", () => {
    const m = model();
    const kept = step(m, false);
    const recomputed = step(m, true);
    assert.equal(recomputed.loss, kept.loss);
    assert.equal(recomputed.grads.size, kept.grads.size);
    for (const [name, g] of kept.grads) {
      assert.ok(g.some((x) => x !== 0), `${name} has a gradient`);
      assert.deepEqual(recomputed.grads.get(name), g, name);
    }
  });

  it("holds less memory at its peak", () => {
    const m = model();
    step(m, false); // warm the allocator's cache alike for both
    const kept = step(m, false);
    const recomputed = step(m, true);
    assert.ok(recomputed.peak < kept.peak, `peak ${recomputed.peak} B with checkpointing, ${kept.peak} B without`);
  });

  it("is a plain call when nothing is recording", () => {
    const x = randomTensor([3, 8], 1);
    const w = randomTensor([8], 2);
    const direct = rmsnorm(x, w, 1e-6, true).toArray();
    assert.deepEqual(checkpoint(x, (h) => rmsnorm(h, w, 1e-6, true)).toArray(), direct);
  });
});

describe("tape memory", () => {
  it("frees each activation after the backward step that reads it last, and spent gradients", () => {
    const x = randomTensor([4, 8], 3, true);
    const gate = randomTensor([6, 8], 4, true);
    const up = randomTensor([6, 8], 5);
    const w = randomTensor([8], 6);
    const { result, tape } = record(() => {
      const h = rmsnorm(x, w, 1e-6, true);
      const g = linear(h, gate);
      const u = linear(h, up);
      const m = gated(g, u, GateKind.GeluTanh);
      return { h, g, u, m, loss: lmHeadCrossEntropy(m, randomTensor([5, 6], 7), Int32Array.from([1, 2, 3, 4])).loss };
    });
    tape.backward(result.loss);
    // g and u were read by the gated backward; h by the trainable linear's weight gradient.
    for (const name of ["h", "g", "u"] as const) assert.ok(result[name].released, `${name} was freed`);
    assert.ok(gate.grad && gate.grad.size === 48 && x.grad && x.grad.size === 32, "leaf gradients are kept");
    assert.equal(result.m.grad, null, "intermediate gradients are spent");
    assert.ok(!result.loss.released && result.loss.size === 1, "the loss stays readable");
  });
});

describe("tensor memory", () => {
  it("leases a given-back buffer again, and a stale release frees nothing", () => {
    const a = Tensor.empty([1000]);
    a.release();
    const b = Tensor.zeros([1000]);
    assert.equal(b.data.buffer, a.data.buffer, "the buffer is reused");
    assert.ok(a.released && !b.released);
    assert.deepEqual(Array.from(b.f32.subarray(0, 4)), [0, 0, 0, 0], "zeros() clears a reused buffer");
    a.release(); // stale: a's lease ended
    const c = Tensor.empty([1000]);
    assert.notEqual(c.data.buffer, b.data.buffer, "b keeps its memory");
    b.release();
    c.release();
  });

  it("tidy() gives back what it leased once, even when a buffer was leased twice inside it", () => {
    const kept = tidy(() => {
      const first = Tensor.empty([500]);
      first.release();
      return Tensor.from(Array.from({ length: 500 }, (_, i) => i)); // likely first's buffer again
    });
    assert.ok(!kept.released);
    assert.equal(kept.f32[499], 499);
    const next = Tensor.empty([500]);
    assert.notEqual(next.data.buffer, kept.data.buffer, "the kept tensor's buffer is not at hand");
    next.release();
    kept.release();
  });
});
