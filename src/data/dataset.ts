// Loading a dataset: read a file (or a built-in one), turn records into examples, filter, shuffle,
// limit and split off an eval set, recording how many rows each step kept.
import { existsSync } from "node:fs";
import { LoratuneError } from "../errors.js";
import { BUILTIN_DATASETS, builtinDatasetPath } from "./builtins.js";
import { type DataFormat, type Example, type FormatOptions, type FormattedRow, formatRecords } from "./formats.js";
import { Random } from "../generation/random.js";
import { type BadRowHandler, type FileFormat, readRecords } from "./readers.js";

export interface DatasetSpec extends FormatOptions {
  /** A file path, or the name of a built-in dataset (`dolly`). */
  source: string;
  /** Overrides detection from the extension and the content. */
  fileFormat?: FileFormat;
  /** Keep only rows whose dolly `context` / alpaca `input` is empty after trimming (the walkthrough's filter). */
  noContext?: boolean;
  /** Keep only rows with one of these categories. */
  categories?: readonly string[];
  /** Keep the first `limit` rows after filtering (and shuffling); applied before the eval split. */
  limit?: number;
  shuffle?: boolean;
  /** Seeds the shuffle and the eval split; default 0. */
  seed?: number;
  /** Share of the rows held out for evaluation, in [0, 1); default 0. */
  evalFraction?: number;
  /** Count and skip rows that fail to parse or lack a field, instead of stopping at the first. */
  skipBadRows?: boolean;
}

export interface SelectionStep {
  /** `no-context`, `category` or `limit`. */
  name: string;
  /** The step's setting, e.g. the categories or the limit. */
  detail?: string;
  kept: number;
  of: number;
}

export interface DatasetPlan {
  source: string;
  /** The file read (the asset's path for a built-in dataset). */
  file: string;
  fileFormat: FileFormat;
  format: DataFormat;
  /** Data rows in the file, bad ones included. */
  rowsRead: number;
  skippedBadRows: number;
  /** The messages of the first skipped rows, to show the user. */
  badRowErrors: string[];
  /** The filters and the limit, in the order applied. */
  steps: SelectionStep[];
  limit?: number;
  shuffled: boolean;
  seed: number;
  evalFraction: number;
  train: number;
  eval: number;
}

export interface Dataset {
  train: Example[];
  eval: Example[];
  plan: DatasetPlan;
}

const BAD_ROW_ERRORS_KEPT = 5;

