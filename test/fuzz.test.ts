// Property-based fuzzing of the parsers: random and mutated inputs must either load or throw a
// LoratuneError (never a TypeError, RangeError, ... nor a crash or hang), each case within a time bound.
// Seeds are fixed so the runs are deterministic.
import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { after, describe, test } from "node:test";
import fc from "fast-check";
import { LoratuneError } from "../src/errors.js";
import { SafetensorsFile, writeSafetensors } from "../src/io/safetensors.js";
import { Tensor } from "../src/tensor.js";
import { parseRecords, type FileFormat } from "../src/data/readers.js";
import { loadDataset } from "../src/data/dataset.js";
import type { ChatMessage, FormatChoice } from "../src/data/formats.js";
import { expectedWeightShapes, parseConfig } from "../src/models/config.js";

const SEED = 42;
const CASE_MS = 200;

const SAFETENSORS_RUNS = 500;
const DATASET_RUNS = 300;
const CONFIG_RUNS = 500;

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "loratune-fuzz-"));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

let counter = 0;
function tempFile(extension: string): string {
  return path.join(tmp, `case-${counter++}${extension}`);
}

/**
 * Runs one case: it may return or throw a LoratuneError; any other exception fails the property
 * (with the original stack in the message), and so does taking CASE_MS or longer.
 */
function loadsOrLoratuneError(what: string, run: () => void): "loaded" | "rejected" {
  const start = performance.now();
  let outcome: "loaded" | "rejected" = "loaded";
  try {
    run();
  } catch (error) {
    outcome = "rejected";
    if (!(error instanceof LoratuneError)) {
      const detail = error instanceof Error ? (error.stack ?? `${error.name}: ${error.message}`) : String(error);
      assert.fail(`${what} threw a non-LoratuneError: ${detail}`);
    }
  }
  const elapsed = performance.now() - start;
  assert.ok(elapsed < CASE_MS, `${what} took ${elapsed.toFixed(1)} ms (limit ${CASE_MS} ms)`);
  return outcome;
}

/** Counts outcomes, so a test can check that its generator reaches both (it is not degenerate). */
function tally(): { loaded: number; rejected: number; add(o: "loaded" | "rejected"): void; check(): void } {
  return {
    loaded: 0,
    rejected: 0,
    add(o) {
      this[o]++;
    },
    check() {
      assert.ok(this.loaded > 0 && this.rejected > 0, `degenerate generator: ${this.loaded} loaded, ${this.rejected} rejected`);
    },
  };
}

// ---------------------------------------------------------------------------------------------
// 1. Safetensors reader
// ---------------------------------------------------------------------------------------------

/** A valid file with a couple of small f32 and bf16 tensors, plus metadata. */
function validSafetensorsBytes(): Uint8Array {
  const file = tempFile(".safetensors");
  writeSafetensors(
    file,
    {
      "a.weight": Tensor.from([1, -2, 3.5, 0, 1e-3, -1e30], [2, 3], "f32"),
      "b.bias": Tensor.from([0.5, -0.25, 8], [3], "bf16"),
      "c.scalar": Tensor.from([7], [], "f32"),
    },
    { format: "pt" },
  );
  const bytes = new Uint8Array(fs.readFileSync(file));
  fs.rmSync(file);
  return bytes;
}

function headerParts(bytes: Uint8Array): { header: Record<string, unknown>; data: Uint8Array } {
  const length = Number(Buffer.from(bytes).readBigUInt64LE(0));
  const header = JSON.parse(Buffer.from(bytes.subarray(8, 8 + length)).toString("utf8")) as Record<string, unknown>;
  return { header, data: bytes.subarray(8 + length) };
}

function assemble(headerText: string | Uint8Array, data: Uint8Array, headerLength?: bigint): Uint8Array {
  const json = typeof headerText === "string" ? Buffer.from(headerText, "utf8") : Buffer.from(headerText);
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(headerLength ?? BigInt(json.length));
  return new Uint8Array(Buffer.concat([length, json, data]));
}

type Mutation = (bytes: Uint8Array) => Uint8Array;

