/**
 * Rotary position embedding, the "rotate half" convention of HF Llama/Qwen2/Mistral (v4.40):
 *   inv_freq[i] = 1 / base^(2i / dim)          (float32)
 *   freqs[t, i] = t · inv_freq[i]              (float32), emb = [freqs, freqs]
 *   q' = q·cos(emb) + rotate_half(q)·sin(emb), rotate_half(x) = [−x₂, x₁]
 * The cos/sin table is computed on the host in float32 arithmetic (Math.fround at every step as
 * torch does in float32) and grown on demand, like HF's `_set_cos_sin_cache`.
 */
import * as tf from '@tensorflow/tfjs';
import { heapOpsReady, rotaryFused, sliceRows } from './heap_ops';

export class RotaryEmbedding {
  readonly dim: number;
  readonly base: number;
  readonly invFreq: Float32Array;
  private cos: tf.Tensor2D | null = null;
  private sin: tf.Tensor2D | null = null;
  private cachedLen = 0;

  constructor(dim: number, base: number, initialLength = 0) {
    if (dim % 2 !== 0) throw new Error(`rotary dim must be even, got ${dim}`);
    this.dim = dim;
    this.base = base;
    const f = Math.fround;
    this.invFreq = new Float32Array(dim / 2);
    for (let i = 0; i < dim / 2; i++) {
      // torch: 1.0 / (base ** (arange(0, dim, 2).float() / dim)), all float32
      const expo = f(f(2 * i) / dim);
      this.invFreq[i] = f(1 / f(Math.pow(base, expo)));
    }
    if (initialLength > 0) this.ensure(initialLength);
  }

  /** Grows the table to at least `length` positions (doubling, to amortise). */
  private ensure(length: number): void {
    if (length <= this.cachedLen) return;
    const L = Math.max(length, this.cachedLen * 2, 256);
    const half = this.dim / 2;
    const c = new Float32Array(L * this.dim), s = new Float32Array(L * this.dim);
    for (let t = 0; t < L; t++) {
      for (let i = 0; i < half; i++) {
        const a = Math.fround(t * this.invFreq[i]);
        const ca = Math.cos(a), sa = Math.sin(a);
        c[t * this.dim + i] = ca; c[t * this.dim + half + i] = ca;
        s[t * this.dim + i] = sa; s[t * this.dim + half + i] = sa;
      }
    }
    this.cos?.dispose();
    this.sin?.dispose();
    this.cos = tf.keep(tf.tensor2d(c, [L, this.dim]));
    this.sin = tf.keep(tf.tensor2d(s, [L, this.dim]));
    this.cachedLen = L;
  }

  /**
   * cos/sin for positions. `positions` is [T] (same for the whole batch) → [T, D], or [B, T] → [B, T, D].
   */
  cosSin(positions: tf.Tensor): [tf.Tensor, tf.Tensor] {
    const maxPos = positions.size ? (positions.max().dataSync()[0] as number) : 0;
    this.ensure(maxPos + 1);
    return tf.tidy(() => {
      const flat = positions.reshape([-1]).cast('int32');
      const shape = [...positions.shape, this.dim];
      return [tf.gather(this.cos!, flat).reshape(shape), tf.gather(this.sin!, flat).reshape(shape)];
    });
  }

  /** Same, for the contiguous positions [start, start + T). */
  cosSinRange(start: number, T: number): [tf.Tensor2D, tf.Tensor2D] {
    this.ensure(start + T);
    // rows copied inside the wasm heap (tfjs-wasm's Slice reads the whole table out first: 2 × 1 MB per decode step at 2 K positions)
    return [sliceRows(this.cos!, start, T), sliceRows(this.sin!, start, T)];
  }

  dispose(): void {
    this.cos?.dispose();
    this.sin?.dispose();
    this.cos = this.sin = null;
    this.cachedLen = 0;
  }
}

/** [D, D] signed permutation P with x·P = rotate_half(x) = [−x₂, x₁], one per head dim. */
const rotateHalfMatrices = new Map<number, tf.Tensor2D>();
function rotateHalfMatrix(D: number): tf.Tensor2D {
  let P = rotateHalfMatrices.get(D);
  if (!P || P.isDisposed) {
    const h = D / 2, m = new Float32Array(D * D);
    for (let i = 0; i < h; i++) {
      m[(i + h) * D + i] = -1; // out[i] = −x[i + D/2]
      m[i * D + i + h] = 1; // out[i + D/2] = x[i]
    }
    P = tf.keep(tf.tensor2d(m, [D, D]));
    rotateHalfMatrices.set(D, P);
  }
  return P;
}

/**
 * rotate_half(x) = concat(−x[..., D/2:], x[..., :D/2]), computed as x·P with a signed
 * permutation matrix. This is exact (one ±1 term per output; the zero terms add nothing) and
 * 40x faster on wasm than split/slice, whose kernels take over a second on a
 * [1, 4, 7, 512, 128] query (measured with scripts/bench.ts' qwen2.layer.prefill512).
 */
export function rotateHalf(x: tf.Tensor): tf.Tensor {
  return tf.tidy(() => {
    const D = x.shape[x.shape.length - 1];
    if (D % 2 !== 0) throw new Error(`rotate_half: last dimension ${D} is odd`);
    return tf.matMul(x.reshape([-1, D]), rotateHalfMatrix(D)).reshape(x.shape);
  });
}

/** x·cos + rotate_half(x)·sin; cos/sin broadcast against x's trailing [T, D]. */
export function applyRotary(x: tf.Tensor, cos: tf.Tensor, sin: tf.Tensor): tf.Tensor {
  // inference on wasm with [T, D] tables and x [..., T, D]: one native call
  if (cos.rank === 2 && sin.rank === 2 && x.rank >= 2 && x.shape[x.rank - 2] === cos.shape[0] && x.shape[x.rank - 1] === cos.shape[1] &&
    x.dtype === 'float32' && cos.dtype === 'float32' && sin.dtype === 'float32' && heapOpsReady('rotary')) return rotaryFused(x, cos, sin);
  return tf.tidy(() => tf.add(tf.mul(x, cos), tf.mul(rotateHalf(x), sin)));
}
