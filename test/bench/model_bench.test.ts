/**
 * `vlm bench --model` (bench/model.ts) on the tiny fixtures, at small sizes: the case names, a
 * multi-frame vision case for a family that samples videos to a fixed frame count (VideoLLaMA 2:
 * `vision{T}x448`, T distinct frames through the tower), none for MiniCPM-V, and no tensor left.
 */
import * as tf from '@tensorflow/tfjs';
import { loadChatModel } from '../../models/registry';
import { benchModel } from '../../bench/model';
import { modelFixture } from '../helpers/fixtures';

const SMALL = { repeats: 1, prefill: 8, context: 16, decode: 2 };

describe('benchModel on the tiny fixtures', () => {
  it.each([
    ['videollama2_clip_mistral_tiny', true],
    ['minicpmv26_tiny', false],
  ])('%s', async (name, multiFrame) => {
    const chat = await loadChatModel(modelFixture(name)!);
    try {
      await benchModel(chat, SMALL); // first use builds the modules' rotary / position tables
      const before = tf.memory().numTensors;
      const cases = await benchModel(chat, SMALL);
      expect(tf.memory().numTensors).toBe(before);
      const T = (chat as unknown as { videoFrames?: number }).videoFrames;
      expect(T !== undefined).toBe(multiFrame);
      expect(cases.map((c) => c.name)).toEqual(['prefill8', 'decode2@16', 'vision448', ...(multiFrame ? [`vision${T}x448`] : [])]);
      for (const c of cases) {
        expect(c.runs.length).toBe(1);
        expect(c.ms).toBeGreaterThan(0);
      }
    } finally {
      chat.dispose();
    }
  });
});
