/**
 * The random-weight MiniCPM-V 2.6 checkpoint of `vlm make-random --family minicpmv`
 * (weights/random_checkpoint.ts writes it).
 *
 * Facts and where they come from:
 * - config.json, preprocessor_config.json, generation_config.json and model.safetensors.index.json:
 *   the released files of openbmb/MiniCPM-V-2_6 (wusongbai139/AnyCaption snapshot 0d75254), from
 *   test/fixtures/real_configs/minicpmv26 (bundled copy) or ../shared/real_configs/minicpmv26.
 * - Tokenizer: the released Qwen2 BPE + MiniCPM-V added tokens, from test/fixtures/tokenizers/minicpmv26
 *   (vocab.json / merges.txt gzipped there, unpacked here) or ../shared/tokenizers/minicpmv26.
 * - Tensor names and shapes: `new MiniCPMV(parseMiniCPMVConfig(config))` walked with `namedParams()`
 *   and mapped with MINICPMV_KEYMAP, never listed by hand. Without layer or config overrides they
 *   are checked against the released index (789 names) and, in bf16, its `total_size`
 *   (16 198 350 304 bytes), and the shards take the index's assignment (4 files).
 */
import fs from 'node:fs';
import path from 'node:path';
import { readJson } from '../../io/config';
import { RandomCheckpointSpec, RandomSpecOptions, TORCH_DTYPE, findProjectDir, moduleTensors, tokenizerFiles } from '../../weights/random_checkpoint';
import { toCheckpointKey } from '../../weights/keymap';
import { parseMiniCPMVConfig } from './config';
import { MINICPMV_KEYMAP } from './keymap';
import { MiniCPMV } from './modeling';

const CONFIG_DIRS = ['test/fixtures/real_configs/minicpmv26', '../shared/real_configs/minicpmv26'];
const TOKENIZER_DIRS = ['test/fixtures/tokenizers/minicpmv26', '../shared/tokenizers/minicpmv26'];
/** Reads the released file `name` from the first config directory that has it. */
function releasedFile(name: string): string {
  for (const c of CONFIG_DIRS) {
    try {
      const d = findProjectDir([c], '');
      if (fs.existsSync(path.join(d, name))) return path.join(d, name);
    } catch {
      /* next */
    }
  }
  throw new Error(`MiniCPM-V 2.6 ${name}: not found in ${CONFIG_DIRS.join(' or ')} (relative to the repository root)`);
}

export function minicpmvRandomSpec(opts: RandomSpecOptions): RandomCheckpointSpec {
  const cfgFile = releasedFile('config.json');
  const json = readJson(cfgFile) as Record<string, unknown>;
  const released = JSON.stringify(json);
  const vision = { ...(json.vision_config as Record<string, unknown>) };
  if (opts.llmLayers !== undefined) json.num_hidden_layers = opts.llmLayers;
  if (opts.visionLayers !== undefined) vision.num_hidden_layers = opts.visionLayers;
  Object.assign(json, opts.configOverrides?.config ?? {});
  Object.assign(vision, opts.configOverrides?.vision ?? {});
  json.vision_config = vision;
  const unchanged = JSON.stringify(json) === released;
  json.torch_dtype = TORCH_DTYPE[opts.dtype];

  const model = new MiniCPMV(parseMiniCPMVConfig(json, cfgFile));
  const tensors = moduleTensors(model, (k) => toCheckpointKey(MINICPMV_KEYMAP, k));
  model.dispose();

  const notes = [`config, processor, generation config: ${path.dirname(cfgFile)}`];
  let shardOf: Record<string, string> | undefined;
  if (unchanged) {
    const indexFile = releasedFile('model.safetensors.index.json');
    const index = readJson(indexFile) as { metadata: { total_size: number }; weight_map: Record<string, string> };
    const ours = new Set(tensors.map((t) => t.name));
    const theirs = Object.keys(index.weight_map);
    const missing = theirs.filter((k) => !ours.has(k));
    const extra = [...ours].filter((k) => !(k in index.weight_map));
    if (missing.length || extra.length) {
      throw new Error(`MiniCPM-V 2.6: the module tree's tensors differ from ${indexFile}: missing ${missing.slice(0, 5).join(', ')}; extra ${extra.slice(0, 5).join(', ')}`);
    }
    if (opts.dtype === 'bf16') {
      const total = tensors.reduce((s, t) => s + t.shape.reduce((a, b) => a * b, 1) * 2, 0);
      if (total !== index.metadata.total_size) throw new Error(`MiniCPM-V 2.6: ${total} bytes of bf16, the released index says ${index.metadata.total_size}`);
    }
    shardOf = index.weight_map;
    notes.push(`tensor names (${theirs.length}) and shard assignment: the released ${indexFile}${opts.dtype === 'bf16' ? ' (total_size checked)' : ''}`);
  }

  const tokDir = findProjectDir(TOKENIZER_DIRS, 'MiniCPM-V 2.6 tokenizer');
  notes.push(`tokenizer: ${tokDir}`);
  const files: Record<string, string | Uint8Array> = {
    'config.json': JSON.stringify(json, null, 2) + '\n',
    'preprocessor_config.json': fs.readFileSync(releasedFile('preprocessor_config.json')),
    'generation_config.json': fs.readFileSync(releasedFile('generation_config.json')),
    ...tokenizerFiles(tokDir),
  };
  return { title: 'MiniCPM-V 2.6', tensors, files, shardOf, notes };
}
