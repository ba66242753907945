/**
 * `vlm merge --model BASE --adapter DIR --out OUT [--quantize Q]`
 * Folds a peft LoRA adapter into its base model (W + alpha/r · B·A; `modules_to_save` weights
 * replace the base's) and writes a checkpoint directory in the base's format (HF safetensors, the
 * base's keys, configs and tokenizer copied), loadable by `vlm chat --model OUT` and upstream.
 * Streamed (training/merge.ts): the model is never loaded, so real-size bases merge in bounded
 * memory. With `--quantize Q` the merged checkpoint is then converted as `vlm convert
 * --quantize Q` does (one GGUF, `model.gguf`); the merge lives in a temporary directory meanwhile.
 */
import path from 'node:path';
import { discardTemp, makeTempDirNear } from '../io/files';
import { familyOf } from '../models/registry';
import { checkOutDir } from '../training/export';
import { mergeStreaming } from '../training/merge';
import { readAdapterConfig } from '../training/peft_format';
import { GGUF_MODEL_FILE } from '../weights/checkpoint';
import { QuantizeChoice } from '../weights/native_plan';
import { CONVERT_CHOICES, convertCheckpoint } from './convert';
import { Command, UsageError, requireStr, str } from './cli';

/** Merges `adapter` into `model` and writes `out` (converted to `quantize` when given); returns the weights file. */
export async function mergeAdapter(model: string, adapter: string, out: string, opts: { visionTowerDir?: string; quantize?: QuantizeChoice } = {}): Promise<string> {
  const row = familyOf(model);
  if (opts.visionTowerDir && !row.trainOptions.includes('visionTowerDir')) throw new UsageError(`--vision-tower: not an option of ${row.title} checkpoints`);
  if (opts.quantize) {
    checkOutDir(out, [model, adapter]);
    const tmp = makeTempDirNear(path.resolve(out));
    try {
      const merged = path.join(tmp, 'merged');
      await mergeAdapter(model, adapter, merged, { visionTowerDir: opts.visionTowerDir });
      await convertCheckpoint({ model: merged, out, quantize: opts.quantize, quiet: true, visionTowerDir: opts.visionTowerDir });
      return path.join(out, GGUF_MODEL_FILE);
    } finally {
      discardTemp(tmp);
    }
  }
  const fw = row.weights(model, { visionTowerDir: opts.visionTowerDir, log: () => undefined });
  try {
    const cfg = readAdapterConfig(adapter);
    return mergeStreaming({
      baseDir: model, adapterDir: adapter, outDir: out, module: fw.module, keymap: fw.sources[0].keymap, exclude: row.loraPreset().exclude,
      metadata: { 'tfjs-vlm': 'merge', adapter: path.resolve(adapter), r: String(cfg.r), lora_alpha: String(cfg.alpha) },
    });
  } finally {
    for (const s of fw.sources) s.checkpoint.close();
    fw.module.dispose();
  }
}

export const command: Command = {
  name: 'merge',
  summary: 'Fold a LoRA adapter (peft format) into its base model and write a merged checkpoint directory.',
  usage: '--model BASE --adapter DIR --out OUT [--quantize f16|bf16|q8_0|q4_0|stored] [--vision-tower DIR]',
  options: {
    model: { type: 'string', arg: 'DIR', help: 'the base checkpoint directory the adapter was trained on' },
    adapter: { type: 'string', arg: 'DIR', help: 'adapter directory (adapter_config.json + adapter_model.safetensors)' },
    out: { type: 'string', arg: 'DIR', help: 'output checkpoint directory (must not exist or be empty)' },
    'vision-tower': { type: 'string', arg: 'DIR', help: 'VideoLLaMA 2: local directory of the vision tower named by mm_vision_tower' },
    quantize: { type: 'string', arg: 'Q', help: `write the merged weights converted as vlm convert does: ${CONVERT_CHOICES.join(' | ')} (default: float32 safetensors)` },
  },
  async run(opts) {
    const q = str(opts, 'quantize');
    if (q !== undefined && !(CONVERT_CHOICES as readonly string[]).includes(q)) throw new UsageError(`--quantize: '${q}' is not one of ${CONVERT_CHOICES.join(', ')}`);
    const file = await mergeAdapter(requireStr(opts, 'model'), requireStr(opts, 'adapter'), requireStr(opts, 'out'), {
      visionTowerDir: str(opts, 'vision-tower'), quantize: q as QuantizeChoice | undefined,
    });
    process.stdout.write(`wrote ${file}\n`);
    return 0;
  },
};
