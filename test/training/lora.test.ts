/**
 * LoRA exactness without new goldens, on the three tiny training fixtures: with
 * W_eff = W + s·B·A, dL/dB = s·(dL/dW_eff)·Aᵀ and dL/dA = s·Bᵀ·(dL/dW_eff) (nonzero A and B,
 * dropout 0); merging the adapters reproduces the adapted model's logits; merge → unmerge is the
 * identity within float32 round-off. Plus peft's target rules, init and scaling.
 */
import * as tf from '@tensorflow/tfjs';
import { Linear } from '../../layers/linear';
import { loadTrainer } from '../../training/finetune';
import { LoraModel, kaimingUniform, matchesTarget, parseTargetModules } from '../../training/lora';
import { toCheckpointTensor } from '../../training/params';
import { Trainer } from '../../training/trainer';
import { readParam } from '../../weights/load';
import { TrainFx, trainFixture } from './helpers';

const TARGETS = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];

/** Captures the lm_head output (the logits) of the next forward. */
function captureLogits(trainer: Trainer): { get: () => Float32Array; restore: () => void } {
  const head = (trainer.family.model as unknown as { llm: { lm_head: Linear } }).llm.lm_head;
  const orig = head.forward;
  let last: Float32Array | null = null;
  head.forward = (x: tf.Tensor) => {
    const y = orig.call(head, x);
    last = y.dataSync() as Float32Array;
    return y;
  };
  return { get: () => last!, restore: () => { head.forward = orig; } };
}

function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]));
  return m;
}
function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

describe.each<TrainFx>(['minicpmv26_tiny', 'videollama2_clip_mistral_tiny', 'videollama2_siglip_qwen2_tiny'])('LoRA on %s', (name) => {
  const fx = trainFixture(name);
  let trainer: Trainer;
  let lora: LoraModel;
  let batch: unknown;
  beforeAll(async () => {
    trainer = await loadTrainer(fx.model, {
      data: fx.data, dataRoot: fx.dataRoot, ...(name === 'minicpmv26_tiny' ? { tokenizerDir: fx.tokenizerDir } : {}),
      lora: { r: 3, alpha: 7, dropout: 0, targetModules: TARGETS },
    });
    lora = trainer.lora!;
    // nonzero A and B (peft starts B at zero, where dL/dA vanishes)
    lora.entries.forEach((e, i) => {
      e.B.value.assign(tf.tensor2d(kaimingUniform(e.B.shape[0], e.B.shape[1], 1000 + i), e.B.shape as [number, number]));
    });
    batch = trainer.family.collate([await trainer.family.data!.example(0)]);
  });
  afterAll(() => trainer?.dispose());

  it('trains only the adapters, under peft keys', () => {
    expect(trainer.params.length).toBe(2 * lora.entries.length);
    expect(lora.entries.length).toBeGreaterThan(4);
    for (const p of trainer.params) expect(p.key).toMatch(/^base_model\.model\..*\.lora_[AB]\.weight$/);
    expect(trainer.groups.map((g) => g.name)).toEqual(['main']);
  });

  it('dL/dB = s·G·Aᵀ and dL/dA = s·Bᵀ·G with G = dL/dW_eff; merged logits = adapted logits; unmerge restores W', () => {
    const cap = captureLogits(trainer);
    try {
      const { loss, grads } = trainer.lossAndGrads(batch);
      const adaptedLogits = cap.get();
      const before = lora.entries.map((e) => readParam(e.linear.weight).data);
      lora.merge();
      // gradient w.r.t. the merged weights (forward now skips the adapters)
      const prep = trainer.family.prepare(batch);
      const wvars = lora.entries.map((e) => e.linear.weight.value);
      const { value, grads: gw } = tf.variableGrads(() => trainer.family.loss(batch, prep), wvars);
      const mergedLogits = cap.get();
      prep.dispose();
      expect(Math.abs(value.dataSync()[0] - loss)).toBeLessThan(1e-5 * Math.max(1, Math.abs(loss)));
      value.dispose();
      const logitErr = maxDiff(mergedLogits, adaptedLogits) / maxAbs(adaptedLogits);
      expect(logitErr).toBeLessThan(1e-5);
      let worst = 0;
      lora.entries.forEach((e, i) => {
        tf.tidy(() => {
          const G = toCheckpointTensor(e.linear.weight, [gw[wvars[i].name]]); // [out, in]
          const s = lora.scaling;
          const A = e.A.value, B = e.B.value;
          const wantB = tf.mul(tf.matMul(G, A, false, true), s).dataSync(); // [out, r]
          const wantA = tf.mul(tf.matMul(B, G, true, false), s).dataSync(); // [r, in]
          const gotB = grads.get(`base_model.model.${e.name}.lora_B.weight`)!.dataSync();
          const gotA = grads.get(`base_model.model.${e.name}.lora_A.weight`)!.dataSync();
          for (const [got, want, what] of [[gotB, wantB, 'B'], [gotA, wantA, 'A']] as const) {
            const ref = maxAbs(want);
            expect(ref).toBeGreaterThan(0);
            const rel = maxDiff(got, want) / ref;
            if (!(rel < 1e-4)) throw new Error(`${e.name} lora_${what}: max|ours − s·(…)| / max = ${rel}`);
            worst = Math.max(worst, rel);
          }
        });
      });
      tf.dispose(Object.values(gw));
      tf.dispose([...grads.values()]);
      lora.unmerge();
      lora.entries.forEach((e, i) => {
        const after = readParam(e.linear.weight).data;
        const err = maxDiff(after, before[i]);
        expect(err).toBeLessThanOrEqual(4 * 2 ** -24 * (maxAbs(before[i]) + lora.scaling * 1)); // float32 round-off of (W + d) − d
      });
      // unmerged again: the adapted logits come back
      trainer.lossAndGrads(batch).grads.forEach((t) => t.dispose());
      expect(maxDiff(cap.get(), adaptedLogits) / maxAbs(adaptedLogits)).toBeLessThan(1e-5);
    } finally {
      cap.restore();
    }
  });
});

