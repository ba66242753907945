/**
 * The SigLIP-NaViT vision tower of MiniCPM-V 2.6 (`vpm`), upstream `modeling_navit_siglip.py`
 * (`SiglipVisionTransformer` with `tgt_sizes`, eager attention) plus the pixel packing of
 * `modeling_minicpmv.py` `MiniCPMV.get_vllm_embedding`.
 *
 *   pixels [B, C, P, maxL·P]   every image/slice is a strip of L = h·w patches side by side
 *                              (`reshape_by_patch` layout), zero-padded on the right to the longest
 *   embeddings = Conv2d(C → E, kernel = stride = P)(pixels).flatten(2).T + position_embedding(ids)
 *   h = encoder layers (pre-LN ViT, SigLIP scale on the scores, key padding mask = float32 min)
 *   last_hidden_state = post_layernorm(h)
 *
 * Checkpoint keys (prefix `vpm.`): `embeddings.patch_embedding.{weight [E, C, P, P], bias [E]}`,
 * `embeddings.position_embedding.weight` [S², E] (S = image_size // patch_size),
 * `encoder.layers.N.*` (layers/vit.ts), `post_layernorm.{weight,bias}`.
 *
 * The patch Conv2d over a height-P strip is a matmul: patch l is the [C, P, P] block of columns
 * l·P..l·P+P−1. The weight is laid out once at load for that matmul: HWIO ([P, P, C, E], read as
 * [P·P·C, E]) where the backend prefers [in, out] weights, else OIHW ([E, C·P·P], transposeB).
 *
 * Shape letters: B images, C channels, P patch size, N = maxL patches per image (padded), E hidden.
 */
import { checkpointLayer } from '../../layers/checkpointing';
import * as tf from '@tensorflow/tfjs';
import { FLOAT32_MIN } from '../../layers/attention';
import { Tap } from '../../layers/decoder';
import { byMatmul } from '../../layers/layout';
import { Embedding } from '../../layers/linear';
import { Module, Param, register } from '../../layers/module';
import { LayerNorm } from '../../layers/norms';
import { VisionEncoderLayer, VisionLayerConfig } from '../../layers/vit';
import { SiglipVisionConfig } from './config';
import { TORCH_CPU_VEC_FLOATS, navitPositionIds } from './navit_positions';

/** One image or slice in `reshape_by_patch` layout: [C, P, L·P] (structurally a processor PixelSlice). */
export interface PixelStrip {
  data: ArrayLike<number>;
  shape: readonly number[];
}

export type TgtSize = readonly [number, number];

// ---------------------------------------------------------------------------------------------
// packing (get_vllm_embedding)
// ---------------------------------------------------------------------------------------------

/** Checks strips against `tgtSizes`; the error names the image, its shape and both patch counts. */
export function checkStrips(strips: readonly PixelStrip[], tgtSizes: readonly TgtSize[], channels: number, P: number): void {
  if (strips.length !== tgtSizes.length) {
    throw new Error(`pixel_values has ${strips.length} image(s) but tgt_sizes has ${tgtSizes.length} entries`);
  }
  strips.forEach((s, i) => {
    const t = tgtSizes[i];
    if (!t || t.length !== 2 || !t.every((v) => Number.isInteger(v) && v >= 1)) {
      throw new Error(`tgt_sizes[${i}] = ${JSON.stringify(t)} must be [h, w] in patches, positive integers`);
    }
    const [h, w] = t;
    const shape = Array.from(s.shape);
    if (shape.length !== 3 || shape[0] !== channels || shape[1] !== P || shape[2] % P !== 0) {
      throw new Error(`pixel_values[${i}] has shape [${shape}], expected [${channels}, ${P}, L·${P}] (reshape_by_patch layout)`);
    }
    const n = shape.reduce((a, b) => a * b, 1);
    if (s.data.length !== n) throw new Error(`pixel_values[${i}]: ${s.data.length} values for shape [${shape}] (${n} expected)`);
    const L = shape[2] / P;
    if (L !== h * w) {
      throw new Error(`pixel_values[${i}] is a strip of ${L} patches ([${shape}]) but tgt_sizes[${i}] = [${h}, ${w}] is ${h * w} patches`);
    }
  });
}

/**
 * Zero-pads every strip on the right to the longest and stacks them: [B, C, P, maxL·P] (upstream:
 * flatten/permute, `pad_sequence(batch_first, 0.0)`, permute back, reshape — the same thing).
 */
export function packStrips(strips: readonly PixelStrip[], tgtSizes: readonly TgtSize[], channels: number, P: number): tf.Tensor4D {
  checkStrips(strips, tgtSizes, channels, P);
  const maxL = Math.max(...tgtSizes.map(([h, w]) => h * w));
  const W = maxL * P;
  const out = new Float32Array(strips.length * channels * P * W);
  strips.forEach((s, b) => {
    const w = s.shape[2];
    for (let r = 0; r < channels * P; r++) {
      const src = r * w, dst = (b * channels * P + r) * W; // row r of strip b, then zeros up to W
      if (s.data instanceof Float32Array) out.set(s.data.subarray(src, src + w), dst);
      else for (let x = 0; x < w; x++) out[dst + x] = s.data[src + x];
    }
  });
  return tf.tensor4d(out, [strips.length, channels, P, W]);
}

