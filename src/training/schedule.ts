// Learning-rate schedules as functions of the 0-based update index (Keras calls its schedules with
// `optimizer.iterations`, the number of updates already made).
import { LoratuneError } from "../errors.js";

export type ScheduleName = "constant" | "cosine" | "linear";
export type Schedule = (step: number) => number;

export interface ScheduleOptions {
  /** The peak learning rate (reached at the end of the warm-up). */
  learningRate: number;
  /** Updates in the whole run (decay ends there). Needed by cosine and linear. */
  totalSteps?: number;
  /** Updates of linear warm-up from learningRate / warmupSteps up to learningRate; default 0. */
  warmupSteps?: number;
  /** Where cosine and linear decay end; default 0. */
  minLearningRate?: number;
}

/** A constant learning rate (after an optional linear warm-up). */
export function constantSchedule(learningRate: number, warmupSteps = 0): Schedule {
  return makeSchedule("constant", { learningRate, warmupSteps });
}

/** Linear warm-up, then cosine decay from learningRate to minLearningRate at totalSteps. */
export function cosineSchedule(options: ScheduleOptions): Schedule {
  return makeSchedule("cosine", options);
}

/** Linear warm-up, then linear decay from learningRate to minLearningRate at totalSteps. */
export function linearSchedule(options: ScheduleOptions): Schedule {
  return makeSchedule("linear", options);
}

/**
 * The schedule named. Warm-up: step s < warmupSteps gives lr * (s + 1) / warmupSteps, so the first
 * update already learns and the last warm-up update uses the peak. Decay runs over the remaining
 * steps: progress p = (s - warmup) / (total - warmup) in [0, 1), lr = min + (peak - min) * f(p) with
 * f = (1 + cos(pi p)) / 2 (cosine) or 1 - p (linear); steps past the end give min.
 */
export function makeSchedule(name: ScheduleName, options: ScheduleOptions): Schedule {
  const { learningRate: peak } = options;
  const warmup = options.warmupSteps ?? 0;
  const min = options.minLearningRate ?? 0;
  if (!(peak >= 0) || !Number.isFinite(peak)) throw new LoratuneError(`learning rate must be a finite number >= 0, got ${peak}`, { field: "learningRate" });
  if (!Number.isInteger(warmup) || warmup < 0) throw new LoratuneError(`warm-up steps must be a whole number >= 0, got ${warmup}`, { field: "warmupSteps" });
  if (!(min >= 0) || min > peak) throw new LoratuneError(`the minimum learning rate must be in [0, ${peak}], got ${min}`, { field: "minLearningRate" });
  const warm = (s: number) => (peak * (s + 1)) / warmup;
  if (name === "constant") return (s) => (s < warmup ? warm(s) : peak);
  if (name !== "cosine" && name !== "linear") {
    throw new LoratuneError(`unknown schedule "${String(name)}" (constant, cosine, linear)`, { field: "schedule" });
  }
  const total = options.totalSteps;
  if (total === undefined || !Number.isInteger(total) || total < 1) {
    throw new LoratuneError(`the ${name} schedule needs the total number of steps (a whole number >= 1), got ${total}`, { field: "totalSteps" });
  }
  const span = Math.max(1, total - warmup);
  return (s) => {
    if (s < warmup) return warm(s);
    const p = (s - warmup) / span;
    if (p >= 1) return min;
    const f = name === "cosine" ? 0.5 * (1 + Math.cos(Math.PI * p)) : 1 - p;
    return min + (peak - min) * f;
  };
}