describe('peft rules', () => {
  it('target_modules: a string is a full-match regex, a list matches equal names or "."-suffixes', () => {
    const re = 'llm\\..*layers\\.\\d+\\.self_attn\\.(q_proj|k_proj|v_proj)';
    expect(matchesTarget('llm.model.layers.0.self_attn.q_proj', re)).toBe(true);
    expect(matchesTarget('llm.model.layers.0.self_attn.o_proj', re)).toBe(false);
    expect(matchesTarget('vpm.encoder.layers.0.self_attn.q_proj', re)).toBe(false);
    expect(matchesTarget('x.llm.model.layers.0.self_attn.q_proj', re)).toBe(false); // fullmatch, not search
    expect(matchesTarget('model.layers.3.mlp.up_proj', ['up_proj'])).toBe(true);
    expect(matchesTarget('model.layers.3.mlp.xup_proj', ['up_proj'])).toBe(false);
    expect(matchesTarget('up_proj', ['up_proj'])).toBe(true);
    expect(parseTargetModules('q_proj,v_proj')).toEqual(['q_proj', 'v_proj']);
    expect(parseTargetModules('model\\.layers\\.0\\..*')).toBe('model\\.layers\\.0\\..*');
  });
  it('A is kaiming_uniform(a=√5): U(−1/√in, 1/√in), seeded', () => {
    const a = kaimingUniform(8, 100, 1);
    expect(maxAbs(a)).toBeLessThanOrEqual(0.1);
    expect(maxAbs(a)).toBeGreaterThan(0.09);
    expect(kaimingUniform(8, 100, 1)).toEqual(a);
    expect(kaimingUniform(8, 100, 2)).not.toEqual(a);
  });
});
