// Gemma numerics against Google's reference implementation (test/fixtures/gemma-tiny*, made with
// gemma_pytorch): hidden states, logits, loss, greedy decoding with the cache, LoRA gradients.
import assert from "node:assert/strict";
import path from "node:path";
import { describe, it } from "node:test";
import fs from "node:fs";
import { fileURLToPath } from "node:url";
import { lmHeadCrossEntropy } from "../src/autograd/ops.js";
import { record } from "../src/autograd/tape.js";
import { TextGenerator } from "../src/generation/generate.js";
import { SafetensorsFile } from "../src/io/safetensors.js";
import type { GemmaModel } from "../src/models/gemma.js";
import { loadModelDir } from "../src/models/load.js";
import { Tensor } from "../src/tensor.js";
import { maxAbs, maxAbsDiff } from "./helpers.js";

const fixtures = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../test/fixtures");



class Golden {
  private file: SafetensorsFile;
  constructor(dir: string) {
    this.file = SafetensorsFile.open(path.join(dir, "golden.safetensors"));
  }
  f32(name: string): Float32Array {
    return this.file.read(name, "f32").f32;
  }
  i32(name: string): Int32Array {
    return this.file.read(name, "i32").i32;
  }
  has(name: string): boolean {
    return this.file.tensors.has(name);
  }
}

for (const fixture of ["gemma-tiny", "gemma-tiny-std0.2"]) {
  describe(`Gemma vs gemma_pytorch (${fixture})`, () => {
    const dir = path.join(fixtures, fixture);
    const golden = new Golden(dir);
    const results = JSON.parse(fs.readFileSync(path.join(dir, "golden.json"), "utf8")).results;
    const { model } = loadModelDir(dir);
    const gemma = model as GemmaModel;
    const { vocabSize: V, hiddenSize: H } = model.config;
    const ids = golden.i32("input_ids");
    const mask = golden.i32("attention_mask");
    const T = 12;
    const rows = [0, 1].map((b) => {
      const valid = Array.from(mask.subarray(b * T, (b + 1) * T)).filter((m) => m === 1).length;
      return { b, valid, ids: ids.slice(b * T, b * T + valid) };
    });

    /** Golden [2, 12, width] values of row b at its valid positions. */
    const goldenRow = (name: string, b: number, valid: number, width: number) =>
      golden.f32(name).subarray(b * T * width, (b * T + valid) * width);

    it("matches the hidden states of every layer, with and without the padded row", () => {
      for (const { b, valid, ids: rowIds } of rows) {
        const seen = new Map<string, Float32Array>();
        model.forward(rowIds, { observe: (name, h) => seen.set(name, h.f32.slice()) });
        for (const name of ["embed_scaled", "layer0_out", "layer1_out", "final_norm_out"]) {
          const d = maxAbsDiff(seen.get(name)!, goldenRow(`hidden_states.${name}`, b, valid, H));
          assert.ok(d < 1e-4, `row ${b} ${name}: max |diff| ${d}`);
        }
      }
    });

    it("matches the logits within 1e-4 and the loss within 1e-5", () => {
      let nllSum = 0;
      let count = 0;
      for (const { b, valid, ids: rowIds } of rows) {
        const h = model.forward(rowIds);
        const logits = new Float32Array(valid * V);
        for (let t = 0; t < valid; t++) {
          for (let v = 0; v < V; v++) {
            let s = 0;
            for (let d = 0; d < H; d++) s += h.f32[t * H + d]! * model.lmHead.f32[v * H + d]!;
            logits[t * V + v] = s;
          }
        }
        const d = maxAbsDiff(logits, goldenRow("logits", b, valid, V));
        assert.ok(d < 1e-4, `row ${b} logits: max |diff| ${d}`);
        const targets = Int32Array.from(rowIds, (_, t) => (t + 1 < valid ? rowIds[t + 1]! : -1));
        const { loss, count: n } = lmHeadCrossEntropy(h, model.lmHead, targets);
        nllSum += loss.f32[0]! * n;
        count += n;
      }
      assert.equal(count, 18);
      assert.ok(Math.abs(nllSum / count - results.loss) < 1e-5, `loss ${nllSum / count} vs ${results.loss}`);
    });

    it("decodes greedily with the cache exactly as the reference, step logits within 1e-4", () => {
      const prompt = Array.from(golden.i32("greedy.prompt_ids"));
      const expected = Array.from(golden.i32("greedy.tokens"));
      const g = new TextGenerator(model).generate({ ids: prompt }, { sampler: "greedy", maxNewTokens: 16, stopTokenIds: [] });
      assert.deepEqual(g.newIds, expected);
      // Step logits: prefill, then one token at a time through the cache.
      const stepLogits = golden.f32("greedy.step_logits");
      const cache = model.newCache(32);
      let input = Int32Array.from(prompt);
      for (let j = 0; j < 16; j++) {
        const h = model.forward(input, { cache });
        const last = h.f32.subarray((input.length - 1) * H);
        const logits = new Float32Array(V);
        for (let v = 0; v < V; v++) {
          let s = 0;
          for (let d = 0; d < H; d++) s += last[d]! * model.lmHead.f32[v * H + d]!;
          logits[v] = s;
        }
        const d = maxAbsDiff(logits, stepLogits.subarray(j * V, (j + 1) * V));
        assert.ok(d < 1e-4, `step ${j}: max |diff| ${d}`);
        input = Int32Array.of(expected[j]!);
      }
    });

    it("gives the reference LoRA gradients (rank 4 on q and v, both layers)", () => {
      const targets = gemma.blocks.flatMap((blk, i) => [
        [`model.layers.${i}.self_attn.q_proj`, blk.q] as const,
        [`model.layers.${i}.self_attn.v_proj`, blk.v] as const,
      ]);
      for (const [name, lin] of targets) {
        const A = Tensor.from(golden.f32(`lora.init.${name}.lora_A.weight`), [4, lin.inFeatures]);
        const B = Tensor.from(golden.f32(`lora.init.${name}.lora_B.weight`), [lin.outFeatures, 4]);
        A.requiresGrad = B.requiresGrad = true;
        lin.lora = { A, B, scale: 1, groups: 1 };
      }
      try {
        let nllSum = 0;
        for (const { ids: rowIds, valid } of rows) {
          const targetIds = Int32Array.from(rowIds, (_, t) => (t + 1 < valid ? rowIds[t + 1]! : -1));
          const { result, tape } = record(() => lmHeadCrossEntropy(model.forward(rowIds), model.lmHead, targetIds));
          nllSum += result.loss.f32[0]! * result.count;
          tape.backward(result.loss, result.count / 18);
        }
        assert.ok(Math.abs(nllSum / 18 - results.lora_loss) < 1e-5, `LoRA loss ${nllSum / 18} vs ${results.lora_loss}`);
        for (const [name, lin] of targets) {
          for (const [part, t] of [["lora_A", lin.lora!.A], ["lora_B", lin.lora!.B]] as const) {
            const expected = golden.f32(`lora.grad.${name}.${part}.weight`);
            const d = maxAbsDiff(t.grad!.f32, expected);
            assert.ok(d <= 1e-3 * maxAbs(expected), `${name}.${part}: max |diff| ${d} vs max |g| ${maxAbs(expected)}`);
          }
        }
      } finally {
        for (const [, lin] of targets) lin.lora = null;
      }
    });
  });
}
