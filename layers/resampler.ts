/**
 * The perceiver resampler of MiniCPM-V 2.5/2.6 (upstream `resampler.py` `Resampler`, the
 * "adaptive" 2-D sincos version) and the torch `nn.MultiheadAttention` it is built on
 * (torch 1.13 `torch/nn/functional.py` `multi_head_attention_forward`, non-fast path):
 *
 *   x   = ln_kv(kv_proj(x))                          kv_proj: Linear(kv_dim → D, no bias), or
 *                                                    Identity when kv_dim == D
 *   q   = ln_q(query)                                learnable [Q, D], the same for every image
 *   out = attn(q, key = x + pos_embed, value = x, key_padding_mask = padded patches)
 *   y   = ln_post(out) @ proj                        proj: a [D, D] Parameter (no transpose)
 *
 * Checkpoint keys: `query` [Q, D], `kv_proj.weight` [D, kv_dim], `attn.in_proj_weight` [3D, D]
 * (q, k, v rows packed), `attn.in_proj_bias` [3D], `attn.out_proj.{weight,bias}`,
 * `ln_q`/`ln_kv`/`ln_post.{weight,bias}` (LayerNorm eps 1e-6: `norm_layer=partial(nn.LayerNorm,
 * eps=1e-6)`), `proj` [D, D]. `pos_embed` is a non-persistent buffer (not in checkpoints).
 *
 * pos_embed[i, j] for patch row i, column j = [sin(jω), cos(jω), sin(iω), cos(iω)], each block D/4
 * wide, ω_k = 1 / 10000^(k / (D/4)): upstream meshgrids (w, h), so the first half encodes the
 * COLUMN. It is float32 numpy arithmetic (`get_1d_sincos_pos_embed_from_grid_new`), reproduced
 * with Math.fround and correctly rounded pow/sin/cos. numpy's own float32 `**` and `sin` are SIMD
 * approximations on AVX-512 builds (SVML, 1–2 ulp): against numpy 1.24.2 there, the 70×70 grid for
 * D = 3584 differs by at most 1.2e-5 absolute (values in [−1, 1]), far inside the 1e-4 parity. Upstream caches a 70 × 70 grid and regrows it for bigger `tgt_sizes`
 * (`_adjust_pos_cache`); a grid entry depends only on (i, j), so we keep the equivalent 1-D table
 * of the per-position halves for max(max_size) positions, grown the same way, on the host (rows
 * are copied into each call's [B, L, D] embedding; a device gather was 10× slower on wasm).
 *
 * Attention: the packed `in_proj_weight` stays one parameter, held as three row chunks (q, k, v)
 * so no call copies it; q/√d before q·kᵀ, the key padding mask is −inf (`_canonical_mask`),
 * softmax, ·v, out_proj.
 *
 * Shape letters: B images, L patches (padded), Q queries, D embed, H heads, d = D/H, K kv_dim.
 */
import * as tf from '@tensorflow/tfjs';
import { attend } from './attention';
import { Tap } from './decoder';
import { inGradient } from './heap_ops';
import { LINEAR_LAYOUT, LayoutChoice, byMatmul } from './layout';
import { Linear } from './linear';
import { Module, Param, register } from './module';
import { LayerNorm } from './norms';

// ---------------------------------------------------------------------------------------------
// torch.nn.MultiheadAttention with packed in_proj
// ---------------------------------------------------------------------------------------------

/**
 * torch `nn.MultiheadAttention(embed_dim, num_heads)` (bias, no bias_kv, no zero_attn, kdim =
 * vdim = embed_dim), batch-first in our API. Checkpoint keys: `in_proj_weight` [3E, E],
 * `in_proj_bias` [3E], `out_proj.weight` [E, E], `out_proj.bias` [E].
 */
export class TorchMultiheadAttention extends Module {
  static className = 'TorchMultiheadAttention';
  readonly embedDim: number;
  readonly numHeads: number;
  in_proj_weight: Param;
  in_proj_bias: Param;
  out_proj: Linear;

