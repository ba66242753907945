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
 * keeps its stored type. `nativeTarget` is that rule, shared by the load and `vlm convert`.
 *
 * A converted directory (`model.gguf`, weights/gguf.ts) loads with 'stored' by default: its
 * large matrices are mapped zero-copy in the type they were converted to (f32/f16/bf16/q8_0/q4_0).
 * A GGUF holding q8_0/q4_0 tensors is refused with any other `--quantize` (no re-quantizing).
 */
import os from 'node:os';
import { FileInputError } from '../io/files';
import { NativeStorage } from '../layers/native_storage';
import { NativeMapping, NativeType, NativeWeight, envSet, loadNativeAddon } from '../layers/native_weight';
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

const STORED: Partial<Record<string, NativeType>> = { F32: 'f32', F16: 'f16', BF16: 'bf16', Q8_0: 'q8_0', Q4_0: 'q4_0' };

/**
 * The rule: the native type a parameter stored as `dtype` gets under `choice`, or null when it
 * stays a float32 tfjs tensor (not a storable 2-D matrix, or a dtype native weights do not hold;
 * always null for 'f32'). A storable conv kernel [O, I, k…] counts as the row-major matrix
 * [O, I·k…] (`matrixShape`; q-types give it f16). `mmproj`: the parameter belongs to the vision encoder or the connector,
 * which q8_0/q4_0 leave in f16 — llama.cpp's practice for multimodal models (the LLM quantized,
 * the `mmproj` file f16; e.g. MiniCPM-V 2.6's released GGUFs).
 */
export function nativeTarget(param: Pick<Param, 'storable' | 'shape'>, dtype: string, choice: QuantizeChoice, mmproj = false): NativeType | null {
  const stored = STORED[dtype];
  // a matrix [rows, cols], or a conv kernel [O, I, k…] read as the row-major matrix [O, I·k…]
  if (choice === 'f32' || !param.storable || param.shape.length < 2 || !stored) return null;
  let target: NativeType = choice === 'stored' ? stored : choice;
  if ((mmproj || param.shape.length > 2) && (target === 'q8_0' || target === 'q4_0')) target = 'f16';
  if ((target === 'q8_0' || target === 'q4_0') && param.shape[1] % 32 !== 0) target = stored;
  return target;
}

/** The q8_0/q4_0 type of a GGUF checkpoint's tensors, if any (null for safetensors or unquantized GGUF). */
function ggufQuantType(checkpoints: Checkpoint[]): { type: string; file: string } | null {
  for (const c of checkpoints) {
    if (!c.gguf) continue;
    for (const k of c.keys()) {
      const d = c.entry(k).dtype;
      if (d === 'Q8_0' || d === 'Q4_0') return { type: d.toLowerCase(), file: c.gguf.path };
    }
  }
  return null;
}

/** Refuses re-quantizing a quantized GGUF: only 'stored' maps it as converted. */
function checkGgufChoice(choice: QuantizeChoice, checkpoints: Checkpoint[]): void {
  const q = ggufQuantType(checkpoints);
  if (q && choice !== 'stored') {
    throw new FileInputError(`--quantize ${choice}: ${q.file} is already quantized (${q.type}, written by vlm convert); it loads only as stored ` +
      `(leave --quantize out or pass --quantize stored). To change the type, convert the original checkpoint again with vlm convert --quantize.`);
  }
}

export interface NativePlanOptions {
  /** Receives the per-group storage report before anything is read. */
  log?: (msg: string) => void;
  /** Bytes the machine can give the model (default: total RAM less 1.5 GB for activations and the runtime). */
  memoryLimit?: number;
  /** Module-key prefixes kept as float32 tfjs tensors whatever `--quantize` says (parts trained fully). */
  keepF32?: readonly string[];
  /** Module-key prefixes of the vision encoder and connector (`nativeTarget`'s mmproj rule). */
  mmproj?: readonly string[];
}

/** A storable parameter as the matrix its bytes form: [shape[0], product of the rest]. */
export function matrixShape(shape: readonly number[]): [number, number] {
  return [shape[0], shape.slice(1).reduce((a, b) => a * b, 1)];
}

/** Whether a module key is one of `prefixes` or lies under one. */
export function underAnyPrefix(moduleKey: string, prefixes: readonly string[] | undefined): boolean {
  return !!prefixes?.some((p) => moduleKey === p || moduleKey.startsWith(p.endsWith('.') ? p : `${p}.`));
}

/** Groups for the report: the first path segment (llm, vpm, resampler, model, vision_tower, mm_projector). */
function group(moduleKey: string): string {
  const parts = moduleKey.split('.');
  return parts[0] === 'model' && parts[1] === 'vision_tower' ? 'model.vision_tower' : parts[0] === 'model' && parts[1] === 'mm_projector' ? 'model.mm_projector' : parts[0];
}

/** Source rows read per conversion step (bytes). */
const CHUNK_BYTES = 64 * 2 ** 20;

/**
 * `key` converted from `from` to `to` in row chunks read from the checkpoint: every type converts
 * rows independently, so the bytes equal a whole-matrix conversion (and `vlm convert`'s). Each
 * converted chunk goes straight into the native destination: peak memory is one source chunk plus
 * the converted tensor, and no tensor-sized JS buffer is left for the GC (the 7 B models convert
 * ~14 GB of bf16 at load).
 */
