/**
 * `finetune(...)`: load a checkpoint directory (either family, from config.json's model_type),
 * read the training data, train, and write the fine-tuned checkpoint directory. `loadTrainer`
 * does the first two for callers that drive the steps themselves.
 */
import fs from 'node:fs';
import path from 'node:path';
import { FAMILIES } from '../models/families';
import { familyOf } from '../models/registry';
import { RawSample, readDataFile } from './data';
import { prepareExportDir } from './export';
import { discardTemp } from '../io/files';
import { TrainLoopOptions, TrainResult, Trainer, TrainerOptions } from './trainer';

export interface LoadTrainerOptions extends TrainerOptions {
  /** A data file (JSON list of samples, upstream format) or the samples themselves. */
  data?: string | readonly RawSample[];
  /** Where relative media paths are resolved (default: the data file's directory, else the cwd). */
  dataRoot?: string;
  /** Tokenizer directory (default: the model directory); its files go into the exported checkpoint. */
  tokenizerDir?: string;
  /** `model_max_length` (default 2048). */
  maxLength?: number;
  /** MiniCPM-V: training `max_slice_nums` (default 9). */
  maxSliceNums?: number;
  /** VideoLLaMA 2: frames per video (default: config num_frames). */
  numFrames?: number;
  /** VideoLLaMA 2: the tower directory when `mm_vision_tower` names a hub repo. */
  visionTowerDir?: string;
  /** VideoLLaMA 2: `preprocess_plain` data (pretraining stage). */
  plain?: boolean;
  /** Receives notes (ignored config keys, ...). */
  warn?: (msg: string) => void;
}

export interface FinetuneOptions extends LoadTrainerOptions, TrainLoopOptions {
  /** Checkpoint directory to start from. */
  model: string;
  data: string | readonly RawSample[];
  /** Output checkpoint directory (absent or empty); nothing is written when omitted. */
  out?: string;
}

export interface FinetuneResult extends TrainResult {
  family: string;
  /** Trainable parameters (checkpoint keys) and their scalar count. */
  trained: string[];
  trainableScalars: number;
  /** The written weights file, when `out` was given. */
  saved?: string;
}

/** Loads the model and data of `modelDir` into a Trainer (AdamW state fresh). */
export async function loadTrainer(modelDir: string, opts: LoadTrainerOptions = {}): Promise<Trainer> {
  const row = familyOf(modelDir);
  let samples: readonly RawSample[] | undefined;
  let dataRoot = opts.dataRoot;
  if (typeof opts.data === 'string') {
    samples = readDataFile(opts.data);
    dataRoot ??= path.dirname(path.resolve(opts.data));
  } else if (opts.data) {
    samples = opts.data;
  }
  if (dataRoot !== undefined && !(fs.existsSync(dataRoot) && fs.statSync(dataRoot).isDirectory())) {
    throw new Error(`--data-root: ${dataRoot} is not a directory`);
  }
  dataRoot ??= process.cwd();
  if (opts.tokenizerDir !== undefined && !(fs.existsSync(opts.tokenizerDir) && fs.statSync(opts.tokenizerDir).isDirectory())) {
    throw new Error(`--tokenizer: ${opts.tokenizerDir} is not a directory`);
  }
  // family-specific options: refused for a family that does not read them (before loading anything)
  const specific = { maxSliceNums: opts.maxSliceNums, numFrames: opts.numFrames, visionTowerDir: opts.visionTowerDir, plain: opts.plain };
  const misplaced = Object.entries(specific).filter(([k, v]) => v !== undefined && v !== false && !row.trainOptions.includes(k)).map(([k]) => k);
  if (misplaced.length) {
    const owners = [...new Set(misplaced.map((k) => FAMILIES.find((f) => f.trainOptions.includes(k))?.title ?? 'no family\'s'))];
    throw new Error(`${misplaced.join(', ')} (${owners.join(' / ')} options; this is a ${row.title} checkpoint)`);
  }
  const fam = await row.loadTrainer(modelDir, { samples, dataRoot, maxLength: opts.maxLength, tokenizerDir: opts.tokenizerDir, warn: opts.warn, ...specific });
  try {
    return new Trainer(fam, opts);
  } catch (e) {
    fam.dispose();
    throw e;
  }
}

/** Trains `opts.model` on `opts.data` and writes `opts.out`. The model is freed at the end. */
export async function finetune(opts: FinetuneOptions): Promise<FinetuneResult> {
  // Fail before training, not after: check --out and create its staging directory now.
  const inputDirs = [opts.model, ...(opts.tokenizerDir ? [opts.tokenizerDir] : [])];
  const staging = opts.out ? prepareExportDir(opts.out, inputDirs) : undefined;
  let trainer: Trainer;
  try {
    trainer = await loadTrainer(opts.model, opts);
  } catch (e) {
    if (staging) discardTemp(staging);
    throw e;
  }
  try {
    const r = await trainer.train(opts);
    const result: FinetuneResult = {
      ...r, family: trainer.family.family, trained: trainer.params.map((p) => p.key), trainableScalars: trainer.numTrainable,
    };
    if (opts.out) {
      const log = {
        base_model: path.resolve(opts.model), tune: trainer.tune, steps: r.steps, epochs: r.epochs, losses: r.losses,
        optimizer: { name: 'adamw_torch', lr: trainer.optimizer.lr, betas: trainer.optimizer.betas, eps: trainer.optimizer.eps, weight_decay: trainer.optimizer.weightDecay },
        gradient_accumulation_steps: trainer.gradAccumSteps, max_grad_norm: trainer.maxGradNorm, batch_size: opts.batchSize ?? 1, seed: opts.seed ?? 42,
      };
      result.saved = trainer.save(opts.out, { 'finetune_log.json': JSON.stringify(log, null, 1) + '\n' }, staging);
    }
    return result;
  } catch (e) {
    if (staging) discardTemp(staging);
    throw e;
  } finally {
    trainer.dispose();
  }
}
