// Merging LoRA adapters into the base weights (W += scale · B·A) and writing the result as a
// Hugging Face checkpoint folder that transformers, and loadModelDir, read.
import fs from "node:fs";
import path from "node:path";
import { native } from "../backend/native.js";
import { LoratuneError } from "../errors.js";
import { copyFileDurably, writeFileDurably, writeFolderAtomically } from "../io/atomic.js";
import { writeSafetensors } from "../io/safetensors.js";
import { configToJson } from "../models/config.js";
import type { CausalLM } from "../models/model.js";
import type { Tensor } from "../tensor.js";
import { moduleOf } from "./lora.js";

/** Rows of a bf16 weight converted to f32 at once while merging (bounds the temporary buffer). */
const MERGE_CHUNK_ELEMENTS = 1 << 22;

/**
 * Adds every adapter into its weight, W += scale · B·A (per head for Keras's layout: head h's rows
 * get scale · B · A[h*r:(h+1)*r]), then removes the adapters. The product is accumulated in f32; a
 * bf16 weight is widened to f32 in row chunks, merged and rounded back to bf16 (nearest even), so
 * the weights keep their dtype. Returns the merged module names.
 */
export function mergeLora(model: CausalLM): string[] {
  const merged: string[] = [];
  const adapted = model.linears().filter((l) => l.lora);
  // Check every adapter first so that a bad one leaves the model untouched.
  for (const linear of adapted) {
    const { A, B, groups } = linear.lora!;
    const r = A.shape[0]! / groups;
    const d = linear.outFeatures / groups;
    if (!Number.isInteger(r) || !Number.isInteger(d) || A.shape[1] !== linear.inFeatures || B.shape[0] !== d || B.shape[1] !== r) {
      throw new LoratuneError(`${moduleOf(linear)}: adapter shapes A [${A.shape.join(", ")}], B [${B.shape.join(", ")}] ` +
        `with ${groups} group(s) do not fit the weight [${linear.weight.shape.join(", ")}]`);
    }
    if (linear.weight.dtype === "i32") throw new LoratuneError(`${linear.name} is not a floating-point weight`);
  }
  for (const linear of adapted) {
    const { A, B, scale, groups } = linear.lora!;
    const inF = linear.inFeatures;
    const r = A.shape[0]! / groups;
    const d = linear.outFeatures / groups;
    const a = A.dtype === "f32" ? A.f32 : A.toF32().f32;
    const b = B.dtype === "f32" ? B.f32 : B.toF32().f32;
    const w = linear.weight;
    const chunk = Math.max(1, Math.min(d, Math.floor(MERGE_CHUNK_ELEMENTS / inF)));
    const scratch = w.dtype === "bf16" ? new Float32Array(native.alloc(chunk * inF * 4)) : null;
    for (let h = 0; h < groups; h++) {
      const ah = a.subarray(h * r * inF, (h + 1) * r * inF);
      for (let i0 = 0; i0 < d; i0 += chunk) {
        const rows = Math.min(chunk, d - i0);
        const first = (h * d + i0) * inF;
        const n = rows * inF;
        const bRows = b.subarray(i0 * r, (i0 + rows) * r);
        if (scratch) {
          const bf = (w.data as Uint16Array).subarray(first, first + n);
          const tmp = scratch.subarray(0, n);
          native.bf16ToF32(n, bf, tmp);
          native.gemm(false, false, rows, inF, r, scale, bRows, r, ah, inF, 1, tmp, inF);
          native.f32ToBf16(n, tmp, bf);
        } else {
          native.gemm(false, false, rows, inF, r, scale, bRows, r, ah, inF, 1, w.f32.subarray(first, first + n), inF);
        }
      }
    }
    linear.lora = null;
    merged.push(moduleOf(linear));
  }
  model.lora = null;
  return merged;
}

export interface SaveModelOptions {
  /** The base checkpoint folder: its tokenizer and generation files are copied (those present). */
  tokenizerDir?: string;
  /** Shard beyond this many bytes of weights (default 2 GB, as transformers' "2GB"). */
  maxShardBytes?: number;
}

/** Files copied from the base folder when present. */
export const TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model", "generation_config.json"];

const DEFAULT_MAX_SHARD_BYTES = 2_000_000_000;

