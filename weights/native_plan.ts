/**
 * Which parameters go to native storage at load, and in what format (`--quantize`):
 *
 *   'f32'      every parameter a float32 tfjs tensor (the tiny models; the parity path)
 *   'stored'   large matrices memory-mapped exactly as stored (F32/F16/BF16 safetensors), zero copy
 *   'f16' | 'bf16' | 'q8_0' | 'q4_0'   large matrices converted at load, tensor by tensor, row by row
 *               from the mapped file (never the whole model in float32)
 *
 * "Large matrices" are the parameters that are read only through matmul/gather (every Linear weight,
 * embedding tables, lm_head). What stays float32 tfjs follows llama.cpp's practice: norms, biases,
 * position embeddings, conv/patch-embedding kernels, the resampler's packed q/k/v and query, and
 * anything not 2-D. A q8_0/q4_0 matrix whose row length is not a multiple of 32 (the block size)
 * keeps its stored type.
 */
import os from 'node:os';
import { NativeStorage } from '../layers/native_storage';
import { NativeMapping, NativeType, NativeWeight, loadNativeAddon } from '../layers/native_weight';
import { Param } from '../layers/module';
import { BYTES_PER_ELEMENT, StorageDType } from '../layers/storage';
import { Checkpoint } from './checkpoint';
import { PlannedStorage, StoragePlanner } from './load';
import { TensorEntry } from './safetensors';

export const QUANTIZE_CHOICES = ['f32', 'stored', 'f16', 'bf16', 'q8_0', 'q4_0'] as const;
export type QuantizeChoice = (typeof QUANTIZE_CHOICES)[number];

/** Validates a `--quantize` value (names the argument). */
export function parseQuantize(v: string, argName = '--quantize'): QuantizeChoice {
  if (!(QUANTIZE_CHOICES as readonly string[]).includes(v)) throw new Error(`${argName}: '${v}' is not one of ${QUANTIZE_CHOICES.join(', ')}`);
  return v as QuantizeChoice;
}

const STORED: Partial<Record<string, NativeType>> = { F32: 'f32', F16: 'f16', BF16: 'bf16' };

export interface NativePlanOptions {
  /** Receives the per-group storage report before anything is read. */
  log?: (msg: string) => void;
  /** Bytes the machine can give the model (default: total RAM less 1.5 GB for activations and the runtime). */
  memoryLimit?: number;
}

/** Groups for the report: the first path segment (llm, vpm, resampler, model, vision_tower, mm_projector). */
function group(moduleKey: string): string {
  const parts = moduleKey.split('.');
  return parts[0] === 'model' && parts[1] === 'vision_tower' ? 'model.vision_tower' : parts[0] === 'model' && parts[1] === 'mm_projector' ? 'model.mm_projector' : parts[0];
}

/** A planner that sends large matrices to native storage in `choice` (null for 'f32'). */
export function nativePlanner(choice: QuantizeChoice, ck: Checkpoint[] | Checkpoint, opts: NativePlanOptions = {}): StoragePlanner | null {
  if (choice === 'f32') return null;
  const { addon, reason } = loadNativeAddon();
  if (!addon) {
    throw new Error(`--quantize ${choice} needs the native addon (native/tfjs-blas), which is not available: ${reason}. ` +
      'Install a C compiler (apt-get install build-essential) and reinstall (npm install), or load with --quantize f32.');
  }
  const checkpoints = Array.isArray(ck) ? ck : [ck];
  const maps = new Map<string, NativeMapping>();
  const mapOf = (file: string) => {
    let m = maps.get(file);
    if (!m) maps.set(file, (m = NativeWeight.mapFile(file)));
    return m;
  };
  const fileOf = (entry: TensorEntry, key: string): string => {
    for (const c of checkpoints) if (c.has(key) && c.entry(key) === entry) return c.shardOf(key);
    for (const c of checkpoints) if (c.has(key)) return c.shardOf(key);
    throw new Error(`no shard holds '${key}'`);
  };
  const groups = new Map<string, { n: number; bytes: number; types: Set<string> }>();
  const note = (g: string, bytes: number, type: string) => {
    const e = groups.get(g) ?? { n: 0, bytes: 0, types: new Set<string>() };
    e.n++;
    e.bytes += bytes;
    e.types.add(type);
    groups.set(g, e);
  };
  return {
    plan(moduleKey: string, param: Param, entry: TensorEntry): PlannedStorage | null {
      const stored = STORED[entry.dtype];
      const elems = param.shape.reduce((a, b) => a * b, 1);
      if (!param.storable || param.shape.length !== 2 || !stored) {
        note(group(moduleKey), elems * 4, 'f32 (tfjs)');
        return null;
      }
      const [rows, cols] = param.shape;
      let target: NativeType = choice === 'stored' ? stored : choice;
      if ((target === 'q8_0' || target === 'q4_0') && cols % 32 !== 0) target = stored;
      const bytes = Math.ceil(elems * BYTES_PER_ELEMENT[target as StorageDType]);
      note(group(moduleKey), bytes, target === stored && choice === 'stored' ? `${target} (mapped)` : target);
      const key = entry.name;
      return {
        bytes,
        load: () => {
          const src = NativeWeight.fromMap(mapOf(fileOf(entry, key)), entry.begin, stored, rows, cols);
          if (target === stored) return new NativeStorage(src);
          try {
            return new NativeStorage(NativeWeight.quantize(src, target));
          } finally {
            src.dispose();
          }
        },
      };
    },
    check(nativeBytes: number, backendBytes: number): void {
      const gb = (b: number) => `${(b / 1e9).toFixed(2)} GB`;
      const lines = [...groups].map(([g, e]) => `  ${g.padEnd(20)} ${String(e.n).padStart(4)} tensors  ${gb(e.bytes).padStart(9)}  ${[...e.types].join(', ')}`);
      opts.log?.(`weights (--quantize ${choice}): ${gb(nativeBytes)} native + ${gb(backendBytes)} float32 tfjs\n${lines.join('\n')}`);
      const limit = opts.memoryLimit ?? os.totalmem() - 1.5e9;
      if (nativeBytes + backendBytes > limit) {
        throw new Error(`the model needs ${gb(nativeBytes + backendBytes)} of memory (${gb(nativeBytes)} native weights + ${gb(backendBytes)} float32) ` +
          `but this machine has ${gb(os.totalmem())} (limit ${gb(limit)}); use a smaller --quantize (q8_0, q4_0)`);
      }
    },
  };
}

/**
 * The planner for a load: `quantize` as given, or by default 'f32' when the model's float32
 * weights fit the tfjs backend and 'stored' (mapped as released) when they do not and the native
 * addon is there.
 */
export function plannerFor(model: Param[] | { numParams(): number }, quantize: string | undefined, ck: Checkpoint[] | Checkpoint,
  opts: NativePlanOptions & { backendBudget?: number } = {}): StoragePlanner | null {
  let choice: QuantizeChoice;
  if (quantize !== undefined) choice = parseQuantize(quantize);
  else {
    const n = Array.isArray(model) ? model.reduce((a, p) => a + p.shape.reduce((x, y) => x * y, 1), 0) : model.numParams();
    const fits = n * 4 <= (opts.backendBudget ?? Infinity);
    choice = fits || !loadNativeAddon().addon ? 'f32' : 'stored';
  }
  return nativePlanner(choice, ck, opts);
}
