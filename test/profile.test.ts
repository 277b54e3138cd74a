// The op profiler: counts, kinds and FLOPs of real kernel calls, the kernels put back afterwards
// (results unchanged), and fit's profile of its training updates.
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { rmsnorm } from "../src/autograd/ops.js";
import { native } from "../src/backend/native.js";
import { OTHER_KIND, type ProfileReport, formatProfile, mergeProfiles, startProfile, stopProfile } from "../src/backend/profile.js";
import type { ForwardOptions } from "../src/models/model.js";
import { Tensor, tidy } from "../src/tensor.js";
import { fit } from "../src/training/trainer.js";
import { uniform } from "./helpers.js";
import { charTokenizer, makeExamples, tinyLoraModel } from "./training-fixtures.js";

function values(n: number, seed: number): Float32Array {
  const u = uniform(seed);
  return Float32Array.from({ length: n }, () => u() * 2 - 1);
}

const A = values(24 * 16, 1);
const B = values(16 * 20, 2);
const BT16 = new Uint16Array(values(20 * 16, 3).buffer).filter((_, i) => i % 2 === 1); // bf16: the upper halves
const X = values(4 * 16, 4);

/** Four GEMMs of three kinds and one rmsnorm (which allocates its output and saved rstd). */
function compute(): Float32Array[] {
  const full = new Float32Array(24 * 20), again = new Float32Array(24 * 20), thin = new Float32Array(2 * 20), lowRank = new Float32Array(24 * 20);
  native.gemm(false, false, 24, 20, 16, 1, A, 16, B, 20, 0, full, 20);
  native.gemm(false, false, 24, 20, 16, 1, A, 16, B, 20, 0, again, 20);
  native.gemm(false, true, 2, 20, 16, 1, A, 16, BT16, 16, 0, thin, 20); // two rows: GEMV-like
  native.gemm(false, false, 24, 20, 4, 1, A, 16, B, 20, 0, lowRank, 20); // inner dimension 4, as LoRA's rank
  const normed = tidy(() => Array.from(rmsnorm(Tensor.from(X, [4, 16]), Tensor.from(values(16, 5)), 1e-6, true).f32));
  return [full, again, thin, lowRank, Float32Array.from(normed)];
}

function byKind(report: ProfileReport): Map<string, ProfileReport["ops"][number]> {
  return new Map(report.ops.map((t) => [t.kind, t]));
}

describe("profile", () => {
  it("counts calls, kinds and FLOPs of real kernels, and puts the kernels back", () => {
    const originals = { ...native };
    const plain = compute();
    startProfile();
    const profiled = compute();
    const report = stopProfile();

    assert.deepEqual(profiled, plain, "profiling changes no result");
    for (const [name, fn] of Object.entries(originals)) assert.equal((native as unknown as Record<string, unknown>)[name], fn, name);

    const kinds = byKind(report);
    assert.deepEqual([...kinds.keys()].sort(), [
      "gemm A·B f32", "gemm A·B f32 K≤8", "gemv A·Bᵀ bf16", OTHER_KIND, "rmsnorm",
    ].sort());
    assert.equal(kinds.get("gemm A·B f32")!.calls, 2);
    assert.ok(Math.abs(kinds.get("gemm A·B f32")!.gflop! - (2 * 2 * 24 * 20 * 16) / 1e9) < 1e-15);
    assert.equal(kinds.get("gemv A·Bᵀ bf16")!.calls, 1);
    assert.ok(Math.abs(kinds.get("gemv A·Bᵀ bf16")!.gflop! - (2 * 2 * 20 * 16) / 1e9) < 1e-15);
    assert.ok(Math.abs(kinds.get("gemm A·B f32 K≤8")!.gflop! - (2 * 24 * 20 * 4) / 1e9) < 1e-15);
    assert.equal(kinds.get("rmsnorm")!.calls, 1);
    assert.equal(kinds.get("rmsnorm")!.gflop, undefined);
    // Tensor.from allocates x and w, rmsnorm its output and rstd: the unprofiled run gave the same
    // four buffers back to the pool, so the addon is asked for no memory.
    assert.equal(kinds.get("memory (alloc, release)"), undefined);

    const sum = report.ops.reduce((s, t) => s + t.ms, 0);
    assert.ok(Math.abs(sum - report.wallMs) < 1e-6, `${sum} vs ${report.wallMs}`);
    for (let i = 1; i < report.ops.length; i++) assert.ok(report.ops[i - 1]!.ms >= report.ops[i]!.ms, "sorted by time");
  });

  it("refuses to start twice, and to stop when not started", () => {
    startProfile();
    try {
      assert.throws(() => startProfile(), /already running/);
    } finally {
      stopProfile();
    }
    assert.throws(() => stopProfile(), /no profile is running/);
  });

  it("merges reports and formats them per step", () => {
    const one: ProfileReport = { wallMs: 10, ops: [{ kind: "gemm A·B f32", calls: 2, ms: 6, gflop: 0.6 }, { kind: OTHER_KIND, calls: 0, ms: 4 }] };
    const two: ProfileReport = { wallMs: 14, ops: [{ kind: "gemm A·B f32", calls: 2, ms: 4, gflop: 0.6 }, { kind: "rmsnorm", calls: 1, ms: 6 }, { kind: OTHER_KIND, calls: 0, ms: 4 }] };
    const merged = mergeProfiles([one, two]);
    assert.deepEqual(merged, {
      wallMs: 24,
      ops: [{ kind: "gemm A·B f32", calls: 4, ms: 10, gflop: 1.2 }, { kind: OTHER_KIND, calls: 0, ms: 8 }, { kind: "rmsnorm", calls: 1, ms: 6 }],
    });
    assert.equal(formatProfile(merged, 2), [
      "kind                                 calls/step  ms/step   share  GFLOP/s",
      "gemm A·B f32                                  2     5.00   41.7%    120.0",
      "other (JavaScript, outside kernels)                 4.00   33.3%",
      "rmsnorm                                     0.5     3.00   25.0%",
      "total                                              12.00  100.0%",
      "",
    ].join("\n"));
  });
});

describe("fit with profile and checkpointActivations", () => {
  it("profiles the updates after the first, prints the table, and passes checkpointActivations to training forwards only", async () => {
    const model = tinyLoraModel();
    const seen: Array<boolean | undefined> = [];
    const forward = model.forward.bind(model);
    model.forward = (ids: Int32Array, options?: ForwardOptions) => {
      seen.push(options?.checkpointActivations);
      return forward(ids, options);
    };
    const printed: string[] = [];
    const r = await fit(model, charTokenizer, { train: makeExamples(3), eval: makeExamples(1, "eval.jsonl") }, {
      seqLen: 16, profile: true, checkpointActivations: true, progress: { write: (s: string) => printed.push(s), isTTY: false },
    });
    assert.deepEqual(seen, [true, true, true, undefined], "three training forwards, then one evaluation");
    assert.equal(r.profile!.updates, 2);
    const kinds = byKind(r.profile!.report);
    for (const kind of ["attentionForward", "attentionBackward", "adamw", "crossEntropy", OTHER_KIND]) assert.ok(kinds.has(kind), kind);
    assert.ok([...kinds.keys()].some((k) => k.startsWith("gemm ")));
    assert.equal(kinds.get("adamw")!.calls % 2, 0, "the same adamw calls in each of the two updates");
    const text = printed.join("");
    assert.ok(text.endsWith(r.profile!.table));
    assert.match(text, /Profile: time per op kind, mean of 2 update\(s\) after the first\nkind +calls\/step +ms\/step +share +GFLOP\/s\n/);
  });
});
