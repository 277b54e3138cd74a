// Datasets shipped with the package under assets/data, addressed by name (`--data dolly`).
import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { DataFormat } from "./formats.js";

export interface BuiltinDataset {
  /** Relative to the package root. */
  path: string;
  format: DataFormat;
  description: string;
  license: string;
}

export const BUILTIN_DATASETS: Readonly<Record<string, BuiltinDataset>> = {
  dolly: {
    path: "assets/data/dolly/databricks-dolly-15k.first2500.jsonl",
    format: "dolly",
    description: "databricks-dolly-15k, first 2,500 records (1,724 with no context)",
    license: "CC BY-SA 3.0, Databricks, Inc.",
  },
  "alpaca-llms-from-scratch": {
    path: "assets/data/alpaca-llms-from-scratch/instruction-data.json",
    format: "alpaca",
    description: "1,100 Alpaca-style instruction/input/output records from rasbt/LLMs-from-scratch ch07",
    license: "Apache-2.0, Sebastian Raschka",
  },
};

let cachedRoot: string | undefined;

/**
 * The folder holding loratune's package.json, found by walking up from this module, so the assets
 * resolve the same from src/ (tests), dist/src/ (the build) and node_modules/loratune (an install).
 */
export function packageRoot(): string {
  if (cachedRoot !== undefined) return cachedRoot;
  let folder = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const manifest = join(folder, "package.json");
    if (existsSync(manifest) && (JSON.parse(readFileSync(manifest, "utf8")) as { name?: unknown }).name === "loratune") {
      cachedRoot = folder;
      return folder;
    }
    const parent = dirname(folder);
    if (parent === folder) throw new Error(`loratune's package.json not found above ${fileURLToPath(import.meta.url)}`);
    folder = parent;
  }
}

export function builtinDatasetPath(name: string): string | undefined {
  const dataset = Object.hasOwn(BUILTIN_DATASETS, name) ? BUILTIN_DATASETS[name] : undefined;
  return dataset && join(packageRoot(), dataset.path);
}
