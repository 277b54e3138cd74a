// decode-270m: greedy decoding (16-token prompt, 128 new tokens) on the Gemma-3-270M-like shape of
// ../shared/bench/peer_torch.py with random bf16 weights, against the PyTorch peer in the same run,
// and against the memory-bandwidth bound: each new token must stream every matrix once.
import { native } from "../src/backend/native.js";
import { TextGenerator } from "../src/generation/generate.js";
import { Random } from "../src/generation/random.js";
import { expectedWeightShapes, type ModelConfig } from "../src/models/config.js";
import { GemmaModel } from "../src/models/gemma.js";
import { Tensor } from "../src/tensor.js";
import { emit, median, peakRssMb, peerFields, round, runPeer } from "./common.js";

export const SHAPE_270M: ModelConfig = {
  modelType: "gemma", architecture: "GemmaForCausalLM",
  vocabSize: 262144, hiddenSize: 640, intermediateSize: 2048, numLayers: 18, numHeads: 4, numKvHeads: 1, headDim: 256,
  rmsNormEps: 1e-6, ropeTheta: 10000, maxPositions: 2048, activation: "gelu_tanh", tieWordEmbeddings: true,
  bosTokenId: 2, eosTokenIds: [1], padTokenId: 0, torchDtype: "bfloat16",
};

/**
 * A model of `config` with random weights: matrices bf16 normal(0, 0.02), norms f32 zero. The
 * matrices are cut from one pool of 2^24 normal draws at random offsets: drawing all 2.5 billion of
 * a 2B model one by one took minutes, and timings do not depend on the values.
 */
export function randomModel(config: ModelConfig, seed = 0): GemmaModel {
  const rng = new Random(seed);
  const pool = new Uint16Array(1 << 24);
  const draws = new Float32Array(pool.length);
  for (let i = 0; i < draws.length; i++) draws[i] = rng.normal() * 0.02;
  native.f32ToBf16(draws.length, draws, pool);
  const shapes = expectedWeightShapes(config);
  return GemmaModel.fromWeights(config, (name) => {
    const shape = shapes.get(name)!;
    if (shape.length === 1) return Tensor.zeros(shape);
    const t = Tensor.empty(shape, "bf16");
    const data = t.data as Uint16Array;
    for (let at = 0; at < data.length; at += pool.length >> 1) {
      const n = Math.min(pool.length >> 1, data.length - at);
      const from = Math.floor(rng.next() * (pool.length >> 1));
      data.set(pool.subarray(from, from + n), at);
    }
    return t;
  });
}

/** GB/s of streaming a bf16 matrix through a one-row product: what decoding can reach at best. */
function streamingBandwidth(): number {
  const K = 4096, N = 32768; // 256 MiB of bf16, far beyond the caches
  const w = new Uint16Array(native.alloc(K * N * 2));
  const x = new Float32Array(native.alloc(K * 4)).fill(1);
  const y = new Float32Array(native.alloc(N * 4));
  const times: number[] = [];
  for (let r = 0; r < 7; r++) {
    const t = performance.now();
    native.gemm(false, true, 1, N, K, 1, x, K, w, K, 0, y, N);
    times.push(performance.now() - t);
  }
  native.release(w.buffer as ArrayBuffer);
  return (K * N * 2) / (median(times.slice(2)) / 1000) / 1e9;
}

export async function benchDecode270m(): Promise<void> {
  const config = SHAPE_270M;
  const model = randomModel(config);
  const prompt = { ids: Array.from({ length: 16 }, (_, i) => 2 + ((i * 7919) % (config.vocabSize - 2))) };
  const generator = new TextGenerator(model);
  const run = (newTokens: number) => {
    const t = performance.now();
    generator.generate(prompt, { sampler: "greedy", maxNewTokens: newTokens, stopTokenIds: [] });
    return (performance.now() - t) / 1000;
  };
  run(8); // warm-up
  const prefill: number[] = [], total: number[] = [];
  for (let r = 0; r < 3; r++) {
    prefill.push(run(1));
    total.push(run(128));
  }
  // The first new token comes from the prefill; the other 127 are decode steps.
  const decodeTokPerS = 127 / (median(total) - median(prefill));
  const matrixBytes = [...model.weights().values()].filter((w) => w.shape.length === 2).reduce((a, w) => a + w.bytes, 0);
  const bandwidth = streamingBandwidth();
  const bound = (bandwidth * 1e9) / matrixBytes;
  const oursRss = peakRssMb();
  const peer = runPeer("gen", "270m");
  emit({
    name: "decode-270m",
    ours: round(decodeTokPerS),
    unit: "tok/s",
    ...peerFields(peer, "decode_tok_s", decodeTokPerS),
    prefill_ms: round(median(prefill) * 1000),
    end_to_end_tok_s: round(128 / median(total)),
    weights_streamed_mb: round(matrixBytes / 2 ** 20),
    bandwidth_gb_s: round(bandwidth),
    bandwidth_bound_tok_s: round(bound),
    fraction_of_bound: round(decodeTokPerS / bound),
    threads: native.numThreads(),
    peak_rss_mb: Math.round(oursRss),
  });
}
