/**
 * Every decoder layer of a decode step (T = 1) in one native call, when every projection is in
 * native storage (real checkpoints: as stored, quantized at load, or a `vlm convert` copy).
 *
 * The composite path of a Qwen2 / Mistral layer (layers/decoder.ts) is ~20 kernels at decode:
 * seven native matvecs with rmsnorm, rotary, cache append, attention, silu·mul and two residual
 * adds between them. On a 7B model the JavaScript between the matvecs took 13–16 ms of a ~140 ms
 * step, mostly because each matvec had just streamed megabytes of weights through the caches that
 * the engine's code and objects live in: the same ops ran 3–5× faster with the matvecs stubbed out,
 * and one native call per layer still left ~170 µs of JavaScript between layers. `decodeLayers`
 * (native/tfjs-blas) runs all layers back to back with the same kernels in the same order, so its
 * output equals the composite path's bit for bit; the KV caches stay the in-place buffers of
 * layers/kv_cache.ts, written at position `past` by the native call.
 *
 * Taken only for inference on the wasm backend (`heapOpsReady`), with the caches' in-place buffers
 * usable (`cachedAttentionReady`), nothing masked, [T, D] rotary tables, no active LoRA adapter,
 * silu, up to MAX_ROWS sequences and no taps; anything else runs the composite path.
 * VLM_FUSED_DECODE=0 turns it off.
 *
 * Shape letters: B batch, E hidden, H heads, Hkv KV heads, D head dim.
 */
import * as tf from '@tensorflow/tfjs';
import { heapOpsReady, runHeapKernel, wasmOffset } from './heap_ops';
import { cachedAttentionReady } from './cached_attention';
import type { KVCache } from './kv_cache';
import { Linear } from './linear';
import type { NativeHandle } from './native_weight';
import { NativeStorage } from './native_storage';
import type { GQAttention } from './attention';
import type { GatedMLP } from './mlp';
import type { RMSNorm } from './norms';

/** What the fused call reads of a decoder layer (layers/decoder.ts DecoderLayer). */
export interface DecoderLayerParts {
  self_attn: GQAttention;
  mlp: GatedMLP;
  input_layernorm: RMSNorm;
  post_attention_layernorm: RMSNorm;
}

/** Handle of a Linear's weight when it is in native storage with no adapter in the way, else null. */
function nativeHandle(l: Linear): NativeHandle | null {
  if (l.lora && !l.lora.merged) return null;
  const s = l.weight.storage;
  return s instanceof NativeStorage ? s.weight.native : null;
}

/** Batch rows up to which the seven projections run as matvecs (the addon's default mvMax); larger batches take the composite path's GEMMs. */
const MAX_ROWS = 8;

/** The native handles [q, k, v, o, gate, up, down] of a layer the fused call can run, else null. */
function layerHandles(layer: DecoderLayerParts): NativeHandle[] | null {
  const attn = layer.self_attn, mlp = layer.mlp;
  if (mlp.act !== 'silu' || layer.input_layernorm.eps !== layer.post_attention_layernorm.eps) return null;
  if (layer.input_layernorm.weight.value.dtype !== 'float32' || layer.post_attention_layernorm.weight.value.dtype !== 'float32') return null;
  const linears = [attn.q_proj, attn.k_proj, attn.v_proj, attn.o_proj, mlp.gate_proj, mlp.up_proj, mlp.down_proj];
  if (linears.slice(3).some((l) => l.bias)) return null; // o/gate/up/down carry no bias in Qwen2 / Mistral
  const handles = linears.map(nativeHandle);
  return handles.every((h) => h !== null) ? (handles as NativeHandle[]) : null;
}

/**
 * The last layer's output [B, 1, E] for x [B, 1, E] (the model's inputs_embeds for this step) when
 * the fused call applies to every layer (each cache layer is appended to), else null: the caller
 * runs the composite path.
 */
export function fusedDecodeLayers(layers: DecoderLayerParts[], x: tf.Tensor3D, cos: tf.Tensor, sin: tf.Tensor, mask: tf.Tensor | null,
  cache: KVCache | null): tf.Tensor3D | null {
  const [B, T, E] = x.shape;
  if (T !== 1 || !cache || mask !== null || B > MAX_ROWS || layers.length === 0 || cache.layers.length !== layers.length) return null;
  if (cos.rank !== 2 || cos.shape[0] !== 1 || sin.rank !== 2 || x.dtype !== 'float32') return null;
  if (process.env.VLM_FUSED_DECODE === '0' || !heapOpsReady('decodeLayers') || !cachedAttentionReady()) return null;
  const { numHeads: H, numKVHeads: Hkv, headDim: D } = layers[0].self_attn.cfg;
  if (cos.shape[1] !== D) return null;
  const eps = layers[0].input_layernorm.eps;
  const handles: NativeHandle[] = [];
  for (const l of layers) {
    if (l.input_layernorm.eps !== eps) return null; // the native call takes one eps for every layer
    const h = layerHandles(l);
    if (!h) return null;
    handles.push(...h);
  }
  // per layer: norm weights, biases and the cache buffers, read and written where they lie in the heap
  const per: { ln1: tf.Tensor; ln2: tf.Tensor; b: (tf.Tensor | null)[]; k: tf.Tensor; v: tf.Tensor; cap: number; past: number }[] = layers.map((layer, i) => {
    const { k, v, past } = cache.layers[i].slots(B, Hkv, 1, D);
    const attn = layer.self_attn;
    return { ln1: layer.input_layernorm.weight.value, ln2: layer.post_attention_layernorm.weight.value,
      b: [attn.q_proj, attn.k_proj, attn.v_proj].map((l) => (l.bias ? l.bias.value : null)), k, v, cap: k.shape[2], past };
  });
  const out = runHeapKernel('NativeDecodeLayers', { x, cos, sin }, [B, 1, E], {}, (a, heap, [xo, co, so], o) => {
    const off = (t: tf.Tensor | null) => (t ? wasmOffset(t) : -1);
    const layerOffs: number[] = [];
    for (const p of per) layerOffs.push(off(p.ln1), off(p.ln2), off(p.b[0]), off(p.b[1]), off(p.b[2]), off(p.k), off(p.v), p.cap, p.past);
    a.decodeLayers!(heap, handles, [xo, o, co, so, B, H, Hkv, D, -1], layerOffs, eps);
  }) as tf.Tensor3D;
  for (const l of cache.layers) l.advance(1);
  return out;
}