// ---------------------------------------------------------------------------------------------
// modules
// ---------------------------------------------------------------------------------------------

/** nn.Conv2d(C, E, kernel_size=P, stride=P, padding='valid') as a matmul. Keys: `weight`, `bias`. */
export class NavitPatchEmbedding extends Module {
  static className = 'NavitPatchEmbedding';
  readonly channels: number;
  readonly patchSize: number;
  readonly embedDim: number;
  weight: Param;
  bias: Param;

  constructor(channels: number, embedDim: number, patchSize: number) {
    super();
    this.channels = channels;
    this.patchSize = patchSize;
    this.embedDim = embedDim;
    // 'oihw_to_hwio' → [P, P, C, E] = [in, out]; 'same' → [E, C, P, P] = [out, in] (transposeB)
    const layout = byMatmul('same', 'oihw_to_hwio');
    this.weight = new Param([embedDim, channels, patchSize, patchSize], { layout });
    this.bias = new Param([embedDim]);
  }

  /** pixels [B, C, H, W] with H, W multiples of P → [B, (H/P)·(W/P), E], patches row-major. */
  forward(pixels: tf.Tensor4D): tf.Tensor3D {
    const [B, C, H, W] = pixels.shape;
    const P = this.patchSize;
    if (C !== this.channels || H % P !== 0 || W % P !== 0) {
      throw new Error(`patch_embedding: pixels [${pixels.shape}] must be [B, ${this.channels}, k·${P}, m·${P}]`);
    }
    return tf.tidy(() => {
      if (H > P) {
        // each row of patches is a strip; row-major order = strips one after the other
        const rows = Array.from({ length: H / P }, (_, r) => this.forward(pixels.slice([0, 0, r * P, 0], [B, C, P, W]) as tf.Tensor4D));
        return tf.concat(rows, 1) as tf.Tensor3D;
      }
      const N = W / P, E = this.embedDim, K = C * P * P;
      const x = pixels.reshape([B, C, P, N, P]); // [B, C, kh, N, kw]
      const hwio = this.weight.layout === 'oihw_to_hwio';
      const patches = (hwio ? x.transpose([0, 3, 2, 4, 1]) : x.transpose([0, 3, 1, 2, 4])).reshape([B * N, K]) as tf.Tensor2D; // [B·N, kh·kw·C] or [B·N, C·kh·kw]
      const w = this.weight.value.reshape(hwio ? [K, E] : [E, K]) as tf.Tensor2D;
      const y = tf.fused.matMul({ a: patches, b: w, transposeB: !hwio, bias: this.bias.value }); // [B·N, E]
      return y.reshape([B, N, E]) as tf.Tensor3D;
    });
  }
}
register(NavitPatchEmbedding);

/** `SiglipVisionEmbeddings` (NaViT). Keys: `patch_embedding.*`, `position_embedding.weight`. */
export class SiglipNavitEmbeddings extends Module {
  static className = 'SiglipNavitEmbeddings';
  /** S: positions per side of the embedding grid (image_size // patch_size). */
  readonly numPatchesPerSide: number;
  patch_embedding: NavitPatchEmbedding;
  position_embedding: Embedding;

  constructor(cfg: SiglipVisionConfig) {
    super();
    this.numPatchesPerSide = Math.floor(cfg.image_size / cfg.patch_size);
    this.patch_embedding = new NavitPatchEmbedding(cfg.num_channels, cfg.hidden_size, cfg.patch_size);
    this.position_embedding = new Embedding(this.numPatchesPerSide ** 2, cfg.hidden_size, { native: false });
  }

  /** pixels [B, C, P, N·P], position ids int32 [B, N] → [B, N, E]. */
  forward(pixels: tf.Tensor4D, positionIds: tf.Tensor2D, taps: Tap | null = null): tf.Tensor3D {
    return tf.tidy(() => {
      const patch = this.patch_embedding.forward(pixels); // [B, N, E]
      if (taps) {
        const [B, N, E] = patch.shape;
        taps('vpm.patch_embeds', patch.transpose([0, 2, 1]).reshape([B, E, 1, N])); // Conv2d layout
      }
      const emb = tf.add(patch, this.position_embedding.forward(positionIds)) as tf.Tensor3D;
      taps?.('vpm.embeddings', emb);
      return emb;
    });
  }
}
register(SiglipNavitEmbeddings);

/** `SiglipEncoder`. Keys: `layers.N.*`. */
export class SiglipNavitEncoder extends Module {
  static className = 'SiglipNavitEncoder';
  layers: VisionEncoderLayer[];