function safetensorsMutations(base: Uint8Array): fc.Arbitrary<{ label: string; mutate: Mutation }> {
  const { header, data } = headerParts(base);
  const tensorNames = Object.keys(header).filter((n) => n !== "__metadata__");
  const n = base.length;

  const flips = fc
    .array(fc.record({ at: fc.nat({ max: n - 1 }), value: fc.integer({ min: 0, max: 255 }) }), { minLength: 1, maxLength: 8 })
    .map((edits) => ({
      label: `flip ${JSON.stringify(edits)}`,
      mutate: (b: Uint8Array) => {
        const out = b.slice();
        for (const { at, value } of edits) out[at] = value;
        return out;
      },
    }));
  const truncate = fc.nat({ max: n - 1 }).map((length) => ({
    label: `truncate to ${length}`,
    mutate: (b: Uint8Array) => b.slice(0, length),
  }));
  const headerLength = fc
    .oneof(fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }), fc.bigInt({ min: 0n, max: BigInt(n + 16) }))
    .map((value) => ({
      label: `header length ${value}`,
      mutate: (b: Uint8Array) => {
        const out = b.slice();
        Buffer.from(out.buffer, out.byteOffset, out.byteLength).writeBigUInt64LE(value, 0);
        return out;
      },
    }));
  const randomJsonHeader = fc.json().map((text) => ({
    label: `header ${text}`,
    mutate: () => assemble(text, data),
  }));
  const randomStringHeader = fc.string({ unit: "binary", maxLength: 64 }).map((text) => ({
    label: `header string ${JSON.stringify(text)}`,
    mutate: () => assemble(text, data),
  }));
  const randomBytesHeader = fc.uint8Array({ maxLength: 64 }).map((bytes) => ({
    label: `header bytes ${Buffer.from(bytes).toString("hex")}`,
    mutate: () => assemble(bytes, data),
  }));
  // A structurally valid header with one field of one entry replaced by a random JSON value:
  // reaches the entry validation (dtype, shape, offsets) instead of stopping at JSON parsing.
  const interestingNumber = fc.oneof(
    fc.integer({ min: -4, max: 64 }),
    fc.constantFrom(2 ** 31, 2 ** 32, 2 ** 53 - 1, 2 ** 53, 1e300, -0, 0.5),
  );
  const fieldValue = fc.oneof(
    fc.jsonValue(),
    interestingNumber,
    fc.array(interestingNumber, { maxLength: 4 }),
    fc.constantFrom("F32", "BF16", "F16", "I64", "I32", "U8", "BOOL", "F8_E4M3", "F64", "bogus"),
  );
  const entryField = fc
    .record({
      name: fc.constantFrom(...tensorNames, "__metadata__", "extra"),
      field: fc.constantFrom("dtype", "shape", "data_offsets", "format", "__delete__"),
      value: fieldValue,
    })
    .map(({ name, field, value }) => ({
      label: `header ${name}.${field} = ${JSON.stringify(value)}`,
      mutate: () => {
        const h = structuredClone(header);
        const entry = (typeof h[name] === "object" && h[name] !== null ? h[name] : (h[name] = {})) as Record<string, unknown>;
        if (field === "__delete__") delete h[name];
        else entry[field] = value;
        return assemble(JSON.stringify(h), data);
      },
    }));
  const wholeEntry = fc.record({ name: fc.constantFrom(...tensorNames, "__metadata__"), value: fc.jsonValue() }).map(({ name, value }) => ({
    label: `header ${name} = ${JSON.stringify(value)}`,
    mutate: () => assemble(JSON.stringify({ ...header, [name]: value }), data),
  }));
  const appendJunk = fc.uint8Array({ minLength: 1, maxLength: 64 }).map((junk) => ({
    label: `append ${Buffer.from(junk).toString("hex")}`,
    mutate: (b: Uint8Array) => new Uint8Array(Buffer.concat([b, junk])),
  }));

  const one = fc.oneof(flips, truncate, headerLength, randomJsonHeader, randomStringHeader, randomBytesHeader, entryField, wholeEntry, appendJunk);
  // Sometimes two mutations in a row (e.g. a new header, then a truncation).
  return fc.oneof(
    { arbitrary: one, weight: 3 },
    {
      arbitrary: fc.tuple(one, one).map(([a, b]) => ({ label: `${a.label}; then ${b.label}`, mutate: (x: Uint8Array) => b.mutate(a.mutate(x)) })),
      weight: 1,
    },
  );
}

