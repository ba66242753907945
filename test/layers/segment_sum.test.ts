/**
 * The linear-time UnsortedSegmentSum kernel (layers/segment_sum.ts) that backs tf.gather's
 * gradient: against a direct host loop, with repeated / out-of-range ids and int32 data, through
 * the gather gradient (checked with finite differences), and at a vocabulary size where the stock
 * O(segments · size) kernel would take minutes.
 */
import * as tf from '@tensorflow/tfjs';
import { backendInfo } from '../../layers/backend';
import { segmentSumHost } from '../../layers/segment_sum';

function hostRef(x: number[], ids: number[], n: number, inner: number): number[] {
  const out = new Array<number>(n * inner).fill(0);
  ids.forEach((s, i) => {
    if (s < 0 || s >= n) return;
    for (let k = 0; k < inner; k++) out[s * inner + k] += x[i * inner + k];
  });
  return out;
}

describe('UnsortedSegmentSum (linear)', () => {
  it('is registered on the active wasm/cpu backend', () => {
    const info = backendInfo()!;
    if (info.backend === 'wasm' || info.backend === 'cpu') {
      expect(info.kernels).toContain('UnsortedSegmentSum(linear)');
      expect(info.kernels.filter((k) => k.startsWith('UnsortedSegmentSum('))).toHaveLength(1);
    }
  });

  it('sums rows by segment (repeats add, out-of-range ids drop), float32 and int32, rank 3', () => {
    const x = Array.from({ length: 6 * 2 * 3 }, (_, i) => (i % 7) - 3 + i / 10);
    const ids = [2, 0, 2, 5, -1, 2];
    const t = tf.unsortedSegmentSum(tf.tensor3d(x, [6, 2, 3]), tf.tensor1d(ids, 'int32'), 4);
    expect(t.shape).toEqual([4, 2, 3]);
    const ref = hostRef(x, ids, 4, 6);
    Array.from(t.dataSync()).forEach((v, i) => expect(v).toBeCloseTo(ref[i], 5));
    const xi = tf.unsortedSegmentSum(tf.tensor2d([[1, 2], [3, 4], [5, 6]], [3, 2], 'int32'), tf.tensor1d([1, 1, 0], 'int32'), 3);
    expect(xi.dtype).toBe('int32');
    expect(Array.from(xi.dataSync())).toEqual([5, 6, 4, 6, 0, 0]);
    tf.dispose([t, xi]);
    expect(Array.from(segmentSumHost([1, 2, 3], [0, 0, 9], 2, 1, 'float32'))).toEqual([3, 0]);
  });

  it('tf.gather gradient equals finite differences', () => {
    const table = tf.variable(tf.randomNormal([5, 3], 0, 1, 'float32', 7));
    const idx = tf.tensor1d([4, 1, 4, 0, 4], 'int32');
    const w = tf.randomNormal([5, 3], 0, 1, 'float32', 8);
    const f = () => tf.sum(tf.mul(tf.square(tf.gather(table, idx)), w)) as tf.Scalar;
    const { grads } = tf.variableGrads(f);
    const g = grads[table.name].dataSync();
    const base = table.dataSync().slice();
    const h = 1e-2;
    for (let i = 0; i < base.length; i++) {
      const at = (d: number) => {
        const p = base.slice();
        p[i] += d;
        table.assign(tf.tensor2d(p, [5, 3]));
        return tf.tidy(() => f().dataSync()[0]);
      };
      const fd = (at(h) - at(-h)) / (2 * h); // exact for a quadratic up to round-off
      expect(Math.abs(g[i] - fd)).toBeLessThan(2e-3 * Math.max(1, Math.abs(fd)));
    }
    tf.dispose([table, idx, w, grads[table.name]]);
  });

  it('a 151k-row embedding gradient takes seconds, not hours', () => {
    const t0 = performance.now();
    const ids = tf.tensor1d(Int32Array.from({ length: 256 }, (_, i) => (i * 9973) % 151_000), 'int32');
    const x = tf.ones([256, 64]);
    const s = tf.unsortedSegmentSum(x, ids, 151_000);
    expect(s.shape).toEqual([151_000, 64]);
    expect(s.sum().dataSync()[0]).toBe(256 * 64);
    expect(performance.now() - t0).toBeLessThan(5000);
    tf.dispose([ids, x, s]);
  });
});
