/**
 * Fine-tuning infrastructure: data, loss, AdamW, the trainer and checkpoint export. Each family's
 * training adapter lives in its folder (models/<family>/train*.ts) and is reached through the
 * family table; the public `training` namespace (index.ts) adds them.
 */
export { AdamW } from './adamw';
export type { AdamWOptions } from './adamw';
export { IGNORE_INDEX, crossEntropy, supervisedPositions } from './loss';
export { selectTrainable, toCheckpointTensor, underPrefix } from './params';
export type { TrainableParam } from './params';
export { readDataFile } from './data';
export type { RawSample } from './data';
export type { TrainFamily } from './family';
export { Trainer, seededPermutation } from './trainer';
export type { StepInfo, TrainLoopOptions, TrainResult, TrainerOptions } from './trainer';
export { checkOutDir, exportCheckpoint } from './export';
export { finetune, loadTrainer } from './finetune';
export type { FinetuneOptions, FinetuneResult, LoadTrainerOptions } from './finetune';
export { LoraModel, findAllLinearNames, kaimingUniform, loraFromPreset, matchesTarget, parseTargetModules, peftKey } from './lora';
export type { LoraOptions, LoraPreset, TargetModules } from './lora';
export { adapterConfigJson, loadAdapter, readAdapterConfig, saveAdapter } from './peft_format';
export { LR_SCHEDULES, makeSchedule, warmupStepsOf } from './schedule';
export type { LrScheduleKind } from './schedule';
export { readCheckpointState, resumeTrainer, saveTrainerCheckpoint } from './checkpoints';
export { attachAdapter, checkMedia, traceGrads } from './run_extras';
export type { LoopState, ParamGroup } from './trainer';