describe("fuzz: safetensors reader", () => {
  const base = validSafetensorsBytes();

  test("safetensors reader: the unmutated file loads", () => {
    const file = tempFile(".safetensors");
    fs.writeFileSync(file, base);
    const st = SafetensorsFile.open(file);
    try {
      assert.deepEqual(st.names().sort(), ["a.weight", "b.bias", "c.scalar"]);
      for (const name of st.names()) st.read(name, "f32");
    } finally {
      st.close();
    }
  });

  test(`safetensors reader: ${SAFETENSORS_RUNS} mutated files load or throw LoratuneError`, () => {
    let runs = 0;
    const outcomes = tally();
    fc.assert(
      fc.property(safetensorsMutations(base), ({ label, mutate }) => {
        runs++;
        const file = tempFile(".safetensors");
        fs.writeFileSync(file, mutate(base));
        try {
          outcomes.add(loadsOrLoratuneError(`safetensors (${label})`, () => {
            const st = SafetensorsFile.open(file);
            try {
              for (const name of st.names()) {
                const t = st.read(name, "f32");
                assert.equal(t.dtype, "f32");
                assert.deepEqual(t.shape, st.info(name).shape);
              }
            } finally {
              st.close();
            }
          }));
        } finally {
          fs.rmSync(file, { force: true });
        }
      }),
      { seed: SEED, numRuns: SAFETENSORS_RUNS },
    );
    assert.equal(runs, SAFETENSORS_RUNS);
    outcomes.check();
  });
});

// ---------------------------------------------------------------------------------------------
// 2. Dataset readers
// ---------------------------------------------------------------------------------------------

const fieldValue = fc.oneof(
  { arbitrary: fc.string({ maxLength: 20 }), weight: 4 },
  { arbitrary: fc.constantFrom("", "  ", "general_qa", "open_qa", "{response}", "{instruction}"), weight: 1 },
  { arbitrary: fc.jsonValue({ maxDepth: 2 }), weight: 2 },
);

const recordObject = fc.record(
  {
    instruction: fieldValue,
    context: fieldValue,
    response: fieldValue,
    category: fieldValue,
    output: fieldValue,
    input: fieldValue,
    text: fieldValue,
    messages: fc.oneof(
      fc.array(fc.record({ role: fc.oneof(fc.constantFrom("user", "assistant", "system", "gpt", "human", "bot"), fieldValue), content: fieldValue }, { requiredKeys: [] }), { maxLength: 4 }),
      fc.jsonValue({ maxDepth: 2 }),
    ),
  },
  { requiredKeys: [] },
);
const instructionRecord = fc.record(
  { instruction: fc.string({ maxLength: 20 }), response: fc.string({ maxLength: 20 }), context: fc.option(fc.string({ maxLength: 10 })), category: fc.option(fc.string({ maxLength: 10 })) },
  { requiredKeys: ["instruction", "response"] },
);

const jsonlLine = fc.oneof(
  { arbitrary: instructionRecord.map((r) => JSON.stringify(r)), weight: 4 },
  { arbitrary: recordObject.map((r) => JSON.stringify(r)), weight: 4 },
  { arbitrary: fc.json({ maxDepth: 2 }), weight: 2 },
  { arbitrary: fc.string({ maxLength: 30 }), weight: 1 },
  { arbitrary: fc.constantFrom("", "   ", "\t", "{", "}", "[", "]", "{\"instruction\":", ",", "null", "\r"), weight: 2 },
);

const jsonlText = fc
  .tuple(fc.array(jsonlLine, { maxLength: 12 }), fc.constantFrom("\n", "\r\n"), fc.boolean())
  .map(([lines, eol, trailing]) => lines.join(eol) + (trailing ? eol : ""));

const jsonArrayText = fc
  .tuple(fc.array(fc.oneof(instructionRecord.map((r) => JSON.stringify(r)), recordObject.map((r) => JSON.stringify(r)), fc.json({ maxDepth: 2 }), fc.constantFrom("", "]", "[", ",", "\"")), { maxLength: 8 }), fc.constantFrom(",", ",\n", " , "), fc.boolean())
  .map(([items, sep, closed]) => `[${items.join(sep)}${closed ? "]" : ""}`);

const csvPiece = fc.oneof(
  { arbitrary: fc.constantFrom(",", '"', '""', "\n", "\r\n", "\r", " ", "a", "b c", "instruction", "response", "context", "category", "text", "output", "input"), weight: 6 },
  { arbitrary: fc.string({ maxLength: 6 }), weight: 1 },
);
const csvText = fc.oneof(
  fc.array(csvPiece, { maxLength: 40 }).map((pieces) => pieces.join("")),
  fc.tuple(fc.constantFrom("instruction,response\n", "instruction,context,response,category\n", "text\n", "instruction,output,input\n"), fc.array(csvPiece, { maxLength: 40 }))
    .map(([head, pieces]) => head + pieces.join("")),
  fc.string({ maxLength: 60 }),
);

type DataCase = { kind: string; content: string | Uint8Array; extension: string };

