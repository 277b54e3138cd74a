import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { after, describe, test } from "node:test";
import { LoratuneError } from "../src/errors.js";
import { CheckpointReader } from "../src/io/checkpoint.js";
import { SafetensorsFile, writeSafetensors } from "../src/io/safetensors.js";
import { expectedWeightShapes, readConfig } from "../src/models/config.js";
import { Tensor } from "../src/tensor.js";

const fixture = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../test/fixtures/gemma-tiny");
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "loratune-checkpoint-"));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

let counter = 0;
/** A folder with two shards (a, b in the first; c in the second) and an index naming them. */
function shardedCheckpoint(weightMap?: Record<string, string>): string {
  const dir = path.join(tmp, `ckpt-${counter++}`);
  fs.mkdirSync(dir);
  writeSafetensors(path.join(dir, "model-00001-of-00002.safetensors"), { a: Tensor.from([1, 2]), b: Tensor.from([3], [1], "i32") });
  writeSafetensors(path.join(dir, "model-00002-of-00002.safetensors"), { c: Tensor.from([4, 5, 6, 7], [2, 2]) });
  const map = weightMap ?? { a: "model-00001-of-00002.safetensors", b: "model-00001-of-00002.safetensors", c: "model-00002-of-00002.safetensors" };
  fs.writeFileSync(path.join(dir, "model.safetensors.index.json"), JSON.stringify({ metadata: { total_size: 28 }, weight_map: map }));
  return dir;
}

function assertRejects(fn: () => unknown, ...mentions: RegExp[]): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof LoratuneError, `expected LoratuneError, got ${String(e)}`);
    for (const m of mentions) assert.match(e.message, m);
    return true;
  });
}

describe("CheckpointReader", () => {
  test("reads a sharded checkpoint through its index", () => {
    const dir = shardedCheckpoint();
    const ckpt = CheckpointReader.open(dir);
    try {
      assert.deepEqual(ckpt.names().sort(), ["a", "b", "c"]);
      assert.ok(ckpt.has("c") && !ckpt.has("d"));
      assert.deepEqual(ckpt.info("c").shape, [2, 2]);
      assert.equal(path.basename(ckpt.info("c").file), "model-00002-of-00002.safetensors");
      assert.deepEqual(ckpt.read("a", "f32").toArray(), [1, 2]);
      assert.deepEqual(ckpt.read("b", "i32").toArray(), [3]);
      assert.deepEqual(ckpt.read("c", "f32").toArray(), [4, 5, 6, 7]);
      assertRejects(() => ckpt.read("d", "f32"), /no tensor named "d"/);
    } finally {
      ckpt.close();
    }
  });

  test("a missing shard names the index and the shard", () => {
    const dir = shardedCheckpoint();
    fs.rmSync(path.join(dir, "model-00002-of-00002.safetensors"));
    assertRejects(() => CheckpointReader.open(dir), /model\.safetensors\.index\.json/, /model-00002-of-00002\.safetensors/, /missing/);
  });

  test("an index naming a tensor its shard lacks is refused", () => {
    const dir = shardedCheckpoint({ a: "model-00001-of-00002.safetensors", c: "model-00001-of-00002.safetensors" });
    assertRejects(() => CheckpointReader.open(dir), /weight_map\.c/, /does not hold that tensor/);
  });

  test("shard names escaping the folder are rejected", () => {
    for (const shard of ["../outside.safetensors", "sub/../../outside.safetensors", "/etc/passwd", "..\\outside.safetensors"]) {
      const dir = shardedCheckpoint({ a: shard });
      assertRejects(() => CheckpointReader.open(dir), /model\.safetensors\.index\.json/, /not a file name inside the checkpoint folder/);
    }
  });

  test("a single *.safetensors file of another name is used; several without an index are refused", () => {
    const dir = path.join(tmp, `single-${counter++}`);
    fs.mkdirSync(dir);
    writeSafetensors(path.join(dir, "weights.safetensors"), { w: Tensor.from([1]) });
    const ckpt = CheckpointReader.open(dir);
    assert.deepEqual(ckpt.names(), ["w"]);
    ckpt.close();
    writeSafetensors(path.join(dir, "more.safetensors"), { v: Tensor.from([1]) });
    assertRejects(() => CheckpointReader.open(dir), /2 \.safetensors files/);
  });

  test("folders without weights, with only pickles, or missing are refused", () => {
    const empty = path.join(tmp, `empty-${counter++}`);
    fs.mkdirSync(empty);
    assertRejects(() => CheckpointReader.open(empty), /holds no model weights/);
    fs.writeFileSync(path.join(empty, "pytorch_model.bin"), "x");
    assertRejects(() => CheckpointReader.open(empty), /pickles can execute code and are refused/);
    assertRejects(() => CheckpointReader.open(path.join(tmp, "nowhere")), /does not exist/);
  });

  test("reads the gemma-tiny fixture: every expected tensor with its shape, and the right values", () => {
    const config = readConfig(fixture);
    const ckpt = CheckpointReader.open(fixture);
    const golden = SafetensorsFile.open(path.join(fixture, "golden.safetensors"));
    try {
      const expected = expectedWeightShapes(config);
      assert.deepEqual(ckpt.names().sort(), [...expected.keys()].sort());
      for (const [name, shape] of expected) {
        assert.deepEqual(ckpt.info(name).shape, shape, name);
        assert.equal(ckpt.info(name).dtype, "F32", name);
      }
      // The golden embed_scaled is embed_tokens[ids] * sqrt(hidden): check one row.
      const embed = ckpt.read("model.embed_tokens.weight", "f32").f32;
      const ids = golden.read("input_ids", "i32").i32;
      const scaled = golden.read("hidden_states.embed_scaled", "f32").f32;
      const H = config.hiddenSize;
      const id = ids[1]!;
      for (let j = 0; j < H; j++) assert.equal(scaled[H + j], Math.fround(embed[id * H + j]! * 8));
    } finally {
      ckpt.close();
      golden.close();
    }
  });
});
