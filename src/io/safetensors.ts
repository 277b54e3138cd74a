// Safetensors files (https://github.com/huggingface/safetensors): an 8-byte little-endian header
// length, a JSON header {name: {dtype, shape, data_offsets}, __metadata__?}, then the raw data.
// Only the header is read at open; tensors are read on demand straight into native memory.
// Data is little-endian and so are the hosts we support: open() refuses a big-endian host.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { native } from "../backend/native.js";
import { LoratuneError } from "../errors.js";
import { Tensor, sizeOf, type DType } from "../tensor.js";

/** Storage dtypes of the safetensors format and their sizes in bytes. */
const ITEM_SIZE = {
  F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U64: 8, U32: 4, U16: 2, U8: 1, BOOL: 1,
  F8_E4M3: 1, F8_E5M2: 1,
} as const;

export type StorageDType = keyof typeof ITEM_SIZE;

export interface TensorInfo {
  name: string;
  dtype: StorageDType;
  shape: number[];
  /** Absolute byte offsets in the file: data is [begin, end). */
  begin: number;
  end: number;
}

/** Headers beyond this are corrupt, not large: Gemma 7B's header is ~30 KB. */
const MAX_HEADER_BYTES = 100 * 1024 * 1024;
/** Converted reads go through a temporary buffer of this size, so memory stays near the weights' size. */
const CHUNK_BYTES = 16 * 1024 * 1024;
/** Node reads at most 2 GiB - 1 per call. */
const MAX_READ_BYTES = 1 << 30;

const PICKLE_EXTENSIONS = [".bin", ".pt", ".pth", ".ckpt"];

function isPickleName(name: string): boolean {
  return PICKLE_EXTENSIONS.includes(path.extname(name).toLowerCase());
}

function pickleError(where: string, found: string): LoratuneError {
  return new LoratuneError(
    `holds PyTorch pickle weights (${found}): pickles can execute code and are refused`,
    {
      file: where,
      hint: "convert the checkpoint to safetensors, e.g. in Python with transformers: " +
        "AutoModelForCausalLM.from_pretrained(dir).save_pretrained(out, safe_serialization=True)",
    },
  );
}

/**
 * Refuses PyTorch pickle checkpoints: a file with a pickle extension (.bin, .pt, .pth, .ckpt), or a
 * folder that holds such files and no .safetensors file.
 */
export function assertNotPickle(target: string): void {
  let stat: fs.Stats;
  try {
    stat = fs.statSync(target);
  } catch {
    return; // a missing path is the caller's error to report
  }
  if (!stat.isDirectory()) {
    if (isPickleName(target)) throw pickleError(target, path.basename(target));
    return;
  }
  const names = fs.readdirSync(target);
  if (names.some((n) => n.endsWith(".safetensors"))) return;
  const pickles = names.filter(isPickleName);
  if (pickles.length > 0) throw pickleError(target, pickles.sort().join(", "));
}

