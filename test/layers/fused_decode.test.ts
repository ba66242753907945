/**
 * Fused decode (layers/fused_decode.ts): with every projection in native storage, a decode step runs
 * all decoder layers in one native call (`decodeLayers`). Its logits and KV caches equal the
 * composite path's (VLM_FUSED_DECODE=0, the same native weights) bit for bit for each storage type,
 * Qwen2 (q/k/v biases) and Mistral (none), one and two sequences, across a cache growth; it leaks
 * no tensor; float32 tfjs weights, taps and gradients keep the composite path; bad arguments to
 * the native call are errors naming the layer, projection or offset.
 */
import * as tf from '@tensorflow/tfjs';
import { CausalLM } from '../../layers/decoder';
import { heapOpStats } from '../../layers/heap_ops';
import { KVCache } from '../../layers/kv_cache';
import { Linear } from '../../layers/linear';
import { NativeStorage } from '../../layers/native_storage';
import { loadNativeAddon, NativeHandle, NativeType, NativeWeight, wasmHeap } from '../../layers/native_weight';
import { asGenerationModel } from '../../generation/generate';
import { cachedAttentionReady } from '../../layers/cached_attention';
import { loadFixtureLLM, modelFixture } from '../helpers/fixtures';

const KERNEL = 'NativeDecodeLayers';
const calls = () => heapOpStats[KERNEL] ?? 0;
/** Index and values of the first difference of two equal-length nested number arrays, or null (jest's diff of 10 × 150k logits takes minutes). */
function firstDiff(a: number[][], b: number[][]): string | null {
  if (a.length !== b.length) return `${a.length} rows vs ${b.length}`;
  for (let i = 0; i < a.length; i++) {
    if (a[i].length !== b[i].length) return `row ${i}: ${a[i].length} vs ${b[i].length} values`;
    for (let j = 0; j < a[i].length; j++) if (!Object.is(a[i][j], b[i][j])) return `[${i}][${j}]: ${a[i][j]} vs ${b[i][j]}`;
  }
  return null;
}
const ready = () => cachedAttentionReady() && !!loadNativeAddon().addon?.decodeLayers;

/** The seven projections of each layer, q k v o gate up down. */
function projections(lm: CausalLM): Linear[][] {
  return lm.model.layers.map((l) => [l.self_attn.q_proj, l.self_attn.k_proj, l.self_attn.v_proj, l.self_attn.o_proj, l.mlp.gate_proj, l.mlp.up_proj, l.mlp.down_proj]);
}

/** Moves the layers' projections into native storage of `type` (from their float32 values). */
function toNative(lm: CausalLM, type: NativeType): void {
  for (const lin of projections(lm).flat()) {
    const f = lin.weight.storage.toFloat32();
    lin.weight.setStorage(new NativeStorage(NativeWeight.quantize(f, type, [lin.outFeatures, lin.inFeatures])));
  }
}

async function composite<R>(f: () => R): Promise<R> {
  process.env.VLM_FUSED_DECODE = '0';
  try { return f(); } finally { delete process.env.VLM_FUSED_DECODE; }
}

/** Prefill of T positions for B sequences, then `steps` decode steps: logits per step and the caches' keys/values. */
function decode(lm: CausalLM, B: number, T: number, steps: number) {
  const g = asGenerationModel(lm);
  const E = lm.cfg.hiddenSize;
  const cache = new KVCache(lm.cfg.numHiddenLayers);
  const x = tf.randomNormal([B, T, E], 0, 1, 'float32', 11) as tf.Tensor3D;
  g.forwardLast(x, cache).dispose();
  x.dispose();
  const logits: number[][] = [];
  for (let i = 0; i < steps; i++) {
    const l = tf.tidy(() => g.forwardLast(g.embed(tf.tensor2d(Array.from({ length: B }, (_, b) => [(3 + 7 * i + 5 * b) % lm.cfg.vocabSize]), [B, 1], 'int32')), cache));
    logits.push(Array.from(l.dataSync()));
    l.dispose();
  }
  const kv = cache.layers.map((l) => [Array.from(l.keys!.dataSync()), Array.from(l.values!.dataSync())]);
  const length = cache.seqLength;
  cache.dispose();
  return { logits, kv, length };
}

for (const name of ['videollama2_siglip_qwen2_tiny', 'videollama2_clip_mistral_tiny']) {
  const dir = modelFixture(name);
  const describeIf = dir ? describe : describe.skip;
  describeIf(`fused decode: ${name}`, () => {
    let lm: CausalLM;
    beforeAll(() => { lm = loadFixtureLLM(dir!, name); });
    afterAll(() => lm?.dispose());

    it('float32 tfjs weights keep the composite path', () => {
      const c0 = calls();
      decode(lm, 1, 5, 2);
      expect(calls()).toBe(c0);
    });

    for (const type of ['f32', 'f16', 'bf16', 'q8_0', 'q4_0'] as NativeType[]) {
      it(`${type}: logits and caches equal the composite path bit for bit (B = 1 across a cache growth, B = 2); nothing leaks`, async () => {
        if (!ready()) return; // cpu backend or no addon: the composite path is the only one
        const fresh = loadFixtureLLM(dir!, name);
        try {
          toNative(fresh, type);
          decode(fresh, 1, 3, 1); // warm-up (rotary tables)
          for (const [B, T, steps] of [[1, 250, 10], [2, 9, 4]]) { // 250 + 10 crosses the 256-position capacity step
            const n0 = tf.memory().numTensors, c0 = calls();
            const a = decode(fresh, B, T, steps);
            expect(calls() - c0).toBe(steps);
            const b = await composite(() => decode(fresh, B, T, steps));
            expect(calls() - c0).toBe(steps);
            expect(a.length).toBe(T + steps);
            expect(firstDiff(a.logits, b.logits)).toBeNull();
            expect(firstDiff(a.kv.flat(), b.kv.flat())).toBeNull();
            expect(tf.memory().numTensors).toBe(n0);
          }
        } finally {
          fresh.dispose();
        }
      });
    }
  });
}

