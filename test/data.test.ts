import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { Template } from "@huggingface/jinja";
import { LoratuneError } from "../src/errors.js";
import { type DatasetSpec, loadDataset } from "../src/data/dataset.js";
import { describeDataset, formatDescription } from "../src/data/describe.js";
import type { ChatTemplateFn } from "../src/data/formats.js";
import { readRecords } from "../src/data/readers.js";

const workDir = mkdtempSync(join(tmpdir(), "loratune-data-test-"));
after(() => rmSync(workDir, { recursive: true, force: true }));

function writeData(name: string, content: string | Uint8Array): string {
  const file = join(workDir, name);
  writeFileSync(file, content);
  return file;
}

const jsonl = (...records: unknown[]) => records.map((record) => JSON.stringify(record)).join("\n") + "\n";

/** Asserts a LoratuneError whose message starts with `file:line: field: ` and contains `text`. */
function assertDataError(
  run: () => unknown,
  where: { file?: string; line?: number; field?: string },
  text: string | RegExp,
): void {
  assert.throws(run, (error: unknown) => {
    assert.ok(error instanceof LoratuneError, `expected a LoratuneError, got ${String(error)}`);
    const prefix = [where.file && `${where.file}${where.line !== undefined ? `:${where.line}` : ""}`, where.field]
      .filter(Boolean)
      .join(": ");
    assert.ok(error.message.startsWith(prefix), `"${error.message}" should start with "${prefix}"`);
    assert.equal(error.line, where.line);
    assert.equal(error.field, where.field);
    if (typeof text === "string") assert.ok(error.message.includes(text), `"${error.message}" should include "${text}"`);
    else assert.match(error.message, text);
    return true;
  });
}

// Gemma's chat template (tokenizer_config.json of google/gemma-2b-it), rendered with @huggingface/jinja.
const gemmaChatTemplate = new Template(
  "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}" +
    "{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}" +
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}" +
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}" +
    "{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}" +
    "{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}",
);
const renderGemmaChat: ChatTemplateFn = (messages, { addGenerationPrompt }) =>
  gemmaChatTemplate.render({ messages, add_generation_prompt: addGenerationPrompt, bos_token: "<bos>" });

const chatFixture = fileURLToPath(new URL("../../test/fixtures/data/chat-tiny.jsonl", import.meta.url));

describe("built-in dolly, the walkthrough's selection", () => {
  // Loaded once: each load of the 2,500 rows costs ~50 ms.
  const dollyNoContext = loadDataset({ source: "dolly", noContext: true });

  test("the no-context filter keeps 1724 of 2500 rows", () => {
    const { train, eval: held, plan } = dollyNoContext;
    assert.equal(plan.format, "dolly");
    assert.equal(plan.fileFormat, "jsonl");
    assert.equal(plan.rowsRead, 2500);
    assert.deepEqual(plan.steps, [{ name: "no-context", kept: 1724, of: 2500 }]);
    assert.equal(train.length, 1724);
    assert.equal(held.length, 0);
  });

  test("the first example is formatted exactly as the walkthrough's template", () => {
    const [first] = dollyNoContext.train;
    assert.ok(first);
    assert.equal(first.text, "Instruction:\nWhich is a species of fish? Tope or Rope\n\nResponse:\nTope");
    assert.equal(first.prompt, "Instruction:\nWhich is a species of fish? Tope or Rope\n\nResponse:\n");
    assert.equal(first.response, "Tope");
    assert.equal(first.category, "classification");
    assert.equal(first.source.line, 2);
    assert.match(first.source.file, /assets\/data\/dolly\/databricks-dolly-15k\.first2500\.jsonl$/);
  });

  test("limit 1000 takes the first 1000 kept rows", () => {
    const { train, plan } = loadDataset({ source: "dolly", noContext: true, limit: 1000 });
    assert.equal(train.length, 1000);
    assert.deepEqual(plan.steps[1], { name: "limit", detail: "1000", kept: 1000, of: 1724 });
    assert.equal(train[0]!.source.line, 2);
  });

  test("rows with context use the context template when the filter is off", () => {
    const [first] = loadDataset({ source: "dolly", limit: 1 }).train;
    assert.ok(first!.prompt.startsWith("Instruction:\nWhen did Virgin Australia start operating?\n\nContext:\nVirgin Australia,"));
    assert.ok(first!.prompt.endsWith("\n\nResponse:\n"));
  });

  test("shuffling is deterministic for a seed, across runs", () => {
    const spec: DatasetSpec = { source: "dolly", noContext: true, shuffle: true, seed: 2, limit: 1000 };
    const lines = (examples: { source: { line: number } }[]) => examples.map((example) => example.source.line);
    const first = lines(loadDataset(spec).train);
    assert.deepEqual(lines(loadDataset(spec).train), first);
    assert.deepEqual(first.slice(0, 5), [1346, 981, 456, 1453, 803]); // pinned: same order on every run
    assert.notDeepEqual(lines(loadDataset({ ...spec, seed: 3 }).train), first);
    const noContextLines = new Set(lines(dollyNoContext.train));
    assert.equal(new Set(first).size, 1000);
    assert.ok(first.every((line) => noContextLines.has(line)));
  });

  test("the eval split has the asked size, is disjoint from train and is deterministic", () => {
    const spec: DatasetSpec = { source: "dolly", noContext: true, limit: 1000, evalFraction: 0.1, seed: 7 };
    const { train, eval: held, plan } = loadDataset(spec);
    assert.equal(train.length, 900);
    assert.equal(held.length, 100);
    assert.equal(plan.train, 900);
    assert.equal(plan.eval, 100);
    const trainLines = new Set(train.map((example) => example.source.line));
    assert.ok(held.every((example) => !trainLines.has(example.source.line)));
    assert.deepEqual(loadDataset(spec).eval, held);
    assert.notDeepEqual(loadDataset({ ...spec, seed: 8 }).eval, held);
  });

  test("the category filter counts what it kept", () => {
    const { train, plan } = loadDataset({ source: "dolly", noContext: true, categories: ["open_qa", "brainstorming"] });
    assert.ok(train.every((example) => example.category === "open_qa" || example.category === "brainstorming"));
    assert.deepEqual(plan.steps[1], { name: "category", detail: "open_qa,brainstorming", kept: train.length, of: 1724 });
    const file = writeData("categories.jsonl", jsonl({ instruction: "i", response: "r", category: "open_qa" }));
    assertDataError(
      () => loadDataset({ source: file, categories: ["open-qa"] }),
      { file, field: "categories" },
      'no row has category "open-qa"',
    );
  });
});

