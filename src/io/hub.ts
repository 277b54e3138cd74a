// Model downloads into the standard caches: the Hugging Face hub cache (through @huggingface/hub,
// token from HF_TOKEN) or Kaggle's (kagglehub's layout, credentials from KAGGLE_USERNAME/KAGGLE_KEY
// or kaggle.json). A model already in a cache is used without touching the network. Only the files
// a Hugging Face-format checkpoint needs are fetched.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { ReadableStream as WebReadableStream } from "node:stream/web";
import zlib from "node:zlib";
import { downloadFileToCacheDir, getHFHubCachePath, listFiles, modelInfo } from "@huggingface/hub";
import { LoratuneError } from "../errors.js";
import { findPreset } from "../models/presets.js";
import { shardPath } from "./checkpoint.js";

export interface FetchModelOptions {
  /** Where to download from; "auto" tries Hugging Face, then Kaggle when Kaggle credentials exist. */
  source?: "auto" | "hf" | "kaggle";
  /** Hugging Face branch, tag or commit (default "main"). */
  revision?: string;
  /** Hugging Face hub cache (default: HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub). */
  cacheDir?: string;
  /** kagglehub cache (default: KAGGLEHUB_CACHE, else ~/.cache/kagglehub). */
  kaggleCacheDir?: string;
  /** How long to wait for a server to answer a request before giving up (default 30 s). */
  timeoutMs?: number;
  /** The fetch to use (default: the global one). */
  fetch?: typeof fetch;
  /** Progress lines (default: silent). */
  log?: (line: string) => void;
}

const CHECKPOINT_FILES = new Set(["config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json", "model.safetensors.index.json"]);
const INDEX_FILE = "model.safetensors.index.json";
const KAGGLE_API = "https://www.kaggle.com/api/v1";

interface ModelSource {
  /** What the user asked for, as shown in messages. */
  label: string;
  hfRepo?: string;
  kaggleHandle?: string;
}

function resolveSource(model: string): ModelSource {
  const preset = findPreset(model);
  if (preset) return { label: preset.hfRepo, hfRepo: preset.hfRepo, kaggleHandle: preset.kaggleHandle };
  const parts = model.split("/");
  const valid = parts.every((p) => /^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(p) && p !== "..");
  if (valid && parts.length === 2) return { label: model, hfRepo: model };
  if (valid && (parts.length === 4 || (parts.length === 5 && /^\d+$/.test(parts[4]!)))) return { label: model, kaggleHandle: model };
  throw new LoratuneError(`"${model}" is not a preset, a Hugging Face repository (org/name) or a Kaggle handle (owner/model/framework/variation)`, {
    hint: "run `loratune presets` for the preset names, or pass --model <folder> with a local checkpoint",
  });
}

/** Whether `dir` holds config.json and every weight file it needs (all shards of an index). */
function isCompleteCheckpoint(dir: string): boolean {
  if (!fs.existsSync(path.join(dir, "config.json"))) return false;
  const index = path.join(dir, INDEX_FILE);
  if (fs.existsSync(index)) {
    try {
      const shards = Object.values((JSON.parse(fs.readFileSync(index, "utf8")) as { weight_map: Record<string, string> }).weight_map);
      return shards.every((s) => fs.existsSync(path.join(dir, s)));
    } catch {
      return false;
    }
  }
  return fs.readdirSync(dir).some((n) => n.endsWith(".safetensors"));
}

/** Adds a deadline for the response headers (not the body, which may take long to stream). */
function withResponseTimeout(fetchImpl: typeof fetch, ms: number): typeof fetch {
  return async (input, init) => {
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(new Error(`no response within ${ms} ms`)), ms);
    const signal = init?.signal ? AbortSignal.any([init.signal, controller.signal]) : controller.signal;
    try {
      return await fetchImpl(input, { ...init, signal });
    } finally {
      clearTimeout(timer);
    }
  };
}

/** An error from writing the cache (disk full, permissions), as opposed to the network: it names a path. */
function isFileSystemError(e: unknown): e is NodeJS.ErrnoException {
  return e instanceof Error && typeof (e as NodeJS.ErrnoException).path === "string";
}

function cannotDownload(label: string, hint: string, cause: unknown): LoratuneError {
  if (isFileSystemError(cause)) {
    return new LoratuneError(`cannot write the download of ${label}: ${cause.message}`, { hint: "check the free space and permissions of the cache folder" });
  }
  const error = new LoratuneError(`cannot download ${label} (no network or no access)`, { hint });
  error.cause = cause;
  return error;
}

