/**
 * Filling parameters without a checkpoint: random values for benchmarks and tests at real
 * dimensions (no weights can be downloaded here). Norm weights get ones and biases zeros so
 * activations stay in a realistic range; matrices get uniform noise of a given std.
 */
import * as tf from '@tensorflow/tfjs';
import { Module, Param } from './module';
import { backendContext } from './backend';
import { chunkRows, toMemoryLayout } from './layout';
import { tensorMatmulOptions } from './storage';

/** Fast uniform noise with standard deviation `std` (xorshift32; not for statistics). */
export function noise(n: number, std: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  const a = std * Math.sqrt(3); // uniform on [-a, a] has std a/√3
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = (x / 4294967296 * 2 - 1) * a;
  }
  return out;
}

/** Fills one parameter (checkpoint layout → memory layout, chunked like a real load). */
export function fillParam(p: Param, values: (n: number, rows: [number, number]) => Float32Array): void {
  const ctx = backendContext();
  p.chooseLayout(ctx);
  const ranges = chunkRows(p.shape, p.maxChunkBytes);
  const tensors: tf.Tensor[] = [];
  for (const r of ranges) {
    const shape = [r[1] - r[0], ...p.shape.slice(1)];
    const n = shape.reduce((a, b) => a * b, 1);
    tensors.push(toMemoryLayout(values(n, r), ranges.length === 1 ? p.shape : shape, p.layout));
  }
  p.set(tensors, ranges.map((r) => r[0]), tensorMatmulOptions(ctx));
}

/**
 * Random-initialises every untied parameter of `m` by `initKind`: 1-D `weight`s of norms → 1,
 * biases → 0, everything else uniform noise with std `std`.
 */
export function randomizeParams(m: Module, std = 0.02, seed = 1): void {
  let k = seed;
  for (const [name, p] of m.namedParams()) {
    if (p.tiedTo) continue;
    const kind = initKind(name, p.shape);
    if (kind === 'zeros') fillParam(p, (n) => new Float32Array(n));
    else if (kind === 'ones') fillParam(p, (n) => new Float32Array(n).fill(1));
    else fillParam(p, (n) => noise(n, std, k++));
  }
}

/** How a random parameter is filled. */
export type InitKind = 'noise' | 'ones' | 'zeros';

/**
 * The rule of `randomizeParams` for one parameter (by name and shape): 1-D `bias` → zeros,
 * 1-D `weight` of a norm (`norm`, `ln_`, `layernorm`, `.bn.` in the name) → ones, else noise.
 * Shared with the random checkpoint writer (weights/random_checkpoint.ts).
 */
export function initKind(name: string, shape: readonly number[]): InitKind {
  const leaf = name.split('.').pop()!;
  if (shape.length === 1 && leaf === 'bias') return 'zeros';
  if (shape.length === 1 && leaf === 'weight' && /norm|ln_|layernorm|\.bn\./i.test(name)) return 'ones';
  return 'noise';
}
