// A training run (checkpoint after every step) killed with SIGKILL at random moments, resumed each
// time: every checkpoint left behind must load, and the run must end with the same adapter bytes
// and losses as a run that was never interrupted.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, it } from "node:test";
import { fileURLToPath } from "node:url";
import { findLatestCheckpoint, loadCheckpoint } from "../src/training/checkpoint.js";

const worker = path.join(path.dirname(fileURLToPath(import.meta.url)), "training-worker.js");
const tmpRoot = fs.mkdtempSync(path.join(os.tmpdir(), "loratune-kill-"));
after(() => fs.rmSync(tmpRoot, { recursive: true, force: true }));
const TRAIN = 24; // 2 epochs x 12 steps of batch 2

/** Runs the worker; kills it with SIGKILL after killAfterMs if given. Resolves with its exit code or signal. */
function runWorker(dir: string, killAfterMs?: number): Promise<{ code: number | null; signal: NodeJS.Signals | null; out: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [worker, JSON.stringify({ mode: "run", dir, train: TRAIN })], { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => (out += d));
    const timer = killAfterMs === undefined ? null : setTimeout(() => child.kill("SIGKILL"), killAfterMs);
    child.on("error", reject);
    child.on("exit", (code, signal) => {
      if (timer) clearTimeout(timer);
      resolve({ code, signal, out });
    });
  });
}

it("survives SIGKILL at random moments and resumes to the same adapter bytes", { timeout: 60000 }, async () => {
  const reference = path.join(tmpRoot, "reference");
  const ref = await runWorker(reference);
  assert.equal(ref.code, 0, ref.out);
  const expected = fs.readFileSync(path.join(reference, "checkpoint-24", "adapter_model.safetensors"));
  const expectedLosses = loadCheckpoint(path.join(reference, "checkpoint-24")).state.log.map((e) => e.loss);

  const dir = path.join(tmpRoot, "killed");
  const delays = Array.from({ length: 5 }, () => Math.round(300 + Math.random() * 900));
  const seen: string[] = [];
  let finished = false;
  for (const delay of delays) {
    const r = await runWorker(dir, delay);
    const latest = findLatestCheckpoint(dir);
    seen.push(`${delay} ms: ${r.signal ?? `exit ${r.code}`}, latest ${latest ? path.basename(latest) : "none"}`);
    if (r.code === 0) {
      finished = true;
      break;
    }
    assert.equal(r.signal, "SIGKILL", r.out);
    if (latest) {
      // Whatever moment the kill hit, the newest checkpoint is whole.
      const c = loadCheckpoint(latest);
      assert.equal(c.state.log.length, c.state.step, seen.join("; "));
      assert.equal(c.optimizer.step, c.state.step);
    }
  }
  if (!finished) {
    const r = await runWorker(dir);
    seen.push(`final: exit ${r.code}`);
    assert.equal(r.code, 0, r.out + seen.join("; "));
  }
  const final = path.join(dir, "checkpoint-24");
  assert.deepEqual(fs.readFileSync(path.join(final, "adapter_model.safetensors")), expected, seen.join("; "));
  const state = loadCheckpoint(final).state;
  assert.deepEqual(state.log.map((e) => e.step), Array.from({ length: 24 }, (_, i) => i + 1));
  assert.deepEqual(state.log.map((e) => e.loss), expectedLosses);
  // Only the last two checkpoints, the pointer and no leftovers remain.
  assert.deepEqual(fs.readdirSync(dir).sort(), ["checkpoint-23", "checkpoint-24", "latest"]);
});
