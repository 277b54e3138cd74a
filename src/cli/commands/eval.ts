import { loadDataset } from "../../data/index.js";
import { LoratuneError } from "../../errors.js";
import { loadAdapter } from "../../lora/adapter.js";
import { loadModel, type WeightPrecision } from "../../models/load.js";
import type { TrainOn } from "../../training/batches.js";
import { evaluate } from "../../training/trainer.js";
import type { Command } from "../command.js";
import { modelFlags, requireString } from "../command.js";
import { datasetFlags, datasetSpecFrom, resolveDataSource } from "../dataset-flags.js";

export const evalCommand: Command = {
  name: "eval",
  summary: "loss, perplexity and token accuracy of a model (and adapter) over a dataset",
  usage: "loratune eval --model <dir|preset> [--adapter DIR] --data <file|dolly> [--format …] [--json]",
  flags: {
    ...modelFlags,
    ...datasetFlags,
    adapter: { type: "string", help: "a LoRA adapter folder (PEFT layout)", value: "DIR" },
    "seq-len": { type: "integer", help: "tokens per sequence; longer examples are truncated", min: 2, default: 512 },
    "train-on": { type: "string", help: "which tokens count", choices: ["all", "response"], default: "all" },
    json: { type: "boolean", help: "print {\"loss\", \"perplexity\", \"accuracy\", \"tokens\"}" },
  },
  async run(f) {
    const { model, tokenizer, dir } = await loadModel(requireString(f, "model", "eval"), { precision: f.precision as WeightPrecision });
    if (!tokenizer) throw new LoratuneError("the model has no tokenizer.json", { file: dir });
    if (typeof f.adapter === "string") loadAdapter(model, f.adapter, { trainable: false });
    const dataset = loadDataset(datasetSpecFrom(f, await resolveDataSource(requireString(f, "data", "eval")), tokenizer));
    // Without an eval split, every example kept is evaluated.
    const examples = dataset.eval.length > 0 ? dataset.eval : dataset.train;
    const r = evaluate(model, tokenizer, examples, { seqLen: f["seq-len"] as number, trainOn: f["train-on"] as TrainOn });
    process.stdout.write(f.json
      ? `${JSON.stringify({ loss: r.loss, perplexity: r.perplexity, accuracy: r.accuracy, tokens: r.tokens })}\n`
      : `loss ${r.loss.toFixed(4)}  perplexity ${r.perplexity.toFixed(3)}  accuracy ${r.accuracy.toFixed(4)}  over ${r.tokens} tokens of ${examples.length} examples\n`);
  },
};
