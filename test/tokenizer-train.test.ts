import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { after, describe, test } from "node:test";
import { LoratuneError } from "../src/errors.js";
import { Tokenizer } from "../src/tokenizer/tokenizer.js";
import { saveTokenizer, trainBpeTokenizer } from "../src/tokenizer/train.js";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
// The first 200 KB keeps training well under a second.
const shakespeare = fs.readFileSync(path.join(root, "assets/data/text/tinyshakespeare.txt"), "utf8").slice(0, 200_000);
const corpus = shakespeare.split("\n\n");
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "loratune-tokenizer-train-"));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

const trained = trainBpeTokenizer(corpus, { vocabSize: 1024 });
saveTokenizer(tmp, trained);
const tokenizer = Tokenizer.fromDir(tmp);

describe("trained byte-level BPE tokenizer", () => {
  test("writes both files and no temporary ones", () => {
    assert.deepEqual(fs.readdirSync(tmp).sort(), ["tokenizer.json", "tokenizer_config.json"]);
  });

  test("has the asked vocabulary size and Gemma's special-token ids", () => {
    assert.equal(tokenizer.vocabSize, 1024);
    assert.deepEqual([tokenizer.padId, tokenizer.eosId, tokenizer.bosId], [0, 1, 2]);
    assert.equal(tokenizer.idToToken(3), "<unk>");
  });

  test("encode prepends BOS (id 2) unless told not to", () => {
    const ids = tokenizer.encode("To be, or not to be");
    assert.equal(ids[0], 2);
    assert.deepEqual(tokenizer.encode("To be, or not to be", { addBos: false }), ids.slice(1));
    assert.ok(!ids.slice(1).includes(2));
  });

  test("decode(encode(s)) returns s exactly", () => {
    const samples = [
      "First Citizen:\nBefore we proceed any further, hear me speak.",
      "It's a test , isn't it ? 'Tis. 12345 + 3.14 = x_y",
      "café naïve façade — résumé",
      "日本語のテキスト and 中文",
      "emoji: 😀👍🏽 🇫🇷 and ZWJ 👩‍👩‍👧",
      "   leading spaces\n\n\n\ttabs\t\t and trailing   \n",
      "\n",
      " ",
    ];
    for (const s of samples) assert.equal(tokenizer.decode(tokenizer.encode(s)), s, JSON.stringify(s));
  });

  test("special-token text in the input becomes the special token, as with Gemma", () => {
    const ids = tokenizer.encode("end<eos>", { addBos: false });
    assert.equal(ids.at(-1), 1);
    assert.equal(tokenizer.decode(ids, { skipSpecial: false }), "end<eos>");
    assert.equal(tokenizer.decode(ids), "end");
  });

  test("compresses Shakespeare to more than 2.5 bytes per token", () => {
    const text = shakespeare.slice(0, 20_000);
    const bytesPerToken = Buffer.byteLength(text) / tokenizer.encode(text, { addBos: false }).length;
    assert.ok(bytesPerToken > 2.5, `bytes/token ${bytesPerToken.toFixed(2)}`);
  });

  test("training is deterministic", () => {
    const again = trainBpeTokenizer(corpus, { vocabSize: 1024 });
    assert.equal(JSON.stringify(again.tokenizerJson), JSON.stringify(trained.tokenizerJson));
    assert.equal(JSON.stringify(again.tokenizerConfig), JSON.stringify(trained.tokenizerConfig));
  });

  test("stops early when no pair reaches the minimum frequency", () => {
    const small = trainBpeTokenizer(["abab abab"], { vocabSize: 1024, minFrequency: 2 });
    const vocab = (small.tokenizerJson as { model: { vocab: Record<string, number> } }).model.vocab;
    assert.ok(Object.keys(vocab).length < 1024);
    assert.equal(vocab["abab"] !== undefined, true);
  });

  test("rejects a vocabulary smaller than the special and byte tokens", () => {
    assert.throws(() => trainBpeTokenizer(corpus, { vocabSize: 100 }), LoratuneError);
    assert.throws(() => trainBpeTokenizer(corpus, { minFrequency: 0 }), LoratuneError);
  });
});
