/**
 * Fused inference ops on the wasm heap (layers/heap_ops.ts): RMSNorm, rotary, silu·up, LayerNorm,
 * the scaled softmax of attention and the gelu activations equal the composite ops
 * (VLM_NATIVE_OPS=0) to float32 round-off, at decode sizes (inline) and prefill sizes (thread pool), are not used while a gradient tape records
 * (gradients flow through the composite ops), leak nothing, and reject spans past the heap.
 */
import * as tf from '@tensorflow/tfjs';
import { assembleRows, heapOpsReady, heapOpStats, sliceAxis, sliceRows } from '../../layers/heap_ops';
import { LayerNorm, RMSNorm } from '../../layers/norms';
import { attend } from '../../layers/attention';
import { applyRotary, RotaryEmbedding } from '../../layers/rotary';
import { GatedMLP, activation } from '../../layers/mlp';
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

  it('LayerNorm equals the composite ops (a decode row, odd widths, a prefill of 1024 × 1152 on the pool)', () => {
    for (const [rows, n] of [[1, 1152], [5, 37], [1024, 1152]]) {
      const norm = new LayerNorm(n, 1e-6);
      fillParam(norm.weight, (k) => noise(k, 0.5, 1).map((v) => 1 + v));
      fillParam(norm.bias, (k) => noise(k, 0.5, 2));
      const x = tf.randomNormal([1, rows, n], 3, 2, 'float32', 9); // mean 3: the centring matters
      const n0 = tf.memory().numTensors, c0 = calls('NativeLayerNorm');
      const got = norm.forward(x), want = composite(() => norm.forward(x));
      if (ready()) expect(calls('NativeLayerNorm')).toBe(c0 + 1);
      expect(maxRel(got.dataSync(), want.dataSync())).toBeLessThan(2e-6);
      tf.dispose([got, want]);
      expect(tf.memory().numTensors).toBe(n0);
      tf.dispose([x]);
      norm.dispose();
    }
  });

  it('attention with the native scaled softmax equals the composite one (div, mul, none, masked)', () => {
    const q = tf.randomNormal([1, 4, 300, 16], 0, 2, 'float32', 10), k = tf.randomNormal([1, 4, 301, 16], 0, 2, 'float32', 11);
    const v = tf.randomNormal([1, 4, 301, 16], 0, 1, 'float32', 12);
    const mask = tf.tensor4d(Array.from({ length: 300 * 301 }, (_, i) => (i % 301 > (i / 301 | 0) + 1 ? -3.4e38 : 0)), [1, 1, 300, 301]);
    for (const [scale, m] of [[{ div: 4 }, null], [{ mul: 0.25 }, null], [null, null], [{ div: 4 }, mask]] as const) {
      const c0 = calls('NativeSoftmax');
      const got = attend(q, k, v, scale, m), want = composite(() => attend(q, k, v, scale, m));
      if (ready()) expect(calls('NativeSoftmax')).toBe(c0 + 1);
      expect(maxRel(got.dataSync(), want.dataSync())).toBeLessThan(2e-6);
      tf.dispose([got, want]);
    }
    tf.dispose([q, k, v, mask]);
  });

  it('gelu (tanh form), quick_gelu and silu equal the composite ops, including large |x| (decode and pool sizes)', () => {
    for (const size of [37, 300000]) {
      const x = tf.randomNormal([size], 0, 4, 'float32', 13);
      for (const act of ['gelu_pytorch_tanh', 'gelu_new', 'quick_gelu', 'silu']) {
        const c0 = calls('NativeAct');
        const got = activation(act, x), want = composite(() => activation(act, x));
        if (ready()) expect(calls('NativeAct')).toBe(c0 + 1);
        // the composite tanh form loses digits in 1 + tanh(u) for u ≪ 0; compare on the output's scale
        expect(maxRel(got.dataSync(), want.dataSync())).toBeLessThan(1e-6);
        tf.dispose([got, want]);
      }
      x.dispose();
    }
  });

  it('sliceRows: rows along axis 0 equal tf.slice (in the heap, or tf.slice under a tape), bad ranges are named', () => {
    const x = tf.randomNormal([7, 3, 5], 0, 1, 'float32', 14);
    const n0 = tf.memory().numTensors, c0 = calls('HeapSliceRows');
    for (const [s, n] of [[0, 7], [2, 3], [6, 1], [4, 0]]) {
      const got = sliceRows(x, s, n), want = tf.slice(x, [s, 0, 0], [n, 3, 5]);
      expect(got.shape).toEqual([n, 3, 5]);
      expect(Array.from(got.dataSync())).toEqual(Array.from(want.dataSync()));
      tf.dispose([got, want]);
    }
    const inHeap = tf.getBackend() === 'wasm' ? 4 : 0; // other backends: tf.slice
    expect(calls('HeapSliceRows')).toBe(c0 + inHeap);
    expect(tf.memory().numTensors).toBe(n0);
    const g = tf.grad((t: tf.Tensor) => tf.sum(tf.square(sliceRows(t, 1, 2))))(x); // through tf.slice
    expect(Array.from(g.slice([0, 0, 0], [1, 3, 5]).dataSync()).every((v) => v === 0)).toBe(true);
    expect(calls('HeapSliceRows')).toBe(c0 + inHeap);
    expect(() => sliceRows(x, 5, 3)).toThrow(/rows \[5, 8\) are outside \[0, 7\) of a \[7,3,5\] tensor/);
    tf.dispose([x, g]);
  });

  it('sliceAxis: any axis equals tf.slice bit for bit (one heap copy per outer index on wasm), bad ranges are named', () => {
    const x = tf.randomNormal([2, 5, 3, 4], 0, 1, 'float32', 15);
    const n0 = tf.memory().numTensors, c0 = calls('HeapSliceRows');
    const cases: [number, number, number][] = [[1, 1, 3], [1, 0, 5], [2, 2, 1], [3, 1, 2], [0, 1, 1]];
    for (const [axis, s, n] of cases) {
      const begin = x.shape.map((_, d) => (d === axis ? s : 0)), size = x.shape.map((v, d) => (d === axis ? n : v));
      const got = sliceAxis(x, axis, s, n), want = tf.slice(x, begin, size);
      expect(got.shape).toEqual(size);
      expect(Array.from(got.dataSync())).toEqual(Array.from(want.dataSync()));
      tf.dispose([got, want]);
    }
    expect(calls('HeapSliceRows')).toBe(c0 + (tf.getBackend() === 'wasm' ? cases.length : 0));
    expect(tf.memory().numTensors).toBe(n0);
    expect(() => sliceAxis(x, 1, 4, 2)).toThrow(/\[4, 6\) is outside \[0, 5\) on axis 1 of a \[2,5,3,4\] tensor/);
    x.dispose();
  });

  it('assembleRows: chunks written into one output equal tf.concat bit for bit; bad chunks and throws leak nothing', () => {
    const x = tf.randomNormal([7, 3, 4], 0, 1, 'float32', 16);
    const n0 = tf.memory().numTensors, c0 = calls('HeapAssembleRows');
    for (const chunk of [1, 3, 7, 10]) {
      const got = assembleRows(7, chunk, (s, n) => tf.tidy(() => tf.mul(sliceRows(x, s, n), 2)));
      const want = tf.mul(x, 2);
      expect(got.shape).toEqual([7, 3, 4]);
      expect(Array.from(got.dataSync())).toEqual(Array.from(want.dataSync()));
      tf.dispose([got, want]);
    }
    // wasm: one call per chunk (7 + 3 + 1 + 1); elsewhere tf.concat
    expect(calls('HeapAssembleRows')).toBe(c0 + (tf.getBackend() === 'wasm' ? 12 : 0));
    expect(tf.memory().numTensors).toBe(n0);
    expect(() => assembleRows(7, 3, (s, n) => tf.zeros([n + 1, 2]))).toThrow(/a chunk of 3 rows came back as \[4,2\]/);
    expect(() => assembleRows(7, 3, (s) => { if (s === 6) throw new Error('boom'); return tf.zeros([3, 2]); })).toThrow(/boom/);
    expect(tf.memory().numTensors).toBe(n0);
    x.dispose();
  });

  it('rejects spans past the heap', () => {
    const a = loadNativeAddon().addon;
    if (!a || !a.rmsnorm) return;
    const h = new Float32Array(64);
    expect(() => a.rmsnorm!(h, 0, 0, 32, 4, 16, 1e-6)).toThrow(/out \(64 floats at 32\) runs past the heap \(64 floats\)/);
    expect(() => a.rotary!(h, 0, 0, 0, 0, 2, 1, 7)).toThrow(/D even/);
    expect(() => a.siluMul!(h, 0, 60, 0, 8)).toThrow(/u \(8 floats at 60\)/);
    expect(() => a.layerNorm!(h, 0, 0, 60, 0, 2, 8, 1e-6)).toThrow(/b \(8 floats at 60\)/);
    expect(() => a.softmax!(h, 0, 40, 4, 8, 1, 0)).toThrow(/out \(32 floats at 40\)/);
    expect(() => a.act!(h, 7, 0, 0, 8)).toThrow(/unknown kind 7/);
  });
});
