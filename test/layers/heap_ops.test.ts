/**
 * Fused inference ops on the wasm heap (layers/heap_ops.ts): RMSNorm, rotary and silu·up equal the
 * composite ops (VLM_NATIVE_OPS=0) to float32 round-off, are not used while a gradient tape records
 * (gradients flow through the composite ops), leak nothing, and reject spans past the heap.
 */
import * as tf from '@tensorflow/tfjs';
import { heapOpsReady, heapOpStats } from '../../layers/heap_ops';
import { RMSNorm } from '../../layers/norms';
import { applyRotary, RotaryEmbedding } from '../../layers/rotary';
import { GatedMLP } from '../../layers/mlp';
import { loadNativeAddon } from '../../layers/native_weight';
import { fillParam, noise, randomizeParams } from '../../layers/init';

const maxRel = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let d = 0, m = 0;
  for (let i = 0; i < b.length; i++) { d = Math.max(d, Math.abs(a[i] - b[i])); m = Math.max(m, Math.abs(b[i])); }
  return d / m;
};
const composite = <T>(f: () => T): T => {
  process.env.VLM_NATIVE_OPS = '0';
  try { return f(); } finally { delete process.env.VLM_NATIVE_OPS; }
};
const calls = (k: string) => heapOpStats[k] ?? 0;

describe('fused heap ops', () => {
  const ready = () => heapOpsReady('rmsnorm');

  it('RMSNorm equals the composite ops (rows of 3584, odd widths)', () => {
    for (const [rows, n] of [[3, 3584], [5, 37], [1, 8]]) {
      const norm = new RMSNorm(n, 1e-6);
      fillParam(norm.weight, (k) => noise(k, 0.5, 1).map((v) => 1 + v)); // not all ones
      const x = tf.randomNormal([1, rows, n], 0, 2, 'float32', 2);
      const n0 = tf.memory().numTensors, c0 = calls('NativeRMSNorm');
      const got = norm.forward(x), want = composite(() => norm.forward(x));
      if (ready()) expect(calls('NativeRMSNorm')).toBe(c0 + 1);
      expect(maxRel(got.dataSync(), want.dataSync())).toBeLessThan(1e-6);
      tf.dispose([got, want]);
      expect(tf.memory().numTensors).toBe(n0);
      tf.dispose([x]);
      norm.dispose();
    }
  });

  it('rotary equals the composite ops (bit for bit) for [B, Hkv, G, T, D] queries', () => {
    const rot = new RotaryEmbedding(16, 10000);
    const [cos, sin] = rot.cosSinRange(5, 3);
    const x = tf.randomNormal([1, 2, 3, 3, 16], 0, 1, 'float32', 3);
    const c0 = calls('NativeRotary');
    const got = applyRotary(x, cos, sin), want = composite(() => applyRotary(x, cos, sin));
    if (ready()) expect(calls('NativeRotary')).toBe(c0 + 1);
    expect(Array.from(got.dataSync())).toEqual(Array.from(want.dataSync()));
    tf.dispose([got, want, x, cos, sin]);
    rot.dispose();
  });

  it('silu(gate) * up equals the composite ops, including large |x|', () => {
    const mlp = new GatedMLP(24, 40, 'silu');
    randomizeParams(mlp, 0.6, 4);
    const x = tf.randomNormal([2, 3, 24], 0, 4, 'float32', 5);
    const c0 = calls('NativeSiluMul');
    const got = mlp.forward(x), want = composite(() => mlp.forward(x));
    if (ready()) expect(calls('NativeSiluMul')).toBe(c0 + 1);
    expect(maxRel(got.dataSync(), want.dataSync())).toBeLessThan(2e-6);
    tf.dispose([got, want, x]);
    mlp.dispose();
  });

  it('is not used under a gradient tape; gradients flow through the composite ops', () => {
    const norm = new RMSNorm(16, 1e-6);
    randomizeParams(norm, 0.5, 7);
    const x = tf.randomNormal([4, 16], 0, 1, 'float32', 6);
    const c0 = calls('NativeRMSNorm');
    const g = tf.grad((t: tf.Tensor) => tf.sum(tf.square(norm.forward(t))))(x);
    expect(calls('NativeRMSNorm')).toBe(c0);
    expect(g.shape).toEqual([4, 16]);
    expect(Number.isFinite(g.sum().dataSync()[0])).toBe(true);
    tf.dispose([x, g]);
    norm.dispose();
  });

  it('rejects spans past the heap', () => {
    const a = loadNativeAddon().addon;
    if (!a || !a.rmsnorm) return;
    const h = new Float32Array(64);
    expect(() => a.rmsnorm!(h, 0, 0, 32, 4, 16, 1e-6)).toThrow(/out \(64 floats at 32\) runs past the heap \(64 floats\)/);
    expect(() => a.rotary!(h, 0, 0, 0, 0, 2, 1, 7)).toThrow(/D even/);
    expect(() => a.siluMul!(h, 0, 60, 0, 8)).toThrow(/u \(8 floats at 60\)/);
  });
});
