/**
 * Prefill in chunks of positions (generation/generate.ts PREFILL_CHUNK, llama.cpp's ubatch): the
 * last logits and the KV cache equal a one-shot prefill up to float32 round-off, greedy ids are
 * the same, and nothing leaks.
 */
import * as tf from '@tensorflow/tfjs';
import { CausalLM } from '../../layers/decoder';
import { KVCache } from '../../layers/kv_cache';
import { PREFILL_CHUNK, asGenerationModel, generate, prefillChunk } from '../../generation/generate';
import { loadFixtureLLM, modelFixture } from '../helpers/fixtures';

const dir = modelFixture('videollama2_siglip_qwen2_tiny');
const itIf = dir ? it : it.skip;

const maxRel = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let d = 0, m = 0;
  for (let i = 0; i < b.length; i++) { d = Math.max(d, Math.abs(a[i] - b[i])); m = Math.max(m, Math.abs(b[i])); }
  return d / m;
};

describe('chunked prefill', () => {
  it('chunk size: 512 positions, fewer (multiples of 64, ≥ 64) when the scores would pass 64 MB', () => {
    expect(prefillChunk(512, 28)).toBe(PREFILL_CHUNK); // Qwen2-7B prefill512: 29 MB of scores
    expect(prefillChunk(45, 2)).toBe(PREFILL_CHUNK);
    expect(prefillChunk(1662, 32)).toBe(256); // VideoLLaMA 2, 16 frames: 315 fit
    expect(prefillChunk(1e6, 32)).toBe(64);
    expect(prefillChunk(0, 32)).toBe(PREFILL_CHUNK);
  });

  let lm: CausalLM;
  beforeAll(() => { if (dir) lm = loadFixtureLLM(dir, 'videollama2_siglip_qwen2_tiny'); });
  afterAll(() => lm?.dispose());

  itIf('equals the one-shot prefill (logits, cache, greedy ids); no leak', async () => {
    const H = lm.cfg.hiddenSize, T = 45;
    const x = tf.randomNormal([1, T, H], 0, 1, 'float32', 5) as tf.Tensor3D;
    const whole = asGenerationModel(lm, { prefillChunk: 1000 }), chunked = asGenerationModel(lm, { prefillChunk: 16 });
    { const w = new KVCache(lm.cfg.numHiddenLayers); chunked.forwardLast(x, w).dispose(); w.dispose(); } // rotary tables are made once
    const n0 = tf.memory().numTensors;
    const ca = new KVCache(lm.cfg.numHiddenLayers), cb = new KVCache(lm.cfg.numHiddenLayers);
    const a = whole.forwardLast(x, ca), b = chunked.forwardLast(x, cb);
    expect(b.shape).toEqual(a.shape);
    expect(maxRel(b.dataSync(), a.dataSync())).toBeLessThan(1e-5);
    expect(cb.seqLength).toBe(T);
    ca.layers.forEach((l, i) => {
      expect(maxRel(cb.layers[i].keys!.dataSync(), l.keys!.dataSync())).toBeLessThan(1e-5);
      expect(maxRel(cb.layers[i].values!.dataSync(), l.values!.dataSync())).toBeLessThan(1e-5);
    });
    tf.dispose([a, b]);
    ca.dispose();
    cb.dispose();
    expect(tf.memory().numTensors).toBe(n0);
    const ga = await generate(whole, { inputsEmbeds: x }, { maxNewTokens: 6 });
    const gb = await generate(chunked, { inputsEmbeds: x }, { maxNewTokens: 6 });
    expect(gb.tokens).toEqual(ga.tokens);
    x.dispose();
  });
});
