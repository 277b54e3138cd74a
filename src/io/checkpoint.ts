// The weights of a Hugging Face checkpoint folder: model.safetensors, or shards listed by
// model.safetensors.index.json, or a single *.safetensors file. Pickle checkpoints are refused.
import fs from "node:fs";
import path from "node:path";
import { LoratuneError } from "../errors.js";
import type { DType, Tensor } from "../tensor.js";
import { SafetensorsFile, assertNotPickle, type TensorInfo } from "./safetensors.js";

const SINGLE_FILE = "model.safetensors";
const INDEX_FILE = "model.safetensors.index.json";

/** A shard name from an index, checked to stay inside the checkpoint folder. */
export function shardPath(dir: string, shard: string, indexFile: string, tensor: string): string {
  const parts = shard.split(/[\\/]/);
  if (shard === "" || path.isAbsolute(shard) || path.win32.isAbsolute(shard) || parts.includes("..")) {
    throw new LoratuneError(
      `weight_map.${tensor}: shard "${shard}" is not a file name inside the checkpoint folder`,
      { file: indexFile, hint: "shard names must be relative paths without '..'" },
    );
  }
  return path.join(dir, shard);
}

export class CheckpointReader {
  private constructor(
    readonly dir: string,
    private readonly files: SafetensorsFile[],
    private readonly fileOf: Map<string, SafetensorsFile>,
  ) {}

  static open(dir: string): CheckpointReader {
    let stat: fs.Stats;
    try {
      stat = fs.statSync(dir);
    } catch {
      throw new LoratuneError("checkpoint folder does not exist", { file: dir });
    }
    if (!stat.isDirectory()) throw new LoratuneError("is not a folder (a checkpoint is a folder with config.json and *.safetensors)", { file: dir });

    const indexFile = path.join(dir, INDEX_FILE);
    if (fs.existsSync(indexFile)) return CheckpointReader.openIndex(dir, indexFile);
    const single = path.join(dir, SINGLE_FILE);
    if (fs.existsSync(single)) return CheckpointReader.fromFiles(dir, [SafetensorsFile.open(single)]);

    const candidates = fs.readdirSync(dir).filter((n) => n.endsWith(".safetensors")).sort();
    if (candidates.length === 1) return CheckpointReader.fromFiles(dir, [SafetensorsFile.open(path.join(dir, candidates[0]!))]);
    if (candidates.length > 1) {
      throw new LoratuneError(
        `holds ${candidates.length} .safetensors files (${candidates.join(", ")}) but no ${SINGLE_FILE} or ${INDEX_FILE} saying which are the model`,
        { file: dir },
      );
    }
    assertNotPickle(dir);
    throw new LoratuneError(`holds no model weights (${SINGLE_FILE}, ${INDEX_FILE} or another *.safetensors file)`, { file: dir });
  }

  private static openIndex(dir: string, indexFile: string): CheckpointReader {
    let index: unknown;
    try {
      index = JSON.parse(fs.readFileSync(indexFile, "utf8"));
    } catch (e) {
      throw new LoratuneError(`cannot read the shard index: ${(e as Error).message}`, { file: indexFile });
    }
    const weightMap = (index as { weight_map?: unknown } | null)?.weight_map;
    if (typeof weightMap !== "object" || weightMap === null || Array.isArray(weightMap)) {
      throw new LoratuneError("missing weight_map (an object of tensor name -> shard file)", { file: indexFile, field: "weight_map" });
    }

    const shardOf = new Map<string, string>();
    for (const [tensor, shard] of Object.entries(weightMap)) {
      if (typeof shard !== "string") {
        throw new LoratuneError(`weight_map.${tensor} must be a shard file name`, { file: indexFile });
      }
      shardOf.set(tensor, shardPath(dir, shard, indexFile, tensor));
    }

    const opened = new Map<string, SafetensorsFile>();
    try {
      for (const file of new Set(shardOf.values())) {
        if (!fs.existsSync(file)) {
          throw new LoratuneError(`names shard ${path.relative(dir, file)}, which is missing from ${dir}`, {
            file: indexFile,
            hint: "download the checkpoint again; every shard listed in the index must be present",
          });
        }
        opened.set(file, SafetensorsFile.open(file));
      }
      const fileOf = new Map<string, SafetensorsFile>();
      for (const [tensor, file] of shardOf) {
        const shard = opened.get(file)!;
        if (!shard.has(tensor)) {
          throw new LoratuneError(`weight_map.${tensor} names shard ${path.basename(file)}, which does not hold that tensor`, { file: indexFile });
        }
        fileOf.set(tensor, shard);
      }
      return new CheckpointReader(dir, [...opened.values()], fileOf);
    } catch (e) {
      for (const f of opened.values()) f.close();
      throw e;
    }
  }

  private static fromFiles(dir: string, files: SafetensorsFile[]): CheckpointReader {
    const fileOf = new Map<string, SafetensorsFile>();
    for (const f of files) for (const name of f.tensors.keys()) fileOf.set(name, f);
    return new CheckpointReader(dir, files, fileOf);
  }

  has(name: string): boolean {
    return this.fileOf.has(name);
  }

  names(): string[] {
    return [...this.fileOf.keys()];
  }

  /** The tensor's dtype, shape and place in its file. */
  info(name: string): TensorInfo & { file: string } {
    const file = this.fileFor(name);
    return { ...file.info(name), file: file.path };
  }

  read(name: string, as: DType): Tensor {
    return this.fileFor(name).read(name, as);
  }

  private fileFor(name: string): SafetensorsFile {
    const file = this.fileOf.get(name);
    if (!file) throw new LoratuneError(`checkpoint has no tensor named "${name}"`, { file: this.dir });
    return file;
  }

  close(): void {
    for (const f of this.files) f.close();
  }
}
