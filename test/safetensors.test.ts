import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, describe, test } from "node:test";
import { native } from "../src/backend/native.js";
import { LoratuneError } from "../src/errors.js";
import { SafetensorsFile, assertNotPickle, writeSafetensors } from "../src/io/safetensors.js";
import { Tensor } from "../src/tensor.js";

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "loratune-safetensors-"));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** The conversion kernels come from the native addon; conversion tests wait until it has them. */
const noConversions = typeof (native as Partial<typeof native>).bf16ToF32 !== "function" && "native conversion kernels not built yet";

let counter = 0;
function tempPath(name = "t.safetensors"): string {
  const dir = path.join(tmp, `case-${counter++}`);
  fs.mkdirSync(dir);
  return path.join(dir, name);
}

/** A safetensors file from raw parts; `headerLength` overrides the length field. */
function rawFile(header: unknown, data: Uint8Array = new Uint8Array(0), headerLength?: bigint): string {
  const file = tempPath();
  const json = Buffer.from(typeof header === "string" ? header : JSON.stringify(header));
  const length = Buffer.alloc(8);
  length.writeBigUInt64LE(headerLength ?? BigInt(json.length));
  fs.writeFileSync(file, Buffer.concat([length, json, data]));
  return file;
}

function bf16Tensor(bits: number[], shape: number[]): Tensor {
  const t = Tensor.zeros(shape, "bf16");
  (t.data as Uint16Array).set(bits);
  return t;
}

/** Expects a LoratuneError whose message names the file and (when given) the tensor. */
function assertRejects(fn: () => unknown, file: string, ...mentions: RegExp[]): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof LoratuneError, `expected LoratuneError, got ${String(e)}`);
    assert.ok(e.message.includes(file), `message should name ${file}: ${e.message}`);
    for (const m of mentions) assert.match(e.message, m);
    return true;
  });
}