function hfHint(repo: string): string {
  const url = `https://huggingface.co/${repo}`;
  return repo.toLowerCase().startsWith("google/gemma")
    ? `accept the Gemma licence at ${url} and set HF_TOKEN, or pass --model <folder> with a local checkpoint`
    : `check ${url} and your access to it (set HF_TOKEN), or pass --model <folder> with a local checkpoint`;
}

function kaggleHint(handle: string): string {
  const [owner, model] = handle.split("/");
  return `accept the licence at https://www.kaggle.com/models/${owner}/${model} and set KAGGLE_USERNAME and KAGGLE_KEY, or pass --model <folder> with a local checkpoint`;
}

// ---- Hugging Face ----

function hfStorageFolder(cacheDir: string, repo: string): string {
  return path.join(cacheDir, `models--${repo.split("/").join("--")}`);
}

/** The cached snapshot of `repo` at `revision`, when complete. */
function cachedHfSnapshot(cacheDir: string, repo: string, revision: string): string | undefined {
  const storage = hfStorageFolder(cacheDir, repo);
  let commit = revision;
  if (!/^[0-9a-f]{40}$/.test(revision)) {
    try {
      commit = fs.readFileSync(path.join(storage, "refs", revision), "utf8").trim();
    } catch {
      return undefined;
    }
  }
  const snapshot = path.join(storage, "snapshots", commit);
  return isCompleteCheckpoint(snapshot) ? snapshot : undefined;
}

async function downloadFromHf(repo: string, revision: string, cacheDir: string, fetchImpl: typeof fetch, log: (line: string) => void): Promise<string> {
  const credentials = { accessToken: process.env.HF_TOKEN ?? process.env.HUGGING_FACE_HUB_TOKEN, fetch: fetchImpl };
  const { sha } = await modelInfo({ name: repo, revision, additionalFields: ["sha"], ...credentials });
  const files = new Map<string, number>();
  for await (const entry of listFiles({ repo, revision: sha, ...credentials })) {
    if (entry.type === "file") files.set(entry.path, entry.size);
  }
  const fetchFile = async (file: string) => {
    log(`downloading ${repo}/${file} (${((files.get(file) ?? 0) / 2 ** 20).toFixed(1)} MiB)`);
    return downloadFileToCacheDir({ repo, path: file, revision: sha, cacheDir, ...credentials });
  };

  for (const file of files.keys()) if (CHECKPOINT_FILES.has(file)) await fetchFile(file);
  const snapshot = path.join(hfStorageFolder(cacheDir, repo), "snapshots", sha);
  // The weights: the shards an index names, else model.safetensors, else every top-level *.safetensors.
  let weights: string[];
  if (files.has(INDEX_FILE)) {
    const index = JSON.parse(fs.readFileSync(path.join(snapshot, INDEX_FILE), "utf8")) as { weight_map: Record<string, string> };
    // Shard names come from the repository: refuse any that would be written outside the snapshot.
    weights = [...new Set(Object.entries(index.weight_map).map(([tensor, shard]) => {
      shardPath(snapshot, shard, path.join(snapshot, INDEX_FILE), tensor);
      return shard;
    }))];
  } else if (files.has("model.safetensors")) {
    weights = ["model.safetensors"];
  } else {
    weights = [...files.keys()].filter((f) => f.endsWith(".safetensors"));
  }
  if (weights.length === 0) throw new LoratuneError(`${repo} has no safetensors weights`, { hint: "loratune reads Hugging Face checkpoints in the safetensors format" });
  for (const file of weights) await fetchFile(file);

  if (revision !== sha) {
    fs.mkdirSync(path.join(hfStorageFolder(cacheDir, repo), "refs"), { recursive: true });
    fs.writeFileSync(path.join(hfStorageFolder(cacheDir, repo), "refs", revision), sha);
  }
  return snapshot;
}

// ---- Kaggle ----

interface KaggleCredentials {
  username: string;
  key: string;
}

function kaggleCredentials(): KaggleCredentials | undefined {
  const { KAGGLE_USERNAME: username, KAGGLE_KEY: key } = process.env;
  if (username && key) return { username, key };
  const file = path.join(process.env.KAGGLE_CONFIG_DIR ?? path.join(os.homedir(), ".kaggle"), "kaggle.json");
  try {
    const json = JSON.parse(fs.readFileSync(file, "utf8")) as Partial<KaggleCredentials>;
    if (typeof json.username === "string" && typeof json.key === "string") return { username: json.username, key: json.key };
  } catch {
    // no usable kaggle.json
  }
  return undefined;
}

