/**
 * The training step on the pure-JS cpu backend (the fallback where wasm cannot hold a model):
 * loss and gradients equal upstream as on wasm. Kept small (cpu is slow): MiniCPM-V with the
 * resampler trainable (the backward still crosses the whole LLM), and the Qwen2/SigLIP
 * VideoLLaMA 2.1 fixture with its finetune-stage parameters.
 */
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../../layers/backend';
import { loadTrainer } from '../../training/finetune';
import { Golden } from '../helpers/golden';
import { checkGrads, trainFixture } from './helpers';

beforeAll(async () => {
  await initBackend({ backend: 'cpu' });
});

describe('training on the cpu backend', () => {
  it('runs on cpu with the linear UnsortedSegmentSum', () => {
    expect(tf.getBackend()).toBe('cpu');
  });

  it.each([
    ['minicpmv26_tiny', ['resampler'], { 'resampler.attn.in_proj_bias': [256, 512] as [number, number] }],
    ['videollama2_siglip_qwen2_tiny', undefined, {}],
  ] as const)('%s: loss and gradients equal upstream', async (name, tune, zero) => {
    const fx = trainFixture(name);
    const g = new Golden(fx.golden);
    const trainer = await loadTrainer(fx.model, { data: fx.data, dataRoot: fx.dataRoot, tokenizerDir: fx.tokenizerDir, tune: tune as string[] | undefined });
    try {
      const batch = trainer.family.collate([await trainer.family.data!.example(0)]);
      const t0 = performance.now();
      const { loss, grads } = trainer.lossAndGrads(batch);
      const ms = performance.now() - t0;
      try {
        const ref = g.get('loss').data[0];
        expect(Math.abs(loss - ref)).toBeLessThanOrEqual(1e-4 + 1e-4 * Math.abs(ref));
        // only the trainable tensors have gradients here: check those the golden has
        const sub = new Map([...grads].filter(([k]) => g.has(`grad.${k}`) || g.has(`grad.${k}@rows`)));
        const keep = new Set([...sub.keys()].flatMap((k) => [`grad.${k}`, `grad.${k}@rows`, `grad.${k}@rows.index`]));
        const view = { keys: () => g.keys().filter((k) => !k.startsWith('grad.') || keep.has(k)), get: (k: string) => g.get(k), ints: (k: string) => g.ints(k) } as unknown as Golden;
        const r = checkGrads(view, sub, zero);
        expect(r.checked).toBe(trainer.params.length);
        console.log(`cpu ${name}: loss ${loss.toFixed(6)}, ${r.checked} gradients, worst relative error ${r.worst.toExponential(2)}; step ${Math.round(ms)} ms`);
      } finally {
        tf.dispose([...grads.values()]);
      }
    } finally {
      trainer.dispose();
      g.close();
    }
  });
});
