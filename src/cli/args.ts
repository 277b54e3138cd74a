// Command-line flags: declared per command with their type and range, parsed strictly. An unknown
// flag suggests the nearest known one; a number out of range names the flag and the range.
import fs from "node:fs";
import YAML from "yaml";
import { LoratuneError } from "../errors.js";

export interface FlagSpec {
  type: "string" | "number" | "integer" | "boolean" | "list";
  help: string;
  default?: string | number | boolean | readonly string[];
  /** Smallest allowed value (inclusive), or exclusive when `above` is set. */
  min?: number;
  above?: number;
  max?: number;
  choices?: readonly string[];
  /** Placeholder shown in help, e.g. DIR. */
  value?: string;
}

export type FlagSpecs = Record<string, FlagSpec>;
export type FlagValues = Record<string, string | number | boolean | readonly string[] | undefined>;

export function parseFlags(argv: string[], specs: FlagSpecs, command: string): FlagValues {
  const values: FlagValues = {};
  for (const [name, spec] of Object.entries(specs)) if (spec.default !== undefined) values[name] = spec.default;
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (!arg.startsWith("--")) {
      throw new LoratuneError(`unexpected argument "${arg}" for \`loratune ${command}\``, { hint: `see \`loratune ${command} --help\`` });
    }
    let name = arg.slice(2);
    let inline: string | undefined;
    const eq = name.indexOf("=");
    if (eq >= 0) {
      inline = name.slice(eq + 1);
      name = name.slice(0, eq);
    }
    let spec = specs[name];
    let negated = false;
    if (!spec && name.startsWith("no-") && specs[name.slice(3)]?.type === "boolean") {
      name = name.slice(3);
      spec = specs[name];
      negated = true;
    }
    if (!spec) {
      const near = nearest(name, Object.keys(specs));
      throw new LoratuneError(`unknown flag --${name} for \`loratune ${command}\`` + (near ? `; did you mean --${near}?` : ""),
        { hint: `see \`loratune ${command} --help\`` });
    }
    if (spec.type === "boolean") {
      if (inline !== undefined && !["true", "false"].includes(inline)) {
        throw new LoratuneError(`--${name} takes no value (or =true/=false), got "${inline}"`);
      }
      values[name] = negated ? false : inline !== "false";
      continue;
    }
    const raw = inline ?? argv[++i];
    if (raw === undefined) throw new LoratuneError(`--${name} needs a value${spec.value ? ` (${spec.value})` : ""}`);
    values[name] = convert(name, raw, spec);
  }
  return values;
}

function convert(name: string, raw: string, spec: FlagSpec): string | number | string[] {
  if (spec.type === "string") {
    if (spec.choices && !spec.choices.includes(raw)) {
      throw new LoratuneError(`--${name} must be one of ${spec.choices.join(", ")}; got "${raw}"`);
    }
    return raw;
  }
  if (spec.type === "list") return raw.split(",").map((s) => s.trim()).filter((s) => s.length > 0);
  const x = Number(raw);
  if (raw.trim() === "" || !Number.isFinite(x)) throw new LoratuneError(`--${name} must be a number, got "${raw}"`);
  if (spec.type === "integer" && !Number.isInteger(x)) throw new LoratuneError(`--${name} must be a whole number, got ${raw}`);
  if (spec.min !== undefined && x < spec.min) throw new LoratuneError(`--${name} must be at least ${spec.min}, got ${raw}`);
  if (spec.above !== undefined && !(x > spec.above)) throw new LoratuneError(`--${name} must be greater than ${spec.above}, got ${raw}`);
  if (spec.max !== undefined && x > spec.max) throw new LoratuneError(`--${name} must be at most ${spec.max}, got ${raw}`);
  return x;
}

/** The known name closest to `name` by edit distance, if it is close enough to be a likely typo. */
export function nearest(name: string, known: string[]): string | null {
  let best: string | null = null;
  let bestDistance = Infinity;
  for (const k of known) {
    const d = editDistance(name.replace(/_/g, "-"), k);
    if (d < bestDistance) [best, bestDistance] = [k, d];
  }
  return bestDistance <= Math.max(2, Math.floor(name.length / 3)) ? best : null;
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) {
      row[j] = Math.min(prev[j]! + 1, row[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = row;
  }
  return prev[b.length]!;
}

export function formatHelp(usage: string, description: string, specs: FlagSpecs): string {
  const rows = Object.entries(specs).map(([name, s]) => {
    const left = `  --${name}${s.type === "boolean" ? "" : ` ${s.value ?? (s.type === "string" ? "TEXT" : s.type === "list" ? "A,B" : "N")}`}`;
    const extra = [s.choices ? `one of ${s.choices.join("|")}` : "", s.default !== undefined ? `default ${s.default}` : ""]
      .filter(Boolean).join("; ");
    return `${left.padEnd(30)} ${s.help}${extra ? ` (${extra})` : ""}`;
  });
  return `${usage}\n\n${description}\n\nOptions:\n${rows.join("\n")}\n`;
}

/**
 * Replaces `--config FILE` (JSON or YAML: a mapping of flag names to values) by the flags it holds,
 * placed first so that flags given on the command line override them.
 */
export function expandConfigFile(argv: string[]): string[] {
  const at = argv.findIndex((a) => a === "--config" || a.startsWith("--config="));
  if (at < 0) return argv;
  const file = argv[at]!.includes("=") ? argv[at]!.slice("--config=".length) : argv[at + 1];
  if (!file) throw new LoratuneError("--config needs a value (FILE)");
  let parsed: unknown;
  try {
    const text = fs.readFileSync(file, "utf8");
    parsed = file.endsWith(".json") ? JSON.parse(text) : YAML.parse(text);
  } catch (e) {
    throw new LoratuneError(`cannot read the config: ${(e as Error).message}`, { file });
  }
  if (!parsed || typeof parsed !== "object" || Array.isArray(parsed)) {
    throw new LoratuneError("the config must be a mapping of flag names to values", { file });
  }
  const fromFile = Object.entries(parsed as Record<string, unknown>).flatMap(([k, v]) =>
    typeof v === "boolean" ? [v ? `--${k}` : `--no-${k}`] : [`--${k}`, Array.isArray(v) ? v.join(",") : String(v)]);
  const rest = argv.filter((_, i) => i !== at && !(i === at + 1 && !argv[at]!.includes("=")));
  return [...fromFile, ...rest];
}
