/**
 * MiniCPM-V 2.6 training step against upstream (tiny fixture, training golden): the loss
 * (CrossEntropyLoss over pre-shifted labels, no shift), the gradient of every parameter (upstream
 * fine-tunes everything: vpm, resampler, llm) mapped back to the checkpoint layout — Linear weights
 * held [in, out], the patch conv in HWIO, the resampler's packed in_proj as three row chunks — and
 * three AdamW steps on `resampler.*`. Gradients use the README metric
 * (max|a − b| ≤ 1e-3·max|b| + 1e-6; the analytically zero key biases against the 1e-6 floor only).
 */
import * as tf from '@tensorflow/tfjs';
import { loadTrainer } from '../../training/finetune';
import { Trainer } from '../../training/trainer';
import { readParam } from '../../weights/load';
import { Golden, itIf } from '../helpers/golden';
import { checkAdamW3, checkGrads, trainFixture } from './helpers';

const fx = trainFixture('minicpmv26_tiny');
/** Analytically zero gradients (README): attention key biases with no RoPE after them. */
const ZERO: Record<string, [number, number] | 'all'> = {
  'resampler.attn.in_proj_bias': [256, 512],
  'vpm.encoder.layers.0.self_attn.k_proj.bias': 'all',
  'vpm.encoder.layers.1.self_attn.k_proj.bias': 'all',
};
const opts = { data: fx.data, dataRoot: fx.dataRoot, tokenizerDir: fx.tokenizerDir };

describe('MiniCPM-V 2.6 tiny: one training step equals upstream', () => {
  let trainer: Trainer;
  let grads: Map<string, tf.Tensor>;
  let loss: number;
  const g = new Golden(fx.golden);
  beforeAll(async () => {
    trainer = await loadTrainer(fx.model, opts);
    const batch = trainer.family.collate([await trainer.family.data!.example(0)]);
    ({ loss, grads } = trainer.lossAndGrads(batch));
  });
  afterAll(() => {
    tf.dispose([...(grads?.values() ?? [])]);
    trainer?.dispose();
    g.close();
  });

  it('every parameter is trainable by default (tune_vision, tune_llm)', () => {
    expect(trainer.tune).toEqual(['llm', 'vpm', 'resampler']);
    expect(trainer.params.length).toBe(77); // = the golden's grad.* tensors (params_without_grad: [])
  });

  it('loss equals upstream (7.4887, 61 supervised positions)', () => {
    const ref = g.get('loss').data[0];
    expect(Math.abs(loss - ref)).toBeLessThanOrEqual(1e-4 + 1e-4 * Math.abs(ref));
  });

  it('gradients of the bundled subset (vpm, resampler, LLM norms/biases, used embedding and lm_head rows)', () => {
    const r = checkGrads(g, grads, ZERO);
    expect(r.checked).toBeGreaterThan(60);
    console.log(`minicpmv26_tiny: ${r.checked} bundled gradients, worst relative error ${r.worst.toExponential(2)} (${r.worstName})`);
  });

  itIf(fx.fullGolden)('every gradient of the full golden (../shared)', () => {
    const full = new Golden(fx.fullGolden!);
    try {
      const r = checkGrads(full, grads, ZERO);
      expect(r.checked).toBe(trainer.params.length);
      console.log(`minicpmv26_tiny: all ${r.checked} gradients, worst relative error ${r.worst.toExponential(2)} (${r.worstName})`);
    } finally {
      full.close();
    }
  });
});

describe('MiniCPM-V 2.6 tiny: three AdamW steps on resampler.* equal upstream', () => {
  const g = new Golden(fx.golden);
  afterAll(() => g.close());

  it('losses before each step and the resampler after three steps (lr 1e-3, wd 0.01)', async () => {
    const trainer = await loadTrainer(fx.model, { ...opts, tune: ['resampler'], lr: 1e-3, weightDecay: 0.01 });
    try {
      expect(trainer.params.map((p) => p.key).every((k) => k.startsWith('resampler.'))).toBe(true);
      const batch = trainer.family.collate([await trainer.family.data!.example(0)]);
      const losses = [0, 1, 2].map(() => trainer.step([batch]).loss);
      const ref = g.get('adamw3.losses').data as Float32Array;
      losses.forEach((l, i) => expect(Math.abs(l - ref[i])).toBeLessThanOrEqual(1e-4 + 1e-4 * Math.abs(ref[i])));
      const r = checkAdamW3(g, trainer.params.map((p) => ({ key: p.key, value: readParam(p.param).data })),
        (k) => g.get(`grad.${k}`).data as Float32Array, { 'resampler.attn.in_proj_bias': [256, 512] });
      expect(r.checked).toBe(13);
      console.log(`minicpmv26_tiny adamw3: losses ${losses.map((l) => l.toFixed(6)).join(', ')}; max |Δ| ${r.maxErr.toExponential(2)} over regular elements; ${r.noise} noise-driven elements (|g| < 1e-7, max |Δ| ${r.noiseMaxErr.toExponential(2)}) held to 3e-3`);
    } finally {
      trainer.dispose();
    }
  });
});