describe("safetensors round trip", () => {
  test("f32, bf16 and i32 tensors and metadata come back unchanged", () => {
    const file = tempPath();
    const f32 = Tensor.from([1.5, -2, 3.25, 0, 1e-20, -7], [2, 3]);
    const bf16 = bf16Tensor([0x3f80, 0xc000, 0x7f80, 0x0001], [4]);
    const i32 = Tensor.from([7, -1, 2147483647], [3], "i32");
    const empty = Tensor.zeros([0, 4], "f32");
    writeSafetensors(file, [["w", f32], ["b", bf16], ["ids", i32], ["empty", empty]], { format: "pt" });

    const st = SafetensorsFile.open(file);
    try {
      assert.deepEqual(st.metadata, { format: "pt" });
      assert.deepEqual(st.names().sort(), ["b", "empty", "ids", "w"]);
      assert.deepEqual(st.info("w").shape, [2, 3]);
      assert.equal(st.info("b").dtype, "BF16");
      assert.deepEqual(st.read("w", "f32").toArray(), f32.toArray());
      assert.deepEqual(Array.from(st.read("b", "bf16").data), [0x3f80, 0xc000, 0x7f80, 0x0001]);
      assert.deepEqual(st.read("ids", "i32").toArray(), [7, -1, 2147483647]);
      assert.deepEqual(st.read("empty", "f32").shape, [0, 4]);
    } finally {
      st.close();
    }
  });

  test("header is padded to 8 bytes and tensors are aligned to their item size", () => {
    const file = tempPath();
    writeSafetensors(file, { a: Tensor.from([1, 2, 3]), h: bf16Tensor([1], [1]), z: Tensor.from([4], [1], "i32") });
    const bytes = fs.readFileSync(file);
    const headerLength = Number(bytes.readBigUInt64LE(0));
    assert.equal(headerLength % 8, 0);
    const header = JSON.parse(bytes.subarray(8, 8 + headerLength).toString()) as Record<string, { data_offsets: [number, number]; dtype: string }>;
    assert.deepEqual(header.a!.data_offsets, [0, 12]);
    assert.deepEqual(header.z!.data_offsets, [12, 16]);
    assert.deepEqual(header.h!.data_offsets, [16, 18]);
    assert.equal(bytes.length, 8 + headerLength + 18);
  });

  test("I64 reads as i32 and values beyond i32 are refused", () => {
    const data = Buffer.alloc(24);
    [5n, -3n, 1n << 40n].forEach((v, i) => data.writeBigInt64LE(v, i * 8));
    const file = rawFile({ small: { dtype: "I64", shape: [2], data_offsets: [0, 16] }, big: { dtype: "I64", shape: [1], data_offsets: [16, 24] } }, data);
    const st = SafetensorsFile.open(file);
    assert.deepEqual(st.read("small", "i32").toArray(), [5, -3]);
    assertRejects(() => st.read("big", "i32"), file, /"big"/, /does not fit in i32/);
    assertRejects(() => st.read("small", "f32"), file, /"small"/, /cannot read I64 as f32/);
    st.close();
  });

  test("BF16 reads as f32 and F32 as bf16", { skip: noConversions }, () => {
    const file = tempPath();
    writeSafetensors(file, { b: bf16Tensor([0x3f80, 0xc040, 0x3e20], [3]), f: Tensor.from([1, 1.00390625, -0.5]) });
    const st = SafetensorsFile.open(file);
    assert.deepEqual(st.read("b", "f32").toArray(), [1, -3, 0.15625]);
    // 1.00390625 is halfway between two bf16 values and rounds to even (1.0)
    assert.deepEqual(Array.from(st.read("f", "bf16").data), [0x3f80, 0x3f80, 0xbf00]);
    st.close();
  });

  test("F16 reads as f32 and bf16, across several conversion chunks", { skip: noConversions }, () => {
    const n = 8 * 1024 * 1024 + 3; // more than one 16 MB chunk of halves
    const halves = new Uint16Array(n);
    for (let i = 0; i < n; i++) halves[i] = i % 3 === 0 ? 0x3c00 : i % 3 === 1 ? 0xc000 : 0x3800; // 1, -2, 0.5
    const file = rawFile({ h: { dtype: "F16", shape: [n], data_offsets: [0, n * 2] } }, new Uint8Array(halves.buffer));
    const st = SafetensorsFile.open(file);
    const f32 = st.read("h", "f32").f32;
    const bf16 = st.read("h", "bf16").data as Uint16Array;
    st.close();
    for (const i of [0, 1, 2, n - 3, n - 2, n - 1, 4 * 1024 * 1024]) {
      const want = i % 3 === 0 ? 1 : i % 3 === 1 ? -2 : 0.5;
      assert.equal(f32[i], want, `f32 element ${i}`);
      assert.equal(bf16[i], i % 3 === 0 ? 0x3f80 : i % 3 === 1 ? 0xc000 : 0x3f00, `bf16 element ${i}`);
    }
  });
});

describe("malformed safetensors files are refused with the file and tensor named", () => {
  const f32Entry = { dtype: "F32", shape: [2], data_offsets: [0, 8] };

  test("shorter than 8 bytes", () => {
    const file = tempPath();
    fs.writeFileSync(file, Buffer.from([1, 2, 3]));
    assertRejects(() => SafetensorsFile.open(file), file, /too short/);
  });

  test("header length beyond the file", () => {
    const file = rawFile({ a: f32Entry }, new Uint8Array(8), 1000n);
    assertRejects(() => SafetensorsFile.open(file), file, /beyond the end of the file/);
  });

  test("absurd header length", () => {
    const file = rawFile({ a: f32Entry }, new Uint8Array(8), 1n << 40n);
    assertRejects(() => SafetensorsFile.open(file), file, /absurd/);
  });

  test("invalid JSON", () => {
    const file = rawFile("{not json", new Uint8Array(8));
    assertRejects(() => SafetensorsFile.open(file), file, /not valid JSON/);
  });

  for (const missing of ["dtype", "shape", "data_offsets"]) {
    test(`entry missing ${missing}`, () => {
      const entry: Record<string, unknown> = { ...f32Entry };
      delete entry[missing];
      const file = rawFile({ "model.w": entry }, new Uint8Array(8));
      assertRejects(() => SafetensorsFile.open(file), file, /"model\.w"/, new RegExp(`missing ${missing}`));
    });
  }

  test("unknown dtype", () => {
    const file = rawFile({ "model.w": { ...f32Entry, dtype: "F12" } }, new Uint8Array(8));
    assertRejects(() => SafetensorsFile.open(file), file, /"model\.w"/, /unknown dtype "F12"/);
  });

  test("shape times item size differs from the byte span", () => {
    const file = rawFile({ "model.w": { dtype: "F32", shape: [2, 2], data_offsets: [0, 8] } }, new Uint8Array(16));
    assertRejects(() => SafetensorsFile.open(file), file, /"model\.w"/, /needs 16 bytes/);
  });

  test("offsets out of range", () => {
    const file = rawFile({ "model.w": { dtype: "F32", shape: [4], data_offsets: [0, 16] } }, new Uint8Array(8));
    assertRejects(() => SafetensorsFile.open(file), file, /"model\.w"/, /beyond the data section/);
  });

  test("bad shape and offsets values", () => {
    const badShape = rawFile({ "model.w": { dtype: "F32", shape: [-2], data_offsets: [0, 8] } }, new Uint8Array(8));
    assertRejects(() => SafetensorsFile.open(badShape), badShape, /"model\.w"/, /shape/);
    const reversed = rawFile({ "model.w": { dtype: "F32", shape: [0], data_offsets: [8, 0] } }, new Uint8Array(8));
    assertRejects(() => SafetensorsFile.open(reversed), reversed, /"model\.w"/, /data_offsets/);
  });

  test("overlapping tensors", () => {
    const file = rawFile({ a: f32Entry, b: { dtype: "F32", shape: [2], data_offsets: [4, 12] } }, new Uint8Array(12));
    assertRejects(() => SafetensorsFile.open(file), file, /"b" overlaps tensor "a"/);
  });

  test("unknown tensor and closed file", () => {
    const file = rawFile({ a: f32Entry }, new Uint8Array(8));
    const st = SafetensorsFile.open(file);
    assertRejects(() => st.read("nope", "f32"), file, /"nope"/);
    st.close();
    assertRejects(() => st.read("a", "f32"), file, /closed/);
  });
});