  constructor(embedDim: number, numHeads: number, layout: LayoutChoice = LINEAR_LAYOUT) {
    super();
    if (embedDim % numHeads !== 0) throw new Error(`MultiheadAttention: embed_dim ${embedDim} is not divisible by num_heads ${numHeads}`);
    this.embedDim = embedDim;
    this.numHeads = numHeads;
    // Held as three row chunks, q, k and v ([E, E] each; 'same' = [out, in], matmul with
    // transposeB, 'transposed' = [in, out]): the checkpoint tensor stays one parameter (load,
    // export, gradients), and no call copies a third of it out (a 3584² slice costs ~0.5 s on wasm).
    this.in_proj_weight = new Param([3 * embedDim, embedDim], { layout, maxChunkBytes: embedDim * embedDim * 4 });
    this.in_proj_bias = new Param([3 * embedDim]);
    this.out_proj = new Linear(embedDim, embedDim, { bias: true, layout });
  }

  /** x [N, E] @ W_part ᵀ + b_part for part 0 (q), 1 (k) or 2 (v) of the packed projection. */
  private project(x2: tf.Tensor2D, part: 0 | 1 | 2): tf.Tensor2D {
    const E = this.embedDim;
    const { chunks, starts, layout } = this.in_proj_weight.tensors;
    if (chunks.length !== 3 || starts[part] !== part * E) {
      throw new Error(`MultiheadAttention: in_proj_weight must be held as 3 row chunks (q, k, v), found ${chunks.length}`);
    }
    const bp = this.in_proj_bias.value.slice([part * E], [E]); // [E]
    return tf.fused.matMul({ a: x2, b: chunks[part] as tf.Tensor2D, transposeB: layout === 'same', bias: bp }) as tf.Tensor2D;
  }

  /**
   * query [Tq, E] (shared by every batch entry) or [B, Tq, E]; key and value [B, S, E]; mask
   * additive, broadcastable to [B, H, Tq, S] (e.g. [B, 1, 1, S]), or null. Returns [B, Tq, E].
   */
  forward(query: tf.Tensor, key: tf.Tensor3D, value: tf.Tensor3D, mask: tf.Tensor | null): tf.Tensor3D {
    return tf.tidy(() => {
      const [B, S, E] = key.shape;
      if (E !== this.embedDim || value.shape[2] !== E || query.shape[query.rank - 1] !== E) {
        throw new Error(`MultiheadAttention: expected embed_dim ${this.embedDim}, got query [${query.shape}], key [${key.shape}], value [${value.shape}]`);
      }
      const H = this.numHeads, d = E / H;
      const Tq = query.shape[query.rank - 2];
      if (this.absorbs(query)) return this.forwardAbsorbed(query as tf.Tensor2D, key, value, mask);
      const Bq = query.rank === 2 ? 1 : query.shape[0];
      // q_scaled = q / sqrt(head_dim), as multi_head_attention_forward does before the bmm
      const q = tf.div(this.project(query.reshape([-1, E]) as tf.Tensor2D, 0), Math.sqrt(d))
        .reshape([Bq, Tq, H, d]).transpose([0, 2, 1, 3]); // [Bq, H, Tq, d]
      const k = this.project(key.reshape([-1, E]) as tf.Tensor2D, 1).reshape([B, S, H, d]).transpose([0, 2, 1, 3]); // [B, H, S, d]
      const v = this.project(value.reshape([-1, E]) as tf.Tensor2D, 2).reshape([B, S, H, d]).transpose([0, 2, 1, 3]); // [B, H, S, d]
      const qb = Bq === B ? q : tf.broadcastTo(q, [B, H, Tq, d]); // one query set for all images
      const ctx = attend(qb, k, v, null, mask); // [B, H, Tq, d]
      return this.out_proj.forward(ctx.transpose([0, 2, 1, 3]).reshape([B, Tq, E])) as tf.Tensor3D; // [B, Tq, E]
    });
  }