describe("formats", () => {
  test("alpaca: the built-in set, with and without input, and the no-context filter on input", () => {
    const { train, plan } = loadDataset({ source: "alpaca-llms-from-scratch" });
    assert.equal(plan.format, "alpaca");
    assert.equal(plan.fileFormat, "json");
    assert.equal(train.length, 1100);
    assert.equal(
      train[0]!.prompt,
      "Instruction:\nEvaluate the following phrase by transforming it into the spelling given.\n\nInput:\nfreind --> friend\n\nResponse:\n",
    );
    assert.equal(train[0]!.response, 'The spelling of the given phrase "freind" is incorrect, the correct spelling is "friend".');
    assert.deepEqual(train[0]!.source, { file: plan.file, line: 2, index: 0 });
    assert.equal(train[2]!.text, "Instruction:\nConvert 45 kilometers to meters.\n\nResponse:\n45 kilometers is 45000 meters.");
    assert.equal(train[2]!.source.line, 12);
    assert.equal(loadDataset({ source: "alpaca-llms-from-scratch", noContext: true }).train.length, 775);
  });

  test("auto picks alpaca from the fields; a user template with {field} placeholders and {{ }} braces", () => {
    const file = writeData("custom.jsonl", jsonl({ instruction: "Add", input: "2 3", output: "5", category: "math" }));
    const { train, plan } = loadDataset({ source: file, template: "{{task}} {instruction} ({category}) {input} => {output}." });
    assert.equal(plan.format, "alpaca");
    assert.equal(train[0]!.prompt, "{task} Add (math) 2 3 => ");
    assert.equal(train[0]!.response, "5.");
    assertDataError(() => loadDataset({ source: file, template: "{instruction} {answer} {output}" }), { field: "template" }, "unknown placeholder {answer}");
    assertDataError(() => loadDataset({ source: file, template: "{instruction}" }), { field: "template" }, "exactly one response placeholder");
  });

  test("field mapping lets dolly read other names", () => {
    const file = writeData("qa.jsonl", jsonl({ question: "1+1?", answer: "2" }));
    const [example] = loadDataset({ source: file, format: "dolly", fields: { instruction: "question", response: "answer" } }).train;
    assert.equal(example!.text, "Instruction:\n1+1?\n\nResponse:\n2");
  });

  test("messages: chat template rendering, prompt up to the last assistant turn, ShareGPT", () => {
    const { train, plan } = loadDataset({ source: chatFixture, chatTemplate: renderGemmaChat });
    assert.equal(plan.format, "messages");
    assert.equal(train.length, 3);
    assert.equal(train[0]!.prompt, "<bos><start_of_turn>user\nWhat is LoRA?<end_of_turn>\n<start_of_turn>model\n");
    assert.equal(
      train[0]!.response,
      "A way to fine-tune a model by training small low-rank matrices added to frozen weights.<end_of_turn>\n",
    );
    assert.equal(
      train[1]!.prompt,
      "<bos><start_of_turn>user\nName a prime number.<end_of_turn>\n<start_of_turn>model\n7<end_of_turn>\n" +
        "<start_of_turn>user\nAnother one?<end_of_turn>\n<start_of_turn>model\n",
    );
    assert.equal(train[1]!.response, "11<end_of_turn>\n");
    // The ShareGPT record's trailing user turn has nothing to learn and is dropped.
    assert.deepEqual(train[2]!.messages, [
      { role: "user", content: "Say hello in French." },
      { role: "assistant", content: "Bonjour." },
    ]);
    assert.equal(train[2]!.text, train[2]!.prompt + "Bonjour.<end_of_turn>\n");
    assertDataError(() => loadDataset({ source: chatFixture }), { file: chatFixture }, "needs a chat template");
  });

  test("messages: a bad role or a failing template names the message", () => {
    const file = writeData("chat-bad.jsonl", jsonl({ messages: [{ role: "user", content: "hi" }, { role: "bot", content: "yo" }] }));
    assertDataError(() => loadDataset({ source: file, chatTemplate: renderGemmaChat }), { file, line: 1, field: "messages[1].role" }, 'unknown role "bot"');
    const system = writeData("chat-system.jsonl", jsonl({ messages: [{ role: "system", content: "be brief" }, { role: "assistant", content: "ok" }] }));
    assertDataError(() => loadDataset({ source: system, chatTemplate: renderGemmaChat }), { file: system, line: 1, field: "messages" }, "System role not supported");
  });

  test("text: all of it is the response", () => {
    const file = writeData("text.jsonl", jsonl({ text: "To be, or not to be" }));
    const [example] = loadDataset({ source: file }).train;
    assert.deepEqual({ prompt: example!.prompt, response: example!.response }, { prompt: "", response: "To be, or not to be" });
  });

  test("CSV: quoted fields with commas, quotes and newlines; dolly picked from the header", () => {
    const file = writeData(
      "quoted.csv",
      'instruction,context,response,category\r\n' +
        '"Say ""hi"", twice","","hi, hi",open_qa\r\n' +
        '"Write two lines","","line one\r\nline two",creative_writing\r\n' +
        "Plain,,plain answer,open_qa\r\n",
    );
    const { train, plan } = loadDataset({ source: file });
    assert.equal(plan.fileFormat, "csv");
    assert.equal(plan.format, "dolly");
    assert.equal(train[0]!.text, 'Instruction:\nSay "hi", twice\n\nResponse:\nhi, hi');
    assert.equal(train[1]!.response, "line one\r\nline two");
    assert.deepEqual(train.map((example) => example.source.line), [2, 3, 5]);
  });
});

