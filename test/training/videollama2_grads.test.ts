/**
 * VideoLLaMA 2 training step against upstream for both tiny fixtures (Mistral + CLIP + STC with
 * a video; Qwen2 + SigLIP + STC v35 with an image): the spliced labels, the loss (HF causal shift +
 * CrossEntropyLoss over them), the gradient of every trainable parameter of the finetune stage (LLM
 * + connector; the vision tower is frozen and runs outside the tape) mapped back to the checkpoint
 * layout and keys (`model.mm_projector.*`, conv weights from HWIO/DHWIO/[kh, kw, C, 1]), and three
 * AdamW steps on `model.mm_projector.*`.
 */
import * as tf from '@tensorflow/tfjs';
import { loadTrainer } from '../../training/finetune';
import { Trainer } from '../../training/trainer';
import { VideoLLaMA2 } from '../../models/videollama2/modeling';
import { VideoLLaMA2TrainBatch } from '../../models/videollama2/train_data';
import { readParam } from '../../weights/load';
import { Golden, expectSameInts, itIf } from '../helpers/golden';
import { TrainFx, checkAdamW3, checkGrads, trainFixture } from './helpers';

const FIXTURES: TrainFx[] = ['videollama2_clip_mistral_tiny', 'videollama2_siglip_qwen2_tiny'];

describe.each(FIXTURES)('%s: one training step equals upstream', (name) => {
  const fx = trainFixture(name);
  const g = new Golden(fx.golden);
  let trainer: Trainer;
  let batch: VideoLLaMA2TrainBatch;
  let grads: Map<string, tf.Tensor>;
  let loss: number;
  beforeAll(async () => {
    trainer = await loadTrainer(fx.model, { data: fx.data, dataRoot: fx.dataRoot });
    batch = trainer.family.collate([await trainer.family.data!.example(0)]) as VideoLLaMA2TrainBatch;
    ({ loss, grads } = trainer.lossAndGrads(batch));
  });
  afterAll(() => {
    tf.dispose([...(grads?.values() ?? [])]);
    trainer?.dispose();
    g.close();
  });

  it('trains the LLM and the connector (finetune stage), never the tower', () => {
    expect(trainer.tune).toEqual(['llm', 'mm_projector']);
    expect(trainer.params.some((p) => p.key.startsWith('model.vision_tower.'))).toBe(false);
    expect(trainer.params.every((p) => /^(model\.|lm_head\.)/.test(p.key))).toBe(true);
  });

  it('spliced labels and the loss equal upstream', () => {
    const model = trainer.family.model as VideoLLaMA2;
    const px = batch.media[0]!;
    const pixels = tf.tensor4d(px.pixels.data, px.pixels.shape);
    const sp = model.prepareInputsEmbeds(batch.inputIds[0], [{ modal: px.modal, pixels }], { labels: batch.labels[0], attentionMask: batch.attentionMask[0] });
    expectSameInts('spliced.labels', sp.labels!, g.ints('spliced.labels'));
    expectSameInts('spliced.attention_mask', sp.attentionMask, g.ints('spliced.attention_mask'));
    tf.dispose([pixels, sp.inputsEmbeds]);
    const ref = g.get('loss').data[0];
    expect(Math.abs(loss - ref)).toBeLessThanOrEqual(1e-4 + 1e-4 * Math.abs(ref));
  });

  it('gradients of the bundled set (connector, LLM layers and norms, used embedding / lm_head rows)', () => {
    const r = checkGrads(g, grads);
    expect(r.checked).toBe(trainer.params.length); // every trainable tensor is in the bundled golden (some as @rows)
    console.log(`${name}: ${r.checked} gradients, worst relative error ${r.worst.toExponential(2)} (${r.worstName})`);
  });

  itIf(fx.fullGolden)('every gradient of the full golden (../shared), vocabulary-sized ones whole', () => {
    const full = new Golden(fx.fullGolden!);
    try {
      const r = checkGrads(full, grads);
      expect(r.checked).toBe(trainer.params.length);
      console.log(`${name}: all ${r.checked} gradients (full golden), worst relative error ${r.worst.toExponential(2)} (${r.worstName})`);
    } finally {
      full.close();
    }
  });
});

describe.each(FIXTURES)('%s: three AdamW steps on model.mm_projector.* equal upstream', (name) => {
  const fx = trainFixture(name);
  const g = new Golden(fx.golden);
  afterAll(() => g.close());

  it('losses before each step and the connector after three steps (lr 1e-3, wd 0.01)', async () => {
    const trainer = await loadTrainer(fx.model, { data: fx.data, dataRoot: fx.dataRoot, tune: ['model.mm_projector'], lr: 1e-3, weightDecay: 0.01 });
    try {
      expect(trainer.params.every((p) => p.key.startsWith('model.mm_projector.'))).toBe(true);
      const batch = trainer.family.collate([await trainer.family.data!.example(0)]);
      const losses = [0, 1, 2].map(() => trainer.step([batch]).loss);
      const ref = g.get('adamw3.losses').data as Float32Array;
      losses.forEach((l, i) => expect(Math.abs(l - ref[i])).toBeLessThanOrEqual(1e-4 + 1e-4 * Math.abs(ref[i])));
      const r = checkAdamW3(g, trainer.params.map((p) => ({ key: p.key, value: readParam(p.param).data })), (k) => g.get(`grad.${k}`).data as Float32Array);
      expect(r.checked).toBe(trainer.params.length);
      console.log(`${name} adamw3: losses ${losses.map((l) => l.toFixed(6)).join(', ')}; max |Δ| ${r.maxErr.toExponential(2)} over regular elements; ` +
        `${r.noise} noise-driven elements (|g| < 1e-7, max |Δ| ${r.noiseMaxErr.toExponential(2)})`);
    } finally {
      trainer.dispose();
    }
  });
});