  /**
   * Whether `forwardAbsorbed` runs: one query set [Tq, E] shared by every image, fewer query rows
   * over all heads than embed dims (H·Tq < E, so it costs fewer FLOPs), weights [out, in], and
   * outside gradient computations (VLM_RESAMPLER_ABSORB=0 turns it off).
   */
  private absorbs(query: tf.Tensor): boolean {
    return query.rank === 2 && this.numHeads * query.shape[0] < this.embedDim && this.in_proj_weight.tensors.layout === 'same' &&
      this.in_proj_weight.tensors.chunks.length === 3 && !inGradient() && process.env.VLM_RESAMPLER_ABSORB !== '0';
  }

  /**
   * The same attention with the k and v projections moved onto the queries' side (inference):
   *   scores_h = q_h (key W_kh^T + b_kh)^T = (q_h W_kh) key^T + q_h·b_kh
   *   ctx_h    = P_h (value W_vh^T + b_vh) = (P_h value) W_vh^T + b_vh
   * q_h·b_kh is the same for every key of a query row, so softmax drops it; the rows of P_h sum
   * to 1, so b_vh passes through. No [S, E] key or value projection is made: with the MiniCPM-V
   * resampler's 64 queries, 28 heads and E = 3584 this is 29.6 instead of 52.6 GFLOP per
   * 1024-patch image. The sums run in another order than the projected path (float32 either way).
   */
  private forwardAbsorbed(query: tf.Tensor2D, key: tf.Tensor3D, value: tf.Tensor3D, mask: tf.Tensor | null): tf.Tensor3D {
    const [B, S, E] = key.shape;
    const H = this.numHeads, d = E / H, Tq = query.shape[0];
    const { chunks } = this.in_proj_weight.tensors;
    const q = tf.div(this.project(query, 0), Math.sqrt(d)).reshape([Tq, H, d]).transpose([1, 0, 2]); // [H, Tq, d]
    const qk = tf.matMul(q, chunks[1].reshape([H, d, E])).reshape([H * Tq, E]); // q_h W_kh: [H·Tq, E]
    const Wv = chunks[2].reshape([H, d, E]);
    const bv = this.in_proj_bias.value.slice([2 * E], [E]).reshape([H, 1, d]);
    const ctx: tf.Tensor[] = [];
    for (let b = 0; b < B; b++) {
      const kb = B === 1 ? key.reshape([S, E]) : key.slice([b, 0, 0], [1, S, E]).reshape([S, E]);
      const vb = B === 1 ? value.reshape([S, E]) : value.slice([b, 0, 0], [1, S, E]).reshape([S, E]);
      const mb = mask ? mask.slice([b, 0, 0, 0], [1, 1, 1, S]).reshape([1, S]) : null;
      const pv = attend(qk, kb, vb, null, mb).reshape([H, Tq, E]); // P_h value: [H, Tq, E]
      const c = tf.add(tf.matMul(pv, Wv, false, true), bv); // [H, Tq, d]
      ctx.push(c.transpose([1, 0, 2]).reshape([1, Tq, E])); // [1, Tq, E]
    }
    return this.out_proj.forward(B === 1 ? ctx[0] : tf.concat(ctx, 0)) as tf.Tensor3D; // [B, Tq, E]
  }
}
register(TorchMultiheadAttention);

// ---------------------------------------------------------------------------------------------
// 2-D sincos position embedding
// ---------------------------------------------------------------------------------------------

/**
 * The per-position half of upstream's 2-D sincos embedding: rows p = 0..n−1 of
 * `get_1d_sincos_pos_embed_from_grid_new(D/2, p)` = [sin(p·ω), cos(p·ω)] (D/2 wide), in float32
 * like numpy: ω = float32(1 / float32(10000 ** float32(k / (D/4)))), p·ω rounded to float32.
 */
