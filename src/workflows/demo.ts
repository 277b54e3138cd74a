// `loratune demo`: the Gemma LoRA walkthrough, offline. No Gemma weights can be had without the
// network, so the demo first makes its own small base model of the Gemma architecture: it trains a
// byte-level BPE tokenizer and pre-trains the model (all parameters) on text that ships with
// loratune (Tiny Shakespeare and Dolly-15k responses, never the held-out examples), and caches it.
// Then it runs the walkthrough on it: 1000 no-context Dolly examples, LoRA rank 4 on q and v,
// sequence length 512, batch 1, one epoch, with generations and measurements before and after.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { builtinDatasetPath, loadDataset, packageRoot, type Example } from "../data/index.js";
import { LoratuneError } from "../errors.js";
import { saveModel } from "../lora/merge.js";
import type { ModelConfig } from "../models/config.js";
import { initModel } from "../models/init.js";
import { loadModelDir } from "../models/load.js";
import { summarize } from "../models/summary.js";
import { saveTokenizer, trainBpeTokenizer } from "../tokenizer/train.js";
import { Tokenizer } from "../tokenizer/tokenizer.js";
import { fit } from "../training/trainer.js";
import { runFinetune, type FinetuneOutcome } from "./finetune.js";

/** The demo's base model: Gemma's architecture (multi-query attention, GeGLU, tied embeddings), small. */
export const DEMO_BASE_CONFIG: ModelConfig = {
  modelType: "gemma", architecture: "GemmaForCausalLM",
  vocabSize: 4096, hiddenSize: 256, intermediateSize: 1024, numLayers: 4, numHeads: 4, numKvHeads: 1, headDim: 64,
  rmsNormEps: 1e-6, ropeTheta: 10000, maxPositions: 1024, activation: "gelu_tanh", tieWordEmbeddings: true,
  bosTokenId: 2, eosTokenIds: [1], padTokenId: 0, torchDtype: "float32",
};

/** How the base model is pre-trained; part of the cache key. */
export const DEMO_PRETRAINING = { epochs: 3, seqLen: 256, learningRate: 2e-3, warmupSteps: 200, seed: 0, vocabSize: 4096 };
const CACHE_VERSION = "demo-base-v3";

export interface DemoOptions {
  out: string;
  /** Training examples (the walkthrough: 1000). */
  examples?: number;
  /** Held-out examples for eval loss and stop rate. */
  evalExamples?: number;
  learningRate?: number;
  rank?: number;
  /** Where the pre-trained base model is cached (default ~/.cache/loratune). */
  cacheDir?: string;
  print?: (text: string) => void;
  signal?: AbortSignal;
}

export function defaultCacheDir(): string {
  return process.env.LORATUNE_CACHE ?? path.join(process.env.XDG_CACHE_HOME ?? path.join(os.homedir(), ".cache"), "loratune");
}

/** The walkthrough's split: the first `examples` no-context rows train, the next `evalExamples` are held out. */
export function demoData(examples: number, evalExamples: number): { train: Example[]; eval: Example[]; all: Example[] } {
  const { train: noContext } = loadDataset({ source: "dolly", noContext: true });
  if (noContext.length < examples + evalExamples) {
    throw new LoratuneError(`the shipped Dolly records have ${noContext.length} no-context rows; ${examples + evalExamples} needed`);
  }
  const { train: all } = loadDataset({ source: "dolly" });
  return { train: noContext.slice(0, examples), eval: noContext.slice(examples, examples + evalExamples), all };
}

/**
 * Text the base model learns from: Shakespeare's paragraphs and the Dolly responses (minus the
 * held-out rows), packed into passages of about 900 characters (~250 tokens) so that every step
 * carries a full sequence. `eosText` is the end-of-sequence token as text (the tokenizer maps it
 * to its id).
 */
function pretrainingCorpus(all: Example[], heldOut: Example[], eosText: string): Example[] {
  const held = new Set(heldOut.map((e) => e.source.line));
  const file = path.join(packageRoot(), "assets", "data", "text", "tinyshakespeare.txt");
  const pieces: Array<{ text: string; source: Example["source"] }> = [];
  let line = 1;
  for (const paragraph of fs.readFileSync(file, "utf8").split("\n\n")) {
    if (paragraph.trim()) pieces.push({ text: paragraph, source: { file, line } });
    line += paragraph.split("\n").length + 1;
  }
  // A response is a whole document: it ends with the end-of-sequence token, as documents do in
  // pre-training corpora; Shakespeare's passages run on.
  for (const e of all) {
    if (!held.has(e.source.line) && e.response.trim()) pieces.push({ text: `${e.response.trim()}${eosText}`, source: e.source });
  }
  const passages: Example[] = [];
  let current: Array<{ text: string; source: Example["source"] }> = [];
  const flush = () => {
    if (current.length === 0) return;
    const text = current.map((p) => p.text).join("\n\n");
    passages.push({ prompt: "", response: text, text, source: current[0]!.source });
    current = [];
  };
  let length = 0;
  for (const piece of pieces) {
    if (length > 0 && length + piece.text.length > 900) {
      flush();
      length = 0;
    }
    current.push(piece);
    length += piece.text.length + 2;
  }
  flush();
  return passages;
}

