// The training loop: fit(model, tokenizer, {train, eval}, options) with Keras's defaults for the
// walkthrough (AdamW lr 5e-5, weight decay 0.01 except biases and norm scales, sparse categorical
// cross-entropy from logits over the counted tokens, token accuracy, sequence length 512, batch 1,
// one epoch), schedules, gradient accumulation, clipping, an eval split, a Keras-like progress bar,
// a JSONL log of every step, and checkpoints from which --resume continues bit for bit.
import fs from "node:fs";
import path from "node:path";
import { lmHeadCrossEntropy } from "../autograd/ops.js";
import { record } from "../autograd/tape.js";
import { type ProfileReport, formatProfile, mergeProfiles, startProfile, stopProfile } from "../backend/profile.js";
import type { Example } from "../data/formats.js";
import { LoratuneError } from "../errors.js";
import { Random } from "../generation/random.js";
import { trainableParameters } from "../lora/lora.js";
import { tidy } from "../tensor.js";
import type { CausalLM } from "../models/model.js";
import {
  type SequenceOptions,
  type TrainOn,
  type TrainingSequence,
  type TrainingTokenizer,
  checkSequenceOptions,
  epochOrder,
  fingerprintExamples,
  stepBatch,
  tokenizeExamples,
} from "./batches.js";
import {
  type EvalLog,
  type StepLog,
  type TrainerState,
  findLatestCheckpoint,
  loadCheckpoint,
  removeLeftovers,
  saveCheckpoint,
} from "./checkpoint.js";
import { AdamW, type AdamWVariant, clipGradNorm, globalGradNorm } from "./optimizer.js";
import { type Schedule, type ScheduleName, makeSchedule } from "./schedule.js";

export type { EvalLog, StepLog } from "./checkpoint.js";

/** Where the progress bar goes: process.stdout / process.stderr, or anything with write(). */
export interface ProgressWriter {
  write(text: string): unknown;
  /** Redraw one line with \r on a terminal; otherwise print a line every ~5%. */
  isTTY?: boolean;
}

export interface FitOptions {
  /** Default 1. */
  epochs?: number;
  /** Sequences per batch; default 1. They run one by one (no padding) and their losses are token-weighted. */
  batchSize?: number;
  /** Model inputs per sequence at most; default 512. Longer examples are truncated (and counted in the plan). */
  seqLen?: number;
  /** Batches per optimizer update; default 1. The update's loss is the token-level mean over all of them. */
  gradientAccumulation?: number;
  /** Peak learning rate; default 5e-5. */
  learningRate?: number;
  /** "constant" (default), "cosine" or "linear" (warm-up then decay to minLearningRate), or a function of the 0-based update. */
  schedule?: ScheduleName | Schedule;
  warmupSteps?: number;
  minLearningRate?: number;
  /** Default 0.01. */
  weightDecay?: number;
  beta1?: number;
  beta2?: number;
  /** Default 1e-7 (Keras). */
  epsilon?: number;
  /** Default ["bias", "scale"] (norm weights count as "scale"; see optimizer.ts). */
  excludeFromWeightDecay?: string[];
  /** Epsilon placement: "keras" (default) or "torch". */
  optimizer?: AdamWVariant;
  /** Clip gradients to this global norm before each update. */
  clipNorm?: number;
  /** "all" (Keras's default) or "response". */
  trainOn?: TrainOn;
  /** End each sequence with EOS (default true); false for passages of running text. */
  addEos?: boolean;
  /** Shuffle the training examples each epoch (deterministically from seed and epoch); default false. */
  shuffle?: boolean;
  /** Seeds the shuffles and the trainer's generator; default 0. */
  seed?: number;
  /** Evaluate on data.eval at the end of each epoch ("epoch", the default), every N updates, or never (false). */
  evalEvery?: "epoch" | number | false;
  /** Folder of checkpoints (checkpoint-<step>/ and `latest`). */
  checkpointDir?: string;
  /** Write a checkpoint every N updates (and always at the end and when stopped by the signal). */
  checkpointEvery?: number;
  /** Checkpoints kept; default 2. */
  keepCheckpoints?: number;
  /**
   * true: continue from checkpointDir's latest checkpoint (or start afresh when there is none);
   * a path: continue from that checkpoint folder (or from the latest one under that folder).
   */
  resume?: boolean | string;
  /** JSONL file with one line per update ({"type":"train",...}) and per evaluation ({"type":"eval",...}). */
  logFile?: string;
  /** The Keras-like progress bar: true writes to process.stdout. Default false. */
  progress?: boolean | ProgressWriter;
  onStep?: (entry: StepLog) => void;
  onEval?: (entry: EvalLog) => void;
  /** When aborted (e.g. by a Ctrl-C handler), fit writes a checkpoint after the current step and returns. */
  signal?: AbortSignal;
  /**
   * Time every kernel call of the training updates after the first (a warm-up: it allocates the
   * memory later updates reuse) and report the time per op kind in FitResult.profile, also printed
   * as a table through the progress writer. Evaluations and checkpoints are not counted.
   */
  profile?: boolean;
  /**
   * Keep only each block's input in the forward pass and recompute the block's activations in the
   * backward pass: less memory for about one more forward pass per update (evaluation is unaffected).
   */
  checkpointActivations?: boolean;
}