describe("errors name the file, line and field", () => {
  const row = { instruction: "i", context: "", response: "r", category: "c" };

  test("invalid JSON on line N", () => {
    const file = writeData("invalid.jsonl", `${JSON.stringify(row)}\n\n{"instruction": "i",}\n`);
    assertDataError(() => loadDataset({ source: file }), { file, line: 3 }, "invalid JSON");
  });

  test("a missing field", () => {
    const file = writeData("missing.jsonl", jsonl(row, { instruction: "i", context: "" }));
    assertDataError(() => loadDataset({ source: file, format: "dolly" }), { file, line: 2, field: "response" }, "missing (the record has: instruction, context)");
  });

  test("a non-string field", () => {
    const file = writeData("number.jsonl", jsonl({ ...row, response: 42 }));
    assertDataError(() => loadDataset({ source: file }), { file, line: 1, field: "response" }, "expected a string, got a number");
  });

  test("a JSON array names the record index and its line", () => {
    const file = writeData("array.json", JSON.stringify([row, { ...row, instruction: null }], null, 2));
    assertDataError(() => loadDataset({ source: file }), { file, line: 8, field: "instruction" }, "expected a string, got null (record index 1)");
    const broken = writeData("broken.json", '[\n  {"instruction": "i", "response": "r"},\n  {"instruction": "i" "response": "r"}\n]');
    assertDataError(() => loadDataset({ source: broken }), { file: broken, line: 3 }, "invalid JSON in record index 1");
  });

  test("non-UTF-8 bytes", () => {
    const file = writeData(
      "latin1.jsonl",
      Buffer.concat([Buffer.from(jsonl(row)), Buffer.from('{"instruction": "caf'), Buffer.from([0xe9]), Buffer.from('", "response": "r"}\n')]),
    );
    assertDataError(() => loadDataset({ source: file }), { file, line: 2 }, "not valid UTF-8");
  });

  test("a CSV missing a column, and a CSV row with the wrong number of fields", () => {
    const missing = writeData("missing.csv", "instruction,context\nhello,\n");
    assertDataError(() => loadDataset({ source: missing, format: "dolly" }), { file: missing, line: 1, field: "response" }, "column is missing from the header");
    const ragged = writeData("ragged.csv", 'instruction,response\na,b\n"c\nd",e,f\n');
    assertDataError(() => loadDataset({ source: ragged }), { file: ragged, line: 3 }, "the row has 3 fields but the header has 2");
    const unclosed = writeData("unclosed.csv", 'instruction,response\na,"b\n');
    assertDataError(() => readRecords(unclosed), { file: unclosed, line: 2 }, "never closed");
  });

  test("an empty file", () => {
    const file = writeData("empty.jsonl", "\n\n");
    assertDataError(() => loadDataset({ source: file }), { file }, "the file is empty");
  });

  test("a filter that leaves nothing says which", () => {
    const file = writeData("all-context.jsonl", jsonl({ ...row, context: "some" }, { ...row, context: " x " }));
    assertDataError(() => loadDataset({ source: file, noContext: true }), { file }, "0 of 2 rows left after filter no-context");
  });

  test("no such file or built-in dataset", () => {
    assertDataError(() => loadDataset({ source: "no-such-data" }), { file: "no-such-data" }, "no such file or built-in dataset");
  });
});

