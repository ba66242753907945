/**
 * LoRA adapters in huggingface/peft's on-disk format, so upstream's PyTorch code loads them with
 * `PeftModel.from_pretrained(base, DIR)`:
 *
 *   adapter_config.json        LoraConfig fields (peft_type "LORA", r, lora_alpha, lora_dropout,
 *                              target_modules, use_rslora, bias "none", modules_to_save,
 *                              base_model_name_or_path, task_type "CAUSAL_LM", fan_in_fan_out false,
 *                              init_lora_weights true, …)
 *   adapter_model.safetensors  `base_model.model.<module>.lora_A.weight` [r, in] and `.lora_B.weight`
 *                              [out, r] (peft `get_peft_model_state_dict`: the adapter name removed),
 *                              and for `modules_to_save` parts `base_model.model.<checkpoint key>`
 *                              (peft drops `modules_to_save.default` from the wrapper's keys), F32.
 *
 * `<module>` is the torch module name (the base checkpoint key without `.weight`).
 */
import fs from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { Module, Param } from '../layers/module';
import { Checkpoint } from '../weights/checkpoint';
import { KeyMap, toCheckpointKey, toModuleKey } from '../weights/keymap';
import { readParam, toMemoryLayout } from '../weights/load';
import { WriteTensor, writeSafetensors } from '../weights/safetensors';
import { LoraExclude, LoraModel, TargetModules } from './lora';
import { TrainableParam } from './params';

export const ADAPTER_CONFIG = 'adapter_config.json';
export const ADAPTER_WEIGHTS = 'adapter_model.safetensors';
/** peft's prefix of every adapter tensor name. */
export const PEFT_PREFIX = 'base_model.model.';
const PREFIX = PEFT_PREFIX;

/** The torch module names of the `tune` prefixes (peft `modules_to_save` entries). */
export function modulesToSave(keymap: KeyMap, tune: readonly string[]): string[] {
  return tune.map((t) => {
    const probe = `${t.endsWith('.') ? t.slice(0, -1) : t}.__probe__`;
    return toCheckpointKey(keymap, probe).slice(0, -'.__probe__'.length);
  });
}

/** peft LoraConfig as JSON. */
export function adapterConfigJson(lora: LoraModel, baseModel: string, saveModules: string[] | null): Record<string, unknown> {
  const c = lora.config;
  return {
    alpha_pattern: {},
    auto_mapping: null,
    base_model_name_or_path: baseModel,
    bias: 'none',
    fan_in_fan_out: false,
    inference_mode: true,
    init_lora_weights: true,
    layer_replication: null,
    layers_pattern: null,
    layers_to_transform: null,
    loftq_config: {},
    lora_alpha: c.alpha,
    lora_dropout: c.dropout,
    megatron_config: null,
    megatron_core: 'megatron.core',
    modules_to_save: saveModules && saveModules.length ? saveModules : null,
    peft_type: 'LORA',
    r: c.r,
    rank_pattern: {},
    revision: null,
    target_modules: typeof c.targetModules === 'string' ? c.targetModules : [...c.targetModules],
    task_type: 'CAUSAL_LM',
    use_dora: false,
    use_rslora: c.useRslora,
  };
}

/** The adapter tensors (and fully trained parts) under peft keys. */
export function adapterTensors(lora: LoraModel, full: readonly TrainableParam[]): Record<string, WriteTensor> {
  const out: Record<string, WriteTensor> = {};
  for (const p of lora.trainables()) {
    const { data, shape } = readParam(p.param);
    out[p.key] = { dtype: 'F32', shape, data };
  }
  for (const p of full) {
    const { data, shape } = readParam(p.param);
    out[PREFIX + p.key] = { dtype: 'F32', shape, data };
  }
  return out;
}