export function sincosHalfTable(n: number, embedDim: number): Float32Array {
  if (embedDim % 4 !== 0) throw new Error(`2-D sincos position embedding: embed_dim ${embedDim} must be a multiple of 4`);
  const half = embedDim / 2, quarter = embedDim / 4;
  const omega = new Float32Array(quarter);
  for (let k = 0; k < quarter; k++) {
    const e = Math.fround(k / quarter); // omega = arange(D/4, float32); omega /= D/4
    omega[k] = Math.fround(1 / Math.fround(Math.pow(10000, e))); // 1. / 10000 ** omega, float32
  }
  const out = new Float32Array(n * half);
  for (let p = 0; p < n; p++) {
    for (let k = 0; k < quarter; k++) {
      const a = Math.fround(p * omega[k]); // einsum('hw,d->hwd'), float32
      out[p * half + k] = Math.sin(a);
      out[p * half + quarter + k] = Math.cos(a);
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Resampler
// ---------------------------------------------------------------------------------------------

export interface ResamplerConfig {
  /** `num_queries` (MiniCPM-V: config.query_num). */
  numQueries: number;
  /** `embed_dim` (MiniCPM-V: the LLM hidden size). */
  embedDim: number;
  /** `num_heads` (MiniCPM-V: embed_dim // 128). */
  numHeads: number;
  /** `kv_dim` (MiniCPM-V: the vision hidden size); null or = embedDim → kv_proj is Identity. */
  kvDim: number | null;
  /** LayerNorm eps of ln_q/ln_kv/ln_post (upstream: partial(nn.LayerNorm, eps=1e-6)). */
  normEps: number;
  /** Initial `max_size` of the position cache (upstream (70, 70)). */
  maxSize?: [number, number];
}

export interface ResamplerForwardOptions {
  /** Receives `resampler.kv_proj`, `.ln_kv`, `.ln_q`, `.attn_out_QBD` (seq-first), `.ln_post`, `.out`. */
  taps?: Tap | null;
}

export class Resampler extends Module {
  static className = 'Resampler';
  readonly cfg: ResamplerConfig;
  query: Param;
  kv_proj: Linear | null;
  attn: TorchMultiheadAttention;
  ln_q: LayerNorm;
  ln_kv: LayerNorm;
  ln_post: LayerNorm;
  proj: Param;
  /** `max_size` of upstream's cache, grown by `adjustPosCache`. */
  maxSize: [number, number];
  /** [max(maxSize), D/2] sincos halves (host); built on first use. Not a parameter. */
  private posTable: Float32Array | null = null;

  constructor(cfg: ResamplerConfig) {
    super();
    const D = cfg.embedDim;
    if (D % 4 !== 0) throw new Error(`Resampler: embed_dim ${D} must be a multiple of 4 (2-D sincos position embedding)`);
    this.cfg = cfg;
    this.maxSize = [...(cfg.maxSize ?? [70, 70])];
    const layout = LINEAR_LAYOUT;
    this.query = new Param([cfg.numQueries, D]);
    this.kv_proj = cfg.kvDim !== null && cfg.kvDim !== D ? new Linear(cfg.kvDim, D, { bias: false, layout }) : null;
    this.attn = new TorchMultiheadAttention(D, cfg.numHeads, layout);
    this.ln_q = new LayerNorm(D, cfg.normEps);
    this.ln_kv = new LayerNorm(D, cfg.normEps);
    this.ln_post = new LayerNorm(D, cfg.normEps);
    // `x @ proj`: the checkpoint is [in, out]; keep it when the backend prefers [in, out] weights,
    // else transpose once to [out, in] (then matmul with transposeB), like Linear.
    this.proj = new Param([D, D], { layout: byMatmul('transposed', 'same') });
  }

  /** `_adjust_pos_cache`: grows max_size to cover `tgtSizes` and (re)builds the table when needed. */
  adjustPosCache(tgtSizes: readonly (readonly [number, number])[]): void {
    const maxH = Math.max(...tgtSizes.map((t) => t[0]));
    const maxW = Math.max(...tgtSizes.map((t) => t[1]));
    if (maxH > this.maxSize[0] || maxW > this.maxSize[1]) {
      this.maxSize = [Math.max(maxH, this.maxSize[0]), Math.max(maxW, this.maxSize[1])];
      this.disposeCache();
    }
    if (!this.posTable) {
      const n = Math.max(...this.maxSize);
      this.posTable = sincosHalfTable(n, this.cfg.embedDim);
    }
  }

  /** pos_embed padded like `pad_sequence`: [B, L, D], zero rows past h·w (grows the cache first). */
  posEmbed(tgtSizes: readonly (readonly [number, number])[], L: number): tf.Tensor3D {
    this.adjustPosCache(tgtSizes);
    const D = this.cfg.embedDim, half = D / 2, t = this.posTable!;
    const out = new Float32Array(tgtSizes.length * L * D);
    tgtSizes.forEach(([h, w], b) => {
      for (let l = 0; l < h * w; l++) {
        // pos_embed[:tgt_h, :tgt_w].reshape(h·w, D) is row-major: patch l is row ⌊l/w⌋, column l mod w
        const col = l % w, row = Math.floor(l / w), o = (b * L + l) * D;
        out.set(t.subarray(col * half, (col + 1) * half), o);
        out.set(t.subarray(row * half, (row + 1) * half), o + half);
      }
    });
    return tf.tensor3d(out, [tgtSizes.length, L, D]);
  }

  /**
   * x [B, L, K] (vision features, padded to L = max h·w) and `tgtSizes` [h, w] per image →
   * [B, Q, D].
   */
  forward(x: tf.Tensor3D, tgtSizes: readonly (readonly [number, number])[], opts: ResamplerForwardOptions = {}): tf.Tensor3D {
    const [B, L, K] = x.shape;
    const D = this.cfg.embedDim;
    if (tgtSizes.length !== B) throw new Error(`Resampler: ${B} images in x but ${tgtSizes.length} tgt_sizes`);
    const kvDim = this.kv_proj ? this.kv_proj.inFeatures : D;
    if (K !== kvDim) throw new Error(`Resampler: x has ${K} features, kv_dim is ${kvDim}`);
    tgtSizes.forEach(([h, w], i) => {
      if (!Number.isInteger(h) || !Number.isInteger(w) || h < 1 || w < 1) throw new Error(`Resampler: tgt_sizes[${i}] = [${h}, ${w}] must be positive integers`);
    });
    const maxLen = Math.max(...tgtSizes.map(([h, w]) => h * w));
    if (L !== maxLen) throw new Error(`Resampler: x has ${L} patches per image, but the largest tgt_sizes entry has ${maxLen} (h·w)`);
    return tf.tidy(() => {
      const tap = opts.taps ?? null;
      const kv = this.kv_proj ? this.kv_proj.forward(x) : x; // [B, L, D]
      tap?.('resampler.kv_proj', kv);
      const xs = this.ln_kv.forward(kv) as tf.Tensor3D; // [B, L, D]
      tap?.('resampler.ln_kv', xs);
      const q = this.ln_q.forward(this.query.value); // [Q, D]
      tap?.('resampler.ln_q', q);
      const pos = this.posEmbed(tgtSizes, L); // [B, L, D]
      const maskHost = new Float32Array(B * L);
      tgtSizes.forEach(([h, w], b) => maskHost.fill(-Infinity, b * L + h * w, (b + 1) * L)); // key_padding_mask → −inf
      const mask = tf.tensor4d(maskHost, [B, 1, 1, L]);
      const out = this.attn.forward(q, tf.add(xs, pos) as tf.Tensor3D, xs, mask); // [B, Q, D]
      if (tap) tap('resampler.attn_out_QBD', out.transpose([1, 0, 2])); // [Q, B, D] like upstream
      const post = this.ln_post.forward(out); // [B, Q, D]
      tap?.('resampler.ln_post', post);
      const Q = this.cfg.numQueries;
      const y = tf.matMul(post.reshape([B * Q, D]), this.proj.value, false, this.proj.layout === 'transposed').reshape([B, Q, D]) as tf.Tensor3D;
      tap?.('resampler.out', y);
      return y;
    });
  }

  override call(_inputs: tf.Tensor | tf.Tensor[]): tf.Tensor {
    throw new Error('Resampler needs tgt_sizes: call forward(x, tgtSizes)');
  }

  /** Drops the position table (rebuilt on the next forward). */
  disposeCache(): void {
    this.posTable = null;
  }

  override dispose(): ReturnType<tf.layers.Layer['dispose']> {
    this.disposeCache();
    return super.dispose();
  }
}
register(Resampler);
