/** `signal` cancels generation once per token, with finishReason 'abort' and no leaked tensors. */
import * as tf from '@tensorflow/tfjs';
import { GenerationModel, generate } from '../../generation/generate';
import { KVCache } from '../../layers/kv_cache';

/** A fake LM: token t is always followed by t + 1 (V = 50); counts forwards. */
function fakeModel(): GenerationModel & { forwards: number } {
  const V = 50;
  const m = {
    forwards: 0,
    numLayers: 1,
    maxPositions: 1000,
    vocabSize: V,
    embed: (ids: tf.Tensor2D) => tf.tidy(() => tf.oneHot(ids, V).toFloat() as tf.Tensor3D),
    forwardLast: (embeds: tf.Tensor3D, _cache: KVCache) => {
      m.forwards++;
      return tf.tidy(() => {
        const last = embeds.slice([0, embeds.shape[1] - 1, 0], [1, 1, V]);
        const next = tf.argMax(last, 2).add(1).mod(V);
        return tf.oneHot(next.toInt(), V).toFloat().mul(10) as tf.Tensor3D;
      });
    },
  };
  return m;
}

describe('generation abort signal', () => {
  it('stops within one token after abort, frees tensors, and returns the tokens so far', async () => {
    const model = fakeModel();
    const ac = new AbortController();
    const before = tf.memory().numTensors;
    const input = tf.tidy(() => tf.oneHot(tf.tensor2d([[3]], [1, 1], 'int32'), 50).toFloat() as tf.Tensor3D);
    const seen: number[] = [];
    const r = await generate(model, { inputsEmbeds: input }, { maxNewTokens: 20, signal: ac.signal }, {
      onToken: (s) => {
        seen.push(s.token);
        if (seen.length === 3) ac.abort();
      },
    });
    expect(r.finishReason).toBe('abort');
    expect(r.tokens).toEqual([4, 5, 6]);
    expect(model.forwards).toBe(3);
    input.dispose();
    expect(tf.memory().numTensors).toBe(before);
  });

  it('an already aborted signal generates nothing (greedy and beam search)', async () => {
    const model = fakeModel();
    const input = tf.tidy(() => tf.oneHot(tf.tensor2d([[3]], [1, 1], 'int32'), 50).toFloat() as tf.Tensor3D);
    const before = tf.memory().numTensors;
    const r = await generate(model, { inputsEmbeds: input }, { maxNewTokens: 5, signal: AbortSignal.abort() });
    expect(r).toEqual(expect.objectContaining({ tokens: [], finishReason: 'abort' }));
    const b = await generate(model, { inputsEmbeds: input }, { maxNewTokens: 5, numBeams: 2, signal: AbortSignal.abort() });
    expect(b.finishReason).toBe('abort');
    expect(model.forwards).toBe(0);
    expect(tf.memory().numTensors).toBe(before);
    input.dispose();
  });

  it('an abort from a timer (another macrotask) is seen during generation', async () => {
    const model = fakeModel();
    const input = tf.tidy(() => tf.oneHot(tf.tensor2d([[3]], [1, 1], 'int32'), 50).toFloat() as tf.Tensor3D);
    const r = await generate(model, { inputsEmbeds: input }, { maxNewTokens: 100000, signal: AbortSignal.timeout(20) });
    expect(r.finishReason).toBe('abort');
    expect(r.tokens.length).toBeLessThan(100000);
    input.dispose();
  });
});
