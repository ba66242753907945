/**
 * VLM_CPU_BLAS: the cpu backend's BatchMatMul / _FusedMatMul on OpenBLAS (the fast float32
 * reference of bench/realsize_check.ts) agree with the stock pure-JS kernels.
 */
import * as tf from '@tensorflow/tfjs';
import { blasStats, loadBlas, registerCpuBlas } from '../../layers/wasm_kernels';

const { addon } = loadBlas();
const itIf = addon ? it : it.skip;

const cases: [string, () => tf.Tensor][] = [
  ['2d', () => tf.matMul(tf.randomNormal([37, 53], 0, 1, 'float32', 1), tf.randomNormal([53, 29], 0, 1, 'float32', 2))],
  ['transposes', () => tf.matMul(tf.randomNormal([53, 37], 0, 1, 'float32', 3), tf.randomNormal([29, 53], 0, 1, 'float32', 4), true, true)],
  ['batched, broadcast b', () => tf.matMul(tf.randomNormal([3, 5, 17, 19], 0, 1, 'float32', 5), tf.randomNormal([19, 7], 0, 1, 'float32', 6))],
  ['fused bias + relu', () => tf.fused.matMul({ a: tf.randomNormal([31, 24], 0, 1, 'float32', 7), b: tf.randomNormal([13, 24], 0, 1, 'float32', 8), transposeB: true, bias: tf.randomNormal([13], 0, 1, 'float32', 9), activation: 'relu' })],
];

describe('cpu backend on OpenBLAS (VLM_CPU_BLAS=1)', () => {
  let prev = '';
  beforeAll(async () => {
    prev = tf.getBackend();
    await tf.setBackend('cpu');
  });
  afterAll(async () => {
    await tf.setBackend(prev);
  });

  itIf('matches the stock kernels', () => {
    const want = cases.map(([, f]) => tf.tidy(() => f().dataSync() as Float32Array));
    registerCpuBlas(addon!);
    const calls = blasStats.calls;
    cases.forEach(([name, f], i) => {
      const got = tf.tidy(() => f().dataSync() as Float32Array);
      let d = 0, m = 0;
      for (let k = 0; k < got.length; k++) { d = Math.max(d, Math.abs(got[k] - want[i][k])); m = Math.max(m, Math.abs(want[i][k])); }
      if (!(d <= 1e-5 * m)) throw new Error(`${name}: max rel err ${d / m}`);
    });
    expect(blasStats.calls - calls).toBe(cases.length);
  });
});