/** The cached pre-trained base model's folder, made first if needed. */
export async function demoBaseModel(options: { cacheDir: string; heldOut: Example[]; all: Example[]; print: (t: string) => void; signal?: AbortSignal }): Promise<{ dir: string; pretraining: Record<string, unknown> }> {
  const dir = path.join(options.cacheDir, CACHE_VERSION);
  const infoFile = path.join(dir, "pretraining.json");
  if (fs.existsSync(path.join(dir, "model.safetensors")) && fs.existsSync(infoFile)) {
    options.print(`Using the cached demo base model in ${dir}\n`);
    return { dir, pretraining: JSON.parse(fs.readFileSync(infoFile, "utf8")) };
  }
  options.print(`Making the demo's base model (once; cached in ${dir}):\n`);
  const work = path.join(options.cacheDir, `${CACHE_VERSION}.work`);
  fs.mkdirSync(work, { recursive: true });
  const t0 = performance.now();
  const tokenizerDir = path.join(work, "tokenizer");
  if (!fs.existsSync(path.join(tokenizerDir, "tokenizer.json"))) {
    const texts = pretrainingCorpus(options.all, options.heldOut, "").map((d) => d.text);
    saveTokenizer(tokenizerDir, trainBpeTokenizer(texts, { vocabSize: DEMO_PRETRAINING.vocabSize }));
  }
  const tokenizer = Tokenizer.fromDir(tokenizerDir);
  const corpus = pretrainingCorpus(options.all, options.heldOut, tokenizer.idToToken(DEMO_BASE_CONFIG.eosTokenIds[0]!)!);
  const tokenizerSeconds = (performance.now() - t0) / 1000;
  options.print(`  tokenizer: byte-level BPE, ${tokenizer.vocabSize} tokens, trained in ${tokenizerSeconds.toFixed(1)} s\n`);

  const model = initModel(DEMO_BASE_CONFIG, { seed: DEMO_PRETRAINING.seed });
  for (const w of model.weights().values()) w.requiresGrad = true;
  const params = summarize(DEMO_BASE_CONFIG).totalParams;
  options.print(`  model: Gemma architecture, ${DEMO_BASE_CONFIG.numLayers} layers x ${DEMO_BASE_CONFIG.hiddenSize}, ` +
    `${params.toLocaleString("en-US")} parameters, pre-trained on ${corpus.length} passages for ${DEMO_PRETRAINING.epochs} epochs\n`);
  const result = await fit(model, tokenizer, { train: corpus, eval: [] }, {
    epochs: DEMO_PRETRAINING.epochs, seqLen: DEMO_PRETRAINING.seqLen, learningRate: DEMO_PRETRAINING.learningRate,
    schedule: "cosine", warmupSteps: DEMO_PRETRAINING.warmupSteps, minLearningRate: DEMO_PRETRAINING.learningRate / 10,
    shuffle: true, seed: DEMO_PRETRAINING.seed, evalEvery: false, addEos: false,
    checkpointDir: path.join(work, "checkpoints"), checkpointEvery: 500, resume: true,
    logFile: path.join(work, "pretrain_log.jsonl"), progress: true, signal: options.signal,
  });
  if (result.stopped === "interrupted") {
    throw new LoratuneError(`pre-training of the demo base model interrupted at step ${result.steps}`, { hint: "run the demo again to continue where it stopped" });
  }
  const pretraining = {
    corpus_passages: corpus.length, epochs: DEMO_PRETRAINING.epochs, steps: result.steps, seq_len: DEMO_PRETRAINING.seqLen,
    learning_rate: DEMO_PRETRAINING.learningRate, train_seconds: Math.round(result.trainSeconds),
    final_loss: result.log.at(-1)?.loss, parameters: params, tokenizer_vocab: tokenizer.vocabSize,
  };
  for (const w of model.weights().values()) w.requiresGrad = false;
  saveModel(model, path.join(work, "model"), { tokenizerDir });
  fs.writeFileSync(path.join(work, "model", "pretraining.json"), `${JSON.stringify(pretraining, null, 2)}\n`);
  fs.rmSync(dir, { recursive: true, force: true });
  fs.renameSync(path.join(work, "model"), dir);
  fs.rmSync(work, { recursive: true, force: true });
  return { dir, pretraining };
}

export async function runDemo(options: DemoOptions): Promise<FinetuneOutcome> {
  const print = options.print ?? ((t: string) => process.stdout.write(t));
  const started = performance.now();
  const data = demoData(options.examples ?? 1000, options.evalExamples ?? 100);
  const base = await demoBaseModel({ cacheDir: options.cacheDir ?? defaultCacheDir(), heldOut: data.eval, all: data.all, print, signal: options.signal });
  // The report and the adapter point at a copy of the base model inside the output folder.
  const baseCopy = path.join(options.out, "base_model");
  fs.rmSync(baseCopy, { recursive: true, force: true });
  fs.mkdirSync(options.out, { recursive: true });
  fs.cpSync(base.dir, baseCopy, { recursive: true });
  const loaded = loadModelDir(baseCopy);
  print(`\nBase model: ${baseCopy}\nData: ${data.train.length} no-context Dolly examples for training, ${data.eval.length} held out (${builtinDatasetPath("dolly")})\n`);
  const outcome = await runFinetune({
    base: loaded,
    baseName: baseCopy,
    train: data.train,
    eval: data.eval,
    lora: { rank: options.rank ?? 4, targets: ["q_proj", "v_proj"] },
    fit: { epochs: 1, batchSize: 1, seqLen: 512, learningRate: options.learningRate ?? 1e-3, weightDecay: 0.01 },
    out: options.out,
    print,
    signal: options.signal,
    title: "loratune demo: the Gemma LoRA walkthrough on a small self-made Gemma-architecture model",
    reportExtra: { base_model_pretraining: base.pretraining },
  });
  print(`\nDemo finished in ${((performance.now() - started) / 1000 / 60).toFixed(1)} minutes.\n`);
  return outcome;
}