describe("pickles", () => {
  test("pickle files and folders holding only pickles are refused", () => {
    const dir = path.dirname(tempPath());
    fs.writeFileSync(path.join(dir, "pytorch_model.bin"), "\x80\x02}q\x00.");
    assertRejects(() => assertNotPickle(dir), dir, /pytorch_model\.bin/, /pickles can execute code/);
    const pt = path.join(dir, "weights.pt");
    fs.writeFileSync(pt, "\x80\x02}q\x00.");
    assertRejects(() => SafetensorsFile.open(pt), pt, /pickles can execute code and are refused/);
  });

  test("a folder with safetensors next to a pickle is accepted", () => {
    const file = tempPath("model.safetensors");
    writeSafetensors(file, { a: Tensor.from([1]) });
    fs.writeFileSync(path.join(path.dirname(file), "pytorch_model.bin"), "x");
    assert.doesNotThrow(() => assertNotPickle(path.dirname(file)));
  });
});

describe("atomic writes", () => {
  const leftovers = (dir: string) => fs.readdirSync(dir).filter((n) => n.includes(".tmp-"));

  test("a parent that is a file fails with the path named", () => {
    const dir = path.dirname(tempPath());
    fs.writeFileSync(path.join(dir, "afile"), "x");
    const target = path.join(dir, "afile", "out.safetensors");
    assertRejects(() => writeSafetensors(target, { a: Tensor.from([1]) }), target, /cannot write/);
    assert.deepEqual(leftovers(dir), []);
  });

  test("a failing rename removes the temporary file and keeps the old target", () => {
    const dir = path.dirname(tempPath());
    const target = path.join(dir, "taken");
    fs.mkdirSync(path.join(target, "child"), { recursive: true }); // renaming a file over a non-empty folder fails
    assertRejects(() => writeSafetensors(target, { a: Tensor.from([1, 2]) }), target, /cannot write/);
    assert.deepEqual(leftovers(dir), []);
    assert.ok(fs.statSync(target).isDirectory());
  });

  test("an existing file is replaced whole", () => {
    const file = tempPath();
    writeSafetensors(file, { a: Tensor.from([1, 2, 3]) });
    writeSafetensors(file, { b: Tensor.from([4]) });
    const st = SafetensorsFile.open(file);
    assert.deepEqual(st.names(), ["b"]);
    st.close();
    assert.deepEqual(leftovers(path.dirname(file)), []);
  });

  test("duplicate names are refused", () => {
    const file = tempPath();
    assertRejects(() => writeSafetensors(file, [["a", Tensor.from([1])], ["a", Tensor.from([2])]]), file, /"a" is given twice/);
  });
});
