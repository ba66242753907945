/**
 * Strict, by-name weight loading (nanoGPT `from_pretrained`, mlx `load_weights(strict=True)`):
 * every parameter the model expects must be present with the right shape, and every checkpoint key
 * must be used or explicitly ignored by the key map. All problems are reported at once, each with
 * the shard, the key and both shapes. Nothing is assigned unless the whole check passes.
 *
 * Tensors are read one at a time (row-chunked for huge ones), converted to float32, laid out per
 * the parameter's layout on the host, and uploaded; the wasm byte budget is checked first.
 */
import * as tf from '@tensorflow/tfjs';
import { assertFitsBackend, weightHeapFactor } from '../layers/memory';
import { backendContext } from '../layers/backend';
import { BackendContext, chunkRows, toMemoryLayout } from '../layers/layout';
import { Module, Param } from '../layers/module';
import { releaseFreedNativeMemory } from '../layers/native_weight';
import { ParamStorage, TensorMatmulOptions, tensorMatmulOptions } from '../layers/storage';
import { Checkpoint } from './checkpoint';
import { HostTensor, TensorEntry } from './safetensors';
import { KeyMap, toCheckpointKey, toModuleKey } from './keymap';

export class WeightLoadError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'WeightLoadError';
  }
}

/** One source of weights: a checkpoint and the map from its keys to module keys. */
export interface WeightSource {
  checkpoint: Checkpoint;
  keymap: KeyMap;
  /** Only module keys starting with one of these are taken from this source (default: all). */
  only?: string[];
}

/** The unloaded module tree of a checkpoint directory and the weight sources its load reads (`vlm convert`). */
export interface FamilyWeights {
  /** Built from the config without allocating weights (dispose when done). */
  module: Module;
  /** As the load reads them (close their checkpoints when done). */
  sources: WeightSource[];
  /** config.json's `model_type`. */
  modelType: string;
  /** Module-key prefixes of the vision encoder and connector (f16 under q8_0/q4_0: native_plan.ts). */
  mmproj?: readonly string[];
}

export interface LoadReport {
  loaded: number;
  ignored: string[];
  /** float32 bytes on the tfjs backend. */
  bytes: number;
  /** Bytes held natively (outside the tfjs backend). */
  nativeBytes: number;
}

const shapeStr = (s: number[]) => `[${s.join(', ')}]`;

export { permuteHost, toMemoryLayout, toCheckpointLayout, chunkRows } from '../layers/layout';

/** A native storage decided at load for one parameter (see layers/native_storage.ts). */
export interface PlannedStorage {
  /** Bytes outside the tfjs backend. */
  bytes: number;
  /** Reads or maps the values (called only once the whole load has been checked). */
  load(): ParamStorage;
}

/** Chooses, per parameter, a storage other than float32 tfjs tensors (null: float32 tfjs). */
export interface StoragePlanner {
  plan(moduleKey: string, param: Param, entry: TensorEntry): PlannedStorage | null;
  /** Refuses up front (with the numbers) a load that needs more memory than the machine has. */
  check?(nativeBytes: number, backendBytes: number): void;
}

export interface LoadWeightsOptions {
  what?: string;
  /** The backend the weights are laid out for (default: the initialised backend's context). */
  ctx?: BackendContext;
  /** Where large matrices go (default: float32 tfjs tensors). */
  storage?: StoragePlanner | null;
}

interface Planned { moduleKey: string; param: Param; source: WeightSource; ckptKey: string }

/**
 * Checks and loads every parameter of `module` from `sources`. Throws a WeightLoadError listing
 * every missing, unexpected and wrong-shape key (with shard and shapes) before assigning anything.
 */