export interface TrainingPlan {
  trainExamples: number;
  evalExamples: number;
  /** Training examples cut to seqLen + 1 tokens. */
  truncated: number;
  evalTruncated: number;
  /** Training examples with no counted target (they cannot teach anything). */
  empty: number;
  /** Model inputs and counted targets in one epoch. */
  trainTokens: number;
  trainTargets: number;
  examplesPerStep: number;
  stepsPerEpoch: number;
  totalSteps: number;
  epochs: number;
  seqLen: number;
  trainOn: TrainOn;
  trainableParameters: number;
}

export interface FitResult {
  /** Updates made (in this and earlier sessions of the run). */
  steps: number;
  totalSteps: number;
  /** Seconds spent in training steps, earlier sessions included. */
  trainSeconds: number;
  /** Model inputs per second of training. */
  tokensPerSecond: number;
  log: StepLog[];
  evalLog: EvalLog[];
  /** "interrupted" when the signal stopped it (a checkpoint was written when checkpointDir is set). */
  stopped: "completed" | "interrupted";
  /** The last checkpoint written or resumed from, if any. */
  checkpoint: string | null;
  resumedFrom: string | null;
  plan: TrainingPlan;
  /** With options.profile, when an update after the first ran: the time per op kind over those updates. */
  profile?: { updates: number; report: ProfileReport; table: string };
}

export interface EvaluateOptions extends SequenceOptions {}

export interface EvalResult {
  /** Token-level mean cross-entropy over the counted targets (NaN when there are none). */
  loss: number;
  perplexity: number;
  accuracy: number;
  /** Counted targets. */
  tokens: number;
}

interface Sums {
  loss: number;
  correct: number;
  count: number;
}

function evalSequence(model: CausalLM, s: TrainingSequence, sums: Sums): void {
  if (s.count === 0) return;
  const r = tidy(() => {
    const { loss, correct, count } = lmHeadCrossEntropy(model.forward(s.ids), model.lmHead, s.targets);
    return { loss: loss.f32[0]!, correct, count };
  });
  sums.loss += r.loss * r.count;
  sums.correct += r.correct;
  sums.count += r.count;
}

function evalResult(sums: Sums): EvalResult {
  const loss = sums.count > 0 ? sums.loss / sums.count : NaN;
  return { loss, perplexity: Math.exp(loss), accuracy: sums.count > 0 ? sums.correct / sums.count : NaN, tokens: sums.count };
}

/** Loss, perplexity and token accuracy on examples, tokenized as for training (forward only, no tape). */
export function evaluate(model: CausalLM, tokenizer: TrainingTokenizer, examples: readonly Example[], options: EvaluateOptions = {}): EvalResult {
  const { sequences } = tokenizeExamples(examples, tokenizer, options);
  const sums: Sums = { loss: 0, correct: 0, count: 0 };
  for (const s of sequences) evalSequence(model, s, sums);
  return evalResult(sums);
}

const nextTick = () => new Promise<void>((resolve) => setImmediate(resolve));

function positiveInt(value: number | undefined, fallback: number, field: string): number {
  const v = value ?? fallback;
  if (!Number.isInteger(v) || v < 1) throw new LoratuneError(`${field} must be a whole number >= 1, got ${v}`, { field });
  return v;
}