const dataCase: fc.Arbitrary<DataCase> = fc.oneof(
  fc.tuple(jsonlText, fc.constantFrom(".jsonl", ".json", ".txt")).map(([content, extension]) => ({ kind: "jsonl", content, extension })),
  fc.tuple(jsonArrayText, fc.constantFrom(".json", ".jsonl")).map(([content, extension]) => ({ kind: "json", content, extension })),
  fc.tuple(csvText, fc.constantFrom(".csv", ".txt", ".jsonl")).map(([content, extension]) => ({ kind: "csv", content, extension })),
  fc.tuple(fc.uint8Array({ maxLength: 80 }), fc.constantFrom(".jsonl", ".json", ".csv")).map(([content, extension]) => ({ kind: "bytes", content, extension })),
  // Valid JSONL with invalid UTF-8 spliced in.
  fc.tuple(jsonlText, fc.uint8Array({ minLength: 1, maxLength: 4 }).map((b) => b.map((x) => 0x80 | (x & 0x7f))), fc.nat())
    .map(([text, bad, at]) => {
      const bytes = Buffer.from(text, "utf8");
      const k = bytes.length === 0 ? 0 : at % bytes.length;
      return { kind: "bad-utf8", content: new Uint8Array(Buffer.concat([bytes.subarray(0, k), bad, bytes.subarray(k)])), extension: ".jsonl" };
    }),
);

const describeCase = (c: DataCase) =>
  `${c.kind}${c.extension}: ${typeof c.content === "string" ? JSON.stringify(c.content) : Buffer.from(c.content).toString("hex")}`;

/** A trivial chat template, so the messages format can be exercised. */
const chatTemplate = (messages: ChatMessage[], { addGenerationPrompt }: { addGenerationPrompt: boolean }) =>
  messages.map((m) => `<${m.role}>${m.content}\n`).join("") + (addGenerationPrompt ? "<assistant>" : "");

describe("fuzz: dataset readers", () => {
  test(`dataset readers: parseRecords on ${DATASET_RUNS} random files loads or throws LoratuneError`, () => {
    let runs = 0;
    const outcomes = tally();
    fc.assert(
      fc.property(
        dataCase,
        fc.constantFrom<FileFormat | undefined>(undefined, undefined, "jsonl", "json", "csv"),
        fc.boolean(),
        (c, fileFormat, skip) => {
          runs++;
          const text = typeof c.content === "string" ? c.content : Buffer.from(c.content).toString("utf8");
          const file = `data${c.extension}`;
          outcomes.add(loadsOrLoratuneError(`parseRecords(${describeCase(c)}, fileFormat=${fileFormat}, skip=${skip})`, () => {
            const result = parseRecords(text, file, { fileFormat, onBadRow: skip ? () => {} : undefined });
            for (const record of result.records) {
              assert.ok(Number.isInteger(record.source.line) && record.source.line >= 1);
              assert.equal(typeof record.fields, "object");
            }
          }));
        },
      ),
      { seed: SEED, numRuns: DATASET_RUNS },
    );
    assert.equal(runs, DATASET_RUNS);
    outcomes.check();
  });

  test(`dataset readers: loadDataset on ${DATASET_RUNS} random files loads or throws LoratuneError`, () => {
    let runs = 0;
    const outcomes = tally();
    fc.assert(
      fc.property(
        dataCase,
        fc.constantFrom<FormatChoice | undefined>(undefined, "auto", "dolly", "alpaca", "text", "messages"),
        fc.boolean(),
        fc.constantFrom(0, 0, 0.25, 0.5),
        (c, format, skipBadRows, evalFraction) => {
          runs++;
          const file = tempFile(c.extension);
          fs.writeFileSync(file, c.content);
          try {
            outcomes.add(loadsOrLoratuneError(`loadDataset(${describeCase(c)}, format=${format}, skipBadRows=${skipBadRows}, evalFraction=${evalFraction})`, () => {
              const dataset = loadDataset({ source: file, format, skipBadRows, evalFraction, chatTemplate, shuffle: true, seed: 1 });
              assert.ok(dataset.train.length >= 1);
              for (const example of [...dataset.train, ...dataset.eval]) {
                assert.equal(typeof example.text, "string");
                assert.equal(example.text, example.prompt + example.response);
              }
            }));
          } finally {
            fs.rmSync(file, { force: true });
          }
        },
      ),
      { seed: SEED, numRuns: DATASET_RUNS },
    );
    assert.equal(runs, DATASET_RUNS);
    outcomes.check();
  });
});

