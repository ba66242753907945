/**
 * The MiniCPM-V bench builders (models/minicpmv/bench_cases.ts) at tiny dimensions: they build
 * random-weight modules from a config, run, and dispose everything. The real-size cases
 * (siglip.layer.1024, resampler.1024) are the same code with the real configs.
 */
import * as tf from '@tensorflow/tfjs';
import { fillParam } from '../../layers/init';
import { MINICPMV_BENCH_CASES, SIGLIP_400M_NAVIT, buildResampler, resamplerCase, siglipLayerCase } from '../../models/minicpmv/bench_cases';

describe('MiniCPM-V bench cases', () => {
  it('are named as the benchmark expects', () => {
    expect(MINICPMV_BENCH_CASES.map((c) => c.name)).toEqual(['siglip.layer.1024', 'resampler.1024']);
  });

  it('build, run and dispose at tiny size without leaking', async () => {
    const before = tf.memory().numTensors;
    const tiny = { ...SIGLIP_400M_NAVIT, hidden_size: 32, intermediate_size: 64, num_attention_heads: 4 };
    for (const c of [siglipLayerCase(tiny, 16), resamplerCase({ numQueries: 4, embedDim: 32, numHeads: 2, kvDim: 16, normEps: 1e-6 }, 16)]) {
      const p = await c.prepare();
      expect(p.flops).toBeGreaterThan(0);
      const out = (await p.run()) as tf.Tensor;
      expect(out.shape[0]).toBe(1);
      expect(Array.from(out.dataSync()).every(Number.isFinite)).toBe(true);
      out.dispose();
      p.dispose();
    }
    expect(tf.memory().numTensors).toBe(before);
  });

  it('take a custom parameter filler (fillParam keeps the q/k/v chunking of in_proj_weight)', () => {
    const r = buildResampler({ numQueries: 2, embedDim: 8, numHeads: 1, kvDim: null, normEps: 1e-6 }, (m) => {
      for (const [, p] of m.namedParams()) fillParam(p, (n) => new Float32Array(n).fill(0.01));
    });
    expect(r.attn.in_proj_weight.chunks.length).toBe(3);
    const y = r.forward(tf.ones([1, 4, 8]) as tf.Tensor3D, [[2, 2]]);
    expect(y.shape).toEqual([1, 2, 8]);
    y.dispose();
    r.dispose();
  });
});