/**
 * Writes the model as a Hugging Face checkpoint folder: config.json, model.safetensors (or shards
 * model-0000i-of-0000n.safetensors with model.safetensors.index.json when the weights exceed
 * maxShardBytes), tensors under their Hugging Face names in the dtype they are held in (matrices f32
 * or bf16, norms f32), and the tokenizer files of `tokenizerDir`. The folder is written atomically;
 * an existing checkpoint folder at `dir` is replaced whole. Returns the file names written.
 */
export function saveModel(model: CausalLM, dir: string, options: SaveModelOptions = {}): string[] {
  const adapted = model.linears().filter((l) => l.lora);
  if (adapted.length > 0) {
    throw new LoratuneError(`the model still has ${adapted.length} LoRA adapter(s) (e.g. ${moduleOf(adapted[0]!)}), which a checkpoint cannot hold`, {
      hint: "merge them first (mergeLora), or save them separately with saveAdapter",
    });
  }
  const maxShardBytes = options.maxShardBytes ?? DEFAULT_MAX_SHARD_BYTES;
  if (!(maxShardBytes > 0)) throw new LoratuneError(`maxShardBytes must be > 0, got ${maxShardBytes}`, { field: "maxShardBytes" });
  const tokenizerDir = options.tokenizerDir;
  if (tokenizerDir !== undefined) {
    if (!fs.existsSync(tokenizerDir) || !fs.statSync(tokenizerDir).isDirectory()) {
      throw new LoratuneError("tokenizer folder does not exist", { file: tokenizerDir, field: "tokenizerDir" });
    }
    if (path.resolve(tokenizerDir) === path.resolve(dir)) {
      throw new LoratuneError("would replace the base model folder it copies the tokenizer from", {
        file: dir,
        hint: "write the merged model to a new folder",
      });
    }
  }

  const weights = [...model.weights()];
  for (const [name, t] of weights) {
    if (t.dtype === "i32") throw new LoratuneError(`weight ${name} is i32; checkpoints hold f32 or bf16 weights`);
  }
  const config = configToJson(model.config);
  const matrices = weights.filter(([, t]) => t.shape.length >= 2);
  config.torch_dtype = matrices.some(([, t]) => t.dtype === "bf16") ? "bfloat16" : "float32";

  // Shards in model order, each up to maxShardBytes (a tensor larger than that gets its own shard).
  const shards: Array<Array<[string, Tensor]>> = [[]];
  let shardBytes = 0;
  let totalBytes = 0;
  for (const entry of weights) {
    const bytes = entry[1].bytes;
    if (shardBytes + bytes > maxShardBytes && shards[shards.length - 1]!.length > 0) {
      shards.push([]);
      shardBytes = 0;
    }
    shards[shards.length - 1]!.push(entry);
    shardBytes += bytes;
    totalBytes += bytes;
  }

  const written: string[] = [];
  writeFolderAtomically(dir, "config.json", "a model checkpoint folder", (temp) => {
    writeFileDurably(path.join(temp, "config.json"), `${JSON.stringify(config, null, 2)}\n`);
    written.push("config.json");
    if (shards.length === 1) {
      writeSafetensors(path.join(temp, "model.safetensors"), shards[0]!, { format: "pt" });
      written.push("model.safetensors");
    } else {
      const n = shards.length;
      const pad = (i: number) => String(i).padStart(5, "0");
      const weightMap: Record<string, string> = {};
      shards.forEach((shard, i) => {
        const file = `model-${pad(i + 1)}-of-${pad(n)}.safetensors`;
        writeSafetensors(path.join(temp, file), shard, { format: "pt" });
        for (const [name] of shard) weightMap[name] = file;
        written.push(file);
      });
      const sorted = Object.fromEntries(Object.keys(weightMap).sort().map((k) => [k, weightMap[k]!]));
      const index = { metadata: { total_size: totalBytes }, weight_map: sorted };
      writeFileDurably(path.join(temp, "model.safetensors.index.json"), `${JSON.stringify(index, null, 2)}\n`);
      written.push("model.safetensors.index.json");
    }
    if (tokenizerDir !== undefined) {
      for (const name of TOKENIZER_FILES) {
        const from = path.join(tokenizerDir, name);
        if (!fs.existsSync(from)) continue;
        copyFileDurably(from, path.join(temp, name));
        written.push(name);
      }
    }
  });
  return written;
}