function errorCause(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** Reads exactly `target.byteLength` bytes at `position`, looping over short reads. */
function readFully(fd: number, target: Uint8Array, position: number, file: string): void {
  let done = 0;
  while (done < target.byteLength) {
    const want = Math.min(target.byteLength - done, MAX_READ_BYTES);
    const got = fs.readSync(fd, target, done, want, position + done);
    if (got === 0) throw new LoratuneError(`unexpected end of file at byte ${position + done}`, { file });
    done += got;
  }
}

function bytesOf(data: ArrayBufferView): Uint8Array {
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

function isNonNegativeInteger(v: unknown): v is number {
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
}

export class SafetensorsFile {
  private fd: number | null;

  private constructor(
    readonly path: string,
    fd: number,
    readonly metadata: Record<string, string>,
    readonly tensors: Map<string, TensorInfo>,
  ) {
    this.fd = fd;
  }

  /** Opens a file and validates its header (the data is not read). */
  static open(file: string): SafetensorsFile {
    if (os.endianness() !== "LE") {
      throw new LoratuneError("safetensors data is little-endian and loratune reads it only on little-endian hosts", { file });
    }
    assertNotPickle(file);
    let fd: number;
    try {
      fd = fs.openSync(file, "r");
    } catch (e) {
      throw new LoratuneError(`cannot open: ${errorCause(e)}`, { file });
    }
    try {
      const { metadata, tensors } = SafetensorsFile.readHeader(fd, file);
      return new SafetensorsFile(file, fd, metadata, tensors);
    } catch (e) {
      fs.closeSync(fd);
      throw e;
    }
  }

  private static readHeader(fd: number, file: string): { metadata: Record<string, string>; tensors: Map<string, TensorInfo> } {
    const fileSize = fs.fstatSync(fd).size;
    if (fileSize < 8) {
      throw new LoratuneError(`file is ${fileSize} bytes, too short to be a safetensors file (needs an 8-byte header length)`, { file });
    }
    const lengthBytes = new Uint8Array(8);
    readFully(fd, lengthBytes, 0, file);
    const headerLength = new DataView(lengthBytes.buffer).getBigUint64(0, true);
    if (headerLength > BigInt(MAX_HEADER_BYTES)) {
      throw new LoratuneError(`header length ${headerLength} is absurd (over ${MAX_HEADER_BYTES} bytes): not a safetensors file or corrupt`, { file });
    }
    const headerBytes = Number(headerLength);
    if (8 + headerBytes > fileSize) {
      throw new LoratuneError(`header length ${headerBytes} goes beyond the end of the file (${fileSize} bytes): truncated or corrupt`, { file });
    }
    const headerBuffer = new Uint8Array(headerBytes);
    readFully(fd, headerBuffer, 8, file);
    let header: unknown;
    try {
      header = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(headerBuffer));
    } catch (e) {
      throw new LoratuneError(`header is not valid JSON: ${errorCause(e)}`, { file });
    }
    if (typeof header !== "object" || header === null || Array.isArray(header)) {
      throw new LoratuneError("header is not a JSON object", { file });
    }

    const dataStart = 8 + headerBytes;
    const dataSize = fileSize - dataStart;
    const metadata: Record<string, string> = {};
    const tensors = new Map<string, TensorInfo>();
    for (const [name, entry] of Object.entries(header as Record<string, unknown>)) {
      if (name === "__metadata__") {
        if (typeof entry !== "object" || entry === null || Array.isArray(entry)) {
          throw new LoratuneError("__metadata__ must be an object of strings", { file });
        }
        for (const [key, value] of Object.entries(entry)) {
          if (typeof value !== "string") throw new LoratuneError(`__metadata__.${key} must be a string`, { file });
          metadata[key] = value;
        }
        continue;
      }
      const info = SafetensorsFile.parseEntry(name, entry, file);
      if (info.end > dataSize) {
        throw new LoratuneError(
          `tensor "${name}": data_offsets [${info.begin}, ${info.end}] go beyond the data section (${dataSize} bytes): truncated or corrupt`,
          { file },
        );
      }
      tensors.set(name, { ...info, begin: info.begin + dataStart, end: info.end + dataStart });
    }

    const byStart = [...tensors.values()].sort((a, b) => a.begin - b.begin || a.end - b.end);
    for (let i = 1; i < byStart.length; i++) {
      const prev = byStart[i - 1]!;
      const cur = byStart[i]!;
      if (cur.begin < prev.end) {
        throw new LoratuneError(`tensor "${cur.name}" overlaps tensor "${prev.name}" in the file`, { file });
      }
    }
    return { metadata, tensors };
  }

  /** Validates one header entry; offsets are still relative to the data section. */
  private static parseEntry(name: string, entry: unknown, file: string): TensorInfo {
    const fail = (what: string) => new LoratuneError(`tensor "${name}": ${what}`, { file });
    if (typeof entry !== "object" || entry === null || Array.isArray(entry)) throw fail("entry is not an object");
    const { dtype, shape, data_offsets: offsets } = entry as Record<string, unknown>;
    if (dtype === undefined) throw fail("missing dtype");
    if (shape === undefined) throw fail("missing shape");
    if (offsets === undefined) throw fail("missing data_offsets");
    if (typeof dtype !== "string" || !Object.hasOwn(ITEM_SIZE, dtype)) {
      throw fail(`unknown dtype ${JSON.stringify(dtype)} (known: ${Object.keys(ITEM_SIZE).join(", ")})`);
    }
    if (!Array.isArray(shape) || !shape.every(isNonNegativeInteger)) {
      throw fail(`shape must be an array of non-negative integers, got ${JSON.stringify(shape)}`);
    }
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isNonNegativeInteger) || offsets[0] > offsets[1]) {
      throw fail(`data_offsets must be [begin, end] with 0 <= begin <= end, got ${JSON.stringify(offsets)}`);
    }
    const storage = dtype as StorageDType;
    const expectedBytes = sizeOf(shape) * ITEM_SIZE[storage];
    const [begin, end] = offsets as [number, number];
    if (end - begin !== expectedBytes) {
      throw fail(`shape [${shape.join(", ")}] of ${dtype} needs ${expectedBytes} bytes but data_offsets [${begin}, ${end}] span ${end - begin}`);
    }
    return { name, dtype: storage, shape: shape as number[], begin, end };
  }

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  info(name: string): TensorInfo {
    const info = this.tensors.get(name);
    if (!info) throw new LoratuneError(`no tensor named "${name}"`, { file: this.path });
    return info;
  }

  names(): string[] {
    return [...this.tensors.keys()];
  }

  /**
   * Reads a tensor into native memory as `as`: floats (F32, BF16, F16) become f32 or bf16, integers
   * (I32, I64) become i32. Same-type reads go straight into the tensor; conversions go through a
   * 16 MB buffer.
   */
  read(name: string, as: DType): Tensor {
    const info = this.info(name);
    const fd = this.openFd();
    const fail = (what: string) => new LoratuneError(`tensor "${name}": ${what}`, { file: this.path });
    const out = Tensor.zeros(info.shape, as);
    const n = out.size;
    const stored = info.dtype;

    if ((stored === "F32" && as === "f32") || (stored === "BF16" && as === "bf16") || (stored === "I32" && as === "i32")) {
      readFully(fd, bytesOf(out.data), info.begin, this.path);
      return out;
    }
    if (stored === "BF16" && as === "f32") {
      this.convertChunked(info, n, Uint16Array, (count, src, at) => native.bf16ToF32(count, src, out.f32.subarray(at, at + count)));
    } else if (stored === "F32" && as === "bf16") {
      const dst = out.data as Uint16Array;
      this.convertChunked(info, n, Float32Array, (count, src, at) => native.f32ToBf16(count, src, dst.subarray(at, at + count)));
    } else if (stored === "F16" && as === "f32") {
      this.convertChunked(info, n, Uint16Array, (count, src, at) => native.f16ToF32(count, src, out.f32.subarray(at, at + count)));
    } else if (stored === "F16" && as === "bf16") {
      const dst = out.data as Uint16Array;
      this.convertChunked(info, n, Uint16Array, (count, src, at) => native.f16ToBf16(count, src, dst.subarray(at, at + count)));
    } else if (stored === "I64" && as === "i32") {
      const dst = out.i32;
      this.convertChunked(info, n, BigInt64Array, (count, src, at) => {
        for (let i = 0; i < count; i++) {
          const v = src[i]!;
          if (v < -2147483648n || v > 2147483647n) throw fail(`value ${v} at index ${at + i} does not fit in i32`);
          dst[at + i] = Number(v);
        }
      });
    } else {
      throw fail(`cannot read ${stored} as ${as} (floats read as f32 or bf16, integers as i32)`);
    }
    return out;
  }

  /** Streams the tensor's elements through a temporary buffer; `convert` gets each chunk and its first index. */
  private convertChunked<A extends Uint16Array | Float32Array | BigInt64Array>(
    info: TensorInfo,
    count: number,
    ArrayType: { new (buffer: ArrayBuffer, byteOffset: number, length: number): A; BYTES_PER_ELEMENT: number },
    convert: (count: number, src: A, firstIndex: number) => void,
  ): void {
    const fd = this.openFd();
    const itemSize = ArrayType.BYTES_PER_ELEMENT;
    const chunkElements = Math.max(1, Math.min(count, Math.floor(CHUNK_BYTES / itemSize)));
    const buffer = native.alloc(chunkElements * itemSize);
    for (let at = 0; at < count; at += chunkElements) {
      const m = Math.min(chunkElements, count - at);
      const chunk = new ArrayType(buffer, 0, m);
      readFully(fd, bytesOf(chunk), info.begin + at * itemSize, this.path);
      convert(m, chunk, at);
    }
  }

  private openFd(): number {
    if (this.fd === null) throw new LoratuneError("file is closed", { file: this.path });
    return this.fd;
  }

  close(): void {
    if (this.fd !== null) {
      fs.closeSync(this.fd);
      this.fd = null;
    }
  }
}

