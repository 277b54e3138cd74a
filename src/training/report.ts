// The run report: report.json for tools (snake_case keys) and report.html for people, a
// self-contained page (inline CSS and SVG, no scripts) with the loss curve, before/after metrics and
// the generations side by side.
import fs from "node:fs";
import path from "node:path";
import { LoratuneError } from "../errors.js";
import { writeFileAtomic } from "../io/atomic.js";

export interface EvalMetrics {
  loss: number;
  perplexity: number;
  accuracy: number;
}

export interface Generation {
  prompt: string;
  before: string;
  after: string;
  stoppedBefore: boolean;
  stoppedAfter: boolean;
}

export interface ReportData {
  title: string;
  /** ISO time. */
  createdAt: string;
  /** Path of the base model folder. */
  baseModel: string;
  /** Path of the saved adapter folder. */
  adapter: string;
  /** The run's configuration. */
  config: Record<string, string | number | boolean>;
  /** Examples kept, tokens, truncated, trainable parameters, ... */
  plan: Record<string, string | number>;
  steps: number;
  trainSeconds: number;
  tokensPerSecond: number;
  /** Every step. */
  trainLog: { step: number; loss: number; accuracy?: number }[];
  evalLog: { step: number; loss: number }[];
  evalBefore: EvalMetrics;
  evalAfter: EvalMetrics;
  /** Share of held-out prompts whose generation ends at EOS within the length limit. */
  stopRateBefore: number;
  stopRateAfter: number;
  generations: Generation[];
  /** Anything else worth keeping, e.g. the pre-training of the demo's base model. */
  extra?: Record<string, unknown>;
}

/** report.json's shape: flat snake_case headline numbers first, then the full logs. */
function reportJson(data: ReportData): Record<string, unknown> {
  return {
    title: data.title,
    created_at: data.createdAt,
    base_model: data.baseModel,
    adapter: data.adapter,
    steps: data.steps,
    train_seconds: data.trainSeconds,
    tokens_per_second: data.tokensPerSecond,
    eval_loss_before: data.evalBefore.loss,
    eval_loss_after: data.evalAfter.loss,
    eval_perplexity_before: data.evalBefore.perplexity,
    eval_perplexity_after: data.evalAfter.perplexity,
    eval_accuracy_before: data.evalBefore.accuracy,
    eval_accuracy_after: data.evalAfter.accuracy,
    stop_rate_before: data.stopRateBefore,
    stop_rate_after: data.stopRateAfter,
    config: data.config,
    plan: data.plan,
    train_log: data.trainLog,
    eval_log: data.evalLog,
    generations: data.generations.map((g) => ({
      prompt: g.prompt,
      before: g.before,
      after: g.after,
      stopped_before: g.stoppedBefore,
      stopped_after: g.stoppedAfter,
    })),
    ...(data.extra !== undefined ? { extra: data.extra } : {}),
  };
}

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]!);
}

function formatNumber(value: number, digits = 4): string {
  if (!Number.isFinite(value)) return String(value);
  if (Number.isInteger(value)) return value.toLocaleString("en-US");
  if (Math.abs(value) >= 1e6) return value.toExponential(3);
  return value.toFixed(digits);
}

function formatPercent(share: number): string {
  return Number.isFinite(share) ? `${(share * 100).toFixed(1)}%` : String(share);
}

function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 60) return `${formatNumber(seconds, 1)} s`;
  const h = Math.floor(seconds / 3600), m = Math.floor((seconds % 3600) / 60), s = Math.round(seconds % 60);
  return h > 0 ? `${h} h ${m} min` : `${m} min ${s} s`;
}

/** Tick values at a 1/2/5 x 10^k spacing, at least `minStep` apart, covering [lo, hi] in about `target` intervals. */
function niceTicks(lo: number, hi: number, target: number, minStep = 0): number[] {
  const raw = Math.max((hi - lo) / target, minStep);
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((f) => f * magnitude).find((s) => s >= raw)!;
  const ticks: number[] = [];
  // Rounding to the step's decimals keeps labels like 0.30000000000000004 out.
  const decimals = Math.max(0, -Math.floor(Math.log10(step)));
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) ticks.push(Number(t.toFixed(decimals)));
  return ticks;
}

/** Centered moving average over ~1/25 of the run: no lag, window shrinking at the ends. */
function smooth(values: readonly number[]): number[] {
  const half = Math.floor(values.length / 50);
  const prefix = [0];
  for (const v of values) prefix.push(prefix[prefix.length - 1]! + v);
  return values.map((_, i) => {
    const from = Math.max(0, i - half), to = Math.min(values.length, i + half + 1);
    return (prefix[to]! - prefix[from]!) / (to - from);
  });
}