function where(e: Example): string {
  return `${e.source.file}:${e.source.line}`;
}

function describeValue(v: unknown): string {
  return JSON.stringify(v) ?? String(v);
}

// ------------------------------------------------------------------------------------------------
// Progress bar

function clock(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  const two = (n: number) => String(n).padStart(2, "0");
  return h > 0 ? `${h}:${two(m)}:${two(r)}` : `${m}:${two(r)}`;
}

/** `412/1000 ━━━━━━━━━━━━━━━━━━━━ ETA 9:48 - loss: 0.9812 - acc: 0.4700 - 312 tok/s`. */
export function formatProgressLine(fields: {
  done: number; total: number; etaSeconds?: number; elapsedSeconds?: number; secondsPerStep?: number; loss: number; accuracy: number;
  tokensPerSecond: number; evalLoss?: number; evalAccuracy?: number;
}): string {
  const width = 20;
  const filled = fields.total > 0 ? Math.min(width, Math.floor((width * fields.done) / fields.total)) : width;
  const bar = "━".repeat(filled) + "─".repeat(width - filled);
  const pad = String(fields.total).length;
  const perStep = fields.secondsPerStep ?? 0;
  const time = fields.elapsedSeconds === undefined ? `ETA ${clock(fields.etaSeconds ?? 0)}`
    : `${clock(fields.elapsedSeconds)} ${perStep >= 1 ? `${perStep.toFixed(1)}s` : `${Math.round(perStep * 1000)}ms`}/step`;
  let line = `${String(fields.done).padStart(pad)}/${fields.total} ${bar} ${time} - loss: ${fields.loss.toFixed(4)}` +
    ` - acc: ${fields.accuracy.toFixed(4)} - ${Math.round(fields.tokensPerSecond)} tok/s`;
  if (fields.evalLoss !== undefined) line += ` - eval_loss: ${fields.evalLoss.toFixed(4)}`;
  if (fields.evalAccuracy !== undefined) line += ` - eval_acc: ${fields.evalAccuracy.toFixed(4)}`;
  return line;
}

class Progress {
  private lastDraw = 0;
  private lastBucket = -1;
  private epochStart = 0;
  private stepsThisSession = 0;
  private tokensThisSession = 0;
  private sums: Sums = { loss: 0, correct: 0, count: 0 };
  private line = "";

  constructor(private readonly out: ProgressWriter, private readonly stepsPerEpoch: number, private readonly epochs: number) {}

  startEpoch(epoch: number, earlier: StepLog[]): void {
    this.out.write(`Epoch ${epoch}/${this.epochs}\n`);
    this.epochStart = performance.now();
    this.stepsThisSession = 0;
    this.tokensThisSession = 0;
    this.sums = { loss: 0, correct: 0, count: 0 };
    for (const e of earlier) this.add(e);
    this.lastBucket = -1;
  }

  private add(e: StepLog): void {
    this.sums.loss += e.loss * e.targets;
    this.sums.correct += e.accuracy * e.targets;
    this.sums.count += e.targets;
  }

  step(e: StepLog, inEpoch: number): void {
    this.add(e);
    this.stepsThisSession++;
    this.tokensThisSession += e.tokens;
    const elapsed = (performance.now() - this.epochStart) / 1000;
    const eta = (elapsed / this.stepsThisSession) * (this.stepsPerEpoch - inEpoch);
    const last = inEpoch >= this.stepsPerEpoch;
    this.line = formatProgressLine({
      done: inEpoch, total: this.stepsPerEpoch, ...(last ? { elapsedSeconds: elapsed, secondsPerStep: elapsed / this.stepsThisSession } : { etaSeconds: eta }),
      loss: this.sums.count > 0 ? this.sums.loss / this.sums.count : 0,
      accuracy: this.sums.count > 0 ? this.sums.correct / this.sums.count : 0,
      tokensPerSecond: elapsed > 0 ? this.tokensThisSession / elapsed : 0,
    });
    if (last) return; // drawn by endEpoch, with the evaluation
    if (this.out.isTTY) {
      const now = performance.now();
      if (now - this.lastDraw >= 100) {
        this.lastDraw = now;
        this.out.write(`\r${this.line}\x1b[K`);
      }
    } else {
      const bucket = Math.floor((20 * inEpoch) / this.stepsPerEpoch);
      if (bucket > this.lastBucket) {
        this.lastBucket = bucket;
        this.out.write(`${this.line}\n`);
      }
    }
  }

