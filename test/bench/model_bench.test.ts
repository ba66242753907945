/**
 * `vlm bench --model` (bench/model.ts) on the tiny fixtures, at small sizes: the case names, a
 * multi-frame vision case for a family that samples videos to a fixed frame count (VideoLLaMA 2:
 * `vision{T}x448`, T distinct frames through the tower), none for MiniCPM-V, and no tensor left;
 * the decode rounds that `--interleave` alternates with llama.cpp's, and its flag errors.
 */
import * as tf from '@tensorflow/tfjs';
import { loadChatModel } from '../../models/registry';
import { benchModel, decodeRunner } from '../../bench/model';
import { command as bench } from '../../scripts/bench';
import { UsageError, parseCommand } from '../../scripts/cli';
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

describe('decode rounds (what --interleave alternates with llama.cpp)', () => {
  it('times each round from the same cached context and leaves no tensor', async () => {
    const chat = await loadChatModel(modelFixture('minicpmv26_tiny')!);
    try {
      decodeRunner(chat, { context: 16, decode: 2 }).dispose(); // builds the rotary tables
      const before = tf.memory().numTensors;
      const runner = decodeRunner(chat, { context: 16, decode: 3 });
      try {
        for (const seed of [1, 2, 1]) expect(await runner.run(seed)).toBeGreaterThan(0);
      } finally {
        runner.dispose();
      }
      expect(tf.memory().numTensors).toBe(before);
    } finally {
      chat.dispose();
    }
  });

  it.each([
    [['--interleave', '3'], /--interleave needs --llamacpp/],
    [['--interleave', '0', '--llamacpp', __filename], /--interleave: must be >= 1/],
    [['--llamacpp', '/nonexistent/peer.gguf'], /--llamacpp: \/nonexistent\/peer\.gguf does not exist/],
  ])('%j is refused before the model loads', async (args, msg) => {
    const { opts, positionals } = parseCommand(bench, ['--model', '/nonexistent/model', ...args]);
    const p = bench.run(opts, positionals);
    await expect(p).rejects.toThrow(UsageError);
    await expect(p).rejects.toThrow(msg);
  });
});
