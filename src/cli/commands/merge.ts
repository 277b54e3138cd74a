import path from "node:path";
import { loadAdapter } from "../../lora/adapter.js";
import { mergeLora, saveModel } from "../../lora/merge.js";
import { loadModel, type WeightPrecision } from "../../models/load.js";
import type { Command } from "../command.js";
import { modelFlags, requireString } from "../command.js";

export const mergeCommand: Command = {
  name: "merge",
  summary: "merge a LoRA adapter into its base model and write a Hugging Face checkpoint",
  usage: "loratune merge --model <dir|preset> --adapter DIR --out DIR",
  flags: {
    ...modelFlags,
    adapter: { type: "string", help: "the LoRA adapter folder (PEFT layout)", value: "DIR" },
    out: { type: "string", help: "folder for the merged checkpoint", value: "DIR" },
  },
  async run(f) {
    const adapter = requireString(f, "adapter", "merge");
    const out = path.resolve(requireString(f, "out", "merge"));
    const { model, dir } = await loadModel(requireString(f, "model", "merge"), { precision: f.precision as WeightPrecision });
    loadAdapter(model, adapter, { trainable: false });
    const merged = mergeLora(model);
    const files = saveModel(model, out, { tokenizerDir: dir });
    process.stdout.write(`merged ${merged.length} adapters into ${out} (${files.join(", ")})\n`);
  },
};