const STORAGE_OF: Record<DType, StorageDType> = { f32: "F32", bf16: "BF16", i32: "I32" };

/**
 * Writes tensors (f32 as F32, bf16 as BF16, i32 as I32) atomically: into `path.tmp-<pid>`, fsync,
 * rename. The header is padded with spaces to a multiple of 8 bytes and tensors are laid out by
 * decreasing item size, then name, as the Python library does, so every tensor stays aligned.
 */
export function writeSafetensors(
  file: string,
  tensors: Array<[string, Tensor]> | Record<string, Tensor>,
  metadata?: Record<string, string>,
): void {
  const entries = Array.isArray(tensors) ? tensors : Object.entries(tensors);
  const seen = new Set<string>();
  for (const [name] of entries) {
    if (name === "__metadata__") throw new LoratuneError(`"__metadata__" cannot be a tensor name`, { file });
    if (seen.has(name)) throw new LoratuneError(`tensor "${name}" is given twice`, { file });
    seen.add(name);
  }
  const ordered = [...entries].sort(
    ([na, a], [nb, b]) => b.data.BYTES_PER_ELEMENT - a.data.BYTES_PER_ELEMENT || (na < nb ? -1 : na > nb ? 1 : 0),
  );

  const header: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length > 0) header.__metadata__ = metadata;
  let offset = 0;
  for (const [name, t] of ordered) {
    header[name] = { dtype: STORAGE_OF[t.dtype], shape: [...t.shape], data_offsets: [offset, offset + t.bytes] };
    offset += t.bytes;
  }
  const json = Buffer.from(JSON.stringify(header), "utf8");
  const padded = Math.ceil(json.length / 8) * 8;
  const head = Buffer.alloc(8 + padded, 0x20);
  head.writeBigUInt64LE(BigInt(padded), 0);
  json.copy(head, 8);

  const temp = `${file}.tmp-${process.pid}`;
  let fd: number | null = null;
  try {
    fd = fs.openSync(temp, "w");
    fs.writeSync(fd, head);
    for (const [, t] of ordered) {
      const bytes = bytesOf(t.data);
      for (let done = 0; done < bytes.byteLength; ) {
        done += fs.writeSync(fd, bytes, done, Math.min(bytes.byteLength - done, MAX_READ_BYTES));
      }
    }
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fd = null;
    fs.renameSync(temp, file);
  } catch (e) {
    if (fd !== null) fs.closeSync(fd);
    try {
      fs.rmSync(temp, { force: true });
    } catch {
      // the temporary file was never created (e.g. the parent is not a folder)
    }
    throw new LoratuneError(`cannot write safetensors file: ${errorCause(e)}`, { file });
  }
}