/** kagglehub's layout: models/<owner>/<model>/<framework>/<variation>/<version>, done when <version>.complete exists. */
function kaggleVariationFolder(cacheDir: string, handle: string): string {
  return path.join(cacheDir, "models", ...handle.split("/").slice(0, 4));
}

/** The checkpoint folder inside an unpacked archive: the top level, or its only subfolder. */
function checkpointFolderIn(dir: string): string | undefined {
  if (isCompleteCheckpoint(dir)) return dir;
  const entries = fs.readdirSync(dir, { withFileTypes: true });
  if (entries.length === 1 && entries[0]!.isDirectory()) {
    const inner = path.join(dir, entries[0]!.name);
    if (isCompleteCheckpoint(inner)) return inner;
  }
  return undefined;
}

/** The newest completely downloaded version (or the one the handle names). */
function cachedKaggleModel(cacheDir: string, handle: string): string | undefined {
  const folder = kaggleVariationFolder(cacheDir, handle);
  const pinned = handle.split("/")[4];
  let versions: number[];
  try {
    versions = fs.readdirSync(folder).filter((n) => /^\d+\.complete$/.test(n)).map((n) => Number.parseInt(n, 10));
  } catch {
    return undefined;
  }
  for (const version of versions.sort((a, b) => b - a)) {
    if (pinned !== undefined && String(version) !== pinned) continue;
    const dir = path.join(folder, String(version));
    const checkpoint = fs.existsSync(dir) ? checkpointFolderIn(dir) : undefined;
    if (checkpoint) return checkpoint;
  }
  return undefined;
}

async function downloadFromKaggle(handle: string, cacheDir: string, fetchImpl: typeof fetch, log: (line: string) => void): Promise<string> {
  const credentials = kaggleCredentials();
  if (!credentials) throw new Error("no Kaggle credentials");
  const headers = { Authorization: `Basic ${Buffer.from(`${credentials.username}:${credentials.key}`).toString("base64")}` };
  const instance = handle.split("/").slice(0, 4).join("/");
  let version = handle.split("/")[4];
  if (version === undefined) {
    const response = await fetchImpl(`${KAGGLE_API}/models/${instance}/get`, { headers });
    if (!response.ok) throw new Error(`Kaggle answered HTTP ${response.status} for ${instance}`);
    version = String(((await response.json()) as { versionNumber: number }).versionNumber);
  }
  const response = await fetchImpl(`${KAGGLE_API}/models/${instance}/${version}/download`, { headers });
  if (!response.ok || !response.body) throw new Error(`Kaggle answered HTTP ${response.status} for ${instance}/${version}`);
  log(`downloading ${instance}/${version} from Kaggle`);

  const folder = kaggleVariationFolder(cacheDir, handle);
  const target = path.join(folder, version);
  const partial = `${target}.partial-${process.pid}`;
  fs.rmSync(partial, { recursive: true, force: true });
  const gunzip = zlib.createGunzip();
  try {
    await Promise.all([
      pipeline(Readable.fromWeb(response.body as WebReadableStream<Uint8Array>), gunzip),
      extractTar(gunzip, partial).catch((e: unknown) => {
        gunzip.destroy();
        throw e;
      }),
    ]);
    fs.rmSync(target, { recursive: true, force: true });
    fs.renameSync(partial, target);
  } catch (e) {
    fs.rmSync(partial, { recursive: true, force: true });
    throw e;
  }
  fs.writeFileSync(path.join(folder, `${version}.complete`), "");
  const checkpoint = checkpointFolderIn(target);
  if (!checkpoint) throw new LoratuneError(`the Kaggle model ${handle} is not a Hugging Face checkpoint (no config.json and safetensors weights)`, { file: target });
  return checkpoint;
}

// ---- tar ----

/** Pulls exact byte counts out of a stream of chunks. */
class ByteReader {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private readonly iterator: AsyncIterator<Uint8Array>;

  constructor(input: AsyncIterable<Uint8Array>) {
    this.iterator = input[Symbol.asyncIterator]();
  }

  /** Buffers at least `n` bytes; false at the end of the stream. */
  private async fill(n: number): Promise<boolean> {
    while (this.buffered < n) {
      const next = await this.iterator.next();
      if (next.done) return false;
      const chunk = Buffer.from(next.value.buffer, next.value.byteOffset, next.value.byteLength);
      this.chunks.push(chunk);
      this.buffered += chunk.length;
    }
    return true;
  }

