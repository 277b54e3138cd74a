import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import zlib from "node:zlib";
import { after, before, describe, test } from "node:test";
import { LoratuneError } from "../src/errors.js";
import { extractTar, fetchDatasetFile, fetchModel } from "../src/io/hub.js";
import { writeSafetensors } from "../src/io/safetensors.js";
import { Tensor } from "../src/tensor.js";

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "loratune-hub-"));
const savedEnv = { ...process.env };
before(() => {
  // No credentials from the machine: the tests decide what exists.
  for (const key of ["HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY"]) delete process.env[key];
  process.env.KAGGLE_CONFIG_DIR = path.join(tmp, "no-kaggle-config");
});
after(() => {
  process.env = savedEnv;
  fs.rmSync(tmp, { recursive: true, force: true });
});

let counter = 0;
function freshDir(name: string): string {
  const dir = path.join(tmp, `${name}-${counter++}`);
  fs.mkdirSync(dir, { recursive: true });
  return dir;
}

function writeCheckpoint(dir: string): void {
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, "config.json"), JSON.stringify({ model_type: "gemma" }));
  writeSafetensors(path.join(dir, "model.safetensors"), { w: Tensor.from([1]) });
}

const offlineFetch: typeof fetch = async () => {
  throw new TypeError("fetch failed", { cause: Object.assign(new Error("getaddrinfo ENOTFOUND huggingface.co"), { code: "ENOTFOUND" }) });
};
const forbiddenFetch: typeof fetch = async (input) => {
  throw new Error(`no network access expected, got a request for ${String(input)}`);
};

async function downloadError(model: string, opts: Parameters<typeof fetchModel>[1]): Promise<LoratuneError> {
  try {
    await fetchModel(model, opts);
  } catch (e) {
    assert.ok(e instanceof LoratuneError, `expected LoratuneError, got ${String(e)}`);
    return e;
  }
  assert.fail("expected fetchModel to fail");
}

describe("fetchModel without network", () => {
  test("fails fast with two short lines: what failed, and what to do", async () => {
    const start = Date.now();
    const e = await downloadError("gemma_2b_en", { cacheDir: freshDir("hf"), kaggleCacheDir: freshDir("kaggle"), fetch: offlineFetch });
    assert.ok(Date.now() - start < 2000);
    assert.equal(e.message, "cannot download google/gemma-2b (no network or no access)");
    assert.equal(e.hint, "accept the Gemma licence at https://huggingface.co/google/gemma-2b and set HF_TOKEN, or pass --model <folder> with a local checkpoint");
    assert.equal(`${e.message}\n${e.hint}`.split("\n").length, 2);
  });

  test("with the machine's own fetch (no network here, or no access without a token)", async () => {
    const start = Date.now();
    const e = await downloadError("google/gemma-7b-it", { cacheDir: freshDir("hf"), kaggleCacheDir: freshDir("kaggle"), timeoutMs: 5000 });
    assert.ok(Date.now() - start < 10_000);
    assert.equal(e.message, "cannot download google/gemma-7b-it (no network or no access)");
    assert.match(e.hint!, /HF_TOKEN/);
  });

  test("a server that never answers is given up on after timeoutMs", async () => {
    const silent: typeof fetch = (_input, init) =>
      new Promise((_resolve, reject) => init?.signal?.addEventListener("abort", () => reject(init.signal!.reason)));
    const start = Date.now();
    const e = await downloadError("org/model", { cacheDir: freshDir("hf"), fetch: silent, timeoutMs: 100 });
    assert.ok(Date.now() - start < 2000);
    assert.equal(e.message, "cannot download org/model (no network or no access)");
    assert.match(e.hint!, /https:\/\/huggingface\.co\/org\/model/);
  });

  test("a Kaggle handle without credentials points at Kaggle", async () => {
    const e = await downloadError("google/gemma/transformers/2b", { kaggleCacheDir: freshDir("kaggle"), fetch: offlineFetch });
    assert.equal(e.message, "cannot download google/gemma/transformers/2b (no network or no access)");
    assert.match(e.hint!, /KAGGLE_USERNAME and KAGGLE_KEY/);
  });

  test("a name that is neither preset, repository nor handle", async () => {
    const e = await downloadError("not a model", { fetch: forbiddenFetch });
    assert.match(e.message, /not a preset/);
  });
});