function lossChart(trainLog: ReportData["trainLog"], evalLog: ReportData["evalLog"]): string {
  const width = 960, height = 360;
  const margin = { left: 64, right: 20, top: 32, bottom: 48 };
  const train = trainLog.filter((p) => Number.isFinite(p.loss) && Number.isFinite(p.step));
  const evals = evalLog.filter((p) => Number.isFinite(p.loss) && Number.isFinite(p.step));
  const open = `<svg class="chart" viewBox="0 0 ${width} ${height}" role="img" aria-label="Loss per step" xmlns="http://www.w3.org/2000/svg">`;
  if (train.length === 0 && evals.length === 0) {
    return `${open}<text x="${width / 2}" y="${height / 2}" text-anchor="middle" class="empty">no loss values were logged</text></svg>`;
  }

  const steps = [...train, ...evals].map((p) => p.step);
  const losses = [...train, ...evals].map((p) => p.loss);
  let [xLo, xHi] = [Math.min(...steps), Math.max(...steps)];
  if (xLo === xHi) [xLo, xHi] = [xLo - 1, xHi + 1];
  let [yLo, yHi] = [Math.min(...losses), Math.max(...losses)];
  const yPad = yHi > yLo ? (yHi - yLo) * 0.05 : Math.max(Math.abs(yHi) * 0.1, 0.1);
  [yLo, yHi] = [Math.max(0, yLo - yPad), yHi + yPad];
  const xTicks = niceTicks(xLo, xHi, 8, 1);
  const yTicks = niceTicks(yLo, yHi, 6);

  const plotW = width - margin.left - margin.right, plotH = height - margin.top - margin.bottom;
  const x = (step: number) => (margin.left + ((step - xLo) / (xHi - xLo)) * plotW).toFixed(1);
  const y = (loss: number) => (margin.top + (1 - (loss - yLo) / (yHi - yLo)) * plotH).toFixed(1);
  const bottom = margin.top + plotH, right = margin.left + plotW;

  const parts: string[] = [open];
  for (const t of yTicks) {
    parts.push(`<line class="grid" x1="${margin.left}" x2="${right}" y1="${y(t)}" y2="${y(t)}"/>`);
    parts.push(`<text class="tick" x="${margin.left - 8}" y="${y(t)}" text-anchor="end" dominant-baseline="middle">${t}</text>`);
  }
  for (const t of xTicks) {
    parts.push(`<line class="tick-mark" x1="${x(t)}" x2="${x(t)}" y1="${bottom}" y2="${bottom + 5}"/>`);
    parts.push(`<text class="tick" x="${x(t)}" y="${bottom + 18}" text-anchor="middle">${t.toLocaleString("en-US")}</text>`);
  }
  parts.push(`<path class="axis" d="M${margin.left} ${margin.top}V${bottom}H${right}"/>`);
  parts.push(`<text class="label" x="${margin.left + plotW / 2}" y="${height - 8}" text-anchor="middle">step</text>`);
  parts.push(`<text class="label" transform="translate(16 ${margin.top + plotH / 2}) rotate(-90)" text-anchor="middle">loss</text>`);

  if (train.length > 0) {
    // Raw points as zero-length round-capped segments: one element however many steps there are.
    parts.push(`<path class="train-raw" d="${train.map((p) => `M${x(p.step)} ${y(p.loss)}h0`).join("")}"/>`);
    const smoothed = smooth(train.map((p) => p.loss));
    parts.push(`<path class="train-smooth" d="${train.map((p, i) => `${i === 0 ? "M" : "L"}${x(p.step)} ${y(smoothed[i]!)}`).join("")}"/>`);
  }
  if (evals.length > 0) {
    if (evals.length > 1) parts.push(`<path class="eval-line" d="${evals.map((p, i) => `${i === 0 ? "M" : "L"}${x(p.step)} ${y(p.loss)}`).join("")}"/>`);
    for (const p of evals) {
      parts.push(`<circle class="eval-point" cx="${x(p.step)}" cy="${y(p.loss)}" r="4.5"><title>step ${p.step}: eval loss ${formatNumber(p.loss)}</title></circle>`);
    }
  }

  const legendY = 14;
  let legendX = margin.left;
  const legend = (swatch: string, text: string) => {
    parts.push(`<g transform="translate(${legendX} ${legendY})">${swatch}<text class="legend" x="22" y="0" dominant-baseline="middle">${text}</text></g>`);
    legendX += 22 + text.length * 7 + 24;
  };
  if (train.length > 0) {
    legend(`<path class="train-smooth" d="M0 0H16"/>`, "train loss (smoothed)");
    legend(`<path class="train-raw" d="M2 0h0M8 0h0M14 0h0"/>`, "train loss per step");
  }
  if (evals.length > 0) legend(`<circle class="eval-point" cx="8" cy="0" r="4.5"/>`, "eval loss");
  parts.push("</svg>");
  return parts.join("\n");
}

