import * as tf from '@tensorflow/tfjs';
import { backendInfo, describeBackend, resolveBackendName } from '../../layers/backend';
import { blasStats } from '../../layers/wasm_kernels';

/** out[batch, M, N] for a [..., M, K] (or [..., K, M]) times b; outer dims broadcast by modulo. */
function naiveMatMul(a: ArrayLike<number>, sa: number[], b: ArrayLike<number>, sb: number[], ta: boolean, tb: boolean): number[] {
  const ra = sa.length, rb = sb.length;
  const M = ta ? sa[ra - 1] : sa[ra - 2], K = ta ? sa[ra - 2] : sa[ra - 1], N = tb ? sb[rb - 2] : sb[rb - 1];
  const bA = a.length / (M * K), bB = b.length / (K * N), batch = Math.max(bA, bB);
  const out: number[] = [];
  for (let t = 0; t < batch; t++) {
    const oa = (t % bA) * M * K, ob = (t % bB) * K * N;
    for (let i = 0; i < M; i++) for (let j = 0; j < N; j++) {
      let s = 0;
      for (let k = 0; k < K; k++) s += a[oa + (ta ? k * M + i : i * K + k)] * b[ob + (tb ? j * K + k : k * N + j)];
      out.push(s);
    }
  }
  return out;
}

describe('backend', () => {
  it('reports the active backend', () => {
    const info = backendInfo()!;
    expect(info.backend).toBe(tf.getBackend());
    expect(describeBackend(info)).toContain(info.backend);
  });

  it('rejects unknown names, naming the argument', () => {
    expect(() => resolveBackendName('tpu')).toThrow(/--backend: unknown backend 'tpu'/);
    expect(resolveBackendName('tfjs-node')).toBe('tensorflow');
    expect(resolveBackendName('WASM')).toBe('wasm');
  });

  it('matmul variants match the cpu reference', () => {
    const rng = (n: number, seed: number) => {
      const a = new Float32Array(n);
      let s = seed;
      for (let i = 0; i < n; i++) { s = (s * 1103515245 + 12345) % 2147483648; a[i] = s / 2147483648 - 0.5; }
      return a;
    };
    const cases: [number[], number[], boolean, boolean][] = [
      [[37, 53], [53, 29], false, false],
      [[53, 37], [53, 29], true, false],
      [[37, 53], [29, 53], false, true],
      [[53, 37], [29, 53], true, true],
      [[3, 4, 17, 9], [3, 4, 9, 11], false, false],
      [[1, 17, 9], [5, 9, 11], false, false],
      [[5, 17, 9], [9, 11], false, false],
      [[1, 64], [64, 300], false, false],
      [[1, 64], [300, 64], false, true],
    ];
    const before = blasStats.calls;
    for (const [sa, sb, ta, tb] of cases) {
      const a = tf.tensor(rng(sa.reduce((x, y) => x * y), 1), sa);
      const b = tf.tensor(rng(sb.reduce((x, y) => x * y), 2), sb);
      const got = tf.matMul(a, b, ta, tb).arraySync() as number[];
      const bias = tf.tensor1d(rng(sb[tb ? sb.length - 2 : sb.length - 1], 3));
      const gotF = tf.fused.matMul({ a, b, transposeA: ta, transposeB: tb, bias, activation: 'relu' });
      // reference: a naive JS matmul over the (broadcast) batches
      const flat = (x: unknown): number[] => (Array.isArray(x) ? x.flatMap(flat) : [x as number]);
      const r = naiveMatMul(a.dataSync(), sa, b.dataSync(), sb, ta, tb);
      const g = flat(got);
      expect(g.length).toBe(r.length);
      let maxErr = 0;
      for (let i = 0; i < g.length; i++) maxErr = Math.max(maxErr, Math.abs(g[i] - r[i]));
      expect(maxErr).toBeLessThan(1e-5);
      const gf = flat(gotF.arraySync()), bArr = bias.dataSync();
      const n = bArr.length;
      let maxErrF = 0;
      for (let i = 0; i < gf.length; i++) maxErrF = Math.max(maxErrF, Math.abs(gf[i] - Math.max(0, r[i] + bArr[i % n])));
      expect(maxErrF).toBeLessThan(1e-5);
      tf.dispose([a, b, bias, gotF]);
    }
    if (backendInfo()!.kernels.includes('BatchMatMul(openblas)')) expect(blasStats.calls).toBeGreaterThan(before);
  });
});
