// The `loratune` command line: a thin layer over the library. Errors meant for users print as one
// message and a hint, with exit code 1 and no stack trace (LORATUNE_DEBUG=1 shows stacks).
import { LoratuneError } from "../errors.js";
import { expandConfigFile, formatHelp, nearest, parseFlags } from "./args.js";
import type { Command } from "./command.js";
import { dataCommand } from "./commands/data.js";
import { demoCommand } from "./commands/demo.js";
import { evalCommand } from "./commands/eval.js";
import { finetuneCommand } from "./commands/finetune.js";
import { mergeCommand } from "./commands/merge.js";
import { generateCommand } from "./commands/generate.js";
import { summaryCommand } from "./commands/summary.js";

const commands: Command[] = [summaryCommand, generateCommand, dataCommand, finetuneCommand, evalCommand, mergeCommand, demoCommand];

function usage(): string {
  const rows = commands.map((c) => `  ${c.name.padEnd(10)} ${c.summary}`).join("\n");
  return `loratune: LoRA fine-tuning and generation for open LLMs, natively in Node.js\n\n` +
    `Usage: loratune <command> [flags]\n\nCommands:\n${rows}\n\nRun \`loratune <command> --help\` for a command's flags.\n`;
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === "--help" || name === "-h" || name === "help") {
    process.stdout.write(usage());
    return name ? 0 : 1;
  }
  const command = commands.find((c) => c.name === name);
  try {
    if (!command) {
      const near = nearest(name, commands.map((c) => c.name));
      throw new LoratuneError(`unknown command "${name}"` + (near ? `; did you mean \`loratune ${near}\`?` : ""),
        { hint: "run `loratune --help` for the list of commands" });
    }
    if (rest.includes("--help") || rest.includes("-h")) {
      process.stdout.write(formatHelp(command.usage, command.summary, command.flags));
      return 0;
    }
    const flags = parseFlags(command.flags.config ? expandConfigFile(rest) : rest, command.flags, command.name);
    return (await command.run(flags)) ?? 0;
  } catch (e) {
    reportError(e);
    return 1;
  }
}

function reportError(e: unknown): void {
  const err = e instanceof Error ? e : new Error(String(e));
  process.stderr.write(`loratune: ${err.message}\n`);
  if (err instanceof LoratuneError && err.hint) process.stderr.write(`  ${err.hint}\n`);
  if (process.env.LORATUNE_DEBUG && err.stack) process.stderr.write(`${err.stack}\n`);
}
