import fs from "node:fs";
import { fetchModel } from "../../io/hub.js";
import { parseConfig, readConfig, type ModelConfig } from "../../models/config.js";
import { resolvePreset } from "../../models/presets.js";
import { formatSummary, summarize, summaryJson } from "../../models/summary.js";
import type { Command } from "../command.js";
import { requireString } from "../command.js";

/** The config of a folder or preset, without reading (or downloading) any weights. */
export async function configFor(spec: string): Promise<ModelConfig> {
  if (fs.existsSync(spec)) return readConfig(spec);
  const preset = resolvePreset(spec);
  if (preset) return parseConfig(preset.config, `preset ${spec}`);
  return readConfig(await fetchModel(spec));
}

export const summaryCommand: Command = {
  name: "summary",
  summary: "show a model's layers, shapes and parameter counts (from its config; no weights are loaded)",
  usage: "loratune summary --model <dir|preset> [--lora-rank 4 [--lora-layout peft|keras]] [--json]",
  flags: {
    model: { type: "string", help: "checkpoint folder or preset name (e.g. gemma_2b_en)", value: "DIR|PRESET" },
    "lora-rank": { type: "integer", help: "count LoRA adapters of this rank", min: 1 },
    "lora-alpha": { type: "number", help: "LoRA alpha (scale alpha/rank; default: the rank)", above: 0 },
    "lora-targets": { type: "list", help: "projections that get adapters", default: ["q_proj", "v_proj"] },
    "lora-layout": { type: "string", help: "adapter layout", choices: ["peft", "keras"], default: "peft" },
    json: { type: "boolean", help: "print JSON instead of a table" },
  },
  async run(flags) {
    const config = await configFor(requireString(flags, "model", "summary"));
    const rank = flags["lora-rank"] as number | undefined;
    const targets = flags["lora-targets"];
    const lora = rank === undefined ? undefined : {
      rank,
      alpha: (flags["lora-alpha"] as number | undefined) ?? rank,
      targets: targets as string[],
      layout: flags["lora-layout"] as "peft" | "keras",
    };
    const summary = summarize(config, lora);
    process.stdout.write(flags.json ? `${JSON.stringify(summaryJson(summary))}\n` : formatSummary(summary));
  },
};
