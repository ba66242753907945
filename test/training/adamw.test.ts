/**
 * AdamW (training/adamw.ts) against hand-computed torch-1.13 steps, its argument checks,
 * null gradients, and a step leaving no tensor behind.
 */
import * as tf from '@tensorflow/tfjs';
import { AdamW } from '../../training/adamw';
import { expectNoLeak } from '../helpers/memory';

// Reference Python code (numpy float32, the torch 1.13 `_single_tensor_adamw` formula):
//   f32 = np.float32
//   p = np.array([1.0, -2.0, 0.5, 3.0], f32); m = v = zeros
//   gs = [[0.1, -0.2, 0.0, 1e-9], [-0.3, 0.4, 0.05, 2e-9], [0.2, 0.1, -0.05, -1e-9]]  (float32)
//   lr, b1, b2, eps, wd = 1e-2, 0.9, 0.999, 1e-8, 0.1
//   for t, g in enumerate(gs, 1):
//       p = p * f32(1 - lr * wd)
//       m = m * f32(b1) + g * f32(1 - b1); v = v * f32(b2) + (g * g) * f32(1 - b2)
//       denom = np.sqrt(v) / f32(np.sqrt(1 - b2 ** t)) + f32(eps)
//       p = p - (m / denom) * f32(lr / (1 - b1 ** t))
const EXPECTED = [
  [0.9890000224113464, -1.9880000352859497, 0.49950000643730164, 2.996090888977051],
  [0.9929529428482056, -1.989673137664795, 0.49155914783477783, 2.991776943206787],
  [0.9917721152305603, -1.9918400049209595, 0.49151942133903503, 2.988264799118042],
];
const GRADS = [[0.1, -0.2, 0.0, 1e-9], [-0.3, 0.4, 0.05, 2e-9], [0.2, 0.1, -0.05, -1e-9]];

describe('AdamW', () => {
  it('three steps equal the torch formula (decay first, bias corrections), split across two parameters', () => {
    const a = tf.variable(tf.tensor1d([1.0, -2.0]));
    const b = tf.variable(tf.tensor2d([[0.5, 3.0]]));
    const opt = new AdamW([a, b], { lr: 1e-2, betas: [0.9, 0.999], eps: 1e-8, weightDecay: 0.1 });
    GRADS.forEach((g, t) => {
      const ga = tf.tensor1d(g.slice(0, 2)), gb = tf.tensor2d([g.slice(2)]);
      opt.applyGradients([ga, gb]);
      tf.dispose([ga, gb]);
      const got = [...a.dataSync(), ...b.dataSync()];
      got.forEach((v, i) => expect(Math.abs(v - EXPECTED[t][i])).toBeLessThanOrEqual(2e-7 * Math.max(1, Math.abs(EXPECTED[t][i]))));
    });
    expect(opt.step).toBe(3);
    opt.dispose();
    tf.dispose([a, b]);
  });

  it('defaults are torch.optim.AdamW(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2)', () => {
    const a = tf.variable(tf.scalar(1));
    const opt = new AdamW([a]);
    expect([opt.lr, opt.betas, opt.eps, opt.weightDecay]).toEqual([1e-3, [0.9, 0.999], 1e-8, 1e-2]);
    // first step moves by lr·sign(g) after the decay: 1·(1 − 1e-5) − 1e-3·(1/(1 + 1e-8/|g|))
    const g = tf.scalar(0.5);
    opt.applyGradients([g]);
    expect(a.dataSync()[0]).toBeCloseTo(0.99999 - 1e-3 / (1 + 2e-8), 6);
    tf.dispose([a, g]);
    opt.dispose();
  });

  it('a null gradient leaves the parameter and its moments untouched', () => {
    const a = tf.variable(tf.tensor1d([1, 2]));
    const b = tf.variable(tf.tensor1d([3]));
    const opt = new AdamW([a, b], { lr: 0.1, weightDecay: 0.5 });
    const g = tf.tensor1d([1, 1]);
    opt.applyGradients([g, null]);
    expect(Array.from(b.dataSync())).toEqual([3]);
    expect(Array.from(opt.state().v![1].dataSync())).toEqual([0]);
    tf.dispose([a, b, g]);
    opt.dispose();
  });

  it('rejects bad hyper-parameters and mismatched gradients, naming them', () => {
    const a = tf.variable(tf.tensor1d([1, 2]));
    expect(() => new AdamW([a], { lr: -1 })).toThrow('Invalid learning rate: -1');
    expect(() => new AdamW([a], { betas: [1, 0.999] })).toThrow('Invalid beta parameter at index 0: 1');
    expect(() => new AdamW([a], { betas: [0.9, -0.1] })).toThrow('Invalid beta parameter at index 1: -0.1');
    expect(() => new AdamW([a], { eps: -1 })).toThrow('Invalid epsilon value: -1');
    expect(() => new AdamW([a], { weightDecay: -0.1 })).toThrow('Invalid weight_decay value: -0.1');
    expect(() => new AdamW([])).toThrow('empty parameter list');
    expect(() => new AdamW([a, a])).toThrow('more than once');
    const opt = new AdamW([a]);
    const g = tf.tensor1d([1, 2, 3]);
    expect(() => opt.applyGradients([g])).toThrow(/gradient 0 has shape \[3\], its parameter .* is \[2\]/);
    expect(() => opt.applyGradients([])).toThrow('0 gradients for 1 parameters');
    tf.dispose([a, g]);
    opt.dispose();
  });

  it('a step leaves tf.memory().numTensors unchanged', async () => {
    const a = tf.variable(tf.randomNormal([4, 3]));
    const g = tf.randomNormal([4, 3]);
    const opt = new AdamW([a], { weightDecay: 0.01 });
    await expectNoLeak('AdamW step', () => opt.applyGradients([g]));
    opt.dispose();
    tf.dispose([a, g]);
  });
});