function tableCell(value: unknown): string {
  // Numbers unrounded (a learning rate of 5e-5 must not show as 0.0001), counts with separators.
  if (typeof value === "number") return escapeHtml(Number.isInteger(value) ? value.toLocaleString("en-US") : String(value));
  if (typeof value === "object" && value !== null) return `<pre>${escapeHtml(JSON.stringify(value, null, 2))}</pre>`;
  return escapeHtml(String(value));
}

function keyValueTable(entries: Record<string, unknown>): string {
  const rows = Object.entries(entries).map(([key, value]) => `<tr><th>${escapeHtml(key)}</th><td>${tableCell(value)}</td></tr>`);
  return rows.length > 0 ? `<table class="kv">${rows.join("")}</table>` : `<p class="muted">none</p>`;
}

function metricsTable(data: ReportData): string {
  const row = (name: string, before: number, after: number, show: (v: number) => string, lowerIsBetter: boolean) => {
    const change = after - before;
    const better = lowerIsBetter ? change < 0 : change > 0;
    const verdict = !Number.isFinite(change) || change === 0 ? "" : better ? "better" : "worse";
    const sign = change > 0 ? "+" : "";
    return `<tr><th>${name}</th><td>${show(before)}</td><td>${show(after)}</td><td class="${verdict}">${Number.isFinite(change) ? sign + show(change) : "—"}</td></tr>`;
  };
  const { evalBefore: b, evalAfter: a } = data;
  return `<table class="metrics"><thead><tr><th></th><th>before</th><th>after</th><th>change</th></tr></thead><tbody>
${row("eval loss", b.loss, a.loss, (v) => formatNumber(v), true)}
${row("eval perplexity", b.perplexity, a.perplexity, (v) => formatNumber(v, 2), true)}
${row("eval token accuracy", b.accuracy, a.accuracy, formatPercent, false)}
${row("generations ending at EOS", data.stopRateBefore, data.stopRateAfter, formatPercent, false)}
</tbody></table>`;
}

function generationsTable(generations: readonly Generation[]): string {
  if (generations.length === 0) return `<p class="muted">no generations</p>`;
  const badge = (stopped: boolean) => stopped ? `<span class="badge stopped">stopped at EOS</span>` : `<span class="badge limit">hit the length limit</span>`;
  const rows = generations.map((g) => `<tr>
<td><div class="text">${escapeHtml(g.prompt)}</div></td>
<td>${badge(g.stoppedBefore)}<div class="text">${escapeHtml(g.before)}</div></td>
<td>${badge(g.stoppedAfter)}<div class="text">${escapeHtml(g.after)}</div></td>
</tr>`);
  return `<table class="generations"><thead><tr><th>prompt</th><th>before fine-tuning</th><th>after fine-tuning</th></tr></thead><tbody>${rows.join("\n")}</tbody></table>`;
}

