import { LoratuneError } from "../errors.js";
import type { FlagSpecs, FlagValues } from "./args.js";

/** One `loratune <name>` command: its flags and what it does with them. Returns the exit code. */
export interface Command {
  name: string;
  summary: string;
  usage: string;
  flags: FlagSpecs;
  run(flags: FlagValues): Promise<number | void>;
}

/** Flags every model-taking command shares. */
export const modelFlags: FlagSpecs = {
  model: { type: "string", help: "checkpoint folder, preset name (e.g. gemma_2b_en) or hub repository", value: "DIR|PRESET" },
  precision: { type: "string", help: "in-memory weight type", choices: ["auto", "bf16", "f32"], default: "auto" },
  threads: { type: "integer", help: "compute threads (default: all cores)", min: 1, max: 256 },
};

export function requireString(flags: FlagValues, name: string, command: string): string {
  const v = flags[name];
  if (typeof v !== "string" || v.length === 0) {
    throw new LoratuneError(`--${name} is required`, { hint: `see \`loratune ${command} --help\`` });
  }
  return v;
}
