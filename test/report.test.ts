import assert from "node:assert/strict";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, describe, test } from "node:test";
import { writeReport, type ReportData } from "../src/training/report.js";

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "loratune-report-"));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

function fakeReport(): ReportData {
  const trainLog = Array.from({ length: 120 }, (_, i) => ({ step: i + 1, loss: 2.5 * Math.exp(-i / 40) + 0.6 + 0.1 * Math.sin(i * 1.7), accuracy: 0.3 + i / 400 }));
  return {
    title: "LoRA fine-tune of gemma-tiny",
    createdAt: "2025-01-02T03:04:05.000Z",
    baseModel: "/models/gemma-tiny",
    adapter: "/runs/demo/adapter",
    config: { rank: 4, learning_rate: 5e-5, weight_decay: 0.01, targets: "q_proj,v_proj", loss_on_response_only: false },
    plan: { examples: 1000, tokens: 123456, truncated: 3, trainable_params: 460800 },
    steps: 120,
    trainSeconds: 95.5,
    tokensPerSecond: 1292.7,
    trainLog,
    evalLog: [{ step: 0, loss: 3.2 }, { step: 60, loss: 1.4 }, { step: 120, loss: 0.9 }],
    evalBefore: { loss: 3.2, perplexity: Math.exp(3.2), accuracy: 0.21 },
    evalAfter: { loss: 0.9, perplexity: Math.exp(0.9), accuracy: 0.55 },
    stopRateBefore: 0.1,
    stopRateAfter: 0.9,
    generations: [
      { prompt: "Instruction:\nWhat should I do on a trip to Europe?\n\nResponse:\n", before: "Europe Europe <script>alert(1)</script> & more", after: "Visit Paris & Rome.", stoppedBefore: false, stoppedAfter: true },
    ],
    extra: { pretraining: { steps: 500, final_loss: 2.1 } },
  };
}

describe("run report", () => {
  const data = fakeReport();
  const written = writeReport(path.join(tmp, "run"), data);

  test("writes report.json and report.html and leaves no temporary files", () => {
    assert.deepEqual(written, { html: path.join(tmp, "run", "report.html"), json: path.join(tmp, "run", "report.json") });
    assert.deepEqual(fs.readdirSync(path.join(tmp, "run")).sort(), ["report.html", "report.json"]);
  });

  test("report.json has the snake_case headline keys and the full logs", () => {
    const json = JSON.parse(fs.readFileSync(written.json, "utf8"));
    assert.equal(json.base_model, "/models/gemma-tiny");
    assert.equal(json.adapter, "/runs/demo/adapter");
    assert.equal(json.steps, 120);
    assert.equal(json.train_seconds, 95.5);
    assert.equal(json.eval_loss_before, 3.2);
    assert.equal(json.eval_loss_after, 0.9);
    assert.equal(json.stop_rate_before, 0.1);
    assert.equal(json.stop_rate_after, 0.9);
    assert.equal(json.created_at, data.createdAt);
    assert.equal(json.tokens_per_second, 1292.7);
    assert.equal(json.train_log.length, 120);
    assert.deepEqual(json.eval_log, data.evalLog);
    assert.deepEqual(json.config, data.config);
    assert.deepEqual(json.plan, data.plan);
    assert.deepEqual(json.extra, data.extra);
    assert.deepEqual(json.generations[0], {
      prompt: data.generations[0]!.prompt, before: data.generations[0]!.before, after: data.generations[0]!.after,
      stopped_before: false, stopped_after: true,
    });
  });

  test("report.html is self-contained, with the loss curve and escaped text", () => {
    const html = fs.readFileSync(written.html, "utf8");
    assert.match(html, /^<!DOCTYPE html>/);
    assert.match(html, /<svg class="chart"/);
    assert.match(html, /<path class="train-smooth" d="M[\d.]+ [\d.]+(L[\d.]+ [\d.]+){119}"/);
    assert.match(html, /<path class="train-raw" d="(M[\d.]+ [\d.]+h0){120}"/);
    assert.equal(html.match(/<title>step \d+: eval loss/g)?.length, 3);
    assert.ok(!html.includes("<script"), "no script element, not even from a generation");
    assert.ok(html.includes("Europe Europe &lt;script&gt;alert(1)&lt;/script&gt; &amp; more"));
    assert.ok(!/(src|href)="http/.test(html), "no external assets");
    assert.ok(html.includes("/runs/demo/adapter"));
    assert.ok(html.includes("<td>0.00005</td>"), "configured numbers are not rounded");
    assert.ok(html.includes("460,800"));
  });

  test("an empty run still renders", () => {
    const empty = writeReport(path.join(tmp, "empty"), { ...fakeReport(), trainLog: [], evalLog: [], generations: [], extra: undefined });
    const html = fs.readFileSync(empty.html, "utf8");
    assert.match(html, /no loss values were logged/);
    assert.equal("extra" in JSON.parse(fs.readFileSync(empty.json, "utf8")), false);
  });
});
