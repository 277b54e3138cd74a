import path from "node:path";
import { native } from "../../backend/native.js";
import { loadDataset } from "../../data/index.js";
import { LoratuneError } from "../../errors.js";
import { loadModel, type WeightPrecision } from "../../models/load.js";
import { summarize } from "../../models/summary.js";
import { tokenizeExamples, type TrainOn } from "../../training/batches.js";
import { runFinetune, WALKTHROUGH_PROMPTS } from "../../workflows/finetune.js";
import type { FlagSpecs } from "../args.js";
import type { Command } from "../command.js";
import { modelFlags, requireString } from "../command.js";
import { datasetFlags, datasetSpecFrom, resolveDataSource } from "../dataset-flags.js";
import { interruptible } from "../interrupt.js";
import type { LoraLayout } from "../../lora/lora.js";

const flags = {
  ...modelFlags,
  ...datasetFlags,
  config: { type: "string", help: "a JSON or YAML file of flags (keys as the flag names); flags given on the command line win", value: "FILE" },
  out: { type: "string", help: "folder for the adapter, checkpoints, log and report", value: "DIR", default: "runs/finetune" },
  "lora-rank": { type: "integer", help: "LoRA rank", min: 1, default: 4 },
  "lora-alpha": { type: "number", help: "LoRA alpha (scale alpha/rank; default: the rank)", above: 0 },
  "lora-targets": { type: "list", help: "projections that get adapters", default: ["q_proj", "v_proj"] },
  "lora-layout": { type: "string", help: "adapter layout", choices: ["peft", "keras"], default: "peft" },
  epochs: { type: "integer", help: "passes over the training data", min: 1, default: 1 },
  "batch-size": { type: "integer", help: "sequences per batch (run without padding)", min: 1, default: 1 },
  "seq-len": { type: "integer", help: "tokens per sequence; longer examples are truncated", min: 2, default: 512 },
  "learning-rate": { type: "number", help: "AdamW learning rate", above: 0, default: 5e-5 },
  "weight-decay": { type: "number", help: "AdamW weight decay (not on biases and norm scales)", min: 0, default: 0.01 },
  optimizer: { type: "string", help: "where AdamW adds epsilon", choices: ["keras", "torch"], default: "keras" },
  schedule: { type: "string", help: "learning-rate schedule", choices: ["constant", "cosine", "linear"], default: "constant" },
  "warmup-steps": { type: "integer", help: "warm-up updates", min: 0, default: 0 },
  "grad-accum": { type: "integer", help: "batches per update", min: 1, default: 1 },
  "clip-norm": { type: "number", help: "clip gradients to this global norm", above: 0 },
  "train-on": { type: "string", help: "which tokens count in the loss", choices: ["all", "response"], default: "all" },
  "checkpoint-activations": { type: "boolean", help: "recompute each block's activations in the backward pass: less memory, about one more forward pass" },
  "checkpoint-every": { type: "integer", help: "write a checkpoint every N updates (and at the end)", min: 1, default: 100 },
  resume: { type: "boolean", help: "continue from the latest checkpoint in --out" },
  profile: { type: "boolean", help: "print the time per op kind of a training update (mean of the updates after the first)" },
  "dry-run": { type: "boolean", help: "print the plan and stop" },
} satisfies FlagSpecs;

