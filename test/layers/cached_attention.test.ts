/**
 * Cached attention (layers/cached_attention.ts): the native kernel equals the composite `attend`
 * on a KV cache with spare capacity (causal rows, sliding window, grouped heads), a decoder's greedy
 * decode with it equals the composite path (VLM_NATIVE_ATTENTION=0), and the in-place cache
 * (grow, reserve, crop, selectBatch, views) leaks nothing.
 */
import * as tf from '@tensorflow/tfjs';
import { attend, attendGrouped, attendHeads, attentionLimits, causalMask } from '../../layers/attention';
import { cachedAttention, cachedAttentionReady, cachedAttentionStats } from '../../layers/cached_attention';
import { CausalLM } from '../../layers/decoder';
import { KVCache } from '../../layers/kv_cache';
import { asGenerationModel, generate } from '../../generation/generate';
import { loadFixtureLLM, modelFixture } from '../helpers/fixtures';

const maxRel = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let d = 0, m = 0;
  for (let i = 0; i < b.length; i++) { d = Math.max(d, Math.abs(a[i] - b[i])); m = Math.max(m, Math.abs(b[i])); }
  return d / m;
};

const ready = () => cachedAttentionReady();

describe('cached attention kernel', () => {
  const cases = [
    { B: 1, Hkv: 4, G: 7, T: 1, D: 128, past: 1023, cap: 1280, window: -1 },
    { B: 2, Hkv: 2, G: 3, T: 1, D: 16, past: 40, cap: 64, window: -1 },
    { B: 1, Hkv: 2, G: 2, T: 5, D: 32, past: 17, cap: 30, window: -1 },
    { B: 1, Hkv: 1, G: 4, T: 3, D: 24, past: 50, cap: 60, window: 9 }, // D % 16 != 0: the scalar path
    { B: 1, Hkv: 3, G: 1, T: 2, D: 64, past: 0, cap: 8, window: -1 },
    { B: 1, Hkv: 2, G: 3, T: 4, D: 32, past: 70, cap: 80, window: 20 }, // vector path with a window
    { B: 1, Hkv: 1, G: 12, T: 1, D: 16, past: 5, cap: 6, window: -1 }, // R > 8: two row groups
  ];
  for (const c of cases) {
    it(`equals attend: ${JSON.stringify(c)}`, () => {
      if (!ready()) return; // cpu backend or no addon: the composite path runs instead
      const { B, Hkv, G, T, D, past, cap, window } = c, S = past + T;
      const n0 = tf.memory().numTensors;
      tf.tidy(() => {
        const q = tf.randomNormal([B, Hkv, G * T, D], 0, 1, 'float32', 1) as tf.Tensor4D;
        const K = tf.randomNormal([B, Hkv, cap, D], 0, 1, 'float32', 2) as tf.Tensor4D;
        const V = tf.randomNormal([B, Hkv, cap, D], 0, 1, 'float32', 3) as tf.Tensor4D;
        const calls = cachedAttentionStats.calls;
        const got = cachedAttention(q, K, V, { S, past, T, div: Math.sqrt(D), window });
        expect(cachedAttentionStats.calls).toBe(calls + 1);
        const k = K.slice([0, 0, 0, 0], [B, Hkv, S, D]), v = V.slice([0, 0, 0, 0], [B, Hkv, S, D]);
        const mask = causalMask({ pastLength: past, T, slidingWindow: window >= 0 ? window : null });
        const addMask = mask && ((sc: tf.Tensor) => tf.add(sc.reshape([B, Hkv, G, T, S]), mask.reshape([1, 1, 1, T, S])).reshape([B, Hkv, G * T, S]));
        const want = attend(q, k, v, { div: Math.sqrt(D) }, addMask);
        expect(got.shape).toEqual(want.shape);
        expect(maxRel(got.dataSync(), want.dataSync())).toBeLessThan(2e-6);
      });
      expect(tf.memory().numTensors).toBe(n0);
    });
  }

  it('rejects shapes that run past the heap or the cache', () => {
    if (!ready()) return;
    tf.tidy(() => {
      const q = tf.zeros([1, 2, 2, 16]) as tf.Tensor4D, K = tf.zeros([1, 2, 8, 16]) as tf.Tensor4D;
      expect(() => cachedAttention(q, K, K, { S: 9, past: 8, T: 1, div: 4 })).toThrow(/bad shape/);
      expect(() => cachedAttention(q, K, K, { S: 4, past: 4, T: 1, div: 4 })).toThrow(/bad shape/);
    });
  });
});

