/**
 * `finetune(...)`: load a checkpoint directory (any family of the family table, from config.json's
 * model_type), read the training data, train (fully or with LoRA adapters), and write the
 * fine-tuned checkpoint directory or the peft adapter. `loadTrainer` does the first two for
 * callers that drive the steps themselves.
 */
import fs from 'node:fs';
import path from 'node:path';
import { discardTemp } from '../io/files';
import { FAMILIES } from '../models/families';
import { familyOf } from '../models/registry';
import { readCheckpointState, resumeTrainer, saveTrainerCheckpoint } from './checkpoints';
import { RawSample, readDataFile } from './data';
import { prepareExportDir } from './export';
import { LoraModel, LoraOptions, loraFromPreset } from './lora';
import { saveAdapter } from './peft_format';
import { checkMedia, traceGrads } from './run_extras';
import { TrainLoopOptions, TrainResult, Trainer, TrainerOptions, epochSeed, seededPermutation } from './trainer';

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
  /** Fill the LoRA options (and tune / connector lr, unless given) from the family's upstream preset. */
  loraPreset?: boolean | string;
  /** LoRA values that override the preset. */
  loraOverrides?: Partial<LoraOptions>;
  /**
   * Storage of the large matrices (weights/native_plan.ts): f32 (default for models that fit the
   * backend; trainable), or stored / f16 / bf16 / q8_0 / q4_0: held natively and frozen — with LoRA
   * adapters on top this is QLoRA-style training.
   */
  quantize?: string;
  /** Drop samples whose media files are missing (with a warning) instead of failing. */
  skipMissingMedia?: boolean;
}

export interface FinetuneOptions extends LoadTrainerOptions, TrainLoopOptions {
  /** Checkpoint directory to start from. */
  model: string;
  data: string | readonly RawSample[];
  /** Output directory (absent or empty, or holding only checkpoint-N directories); nothing is written when omitted. */
  out?: string;
  /** Resume from OUT/checkpoint-N (written by `saveSteps`). */
  resume?: string;
  /** Evaluation data file (same format); loss every `evalSteps`. */
  evalDataFile?: string;
  /** Write the first step's loss and gradients here and stop (nothing is updated or saved). */
  traceGradsFile?: string;
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
  if (samples) samples = checkMedia(samples, dataRoot, !!opts.skipMissingMedia, (m) => process.stderr.write(`warning: ${m}\n`), row.dataImageKey);
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
  // parts trained fully stay float32 tfjs tensors whatever --quantize says (the rest is frozen)
  const presetTune = opts.loraPreset ? row.loraPreset().tune : undefined;
  const keepF32 = opts.tune?.length ? opts.tune : presetTune ?? [];
  const fam = await row.loadTrainer(modelDir, { samples, dataRoot, maxLength: opts.maxLength, tokenizerDir: opts.tokenizerDir, warn: opts.warn, quantize: opts.quantize, keepF32, ...specific });
  try {
    let topts: LoadTrainerOptions = opts;
    if (opts.loraPreset) {
      if (typeof opts.loraPreset === 'string' && opts.loraPreset !== fam.family) throw new Error(`--lora-preset ${opts.loraPreset}: this is a ${fam.family} checkpoint`);
      const p = loraFromPreset(row.loraPreset(), fam.model, fam.keymap, opts.loraOverrides);
      topts = { ...opts, lora: p.lora, tune: opts.tune?.length ? opts.tune : p.tune, connectorLr: opts.connectorLr ?? p.connectorLr };
    }
    // the family's never-adapted modules (VideoLLaMA 2: connector, vision tower)
    if (topts.lora && !(topts.lora instanceof LoraModel) && topts.lora.exclude === undefined) topts = { ...topts, lora: { ...topts.lora, exclude: row.loraPreset().exclude } };
    return new Trainer(fam, topts);
  } catch (e) {
    fam.dispose();
    throw e;
  }
}