  /** Up to `max` bytes (at least one); throws at the end of the stream. */
  async some(max: number): Promise<Buffer> {
    if (!(await this.fill(1))) throw new Error("archive is truncated");
    const head = this.chunks[0]!;
    const piece = head.subarray(0, Math.min(max, head.length));
    if (piece.length === head.length) this.chunks.shift();
    else this.chunks[0] = head.subarray(piece.length);
    this.buffered -= piece.length;
    return piece;
  }

  /** Exactly `n` bytes, or null when the stream ends first. */
  async exactly(n: number): Promise<Buffer | null> {
    if (!(await this.fill(n))) return null;
    const parts: Buffer[] = [];
    for (let got = 0; got < n; ) {
      const piece = await this.some(n - got);
      parts.push(piece);
      got += piece.length;
    }
    return parts.length === 1 ? parts[0]! : Buffer.concat(parts);
  }
}

function tarString(block: Buffer, offset: number, length: number): string {
  const field = block.subarray(offset, offset + length);
  const end = field.indexOf(0);
  return field.subarray(0, end === -1 ? length : end).toString("utf8");
}

/** A numeric header field: octal text, or base-256 when the top bit is set (sizes over 8 GB). */
function tarNumber(block: Buffer, offset: number, length: number): number {
  if (block[offset]! & 0x80) {
    let value = block[offset]! & 0x7f;
    for (let i = 1; i < length; i++) value = value * 256 + block[offset + i]!;
    return value;
  }
  const text = tarString(block, offset, length).trim();
  return text === "" ? 0 : Number.parseInt(text, 8);
}

/** pax extended header records: "<length> <key>=<value>\n". */
function parsePax(data: Buffer): Map<string, string> {
  const records = new Map<string, string>();
  let at = 0;
  while (at < data.length) {
    const space = data.indexOf(0x20, at);
    if (space === -1) break;
    const length = Number.parseInt(data.subarray(at, space).toString("ascii"), 10);
    if (!(length > 0)) break;
    const record = data.subarray(space + 1, at + length - 1).toString("utf8");
    const eq = record.indexOf("=");
    if (eq > 0) records.set(record.slice(0, eq), record.slice(eq + 1));
    at += length;
  }
  return records;
}

/** The path an entry may be written to: inside `root`, or an error. */
function entryPath(root: string, name: string): string {
  const segments = name.split(/[\\/]/);
  const target = path.resolve(root, name);
  if (name.includes("\0") || path.isAbsolute(name) || segments.includes("..") || (target !== root && !target.startsWith(root + path.sep))) {
    throw new LoratuneError(`archive entry "${name}" would be written outside the cache folder; the archive is refused`, { file: root });
  }
  return target;
}

/**
 * Unpacks a tar stream (ustar, pax and GNU long names) into `dest`. Entries that would land outside
 * `dest`, links and device files are refused.
 */
export async function extractTar(input: AsyncIterable<Uint8Array>, dest: string): Promise<void> {
  const root = path.resolve(dest);
  fs.mkdirSync(root, { recursive: true });
  const reader = new ByteReader(input);
  let longName: string | undefined;
  let pax = new Map<string, string>();

  for (;;) {
    const block = await reader.exactly(512);
    if (block === null || block.every((b) => b === 0)) return;
    let checksum = 0;
    for (let i = 0; i < 512; i++) checksum += i >= 148 && i < 156 ? 0x20 : block[i]!;
    if (checksum !== tarNumber(block, 148, 8)) throw new LoratuneError("archive is corrupt (bad tar header checksum)", { file: root });

    const type = String.fromCharCode(block[156]!);
    const prefix = block.subarray(257, 262).toString("ascii") === "ustar" ? tarString(block, 345, 155) : "";
    const name = pax.get("path") ?? longName ?? (prefix ? `${prefix}/${tarString(block, 0, 100)}` : tarString(block, 0, 100));
    const size = pax.has("size") ? Number(pax.get("size")) : tarNumber(block, 124, 12);
    const padding = (512 - (size % 512)) % 512;

    if (type === "x" || type === "L" || type === "g") {
      const data = await reader.exactly(size + padding);
      if (data === null) throw new LoratuneError("archive is truncated", { file: root });
      if (type === "x") pax = parsePax(data.subarray(0, size));
      if (type === "L") longName = tarString(data, 0, size);
      continue;
    }
    longName = undefined;
    pax = new Map();

    if (type === "5") {
      fs.mkdirSync(entryPath(root, name), { recursive: true });
    } else if (type === "0" || type === "\0" || type === "7") {
      const target = entryPath(root, name);
      fs.mkdirSync(path.dirname(target), { recursive: true });
      const fd = fs.openSync(target, "w");
      try {
        for (let left = size; left > 0; ) {
          const piece = await reader.some(left);
          fs.writeSync(fd, piece);
          left -= piece.length;
        }
      } finally {
        fs.closeSync(fd);
      }
      if (padding > 0 && (await reader.exactly(padding)) === null) throw new LoratuneError("archive is truncated", { file: root });
    } else {
      throw new LoratuneError(`archive entry "${name}" is a link or special file (tar type ${JSON.stringify(type)}); the archive is refused`, { file: root });
    }
  }
}

