/**
 * Golden-fixture helpers. Fixtures a test needs are copied (trimmed) into test/fixtures so a fresh
 * clone passes alone; larger goldens are read from ../shared/fixtures when that exists, and the
 * tests that need them are reported as skipped (never passed) when it does not.
 *
 * The comparison metric is the issues' one: max relative error = max|ours − golden| / max|golden|,
 * NaN/Inf treated strictly, and the message names the tensor, both shapes and where the worst
 * element is.
 */
import fs from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { HostTensor, SafetensorsFile } from '../../weights/safetensors';

export const REPO_ROOT = path.resolve(__dirname, '..', '..');
export const FIXTURES = path.join(REPO_ROOT, 'test', 'fixtures');
export const SHARED_FIXTURES = path.resolve(REPO_ROOT, '..', 'shared', 'fixtures');
export const SHARED = path.resolve(REPO_ROOT, '..', 'shared');

/** Path of a bundled fixture file (test/fixtures/...). */
export function fixture(...parts: string[]): string {
  return path.join(FIXTURES, ...parts);
}

/** Path under ../shared, or null when it (or ../shared) is absent. */
export function shared(...parts: string[]): string | null {
  const p = path.join(SHARED, ...parts);
  return fs.existsSync(p) ? p : null;
}

/** `it` when `cond`, otherwise `it.skip` (reported as skipped, never as passed). */
export function itIf(cond: unknown): jest.It {
  return cond ? it : it.skip;
}

/** Reads every tensor of a safetensors file into host arrays. */
export function readAll(file: string): Record<string, HostTensor> {
  const f = SafetensorsFile.open(file);
  try {
    return Object.fromEntries(f.keys().map((k) => [k, f.read(k)]));
  } finally {
    f.close();
  }
}

/** Lazily reads tensors from a safetensors file, caching them. */
export class Golden {
  private readonly file: SafetensorsFile;
  private readonly cache = new Map<string, HostTensor>();
  constructor(readonly path: string) {
    this.file = SafetensorsFile.open(path);
  }
  has(name: string): boolean {
    return this.file.has(name);
  }
  keys(): string[] {
    return this.file.keys();
  }
  get(name: string): HostTensor {
    let t = this.cache.get(name);
    if (!t) {
      t = this.file.read(name);
      this.cache.set(name, t);
    }
    return t;
  }
  /** As a tf tensor (int64 goldens come back as int32). */
  tensor(name: string): tf.Tensor {
    const t = this.get(name);
    const dtype = t.dtype === 'uint8' ? 'int32' : t.dtype;
    const data = t.dtype === 'uint8' ? Int32Array.from(t.data) : t.data;
    return tf.tensor(data as Float32Array | Int32Array, t.shape, dtype as 'float32' | 'int32' | 'bool');
  }
  ints(name: string): number[] {
    return Array.from(this.get(name).data);
  }
  close(): void {
    this.file.close();
  }
}

export interface CompareResult {
  maxRelErr: number;
  maxAbsErr: number;
  maxAbsRef: number;
  worstIndex: number[];
}

function unravel(i: number, shape: number[]): number[] {
  const idx: number[] = [];
  for (let d = shape.length - 1; d >= 0; d--) {
    idx.unshift(i % shape[d]);
    i = Math.floor(i / shape[d]);
  }
  return idx;
}

/** max|a − b| / max|b| with strict NaN/Inf handling; throws on a shape mismatch. */
export function compare(name: string, ours: ArrayLike<number>, oursShape: number[], ref: ArrayLike<number>, refShape: number[]): CompareResult {
  if (oursShape.length !== refShape.length || oursShape.some((d, i) => d !== refShape[i])) {
    throw new Error(`${name}: shape [${oursShape}] (ours) != [${refShape}] (golden)`);
  }
  let maxAbsRef = 0, maxAbsErr = 0, worst = 0;
  for (let i = 0; i < ref.length; i++) {
    const r = ref[i], o = ours[i];
    if (!Number.isFinite(r) || !Number.isFinite(o)) {
      if (Object.is(r, o) || (Number.isNaN(r) && Number.isNaN(o))) continue;
      throw new Error(`${name}: non-finite mismatch at [${unravel(i, refShape)}]: ours ${o}, golden ${r}`);
    }
    maxAbsRef = Math.max(maxAbsRef, Math.abs(r));
    const e = Math.abs(o - r);
    if (e > maxAbsErr) {
      maxAbsErr = e;
      worst = i;
    }
  }
  const maxRelErr = maxAbsRef > 0 ? maxAbsErr / maxAbsRef : maxAbsErr;
  return { maxRelErr, maxAbsErr, maxAbsRef, worstIndex: unravel(worst, refShape) };
}

/** Records every comparison so a test run can print a parity table. */
export const parityLog: { name: string; maxRelErr: number }[] = [];

/**
 * Asserts max relative error <= tol. `ours` may be a tf tensor or a host array with its shape.
 * The failure message names the tensor, the metric, the worst index and both values.
 */
export function expectClose(name: string, ours: tf.Tensor | { data: ArrayLike<number>; shape: number[] }, ref: HostTensor | { data: ArrayLike<number>; shape: number[] }, tol: number): CompareResult {
  const o = ours instanceof tf.Tensor ? { data: ours.dataSync() as ArrayLike<number>, shape: ours.shape } : ours;
  const r = compare(name, o.data, o.shape, ref.data as ArrayLike<number>, ref.shape);
  parityLog.push({ name, maxRelErr: r.maxRelErr });
  if (!(r.maxRelErr <= tol)) {
    const flat = r.worstIndex.reduce((acc, v, d) => acc * ref.shape[d] + v, 0);
    throw new Error(`${name}: max relative error ${r.maxRelErr.toExponential(3)} > ${tol} ` +
      `(max abs err ${r.maxAbsErr.toExponential(3)} at [${r.worstIndex}]: ours ${o.data[flat]}, golden ${(ref.data as ArrayLike<number>)[flat]}; max|golden| ${r.maxAbsRef.toExponential(3)})`);
  }
  return r;
}

/** Asserts integer arrays are equal, naming the first difference. */
export function expectSameInts(name: string, ours: ArrayLike<number>, ref: ArrayLike<number>): void {
  const a = Array.from(ours), b = Array.from(ref);
  if (a.length !== b.length) throw new Error(`${name}: length ${a.length} (ours) != ${b.length} (golden)`);
  const i = a.findIndex((v, k) => v !== b[k]);
  if (i >= 0) throw new Error(`${name}: first difference at ${i}: ours ${a[i]}, golden ${b[i]} (ours ${JSON.stringify(a.slice(Math.max(0, i - 3), i + 4))}, golden ${JSON.stringify(b.slice(Math.max(0, i - 3), i + 4))})`);
}