export function convertRows(ck: Checkpoint, key: string, from: NativeType, to: NativeType, rows: number, cols: number): NativeWeight {
  const srcRowBytes = cols * BYTES_PER_ELEMENT[from as StorageDType];
  const per = Math.max(1, Math.floor(CHUNK_BYTES / srcRowBytes));
  const dst = NativeWeight.alloc(to, rows, cols);
  if (!dst) throw new Error(`${key}: converting to ${to} needs an addon build with weightAlloc (rebuild native/tfjs-blas: npm rebuild)`);
  try {
    for (let r = 0; r < rows; r += per) {
      const r1 = Math.min(rows, r + per);
      const src = ck.readBytes(key, r * srcRowBytes, r1 * srcRowBytes);
      const a = NativeWeight.fromBuffer(from, r1 - r, cols, new Uint8Array(src.buffer, src.byteOffset, src.length));
      try {
        const b = NativeWeight.quantize(a, to);
        try {
          dst.writeRows(r, b);
        } finally {
          b.dispose();
        }
      } finally {
        a.dispose();
      }
    }
  } catch (e) {
    dst.dispose();
    throw e;
  }
  return dst;
}

/** A planner that sends large matrices to native storage in `choice` (null for 'f32'). */
export function nativePlanner(choice: QuantizeChoice, ck: Checkpoint[] | Checkpoint, opts: NativePlanOptions = {}): StoragePlanner | null {
  const checkpoints = Array.isArray(ck) ? ck : [ck];
  checkGgufChoice(choice, checkpoints);
  if (choice === 'f32') return null;
  const { addon, reason } = loadNativeAddon();
  if (!addon) {
    throw new Error(`--quantize ${choice} needs the native addon (native/tfjs-blas), which is not available: ${reason}. ` +
      'Install a C compiler (apt-get install build-essential) and reinstall (npm install), or load with --quantize f32.');
  }
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
  const ckOf = (entry: TensorEntry, key: string): Checkpoint => {
    for (const c of checkpoints) if (c.has(key) && c.entry(key) === entry) return c;
    for (const c of checkpoints) if (c.has(key)) return c;
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
      const elems = param.shape.reduce((a, b) => a * b, 1);
      const kept = underAnyPrefix(moduleKey, opts.keepF32);
      const target = kept ? null : nativeTarget(param, entry.dtype, choice, underAnyPrefix(moduleKey, opts.mmproj));
      if (!target) {
        note(group(moduleKey), elems * 4, 'f32 (tfjs)');
        return null;
      }
      const stored = STORED[entry.dtype]!;
      const [rows, cols] = matrixShape(param.shape);
      const bytes = Math.ceil(elems * BYTES_PER_ELEMENT[target as StorageDType]);
      note(group(moduleKey), bytes, target === stored && choice === 'stored' ? `${target} (mapped)` : target);
      const key = entry.name;
      return {
        bytes,
        load: () => {
          if (target === stored) {
            const w = NativeWeight.fromMap(mapOf(fileOf(entry, key)), entry.begin, stored, rows, cols);
            if (param.storable === 'gather') {
              // sparse row reads at random: have the pages cached, and keep them (VLM_NO_PIN=1: only read ahead)
              w.prefetch();
              if (!envSet('VLM_NO_PIN')) w.pin();
            }
            return new NativeStorage(w);
          }
          // Converted: read the source in row chunks (no mapping: touched file pages would count in
          // the resident set for the whole checkpoint) and convert chunk by chunk.
          return new NativeStorage(convertRows(ckOf(entry, key), key, stored, target, rows, cols));
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
 * addon is there. A converted GGUF checkpoint defaults to 'stored' (as converted).
 */
export function plannerFor(model: Param[] | { numParams(): number }, quantize: string | undefined, ck: Checkpoint[] | Checkpoint,
  opts: NativePlanOptions & { backendBudget?: number } = {}): StoragePlanner | null {
  let choice: QuantizeChoice;
  const checkpoints = Array.isArray(ck) ? ck : [ck];
  if (quantize !== undefined) choice = parseQuantize(quantize);
  else if (checkpoints.some((c) => c.gguf) && (loadNativeAddon().addon || ggufQuantType(checkpoints))) choice = 'stored';
  else {
    const n = Array.isArray(model) ? model.reduce((a, p) => a + p.shape.reduce((x, y) => x * y, 1), 0) : model.numParams();
    const budget = opts.backendBudget ?? Infinity;
    const fits = n * 4 <= budget;
    const native = loadNativeAddon();
    if (!fits && !native.addon) {
      throw new Error(`the model's float32 weights (${(n * 4 / 1e9).toFixed(2)} GB) do not fit the tfjs backend (budget ${(budget / 1e9).toFixed(2)} GB), ` +
        `and the native addon that holds them outside it is not available: ${native.reason}. ` +
        'Reinstall with the prebuilt addon (npm install on linux-x64) or build it (apt-get install build-essential; npm rebuild tfjs-blas).');
    }
    choice = fits ? 'f32' : 'stored';
  }
  return nativePlanner(choice, ck, opts);
}
