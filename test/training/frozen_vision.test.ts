/**
 * A frozen vision tower runs outside the gradient tape (`TrainFamily.prepare`): the loss and the
 * gradients equal those of the in-tape run, and the tape holds fewer tensors (the tower's
 * activations are not kept for backward). Full-size MiniCPM-V LoRA needed this: the SigLIP
 * activations of one 448×448 image overflowed the wasm heap.
 */
import * as tf from '@tensorflow/tfjs';
import { loadTrainer } from '../../training/finetune';
import { Trainer } from '../../training/trainer';
import { trainFixture } from './helpers';

const fx = trainFixture('minicpmv26_tiny');

/** Loss, the gradient of every trainable variable, and the tensors alive when the forward ends (tape included). */
function run(t: Trainer, batch: unknown, trains?: (p: string) => boolean): { loss: number; grads: Float32Array[]; live: number } {
  const prep = t.family.prepare(batch, trains);
  let live = 0;
  try {
    const { value, grads } = tf.variableGrads(() => {
      const l = t.family.loss(batch, prep);
      live = tf.memory().numTensors;
      return l;
    }, [...t.variables]);
    const out = { loss: value.dataSync()[0], grads: t.variables.map((v) => grads[v.name].dataSync() as Float32Array), live };
    value.dispose();
    tf.dispose(Object.values(grads));
    return out;
  } finally {
    prep.dispose();
  }
}

type Run = ReturnType<typeof run>;

/**
 * Bit for bit needs the same kernels: outside the tape the frozen parts would otherwise take the
 * fused inference ops (layers/heap_ops.ts), which round differently from the composite ones.
 */
function compositeOps(f: () => void): void {
  process.env.VLM_NATIVE_OPS = '0';
  try {
    f();
  } finally {
    delete process.env.VLM_NATIVE_OPS;
  }
}

function expectSame(outside: Run, inTape: Run): void {
  expect(outside.loss).toBe(inTape.loss);
  outside.grads.forEach((g, i) => expect(Array.from(g)).toEqual(Array.from(inTape.grads[i])));
}

/** With the fused ops outside the tape: loss within 1e-6, every gradient within 5e-5 of its largest entry; no leak. */
function expectRoundOff(t: Trainer, batch: unknown): void {
  const inTape = run(t, batch);
  const n0 = tf.memory().numTensors;
  const outside = run(t, batch, t.trains);
  expect(tf.memory().numTensors).toBe(n0);
  expect(Math.abs(outside.loss - inTape.loss)).toBeLessThan(1e-6 * Math.abs(inTape.loss));
  outside.grads.forEach((g, i) => {
    const want = inTape.grads[i];
    let d = 0, m = 0;
    for (let j = 0; j < want.length; j++) { d = Math.max(d, Math.abs(g[j] - want[j])); m = Math.max(m, Math.abs(want[j])); }
    // features differ by ~1e-6 relative; a softmax backward (Σ p·(k − k̄)) cancels, which leaves
    // up to ~1.5e-5 relative in the gradients behind it
    expect(d).toBeLessThanOrEqual(5e-5 * m);
  });
}

describe('frozen vision outside the tape (MiniCPM-V)', () => {
  let t: Trainer;
  let batch: unknown;
  beforeAll(async () => {
    t = await loadTrainer(fx.model, {
      data: fx.data, dataRoot: fx.dataRoot, tokenizerDir: fx.tokenizerDir, tune: ['resampler'],
      lora: { r: 2, alpha: 4, dropout: 0, targetModules: 'llm\\..*\\.(q_proj|v_proj)' }, // a name list would also adapt vpm's q_proj / v_proj
    });
    batch = t.family.collate([await t.family.data!.example(0)]);
  });
  afterAll(() => t?.dispose());

  it('the trainer knows what it trains', () => {
    expect(t.trains('vpm')).toBe(false);
    expect(t.trains('resampler')).toBe(true);
    expect(t.trains('llm')).toBe(true); // adapters
  });

  it('same loss and gradients as in the tape, with fewer tensors held; nothing leaks', () => {
    compositeOps(() => {
      run(t, batch); // first run: caches (rotary tables) are made once
      const n0 = tf.memory().numTensors;
      const inTape = run(t, batch); // no predicate: everything counts as trained
      const outside = run(t, batch, t.trains);
      expect(tf.memory().numTensors).toBe(n0);
      expectSame(outside, inTape);
      expect(outside.live).toBeLessThan(inTape.live);
    });
  });

  it('with the fused inference ops in the frozen tower: the same loss and gradients to float32 round-off', () => {
    expectRoundOff(t, batch);
  });

  it('with vpm trained, vpm stays in the tape', async () => {
    const full = await loadTrainer(fx.model, { data: fx.data, dataRoot: fx.dataRoot, tokenizerDir: fx.tokenizerDir, tune: ['vpm.encoder.layers.0'] });
    try {
      expect(full.trains('vpm')).toBe(true);
      const b = full.family.collate([await full.family.data!.example(0)]);
      const prep = full.family.prepare(b, full.trains) as { vpmStates?: tf.Tensor; dispose(): void };
      expect(prep.vpmStates).toBeUndefined();
      prep.dispose();
    } finally {
      full.dispose();
    }
  });
});

describe('frozen tower and connector outside the tape (VideoLLaMA 2, LoRA on the LLM only)', () => {
  const vm = trainFixture('videollama2_clip_mistral_tiny');
  let t: Trainer;
  let batch: unknown;
  beforeAll(async () => {
    t = await loadTrainer(vm.model, { data: vm.data, dataRoot: vm.dataRoot, lora: { r: 2, alpha: 4, dropout: 0, targetModules: ['q_proj', 'v_proj'] } });
    batch = t.family.collate([await t.family.data!.example(0)]);
  });
  afterAll(() => t?.dispose());

  it('the connector output is prepared outside the tape; same loss and gradients; fewer tensors held', () => {
    expect(t.trains('mm_projector')).toBe(false);
    const prep = t.family.prepare(batch, t.trains) as unknown as { connected: (tf.Tensor | null)[]; dispose(): void };
    expect(prep.connected.some((c) => c !== null)).toBe(true);
    prep.dispose();
    compositeOps(() => {
      run(t, batch);
      const n0 = tf.memory().numTensors;
      const inTape = run(t, batch);
      const outside = run(t, batch, t.trains);
      expect(tf.memory().numTensors).toBe(n0);
      expectSame(outside, inTape);
      expect(outside.live).toBeLessThan(inTape.live);
    });
  });

  it('with the fused inference ops in the frozen tower and connector: the same loss and gradients to float32 round-off', () => {
    expectRoundOff(t, batch);
  });
});