const qwen = modelFixture('videollama2_siglip_qwen2_tiny');
const itIf = qwen ? it : it.skip;

itIf('taps, gradient computations and layers with another eps keep the composite path', () => {
  if (!ready()) return;
  const lm = loadFixtureLLM(qwen!, 'videollama2_siglip_qwen2_tiny');
  try {
    toNative(lm, 'q8_0');
    const cache = new KVCache(lm.cfg.numHiddenLayers);
    const x = tf.randomNormal([1, 4, lm.cfg.hiddenSize], 0, 1, 'float32', 3) as tf.Tensor3D;
    lm.model.forward(x, { cache }).dispose();
    const step = tf.randomNormal([1, 1, lm.cfg.hiddenSize], 0, 1, 'float32', 4) as tf.Tensor3D;
    const c0 = calls();
    const seen: string[] = [];
    lm.model.forward(step, { cache, taps: (n) => seen.push(n) }).dispose();
    expect(seen).toContain('llm.layer0');
    expect(calls()).toBe(c0);
    const g = tf.grad((s: tf.Tensor) => lm.model.forward(s as tf.Tensor3D, { cache }).sum())(step);
    expect(calls()).toBe(c0);
    expect(g.shape).toEqual(step.shape);
    // the native call takes one rmsnorm eps for all layers: a layer with another eps keeps the composite path
    const last = lm.model.layers[lm.model.layers.length - 1] as unknown as Record<'input_layernorm' | 'post_attention_layernorm', { eps: number }>;
    const eps = last.input_layernorm.eps;
    last.input_layernorm.eps = last.post_attention_layernorm.eps = eps * 10; // consistent within the layer, not with layer 0
    lm.model.forward(step, { cache }).dispose();
    expect(calls()).toBe(c0);
    last.input_layernorm.eps = last.post_attention_layernorm.eps = eps;
    lm.model.forward(step, { cache }).dispose();
    expect(calls()).toBe(c0 + 1);
    tf.dispose([g, x, step]);
    cache.dispose();
  } finally {
    lm.dispose();
  }
});

itIf('decodeLayers names the layer, projection or offset it refuses', () => {
  if (!ready()) return;
  const lm = loadFixtureLLM(qwen!, 'videollama2_siglip_qwen2_tiny');
  try {
    toNative(lm, 'f32');
    const a = loadNativeAddon().addon!;
    const hs = projections(lm).map((ls) => ls.map((l) => (l.weight.storage as NativeStorage).weight.native));
    const { numAttentionHeads: H, numKeyValueHeads: Hkv, headDim: D } = lm.cfg;
    const t = tf.zeros([4096]);
    const heap = wasmHeap(tf.backend());
    const o = (tf.backend() as any).dataIdMap.get(t.dataId).memoryOffset / 4;
    const offs = [o, o + 64, o + 128, o + 144, 1, H, Hkv, D, -1];
    const per = [o, o, -1, -1, -1, o + 256, o + 512, 4, 0];
    const swapped: NativeHandle[] = [hs[0][1], hs[0][0], ...hs[0].slice(2)];
    expect(() => a.decodeLayers!(heap, swapped, offs, per, 1e-6)).toThrow(/layer 0 q_proj is \[32, 64\], expected \[64, 64\]/);
    expect(() => a.decodeLayers!(heap, hs[0].slice(1), offs, per, 1e-6)).toThrow(/7 handles per layer/);
    expect(() => a.decodeLayers!(heap, hs[0], offs, per.slice(1), 1e-6)).toThrow(/layerOffs must be an array of 9 numbers/);
    expect(() => a.decodeLayers!(heap, hs[0], offs, [o, o, -1, -1, -1, heap.length - 10, o, 4, 0], 1e-6)).toThrow(/layer 0 kOff .* runs past the heap/);
    expect(() => a.decodeLayers!(heap, hs[0], offs, [o, o, -1, -1, -1, o, o, 4, 4], 1e-6)).toThrow(/past=4 with cap=4/);
    expect(() => a.decodeLayers!(heap, hs[0], [o, -2, ...offs.slice(2)], per, 1e-6)).toThrow(/offs\[1\] must be an integer >= -1/);
    t.dispose();
  } finally {
    lm.dispose();
  }
});