export function loadDataset(spec: DatasetSpec): Dataset {
  checkSpec(spec);
  const { file, defaultFormat } = resolveSource(spec.source);
  const seed = spec.seed ?? 0;
  const evalFraction = spec.evalFraction ?? 0;

  const badRowErrors: string[] = [];
  let skippedBadRows = 0;
  const onBadRow: BadRowHandler = (error) => {
    if (!spec.skipBadRows) throw error;
    skippedBadRows++;
    if (badRowErrors.length < BAD_ROW_ERRORS_KEPT) badRowErrors.push(error.message);
  };
  const ensureRowsLeft = (kept: number, of: number, after: string, hint?: () => string) => {
    if (kept === 0) throw new LoratuneError(`0 of ${of} rows left after ${after}`, { file, hint: hint?.() });
  };

  const recordFile = readRecords(file, { fileFormat: spec.fileFormat, onBadRow });
  const rowsRead = recordFile.records.length + recordFile.badRows;
  const allBadHint = () => `every row is bad; the first: ${badRowErrors[0]}`;
  ensureRowsLeft(recordFile.records.length, rowsRead, "skipping bad rows", allBadHint);
  const { format, rows } = formatRecords(recordFile, { ...spec, format: spec.format ?? defaultFormat }, onBadRow);
  ensureRowsLeft(rows.length, rowsRead, "skipping bad rows", allBadHint);

  const steps: SelectionStep[] = [];
  let pool: FormattedRow[] = rows;
  if (spec.noContext) {
    if (format !== "dolly" && format !== "alpaca") {
      throw new LoratuneError(`the no-context filter needs the dolly or alpaca format, not ${format}`, { field: "noContext" });
    }
    const kept = pool.filter((row) => row.context.trim() === "");
    ensureRowsLeft(kept.length, pool.length, "filter no-context");
    steps.push({ name: "no-context", kept: kept.length, of: pool.length });
    pool = kept;
  }
  if (spec.categories) {
    const present = new Set(pool.map((row) => row.example.category ?? ""));
    const absent = spec.categories.filter((category) => !present.has(category));
    if (absent.length > 0) {
      throw new LoratuneError(`no row has category ${absent.map((category) => JSON.stringify(category)).join(", ")}`, {
        file,
        field: "categories",
        hint: `categories here: ${[...present].filter(Boolean).sort().join(", ") || "none"}`,
      });
    }
    const wanted = new Set(spec.categories);
    const kept = pool.filter((row) => wanted.has(row.example.category ?? ""));
    steps.push({ name: "category", detail: spec.categories.join(","), kept: kept.length, of: pool.length });
    pool = kept;
  }

  const random = new Random(seed);
  if (spec.shuffle) pool = random.shuffle([...pool]);
  if (spec.limit !== undefined) {
    const kept = pool.slice(0, spec.limit);
    steps.push({ name: "limit", detail: String(spec.limit), kept: kept.length, of: pool.length });
    pool = kept;
  }
  const examples = pool.map((row) => row.example);
  const { train, eval: evalExamples } = splitEval(examples, evalFraction, random);

  const plan: DatasetPlan = {
    source: spec.source,
    file,
    fileFormat: recordFile.fileFormat,
    format,
    rowsRead,
    skippedBadRows,
    badRowErrors,
    steps,
    limit: spec.limit,
    shuffled: spec.shuffle === true,
    seed,
    evalFraction,
    train: train.length,
    eval: evalExamples.length,
  };
  return { train, eval: evalExamples, plan };
}

/** A file that exists, else a built-in dataset's asset. */
function resolveSource(source: string): { file: string; defaultFormat?: DataFormat } {
  if (existsSync(source)) return { file: source };
  const builtin = builtinDatasetPath(source);
  if (builtin !== undefined) return { file: builtin, defaultFormat: BUILTIN_DATASETS[source]!.format };
  throw new LoratuneError("no such file or built-in dataset", {
    file: source,
    hint: `built-in datasets: ${Object.keys(BUILTIN_DATASETS).join(", ")}`,
  });
}

/** Held-out rows are picked by a seeded permutation, so eval is a fair sample even without shuffling; both keep pool order. */
function splitEval(examples: Example[], fraction: number, random: Random): { train: Example[]; eval: Example[] } {
  if (fraction === 0) return { train: examples, eval: [] };
  const evalCount = Math.max(1, Math.round(examples.length * fraction));
  if (evalCount >= examples.length) {
    throw new LoratuneError(`holding out ${evalCount} of ${examples.length} examples leaves none to train on`, {
      field: "evalFraction",
    });
  }
  const held = new Set(random.shuffle(examples.map((_, k) => k)).slice(0, evalCount));
  return {
    train: examples.filter((_, k) => !held.has(k)),
    eval: examples.filter((_, k) => held.has(k)),
  };
}

function checkSpec(spec: DatasetSpec): void {
  if (spec.limit !== undefined && !(Number.isInteger(spec.limit) && spec.limit > 0)) {
    throw new LoratuneError(`must be a positive integer, got ${spec.limit}`, { field: "limit" });
  }
  if (spec.seed !== undefined && !Number.isInteger(spec.seed)) {
    throw new LoratuneError(`must be an integer, got ${spec.seed}`, { field: "seed" });
  }
  const fraction = spec.evalFraction;
  if (fraction !== undefined && !(fraction >= 0 && fraction < 1)) {
    throw new LoratuneError(`must be at least 0 and below 1, got ${fraction}`, { field: "evalFraction" });
  }
  if (spec.categories?.length === 0) throw new LoratuneError("names no category", { field: "categories" });
}
