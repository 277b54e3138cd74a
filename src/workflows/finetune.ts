// The walkthrough's fine-tuning job on a loaded base model: generate before, measure, enable LoRA,
// train, generate after, measure again, save the adapter (and check it reloads), write the report.
import fs from "node:fs";
import path from "node:path";
import type { Example } from "../data/index.js";
import { LoratuneError } from "../errors.js";
import { TextGenerator } from "../generation/generate.js";
import { makeSampler } from "../generation/samplers.js";
import { loadAdapter, saveAdapter } from "../lora/adapter.js";
import { enableLora, type LoraOptions } from "../lora/lora.js";
import type { LoadedModel } from "../models/load.js";
import type { CausalLM } from "../models/model.js";
import { tidy } from "../tensor.js";
import { loadModelDir } from "../models/load.js";
import { summarize } from "../models/summary.js";
import type { Tokenizer } from "../tokenizer/tokenizer.js";
import { writeReport, type EvalMetrics, type ReportData } from "../training/report.js";
import { evaluate, fit, type FitOptions, type FitResult } from "../training/trainer.js";

/** The walkthrough's two prompts, in its template. */
export const WALKTHROUGH_PROMPTS = [
  "Instruction:\nWhat should I do on a trip to Europe?\n\nResponse:\n",
  "Instruction:\nExplain the process of photosynthesis in a way that a child could understand.\n\nResponse:\n",
];

export interface FinetuneJob {
  /** The base model, and how to name it in the adapter config and the report. */
  base: LoadedModel;
  baseName: string;
  train: Example[];
  eval: Example[];
  lora: LoraOptions;
  fit: FitOptions;
  /** Folder for the adapter, checkpoints, log and report. */
  out: string;
  /** Prompts shown before and after (default: the walkthrough's two). */
  prompts?: string[];
  /** Held-out prompts whose generations measure the stop rate (default 20). */
  stopRatePrompts?: number;
  /** The walkthrough's sampler: top-k, k 5, seed 2, max length 256. */
  sampler?: { k: number; seed: number; maxLength: number };
  /** Where progress and generations are printed. */
  print?: (text: string) => void;
  signal?: AbortSignal;
  /** Extra sections for the report (e.g. how the demo's base model was made). */
  reportExtra?: Record<string, unknown>;
  title?: string;
  /** Configuration shown in the report, beyond what the job itself knows. */
  reportConfig?: Record<string, string | number | boolean>;
}

export interface FinetuneOutcome {
  fit: FitResult;
  adapterDir: string;
  report: { html: string; json: string };
  data: ReportData;
}

interface Sample {
  prompt: string;
  completion: string;
  stopped: boolean;
}

