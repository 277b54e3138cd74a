// Flags that choose and shape a dataset, shared by `data`, `finetune` and `eval`.
import type { DatasetSpec } from "../data/index.js";
import { fetchDatasetFile } from "../io/hub.js";
import type { FlagSpecs, FlagValues } from "./args.js";
import type { Tokenizer } from "../tokenizer/tokenizer.js";

export const datasetFlags: FlagSpecs = {
  data: { type: "string", help: "a JSONL/JSON/CSV file, or a built-in dataset (dolly)", value: "FILE|dolly" },
  format: { type: "string", help: "record format", choices: ["auto", "dolly", "alpaca", "messages", "text"], default: "auto" },
  template: { type: "string", help: "prompt template with {field} placeholders (default: Instruction:\\n{instruction}\\n\\nResponse:\\n{response})" },
  "no-context": { type: "boolean", help: "keep only rows with an empty context/input (the walkthrough's filter)" },
  category: { type: "list", help: "keep only these categories", value: "A,B" },
  limit: { type: "integer", help: "keep at most N examples (after filters and shuffling)", min: 1 },
  shuffle: { type: "boolean", help: "shuffle before the limit and the eval split" },
  seed: { type: "integer", help: "seed of the shuffle, the eval split and training", min: 0, default: 0 },
  "eval-fraction": { type: "number", help: "share of examples held out for evaluation", min: 0, max: 0.99, default: 0 },
  "skip-bad-rows": { type: "boolean", help: "skip and count malformed rows instead of stopping" },
};

export function datasetSpecFrom(flags: FlagValues, source: string, tokenizer: Tokenizer | null): DatasetSpec {
  return {
    source,
    format: flags.format as DatasetSpec["format"],
    template: flags.template as string | undefined,
    noContext: Boolean(flags["no-context"]),
    categories: flags.category as string[] | undefined,
    limit: flags.limit as number | undefined,
    shuffle: Boolean(flags.shuffle),
    seed: flags.seed as number,
    evalFraction: flags["eval-fraction"] as number,
    skipBadRows: Boolean(flags["skip-bad-rows"]),
    chatTemplate: tokenizer?.chatTemplate !== undefined
      ? (messages, options) => tokenizer.applyChatTemplate(messages, options)
      : undefined,
  };
}

/**
 * `--data dolly` means the whole databricks-dolly-15k from the Hugging Face hub when it can be had
 * (cached or downloaded); offline it falls back to the first 2,500 records that ship with loratune.
 */
export async function resolveDataSource(source: string): Promise<string> {
  if (source !== "dolly") return source;
  const file = await fetchDatasetFile("databricks/databricks-dolly-15k", "databricks-dolly-15k.jsonl");
  if (file) return file;
  process.stderr.write("loratune: databricks-dolly-15k is not reachable on the Hugging Face hub; using the shipped first 2,500 records\n");
  return source;
}