/** Writes `dir/adapter_config.json` and `dir/adapter_model.safetensors` (dir is created). */
export function saveAdapter(dir: string, lora: LoraModel, full: readonly TrainableParam[], opts: { baseModel: string; keymap: KeyMap; tune: readonly string[]; metadata?: Record<string, string> }): string {
  fs.mkdirSync(dir, { recursive: true });
  const cfg = adapterConfigJson(lora, opts.baseModel, opts.tune.length ? modulesToSave(opts.keymap, opts.tune) : null);
  fs.writeFileSync(path.join(dir, ADAPTER_CONFIG), JSON.stringify(cfg, null, 2) + '\n');
  const file = path.join(dir, ADAPTER_WEIGHTS);
  writeSafetensors(file, adapterTensors(lora, full), { format: 'pt', ...opts.metadata });
  return file;
}

export interface AdapterConfig {
  r: number;
  alpha: number;
  dropout: number;
  targetModules: TargetModules;
  useRslora: boolean;
  modulesToSave: string[];
  baseModel: string | null;
}

/** Reads and checks `dir/adapter_config.json`. */
export function readAdapterConfig(dir: string): AdapterConfig {
  const file = path.join(dir, ADAPTER_CONFIG);
  if (!fs.existsSync(file)) throw new Error(`--adapter: ${dir} has no ${ADAPTER_CONFIG} (expected a peft LoRA adapter directory)`);
  let j: Record<string, unknown>;
  try {
    j = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    throw new Error(`${file}: invalid JSON (${(e as Error).message})`);
  }
  if (j.peft_type !== 'LORA') throw new Error(`${file}: peft_type ${JSON.stringify(j.peft_type)} is not supported (only "LORA")`);
  const r = j.r as number;
  if (!(Number.isInteger(r) && r > 0)) throw new Error(`${file}: r must be an integer > 0, got ${JSON.stringify(j.r)}`);
  for (const k of ['rank_pattern', 'alpha_pattern'] as const) {
    if (j[k] && typeof j[k] === 'object' && Object.keys(j[k] as object).length) throw new Error(`${file}: ${k} is not supported`);
  }
  if (j.use_dora) throw new Error(`${file}: DoRA adapters (use_dora) are not supported`);
  if (j.fan_in_fan_out) throw new Error(`${file}: fan_in_fan_out adapters are not supported`);
  if (j.bias && j.bias !== 'none') throw new Error(`${file}: bias ${JSON.stringify(j.bias)} is not supported (only "none")`);
  const t = j.target_modules;
  if (!(typeof t === 'string' || (Array.isArray(t) && t.every((x) => typeof x === 'string')))) throw new Error(`${file}: target_modules must be a string or a list of strings`);
  return {
    r, alpha: (j.lora_alpha as number) ?? 8, dropout: (j.lora_dropout as number) ?? 0, targetModules: t as TargetModules,
    useRslora: !!j.use_rslora, modulesToSave: Array.isArray(j.modules_to_save) ? (j.modules_to_save as string[]) : [],
    baseModel: typeof j.base_model_name_or_path === 'string' ? j.base_model_name_or_path : null,
  };
}

/** The module names an adapter's lora_A / lora_B tensors name (peft prefix and suffix removed). */
export function adapterModules(keys: readonly string[]): string[] {
  return [...new Set(keys.filter((k) => /\.lora_[AB]\.weight$/.test(k)).map((k) => k.replace(/\.lora_[AB]\.weight$/, '').slice(PREFIX.length)))];
}

/**
 * Throws, listing a few, when the adapter's modules differ from `selected` (the model's Linear
 * layers its target_modules select): modules the model lacks, or selected ones without A and B.
 */
export function checkAdapterModules(dir: string, keys: readonly string[], selected: readonly string[], cfg: AdapterConfig): void {
  const have = new Set(selected);
  const unknown = adapterModules(keys).filter((m) => !have.has(m));
  const missing = selected.filter((m) => !keys.includes(`${PREFIX}${m}.lora_A.weight`) || !keys.includes(`${PREFIX}${m}.lora_B.weight`));
  if (!unknown.length && !missing.length) return;
  const list = (xs: string[]) => `${xs.slice(0, 4).join(', ')}${xs.length > 4 ? `, … (${xs.length} in all)` : ''}`;
  throw new Error(`--adapter ${dir} does not match this base model's module names` +
    (unknown.length ? `; adapter modules not in the model: ${list(unknown)}` : '') +
    (missing.length ? `; model modules its target_modules select but the adapter lacks: ${list(missing)}` : '') +
    ` (base_model_name_or_path: ${cfg.baseModel ?? '?'})`);
}