export async function runFinetune(job: FinetuneJob): Promise<FinetuneOutcome> {
  const print = job.print ?? ((t: string) => process.stdout.write(t));
  const { model, tokenizer } = job.base;
  if (!tokenizer) throw new LoratuneError("fine-tuning needs the model's tokenizer (tokenizer.json)", { file: job.base.dir });
  const sampler = job.sampler ?? { k: 5, seed: 2, maxLength: 256 };
  const prompts = job.prompts ?? WALKTHROUGH_PROMPTS;
  const stopPrompts = job.eval.slice(0, job.stopRatePrompts ?? 20).map((e) => e.prompt);
  const seqOptions = { seqLen: job.fit.seqLen ?? 512, trainOn: job.fit.trainOn ?? "all" };
  fs.mkdirSync(job.out, { recursive: true });

  const generate = (prompt: string): Sample => {
    const g = new TextGenerator(model, tokenizer).generate(prompt, {
      sampler: makeSampler("top-k", { k: sampler.k }), seed: sampler.seed, maxLength: sampler.maxLength,
    });
    return { prompt, completion: g.completion, stopped: g.finishReason === "eos" };
  };
  const measure = (when: string) => {
    const t0 = performance.now();
    const shown = prompts.map(generate);
    for (const s of shown) print(`\n--- ${when} ---\n${s.prompt}${s.completion}${s.stopped ? "" : " [no end-of-sequence within the length limit]"}\n`);
    const evalMetrics: EvalMetrics = job.eval.length > 0 ? evaluate(model, tokenizer, job.eval, seqOptions) : { loss: NaN, perplexity: NaN, accuracy: NaN };
    const stops = stopPrompts.map(generate);
    const stopRate = stops.length > 0 ? stops.filter((s) => s.stopped).length / stops.length : NaN;
    const seconds = ((performance.now() - t0) / 1000).toFixed(1);
    print(job.eval.length === 0
      ? `\n${when}: no held-out examples to measure (give some with --eval-fraction) (${seconds} s)\n`
      : `\n${when}: eval loss ${evalMetrics.loss.toFixed(4)} (perplexity ${evalMetrics.perplexity.toFixed(2)}, accuracy ${evalMetrics.accuracy.toFixed(4)}) on ${job.eval.length} held-out examples; ` +
        `stop rate ${(stopRate * 100).toFixed(0)}% of ${stops.length} held-out prompts (${seconds} s)\n`);
    return { shown, evalMetrics, stopRate };
  };

  const before = measure("before fine-tuning");
  const spec = enableLora(model, job.lora);
  const summary = summarize(model.config, spec);
  print(`\nLoRA rank ${spec.rank} (${spec.layout} layout) on ${spec.targets.join(", ")}: ` +
    `${summary.trainableParams.toLocaleString("en-US")} trainable of ${summary.totalParams.toLocaleString("en-US")} parameters\n`);
  const result = await fit(model, tokenizer, { train: job.train, eval: job.eval }, {
    checkpointDir: path.join(job.out, "checkpoints"),
    logFile: path.join(job.out, "train_log.jsonl"),
    progress: true,
    signal: job.signal,
    ...job.fit,
  });
  if (result.stopped === "interrupted") {
    throw new LoratuneError(`interrupted at step ${result.steps} of ${result.totalSteps}; checkpoint ${result.checkpoint}`, {
      hint: "run the same command with --resume to continue",
    });
  }
  const after = measure("after fine-tuning");

  const adapterDir = path.join(job.out, "adapter");
  saveAdapter(model, adapterDir, { baseModel: job.baseName, spec });
  // With no prompts to show (no held-out examples), a training text serves for the check.
  checkAdapterReloads(model, job.base.dir, adapterDir, tokenizer, prompts[0] ?? job.train[0]!.text);

  const data: ReportData = {
    title: job.title ?? `LoRA fine-tuning of ${job.baseName}`,
    createdAt: new Date().toISOString(),
    baseModel: path.resolve(job.base.dir),
    adapter: path.resolve(adapterDir),
    config: {
      base_model: job.baseName,
      lora_rank: spec.rank, lora_alpha: spec.alpha ?? spec.rank, lora_targets: spec.targets.join(","), lora_layout: spec.layout,
      epochs: job.fit.epochs ?? 1, batch_size: job.fit.batchSize ?? 1, sequence_length: seqOptions.seqLen, train_on: seqOptions.trainOn,
      learning_rate: job.fit.learningRate ?? 5e-5, weight_decay: job.fit.weightDecay ?? 0.01, schedule: String(job.fit.schedule ?? "constant"),
      sampler: `top-k k=${sampler.k} seed=${sampler.seed} max_length=${sampler.maxLength}`,
      ...job.reportConfig,
    },
    plan: {
      train_examples: result.plan.trainExamples, eval_examples: result.plan.evalExamples, truncated: result.plan.truncated,
      train_tokens: result.plan.trainTokens, steps: result.plan.totalSteps, trainable_params: summary.trainableParams,
      total_params: summary.totalParams,
    },
    steps: result.steps,
    trainSeconds: result.trainSeconds,
    tokensPerSecond: result.tokensPerSecond,
    trainLog: result.log.map((l) => ({ step: l.step, loss: l.loss, accuracy: l.accuracy })),
    evalLog: result.evalLog.map((l) => ({ step: l.step, loss: l.loss })),
    evalBefore: before.evalMetrics,
    evalAfter: after.evalMetrics,
    stopRateBefore: before.stopRate,
    stopRateAfter: after.stopRate,
    generations: prompts.map((prompt, i) => ({
      prompt, before: before.shown[i]!.completion, after: after.shown[i]!.completion,
      stoppedBefore: before.shown[i]!.stopped, stoppedAfter: after.shown[i]!.stopped,
    })),
    extra: job.reportExtra,
  };
  const report = writeReport(job.out, data);
  print(`\nadapter: ${adapterDir}\nreport:  ${report.html}\n`);
  return { fit: result, adapterDir, report, data };
}

/**
 * The saved adapter, loaded onto a fresh copy of the base, must compute what the trained model
 * computes: the final hidden states of a prompt agree (exactly for the PEFT layout; the Keras
 * layout's block-diagonal export differs only by float rounding).
 */
function checkAdapterReloads(trained: CausalLM, baseDir: string, adapterDir: string, tokenizer: Tokenizer, prompt: string): void {
  const fresh = loadModelDir(baseDir);
  loadAdapter(fresh.model, adapterDir, { trainable: false });
  const ids = Int32Array.from(tokenizer.encode(prompt));
  const difference = tidy(() => {
    const a = trained.forward(ids).f32, b = fresh.model.forward(ids).f32;
    let max = 0;
    for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i]! - b[i]!));
    return max;
  });
  if (!(difference <= 1e-3)) {
    throw new LoratuneError(`the saved adapter does not reproduce the trained model (hidden states differ by ${difference})`, { file: adapterDir });
  }
}