describe("fetchModel from the cache, with no network", () => {
  test("a Hugging Face cache snapshot (refs/main -> snapshots/<commit>)", async () => {
    const cacheDir = freshDir("hf");
    const commit = "0123456789abcdef0123456789abcdef01234567";
    const storage = path.join(cacheDir, "models--google--gemma-2b");
    fs.mkdirSync(path.join(storage, "refs"), { recursive: true });
    fs.writeFileSync(path.join(storage, "refs", "main"), commit);
    const snapshot = path.join(storage, "snapshots", commit);
    writeCheckpoint(snapshot);
    assert.equal(await fetchModel("gemma_2b_en", { cacheDir, fetch: forbiddenFetch }), snapshot);
    assert.equal(await fetchModel("google/gemma-2b", { cacheDir, revision: commit, fetch: forbiddenFetch }), snapshot);
  });

  test("an incomplete snapshot (a shard missing) is not used", async () => {
    const cacheDir = freshDir("hf");
    const commit = "89abcdef0123456789abcdef0123456789abcdef";
    const storage = path.join(cacheDir, "models--google--gemma-2b");
    fs.mkdirSync(path.join(storage, "refs"), { recursive: true });
    fs.writeFileSync(path.join(storage, "refs", "main"), commit);
    const snapshot = path.join(storage, "snapshots", commit);
    writeCheckpoint(snapshot);
    fs.writeFileSync(path.join(snapshot, "model.safetensors.index.json"), JSON.stringify({ weight_map: { w: "model-00001-of-00002.safetensors" } }));
    const e = await downloadError("gemma_2b_en", { cacheDir, kaggleCacheDir: freshDir("kaggle"), fetch: offlineFetch });
    assert.match(e.message, /cannot download google\/gemma-2b/);
  });

  test("a kagglehub cache folder (newest complete version)", async () => {
    const kaggleCacheDir = freshDir("kaggle");
    const variation = path.join(kaggleCacheDir, "models", "google", "gemma", "transformers", "2b");
    writeCheckpoint(path.join(variation, "2"));
    writeCheckpoint(path.join(variation, "3"));
    fs.writeFileSync(path.join(variation, "2.complete"), "");
    fs.writeFileSync(path.join(variation, "3.complete"), "");
    writeCheckpoint(path.join(variation, "4")); // no marker: an interrupted download
    const found = await fetchModel("gemma_2b_en", { source: "kaggle", kaggleCacheDir, fetch: forbiddenFetch });
    assert.equal(found, path.join(variation, "3"));
    assert.equal(await fetchModel("google/gemma/transformers/2b/2", { kaggleCacheDir, fetch: forbiddenFetch }), path.join(variation, "2"));
  });
});

/**
 * A stand-in for the Hugging Face hub API: repository info, the file tree, paths-info and file
 * downloads (with Range requests). Records every file requested.
 */
