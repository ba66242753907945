/**
 * LoRA on a frozen natively-stored base (QLoRA-style): the base matrices in q8_0 outside tfjs, the
 * adapters and the fully-trained parts (`--tune`) float32 tfjs variables. The native matmul's
 * gradient w.r.t. x carries the loss back into the adapters of earlier layers.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { loadNativeAddon } from '../../layers/native_weight';
import { loadTrainer } from '../../training/finetune';
import { trainFixture } from './helpers';

const { addon, reason } = loadNativeAddon();
if (!addon) console.log(`skipped: ${reason}`);
const itIf = addon ? it : it.skip;

const vq = trainFixture('videollama2_siglip_qwen2_tiny');
let tmp: string;
let data: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vlm-qlora-'));
  const s = JSON.parse(fs.readFileSync(vq.data, 'utf8'))[0];
  data = path.join(tmp, 'data.json');
  fs.writeFileSync(data, JSON.stringify([{ ...s, image: path.join(vq.dataRoot, s.image) }]));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('QLoRA-style training (base in q8_0)', () => {
  itIf('trains adapters and --tune parts over a q8_0 base; the loss goes down; no tensor leaks', async () => {
    const t = await loadTrainer(vq.model, {
      data, lr: 5e-2, quantize: 'q8_0', tune: ['mm_projector'],
      lora: { r: 4, alpha: 8, targetModules: ['q_proj', 'v_proj', 'down_proj'] },
    });
    try {
      const model = t.family.model as unknown as { llm: { model: { layers: { self_attn: { q_proj: { weight: { storage: { dtype: string } } } } }[] } } };
      expect(model.llm.model.layers[0].self_attn.q_proj.weight.storage.dtype).toBe('q8_0');
      expect(t.params.some((p) => p.key.includes('lora_A'))).toBe(true);
      expect(t.params.some((p) => p.key.startsWith('model.mm_projector'))).toBe(true);
      const batch = t.family.collate([await t.family.data!.example(0)]);
      const losses: number[] = [];
      losses.push(t.step([batch]).loss); // the first step creates the AdamW moments
      const n0 = tf.memory().numTensors;
      for (let i = 1; i < 4; i++) losses.push(t.step([batch]).loss);
      expect(tf.memory().numTensors).toBe(n0);
      expect(losses[3]).toBeLessThan(losses[0]);
      // the adapters of the first layer got gradients through the native matmuls above them
      const g = t.lossAndGrads(batch);
      const a0 = [...g.grads].find(([k]) => k.includes('layers.0.self_attn.q_proj.lora_B'));
      expect(a0).toBeDefined();
      expect(Math.max(...Array.from(a0![1].dataSync()).map(Math.abs))).toBeGreaterThan(0);
      for (const [, v] of g.grads) v.dispose();
    } finally {
      t.dispose();
    }
  });

  itIf('full training of a natively stored part is refused with what to do', async () => {
    await expect(loadTrainer(vq.model, { data, quantize: 'q8_0', tune: ['llm'] }).then((t) => t.dispose()))
      .resolves.toBeUndefined(); // --tune llm keeps the LLM float32 (trainable)
    await expect(loadTrainer(vq.model, { data, quantize: 'q8_0' })).rejects.toThrow(/held natively \(q8_0, outside tfjs\) and cannot be trained.*LoRA/);
  });
});