export const finetuneCommand: Command = {
  name: "finetune",
  summary: "fine-tune a model with LoRA on your data; prints the plan, trains, saves the adapter and a report",
  usage: "loratune finetune --model <dir|preset> --data <file|dolly> [--no-context --limit 1000] [--lora-rank 4] [--out DIR]",
  flags,
  async run(f) {
    if (f.threads !== undefined) native.setNumThreads(f.threads as number);
    const modelSpec = requireString(f, "model", "finetune");
    const source = await resolveDataSource(requireString(f, "data", "finetune"));
    const seqLen = f["seq-len"] as number;
    const trainOn = f["train-on"] as TrainOn;
    const base = await loadModel(modelSpec, { precision: f.precision as WeightPrecision });
    if (!base.tokenizer) throw new LoratuneError("the model has no tokenizer.json, which fine-tuning needs", { file: base.dir });
    if (seqLen > base.config.maxPositions) {
      throw new LoratuneError(`--seq-len ${seqLen} is beyond the model's context of ${base.config.maxPositions} tokens`);
    }
    const dataset = loadDataset(datasetSpecFrom(f, source, base.tokenizer));
    const lora = {
      rank: f["lora-rank"] as number, alpha: f["lora-alpha"] as number | undefined,
      targets: f["lora-targets"] as string[], layout: f["lora-layout"] as LoraLayout,
    };
    const summary = summarize(base.config, lora);
    const tokens = tokenizeExamples(dataset.train, base.tokenizer, { seqLen, trainOn });
    const steps = Math.ceil(dataset.train.length / ((f["batch-size"] as number) * (f["grad-accum"] as number))) * (f.epochs as number);
    const estimate = estimateSeconds(summary.totalParams, tokens.tokens * (f.epochs as number));
    process.stdout.write(
      `Plan\n  model              ${modelSpec} (${base.dir})\n` +
      `  parameters         ${summary.totalParams.toLocaleString("en-US")}, trainable ${summary.trainableParams.toLocaleString("en-US")} ` +
      `(LoRA rank ${lora.rank} on ${lora.targets.join(", ")}, ${lora.layout} layout)\n` +
      `  data               ${dataset.plan.rowsRead} rows read; ${dataset.plan.steps.map((s) => `${s.name}${s.detail ? ` ${s.detail}` : ""}: ${s.kept} of ${s.of}`).join("; ") || "no filters"}\n` +
      `  examples           ${dataset.train.length} train, ${dataset.eval.length} eval; ${tokens.truncated} truncated to ${seqLen} tokens\n` +
      `  tokens             ${tokens.tokens.toLocaleString("en-US")} per epoch (${tokens.targets.toLocaleString("en-US")} counted in the loss, train-on ${trainOn})\n` +
      `  steps              ${steps} (${f.epochs} epoch(s), batch ${f["batch-size"]}, accumulation ${f["grad-accum"]})\n` +
      `  estimated time     ${formatDuration(estimate)} (at ~${Math.round(tokens.tokens * (f.epochs as number) / estimate)} tokens/s on 2 cores)\n`,
    );
    if (f["dry-run"]) return 0;
    return interruptible(async (signal) => {
      await runFinetune({
        base, baseName: modelSpec, train: dataset.train, eval: dataset.eval, lora,
        fit: {
          epochs: f.epochs as number, batchSize: f["batch-size"] as number, seqLen, trainOn,
          learningRate: f["learning-rate"] as number, weightDecay: f["weight-decay"] as number,
          optimizer: f.optimizer as "keras" | "torch", schedule: f.schedule as "constant" | "cosine" | "linear",
          warmupSteps: f["warmup-steps"] as number, gradientAccumulation: f["grad-accum"] as number,
          clipNorm: f["clip-norm"] as number | undefined, shuffle: Boolean(f.shuffle), seed: f.seed as number,
          checkpointEvery: f["checkpoint-every"] as number, resume: Boolean(f.resume),
          checkpointActivations: Boolean(f["checkpoint-activations"]), profile: Boolean(f.profile),
        },
        out: path.resolve(f.out as string),
        prompts: dataset.plan.format === "dolly" || dataset.plan.format === "alpaca" ? WALKTHROUGH_PROMPTS : dataset.eval.slice(0, 2).map((e) => e.prompt),
        signal,
      });
    });
  },
};

/** Rough training time: 6 FLOPs per parameter per token at ~60 GFLOP/s, not counting frozen weight gradients (4 instead of 6). */
function estimateSeconds(params: number, tokens: number): number {
  return (4 * params * tokens) / 60e9;
}

function formatDuration(seconds: number): string {
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}
