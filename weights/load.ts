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
import { Module, Param, ParamLayout, layoutPerm, layoutShape } from '../layers/module';
import { Checkpoint } from './checkpoint';
import { HostTensor } from './safetensors';
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

export interface LoadReport {
  loaded: number;
  ignored: string[];
  bytes: number;
}

const shapeStr = (s: number[]) => `[${s.join(', ')}]`;

/** Permutes a host array from `shape` by `perm` (like np.transpose). */
export function permuteHost(data: Float32Array, shape: number[], perm: number[]): Float32Array {
  const rank = shape.length;
  const outShape = perm.map((p) => shape[p]);
  const out = new Float32Array(data.length);
  if (rank === 2) {
    // Blocked 2-D transpose (cache friendly for multi-hundred-MB matrices).
    const [R, C] = shape, BS = 64;
    for (let r0 = 0; r0 < R; r0 += BS) {
      for (let c0 = 0; c0 < C; c0 += BS) {
        const r1 = Math.min(r0 + BS, R), c1 = Math.min(c0 + BS, C);
        for (let r = r0; r < r1; r++) for (let c = c0; c < c1; c++) out[c * R + r] = data[r * C + c];
      }
    }
    return out;
  }
  const inStrides = new Array(rank).fill(1);
  for (let d = rank - 2; d >= 0; d--) inStrides[d] = inStrides[d + 1] * shape[d + 1];
  const strides = perm.map((p) => inStrides[p]); // input stride of each output axis
  const idx = new Array(rank).fill(0);
  for (let o = 0; o < out.length; o++) {
    let src = 0;
    for (let d = 0; d < rank; d++) src += idx[d] * strides[d];
    out[o] = data[src];
    for (let d = rank - 1; d >= 0; d--) {
      if (++idx[d] < outShape[d]) break;
      idx[d] = 0;
    }
  }
  return out;
}

/** Host float32 tensor in checkpoint layout → tf tensor in the parameter's memory layout. */
export function toMemoryLayout(data: Float32Array, ckptShape: number[], layout: ParamLayout): tf.Tensor {
  const perm = layoutPerm(layout);
  const memShape = layoutShape(ckptShape, layout);
  return tf.tensor(perm ? permuteHost(data, ckptShape, perm) : data, memShape, 'float32');
}

/** Inverse of `toMemoryLayout` (for export): memory layout → checkpoint layout, on the host. */
export function toCheckpointLayout(data: Float32Array, memShape: number[], layout: ParamLayout): Float32Array {
  const perm = layoutPerm(layout);
  if (!perm) return data;
  const inv = new Array(perm.length);
  perm.forEach((p, i) => { inv[p] = i; });
  return permuteHost(data, memShape, inv);
}

/** Row ranges [start, end) that split `shape` along axis 0 into chunks of at most maxBytes (float32). */
export function chunkRows(shape: number[], maxBytes?: number): [number, number][] {
  const rows = shape[0] ?? 1;
  const rowBytes = shape.slice(1).reduce((a, b) => a * b, 1) * 4;
  if (!maxBytes || rows * rowBytes <= maxBytes || shape.length < 2) return [[0, rows]];
  const per = Math.max(1, Math.floor(maxBytes / rowBytes));
  const out: [number, number][] = [];
  for (let s = 0; s < rows; s += per) out.push([s, Math.min(rows, s + per)]);
  return out;
}

interface Planned { moduleKey: string; param: Param; source: WeightSource; ckptKey: string }

/**
 * Checks and loads every parameter of `module` from `sources`. Throws a WeightLoadError listing
 * every missing, unexpected and wrong-shape key (with shard and shapes) before assigning anything.
 */
export function loadWeights(module: Module, sources: WeightSource[], opts: { what?: string } = {}): LoadReport {
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
      if (!['F32', 'F16', 'BF16', 'F64'].includes(e.dtype)) {
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

  // Budget check (wasm heap) before anything is uploaded.
  // Stock wasm matmul keeps a packed copy of each right-operand weight (chunked vocab matrices are
  // used as the left operand or gathered, see layers/linear.ts, and cost their size only).
  const factor = weightHeapFactor();
  let bytes = 0, largest = 0;
  for (const p of expected.values()) {
    const n = p.shape.reduce((a, b) => a * b, 1) * 4;
    bytes += p.shape.length >= 2 && !p.maxChunkBytes ? n * factor : n;
    const rows = chunkRows(p.shape, p.maxChunkBytes);
    const rowBytes = n / (p.shape[0] || 1);
    largest = Math.max(largest, ...rows.map(([s, e]) => (e - s) * rowBytes));
  }
  assertFitsBackend(bytes, `loading ${what} (${expected.size} tensors, float32${factor > 1 ? ', matrices ×2 for the stock wasm matmul\'s packed weight copies' : ''})`, largest);

  for (const pl of planned.values()) loadParam(pl);
  return { loaded: planned.size, ignored, bytes };
}

function loadParam({ param, source, ckptKey }: Planned): void {
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
  param.set(tensors, ranges.map(([s]) => s));
}

/** Reads a parameter back in checkpoint layout (export, trace, tests). */
export function readParam(param: Param): { data: Float32Array; shape: number[] } {
  const { chunks, layout } = param.storage();
  const parts = chunks.map((c) => toCheckpointLayout(c.dataSync() as Float32Array, c.shape, layout));
  if (parts.length === 1) return { data: parts[0], shape: param.shape };
  const out = new Float32Array(param.shape.reduce((a, b) => a * b, 1));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return { data: out, shape: param.shape };
}
