// The training layer on the tiny Gemma fixture: sequences and masking, a short run whose loss falls,
// gradient accumulation, checkpoints and an exact resume, a refused resume, a failed checkpoint
// write, and a NaN loss.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { LoratuneError } from "../src/errors.js";
import { trainableParameters } from "../src/lora/lora.js";
import type { CausalLM } from "../src/models/model.js";
import { epochOrder, stepBatch, tokenizeExample, tokenizeExamples } from "../src/training/batches.js";
import { findLatestCheckpoint, listCheckpoints, loadCheckpoint } from "../src/training/checkpoint.js";
import { evaluate, fit, formatProgressLine } from "../src/training/trainer.js";
import { charTokenizer, killRun, makeExamples, tinyLoraModel } from "./training-fixtures.js";

const here = path.dirname(fileURLToPath(import.meta.url));
const tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), "loratune-training-"));
fs.chmodSync(tmpRoot, 0o755); // the read-only test's worker may run as another user
after(() => fs.rmSync(tmpRoot, { recursive: true, force: true }));
let tmpCount = 0;
const tmp = (name: string) => path.join(tmpRoot, `${name}-${tmpCount++}`);
const enc = (s: string) => charTokenizer.encode(s, { addBos: false });
const adapterBytes = (checkpoint: string) => fs.readFileSync(path.join(checkpoint, "adapter_model.safetensors"));

describe("training sequences", () => {
  const ex = makeExamples(1)[0]!; // "Q: color 0?\nA: " + "red."

  it("are <bos> + tokens(prompt + response) + <eos>, inputs and next-token targets, no padding", () => {
    const s = tokenizeExample(ex, charTokenizer);
    const all = [2, ...enc(ex.text), 1];
    assert.deepEqual(Array.from(s.ids), all.slice(0, -1));
    assert.deepEqual(Array.from(s.targets), all.slice(1));
    assert.equal(s.count, all.length - 1);
    assert.equal(s.truncated, false);
    assert.equal(s.fullLength, all.length);
  });

  it("train on the response only: prompt targets are -1, the response and <eos> count", () => {
    const s = tokenizeExample(ex, charTokenizer, { trainOn: "response" });
    const P = enc(ex.prompt).length;
    assert.equal(s.promptTokens, P + 1);
    for (let t = 0; t < s.ids.length; t++) assert.equal(s.targets[t], t < P ? -1 : [...enc(ex.response), 1][t - P]);
    assert.equal(s.count, enc(ex.response).length + 1);
    // Same inputs in both modes.
    assert.deepEqual(s.ids, tokenizeExample(ex, charTokenizer).ids);
  });

  it("are truncated to seqLen inputs keeping <eos> as the last target (as KerasNLP packs), and counted", () => {
    const s = tokenizeExample(ex, charTokenizer, { seqLen: 6 });
    assert.equal(s.ids.length, 6);
    assert.deepEqual(Array.from(s.ids), [2, ...enc(ex.text).slice(0, 5)]);
    assert.deepEqual(Array.from(s.targets), [...enc(ex.text).slice(0, 5), 1]);
    assert.equal(s.truncated, true);
    const set = tokenizeExamples([ex, { ...ex, prompt: "", response: "hi", text: "hi" }], charTokenizer, { seqLen: 6, trainOn: "response" });
    assert.equal(set.truncated, 1);
    // The first example's response starts beyond the cut: nothing of it is left to learn.
    assert.equal(set.sequences[0]!.count, 0);
    assert.equal(set.empty, 1);
    assert.equal(set.sequences[1]!.count, 3);
    assert.equal(set.targets, 3);
  });

  it("a text that already starts with <bos> gets no second one", () => {
    const tok = { bosId: 2, eosId: 1, encode: (t: string) => (t.startsWith("^") ? [2, ...enc(t.slice(1))] : enc(t)) };
    const s = tokenizeExample({ ...ex, prompt: "^Q ", text: "^Q red", response: "red" }, tok, { trainOn: "response" });
    assert.deepEqual(Array.from(s.ids), [2, ...enc("Q red")]);
    assert.equal(s.promptTokens, 3);
  });

  it("weights each sequence of a batch by its share of the counted tokens", () => {
    const [a, b] = makeExamples(2).map((e) => tokenizeExample(e, charTokenizer));
    const batch = stepBatch([a!, b!]);
    assert.equal(batch.count, a!.count + b!.count);
    assert.ok(Math.abs(batch.weights[0]! - a!.count / batch.count) < 1e-15);
    assert.ok(Math.abs(batch.weights[0]! + batch.weights[1]! - 1) < 1e-15);
  });

  it("epoch orders: identity without shuffle, a deterministic permutation per (seed, epoch)", () => {
    assert.deepEqual(epochOrder(5, 3, false), [0, 1, 2, 3, 4]);
    const o = epochOrder(20, 0, true, 1);
    assert.deepEqual([...o].sort((x, y) => x - y), Array.from({ length: 20 }, (_, i) => i));
    assert.deepEqual(epochOrder(20, 0, true, 1), o);
    assert.notDeepEqual(epochOrder(20, 1, true, 1), o);
    assert.notDeepEqual(epochOrder(20, 0, true, 2), o);
  });

  it("progress line", () => {
    assert.equal(formatProgressLine({ done: 412, total: 1000, etaSeconds: 588, loss: 0.98, accuracy: 0.47, tokensPerSecond: 312.4 }),
      " 412/1000 ━━━━━━━━──────────── ETA 9:48 - loss: 0.9800 - acc: 0.4700 - 312 tok/s");
    assert.match(formatProgressLine({ done: 7, total: 7, elapsedSeconds: 3725, secondsPerStep: 532, loss: 1, accuracy: 0, tokensPerSecond: 0 }),
      /^7\/7 ━{20} 1:02:05 532\.0s\/step - loss: 1\.0000/);
  });
});

