// From examples to training sequences, as KerasNLP's GemmaCausalLMPreprocessor makes them:
// `<bos> + tokens(text) + <eos>`, packed into seqLen + 1 tokens, inputs = tokens[:-1],
// targets = tokens[1:]. No padding: every sequence keeps its own length, and a batch of several
// sequences runs them one by one, weighting each sequence's mean loss by its share of the batch's
// counted tokens, which is the token-level mean Keras computes over a padded, masked batch.
import { createHash } from "node:crypto";
import { LoratuneError } from "../errors.js";
import { Random } from "../generation/random.js";
import type { Example } from "../data/formats.js";

/** What training needs from a tokenizer (the library's Tokenizer has it; tests may pass a tiny one). */
export interface TrainingTokenizer {
  encode(text: string, options?: { addBos?: boolean }): number[];
  readonly bosId?: number | undefined;
  readonly eosId?: number | undefined;
}

/** Which next-token predictions count in the loss: all (Keras's default) or the response's only. */
export type TrainOn = "all" | "response";

export interface SequenceOptions {
  /** Model inputs per sequence at most; default 512 (the walkthrough's). */
  seqLen?: number;
  trainOn?: TrainOn;
  /**
   * End each sequence with EOS (default true, as Keras does for instruction data). Pre-training on
   * passages cut from running text sets it false: those passages do not end a document.
   */
  addEos?: boolean;
}

export interface TrainingSequence {
  /** Model inputs (at most seqLen). */
  ids: Int32Array;
  /** Next-token targets, same length; -1 where the prediction is not counted. */
  targets: Int32Array;
  /** Counted targets. */
  count: number;
  /** Tokens of prompt (with BOS) that precede the response. */
  promptTokens: number;
  /** The whole example's tokens (BOS and EOS included) before truncation. */
  fullLength: number;
  truncated: boolean;
  example: Example;
}

export interface TokenizedSet {
  sequences: TrainingSequence[];
  /** Examples longer than seqLen + 1 tokens, cut (Keras keeps the end token, so do we). */
  truncated: number;
  /** Examples left with no counted target (e.g. a prompt that fills the whole length). */
  empty: number;
  /** Model inputs over all sequences. */
  tokens: number;
  /** Counted targets over all sequences. */
  targets: number;
}

export function checkSequenceOptions(options: SequenceOptions): { seqLen: number; trainOn: TrainOn } {
  const seqLen = options.seqLen ?? 512;
  const trainOn = options.trainOn ?? "all";
  if (!Number.isInteger(seqLen) || seqLen < 2) throw new LoratuneError(`sequence length must be a whole number >= 2, got ${seqLen}`, { field: "seqLen" });
  if (trainOn !== "all" && trainOn !== "response") throw new LoratuneError(`trainOn must be "all" or "response", got "${String(trainOn)}"`, { field: "trainOn" });
  return { seqLen, trainOn };
}

function commonPrefix(a: readonly number[], b: readonly number[]): number {
  let n = 0;
  while (n < a.length && n < b.length && a[n] === b[n]) n++;
  return n;
}

/**
 * One example as a training sequence. The text is tokenized whole (as Keras does), so both trainOn
 * modes see the same tokens; for "response" the prompt is tokenized too and the boundary is where
 * the two token lists part (a token merged across the boundary counts as response). A template that
 * already renders the BOS token (chat templates) gets no second one.
 */
export function tokenizeExample(example: Example, tokenizer: TrainingTokenizer, options: SequenceOptions = {}): TrainingSequence {
  const { seqLen, trainOn } = checkSequenceOptions(options);
  const encode = (text: string) => tokenizer.encode(text, { addBos: false });
  const body = encode(example.text);
  const bos = tokenizer.bosId;
  const eos = tokenizer.eosId;
  const leadingBos = bos !== undefined && body[0] !== bos ? 1 : 0;
  let promptTokens = 0;
  if (trainOn === "response" && example.prompt !== "") {
    if (!example.text.startsWith(example.prompt)) {
      throw new LoratuneError("the example's text does not start with its prompt, so the response cannot be found",
        { file: example.source.file, line: example.source.line });
    }
    promptTokens = commonPrefix(encode(example.prompt), body);
  }
  promptTokens += leadingBos;
  const tokens = leadingBos ? [bos!, ...body] : body;
  const addEos = options.addEos ?? true;
  if (addEos && eos !== undefined && tokens[tokens.length - 1] !== eos) tokens.push(eos);
  const fullLength = tokens.length;
  // Keras's StartEndPacker(sequence_length = seqLen + 1) trims and then appends the end token.
  const truncated = fullLength > seqLen + 1;
  if (truncated) {
    const last = tokens[fullLength - 1]!;
    tokens.length = seqLen + 1;
    if (addEos && eos !== undefined && last === eos) tokens[seqLen] = eos;
  }
  const T = tokens.length - 1;
  const ids = new Int32Array(Math.max(0, T));
  const targets = new Int32Array(Math.max(0, T));
  let count = 0;
  for (let t = 0; t < T; t++) {
    ids[t] = tokens[t]!;
    // targets[t] predicts token t + 1; the prompt's tokens 1..promptTokens-1 are not learnt in response mode.
    const counted = trainOn === "all" || t + 1 >= promptTokens;
    targets[t] = counted ? tokens[t + 1]! : -1;
    if (counted) count++;
  }
  return { ids, targets, count, promptTokens, fullLength, truncated, example };
}

export function tokenizeExamples(examples: readonly Example[], tokenizer: TrainingTokenizer, options: SequenceOptions = {}): TokenizedSet {
  const sequences = examples.map((e) => tokenizeExample(e, tokenizer, options));
  let truncated = 0, empty = 0, tokens = 0, targets = 0;
  for (const s of sequences) {
    if (s.truncated) truncated++;
    if (s.count === 0) empty++;
    tokens += s.ids.length;
    targets += s.count;
  }
  return { sequences, truncated, empty, tokens, targets };
}

/** The examples' order in an epoch: as given, or shuffled deterministically from (seed, epoch). */
export function epochOrder(n: number, epoch: number, shuffle: boolean, seed = 0): number[] {
  const order = Array.from({ length: n }, (_, i) => i);
  if (!shuffle) return order;
  return new Random((seed ^ Math.imul(epoch + 1, 0x9e3779b1)) >>> 0).shuffle(order);
}

/** A step's sequences (batchSize x gradientAccumulation of them) and the weight of each one's mean loss. */
export interface StepBatch {
  sequences: TrainingSequence[];
  /** weights[i] = count_i / sum(counts): the step's loss is the token-level mean over the batch. */
  weights: number[];
  /** Counted targets in the step. */
  count: number;
  /** Model inputs in the step. */
  tokens: number;
}

export function stepBatch(sequences: TrainingSequence[]): StepBatch {
  let count = 0, tokens = 0;
  for (const s of sequences) {
    count += s.count;
    tokens += s.ids.length;
  }
  return { sequences, weights: sequences.map((s) => (count > 0 ? s.count / count : 0)), count, tokens };
}

/** A short hash of the examples (prompt and response of each, in order), to refuse resuming on other data. */
export function fingerprintExamples(examples: readonly Example[]): string {
  const h = createHash("sha256");
  for (const e of examples) {
    h.update(e.text);
    h.update("\0");
    h.update(String(e.prompt.length));
    h.update("\0");
  }
  return h.digest("hex").slice(0, 16);
}
