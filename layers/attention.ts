/**
 * Attention building blocks.
 *
 * - `causalMask`: the additive float mask of HF v4.40 `_prepare_4d_causal_attention_mask`
 *   (0 where allowed, float32 min where not; padding, causality and the sliding window).
 * - `attend`: softmax(q kᵀ / √D + mask) v in float32, eager like upstream (every attention calls it).
 * - `GQAttention`: grouped-query self-attention with rotary and a KV cache (Qwen2: q/k/v bias;
 *   Mistral: none). KV heads are not repeated: the query heads of a group are folded into the
 *   row axis ([B, Hkv, G·T, D]), which is the same math as HF `repeat_kv` without the copy
 *   (head h uses KV head ⌊h / G⌋).
 *
 * Shape letters: B batch, T new positions, S cached + new, H query heads, Hkv KV heads,
 * G = H / Hkv, D head dim.
 */
import * as tf from '@tensorflow/tfjs';
import { cachedAttention, cachedAttentionReady } from './cached_attention';
import { heapOpsReady, inGradient, sliceAxis, softmaxFused } from './heap_ops';
import { KVCacheLayer } from './kv_cache';
import { Linear } from './linear';
import { Module, register } from './module';
import { applyRotary } from './rotary';

/** torch.finfo(torch.float32).min, what HF fills masked scores with. */
export const FLOAT32_MIN = -3.4028234663852886e38;

export interface MaskOptions {
  /** Positions already in the cache. */
  pastLength: number;
  /** New positions. */
  T: number;
  /** Padding mask over all S = past + T positions, [B, S] of 0/1 (host array per row), or null. */
  padding?: number[][] | null;
  /** HF `sliding_window`: position q may see k only if q − k ≤ window. */
  slidingWindow?: number | null;
}

/**
 * Additive mask [B or 1, 1, T, S] (0 allowed / FLOAT32_MIN masked), or null when nothing is masked
 * (a single decode step without padding or window), so the add can be skipped.
 */
export function causalMask(opts: MaskOptions): tf.Tensor4D | null {
  const { pastLength: P, T } = opts;
  const S = P + T;
  const W = opts.slidingWindow ?? null;
  const pad = opts.padding ?? null;
  const windowHits = W !== null && S - 1 > W;
  const anyPad = pad !== null && pad.some((r) => r.some((v) => v === 0));
  if (T === 1 && !windowHits && !anyPad) return null;
  const B = anyPad ? pad!.length : 1;
  const m = new Float32Array(B * T * S);
  for (let b = 0; b < B; b++) {
    for (let i = 0; i < T; i++) {
      const q = P + i;
      for (let j = 0; j < S; j++) {
        const masked = j > q || (W !== null && q - j > W) || (anyPad && pad![b][j] === 0);
        m[(b * T + i) * S + j] = masked ? FLOAT32_MIN : 0;
      }
    }
  }
  return tf.tensor4d(m, [B, 1, T, S]);
}

/** How scores are scaled: divided by a number after the matmul (decoders), multiplied (SigLIP/CLIP), or not (pre-scaled q). */
export type ScoreScale = { div: number } | { mul: number } | null;

/**
 * The one attention core: softmax(q kᵀ ∘ scale + mask) v in float32, eager like upstream.
 * q [..., Tq, D], k and v [..., S, D]; `mask` is an additive tensor broadcastable to the scores,
 * or a function that adds it (for masks that need a reshape of the scores). Returns [..., Tq, D].
 */