const STYLE = `
:root { --ink: #1f2937; --muted: #6b7280; --line: #e5e7eb; --panel: #f9fafb; --train: #2563eb; --eval: #ea580c; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; color: var(--ink); background: #fff; }
main { max-width: 1120px; margin: 0 auto; padding: 32px 24px 64px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 36px 0 12px; padding-bottom: 6px; border-bottom: 1px solid var(--line); }
.muted { color: var(--muted); }
code, pre { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: 13px; }
pre { margin: 0; white-space: pre-wrap; word-break: break-word; }
.where { margin: 12px 0 0; display: grid; grid-template-columns: max-content 1fr; gap: 2px 12px; }
.where dt { color: var(--muted); }
.where dd { margin: 0; word-break: break-all; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(160px, 1fr)); gap: 12px; margin-top: 20px; }
.card { background: var(--panel); border: 1px solid var(--line); border-radius: 8px; padding: 12px 14px; }
.card .value { font-size: 18px; font-weight: 600; white-space: nowrap; }
.card .name { color: var(--muted); font-size: 13px; }
.columns { display: grid; grid-template-columns: 1fr 1fr; gap: 24px; }
@media (max-width: 800px) { .columns { grid-template-columns: 1fr; } }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; vertical-align: top; padding: 6px 10px; border-bottom: 1px solid var(--line); }
table.kv th { width: 45%; font-weight: 500; color: var(--muted); word-break: break-all; }
table.kv td { font-variant-numeric: tabular-nums; word-break: break-word; }
table.metrics { max-width: 640px; }
table.metrics td { font-variant-numeric: tabular-nums; }
table.metrics thead th, table.generations thead th { font-size: 13px; color: var(--muted); font-weight: 600; border-bottom: 2px solid var(--line); }
td.better { color: #15803d; }
td.worse { color: #b91c1c; }
.chart { width: 100%; height: auto; display: block; border: 1px solid var(--line); border-radius: 8px; background: #fff; }
.chart .grid { stroke: #eef0f3; }
.chart .axis, .chart .tick-mark { stroke: #9ca3af; fill: none; }
.chart .tick, .chart .legend { font-size: 12px; fill: var(--muted); }
.chart .label { font-size: 13px; fill: var(--ink); }
.chart .empty { font-size: 14px; fill: var(--muted); }
.chart .train-raw { stroke: var(--train); stroke-opacity: 0.25; stroke-width: 3.5; stroke-linecap: round; fill: none; }
.chart .train-smooth { stroke: var(--train); stroke-width: 2.2; fill: none; stroke-linejoin: round; }
.chart .eval-line { stroke: var(--eval); stroke-width: 1.5; stroke-dasharray: 4 3; fill: none; }
.chart .eval-point { fill: var(--eval); stroke: #fff; stroke-width: 1.5; }
table.generations { table-layout: fixed; }
table.generations td { width: 33.3%; }
table.generations tbody tr:nth-child(odd) { background: var(--panel); }
.text { white-space: pre-wrap; word-break: break-word; font-size: 14px; }
.badge { display: inline-block; font-size: 11px; font-weight: 600; border-radius: 999px; padding: 1px 8px; margin-bottom: 6px; }
.badge.stopped { background: #dcfce7; color: #166534; }
.badge.limit { background: #fef3c7; color: #92400e; }
`;

function reportHtml(data: ReportData): string {
  const last = data.trainLog[data.trainLog.length - 1];
  const card = (value: string, name: string) => `<div class="card"><div class="value">${escapeHtml(value)}</div><div class="name">${escapeHtml(name)}</div></div>`;
  const cards = [
    card(formatNumber(data.steps), "steps"),
    card(formatDuration(data.trainSeconds), "training time"),
    card(formatNumber(data.tokensPerSecond, 1), "tokens / s"),
    card(last ? formatNumber(last.loss) : "—", "last train loss"),
    card(`${formatNumber(data.evalBefore.loss, 3)} → ${formatNumber(data.evalAfter.loss, 3)}`, "eval loss"),
    card(`${formatPercent(data.stopRateBefore)} → ${formatPercent(data.stopRateAfter)}`, "stop at EOS"),
  ];
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escapeHtml(data.title)}</title>
<style>${STYLE}</style>
</head>
<body>
<main>
<h1>${escapeHtml(data.title)}</h1>
<div class="muted">${escapeHtml(data.createdAt)}</div>
<dl class="where">
<dt>base model</dt><dd><code>${escapeHtml(data.baseModel)}</code></dd>
<dt>adapter</dt><dd><code>${escapeHtml(data.adapter)}</code></dd>
</dl>
<div class="cards">${cards.join("")}</div>

<h2>Loss</h2>
${lossChart(data.trainLog, data.evalLog)}

<h2>Before and after fine-tuning</h2>
${metricsTable(data)}

<h2>Generations</h2>
${generationsTable(data.generations)}

<div class="columns">
<section><h2>Configuration</h2>${keyValueTable(data.config)}</section>
<section><h2>Plan</h2>${keyValueTable(data.plan)}</section>
</div>
${data.extra !== undefined ? `<h2>More</h2>${keyValueTable(data.extra)}` : ""}
</main>
</body>
</html>
`;
}

/** Writes report.json and report.html into `dir` (created if missing), each atomically; returns their paths. */
export function writeReport(dir: string, data: ReportData): { html: string; json: string } {
  try {
    fs.mkdirSync(dir, { recursive: true });
  } catch (e) {
    throw new LoratuneError(`cannot create the report folder: ${(e as Error).message}`, { file: dir });
  }
  const json = path.join(dir, "report.json");
  const html = path.join(dir, "report.html");
  writeFileAtomic(json, JSON.stringify(reportJson(data), null, 2) + "\n");
  writeFileAtomic(html, reportHtml(data));
  return { html, json };
}