// ---------------------------------------------------------------------------------------------
// 3. Config parser
// ---------------------------------------------------------------------------------------------

const fixtureConfig = JSON.parse(
  fs.readFileSync(path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../test/fixtures/gemma-tiny/config.json"), "utf8"),
) as Record<string, unknown>;

const configKeys = Object.keys(fixtureConfig);
const configValue = fc.oneof(
  { arbitrary: fc.jsonValue({ maxDepth: 2 }), weight: 3 },
  { arbitrary: fc.anything({ maxDepth: 2 }), weight: 2 },
  {
    arbitrary: fc.oneof(
      fc.integer({ min: -8, max: 600 }),
      fc.double(),
      fc.constantFrom(0, -0, 1, 2, 3, 0.5, 1e-300, 1e300, 2 ** 31, 2 ** 53 - 1, 2 ** 53, NaN, Infinity, -Infinity),
    ),
    weight: 3,
  },
  { arbitrary: fc.constantFrom("gemma", "llama", "gelu", "silu", "relu", "float32", "bfloat16", null, true, false, [], {}, [1, 2], ["x"]), weight: 2 },
);

type ConfigEdit = { op: "delete"; key: string } | { op: "set"; key: string; value: unknown };
const configEdit: fc.Arbitrary<ConfigEdit> = fc.oneof(
  fc.constantFrom(...configKeys).map((key): ConfigEdit => ({ op: "delete", key })),
  fc.record({ key: fc.constantFrom(...configKeys, "dtype", "rope_scaling", "__proto__", "constructor"), value: configValue })
    .map(({ key, value }): ConfigEdit => ({ op: "set", key, value })),
);

const configInput = fc.oneof(
  { arbitrary: fc.array(configEdit, { minLength: 1, maxLength: 5 }).map((edits) => ({ label: `edits ${JSON.stringify(edits)}`, json: applyEdits(edits) as unknown })), weight: 8 },
  { arbitrary: fc.anything().map((json) => ({ label: `whole value ${String(fc.stringify(json))}`, json })), weight: 1 },
  { arbitrary: fc.jsonValue().map((json) => ({ label: `whole value ${JSON.stringify(json)}`, json: json as unknown })), weight: 1 },
);

function applyEdits(edits: ConfigEdit[]): Record<string, unknown> {
  const config: Record<string, unknown> = structuredClone(fixtureConfig);
  for (const edit of edits) {
    if (edit.op === "delete") delete config[edit.key];
    else Object.defineProperty(config, edit.key, { value: edit.value, enumerable: true, writable: true, configurable: true });
  }
  return config;
}

describe("fuzz: config parser", () => {
  test("config parser: the fixture parses", () => {
    const config = parseConfig(structuredClone(fixtureConfig), "config.json");
    assert.equal(expectedWeightShapes(config).size, 1 + 9 * config.numLayers + 1);
  });

  test(`config parser: ${CONFIG_RUNS} mutated configs parse or throw LoratuneError`, () => {
    let runs = 0;
    const outcomes = tally();
    fc.assert(
      fc.property(configInput, ({ label, json }) => {
        runs++;
        outcomes.add(loadsOrLoratuneError(`parseConfig(${label})`, () => {
          const config = parseConfig(json, "config.json");
          const shapes = expectedWeightShapes(config);
          // Only the absence of non-LoratuneErrors and hangs is checked here: parseConfig has no upper
          // bounds, so e.g. num_attention_heads = 2^53 - 1 yields dimensions beyond Number.MAX_SAFE_INTEGER.
          for (const shape of shapes.values()) assert.ok(shape.every((d) => d > 0), `bad shape [${shape.join(", ")}]`);
        }));
      }),
      { seed: SEED, numRuns: CONFIG_RUNS },
    );
    assert.equal(runs, CONFIG_RUNS);
    outcomes.check();
  });
  // Found by reading the code behind this property (seed 42 does not draw it): without an upper bound,
  // 2 000 000 layers spent ~40 s in expectedWeightShapes and then threw "RangeError: Map maximum size
  // exceeded". parseConfig now refuses such counts with a LoratuneError.
  test("config parser: an absurd num_hidden_layers is rejected quickly, not a hang or RangeError", () => {
    for (const layers of [100_000, 2_000_000, Number.MAX_SAFE_INTEGER]) {
      const json = { ...structuredClone(fixtureConfig), num_hidden_layers: layers };
      assert.throws(() => parseConfig(json, "config.json"), (e: unknown) => e instanceof LoratuneError && /num_hidden_layers/.test(e.message));
    }
  });
});
