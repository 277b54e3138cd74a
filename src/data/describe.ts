// The walkthrough's "look at the data" step: what each filter kept, how long the examples are in tokens
// (and how many a sequence length would truncate), and a few examples exactly as they will be trained on.
import type { Dataset, DatasetPlan } from "./dataset.js";
import type { Example } from "./formats.js";

export interface DescribeOptions {
  /** Token ids of a text, e.g. the model tokenizer's; enables the token-length statistics. */
  encode?: (text: string) => ArrayLike<number>;
  /** How many training examples to show; default 3. */
  sample?: number;
  /** The training sequence length, to count the examples it would truncate. */
  seqLen?: number;
}

export interface TokenLengthStats {
  /** Examples measured: train and eval together. */
  examples: number;
  total: number;
  min: number;
  median: number;
  mean: number;
  /** Nearest-rank 95th percentile. */
  p95: number;
  max: number;
  seqLen?: number;
  /** Examples longer than seqLen. */
  overSeqLen?: number;
}

export interface DatasetDescription {
  plan: DatasetPlan;
  /** Examples per category over train and eval, most common first; empty when the data has none. */
  categories: Array<{ category: string; count: number }>;
  tokens?: TokenLengthStats;
  samples: Example[];
}

export function describeDataset(dataset: Dataset, options: DescribeOptions = {}): DatasetDescription {
  const all = [...dataset.train, ...dataset.eval];
  const counts = new Map<string, number>();
  for (const example of all) {
    if (example.category !== undefined) counts.set(example.category, (counts.get(example.category) ?? 0) + 1);
  }
  const categories = [...counts]
    .map(([category, count]) => ({ category, count }))
    .sort((a, b) => b.count - a.count || a.category.localeCompare(b.category));
  const encode = options.encode;
  const tokens = encode && tokenLengthStats(all.map((example) => encode(example.text).length), options.seqLen);
  return { plan: dataset.plan, categories, tokens, samples: dataset.train.slice(0, options.sample ?? 3) };
}

function tokenLengthStats(lengths: number[], seqLen: number | undefined): TokenLengthStats {
  const sorted = Float64Array.from(lengths).sort();
  const n = sorted.length;
  const total = lengths.reduce((sum, length) => sum + length, 0);
  const stats: TokenLengthStats = {
    examples: n,
    total,
    min: sorted[0]!,
    median: n % 2 === 1 ? sorted[(n - 1) / 2]! : (sorted[n / 2 - 1]! + sorted[n / 2]!) / 2,
    mean: total / n,
    p95: sorted[Math.ceil(0.95 * n) - 1]!,
    max: sorted[n - 1]!,
  };
  if (seqLen !== undefined) {
    stats.seqLen = seqLen;
    stats.overSeqLen = lengths.filter((length) => length > seqLen).length;
  }
  return stats;
}

/** A plain-text report for the CLI. */
export function formatDescription(description: DatasetDescription): string {
  const { plan, categories, tokens, samples } = description;
  const count = (n: number) => n.toLocaleString("en-US");
  const row = (label: string, value: string) => `  ${label.padEnd(22)} ${value}`;
  const lines = [`Data: ${plan.source} (${plan.file}; ${plan.fileFormat}, ${plan.format} format)`];
  lines.push(row("rows read", count(plan.rowsRead)));
  if (plan.skippedBadRows > 0) {
    lines.push(row("bad rows skipped", count(plan.skippedBadRows)));
    for (const message of plan.badRowErrors) lines.push(`      ${message}`);
  }
  for (const step of plan.steps) {
    const label = step.name === "limit" ? "limit" : `filter ${step.name}`;
    lines.push(row(step.detail ? `${label} ${step.detail}` : label, `${count(step.kept)} of ${count(step.of)} kept`));
  }
  if (plan.shuffled) lines.push(row("shuffled", `seed ${plan.seed}`));
  lines.push(row("train", count(plan.train)));
  lines.push(row("eval", plan.eval > 0 ? `${count(plan.eval)} (fraction ${plan.evalFraction}, seed ${plan.seed})` : "0"));
  if (categories.length > 0) {
    lines.push(`Categories: ${categories.map(({ category, count: n }) => `${category} ${count(n)}`).join(", ")}`);
  }
  if (tokens) {
    const mean = tokens.mean.toFixed(1);
    lines.push(
      `Tokens per example (${count(tokens.examples)} examples, ${count(tokens.total)} tokens): ` +
        `min ${count(tokens.min)}, median ${count(tokens.median)}, mean ${mean}, p95 ${count(tokens.p95)}, max ${count(tokens.max)}`,
    );
    if (tokens.seqLen !== undefined) {
      lines.push(`  ${count(tokens.overSeqLen ?? 0)} of ${count(tokens.examples)} longer than seq len ${tokens.seqLen} (truncated in training)`);
    }
  }
  samples.forEach((example, k) => {
    lines.push(`Example ${k + 1} of ${count(plan.train)} (${example.source.file}:${example.source.line}):`);
    for (const line of example.text.split("\n")) lines.push(`    ${line}`);
  });
  return `${lines.join("\n")}\n`;
}