/** Trains `opts.model` on `opts.data` and writes `opts.out`. The model is freed at the end. */
export async function finetune(opts: FinetuneOptions): Promise<FinetuneResult> {
  const resumeState = opts.resume ? readCheckpointState(opts.resume) : null;
  if (opts.saveSteps && !opts.out) throw new Error('--save-steps needs --out (checkpoints go to OUT/checkpoint-N)');
  // Fail before training, not after: check --out and create its staging directory now.
  const inputDirs = [opts.model, ...(opts.tokenizerDir ? [opts.tokenizerDir] : [])];
  const staging = opts.out && !opts.traceGradsFile ? prepareExportDir(opts.out, inputDirs, { allowCheckpoints: true }) : undefined;
  let trainer: Trainer;
  try {
    trainer = await loadTrainer(opts.model, opts);
  } catch (e) {
    if (staging) discardTemp(staging);
    throw e;
  }
  try {
    if (opts.traceGradsFile) {
      const t = await traceGrads(trainer, opts.traceGradsFile, opts);
      return { steps: 0, epochs: 0, losses: [t.loss], ms: 0, family: trainer.family.family, trained: t.keys, trainableScalars: trainer.numTrainable, saved: opts.traceGradsFile };
    }
    if (opts.resume && resumeState) {
      resumeTrainer(trainer, opts.resume); // checks the model and configuration first
      const n = trainer.family.data!.length;
      const seed = opts.seed ?? 42, shuffle = opts.shuffle !== false, bs = opts.batchSize ?? 1;
      const want = { seed: resumeState.seed, shuffle: resumeState.shuffle, batch_size: resumeState.batch_size };
      const now = { seed, shuffle, batch_size: bs };
      if (JSON.stringify(want) !== JSON.stringify(now)) throw new Error(`--resume ${opts.resume}: the data order differs (checkpoint ${JSON.stringify(want)}, now ${JSON.stringify(now)})`);
      const order = !shuffle ? Array.from({ length: n }, (_, i) => i) : seededPermutation(n, epochSeed(seed, resumeState.epoch));
      if (JSON.stringify(order) !== JSON.stringify(resumeState.data_order)) throw new Error(`--resume ${opts.resume}: the training data differs from the checkpoint's (${resumeState.data_order.length} samples then, ${n} now)`);
    }
    const evalData = opts.evalDataFile ? trainer.family.datasetFor(readDataFile(opts.evalDataFile)) : null;
    const out = opts.out;
    const r = await trainer.train({
      ...opts, evalData,
      onSave: out ? (step, loop) => {
        saveTrainerCheckpoint(trainer, path.join(out, `checkpoint-${step}`), loop, { baseModel: opts.model });
        opts.onSave?.(step, loop);
      } : undefined,
    });
    const result: FinetuneResult = {
      ...r, family: trainer.family.family, trained: trainer.params.map((p) => p.key), trainableScalars: trainer.numTrainable,
    };
    if (opts.out && trainer.lora) {
      if (staging) discardTemp(staging); // the adapter is written in place, beside checkpoint-N
      fs.mkdirSync(opts.out, { recursive: true });
      const full = trainer.params.slice(trainer.lora.entries.length * 2);
      result.saved = saveAdapter(opts.out, trainer.lora, full, { baseModel: path.resolve(opts.model), keymap: trainer.family.keymap, tune: trainer.tune, metadata: { 'tfjs-vlm': 'finetune-lora', steps: String(trainer.stepCount) } });
      const log = {
        base_model: path.resolve(opts.model), lora: trainer.lora.config, tune: trainer.tune, steps: trainer.stepCount, losses: r.losses,
        groups: trainer.groups.map((g) => ({ name: g.name, lr: g.baseLr, weight_decay: g.optimizer.weightDecay })),
        lr_schedule: opts.lrSchedule ?? 'constant', gradient_accumulation_steps: trainer.gradAccumSteps, max_grad_norm: trainer.maxGradNorm, batch_size: opts.batchSize ?? 1, seed: opts.seed ?? 42,
      };
      fs.writeFileSync(path.join(opts.out, 'finetune_log.json'), JSON.stringify(log, null, 1) + '\n');
    } else if (opts.out) {
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
