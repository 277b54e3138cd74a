// The training layer: AdamW, schedules, sequences and batches, checkpoints, the fit loop.
export {
  AdamW, type AdamWOptions, type AdamWState, type AdamWVariant, type LearningRate,
  clipGradNorm, globalGradNorm, usesWeightDecay, weightDecayNameParts,
} from "./optimizer.js";
export { type Schedule, type ScheduleName, type ScheduleOptions, constantSchedule, cosineSchedule, linearSchedule, makeSchedule } from "./schedule.js";
export {
  type SequenceOptions, type StepBatch, type TokenizedSet, type TrainOn, type TrainingSequence, type TrainingTokenizer,
  epochOrder, stepBatch, tokenizeExample, tokenizeExamples,
} from "./batches.js";
export {
  type CheckpointContents, type EvalLog, type LoadedCheckpoint, type StepLog, type TrainerState,
  findLatestCheckpoint, listCheckpoints, loadCheckpoint, saveCheckpoint,
} from "./checkpoint.js";
export {
  type EvalResult, type EvaluateOptions, type FitOptions, type FitResult, type ProgressWriter, type TrainingPlan,
  evaluate, fit, formatProgressLine,
} from "./trainer.js";