  endEpoch(evalResult?: EvalResult): void {
    let line = this.line;
    if (evalResult) line += ` - eval_loss: ${evalResult.loss.toFixed(4)} - eval_acc: ${evalResult.accuracy.toFixed(4)}`;
    this.out.write(this.out.isTTY ? `\r${line}\x1b[K\n` : `${line}\n`);
  }

  /** Ends a half-drawn line (stop or error). */
  close(): void {
    if (this.out.isTTY && this.lastDraw > 0) this.out.write("\n");
  }
}

// ------------------------------------------------------------------------------------------------
// JSONL log

class JsonlLog {
  constructor(private readonly file: string | undefined) {}

  private fail(e: unknown): never {
    throw new LoratuneError(`cannot write the training log: ${(e as Error).message}`, { file: this.file });
  }

  /** Starts the file afresh, holding the given earlier lines (a resumed run's log up to its checkpoint). */
  reset(lines: object[]): void {
    if (!this.file) return;
    try {
      fs.mkdirSync(path.dirname(path.resolve(this.file)), { recursive: true });
      const temp = `${this.file}.tmp-${process.pid}`;
      fs.writeFileSync(temp, lines.map((l) => JSON.stringify(l) + "\n").join(""));
      fs.renameSync(temp, this.file);
    } catch (e) {
      this.fail(e);
    }
  }

  append(line: object): void {
    if (!this.file) return;
    try {
      fs.appendFileSync(this.file, JSON.stringify(line) + "\n");
    } catch (e) {
      this.fail(e);
    }
  }
}

function logLines(state: TrainerState): object[] {
  const lines: Array<{ step: number; order: number; line: object }> = [];
  state.log.forEach((e, i) => lines.push({ step: e.step, order: 2 * i, line: { type: "train", ...e } }));
  state.evalLog.forEach((e, i) => lines.push({ step: e.step, order: 2 * i + 1, line: { type: "eval", ...e } }));
  // An evaluation comes after the update of its step.
  return lines.sort((a, b) => a.step - b.step || (a.order % 2) - (b.order % 2) || a.order - b.order).map((l) => l.line);
}

// ------------------------------------------------------------------------------------------------
// fit

/**
 * Trains the model's trainable parameters (enable LoRA first) on data.train, evaluating on
 * data.eval. Yields to the event loop between steps so that a signal handler can run.
 */
