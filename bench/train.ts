// train-tiny / train-270m / train-2b: one LoRA training step (forward, loss, backward, AdamW) at
// sequence length 512 on the PyTorch peer's shapes, frozen weights in bf16, against the peer in the
// same run. train-2b-checkpointed is the 2B step with activation checkpointing, to show its cost.
import { lmHeadCrossEntropy } from "../src/autograd/ops.js";
import { record } from "../src/autograd/tape.js";
import { native } from "../src/backend/native.js";
import { enableLora, trainableParameters } from "../src/lora/lora.js";
import type { ModelConfig } from "../src/models/config.js";
import { memoryInUse, peakMemoryInUse, tidy } from "../src/tensor.js";
import { AdamW } from "../src/training/optimizer.js";
import { emit, median, peakRssMb, peerFields, round, runPeer } from "./common.js";
import { randomModel, SHAPE_270M } from "./decode.js";

const SHAPE_TINY: ModelConfig = {
  ...SHAPE_270M, vocabSize: 32000, hiddenSize: 256, intermediateSize: 1024, numLayers: 4, numHeads: 4, numKvHeads: 1, headDim: 64,
};

const SHAPE_2B: ModelConfig = {
  ...SHAPE_270M, vocabSize: 256000, hiddenSize: 2048, intermediateSize: 16384, numLayers: 18, numHeads: 8, numKvHeads: 1, headDim: 256,
};

/** The peer's FLOP count for a LoRA step (peer_torch.py train_flops): 4·P·T dense + 12·T²·H·d·L attention. */
function trainFlops(c: ModelConfig, T: number): number {
  const perLayer = c.hiddenSize * c.numHeads * c.headDim * 2 + c.hiddenSize * c.numKvHeads * c.headDim * 2 + 3 * c.hiddenSize * c.intermediateSize;
  const matmulParams = perLayer * c.numLayers + c.vocabSize * c.hiddenSize;
  return 4 * matmulParams * T + 12 * T * T * c.numHeads * c.headDim * c.numLayers;
}

/** GFLOP/s of our GEMM on [512,2048]x[2048,2048]ᵀ with bf16 weights, for the MFU. */
function gemmProbe(): number {
  const M = 512, N = 2048, K = 2048;
  const a = new Float32Array(native.alloc(M * K * 4)), b = new Uint16Array(native.alloc(N * K * 2)), c = new Float32Array(native.alloc(M * N * 4));
  const times: number[] = [];
  for (let r = 0; r < 6; r++) {
    const t = performance.now();
    native.gemm(false, true, M, N, K, 1, a, K, b, K, 0, c, N);
    times.push(performance.now() - t);
  }
  return (2 * M * N * K) / (median(times.slice(1)) / 1000) / 1e9;
}

async function benchTrain(name: string, config: ModelConfig, peerShape: string, steps: number, checkpointActivations = false): Promise<void> {
  const T = 512;
  const model = randomModel(config);
  const modelBytes = memoryInUse();
  enableLora(model, { rank: 4, targets: ["q_proj", "v_proj"] });
  const params = trainableParameters(model);
  const optimizer = new AdamW(params, { learningRate: 1e-4 });
  const ids = Int32Array.from({ length: T }, (_, i) => 2 + ((i * 7919) % (config.vocabSize - 2)));
  const targets = Int32Array.from({ length: T }, (_, i) => 2 + (((i + 1) * 7919) % (config.vocabSize - 2)));
  const times: number[] = [];
  let stepPeakBytes = 0;
  for (let s = 0; s <= steps; s++) {
    const t = performance.now();
    const before = memoryInUse();
    peakMemoryInUse(true);
    tidy(() => {
      const { result, tape } = record(() => lmHeadCrossEntropy(model.forward(ids, { checkpointActivations }), model.lmHead, targets));
      tape.backward(result.loss);
    }, () => Array.from(params.values(), (p) => p.grad));
    optimizer.step();
    stepPeakBytes = Math.max(stepPeakBytes, peakMemoryInUse() - before);
    if (s > 0) times.push((performance.now() - t) / 1000); // step 0 warms up
  }
  const step = median(times);
  const gemm = gemmProbe();
  const flops = trainFlops(config, T);
  const oursRss = peakRssMb();
  const peer = runPeer("train", peerShape);
  const peerRss = typeof peer.asIs?.peak_rss_mb === "number" ? peer.asIs.peak_rss_mb : null;
  emit({
    name,
    ours: round(T / step),
    unit: "tok/s",
    ...peerFields(peer, "tokens_per_s", T / step),
    step_s: round(step),
    gflops: round(flops / step / 1e9),
    gemm_gflops: round(gemm),
    mfu: round(flops / step / 1e9 / gemm),
    peak_rss_mb: Math.round(oursRss),
    rss_ratio: peerRss ? round(oursRss / peerRss) : null,
    peer_step_s: typeof peer.asIs?.median_step_s === "number" ? peer.asIs.median_step_s : null,
    // Native memory: the model's weights, and the most the step held beyond them (activations,
    // gradients, the loss chunk), which activation checkpointing trades for recomputation.
    weights_mb: Math.round(modelBytes / 2 ** 20),
    step_peak_mb: Math.round(stepPeakBytes / 2 ** 20),
    checkpoint_activations: checkpointActivations,
    threads: native.numThreads(),
  });
}

export const benchTrainTiny = () => benchTrain("train-tiny", SHAPE_TINY, "tiny", 8);
export const benchTrain270m = () => benchTrain("train-270m", SHAPE_270M, "270m", 5);
export const benchTrain2b = () => benchTrain("train-2b", SHAPE_2B, "gemma2b", 3);
export const benchTrain2bCheckpointed = () => benchTrain("train-2b-checkpointed", SHAPE_2B, "gemma2b", 3, true);