export function attend(q: tf.Tensor, k: tf.Tensor, v: tf.Tensor, scale: ScoreScale,
  mask: tf.Tensor | ((scores: tf.Tensor) => tf.Tensor) | null): tf.Tensor {
  return tf.tidy(() => {
    // outside gradient computations each score-sized step frees its input at once (a prefill
    // chunk's scores are ~100 MB at 7B sizes; four alive at a time grew the wasm heap)
    const eager = !inGradient();
    let scores = tf.matMul(q, k, false, true); // [..., Tq, S]
    const then = (next: tf.Tensor) => {
      if (eager && next !== scores) scores.dispose();
      scores = next;
    };
    const fused = eager && scores.dtype === 'float32' && heapOpsReady('softmax'); // one native pass, on the pool
    if (fused && !mask) then(softmaxFused(scores, scale));
    else {
      if (scale && 'div' in scale) then(tf.div(scores, scale.div));
      else if (scale) then(tf.mul(scores, scale.mul));
      if (mask) then(typeof mask === 'function' ? mask(scores) : tf.add(scores, mask));
      then(fused ? softmaxFused(scores, null) : tf.softmax(scores, -1));
    }
    return tf.matMul(scores, v); // [..., Tq, D]
  });
}

/** Bytes of scores one `attend` call inside `attendHeads` may materialize outside gradients (tests lower it). */
export const attentionLimits = { scoreBytes: 16 * 2 ** 20 };

/**
 * `attend` over the heads (axis 1) of q [B, H, R, D] and k/v [B, H, S, D], a few heads at a time
 * outside gradients so the scores [B, n, R, S] stay under `attentionLimits.scoreBytes` (a 16-frame
 * VideoLLaMA 2 prefill chunk had 54 MB of scores per step, two steps alive, in a wasm heap that
 * never shrinks; a SigLIP-so400m layer on 2 frames 68 MB). `maskFor(n)`: the mask of n heads. The
 * same per-row arithmetic either way.
 */
export function attendHeads(q: tf.Tensor4D, k: tf.Tensor4D, v: tf.Tensor4D, scale: ScoreScale,
  maskFor: (heads: number) => tf.Tensor | ((scores: tf.Tensor) => tf.Tensor) | null): tf.Tensor4D {
  const [B, H, R] = q.shape, S = k.shape[2];
  const n = inGradient() ? H : Math.max(1, Math.min(H, Math.floor(attentionLimits.scoreBytes / (B * R * S * 4))));
  if (n >= H) return attend(q, k, v, scale, maskFor(H)) as tf.Tensor4D;
  return tf.tidy(() => {
    const parts: tf.Tensor[] = [];
    for (let h0 = 0; h0 < H; h0 += n) {
      const m = Math.min(n, H - h0);
      const [qh, kh, vh] = [q, k, v].map((t) => sliceAxis(t, 1, h0, m));
      parts.push(attend(qh, kh, vh, scale, maskFor(m)));
      tf.dispose([qh, kh, vh]);
    }
    const ctx = tf.concat(parts, 1) as tf.Tensor4D;
    tf.dispose(parts);
    return ctx;
  });
}

/**
 * `attendHeads` for grouped heads: q [B, Hkv, G·T, D], k/v [B, Hkv, S, D], mask [B|1, 1, T, S]
 * (it broadcasts over the G query heads of a group) → [B, Hkv, G·T, D].
 */
export function attendGrouped(q: tf.Tensor4D, k: tf.Tensor4D, v: tf.Tensor4D, div: number, mask: tf.Tensor | null, G: number, T: number): tf.Tensor4D {
  const B = q.shape[0], S = k.shape[2];
  return attendHeads(q, k, v, { div }, (h) => mask && ((sc: tf.Tensor) =>
    tf.add(sc.reshape([B, h, G, T, S]), mask.reshape([mask.shape[0], 1, 1, T, S])).reshape([B, h, G * T, S])));
}

export interface GQAConfig {
  hiddenSize: number;
  numHeads: number;
  numKVHeads: number;
  headDim: number;
  /** q/k/v projections carry a bias (Qwen2). */
  qkvBias: boolean;
}

/**
 * Grouped-query self-attention. Checkpoint keys: `q_proj`, `k_proj`, `v_proj`, `o_proj`
 * (`.weight`, `.bias` where configured).
 */
export class GQAttention extends Module {
  static className = 'GQAttention';
  readonly cfg: GQAConfig;
  q_proj: Linear;
  k_proj: Linear;
  v_proj: Linear;
  o_proj: Linear;