export function loadWeights(module: Module, sources: WeightSource[], opts: LoadWeightsOptions = {}): LoadReport {
  const what = opts.what ?? ((module.constructor as { className?: string }).className ?? module.name);
  const expected = new Map<string, Param>();
  for (const [k, p] of module.namedParams()) if (!p.tiedTo) expected.set(k, p);

  const planned = new Map<string, Planned>();
  const unexpected: string[] = [];
  const shapeErrors: string[] = [];
  const dtypeErrors: string[] = [];
  const ignored: string[] = [];
  const seenBad = new Set<string>(); // present but unusable: reported as such, not also as missing
  for (const source of sources) {
    const ck = source.checkpoint;
    for (const ckptKey of ck.keys()) {
      const mk = toModuleKey(source.keymap, ckptKey);
      if (mk === null) {
        ignored.push(ckptKey);
        continue;
      }
      if (source.only && !source.only.some((p) => mk.startsWith(p))) continue;
      const param = expected.get(mk);
      const shard = ck.shardOf(ckptKey);
      if (!param) {
        unexpected.push(`  unexpected: '${ckptKey}' in ${shard} (no parameter '${mk}' in ${what})`);
        continue;
      }
      const e = ck.entry(ckptKey);
      if (e.shape.length !== param.shape.length || e.shape.some((d, i) => d !== param.shape[i])) {
        shapeErrors.push(`  wrong shape: '${ckptKey}' in ${shard} is ${shapeStr(e.shape)}, ${what} expects ${shapeStr(param.shape)} for '${mk}'`);
        seenBad.add(mk);
        continue;
      }
      if (!['F32', 'F16', 'BF16', 'F64', 'Q8_0', 'Q4_0'].includes(e.dtype)) {
        dtypeErrors.push(`  wrong dtype: '${ckptKey}' in ${shard} is ${e.dtype}, a float parameter was expected`);
        seenBad.add(mk);
        continue;
      }
      if (planned.has(mk)) {
        unexpected.push(`  duplicate: '${mk}' is provided by both ${planned.get(mk)!.source.checkpoint.shardOf(planned.get(mk)!.ckptKey)} and ${shard}`);
        continue;
      }
      planned.set(mk, { moduleKey: mk, param, source, ckptKey });
    }
  }
  const missing: string[] = [];
  for (const [k, p] of expected) {
    if (planned.has(k) || seenBad.has(k)) continue;
    const srcs = sources.filter((s) => !s.only || s.only.some((x) => k.startsWith(x)));
    const ckptNames = srcs.map((s) => `'${toCheckpointKey(s.keymap, k)}' in ${s.checkpoint.source}`).join(' or ');
    missing.push(`  missing: ${ckptNames || `'${k}'`} (shape ${shapeStr(p.shape)})`);
  }
  const problems = [...missing, ...unexpected, ...shapeErrors, ...dtypeErrors];
  if (problems.length) {
    const head = problems.slice(0, 40);
    if (problems.length > 40) head.push(`  ... and ${problems.length - 40} more`);
    throw new WeightLoadError(`cannot load ${what}: ${missing.length} missing, ${unexpected.length} unexpected, ` +
      `${shapeErrors.length} wrong-shape, ${dtypeErrors.length} wrong-dtype tensor(s):\n${head.join('\n')}`);
  }

  // Storage plan and budget check (wasm heap) before anything is uploaded. Stock wasm matmul keeps
  // a packed copy of each right-operand float32 weight (chunked vocab matrices are used as the
  // left operand or gathered, see layers/storage.ts, and cost their size only).
  const ctx = opts.ctx ?? backendContext();
  const factor = weightHeapFactor(ctx);
  let bytes = 0, largest = 0, nativeBytes = 0;
  const natives = new Map<string, PlannedStorage>();
  for (const [k, p] of expected) {
    p.chooseLayout(ctx);
    const pl = planned.get(k);
    const ns = pl && opts.storage ? opts.storage.plan(k, p, pl.source.checkpoint.entry(pl.ckptKey)) : null;
    if (ns) {
      natives.set(k, ns);
      nativeBytes += ns.bytes;
      continue;
    }
    const n = p.shape.reduce((a, b) => a * b, 1) * 4;
    bytes += p.shape.length >= 2 && !p.maxChunkBytes ? n * factor : n;
    const rows = chunkRows(p.shape, p.maxChunkBytes);
    const rowBytes = n / (p.shape[0] || 1);
    largest = Math.max(largest, ...rows.map(([s, e]) => (e - s) * rowBytes));
  }
  opts.storage?.check?.(nativeBytes, bytes);
  assertFitsBackend(bytes, `loading ${what} (${expected.size - natives.size} float32 tensors${factor > 1 ? ', matrices ×2 for the stock wasm matmul\'s packed weight copies' : ''})`, largest);

  const matmulOpts = tensorMatmulOptions(ctx);
  for (const [k, pl] of planned) {
    const ns = natives.get(k);
    if (ns) pl.param.setStorage(ns.load());
    else loadParam(pl, matmulOpts);
  }
  if (natives.size) releaseFreedNativeMemory(); // conversion scratch left in malloc's arenas
  return { loaded: planned.size, ignored, bytes, nativeBytes };
}

function loadParam({ param, source, ckptKey }: Planned, matmulOpts: TensorMatmulOptions): void {
  const ck = source.checkpoint;
  const ranges = chunkRows(param.shape, param.maxChunkBytes);
  const tensors: tf.Tensor[] = [];
  try {
    for (const [s, e] of ranges) {
      const host: HostTensor = ranges.length === 1 ? ck.read(ckptKey) : ck.readRows(ckptKey, s, e);
      const shape = ranges.length === 1 ? param.shape : [e - s, ...param.shape.slice(1)];
      tensors.push(toMemoryLayout(host.data as Float32Array, shape, param.layout));
    }
  } catch (err) {
    tf.dispose(tensors);
    throw err;
  }
  param.set(tensors, ranges.map(([s]) => s), matmulOpts);
}

/** Reads a parameter back in checkpoint layout, as float32 (export, trace, tests). */
export function readParam(param: Param): { data: Float32Array; shape: number[] } {
  return { data: param.storage.toFloat32(), shape: param.shape };
}
