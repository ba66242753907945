/**
 * Training checkpoints (`--save-steps N` → `OUT/checkpoint-N/`) and resuming from them
 * (`--resume OUT/checkpoint-N`), bit-identically:
 *
 *   trainer_state.json          global step, epoch, this epoch's sample order, seed, shuffle, batch
 *                               size, total steps, the run's fingerprint (family, model type, LoRA
 *                               config, trainable keys and shapes, optimizer groups)
 *   trainer_state.safetensors   every trainable variable and its AdamW moments, raw (memory layout,
 *                               F32: exact), and each group's step
 *   adapter_config.json +       with LoRA, the adapter at that step in peft's format (loadable on
 *   adapter_model.safetensors   its own)
 *
 * The data order is a function of (seed, epoch) and is checked on resume; the LoRA dropout RNG is
 * a function of (seed, step, micro-batch, call), so nothing else needs saving.
 */
import fs from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { Checkpoint } from '../weights/checkpoint';
import { WriteTensor, writeSafetensors } from '../weights/safetensors';
import { saveAdapter } from './peft_format';
import { LoopState, Trainer } from './trainer';

export const STATE_JSON = 'trainer_state.json';
export const STATE_TENSORS = 'trainer_state.safetensors';

/** What must agree between a checkpoint and the run that resumes it. */
export function fingerprint(trainer: Trainer): Record<string, unknown> {
  return {
    family: trainer.family.family,
    lora: trainer.lora ? { ...trainer.lora.config, targetModules: trainer.lora.config.targetModules } : null,
    trainable: trainer.params.map((p) => `${p.key}[${p.param.shape.join(',')}]`),
    groups: trainer.groups.map((g) => ({ name: g.name, lr: g.baseLr, weight_decay: g.optimizer.weightDecay, betas: g.optimizer.betas, eps: g.optimizer.eps, vars: g.vars.length })),
    grad_accum: trainer.gradAccumSteps,
  };
}

/** Writes `dir` (a new directory) with the trainer's state at the current step. */
export function saveTrainerCheckpoint(trainer: Trainer, dir: string, loop: LoopState, opts: { baseModel: string }): void {
  if (fs.existsSync(dir) && fs.readdirSync(dir).length) throw new Error(`checkpoint directory ${dir} exists and is not empty`);
  fs.mkdirSync(dir, { recursive: true });
  const tensors: Record<string, WriteTensor> = {};
  trainer.variables.forEach((v, i) => {
    tensors[`var.${i}`] = { dtype: 'F32', shape: v.shape, data: v.dataSync() as Float32Array };
  });
  trainer.groups.forEach((g, gi) => {
    const st = g.optimizer.state();
    tensors[`group.${gi}.step`] = { dtype: 'I64', shape: [], data: [st.step] };
    if (st.m && st.v) {
      st.m.forEach((m, k) => { tensors[`group.${gi}.exp_avg.${k}`] = { dtype: 'F32', shape: m.shape, data: m.dataSync() as Float32Array }; });
      st.v.forEach((v, k) => { tensors[`group.${gi}.exp_avg_sq.${k}`] = { dtype: 'F32', shape: v.shape, data: v.dataSync() as Float32Array }; });
    }
  });
  writeSafetensors(path.join(dir, STATE_TENSORS), tensors, { format: 'tfjs-vlm-trainer-state' });
  const state = {
    global_step: trainer.stepCount, epoch: loop.epoch, seed: loop.seed, shuffle: loop.shuffle, batch_size: loop.batchSize,
    max_steps: loop.totalSteps, data_order: loop.order, base_model: path.resolve(opts.baseModel), fingerprint: fingerprint(trainer),
  };
  fs.writeFileSync(path.join(dir, STATE_JSON), JSON.stringify(state, null, 1) + '\n');
  if (trainer.lora) {
    const full = trainer.params.slice(trainer.lora.entries.length * 2);
    saveAdapter(dir, trainer.lora, full, { baseModel: path.resolve(opts.baseModel), keymap: trainer.family.keymap, tune: trainer.tune });
  }
}

function diffKeys(a: unknown, b: unknown, at = ''): string[] {
  if (JSON.stringify(a) === JSON.stringify(b)) return [];
  if (a && b && typeof a === 'object' && typeof b === 'object' && !Array.isArray(a) && !Array.isArray(b)) {
    const keys = [...new Set([...Object.keys(a), ...Object.keys(b)])];
    return keys.flatMap((k) => diffKeys((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k], at ? `${at}.${k}` : k));
  }
  const show = (x: unknown) => { const s = JSON.stringify(x) ?? 'undefined'; return s.length > 80 ? `${s.slice(0, 77)}...` : s; };
  return [`${at}: checkpoint ${show(a)}, now ${show(b)}`];
}

/** The loop state a checkpoint was saved with (for checks before training). */
export function readCheckpointState(dir: string): { global_step: number; seed: number; shuffle: boolean; batch_size: number; data_order: number[]; epoch: number; fingerprint: Record<string, unknown> } {
  const file = path.join(dir, STATE_JSON);
  if (!fs.existsSync(file)) throw new Error(`--resume: ${dir} is not a training checkpoint (no ${STATE_JSON})`);
  return JSON.parse(fs.readFileSync(file, 'utf8'));
}

/**
 * Restores a trainer built with the same options from `dir`: trainable values, moments and steps.
 * A checkpoint of another model or configuration is an error naming what differs.
 */
export function resumeTrainer(trainer: Trainer, dir: string): { step: number } {
  const st = readCheckpointState(dir);
  const diffs = diffKeys(st.fingerprint, fingerprint(trainer));
  if (diffs.length) {
    throw new Error(`--resume ${dir}: the checkpoint is of another model or training configuration: ${diffs.slice(0, 4).join('; ')}${diffs.length > 4 ? '; …' : ''}`);
  }
  const ck = Checkpoint.open(path.join(dir, STATE_TENSORS));
  try {
    const vars = trainer.variables;
    vars.forEach((v, i) => {
      const t = ck.read(`var.${i}`);
      v.assign(tf.tensor(Float32Array.from(t.data as ArrayLike<number>), v.shape, 'float32'));
    });
    trainer.groups.forEach((g, gi) => {
      const step = Number((ck.read(`group.${gi}.step`).data as ArrayLike<number | bigint>)[0]);
      const has = ck.has(`group.${gi}.exp_avg.0`);
      const read = (k: string, like: tf.Variable) => tf.tensor(Float32Array.from(ck.read(k).data as ArrayLike<number>), like.shape, 'float32');
      const pv = g.vars.map((i) => vars[i]);
      g.optimizer.loadState(step, has ? pv.map((v, k) => read(`group.${gi}.exp_avg.${k}`, v)) : null, has ? pv.map((v, k) => read(`group.${gi}.exp_avg_sq.${k}`, v)) : null);
    });
  } finally {
    ck.close();
  }
  trainer.stepCount = st.global_step;
  return { step: st.global_step };
}
