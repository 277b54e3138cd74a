// seed-270m: the reference job's training work on the Gemma-3-270M-like shape, against the PyTorch
// peer on the same token sequences. Our real pipeline: the first SEED_EXAMPLES (default 1000, the
// walkthrough's) no-context Dolly rows of ../shared/data/dolly in the dolly template, the real Gemma
// tokenizer, sequences of at most 512 tokens, a random model with bf16 frozen weights, LoRA rank 4 on
// q_proj and v_proj, `fit` for one epoch at batch 1 (AdamW lr 5e-5, weight decay 0.01, loss on all
// tokens). The sequences fit trained are written to a temp file; bench/peer_seed.py trains the peer
// (fp32, run as ../shared/bench/run-peer.sh runs it) one AdamW step per sequence on the same tokens.
// SEED_EXAMPLES=5 makes a quick check; the full run takes an hour or more on 2 cores, most of it the peer.
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { native } from "../src/backend/native.js";
import { packageRoot } from "../src/data/builtins.js";
import { loadDataset } from "../src/data/dataset.js";
import { enableLora } from "../src/lora/lora.js";
import { Tokenizer } from "../src/tokenizer/tokenizer.js";
import { tokenizeExamples } from "../src/training/batches.js";
import { fit, type FitOptions } from "../src/training/trainer.js";
import { emit, lastJsonLine, peakRssMb, peerSkipped, round, withoutOpenblasOverrides } from "./common.js";
import { randomModel, SHAPE_270M } from "./decode.js";

const SEQ_LEN = 512;
/** The walkthrough's optimizer; the peer gets the same (Keras's epsilon included). */
const LEARNING_RATE = 5e-5, WEIGHT_DECAY = 0.01, EPSILON = 1e-7;
const TCMALLOC = "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4";

function examplesWanted(): number {
  const raw = process.env.SEED_EXAMPLES ?? "1000";
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1) throw new Error(`SEED_EXAMPLES must be a whole number >= 1, got ${JSON.stringify(raw)}`);
  return n;
}

const seconds = (since: number) => (performance.now() - since) / 1000;

/** The peer's JSON line from bench/peer_seed.py over the sequences in `sequencesFile`, or null where it cannot run. */
function runSeedPeer(root: string, sequencesFile: string): Record<string, unknown> | null {
  const python = "/usr/bin/python3";
  if (peerSkipped() || !fs.existsSync(python) || !fs.existsSync(path.resolve(root, "..", "shared", "bench", "peer_torch.py"))) return null;
  // As run-peer.sh: tcmalloc preloaded, 2 threads; and at its best, without the OpenBLAS overrides (common.ts).
  const env: NodeJS.ProcessEnv = { ...withoutOpenblasOverrides(), OMP_NUM_THREADS: "2", TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD: String(2 ** 40) };
  if (fs.existsSync(TCMALLOC)) env.LD_PRELOAD = TCMALLOC;
  else delete env.LD_PRELOAD;
  const r = spawnSync(python, [path.join(root, "bench", "peer_seed.py"), sequencesFile], {
    env, encoding: "utf8", timeout: 3 * 3_600_000, maxBuffer: 64 << 20, stdio: ["ignore", "pipe", "inherit"],
  });
  return r.status === 0 ? lastJsonLine(r.stdout) : null;
}

export async function benchSeed270m(): Promise<void> {
  const root = packageRoot();
  const examples = examplesWanted();
  const dataFile = path.resolve(root, "..", "shared", "data", "dolly", "databricks-dolly-15k.first2500.jsonl");

  let t = performance.now();
  // What `loratune finetune --data dolly --no-context --limit N` loads (default template).
  const data = loadDataset({ source: dataFile, format: "dolly", noContext: true, limit: examples });
  const tokenizer = Tokenizer.fromDir(path.join(root, "node_modules", "@lenml", "tokenizer-gemini", "models"));
  const loadSeconds = seconds(t);

  t = performance.now();
  const fitOptions: FitOptions = {
    epochs: 1, batchSize: 1, seqLen: SEQ_LEN, trainOn: "all", learningRate: LEARNING_RATE, weightDecay: WEIGHT_DECAY, epsilon: EPSILON,
  };
  // The same function fit tokenizes with, on the same options: these are the sequences it trains.
  const sequences = tokenizeExamples(data.train, tokenizer, fitOptions).sequences;
  const tokenizeSeconds = seconds(t);

  t = performance.now();
  const model = randomModel(SHAPE_270M);
  enableLora(model, { rank: 4, targets: ["q_proj", "v_proj"] });
  const buildSeconds = seconds(t);

  t = performance.now();
  const result = await fit(model, tokenizer, { train: data.train }, { ...fitOptions, progress: process.stderr });
  const fitSeconds = seconds(t);
  const oursRss = peakRssMb();
  const tokens = result.plan.trainTokens;
  const oursTokPerS = tokens / result.trainSeconds;
  const oursMeanLoss = result.log.reduce((a, e) => a + e.loss, 0) / result.log.length;

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "loratune-seed-"));
  let peer: Record<string, unknown> | null;
  try {
    const sequencesFile = path.join(dir, "sequences.json");
    fs.writeFileSync(sequencesFile, JSON.stringify({
      shape: "270m", learning_rate: LEARNING_RATE, weight_decay: WEIGHT_DECAY, epsilon: EPSILON,
      sequences: sequences.map((s) => ({ ids: Array.from(s.ids), targets: Array.from(s.targets) })),
    }));
    peer = runSeedPeer(root, sequencesFile);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  if (peer && peer.tokens !== tokens) throw new Error(`the peer trained ${String(peer.tokens)} tokens, we trained ${tokens}`);
  const peerTokPerS = typeof peer?.tokens_per_s === "number" ? peer.tokens_per_s : null;
  emit({
    name: "seed-270m",
    ours: round(oursTokPerS),
    peer: peerTokPerS,
    unit: "tok/s",
    ratio: peerTokPerS ? round(oursTokPerS / peerTokPerS) : null,
    examples: result.plan.trainExamples,
    tokens,
    truncated: result.plan.truncated,
    ours_s: round(result.trainSeconds, 4),
    peer_s: typeof peer?.seconds === "number" ? peer.seconds : null,
    fit_s: round(fitSeconds, 4),
    load_s: round(loadSeconds),
    tokenize_s: round(tokenizeSeconds),
    build_s: round(buildSeconds),
    ours_mean_loss: round(oursMeanLoss, 6),
    peer_mean_loss: typeof peer?.mean_loss === "number" ? peer.mean_loss : null,
    peak_rss_mb: Math.round(oursRss),
    peer_peak_rss_mb: typeof peer?.peak_rss_mb === "number" ? peer.peak_rss_mb : null,
    peer_foreign_cpu_share: typeof peer?.foreign_cpu_share === "number" ? peer.foreign_cpu_share : null,
    threads: native.numThreads(),
    peer_threads: typeof peer?.threads === "number" ? peer.threads : null,
    peer_note: peer ? undefined : "peer not available (needs /usr/bin/python3 with PyTorch and ../shared/bench/peer_torch.py) or skipped (BENCH_PEER=0)",
  });
}