/**
 * Attaches the adapter in `dir` to `model` (unmerged) and loads the `modules_to_save` weights into
 * the model. Module names that do not match, missing or extra tensors and shape mismatches are
 * errors that list a few.
 */
export function loadAdapter(dir: string, model: Module, keymap: KeyMap, exclude: LoraExclude = null): LoraModel {
  const cfg = readAdapterConfig(dir);
  const file = path.join(dir, ADAPTER_WEIGHTS);
  if (!fs.existsSync(file)) throw new Error(`--adapter: ${dir} has no ${ADAPTER_WEIGHTS}`);
  const ck = Checkpoint.open(file);
  let lora: LoraModel | null = null;
  try {
    const keys = ck.keys();
    const wantModules = adapterModules(keys);
    try {
      lora = new LoraModel(model, keymap, exclude, { r: cfg.r, alpha: cfg.alpha, dropout: cfg.dropout, targetModules: cfg.targetModules, useRslora: cfg.useRslora, initLoraWeights: false });
    } catch (e) {
      throw new Error(`--adapter ${dir} does not fit this model: ${(e as Error).message}` + (wantModules.length ? ` (the adapter's modules: ${wantModules.slice(0, 4).join(', ')}${wantModules.length > 4 ? ', …' : ''})` : ''));
    }
    checkAdapterModules(dir, keys, lora.entries.map((e) => e.name), cfg);
    for (const e of lora.entries) {
      for (const [which, p] of [['A', e.A], ['B', e.B]] as const) {
        const t = ck.read(`${PREFIX}${e.name}.lora_${which}.weight`);
        if (t.shape.length !== 2 || t.shape[0] !== p.shape[0] || t.shape[1] !== p.shape[1]) {
          throw new Error(`--adapter ${dir}: ${e.name}.lora_${which} is [${t.shape}], this base model needs [${p.shape}] (another base model or rank?)`);
        }
        p.value.assign(tf.tensor2d(Float32Array.from(t.data as ArrayLike<number>), p.shape as [number, number]));
      }
    }
    // modules_to_save: full tensors of the base model
    const params = new Map<string, Param>(model.namedParams());
    const others = keys.filter((k) => !/\.lora_[AB]\.weight$/.test(k));
    const bad: string[] = [];
    for (const k of others) {
      const ckKey = k.startsWith(PREFIX) ? k.slice(PREFIX.length) : k;
      const mk = toModuleKey(keymap, ckKey);
      const p = mk === null ? undefined : params.get(mk);
      if (!p || p.tiedTo) { bad.push(k); continue; }
      const t = ck.read(k);
      if (t.shape.length !== p.shape.length || t.shape.some((d, i) => d !== p.shape[i])) throw new Error(`--adapter ${dir}: ${k} is [${t.shape}], the model's ${ckKey} is [${p.shape}]`);
      setParam(p, Float32Array.from(t.data as ArrayLike<number>));
    }
    if (bad.length) throw new Error(`--adapter ${dir}: tensors that name no parameter of this model: ${bad.slice(0, 4).join(', ')}${bad.length > 4 ? ', …' : ''}`);
    return lora;
  } catch (e) {
    lora?.dispose();
    throw e;
  } finally {
    ck.close();
  }
}

/** Writes checkpoint-layout values into a (possibly chunked / transposed) parameter, in place. */
export function setParam(p: Param, data: Float32Array): void {
  const { chunks, starts, layout } = p.tensors;
  const rowLen = p.shape.slice(1).reduce((a, b) => a * b, 1);
  chunks.forEach((c, k) => {
    const rows = k + 1 < starts.length ? starts[k + 1] - starts[k] : p.shape[0] - starts[k];
    const part = data.subarray(starts[k] * rowLen, (starts[k] + rows) * rowLen);
    const t = toMemoryLayout(part, [rows, ...p.shape.slice(1)], layout);
    c.assign(t);
    t.dispose();
  });
}
