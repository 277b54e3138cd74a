// AdamW (both epsilon placements) against the gemma-tiny golden step, learning-rate schedules,
// weight-decay exclusions and clipping.
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { lmHeadCrossEntropy } from "../src/autograd/ops.js";
import { record } from "../src/autograd/tape.js";
import { SafetensorsFile } from "../src/io/safetensors.js";
import type { GemmaModel } from "../src/models/gemma.js";
import { loadModelDir } from "../src/models/load.js";
import { Tensor } from "../src/tensor.js";
import { AdamW, clipGradNorm, globalGradNorm, usesWeightDecay } from "../src/training/optimizer.js";
import { constantSchedule, cosineSchedule, linearSchedule, makeSchedule } from "../src/training/schedule.js";
import { LoratuneError } from "../src/errors.js";

const fixture = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../test/fixtures/gemma-tiny");
const golden = SafetensorsFile.open(path.join(fixture, "golden.safetensors"));
const results = JSON.parse(fs.readFileSync(path.join(fixture, "golden.json"), "utf8")).results;
const f32 = (name: string) => golden.read(name, "f32");
const MODULES = [0, 1].flatMap((l) => ["q_proj", "v_proj"].map((p) => `model.layers.${l}.self_attn.${p}`));
const NAMES = MODULES.flatMap((m) => [`${m}.lora_A.weight`, `${m}.lora_B.weight`]);

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>, skip?: (i: number) => boolean): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) if (!skip?.(i)) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

const variants = [["keras", "adamw_keras"], ["torch", "adamw_torch"]] as const;

describe("AdamW vs the golden step (lr 1e-3, wd 0.01, eps 1e-7)", () => {
  for (const [variant, key] of variants) {
    it(`${variant}: init + golden gradients give the golden parameters within 1e-7`, () => {
      const params = new Map(NAMES.map((n) => [n, f32(`lora.init.${n}`)]));
      for (const [n, p] of params) {
        p.requiresGrad = true;
        p.grad = f32(`lora.grad.${n}`);
      }
      const opt = new AdamW(params, { learningRate: 1e-3, weightDecay: 0.01, epsilon: 1e-7, variant });
      for (const n of NAMES) assert.ok(opt.decays(n), `${n} is decayed`);
      assert.equal(opt.step(), 1e-3);
      assert.equal(opt.iterations, 1);
      for (const [n, p] of params) {
        assert.equal(p.grad, null, "gradients are dropped after the step");
        const d = maxAbsDiff(p.f32, f32(`lora.${key}.${n}`).f32);
        assert.ok(d <= 1e-7, `${n}: max |diff| ${d}`);
      }
    });
  }

  it("the two variants differ (the test can tell epsilon placements apart)", () => {
    const a = f32(`lora.adamw_keras.${NAMES[2]}`).f32, b = f32(`lora.adamw_torch.${NAMES[2]}`).f32;
    assert.ok(maxAbsDiff(a, b) > 1e-4);
  });

  for (const [variant, key] of variants) {
    it(`${variant}: chained from our own gradients, within 1e-6 where |g| is not tiny, loss after within 1e-5`, () => {
      const { model } = loadModelDir(fixture);
      const gemma = model as GemmaModel;
      const params = new Map<string, Tensor>();
      gemma.blocks.forEach((blk, i) => {
        for (const [proj, lin] of [["q_proj", blk.q], ["v_proj", blk.v]] as const) {
          const m = `model.layers.${i}.self_attn.${proj}`;
          const A = f32(`lora.init.${m}.lora_A.weight`).reshape([4, lin.inFeatures]);
          const B = f32(`lora.init.${m}.lora_B.weight`).reshape([lin.outFeatures, 4]);
          A.requiresGrad = B.requiresGrad = true;
          lin.lora = { A, B, scale: 1, groups: 1 };
          params.set(`${m}.lora_A.weight`, A);
          params.set(`${m}.lora_B.weight`, B);
        }
      });
      const ids = golden.read("input_ids", "i32").i32;
      const mask = golden.read("attention_mask", "i32").i32;
      const rows = [0, 1].map((b) => {
        const valid = Array.from(mask.subarray(b * 12, (b + 1) * 12)).filter((x) => x === 1).length;
        const rowIds = ids.slice(b * 12, b * 12 + valid);
        return { ids: rowIds, targets: Int32Array.from(rowIds, (_, t) => (t + 1 < valid ? rowIds[t + 1]! : -1)) };
      });
      const loss = () => {
        let sum = 0;
        for (const r of rows) {
          const { loss: l, count } = lmHeadCrossEntropy(model.forward(r.ids), model.lmHead, r.targets);
          sum += l.f32[0]! * count;
        }
        return sum / 18;
      };
      for (const r of rows) {
        const { result, tape } = record(() => lmHeadCrossEntropy(model.forward(r.ids), model.lmHead, r.targets));
        tape.backward(result.loss, result.count / 18);
      }
      new AdamW(params, { learningRate: 1e-3, weightDecay: 0.01, epsilon: 1e-7, variant }).step();
      for (const [n, p] of params) {
        const g = f32(`lora.grad.${n}`).f32;
        const d = maxAbsDiff(p.f32, f32(`lora.${key}.${n}`).f32, (i) => Math.abs(g[i]!) < 1e-6);
        assert.ok(d <= 1e-6, `${n}: max |diff| ${d}`);
      }
      const after = loss();
      const expected = variant === "keras" ? results.lora_loss_after_adamw_keras : results.lora_loss_after_adamw_torch;
      assert.ok(Math.abs(after - expected) < 1e-5, `loss after ${after} vs ${expected}`);
    });
  }
});