/** `run()` under each score budget equals `whole` bit for bit and leaks nothing; the budget is restored. */
function expectSameUnderBudgets(whole: tf.Tensor, budgets: number[], run: () => tf.Tensor): void {
  const saved = attentionLimits.scoreBytes, n0 = tf.memory().numTensors;
  try {
    for (const b of budgets) {
      attentionLimits.scoreBytes = b;
      const split = run();
      expect(split.shape).toEqual(whole.shape);
      expect(Array.from(split.dataSync())).toEqual(Array.from(whole.dataSync()));
      split.dispose();
      expect(tf.memory().numTensors).toBe(n0);
    }
  } finally {
    attentionLimits.scoreBytes = saved;
  }
}

describe('attendGrouped: KV heads a few at a time under a score budget', () => {
  test.each([
    { B: 1, Hkv: 5, G: 3, T: 7, past: 9, masked: true },
    { B: 1, Hkv: 4, G: 2, T: 6, past: 0, masked: false },
    { B: 2, Hkv: 3, G: 2, T: 5, past: 4, masked: true },
  ])('B=$B Hkv=$Hkv G=$G T=$T past=$past masked=$masked: bit-equal to one call, nothing leaked', ({ B, Hkv, G, T, past, masked }) => {
    const D = 16, S = past + T;
    const q = tf.randomNormal([B, Hkv, G * T, D], 0, 1, 'float32', 1) as tf.Tensor4D;
    const k = tf.randomNormal([B, Hkv, S, D], 0, 1, 'float32', 2) as tf.Tensor4D;
    const v = tf.randomNormal([B, Hkv, S, D], 0, 1, 'float32', 3) as tf.Tensor4D;
    const mask = masked ? causalMask({ pastLength: past, T, slidingWindow: 5 }) : null;
    const whole = attendGrouped(q, k, v, 4, mask, G, T);
    // 1 and 2 KV heads per call
    expectSameUnderBudgets(whole, [1, 2].map((heads) => heads * B * G * T * S * 4), () => attendGrouped(q, k, v, 4, mask, G, T));
    tf.dispose([whole, q, k, v, mask].filter((t): t is tf.Tensor4D => !!t));
  });
});

describe('attendHeads (vision): heads a few at a time with a key-padding mask', () => {
  test('B=2, 5 heads, [B, 1, 1, N] mask, multiplied scale: bit-equal to attend, nothing leaked', () => {
    const B = 2, H = 5, N = 9, D = 8;
    const [q, k, v] = [21, 22, 23].map((seed) => tf.randomNormal([B, H, N, D], 0, 1, 'float32', seed) as tf.Tensor4D);
    const m = new Float32Array(B * N); m[N - 1] = -3.4e38; m[N + 2] = -3.4e38;
    const mask = tf.tensor4d(m, [B, 1, 1, N]);
    const whole = attend(q, k, v, { mul: 0.3 }, mask);
    expectSameUnderBudgets(whole, [2 * B * N * N * 4], () => attendHeads(q, k, v, { mul: 0.3 }, () => mask)); // 2 heads per call: 2 + 2 + 1
    tf.dispose([whole, q, k, v, mask]);
  });
});

const dir = modelFixture('videollama2_siglip_qwen2_tiny');
const itIf = dir ? it : it.skip;