  constructor(cfg: GQAConfig) {
    super();
    if (cfg.numHeads % cfg.numKVHeads !== 0) {
      throw new Error(`num_attention_heads (${cfg.numHeads}) must be a multiple of num_key_value_heads (${cfg.numKVHeads})`);
    }
    this.cfg = cfg;
    const { hiddenSize: E, numHeads: H, numKVHeads: Hkv, headDim: D, qkvBias } = cfg;
    this.q_proj = new Linear(E, H * D, { bias: qkvBias });
    this.k_proj = new Linear(E, Hkv * D, { bias: qkvBias });
    this.v_proj = new Linear(E, Hkv * D, { bias: qkvBias });
    this.o_proj = new Linear(H * D, E, { bias: false });
  }

  /**
   * x [B, T, E]; cos/sin [T, D] or [B, T, D]; mask [B|1, 1, T, S] or null; cache layer (appended to).
   * Returns [B, T, E].
   */
  forward(x: tf.Tensor3D, cos: tf.Tensor, sin: tf.Tensor, mask: tf.Tensor | null, cache: KVCacheLayer | null): tf.Tensor3D {
    return tf.tidy(() => {
      const [B, T] = x.shape;
      const { numHeads: H, numKVHeads: Hkv, headDim: D } = this.cfg;
      const G = H / Hkv;
      // Rotary tables broadcast over [B, Hkv, G, T, D].
      const c = cos.rank === 2 ? cos : cos.reshape([B, 1, 1, T, D]);
      const s = sin.rank === 2 ? sin : sin.reshape([B, 1, 1, T, D]);
      const ck = cos.rank === 2 ? cos : cos.reshape([B, 1, T, D]);
      const sk = sin.rank === 2 ? sin : sin.reshape([B, 1, T, D]);

      // T = 1 (decode): [B, 1, heads, D] is already head-major, a reshape instead of a transpose
      const q = T === 1 ? this.q_proj.forward(x).reshape([B, Hkv, G, 1, D])
        : this.q_proj.forward(x).reshape([B, T, Hkv, G, D]).transpose([0, 2, 3, 1, 4]); // [B, Hkv, G, T, D]
      const headMajor = (t: tf.Tensor) => (T === 1 ? t.reshape([B, Hkv, 1, D]) : t.reshape([B, T, Hkv, D]).transpose([0, 2, 1, 3])) as tf.Tensor4D;
      let k = headMajor(this.k_proj.forward(x)); // [B, Hkv, T, D]
      let v = headMajor(this.v_proj.forward(x)); // [B, Hkv, T, D]
      const qr = applyRotary(q, c, s).reshape([B, Hkv, G * T, D]); // [B, Hkv, G·T, D]
      k = applyRotary(k, ck, sk) as tf.Tensor4D;
      if (cache && mask === null && T === 1 && cachedAttentionReady()) {
        // decode step: append in place, attend on the cache buffers [B, Hkv, cap, D] (layers/cached_attention.ts)
        const past = cache.seqLength;
        cache.append(k, v);
        const buf = cache.buffers()!;
        const ctx = cachedAttention(qr as tf.Tensor4D, buf.k, buf.v, { S: buf.length, past, T, div: Math.sqrt(D) }); // [B, Hkv, G, D]
        return this.o_proj.forward(ctx.reshape([B, T, H * D])) as tf.Tensor3D; // T = 1: [B, Hkv, G, 1, D] is already head-major
      }
      if (cache) [k, v] = cache.update(k, v); // [B, Hkv, S, D]
      const ctx = attendGrouped(qr as tf.Tensor4D, k, v, Math.sqrt(D), mask, G, T); // [B, Hkv, G·T, D]
      const merged = ctx.reshape([B, Hkv, G, T, D]).transpose([0, 3, 1, 2, 4]).reshape([B, T, H * D]); // head h = kv·G + g
      return this.o_proj.forward(merged) as tf.Tensor3D;
    });
  }
}
register(GQAttention);