describe("AdamW options and state", () => {
  it("excludes biases and norm scales from weight decay by name part", () => {
    const ex = ["bias", "scale"];
    assert.equal(usesWeightDecay("model.layers.0.self_attn.q_proj.lora_A.weight", ex), true);
    assert.equal(usesWeightDecay("model.layers.0.self_attn.q_proj.weight", ex), true);
    assert.equal(usesWeightDecay("model.layers.0.self_attn.q_proj.bias", ex), false);
    assert.equal(usesWeightDecay("model.layers.0.input_layernorm.weight", ex), false);
    assert.equal(usesWeightDecay("model.layers.3.post_attention_layernorm.weight", ex), false);
    assert.equal(usesWeightDecay("model.norm.weight", ex), false);
    assert.equal(usesWeightDecay("model.embed_tokens.weight", ex), true);
    assert.equal(usesWeightDecay("model.norm.weight", []), true);
    assert.equal(usesWeightDecay("model.embed_tokens.weight", ["embed_tokens"]), false);
  });

  it("an excluded parameter with zero gradient is left unchanged; a decayed one shrinks", () => {
    const w = Tensor.from([1, -2, 3, 4]), n = Tensor.from([1, -2, 3, 4]);
    const opt = new AdamW(new Map([["a.weight", w], ["model.norm.weight", n]]), { learningRate: 0.1, weightDecay: 0.5 });
    opt.step();
    assert.deepEqual(n.toArray(), [1, -2, 3, 4]);
    assert.deepEqual(w.toArray(), [1, -2, 3, 4].map((x) => Math.fround(x - x * 0.5 * 0.1)));
  });

  it("uses the schedule with the 0-based update index and restores its state", () => {
    const seen: number[] = [];
    const p = Tensor.from([0.5, -0.25, 1]);
    const opt = new AdamW(new Map([["p", p]]), { learningRate: (s) => (seen.push(s), 0.01 * (s + 1)) });
    for (let i = 0; i < 3; i++) {
      p.grad = Tensor.from([0.1 * i, -0.2, 0.3]);
      opt.step();
    }
    assert.deepEqual(seen, [0, 1, 2]);
    const q = p.clone();
    const copy = new AdamW(new Map([["p", q]]), { learningRate: (s) => 0.01 * (s + 1) });
    const st = opt.state();
    copy.loadState({ step: st.step, variant: st.variant, tensors: new Map([...st.tensors].map(([k, t]) => [k, t.clone()])) });
    p.grad = Tensor.from([1, 2, 3]);
    q.grad = Tensor.from([1, 2, 3]);
    opt.step();
    copy.step();
    assert.deepEqual(q.toArray(), p.toArray());
    assert.throws(() => copy.loadState({ ...st, variant: "torch" }), LoratuneError);
  });

  it("clips by global norm as Keras does", () => {
    const a = Tensor.from([3, 0]), b = Tensor.from([0, 4]);
    a.grad = Tensor.from([3, 0]);
    b.grad = Tensor.from([0, 4]);
    assert.equal(clipGradNorm([a, b], 10), 5);
    assert.deepEqual([...a.grad.toArray(), ...b.grad.toArray()], [3, 0, 0, 4]);
    assert.equal(clipGradNorm([a, b], 1), 5);
    assert.ok(Math.abs(globalGradNorm([a, b]) - 1) < 1e-6);
    assert.deepEqual(a.grad.toArray().map((x) => +x.toFixed(6)), [0.6, 0]);
  });

  it("rejects bad settings", () => {
    const m = new Map([["p", Tensor.from([1])]]);
    assert.throws(() => new AdamW(m, { beta1: 1 }), LoratuneError);
    assert.throws(() => new AdamW(m, { learningRate: -1 }), LoratuneError);
    assert.throws(() => new AdamW(m, { variant: "sgd" as never }), LoratuneError);
    assert.throws(() => new AdamW(new Map([["p", Tensor.from([1], [1], "bf16")]])), LoratuneError);
  });
});

