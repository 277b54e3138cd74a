// Small helpers shared by the test files. (No tests here.)
import assert from "node:assert/strict";

/** A small seeded generator (mulberry32) of floats in [0, 1), so that test inputs are the same on every run. */
export function uniform(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length, "lengths differ");
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

export function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]!));
  return m;
}

/** A six-word tokenizer.json (WordLevel, Gemma's special ids 0-2), for tests that need any tokenizer. */
export const WORD_TOKENIZER = {
  version: "1.0",
  added_tokens: ["<pad>", "<eos>", "<bos>"].map((content, id) => ({
    id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true,
  })),
  normalizer: null,
  pre_tokenizer: { type: "Whitespace" },
  post_processor: null,
  decoder: null,
  model: { type: "WordLevel", vocab: { "<pad>": 0, "<eos>": 1, "<bos>": 2, hello: 3, world: 4, "[UNK]": 5 }, unk_token: "[UNK]" },
};
