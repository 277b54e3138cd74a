import { describeDataset, formatDescription, loadDataset } from "../../data/index.js";
import { loadModel, type WeightPrecision } from "../../models/load.js";
import type { Tokenizer } from "../../tokenizer/tokenizer.js";
import type { Command } from "../command.js";
import { modelFlags, requireString } from "../command.js";
import { datasetFlags, datasetSpecFrom, resolveDataSource } from "../dataset-flags.js";

export const dataCommand: Command = {
  name: "data",
  summary: "look at a dataset: counts, what each filter kept, token lengths, formatted examples",
  usage: "loratune data --data <file|dolly> [--format dolly] [--no-context] [--limit 1000] [--model DIR] [--sample 5]",
  flags: {
    ...datasetFlags,
    model: { ...modelFlags.model!, help: "a model whose tokenizer measures token lengths (optional)" },
    "seq-len": { type: "integer", help: "sequence length: count the examples it would truncate", min: 1, default: 512 },
    sample: { type: "integer", help: "formatted examples to show", min: 0, default: 3 },
    json: { type: "boolean", help: "print JSON" },
  },
  async run(flags) {
    const source = await resolveDataSource(requireString(flags, "data", "data"));
    let tokenizer: Tokenizer | null = null;
    if (typeof flags.model === "string") {
      tokenizer = (await loadModel(flags.model, { precision: flags.precision as WeightPrecision | undefined })).tokenizer;
    }
    const dataset = loadDataset(datasetSpecFrom(flags, source, tokenizer));
    const description = describeDataset(dataset, {
      encode: tokenizer ? (text) => tokenizer.encode(text) : undefined,
      sample: flags.sample as number,
      seqLen: flags["seq-len"] as number,
    });
    process.stdout.write(flags.json ? `${JSON.stringify(description)}\n` : formatDescription(description));
  },
};