describe("learning-rate schedules", () => {
  const close = (a: number, b: number) => assert.ok(Math.abs(a - b) < 1e-12, `${a} vs ${b}`);

  it("constant, with and without warm-up", () => {
    const c = constantSchedule(5e-5);
    for (const s of [0, 1, 999]) close(c(s), 5e-5);
    const w = constantSchedule(1e-3, 4);
    [0.25e-3, 0.5e-3, 0.75e-3, 1e-3, 1e-3, 1e-3].forEach((v, s) => close(w(s), v));
  });

  it("warm-up then cosine decay to the minimum", () => {
    const f = cosineSchedule({ learningRate: 1, totalSteps: 12, warmupSteps: 2, minLearningRate: 0.1 });
    close(f(0), 0.5);
    close(f(1), 1);
    close(f(2), 1);
    close(f(7), 0.1 + 0.9 * 0.5); // halfway through the 10 decay steps
    close(f(12), 0.1);
    close(f(50), 0.1);
    for (let s = 3; s < 12; s++) assert.ok(f(s) < f(s - 1));
  });

  it("warm-up then linear decay", () => {
    const f = linearSchedule({ learningRate: 2, totalSteps: 10 });
    close(f(0), 2);
    close(f(5), 1);
    close(f(9), 0.2);
    close(f(10), 0);
    const g = makeSchedule("linear", { learningRate: 1, totalSteps: 6, warmupSteps: 2, minLearningRate: 0.2 });
    [0.5, 1, 1, 0.8, 0.6, 0.4, 0.2].forEach((v, s) => close(g(s), v));
  });

  it("needs the total steps to decay, and valid numbers", () => {
    assert.throws(() => cosineSchedule({ learningRate: 1 }), LoratuneError);
    assert.throws(() => makeSchedule("step" as never, { learningRate: 1, totalSteps: 3 }), LoratuneError);
    assert.throws(() => makeSchedule("linear", { learningRate: 1, totalSteps: 3, minLearningRate: 2 }), LoratuneError);
  });
});