function fakeHub(repo: string, sha: string, files: Record<string, Buffer>) {
  const requested: string[] = [];
  const json = (body: unknown) => new Response(JSON.stringify(body), { headers: { "Content-Type": "application/json" } });
  const entry = (p: string) => ({ type: "file", path: p, size: files[p]!.length, oid: `oid-${p.replace(/\W/g, "-")}` });
  const fetchImpl: typeof fetch = async (input, init) => {
    const url = new URL(String(input));
    const p = decodeURIComponent(url.pathname);
    if (p === `/api/models/${repo}/revision/main`) return json({ _id: "x", id: repo, sha });
    if (p === `/api/models/${repo}/tree/${sha}`) return json([...Object.keys(files).filter((f) => !f.includes("/")).map(entry), { type: "directory", path: "original", oid: "d", size: 0 }]);
    if (p === `/api/models/${repo}/paths-info/${sha}`) {
      const { paths } = JSON.parse(String(init?.body)) as { paths: string[] };
      return json(paths.map((f) => ({ ...entry(f), lastCommit: { id: sha, title: "t", date: "2024-01-01" } })));
    }
    const prefix = `/${repo}/resolve/${sha}/`;
    if (p.startsWith(prefix) && files[p.slice(prefix.length)]) {
      const file = p.slice(prefix.length);
      const data = files[file]!;
      const range = new Headers(init?.headers).get("Range")?.match(/bytes=(\d+)-(\d+)/);
      if (!range) {
        requested.push(file);
        return new Response(new Uint8Array(data), { headers: { ETag: `"etag-${file}"` } });
      }
      const [start, end] = [Number(range[1]), Math.min(Number(range[2]), data.length - 1)];
      if (start !== 0 || end !== 0 || data.length === 1) requested.push(file);
      return new Response(new Uint8Array(data.subarray(start, end + 1)), {
        status: 206,
        headers: { "Content-Range": `bytes ${start}-${end}/${data.length}`, ETag: `"etag-${file}"` },
      });
    }
    return new Response("not found", { status: 404 });
  };
  return { fetchImpl, requested };
}

