/**
 * `vlm merge --model BASE --adapter DIR --out OUT [--quantize Q]`
 * Folds a peft LoRA adapter into its base model (W + alpha/r · B·A; `modules_to_save` weights
 * replace the base's) and writes a checkpoint directory in the base's format (HF safetensors, the
 * base's keys, configs and tokenizer copied), loadable by `vlm chat --model OUT` and upstream.
 * With `--quantize Q` the merged weights are then converted as `vlm convert --quantize Q` does
 * (one GGUF, `model.gguf`); the float32 merge lives in a temporary directory meanwhile.
 */
import path from 'node:path';
import { discardTemp, makeTempDirNear } from '../io/files';
import { familyOf } from '../models/registry';
import { checkOutDir, exportCheckpoint } from '../training/export';
import { loadAdapter } from '../training/peft_format';
import { GGUF_MODEL_FILE } from '../weights/checkpoint';
import { QuantizeChoice } from '../weights/native_plan';
import { CONVERT_CHOICES, convertCheckpoint } from './convert';
import { Command, UsageError, requireStr, str } from './cli';

/** Merges `adapter` into `model` and writes `out` (converted to `quantize` when given); returns the weights file. */
export async function mergeAdapter(model: string, adapter: string, out: string, opts: { visionTowerDir?: string; quantize?: QuantizeChoice } = {}): Promise<string> {
  if (opts.quantize) {
    checkOutDir(out, [model, adapter]);
    const tmp = makeTempDirNear(path.resolve(out));
    try {
      const merged = path.join(tmp, 'merged');
      await mergeAdapter(model, adapter, merged, { visionTowerDir: opts.visionTowerDir });
      await convertCheckpoint({ model: merged, out, quantize: opts.quantize, quiet: true });
      return path.join(out, GGUF_MODEL_FILE);
    } finally {
      discardTemp(tmp);
    }
  }
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
