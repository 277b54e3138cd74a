// Samplers pick the next token from a row of logits, as KerasNLP's samplers do: greedy, top-k,
// top-p (nucleus) and plain random sampling, each with a temperature.
import type { Random } from "./random.js";

export interface Sampler {
  readonly name: string;
  next(logits: Float32Array, rng: Random): number;
}

export class GreedySampler implements Sampler {
  readonly name = "greedy";
  next(logits: Float32Array): number {
    let best = 0;
    for (let i = 1; i < logits.length; i++) if (logits[i]! > logits[best]!) best = i;
    return best;
  }
}

/** Draws from `candidates` (token ids) with probabilities softmax(logit / temperature). */
function drawFrom(candidates: ArrayLike<number>, count: number, logits: Float32Array, temperature: number, rng: Random): number {
  let max = -Infinity;
  for (let i = 0; i < count; i++) max = Math.max(max, logits[candidates[i]!]!);
  const weights = new Float64Array(count);
  let sum = 0;
  for (let i = 0; i < count; i++) sum += weights[i] = Math.exp((logits[candidates[i]!]! - max) / temperature);
  let u = rng.next() * sum;
  for (let i = 0; i < count; i++) {
    u -= weights[i]!;
    if (u < 0) return candidates[i]!;
  }
  return candidates[count - 1]!;
}

function checkTemperature(temperature: number): number {
  if (!(temperature > 0) || !Number.isFinite(temperature)) throw new Error(`temperature must be > 0, got ${temperature}`);
  return temperature;
}

export class TopKSampler implements Sampler {
  readonly name = "top-k";
  constructor(readonly k: number, readonly temperature = 1) {
    if (!Number.isInteger(k) || k < 1) throw new Error(`top-k needs k >= 1, got ${k}`);
    checkTemperature(temperature);
  }

  next(logits: Float32Array, rng: Random): number {
    // Keep the k largest in a small array sorted descending (ties: lower id first).
    const k = Math.min(this.k, logits.length);
    const ids = new Int32Array(k).fill(-1);
    const vals = new Float32Array(k).fill(-Infinity);
    for (let i = 0; i < logits.length; i++) {
      const x = logits[i]!;
      if (ids[k - 1] !== -1 && x <= vals[k - 1]!) continue;
      let j = k - 1;
      while (j > 0 && (ids[j - 1] === -1 || x > vals[j - 1]!)) {
        vals[j] = vals[j - 1]!;
        ids[j] = ids[j - 1]!;
        j--;
      }
      vals[j] = x;
      ids[j] = i;
    }
    return drawFrom(ids, k, logits, this.temperature, rng);
  }
}

export class TopPSampler implements Sampler {
  readonly name = "top-p";
  constructor(readonly p: number, readonly temperature = 1) {
    if (!(p > 0 && p <= 1)) throw new Error(`top-p needs 0 < p <= 1, got ${p}`);
    checkTemperature(temperature);
  }

  next(logits: Float32Array, rng: Random): number {
    const t = this.temperature;
    let max = -Infinity;
    for (let i = 0; i < logits.length; i++) max = Math.max(max, logits[i]!);
    let total = 0;
    for (let i = 0; i < logits.length; i++) total += Math.exp((logits[i]! - max) / t);
    // Only tokens above a probability threshold can be in the nucleus; lower the threshold until
    // the tokens above it hold mass >= p, then sort just those.
    for (let threshold = 1e-3; ; threshold /= 16) {
      const ids: number[] = [];
      let mass = 0;
      for (let i = 0; i < logits.length; i++) {
        const q = Math.exp((logits[i]! - max) / t) / total;
        if (q >= threshold) {
          ids.push(i);
          mass += q;
        }
      }
      if (mass < this.p && threshold > 1e-30) continue;
      ids.sort((a, b) => logits[b]! - logits[a]! || a - b);
      let cumulative = 0;
      let n = 0;
      while (n < ids.length && cumulative < this.p) cumulative += Math.exp((logits[ids[n++]!]! - max) / t) / total;
      return drawFrom(ids, n, logits, t, rng);
    }
  }
}

export class RandomSampler implements Sampler {
  readonly name = "random";
  constructor(readonly temperature = 1) {
    checkTemperature(temperature);
  }

  next(logits: Float32Array, rng: Random): number {
    const t = this.temperature;
    let max = -Infinity;
    for (let i = 0; i < logits.length; i++) max = Math.max(max, logits[i]!);
    let sum = 0;
    for (let i = 0; i < logits.length; i++) sum += Math.exp((logits[i]! - max) / t);
    let u = rng.next() * sum;
    for (let i = 0; i < logits.length; i++) {
      u -= Math.exp((logits[i]! - max) / t);
      if (u < 0) return i;
    }
    return logits.length - 1;
  }
}

export type SamplerName = "greedy" | "top-k" | "top-p" | "random";
export const samplerNames: SamplerName[] = ["greedy", "top-k", "top-p", "random"];

export interface SamplerOptions {
  k?: number;
  p?: number;
  temperature?: number;
}

export function makeSampler(name: SamplerName, o: SamplerOptions = {}): Sampler {
  switch (name) {
    case "greedy": return new GreedySampler();
    case "top-k": return new TopKSampler(o.k ?? 5, o.temperature ?? 1);
    case "top-p": return new TopPSampler(o.p ?? 0.9, o.temperature ?? 1);
    case "random": return new RandomSampler(o.temperature ?? 1);
  }
}
