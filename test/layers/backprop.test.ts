/**
 * The frugal backward pass (layers/backprop.ts) against tfjs's own: bit-identical gradients (same
 * tape, same order), no leaked tensors, a lower peak (intermediate gradients and saved tensors
 * freed as the pass goes), the caller's dy left alone, and gradients w.r.t. intermediate tensors.
 */
import * as tf from '@tensorflow/tfjs';
import { withStockBackprop } from '../../layers/backprop';

/** A deep residual MLP with a shared weight and a two-output op (split), like a decoder stack. */
function net(x: tf.Tensor2D, ws: tf.Variable[]): tf.Scalar {
  let h: tf.Tensor2D = x;
  for (const w of ws) {
    const [a, b] = tf.split(tf.matMul(h, w), 2, 1);
    h = tf.add(h, tf.concat([tf.tanh(a), tf.mul(tf.sigmoid(b), a)], 1)) as tf.Tensor2D;
  }
  return tf.sum(tf.square(tf.matMul(h, ws[0])));
}

/** Loss, gradients, and the peak of live bytes during the backward pass (sampled at every kernel). */
function grads(x: tf.Tensor2D, ws: tf.Variable[]): { loss: number; g: Float32Array[]; peak: number } {
  let peak = 0;
  let backward = false;
  let out: { loss: number; g: Float32Array[] } | null = null;
  const run = () => {
    const { value, grads: gs } = tf.variableGrads(() => {
      const l = net(x, ws);
      backward = true; // the forward's own tidy frees its unsaved intermediates now
      return l;
    }, ws);
    out = { loss: value.dataSync()[0], g: ws.map((w) => gs[w.name].dataSync() as Float32Array) };
    value.dispose();
    tf.dispose(Object.values(gs));
  };
  const eng = tf.engine() as unknown as { state: { numBytes: number } };
  const orig = tf.engine().runKernel.bind(tf.engine());
  (tf.engine() as unknown as { runKernel: typeof orig }).runKernel = ((...a: Parameters<typeof orig>) => {
    const r = orig(...a);
    if (backward) peak = Math.max(peak, eng.state.numBytes);
    return r;
  }) as typeof orig;
  try {
    run();
  } finally {
    (tf.engine() as unknown as { runKernel: typeof orig }).runKernel = orig;
  }
  return { ...out!, peak };
}

describe('frugal backward pass', () => {
  const D = 64;
  let ws: tf.Variable[];
  let x: tf.Tensor2D;
  beforeAll(() => {
    ws = Array.from({ length: 12 }, (_, i) => tf.variable(tf.randomNormal([D, D], 0, 0.2, 'float32', 10 + i), true, `bp_w${i}`));
    x = tf.randomNormal([256, D], 0, 1, 'float32', 3) as tf.Tensor2D;
  });
  afterAll(() => tf.dispose([...ws, x]));

  it('bit-identical gradients, no leak, a lower backward peak', () => {
    grads(x, ws); // warm-up
    const n0 = tf.memory().numTensors;
    const lean = grads(x, ws);
    expect(tf.memory().numTensors).toBe(n0);
    const stock = withStockBackprop(() => grads(x, ws));
    expect(tf.memory().numTensors).toBe(n0);
    expect(lean.loss).toBe(stock.loss);
    lean.g.forEach((g, i) => expect(Array.from(g)).toEqual(Array.from(stock.g[i])));
    expect(lean.peak).toBeLessThan(0.6 * stock.peak);
  });

  it("leaves the caller's dy alone and differentiates w.r.t. intermediate tensors", () => {
    const n0 = tf.memory().numTensors;
    const dy = tf.onesLike(x);
    const h = tf.tanh(x);
    const f = (t: tf.Tensor) => tf.mul(tf.sigmoid(t), t);
    const [g] = tf.grads((t: tf.Tensor) => f(t))([h], dy);
    const [gs] = withStockBackprop(() => tf.grads((t: tf.Tensor) => f(t))([h], dy));
    expect(dy.isDisposed).toBe(false);
    expect(Array.from(g.dataSync())).toEqual(Array.from(gs.dataSync()));
    tf.dispose([dy, h, g, gs]);
    expect(tf.memory().numTensors).toBe(n0);
  });
});
