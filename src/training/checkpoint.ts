// Training checkpoints. A checkpoint is a folder `<root>/checkpoint-<step>` holding
//   adapter_model.safetensors  the trainable tensors by name,
//   optimizer.safetensors      AdamW's m and v (`m.<name>`, `v.<name>`), update count in the metadata,
//   trainer_state.json         step, epoch, position in the epoch's order, generator state, logs, options.
// It is written whole into `checkpoint-<step>.tmp-<pid>/`, every file fsynced, then renamed into
// place, and `<root>/latest` (the folder's name) is replaced atomically (temp file + rename). The
// last `keep` checkpoints stay; older ones are renamed away before they are deleted. A process
// killed at any moment leaves the previous checkpoint whole, and the reader falls back to the newest
// complete folder when `latest` names none.
import fs from "node:fs";
import path from "node:path";
import { LoratuneError } from "../errors.js";
import { fsyncDir, writeFileDurably } from "../io/atomic.js";
import { SafetensorsFile, writeSafetensors } from "../io/safetensors.js";
import type { Tensor } from "../tensor.js";
import type { AdamWState, AdamWVariant } from "./optimizer.js";

export const ADAPTER_FILE = "adapter_model.safetensors";
export const OPTIMIZER_FILE = "optimizer.safetensors";
export const STATE_FILE = "trainer_state.json";
export const LATEST_FILE = "latest";

export interface StepLog {
  step: number;
  /** 1-based. */
  epoch: number;
  /** The step's loss: token-level mean over its batch. */
  loss: number;
  /** Token accuracy (argmax = target) over the step's counted targets. */
  accuracy: number;
  lr: number;
  /** Model inputs processed in the step. */
  tokens: number;
  /** Counted targets in the step. */
  targets: number;
  /** Global gradient norm before clipping. */
  gradNorm: number;
  /** Seconds of training so far, from the start of the run (resumed runs included). */
  seconds: number;
}

export interface EvalLog {
  step: number;
  epoch: number;
  loss: number;
  accuracy: number;
  perplexity: number;
  tokens: number;
}

export interface TrainerState {
  version: 1;
  /** Updates made. */
  step: number;
  /** 0-based epoch the next step belongs to (= epochs when done). */
  epoch: number;
  /** Examples of this epoch's order already trained on. */
  position: number;
  /** Whether the evaluation due at this step has not run yet (interrupted). */
  evalPending: boolean;
  /** The trainer's generator state. */
  random: number[];
  trainSeconds: number;
  /** Model inputs trained on so far. */
  tokensSeen: number;
  log: StepLog[];
  evalLog: EvalLog[];
  /** What must not change for a resume to continue the same run. */
  fingerprint: Record<string, unknown>;
}

export interface CheckpointContents {
  params: Map<string, Tensor>;
  optimizer: AdamWState;
  state: TrainerState;
}

export interface LoadedCheckpoint {
  dir: string;
  params: Map<string, Tensor>;
  optimizer: AdamWState;
  state: TrainerState;
}

const CHECKPOINT_NAME = /^checkpoint-(\d+)$/;
const LEFTOVER_NAME = /^(checkpoint-\d+\.(tmp|old|del)-\d+|latest\.tmp-\d+)$/;

function causeOf(e: unknown): string {
  const err = e as NodeJS.ErrnoException;
  const message = String(err?.message ?? e);
  return err.code && !message.startsWith(err.code) ? `${err.code}: ${message}` : message;
}

function removeQuietly(p: string): void {
  try {
    fs.rmSync(p, { recursive: true, force: true });
  } catch {
    // best effort: a leftover is cleaned at the next start
  }
}

/** Steps of the complete checkpoint folders under root, newest first. */
export function listCheckpoints(root: string): number[] {
  let names: string[];
  try {
    names = fs.readdirSync(root);
  } catch {
    return [];
  }
  return names
    .map((n) => CHECKPOINT_NAME.exec(n))
    .filter((m): m is RegExpExecArray => m !== null && isComplete(path.join(root, m[0])))
    .map((m) => Number(m[1]))
    .sort((a, b) => b - a);
}

function isComplete(dir: string): boolean {
  return [ADAPTER_FILE, OPTIMIZER_FILE, STATE_FILE].every((f) => fs.existsSync(path.join(dir, f)));
}

/** The newest complete checkpoint folder under root: the one `latest` names, else the highest step; null if none. */
export function findLatestCheckpoint(root: string): string | null {
  try {
    const name = fs.readFileSync(path.join(root, LATEST_FILE), "utf8").trim();
    if (CHECKPOINT_NAME.test(name) && isComplete(path.join(root, name))) return path.join(root, name);
  } catch {
    // no pointer (yet), or unreadable: scan
  }
  const steps = listCheckpoints(root);
  return steps.length > 0 ? path.join(root, `checkpoint-${steps[0]}`) : null;
}

/** Removes temporary folders and files a killed writer left under root (call before writing). */
export function removeLeftovers(root: string): void {
  let names: string[];
  try {
    names = fs.readdirSync(root);
  } catch {
    return;
  }
  for (const n of names) if (LEFTOVER_NAME.test(n)) removeQuietly(path.join(root, n));
}

/**
 * Writes checkpoint-<step> atomically and points `latest` at it; keeps the newest `keep` (>= 1)
 * checkpoints. Throws a LoratuneError naming the path that failed; the previous checkpoint and the
 * pointer to it are then untouched. Returns the checkpoint's folder.
 */