// ---- entry point ----

/**
 * A local folder holding the model's Hugging Face checkpoint, from a cache or downloaded into it.
 * `model` is a preset name (gemma_2b_en), a Hugging Face repository (google/gemma-2b) or a Kaggle
 * handle (google/gemma/transformers/2b). Fails with a two-line LoratuneError (message and hint)
 * when the model cannot be downloaded.
 */
export async function fetchModel(model: string, opts: FetchModelOptions = {}): Promise<string> {
  const source = resolveSource(model);
  const mode = opts.source ?? "auto";
  const revision = opts.revision ?? "main";
  const hfCache = opts.cacheDir ?? getHFHubCachePath();
  const kaggleCache = opts.kaggleCacheDir ?? process.env.KAGGLEHUB_CACHE ?? path.join(os.homedir(), ".cache", "kagglehub");
  const useHf = mode !== "kaggle" && source.hfRepo !== undefined;
  const useKaggle = mode !== "hf" && source.kaggleHandle !== undefined;
  if (!useHf && !useKaggle) {
    throw new LoratuneError(`${model} cannot be downloaded from ${mode === "hf" ? "Hugging Face" : "Kaggle"}`, {
      hint: `download it from ${mode === "hf" ? "Kaggle" : "Hugging Face"} instead, or pass --model <folder> with a local checkpoint`,
    });
  }

  const cached = (useHf ? cachedHfSnapshot(hfCache, source.hfRepo!, revision) : undefined) ??
    (useKaggle ? cachedKaggleModel(kaggleCache, source.kaggleHandle!) : undefined);
  if (cached) return cached;

  const fetchImpl = withResponseTimeout(opts.fetch ?? fetch, opts.timeoutMs ?? 30_000);
  const log = opts.log ?? (() => {});
  let hfFailure: unknown;
  if (useHf) {
    try {
      return await downloadFromHf(source.hfRepo!, revision, hfCache, fetchImpl, log);
    } catch (e) {
      if (e instanceof LoratuneError) throw e;
      if (!useKaggle || !kaggleCredentials()) throw cannotDownload(source.label, hfHint(source.hfRepo!), e);
      hfFailure = e;
    }
  }
  try {
    return await downloadFromKaggle(source.kaggleHandle!, kaggleCache, fetchImpl, log);
  } catch (e) {
    if (e instanceof LoratuneError) throw e;
    // When Hugging Face was tried first, its hint is the one to follow (unless the disk failed).
    if (useHf && !isFileSystemError(e)) throw cannotDownload(source.label, hfHint(source.hfRepo!), hfFailure);
    throw cannotDownload(source.label, kaggleHint(source.kaggleHandle!), e);
  }
}

/**
 * One file of a Hugging Face dataset repository, from the hub cache or downloaded into it (e.g.
 * databricks/databricks-dolly-15k's databricks-dolly-15k.jsonl). Returns null when it cannot be had
 * (no network, HF_HUB_OFFLINE set), so that the caller can fall back to a copy it ships.
 */
export async function fetchDatasetFile(repo: string, file: string, opts: { cacheDir?: string; timeoutMs?: number } = {}): Promise<string | null> {
  const cacheDir = opts.cacheDir ?? getHFHubCachePath();
  const snapshots = path.join(cacheDir, `datasets--${repo.split("/").join("--")}`, "snapshots");
  if (fs.existsSync(snapshots)) {
    for (const commit of fs.readdirSync(snapshots)) {
      const cached = path.join(snapshots, commit, file);
      if (fs.existsSync(cached)) return cached;
    }
  }
  if (process.env.HF_HUB_OFFLINE && process.env.HF_HUB_OFFLINE !== "0") return null;
  try {
    return await downloadFileToCacheDir({
      repo: { type: "dataset", name: repo }, path: file, cacheDir,
      accessToken: process.env.HF_TOKEN ?? process.env.HUGGING_FACE_HUB_TOKEN,
      fetch: withResponseTimeout(fetch, opts.timeoutMs ?? 15_000),
    });
  } catch {
    return null;
  }
}