test("skipBadRows counts and skips the bad rows", () => {
  const good = { instruction: "i", response: "r" };
  const file = writeData("some-bad.jsonl", [JSON.stringify(good), "{oops", JSON.stringify({ instruction: "i" }), JSON.stringify(good), "[1]"].join("\n"));
  assertDataError(() => loadDataset({ source: file }), { file, line: 2 }, "invalid JSON");
  const { train, plan } = loadDataset({ source: file, skipBadRows: true });
  assert.equal(plan.rowsRead, 5);
  assert.equal(plan.skippedBadRows, 3);
  assert.equal(train.length, 2);
  assert.deepEqual(train.map((example) => example.source.line), [1, 4]);
  assert.equal(plan.badRowErrors.length, 3);
  assert.ok(plan.badRowErrors.some((message) => /some-bad\.jsonl:3: response: missing/.test(message)));
  const allBad = writeData("all-bad.jsonl", "{oops\n");
  assertDataError(() => loadDataset({ source: allBad, skipBadRows: true }), { file: allBad }, "0 of 1 rows left after skipping bad rows");
});

test("describeDataset: counts, token lengths with a whitespace encoder, samples", () => {
  const responses = ["a", "a b", "a b c", "a b c d e f g h i j"];
  const file = writeData(
    "describe.jsonl",
    jsonl(...responses.map((response, k) => ({ instruction: "do it", context: k === 3 ? "ctx" : "", response, category: k % 2 ? "odd" : "even" }))),
  );
  const dataset = loadDataset({ source: file, noContext: true });
  const encode = (text: string) => text.split(/\s+/).filter(Boolean).map(() => 0);
  const description = describeDataset(dataset, { encode, sample: 2, seqLen: 7 });
  // "Instruction: do it Response:" is 4 tokens, plus the response's words.
  assert.deepEqual(description.tokens, { examples: 3, total: 18, min: 5, median: 6, mean: 6, p95: 7, max: 7, seqLen: 7, overSeqLen: 0 });
  assert.deepEqual(description.categories, [
    { category: "even", count: 2 },
    { category: "odd", count: 1 },
  ]);
  assert.equal(description.samples.length, 2);
  const report = formatDescription(description);
  assert.match(report, /filter no-context\s+3 of 4 kept/);
  assert.match(report, /min 5, median 6, mean 6\.0, p95 7, max 7/);
  assert.match(report, /0 of 3 longer than seq len 7/);
  assert.match(report, /Example 2 of 3 \(.*describe\.jsonl:2\):\n {4}Instruction:\n {4}do it\n/);
  assert.equal(describeDataset(dataset, {}).tokens, undefined);
});