describe("fetchModel download from Hugging Face (fake hub)", () => {
  test("fetches config, tokenizer and the shards of the index, then reuses the cache", async () => {
    const shardDir = freshDir("shards");
    writeSafetensors(path.join(shardDir, "1"), { a: Tensor.from([1, 2]) });
    writeSafetensors(path.join(shardDir, "2"), { b: Tensor.from([3]) });
    const sha = "fedcba9876543210fedcba9876543210fedcba98";
    const hub = fakeHub("org/tiny", sha, {
      "config.json": Buffer.from(JSON.stringify({ model_type: "gemma" })),
      "tokenizer.json": Buffer.from("{}"),
      "README.md": Buffer.from("# tiny"),
      "model.gguf": Buffer.from("gguf"),
      "model.safetensors": Buffer.from("stale single file, not named by the index"),
      "model.safetensors.index.json": Buffer.from(JSON.stringify({ weight_map: { a: "model-00001-of-00002.safetensors", b: "model-00002-of-00002.safetensors" } })),
      "model-00001-of-00002.safetensors": fs.readFileSync(path.join(shardDir, "1")),
      "model-00002-of-00002.safetensors": fs.readFileSync(path.join(shardDir, "2")),
    });
    const cacheDir = freshDir("hf");
    const lines: string[] = [];
    const quiet = console.debug;
    console.debug = () => {}; // @huggingface/hub reports each download on console.debug
    let dir: string;
    try {
      dir = await fetchModel("org/tiny", { cacheDir, fetch: hub.fetchImpl, log: (l) => lines.push(l) });
    } finally {
      console.debug = quiet;
    }
    assert.equal(dir, path.join(cacheDir, "models--org--tiny", "snapshots", sha));
    assert.deepEqual([...new Set(hub.requested)].sort(), ["config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "model.safetensors.index.json", "tokenizer.json"]);
    assert.deepEqual(fs.readFileSync(path.join(dir, "model-00002-of-00002.safetensors")), fs.readFileSync(path.join(shardDir, "2")));
    assert.equal(fs.readFileSync(path.join(cacheDir, "models--org--tiny", "refs", "main"), "utf8"), sha);
    assert.equal(lines.length, 5);
    assert.equal(await fetchModel("org/tiny", { cacheDir, fetch: forbiddenFetch }), dir);
  });

  test("refuses an index whose shard names would write outside the cache, before downloading them", async () => {
    const sha = "0123456789abcdef0123456789abcdef01234567";
    const hub = fakeHub("org/evil", sha, {
      "config.json": Buffer.from(JSON.stringify({ model_type: "gemma" })),
      "model.safetensors.index.json": Buffer.from(JSON.stringify({ weight_map: { a: "../../../../escaped.safetensors" } })),
    });
    const cacheDir = freshDir("hf-evil");
    const quiet = console.debug;
    console.debug = () => {};
    try {
      await assert.rejects(fetchModel("org/evil", { cacheDir, fetch: hub.fetchImpl }), /shard "\.\.\/\.\.\/\.\.\/\.\.\/escaped\.safetensors" is not a file name inside the checkpoint folder/);
    } finally {
      console.debug = quiet;
    }
    assert.ok(!hub.requested.some((f) => f.includes("escaped")));
  });
});

describe("fetchModel download from Kaggle (fake API)", () => {
  test("asks for the newest version, unpacks the archive into kagglehub's layout, then reuses it", async () => {
    const weights = path.join(freshDir("kaggle-src"), "model.safetensors");
    writeSafetensors(weights, { w: Tensor.from([1, 2, 3]) });
    const archive = zlib.gzipSync(Buffer.concat([
      tarEntry("config.json", JSON.stringify({ model_type: "gemma" })),
      tarEntry("model.safetensors", fs.readFileSync(weights).toString("latin1"), "0", "", "latin1"),
      Buffer.alloc(1024),
    ]));
    const seen: string[] = [];
    const kaggle: typeof fetch = async (input, init) => {
      const url = String(input);
      assert.equal(new Headers(init?.headers).get("Authorization"), `Basic ${Buffer.from("someone:secret").toString("base64")}`);
      seen.push(url);
      if (url === "https://www.kaggle.com/api/v1/models/google/gemma/transformers/2b/get") return Response.json({ versionNumber: 3 });
      if (url === "https://www.kaggle.com/api/v1/models/google/gemma/transformers/2b/3/download") return new Response(new Uint8Array(archive));
      return new Response("not found", { status: 404 });
    };
    process.env.KAGGLE_USERNAME = "someone";
    process.env.KAGGLE_KEY = "secret";
    try {
      const kaggleCacheDir = freshDir("kaggle");
      const dir = await fetchModel("gemma_2b_en", { source: "kaggle", kaggleCacheDir, fetch: kaggle });
      const variation = path.join(kaggleCacheDir, "models", "google", "gemma", "transformers", "2b");
      assert.equal(dir, path.join(variation, "3"));
      assert.ok(fs.existsSync(path.join(variation, "3.complete")));
      assert.deepEqual(fs.readFileSync(path.join(dir, "model.safetensors")), fs.readFileSync(weights));
      assert.equal(seen.length, 2);
      assert.equal(await fetchModel("gemma_2b_en", { source: "kaggle", kaggleCacheDir, fetch: forbiddenFetch }), dir);
    } finally {
      delete process.env.KAGGLE_USERNAME;
      delete process.env.KAGGLE_KEY;
    }
  });
});

/** A ustar archive built by hand, so entries that tar itself would refuse can be tested. */
function tarEntry(name: string, content: string, type = "0", linkName = "", encoding: BufferEncoding = "utf8"): Buffer {
  const header = Buffer.alloc(512);
  header.write(name, 0, 100, "utf8");
  header.write("0000644\0", 100);
  header.write("0000000\0", 108);
  header.write("0000000\0", 116);
  const body = Buffer.from(content, encoding);
  header.write(`${body.length.toString(8).padStart(11, "0")}\0`, 124);
  header.write("00000000000\0", 136);
  header.write("        ", 148);
  header.write(type, 156);
  header.write(linkName, 157);
  header.write("ustar\0", 257);
  header.write("00", 263);
  let sum = 0;
  for (const b of header) sum += b;
  header.write(`${sum.toString(8).padStart(6, "0")}\0 `, 148);
  const data = Buffer.alloc(Math.ceil(body.length / 512) * 512);
  body.copy(data);
  return Buffer.concat([header, data]);
}

/** "<length> key=value\n", where the length counts its own digits. */
function paxRecord(key: string, value: string): string {
  const body = ` ${key}=${value}\n`;
  let length = Buffer.byteLength(body);
  while (String(length).length + Buffer.byteLength(body) !== length) length = String(length).length + Buffer.byteLength(body);
  return `${length}${body}`;
}

function tarArchive(...entries: Buffer[]): Readable {
  const bytes = Buffer.concat([...entries, Buffer.alloc(1024)]);
  // Small chunks exercise headers and data split across reads.
  const chunks: Buffer[] = [];
  for (let i = 0; i < bytes.length; i += 300) chunks.push(bytes.subarray(i, i + 300));
  return Readable.from(chunks);
}

describe("extractTar", () => {
  test("unpacks files, folders and pax long names", async () => {
    const dest = freshDir("untar");
    const longName = `${"d".repeat(120)}/model.safetensors`;
    const pax = paxRecord("path", longName);
    await extractTar(tarArchive(tarEntry("sub/", "", "5"), tarEntry("sub/config.json", '{"a":1}'), tarEntry("PaxHeader", pax, "x"), tarEntry("ignored", "x".repeat(700))), dest);
    assert.equal(fs.readFileSync(path.join(dest, "sub", "config.json"), "utf8"), '{"a":1}');
    assert.equal(fs.readFileSync(path.join(dest, longName), "utf8"), "x".repeat(700));
  });

  for (const [what, entry] of [
    ["a parent path", tarEntry("../escape.txt", "x")],
    ["a nested parent path", tarEntry("a/../../escape.txt", "x")],
    ["an absolute path", tarEntry("/tmp/escape.txt", "x")],
    ["a symbolic link", tarEntry("link", "", "2", "/etc/passwd")],
  ] as const) {
    test(`refuses ${what}`, async () => {
      const dest = freshDir("untar");
      await assert.rejects(extractTar(tarArchive(tarEntry("ok.txt", "fine"), entry), dest), (e: unknown) => {
        assert.ok(e instanceof LoratuneError, String(e));
        assert.match(e.message, /refused/);
        return true;
      });
      assert.ok(!fs.existsSync(path.join(path.dirname(dest), "escape.txt")));
    });
  }

  test("a corrupt header is refused", async () => {
    const entry = tarEntry("ok.txt", "fine");
    entry[0] = 0x41; // changes the name without fixing the checksum
    await assert.rejects(extractTar(tarArchive(entry), freshDir("untar")), /checksum/);
  });
});

describe("fetchDatasetFile", () => {
  test("finds a dataset file in the hub cache without the network, and gives null offline", async () => {
    const cache = fs.mkdtempSync(path.join(os.tmpdir(), "loratune-ds-"));
    try {
      const snapshot = path.join(cache, "datasets--databricks--databricks-dolly-15k", "snapshots", "0123abcd");
      fs.mkdirSync(snapshot, { recursive: true });
      fs.writeFileSync(path.join(snapshot, "databricks-dolly-15k.jsonl"), "{}\n");
      assert.equal(await fetchDatasetFile("databricks/databricks-dolly-15k", "databricks-dolly-15k.jsonl", { cacheDir: cache }),
        path.join(snapshot, "databricks-dolly-15k.jsonl"));
      const saved = process.env.HF_HUB_OFFLINE;
      process.env.HF_HUB_OFFLINE = "1";
      try {
        assert.equal(await fetchDatasetFile("databricks/databricks-dolly-15k", "other.jsonl", { cacheDir: cache }), null);
      } finally {
        if (saved === undefined) delete process.env.HF_HUB_OFFLINE;
        else process.env.HF_HUB_OFFLINE = saved;
      }
    } finally {
      fs.rmSync(cache, { recursive: true, force: true });
    }
  });
});
