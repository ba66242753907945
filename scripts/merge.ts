/**
 * `vlm merge --model BASE --adapter DIR --out OUT`
 * Folds a peft LoRA adapter into its base model (W + alpha/r · B·A; `modules_to_save` weights
 * replace the base's) and writes a checkpoint directory in the base's format (HF safetensors, the
 * base's keys, configs and tokenizer copied), loadable by `vlm chat --model OUT` and upstream.
 */
import path from 'node:path';
import { familyOf } from '../models/registry';
import { exportCheckpoint } from '../training/export';
import { loadAdapter } from '../training/peft_format';
import { Command, UsageError, flag, requireStr, str } from './cli';

/** Merges `adapter` into `model` and writes `out`; returns the weights file. */
export async function mergeAdapter(model: string, adapter: string, out: string, opts: { visionTowerDir?: string } = {}): Promise<string> {
  const row = familyOf(model);
  const quiet = () => undefined;
  if (opts.visionTowerDir && !row.trainOptions.includes('visionTowerDir')) throw new UsageError(`--vision-tower: not an option of ${row.title} checkpoints`);
  const fam = await row.loadTrainer(model, { dataRoot: '.', warn: quiet, ...(opts.visionTowerDir ? { visionTowerDir: opts.visionTowerDir } : {}) });
  try {
    const lora = loadAdapter(adapter, fam.model, fam.keymap, row.loraPreset().exclude);
    lora.merge();
    const o = fam.exportOptions();
    const file = exportCheckpoint(fam.model, fam.keymap, fam.dir, out, {
      ...o, metadata: { 'tfjs-vlm': 'merge', adapter: path.resolve(adapter), r: String(lora.config.r), lora_alpha: String(lora.config.alpha) },
    });
    lora.dispose();
    return file;
  } finally {
    fam.dispose();
  }
}

export const command: Command = {
  name: 'merge',
  summary: 'Fold a LoRA adapter (peft format) into its base model and write a merged checkpoint directory.',
  usage: '--model BASE --adapter DIR --out OUT [--vision-tower DIR]',
  options: {
    model: { type: 'string', arg: 'DIR', help: 'the base checkpoint directory the adapter was trained on' },
    adapter: { type: 'string', arg: 'DIR', help: 'adapter directory (adapter_config.json + adapter_model.safetensors)' },
    out: { type: 'string', arg: 'DIR', help: 'output checkpoint directory (must not exist or be empty)' },
    'vision-tower': { type: 'string', arg: 'DIR', help: 'VideoLLaMA 2: local directory of the vision tower named by mm_vision_tower' },
    quantize: { type: 'boolean', help: 'not yet supported (merged weights are written as float32)' },
  },
  async run(opts) {
    if (flag(opts, 'quantize')) throw new UsageError('--quantize is not yet supported by vlm merge: the merged checkpoint is written as float32 safetensors');
    const file = await mergeAdapter(requireStr(opts, 'model'), requireStr(opts, 'adapter'), requireStr(opts, 'out'), { visionTowerDir: str(opts, 'vision-tower') });
    process.stdout.write(`wrote ${file}\n`);
    return 0;
  },
};
