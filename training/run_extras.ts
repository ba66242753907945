/**
 * Pieces of `vlm finetune` beside the loop: the media check (`--skip-missing-media`), the eval
 * dataset (`--eval-data`), `--trace-grads` and the LoRA adapter for `vlm chat --adapter`.
 */
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { Module } from '../layers/module';
import { KeyMap } from '../weights/keymap';
import { WriteTensor, writeSafetensors } from '../weights/safetensors';
import { RawSample, sampleName } from './data';
import { LoraExclude, LoraModel } from './lora';
import { loadAdapter } from './peft_format';
import { Trainer, seededPermutation } from './trainer';
import fs from 'node:fs';

/** The media files a sample names, with the label the family's dataset uses in its errors. */
/**
 * The media files a sample names. `imageKey`: the key the family's dataset files a plain-string
 * image under (MiniCPM-V: '<image>'; null: none, the label is just 'image').
 */
export function mediaPaths(s: RawSample, imageKey: string | null = '<image>'): { label: string; path: string }[] {
  const out: { label: string; path: string }[] = [];
  const img = s.image;
  if (typeof img === 'string') out.push({ label: imageKey ? `image '${imageKey}'` : 'image', path: img });
  else if (img && typeof img === 'object' && !Array.isArray(img)) {
    for (const [k, v] of Object.entries(img)) if (typeof v === 'string') out.push({ label: `image '${k}'`, path: v });
  }
  if (typeof s.video === 'string') out.push({ label: 'video', path: s.video });
  return out;
}

/**
 * Samples whose media exist, checked before training. A missing file is an error naming the sample
 * and the path (upstream fails in its dataset's __getitem__), unless `skip`: then the sample is
 * dropped with a warning.
 */
export function checkMedia(samples: readonly RawSample[], dataRoot: string, skip: boolean, warn: (m: string) => void, imageKey: string | null = '<image>'): RawSample[] {
  const keep: RawSample[] = [];
  samples.forEach((s, i) => {
    const missing = mediaPaths(s, imageKey).find(({ path: p }) => { const f = path.isAbsolute(p) ? p : path.join(dataRoot, p); return !(fs.existsSync(f) && fs.statSync(f).isFile()); });
    if (!missing) { keep.push(s); return; }
    const full = path.isAbsolute(missing.path) ? missing.path : path.join(dataRoot, missing.path);
    const msg = `${sampleName(s, i)}, ${missing.label}: media file '${missing.path}' not found (looked for ${full}; relative paths are resolved against the data root ${dataRoot})`;
    if (!skip) throw new Error(`${msg}; pass --skip-missing-media to skip such samples`);
    warn(`${msg}; skipping the sample`);
  });
  if (!keep.length) throw new Error('no training sample has all its media files');
  return keep;
}

/**
 * `--trace-grads FILE`: the first optimizer step's forward and backward (its micro-batches, as
 * `train` would pick them), nothing updated. Writes `loss` and `grad.<key>` (checkpoint key, or
 * peft key for adapters) for every trainable parameter, F32, in the checkpoint layout.
 */
export async function traceGrads(trainer: Trainer, file: string, loop: { batchSize?: number; seed?: number; shuffle?: boolean } = {}): Promise<{ loss: number; keys: string[] }> {
  const data = trainer.family.data;
  if (!data) throw new Error('--trace-grads needs training data');
  const bs = loop.batchSize ?? 1;
  const order = loop.shuffle === false ? Array.from({ length: data.length }, (_, i) => i) : seededPermutation(data.length, loop.seed ?? 42);
  const micro: number[][] = [];
  for (let s = 0; s < order.length && micro.length < trainer.gradAccumSteps; s += bs) micro.push(order.slice(s, s + bs));
  const sums = new Map<string, tf.Tensor>();
  let lossSum = 0;
  for (const idx of micro) {
    const examples = [];
    for (const i of idx) examples.push(await data.example(i));
    const { loss, grads } = trainer.lossAndGrads(trainer.family.collate(examples));
    lossSum += loss;
    for (const [k, g] of grads) {
      const scaled = tf.mul(g, 1 / micro.length);
      g.dispose();
      const prev = sums.get(k);
      if (prev) { sums.set(k, tf.add(prev, scaled)); prev.dispose(); scaled.dispose(); } else sums.set(k, scaled);
    }
  }
  const loss = lossSum / micro.length;
  const out: Record<string, WriteTensor> = { loss: { dtype: 'F32', shape: [], data: [loss] } };
  for (const [k, g] of sums) out[`grad.${k}`] = { dtype: 'F32', shape: g.shape, data: g.dataSync() as Float32Array };
  tf.dispose([...sums.values()]);
  writeSafetensors(file, out, { format: 'pt', 'tfjs-vlm': 'trace-grads', samples: micro.flat().join(',') });
  return { loss, keys: [...sums.keys()] };
}

/** Attaches a peft adapter directory to a loaded chat model (unmerged); freed with the model. */
export function attachAdapter(chat: { model: Module; keymap: KeyMap; dispose(): void }, dir: string, exclude: LoraExclude = null): LoraModel {
  const lora = loadAdapter(dir, chat.model, chat.keymap, exclude);
  const dispose = chat.dispose.bind(chat);
  chat.dispose = () => { lora.dispose(); dispose(); };
  return lora;
}
