import { native } from "../../backend/native.js";
import { LoratuneError } from "../../errors.js";
import { TextGenerator, type GenerateOptions, type Prompt } from "../../generation/generate.js";
import { makeSampler, samplerNames, type SamplerName } from "../../generation/samplers.js";
import { loadModel, type WeightPrecision } from "../../models/load.js";
import type { Command } from "../command.js";
import { modelFlags, requireString } from "../command.js";

export const generateCommand: Command = {
  name: "generate",
  summary: "generate text from a prompt with a sampler (greedy, top-k, top-p, random)",
  usage: "loratune generate --model <dir|preset> --prompt \"...\" [--sampler top-k --top-k 5 --seed 2 --max-length 256]",
  flags: {
    ...modelFlags,
    prompt: { type: "string", help: "the prompt text" },
    "prompt-ids": { type: "list", help: "the prompt as token ids, e.g. 2,111,377", value: "ID,ID,..." },
    sampler: { type: "string", help: "how the next token is chosen", choices: samplerNames, default: "top-k" },
    "top-k": { type: "integer", help: "k of the top-k sampler", min: 1, default: 5 },
    "top-p": { type: "number", help: "p of the top-p sampler", above: 0, max: 1, default: 0.9 },
    temperature: { type: "number", help: "softmax temperature", above: 0, default: 1 },
    seed: { type: "integer", help: "seed of the sampler's generator", min: 0, default: 0 },
    "max-length": { type: "integer", help: "total tokens, prompt included (Keras's max_length)", min: 1, default: 256 },
    "max-new-tokens": { type: "integer", help: "new tokens at most", min: 1 },
    stop: { type: "list", help: "strings that end generation", value: "S,S" },
    json: { type: "boolean", help: "print one JSON line {ids, new_ids, text, completion} instead of streaming text" },
  },
  async run(flags) {
    const spec = requireString(flags, "model", "generate");
    if (flags.threads !== undefined) native.setNumThreads(flags.threads as number);
    const prompt = promptFrom(flags.prompt as string | undefined, flags["prompt-ids"] as string[] | undefined);
    const { model, tokenizer } = await loadModel(spec, { precision: flags.precision as WeightPrecision });
    const options: GenerateOptions = {
      sampler: makeSampler(flags.sampler as SamplerName, {
        k: flags["top-k"] as number, p: flags["top-p"] as number, temperature: flags.temperature as number,
      }),
      seed: flags.seed as number,
      maxLength: flags["max-length"] as number,
      maxNewTokens: flags["max-new-tokens"] as number | undefined,
      stopStrings: flags.stop as string[] | undefined,
    };
    const generator = new TextGenerator(model, tokenizer);
    if (flags.json) {
      const g = generator.generate(prompt, options);
      process.stdout.write(`${JSON.stringify({ ids: g.ids, new_ids: g.newIds, text: g.text, completion: g.completion, finish_reason: g.finishReason })}\n`);
      return;
    }
    if (typeof prompt === "string") process.stdout.write(prompt);
    const stream = generator.stream(prompt, options);
    let next = await stream.next();
    while (!next.done) {
      process.stdout.write(tokenizer ? next.value.text : `${next.value.id} `);
      next = await stream.next();
    }
    process.stdout.write("\n");
  },
};

function promptFrom(text: string | undefined, ids: string[] | undefined): Prompt {
  if (text !== undefined && ids !== undefined) throw new LoratuneError("give --prompt or --prompt-ids, not both");
  if (ids !== undefined) {
    return {
      ids: ids.map((s, i) => {
        const id = Number(s);
        if (!/^\d+$/.test(s)) throw new LoratuneError(`--prompt-ids: "${s}" at position ${i} is not a token id`);
        return id;
      }),
    };
  }
  if (text === undefined) throw new LoratuneError("--prompt or --prompt-ids is required", { hint: "see `loratune generate --help`" });
  return text;
}