describe('decoder with the in-place KV cache', () => {
  let lm: CausalLM;
  beforeAll(() => { if (dir) lm = loadFixtureLLM(dir, 'videollama2_siglip_qwen2_tiny'); });
  afterAll(() => lm?.dispose());

  const withComposite = async <R>(f: () => Promise<R>): Promise<R> => {
    process.env.VLM_NATIVE_ATTENTION = '0';
    try { return await f(); } finally { delete process.env.VLM_NATIVE_ATTENTION; }
  };

  itIf('greedy decode equals the composite path (logits, cache, ids); crop, selectBatch and grow leak nothing', async () => {
    const H = lm.cfg.hiddenSize, T = 300; // > one 256-position capacity step: the buffers grow while decoding
    const x = tf.randomNormal([1, T, H], 0, 1, 'float32', 7) as tf.Tensor3D;
    const g = asGenerationModel(lm, { prefillChunk: 128 });
    const step = (cache: KVCache, id: number) => tf.tidy(() => g.forwardLast(g.embed(tf.tensor2d([[id]], [1, 1], 'int32')), cache));
    const run = (cache: KVCache) => {
      const out: number[][] = [];
      g.forwardLast(x, cache).dispose();
      for (let i = 0; i < 12; i++) { const l = step(cache, 3 + i); out.push(Array.from(l.dataSync())); l.dispose(); }
      return out;
    };
    run(new KVCache(lm.cfg.numHiddenLayers)); // warm-up (rotary tables)
    const n0 = tf.memory().numTensors;
    const calls = cachedAttentionStats.calls;
    const ca = new KVCache(lm.cfg.numHiddenLayers);
    const a = run(ca);
    if (ready()) expect(cachedAttentionStats.calls - calls).toBe(12 * lm.cfg.numHiddenLayers);
    const cb = await withComposite(async () => new KVCache(lm.cfg.numHiddenLayers));
    const b = await withComposite(async () => run(cb));
    a.forEach((row, i) => expect(maxRel(row, b[i])).toBeLessThan(1e-5));
    expect(ca.seqLength).toBe(T + 12);
    ca.layers.forEach((l, i) => expect(maxRel(l.keys!.dataSync(), cb.layers[i].keys!.dataSync())).toBeLessThan(1e-5));
    // crop then decode again: the same as on the composite cache
    ca.crop(T + 4);
    await withComposite(async () => cb.crop(T + 4));
    const la = step(ca, 9), lb = await withComposite(async () => step(cb, 9));
    expect(maxRel(la.dataSync(), lb.dataSync())).toBeLessThan(1e-5);
    ca.selectBatch([0]);
    const lc = step(ca, 11);
    expect(lc.shape).toEqual(la.shape);
    if (ready()) { // keys of another batch size are refused, not copied past the buffers
      const { numKeyValueHeads: Hkv, headDim: D } = lm.cfg;
      const bad = tf.zeros([2, Hkv, 1, D]) as tf.Tensor4D;
      expect(() => ca.layers[0].append(bad, bad)).toThrow(/KV cache holds \[1, /);
      bad.dispose();
    }
    tf.dispose([la, lb, lc]);
    ca.dispose();
    cb.dispose();
    expect(tf.memory().numTensors).toBe(n0);
    const ga = await generate(g, { inputsEmbeds: x }, { maxNewTokens: 6 });
    const gb = await withComposite(() => generate(g, { inputsEmbeds: x }, { maxNewTokens: 6 }));
    expect(ga.tokens).toEqual(gb.tokens);
    x.dispose();
  });

  itIf('reserve: a chunked prefill allocates its buffers once, with the same keys and logits', () => {
    if (!ready()) return;
    const H = lm.cfg.hiddenSize, T = 600;
    const x = tf.randomNormal([1, T, H], 0, 1, 'float32', 8) as tf.Tensor3D;
    const g = asGenerationModel(lm, { prefillChunk: 128 });
    const n0 = tf.memory().numTensors;
    const plain = new KVCache(lm.cfg.numHiddenLayers), reserved = new KVCache(lm.cfg.numHiddenLayers);
    reserved.reserve(T + 8);
    const odd = new KVCache(lm.cfg.numHiddenLayers);
    odd.reserve(T + 3); // rounded up to a multiple of 16
    const capsOf = (c: KVCache) => {
      const caps: number[] = [], l = c.layers[0], append = l.append.bind(l);
      l.append = (k, v) => { append(k, v); caps.push(l.buffers()!.k.shape[2]); };
      return caps;
    };
    const cp = capsOf(plain), cr = capsOf(reserved), co = capsOf(odd);
    const a = g.forwardLast(x, plain), b = g.forwardLast(x, reserved), c = g.forwardLast(x, odd);
    expect(co).toEqual([608, 608, 608, 608, 608]);
    expect(Array.from(c.dataSync())).toEqual(Array.from(a.dataSync()));
    expect(cr).toEqual([608, 608, 608, 608, 608]); // 5 chunks, one allocation of ⌈608 / 16⌉·16
    expect(cp).toEqual([512, 512, 512, 512, 1024]); // ⌈(need + 256) / 256⌉·256 when full: grown (and copied) once
    expect(Array.from(b.dataSync())).toEqual(Array.from(a.dataSync()));
    plain.layers.forEach((l, i) => expect(Array.from(reserved.layers[i].keys!.dataSync())).toEqual(Array.from(l.keys!.dataSync())));
    tf.dispose([a, b, c]);
    plain.dispose();
    reserved.dispose();
    odd.dispose();
    expect(tf.memory().numTensors).toBe(n0);
    x.dispose();
  });
});