  constructor(layerCfg: VisionLayerConfig, numLayers: number) {
    super();
    this.layers = Array.from({ length: numLayers }, () => new VisionEncoderLayer(layerCfg));
  }
}
register(SiglipNavitEncoder);

export interface NavitForwardOptions {
  /** Receives `vpm.patch_attention_mask`, `vpm.position_ids`, `vpm.patch_embeds`, `vpm.embeddings`, `vpm.layer0`, `vpm.last_hidden_state`. */
  taps?: Tap | null;
  /** torch's float vector width for the position-id aranges (see navit_positions.ts); default 8. */
  vecWidth?: number;
}

/** The vision layer config of the shared pre-LN ViT layer for SigLIP (scale on the scores). */
export function siglipLayerConfig(cfg: SiglipVisionConfig): VisionLayerConfig {
  return {
    hiddenSize: cfg.hidden_size, numHeads: cfg.num_attention_heads, intermediateSize: cfg.intermediate_size,
    act: cfg.hidden_act, layerNormEps: cfg.layer_norm_eps, scaleAt: 'scores',
  };
}

/**
 * `SiglipVisionTransformer` with tgt_sizes. Keys: `embeddings.*`, `encoder.layers.N.*`,
 * `post_layernorm.*`. `numLayers` is what is built (MiniCPM-V drops the last layer when
 * `drop_vision_last_layer`).
 */
export class SiglipNavitVisionTransformer extends Module {
  static className = 'SiglipNavitVisionTransformer';
  readonly cfg: SiglipVisionConfig;
  embeddings: SiglipNavitEmbeddings;
  encoder: SiglipNavitEncoder;
  post_layernorm: LayerNorm;

  constructor(cfg: SiglipVisionConfig, numLayers = cfg.num_hidden_layers) {
    super();
    this.cfg = cfg;
    this.embeddings = new SiglipNavitEmbeddings(cfg);
    this.encoder = new SiglipNavitEncoder(siglipLayerConfig(cfg), numLayers);
    this.post_layernorm = new LayerNorm(cfg.hidden_size, cfg.layer_norm_eps);
  }

  /**
   * pixels [B, C, P, N·P] (packed strips) and `tgtSizes` [h, w] per image (h·w ≤ N) →
   * last_hidden_state [B, N, E]. Rows past h·w are padding: computed like upstream (they attend
   * to the valid patches) but meaningless.
   */
  forward(pixels: tf.Tensor4D, tgtSizes: readonly TgtSize[], opts: NavitForwardOptions = {}): tf.Tensor3D {
    const [B, C, H, W] = pixels.shape;
    const P = this.cfg.patch_size;
    if (H !== P || W % P !== 0) throw new Error(`vpm: pixels [${pixels.shape}] must be packed strips [B, ${C}, ${P}, N·${P}]`);
    const N = W / P;
    if (tgtSizes.length !== B) throw new Error(`vpm: ${B} images in pixel_values but ${tgtSizes.length} tgt_sizes`);
    const valid = tgtSizes.map(([h, w], i) => {
      if (h * w > N) throw new Error(`vpm: tgt_sizes[${i}] = [${h}, ${w}] is ${h * w} patches, the pixel strips hold ${N}`);
      return Array.from({ length: N }, (_, n) => (n < h * w ? 1 : 0));
    });
    const S = this.embeddings.numPatchesPerSide;
    const ids = navitPositionIds(tgtSizes, N, S, opts.vecWidth ?? TORCH_CPU_VEC_FLOATS);
    const anyPad = valid.some((r) => r.includes(0));
    return tf.tidy(() => {
      const tap = opts.taps ?? null;
      if (tap) tap('vpm.patch_attention_mask', tf.tensor3d(valid.flat(), [B, 1, N], 'int32'));
      const idsT = tf.tensor2d(ids, [B, N], 'int32');
      tap?.('vpm.position_ids', idsT);
      let h = this.embeddings.forward(pixels, idsT, tap);
      // _prepare_4d_attention_mask: (1 − mask)·float32 min on padded keys; none when nothing is padded
      let mask: tf.Tensor | null = null;
      if (anyPad) {
        const m = new Float32Array(B * N);
        valid.forEach((r, b) => r.forEach((v, n) => { if (!v) m[b * N + n] = FLOAT32_MIN; }));
        mask = tf.tensor4d(m, [B, 1, 1, N]);
      }
      this.encoder.layers.forEach((layer, i) => {
        const next = checkpointLayer(layer, (t: tf.Tensor3D, [mk]) => layer.forward(t, mk) as tf.Tensor3D, h, [mask]);
        if (!tap) h.dispose(); // keep peak memory at ~2 activations (taps may still read h)
        h = next;
        if (i === 0) tap?.('vpm.layer0', h);
      });
      const out = this.post_layernorm.forward(h) as tf.Tensor3D;
      tap?.('vpm.last_hidden_state', out);
      return out;
    });
  }
}
register(SiglipNavitVisionTransformer);