export async function fit(
  model: CausalLM,
  tokenizer: TrainingTokenizer,
  data: { train: readonly Example[]; eval?: readonly Example[] },
  options: FitOptions = {},
): Promise<FitResult> {
  const epochs = positiveInt(options.epochs, 1, "epochs");
  const batchSize = positiveInt(options.batchSize, 1, "batchSize");
  const accumulation = positiveInt(options.gradientAccumulation, 1, "gradientAccumulation");
  const { seqLen, trainOn } = checkSequenceOptions(options);
  const learningRate = options.learningRate ?? 5e-5;
  const shuffle = options.shuffle ?? false;
  const seed = options.seed ?? 0;
  if (!Number.isInteger(seed)) throw new LoratuneError(`seed must be a whole number, got ${seed}`, { field: "seed" });
  const evalEvery = options.evalEvery ?? "epoch";
  if (evalEvery !== "epoch" && evalEvery !== false) positiveInt(evalEvery, 1, "evalEvery");
  const checkpointDir = options.checkpointDir;
  const checkpointEvery = options.checkpointEvery;
  if (checkpointEvery !== undefined) positiveInt(checkpointEvery, 1, "checkpointEvery");
  if (checkpointEvery !== undefined && !checkpointDir) throw new LoratuneError("checkpointEvery needs a checkpointDir", { field: "checkpointEvery" });
  const keep = positiveInt(options.keepCheckpoints, 2, "keepCheckpoints");
  if (options.resume === true && !checkpointDir) throw new LoratuneError("resume needs a checkpointDir (or a checkpoint path)", { field: "resume" });
  if (options.clipNorm !== undefined && !(options.clipNorm > 0)) throw new LoratuneError(`clipNorm must be > 0, got ${options.clipNorm}`, { field: "clipNorm" });

  const params = trainableParameters(model);
  if (params.size === 0) throw new LoratuneError("the model has no trainable parameters", { hint: "enable LoRA first (enableLora)" });
  let trainableCount = 0;
  for (const p of params.values()) trainableCount += p.size;

  const addEos = options.addEos ?? true;
  const train = tokenizeExamples(data.train, tokenizer, { seqLen, trainOn, addEos });
  const evalSet = tokenizeExamples(data.eval ?? [], tokenizer, { seqLen, trainOn, addEos });
  const N = train.sequences.length;
  if (N === 0) throw new LoratuneError("there are no training examples", { field: "train" });
  if (train.targets === 0) {
    throw new LoratuneError(`no training example has a target to learn (${train.truncated} of ${N} were cut to ${seqLen} tokens)`, {
      field: "train", hint: trainOn === "response" ? "raise seqLen: the prompts fill the whole length" : "check the data",
    });
  }
  const perStep = batchSize * accumulation;
  const stepsPerEpoch = Math.ceil(N / perStep);
  const totalSteps = stepsPerEpoch * epochs;
  const plan: TrainingPlan = {
    trainExamples: N, evalExamples: evalSet.sequences.length, truncated: train.truncated, evalTruncated: evalSet.truncated,
    empty: train.empty, trainTokens: train.tokens, trainTargets: train.targets, examplesPerStep: perStep, stepsPerEpoch,
    totalSteps, epochs, seqLen, trainOn, trainableParameters: trainableCount,
  };

  const scheduleOption = options.schedule ?? "constant";
  const schedule: Schedule = typeof scheduleOption === "function" ? scheduleOption
    : makeSchedule(scheduleOption, { learningRate, totalSteps, warmupSteps: options.warmupSteps ?? 0, minLearningRate: options.minLearningRate });
  const optimizer = new AdamW(params, {
    learningRate: schedule, weightDecay: options.weightDecay, beta1: options.beta1, beta2: options.beta2,
    epsilon: options.epsilon, excludeFromWeightDecay: options.excludeFromWeightDecay, variant: options.optimizer,
  });

  const fingerprint: Record<string, unknown> = {
    epochs, batchSize, gradientAccumulation: accumulation, seqLen, trainOn, addEos, learningRate,
    schedule: typeof scheduleOption === "function" ? "custom" : scheduleOption, warmupSteps: options.warmupSteps ?? 0,
    minLearningRate: options.minLearningRate ?? 0, weightDecay: optimizer.weightDecay, beta1: optimizer.beta1,
    beta2: optimizer.beta2, epsilon: optimizer.epsilon, excludeFromWeightDecay: optimizer.excludeFromWeightDecay,
    optimizer: optimizer.variant, clipNorm: options.clipNorm ?? null, shuffle, seed,
    trainData: `${N} examples, ${fingerprintExamples(data.train)}`,
    evalData: `${evalSet.sequences.length} examples, ${fingerprintExamples(data.eval ?? [])}`,
    parameters: [...params].map(([name, t]) => `${name} [${t.shape.join(",")}]`),
  };

  const rng = new Random(seed);
  let state: TrainerState = {
    version: 1, step: 0, epoch: 0, position: 0, evalPending: false, random: rng.state, trainSeconds: 0, tokensSeen: 0,
    log: [], evalLog: [], fingerprint,
  };

  // Resume.
  let resumedFrom: string | null = null;
  if (options.resume) {
    const target = typeof options.resume === "string" ? options.resume : checkpointDir!;
    const dir = fs.existsSync(path.join(target, "trainer_state.json")) ? target : findLatestCheckpoint(target);
    if (dir === null && typeof options.resume === "string") {
      throw new LoratuneError("holds no checkpoint to resume from", { file: target });
    }
    if (dir !== null) {
      const ckpt = loadCheckpoint(dir);
      const differs = Object.keys({ ...fingerprint, ...ckpt.state.fingerprint })
        .filter((k) => describeValue(fingerprint[k]) !== describeValue(ckpt.state.fingerprint[k]));
      if (differs.length > 0) {
        const details = differs.map((k) => `${k}: ${describeValue(ckpt.state.fingerprint[k])} then, ${describeValue(fingerprint[k])} now`);
        throw new LoratuneError(`the checkpoint belongs to a different run (${details.join("; ")})`, {
          file: dir, hint: "resume with the same data and options, or start a new run in another checkpoint folder",
        });
      }
      for (const [name, p] of params) {
        const t = ckpt.params.get(name);
        if (!t || t.size !== p.size) throw new LoratuneError(`the adapter has no tensor ${name} of ${p.size} values`, { file: dir });
        p.f32.set(t.f32);
      }
      optimizer.loadState(ckpt.optimizer, path.join(dir, "optimizer.safetensors"));
      state = ckpt.state;
      state.fingerprint = fingerprint;
      rng.state = state.random;
      resumedFrom = dir;
    }
  }

  if (checkpointDir) removeLeftovers(checkpointDir);
  const jsonl = new JsonlLog(options.logFile);
  jsonl.reset(logLines(state));
  const writer: ProgressWriter | null = options.progress === true ? process.stdout : options.progress || null;
  const progress = writer ? new Progress(writer, stepsPerEpoch, epochs) : null;
  let lastCheckpoint: string | null = resumedFrom;
  let checkpointStep = resumedFrom ? state.step : -1;

  const writeCheckpoint = () => {
    if (!checkpointDir || checkpointStep === state.step || state.step === 0) return;
    state.random = rng.state;
    lastCheckpoint = saveCheckpoint(checkpointDir, { params, optimizer: optimizer.state(), state }, keep);
    checkpointStep = state.step;
  };

  // One report per profiled update; profiling is true while one is being measured.
  const profiles: ProfileReport[] = [];
  let profiling = false;
  let updatesThisSession = 0;
  const profileResult = (): FitResult["profile"] => {
    if (profiles.length === 0) {
      if (options.profile) writer?.write("Profile: no update after the first (warm-up) one to measure\n");
      return undefined;
    }
    const report = mergeProfiles(profiles);
    const table = formatProfile(report, profiles.length);
    writer?.write(`Profile: time per op kind, mean of ${profiles.length} update(s) after the first\n${table}`);
    return { updates: profiles.length, report, table };
  };

  const result = (stopped: FitResult["stopped"]): FitResult => {
    const profile = profileResult();
    return {
      steps: state.step, totalSteps, trainSeconds: state.trainSeconds,
      tokensPerSecond: state.trainSeconds > 0 ? state.tokensSeen / state.trainSeconds : 0,
      log: state.log, evalLog: state.evalLog, stopped, checkpoint: lastCheckpoint, resumedFrom, plan,
      ...(profile ? { profile } : {}),
    };
  };

  /** Runs the evaluation due now; false when the signal stopped it (it is then pending in the checkpoint). */
  const runEval = async (epoch: number): Promise<EvalResult | null> => {
    const sums: Sums = { loss: 0, correct: 0, count: 0 };
    for (const s of evalSet.sequences) {
      evalSequence(model, s, sums);
      await nextTick();
      if (options.signal?.aborted) return null;
    }
    const r = evalResult(sums);
    const entry: EvalLog = { step: state.step, epoch, loss: r.loss, accuracy: r.accuracy, perplexity: r.perplexity, tokens: r.tokens };
    state.evalLog.push(entry);
    jsonl.append({ type: "eval", ...entry });
    options.onEval?.(entry);
    return r;
  };
  const hasEval = evalSet.sequences.length > 0 && evalEvery !== false;

  const stop = (): FitResult => {
    progress?.close();
    writeCheckpoint();
    return result("interrupted");
  };

  try {
    if (state.evalPending && hasEval) {
      const epochOfStep = state.log.length > 0 ? state.log[state.log.length - 1]!.epoch : 1;
      const r = await runEval(epochOfStep);
      if (!r) return stop();
      state.evalPending = false;
    }
    if (options.signal?.aborted) return stop();

    while (state.epoch < epochs) {
      const epoch = state.epoch;
      const order = epochOrder(N, epoch, shuffle, seed);
      progress?.startEpoch(epoch + 1, state.log.filter((e) => e.epoch === epoch + 1));
      while (state.epoch === epoch) {
        const step = state.step + 1;
        const chosen = order.slice(state.position, state.position + perStep).map((i) => train.sequences[i]!);
        const batch = stepBatch(chosen);
        const started = performance.now();
        if (options.profile && updatesThisSession > 0) {
          startProfile();
          profiling = true;
        }
        let loss = 0;
        let correct = 0;
        optimizer.zeroGrad();
        for (let i = 0; i < chosen.length; i++) {
          const s = chosen[i]!;
          if (s.count === 0) continue;
          // Everything the sequence's forward and backward allocate is freed here, but the gradients.
          const r = tidy(() => {
            const { result, tape } = record(() => lmHeadCrossEntropy(
              model.forward(s.ids, { checkpointActivations: options.checkpointActivations }), model.lmHead, s.targets));
            const value = result.loss.f32[0]!;
            if (Number.isFinite(value)) tape.backward(result.loss, batch.weights[i]!);
            return { value, correct: result.correct };
          }, () => Array.from(params.values(), (p) => p.grad));
          const value = r.value;
          if (!Number.isFinite(value)) {
            optimizer.zeroGrad();
            throw new LoratuneError(
              `the loss is ${value} at step ${step} (epoch ${epoch + 1}) on this example; training stopped ` +
                `(the step's batch: ${chosen.map((c) => where(c.example)).join(", ")})`,
              { file: s.example.source.file, line: s.example.source.line, hint: keptHint(lastCheckpoint) },
            );
          }
          loss += value * batch.weights[i]!;
          correct += r.correct;
        }
        const gradNorm = options.clipNorm !== undefined ? clipGradNorm(params.values(), options.clipNorm) : globalGradNorm(params.values());
        if (!Number.isFinite(gradNorm)) {
          optimizer.zeroGrad();
          throw new LoratuneError(
            `the gradient norm is ${gradNorm} at step ${step} (epoch ${epoch + 1}); training stopped ` +
              `(the step's batch: ${chosen.map((c) => where(c.example)).join(", ")})`,
            { file: chosen[0]!.example.source.file, line: chosen[0]!.example.source.line, hint: keptHint(lastCheckpoint) },
          );
        }
        const lr = optimizer.step();
        if (profiling) {
          profiles.push(stopProfile());
          profiling = false;
        }
        updatesThisSession++;
        const seconds = (performance.now() - started) / 1000;
        state.step = step;
        state.position += chosen.length;
        state.trainSeconds += seconds;
        state.tokensSeen += batch.tokens;
        const entry: StepLog = {
          step, epoch: epoch + 1, loss, accuracy: batch.count > 0 ? correct / batch.count : 0, lr,
          tokens: batch.tokens, targets: batch.count, gradNorm, seconds: state.trainSeconds,
        };
        state.log.push(entry);
        jsonl.append({ type: "train", ...entry });
        const inEpoch = step - epoch * stepsPerEpoch;
        progress?.step(entry, inEpoch);

        const epochDone = state.position >= N;
        if (epochDone) {
          state.epoch = epoch + 1;
          state.position = 0;
        }
        const evalDue = hasEval && (evalEvery === "epoch" ? epochDone : step % (evalEvery as number) === 0 || step === totalSteps);
        let evaluated: EvalResult | undefined;
        if (evalDue) {
          const r = await runEval(epoch + 1);
          if (!r) {
            state.evalPending = true;
            return stop();
          }
          evaluated = r;
        }
        if (epochDone) progress?.endEpoch(evaluated);
        if (checkpointEvery !== undefined && step % checkpointEvery === 0) writeCheckpoint();
        options.onStep?.(entry);
        await nextTick();
        if (options.signal?.aborted) return stop();
      }
    }
    writeCheckpoint();
    return result("completed");
  } catch (e) {
    if (profiling) stopProfile(); // puts the kernels back
    progress?.close();
    throw e;
  }
}

function keptHint(checkpoint: string | null): string {
  return checkpoint ? `the last good checkpoint is ${checkpoint}; lower the learning rate or fix the data, then resume`
    : "no checkpoint was written; lower the learning rate or fix the data";
}