export function saveCheckpoint(root: string, contents: CheckpointContents, keep = 2): string {
  const step = contents.state.step;
  const name = `checkpoint-${step}`;
  const final = path.join(root, name);
  const temp = path.join(root, `${name}.tmp-${process.pid}`);
  let failedAt = root;
  let displaced: string | null = null;
  try {
    fs.mkdirSync(root, { recursive: true });
    failedAt = temp;
    removeQuietly(temp);
    fs.mkdirSync(temp);
    const adapter = [...contents.params];
    writeSafetensors(path.join(temp, ADAPTER_FILE), adapter, { format: "pt", step: String(step) });
    writeSafetensors(path.join(temp, OPTIMIZER_FILE), [...contents.optimizer.tensors],
      { step: String(contents.optimizer.step), variant: contents.optimizer.variant });
    failedAt = path.join(temp, STATE_FILE);
    writeFileDurably(failedAt, JSON.stringify(contents.state) + "\n");
    failedAt = temp;
    fsyncDir(temp);
    // A folder of the same step can exist from a run that was resumed from an earlier checkpoint.
    failedAt = final;
    if (fs.existsSync(final)) {
      displaced = path.join(root, `${name}.old-${process.pid}`);
      fs.renameSync(final, displaced);
    }
    fs.renameSync(temp, final);
    fsyncDir(root);
    failedAt = path.join(root, LATEST_FILE);
    const pointerTemp = path.join(root, `${LATEST_FILE}.tmp-${process.pid}`);
    writeFileDurably(pointerTemp, name + "\n");
    fs.renameSync(pointerTemp, path.join(root, LATEST_FILE));
    fsyncDir(root);
    if (displaced) removeQuietly(displaced);
  } catch (e) {
    removeQuietly(temp);
    removeQuietly(path.join(root, `${LATEST_FILE}.tmp-${process.pid}`));
    if (displaced && !fs.existsSync(final)) {
      try {
        fs.renameSync(displaced, final);
      } catch {
        // left as a leftover; removed at the next start
      }
    }
    const previous = findLatestCheckpoint(root);
    const hint = previous ? `the previous checkpoint ${previous} is intact` : undefined;
    if (e instanceof LoratuneError) {
      throw new LoratuneError(`cannot write checkpoint ${name}: ${e.message}`, { file: e.file ?? failedAt, hint: e.hint ?? hint });
    }
    const file = (e as NodeJS.ErrnoException).path ?? failedAt;
    throw new LoratuneError(`cannot write checkpoint ${name}: ${causeOf(e)}`, { file, hint });
  }
  prune(root, step, keep);
  return final;
}

/** Keeps `step` and the newest keep-1 checkpoints before it; removes the rest (later ones are another run's). */
function prune(root: string, step: number, keep: number): void {
  const older = listCheckpoints(root).filter((s) => s < step).slice(0, Math.max(0, keep - 1));
  let names: string[];
  try {
    names = fs.readdirSync(root);
  } catch {
    return;
  }
  for (const n of names) {
    const m = CHECKPOINT_NAME.exec(n);
    if (!m) continue;
    const s = Number(m[1]);
    if (s === step || older.includes(s)) continue;
    const doomed = path.join(root, `${n}.del-${process.pid}`);
    try {
      fs.renameSync(path.join(root, n), doomed);
    } catch {
      continue;
    }
    removeQuietly(doomed);
  }
}

function readStateFile(file: string): TrainerState {
  let json: unknown;
  try {
    json = JSON.parse(fs.readFileSync(file, "utf8"));
  } catch (e) {
    throw new LoratuneError(`cannot read the trainer state: ${causeOf(e)}`, { file });
  }
  const s = json as Partial<TrainerState>;
  if (typeof s !== "object" || s === null || s.version !== 1 || !Number.isInteger(s.step) || !Number.isInteger(s.epoch) ||
    !Number.isInteger(s.position) || !Array.isArray(s.random) || !Array.isArray(s.log) || !Array.isArray(s.evalLog) ||
    typeof s.fingerprint !== "object") {
    throw new LoratuneError("is not a loratune trainer state (version 1)", { file });
  }
  return s as TrainerState;
}

function readTensors(file: string): { tensors: Map<string, Tensor>; metadata: Record<string, string> } {
  const f = SafetensorsFile.open(file);
  try {
    const tensors = new Map<string, Tensor>();
    for (const name of f.names()) tensors.set(name, f.read(name, "f32"));
    return { tensors, metadata: f.metadata };
  } finally {
    f.close();
  }
}

/** Reads a checkpoint folder (all three files). */
export function loadCheckpoint(dir: string): LoadedCheckpoint {
  if (!fs.existsSync(dir)) throw new LoratuneError("checkpoint folder does not exist", { file: dir });
  for (const f of [ADAPTER_FILE, OPTIMIZER_FILE, STATE_FILE]) {
    if (!fs.existsSync(path.join(dir, f))) throw new LoratuneError(`the checkpoint has no ${f}`, { file: dir });
  }
  const state = readStateFile(path.join(dir, STATE_FILE));
  const params = readTensors(path.join(dir, ADAPTER_FILE)).tensors;
  const optFile = path.join(dir, OPTIMIZER_FILE);
  const opt = readTensors(optFile);
  const step = Number(opt.metadata.step);
  const variant = opt.metadata.variant as AdamWVariant;
  if (!Number.isInteger(step) || (variant !== "keras" && variant !== "torch")) {
    throw new LoratuneError("has no step/variant metadata", { file: optFile });
  }
  return { dir, params, optimizer: { step, variant, tensors: opt.tensors }, state };
}
