// Generation: length limits, stop tokens and strings, streaming, batches, and the samplers.
import assert from "node:assert/strict";
import path from "node:path";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { TextGenerator } from "../src/generation/generate.js";
import { Random } from "../src/generation/random.js";
import { GreedySampler, RandomSampler, TopKSampler, TopPSampler } from "../src/generation/samplers.js";
import { loadModelDir } from "../src/models/load.js";
import { charTokenizer } from "./training-fixtures.js";

const dir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../test/fixtures/gemma-tiny-std0.2");
const { model } = loadModelDir(dir);
const generator = new TextGenerator(model, charTokenizer);

describe("generation", () => {
  it("maxLength counts the prompt; maxNewTokens only new tokens; the tighter one wins", () => {
    const prompt = { ids: [2, 111, 377] };
    assert.equal(generator.generate(prompt, { sampler: "greedy", maxLength: 9, stopTokenIds: [] }).ids.length, 9);
    assert.equal(generator.generate(prompt, { sampler: "greedy", maxNewTokens: 4, stopTokenIds: [] }).newIds.length, 4);
    assert.equal(generator.generate(prompt, { sampler: "greedy", maxLength: 6, maxNewTokens: 10, stopTokenIds: [] }).newIds.length, 3);
  });

  it("stops at a stop token and says why", () => {
    const free = generator.generate({ ids: [2, 111, 377] }, { sampler: "greedy", maxNewTokens: 8, stopTokenIds: [] });
    const stopAt = free.newIds[3]!;
    const g = generator.generate({ ids: [2, 111, 377] }, { sampler: "greedy", maxNewTokens: 8, stopTokenIds: [stopAt] });
    assert.equal(g.finishReason, "eos");
    assert.deepEqual(g.newIds, free.newIds.slice(0, free.newIds.indexOf(stopAt) + 1));
  });

  it("stops at a stop string and cuts the completion before it", () => {
    const free = generator.generate("ab", { sampler: "greedy", maxNewTokens: 12, stopTokenIds: [] });
    const stop = free.completion.slice(4, 6);
    const g = generator.generate("ab", { sampler: "greedy", maxNewTokens: 12, stopTokenIds: [], stopStrings: [stop] });
    assert.equal(g.finishReason, "stop_string");
    assert.equal(g.completion, free.completion.slice(0, free.completion.indexOf(stop)));
    assert.equal(g.text, "ab" + g.completion);
  });

  it("streams the same tokens generate() chooses, and the same text", async () => {
    const options = { sampler: new TopKSampler(5), seed: 2, maxNewTokens: 10, stopTokenIds: [] };
    const expected = generator.generate("hello", options);
    const ids: number[] = [];
    let text = "";
    for await (const chunk of generator.stream("hello", options)) {
      ids.push(chunk.id);
      text += chunk.text;
    }
    assert.deepEqual(ids, expected.newIds);
    assert.equal(text, expected.completion);
  });

  it("a batch of prompts gives what each prompt gives alone", () => {
    const options = { sampler: "greedy" as const, maxNewTokens: 5, stopTokenIds: [] };
    const batch = generator.generate([{ ids: [2, 5, 6] }, { ids: [2, 100] }], options);
    assert.deepEqual(batch.map((g) => g.newIds), [
      generator.generate({ ids: [2, 5, 6] }, options).newIds,
      generator.generate({ ids: [2, 100] }, options).newIds,
    ]);
  });

  it("refuses an empty prompt and ids outside the vocabulary", () => {
    assert.throws(() => generator.generate(""), /the prompt is empty/);
    assert.throws(() => generator.generate({ ids: [] }), /no token ids/);
    assert.throws(() => generator.generate({ ids: [2, 512] }), /token id 512 at position 1 is outside the vocabulary/);
    assert.throws(() => generator.generate({ ids: [2, -1] }), /token id -1/);
  });
});

describe("samplers", () => {
  const logits = Float32Array.from([0.1, 3, -1, 2.5, 2.9, -5, 0]);

  it("greedy takes the largest logit", () => {
    assert.equal(new GreedySampler().next(logits), 1);
  });

  it("top-k draws only among the k largest, in proportion to their probabilities", () => {
    const rng = new Random(1);
    const sampler = new TopKSampler(3);
    const counts = new Map<number, number>();
    for (let i = 0; i < 20000; i++) {
      const id = sampler.next(logits, rng);
      counts.set(id, (counts.get(id) ?? 0) + 1);
    }
    assert.deepEqual([...counts.keys()].sort(), [1, 3, 4]);
    const z = Math.exp(3) + Math.exp(2.5) + Math.exp(2.9);
    assert.ok(Math.abs(counts.get(1)! / 20000 - Math.exp(3) / z) < 0.015);
  });

  it("top-p keeps the smallest set whose probability reaches p", () => {
    const rng = new Random(3);
    const probs = Array.from(logits, (x) => Math.exp(x));
    const total = probs.reduce((a, b) => a + b, 0);
    // p just above the top token's probability needs the second one too, and no more.
    const p = probs[1]! / total + 0.01;
    const seen = new Set<number>();
    for (let i = 0; i < 5000; i++) seen.add(new TopPSampler(p).next(logits, rng));
    assert.deepEqual([...seen].sort(), [1, 4]);
  });

  it("the same seed gives the same draws; temperature near 0 is greedy", () => {
    const draw = (seed: number) => {
      const rng = new Random(seed);
      return Array.from({ length: 50 }, () => new RandomSampler().next(logits, rng));
    };
    assert.deepEqual(draw(7), draw(7));
    assert.notDeepEqual(draw(7), draw(8));
    const rng = new Random(0);
    for (let i = 0; i < 100; i++) assert.equal(new TopKSampler(7, 1e-3).next(logits, rng), 1);
  });

  it("rejects bad settings", () => {
    assert.throws(() => new TopKSampler(0), /k >= 1/);
    assert.throws(() => new TopPSampler(1.5), /0 < p <= 1/);
    assert.throws(() => new RandomSampler(0), /temperature must be > 0/);
  });
});