describe("fit", () => {
  it("12 steps on 12 examples: the loss falls; per-step log, JSONL, eval at the epoch end, progress", async () => {
    const model = tinyLoraModel();
    const train = makeExamples(12);
    const evalSet = makeExamples(3, "eval.jsonl");
    const before = evaluate(model, charTokenizer, train);
    const logFile = path.join(tmp("log"), "train.jsonl");
    const lines: string[] = [];
    const r = await fit(model, charTokenizer, { train, eval: evalSet }, {
      learningRate: 1e-2, logFile, progress: { write: (s: string) => lines.push(s), isTTY: false },
    });
    const afterTraining = evaluate(model, charTokenizer, train);
    assert.ok(afterTraining.loss < before.loss - 0.2, `loss ${before.loss} -> ${afterTraining.loss}`);
    assert.ok(afterTraining.accuracy > before.accuracy);
    assert.equal(r.steps, 12);
    assert.equal(r.stopped, "completed");
    assert.equal(r.log.length, 12);
    const firsts = r.log.slice(0, 3).reduce((s, e) => s + e.loss, 0), lasts = r.log.slice(-3).reduce((s, e) => s + e.loss, 0);
    assert.ok(lasts < firsts, "the step losses fall");
    for (const [i, e] of r.log.entries()) {
      assert.equal(e.step, i + 1);
      assert.equal(e.epoch, 1);
      assert.equal(e.lr, 1e-2);
      assert.equal(e.targets, tokenizeExample(train[i]!, charTokenizer).count);
      assert.ok(e.gradNorm > 0 && e.seconds > 0 && e.accuracy >= 0 && e.accuracy <= 1);
    }
    assert.equal(r.evalLog.length, 1);
    const ev = evaluate(model, charTokenizer, evalSet);
    assert.deepEqual(r.evalLog[0], { step: 12, epoch: 1, loss: ev.loss, accuracy: ev.accuracy, perplexity: ev.perplexity, tokens: ev.tokens });
    assert.ok(Math.abs(ev.perplexity - Math.exp(ev.loss)) < 1e-9);
    assert.equal(r.plan.totalSteps, 12);
    assert.equal(r.plan.truncated, 0);
    assert.ok(r.tokensPerSecond > 0 && r.trainSeconds > 0);
    const jsonl = fs.readFileSync(logFile, "utf8").trim().split("\n").map((l) => JSON.parse(l));
    assert.equal(jsonl.length, 13);
    assert.deepEqual(jsonl.slice(0, 12), r.log.map((e) => ({ type: "train", ...e })));
    assert.equal(jsonl[12].type, "eval");
    const text = lines.join("");
    assert.match(text, /^Epoch 1\/1\n/);
    assert.match(text, / 6\/12 ━━━━━━━━━━────────── ETA \d+:\d\d - loss: \d\.\d{4} - acc: \d\.\d{4} - \d+ tok\/s\n/);
    assert.match(text, /12\/12 ━{20} \d+:\d\d \d+m?s\/step - loss: .* - eval_loss: \d\.\d{4} - eval_acc: \d\.\d{4}\n$/);
  });

  it("counts truncated examples in the plan and trains on the response only", async () => {
    const model = tinyLoraModel();
    const train = makeExamples(3);
    // 1 + 19 characters + 1 tokens, cut to 19: "Q: color 0?\nA: " (15) + "re" + <eos> kept at the end.
    const r = await fit(model, charTokenizer, { train }, { seqLen: 18, trainOn: "response", learningRate: 1e-3 });
    assert.equal(r.plan.truncated, 3);
    assert.equal(r.plan.trainTargets, 9);
    assert.deepEqual(r.log.map((e) => e.targets), [3, 3, 3]);
    await assert.rejects(fit(model, charTokenizer, { train }, { seqLen: 12, trainOn: "response" }), /no training example has a target/);
  });

  it("gradient accumulation 2 at batch 1 gives the same parameters as batch 2 (token-weighted mean)", async () => {
    const train = makeExamples(6);
    train[1] = { ...train[1]!, response: "a much longer answer", text: train[1]!.prompt + "a much longer answer" };
    const run = async (options: { batchSize?: number; gradientAccumulation?: number }) => {
      const model = tinyLoraModel();
      const r = await fit(model, charTokenizer, { train }, { learningRate: 5e-3, ...options });
      return { r, params: trainableParameters(model) };
    };
    const a = await run({ gradientAccumulation: 2 });
    const b = await run({ batchSize: 2 });
    const c = await run({});
    assert.equal(a.r.steps, 3);
    assert.equal(b.r.steps, 3);
    let d = 0, dc = 0;
    for (const [name, p] of a.params) {
      const q = b.params.get(name)!.f32, s = c.params.get(name)!.f32;
      for (let i = 0; i < p.size; i++) {
        d = Math.max(d, Math.abs(p.f32[i]! - q[i]!));
        dc = Math.max(dc, Math.abs(p.f32[i]! - s[i]!));
      }
    }
    assert.ok(d <= 1e-6, `max |diff| ${d}`);
    assert.ok(dc > 1e-4, "batch 1 without accumulation differs");
    // The step loss is the token-level mean over both sequences.
    const [s0, s1] = train.slice(0, 2).map((e) => tokenizeExample(e, charTokenizer));
    assert.equal(a.r.log[0]!.targets, s0!.count + s1!.count);
    assert.ok(Math.abs(a.r.log[0]!.loss - b.r.log[0]!.loss) < 1e-6);
  });

  it("resumes exactly: from a checkpoint at step 3, after a stop by the signal, and after a stop during evaluation", async () => {
    const data = { train: killRun.train, eval: killRun.eval };
    const full = tmp("full");
    const a = await fit(tinyLoraModel(), charTokenizer, data, { ...killRun.options, checkpointDir: full, checkpointEvery: 3 });
    assert.equal(a.steps, 6);
    assert.deepEqual(listCheckpoints(full), [6, 3]);
    assert.equal(fs.readFileSync(path.join(full, "latest"), "utf8").trim(), "checkpoint-6");
    assert.equal(a.evalLog.length, 2);
    const expected = adapterBytes(path.join(full, "checkpoint-6"));
    const losses = (log: { loss: number }[]) => log.map((e) => e.loss);

    // A fresh model resumed from checkpoint-3 of that run, into another folder.
    const other = tmp("from3");
    const b = await fit(tinyLoraModel(), charTokenizer, data, {
      ...killRun.options, checkpointDir: other, checkpointEvery: 3, resume: path.join(full, "checkpoint-3"),
    });
    assert.equal(b.resumedFrom, path.join(full, "checkpoint-3"));
    assert.deepEqual(adapterBytes(path.join(other, "checkpoint-6")), expected);
    assert.deepEqual(losses(b.log), losses(a.log));
    assert.deepEqual(b.evalLog.map((e) => e.loss), a.evalLog.map((e) => e.loss));

    // Stopped by the signal after step 2 (mid-epoch), then resumed with resume: true.
    const stopped = tmp("signal");
    const controller = new AbortController();
    const c1 = await fit(tinyLoraModel(), charTokenizer, data, {
      ...killRun.options, checkpointDir: stopped, signal: controller.signal, onStep: (e) => e.step === 2 && controller.abort(),
    });
    assert.equal(c1.stopped, "interrupted");
    assert.equal(c1.steps, 2);
    assert.equal(c1.checkpoint, path.join(stopped, "checkpoint-2"));
    const logFile = path.join(stopped, "log.jsonl");
    fs.writeFileSync(logFile, JSON.stringify({ type: "train", step: 3, note: "from a run that went further" }) + "\n");
    const c2 = await fit(tinyLoraModel(), charTokenizer, data, { ...killRun.options, checkpointDir: stopped, resume: true, logFile });
    const jsonl = fs.readFileSync(logFile, "utf8").trim().split("\n").map((l) => JSON.parse(l));
    assert.deepEqual(jsonl.map((l) => `${l.type} ${l.step}`),
      ["train 1", "train 2", "train 3", "eval 3", "train 4", "train 5", "train 6", "eval 6"]);
    assert.deepEqual(jsonl.filter((l) => l.type === "train").map((l) => l.loss), losses(a.log));
    assert.equal(c2.resumedFrom, path.join(stopped, "checkpoint-2"));
    assert.equal(c2.stopped, "completed");
    assert.deepEqual(adapterBytes(path.join(stopped, "checkpoint-6")), expected);
    assert.deepEqual(losses(c2.log), losses(a.log));

    // Stopped during the evaluation at the end of epoch 1 (after the first of two eval examples).
    const midEval = tmp("eval");
    const stopAt = new AbortController();
    const model = tinyLoraModel();
    let forwards = 0;
    const counting: CausalLM = Object.assign(Object.create(model) as CausalLM, {
      forward: (...args: Parameters<CausalLM["forward"]>) => {
        if (++forwards === 6) stopAt.abort(); // 5 training sequences in epoch 1, then eval
        return model.forward(...args);
      },
    });
    const d1 = await fit(counting, charTokenizer, data, { ...killRun.options, checkpointDir: midEval, signal: stopAt.signal });
    assert.equal(d1.stopped, "interrupted");
    assert.equal(d1.steps, 3);
    assert.equal(d1.evalLog.length, 0);
    assert.equal(loadCheckpoint(path.join(midEval, "checkpoint-3")).state.evalPending, true);
    const d2 = await fit(tinyLoraModel(), charTokenizer, data, { ...killRun.options, checkpointDir: midEval, resume: true });
    assert.deepEqual(d2.evalLog.map((e) => [e.step, e.loss]), a.evalLog.map((e) => [e.step, e.loss]));
    assert.deepEqual(adapterBytes(path.join(midEval, "checkpoint-6")), expected);
  });

  it("refuses to resume a different run, and starts afresh when there is no checkpoint", async () => {
    const dir = tmp("refuse");
    const data = { train: killRun.train, eval: killRun.eval };
    const fresh = await fit(tinyLoraModel(), charTokenizer, data, { ...killRun.options, checkpointDir: dir, resume: true, epochs: 1 });
    assert.equal(fresh.resumedFrom, null);
    assert.equal(fresh.steps, 3);
    await assert.rejects(
      fit(tinyLoraModel(), charTokenizer, data, { ...killRun.options, checkpointDir: dir, resume: true, epochs: 1, learningRate: 1 }),
      (e: unknown) => e instanceof LoratuneError && /different run \(learningRate: 0\.01 then, 1 now\)/.test(e.message),
    );
    await assert.rejects(
      fit(tinyLoraModel(), charTokenizer, { train: makeExamples(4) }, { ...killRun.options, checkpointDir: dir, resume: true, epochs: 1 }),
      (e: unknown) => e instanceof LoratuneError && /trainData/.test(e.message),
    );
    await assert.rejects(fit(tinyLoraModel(), charTokenizer, data, { resume: path.join(dir, "nothing") }), LoratuneError);
  });

  it("a failed checkpoint write names the path and leaves the previous checkpoint intact", (t) => {
    const dir = tmp("readonly");
    fs.mkdirSync(dir);
    const asRoot = process.getuid?.() === 0;
    if (asRoot) fs.chownSync(dir, 65534, 65534); // root ignores permissions: the worker runs as nobody
    const job = JSON.stringify({ mode: "readonly", dir });
    const child = spawnSync(process.execPath, [path.join(here, "training-worker.js"), job], {
      encoding: "utf8", timeout: 30000, ...(asRoot ? { uid: 65534, gid: 65534 } : {}),
    });
    fs.chmodSync(dir, 0o755);
    if ((child.error as NodeJS.ErrnoException | undefined)?.code === "EPERM") {
      t.skip("running as root without the right to switch to an unprivileged user");
      return;
    }
    assert.equal(child.status, 3, child.stderr + child.stdout);
    const out = JSON.parse(child.stdout.trim().split("\n").pop()!);
    assert.match(out.error, /cannot write checkpoint checkpoint-6/);
    assert.ok(out.error.includes(dir) && out.file.startsWith(dir), out.error);
    assert.match(out.hint, /checkpoint-3 is intact/);
    assert.equal(findLatestCheckpoint(dir), path.join(dir, "checkpoint-3"));
    assert.deepEqual(fs.readdirSync(dir).sort(), ["checkpoint-3", "latest"]);
    const ckpt = loadCheckpoint(path.join(dir, "checkpoint-3"));
    assert.equal(ckpt.state.step, 3);
    assert.equal(ckpt.state.log.length, 3);
  });

  it("stops at a NaN loss naming the step and the example, keeping the last good checkpoint", async () => {
    const dir = tmp("nan");
    const model = tinyLoraModel();
    const A = [...trainableParameters(model).values()][0]!;
    const logFile = path.join(dir, "log.jsonl");
    await assert.rejects(
      fit(model, charTokenizer, { train: makeExamples(8) }, {
        learningRate: 1e-2, checkpointDir: dir, checkpointEvery: 3, logFile,
        onStep: (e) => {
          if (e.step === 3) A.f32[0] = NaN;
        },
      }),
      (e: unknown) => {
        assert.ok(e instanceof LoratuneError);
        assert.match(e.message, /^fake\.jsonl:4: the loss is NaN at step 4 \(epoch 1\)/);
        assert.equal(e.line, 4);
        assert.match(e.hint!, /checkpoint-3/);
        return true;
      },
    );
    assert.equal(findLatestCheckpoint(dir), path.join(dir, "checkpoint-3"));
    const ckpt = loadCheckpoint(path.join(dir, "checkpoint-3"));
    for (const t of ckpt.params.values()) assert.ok(t.f32.every(Number.isFinite));
    assert.equal(fs.readFileSync(logFile, "utf8").trim().split("\n").length, 3);
  });

  it("rejects bad options and models with nothing to train", async () => {
    await assert.rejects(fit(tinyLoraModel(), charTokenizer, { train: [] }), LoratuneError);
    await assert.rejects(fit(tinyLoraModel(), charTokenizer, { train: makeExamples(1) }, { batchSize: 0 }), LoratuneError);
    await assert.rejects(fit(tinyLoraModel(), charTokenizer, { train: makeExamples(1) }, { checkpointEvery: 2 }), LoratuneError);
    const frozen = tinyLoraModel();
    for (const t of trainableParameters(frozen).values()) t.requiresGrad = false;
    for (const l of frozen.linears()) l.lora = null;
    await assert.rejects(fit(frozen, charTokenizer, { train: makeExamples(1) }), /no trainable parameters/);
  });
});
