/**
 * CLIP vision transformer, HF transformers v4.40.0 (commit 745bbfe4)
 * `src/transformers/models/clip/modeling_clip.py`: `CLIPVisionEmbeddings`, `CLIPEncoder`,
 * `CLIPVisionTransformer`, `CLIPVisionModel`.
 *
 *   embeddings = cat([class_embedding, patch_embedding(pixels)]) + position_embedding   [B, 1+N, E]
 *   h0 = pre_layrnorm(embeddings)        (sic: the upstream attribute name)
 *   h_i = encoder.layers[i-1](h_{i-1})   quick_gelu MLP, 1/√D applied to the query
 * `output_hidden_states` = (h0, h1, …, h_L); `post_layernorm` only feeds the pooled CLS output,
 * which VideoLLaMA2 never reads, so it is not built (the key maps ignore it).
 *
 * Checkpoint keys (under `vision_model.`): `embeddings.class_embedding` [E],
 * `embeddings.patch_embedding.weight` [E, C, P, P] (no bias), `embeddings.position_embedding.weight`
 * [1+N, E], `pre_layrnorm.{weight,bias}`, `encoder.layers.{i}.*` (layers/vit.ts),
 * `post_layernorm.{weight,bias}` (unused). `embeddings.position_ids` is a non-persistent buffer in
 * v4.40 (absent from checkpoints).
 *
 * Only the first `numLayers` encoder layers are built: a tower used through
 * `hidden_states[select_layer]` never runs the layers after it.
 *
 * Shape letters: B images, C channels, S image side, P patch, N = (S/P)² patches, E hidden.
 */
import * as tf from '@tensorflow/tfjs';
import { Conv2d } from '../../layers/conv';
import { Embedding } from '../../layers/linear';
import { Module, Param, register } from '../../layers/module';
import { LayerNorm } from '../../layers/norms';
import { VisionEncoderLayer, VisionLayerConfig } from '../../layers/vit';
import { Tap } from '../../layers/decoder';
import { VisionTowerConfig, patchGrid } from './config';

/** Encoder-layer config of a tower (CLIP scales the query, SigLIP the scores). */
export function visionLayerConfig(cfg: VisionTowerConfig): VisionLayerConfig {
  return {
    hiddenSize: cfg.hiddenSize, numHeads: cfg.numAttentionHeads, intermediateSize: cfg.intermediateSize,
    act: cfg.hiddenAct, layerNormEps: cfg.layerNormEps, scaleAt: cfg.family === 'clip' ? 'query' : 'scores',
  };
}

/** Number of encoder layers that produce `hidden_states[selectLayer]` (hidden_states has L + 1 entries). */
export function layersForSelect(numHiddenLayers: number, selectLayer: number): number {
  const n = selectLayer < 0 ? numHiddenLayers + 1 + selectLayer : selectLayer;
  if (!Number.isInteger(selectLayer) || n < 0 || n > numHiddenLayers) {
    throw new Error(`mm_vision_select_layer = ${selectLayer} is out of range for a tower with ${numHiddenLayers} layers ` +
      `(hidden_states has ${numHiddenLayers + 1} entries: valid ${-(numHiddenLayers + 1)} … ${numHiddenLayers})`);
  }
  return n;
}

/** Checks `pixel_values` is [B, C, S, S] for this tower; the message names the tensor and both shapes. */
export function checkPixels(pixels: tf.Tensor, cfg: VisionTowerConfig, what = 'pixel_values'): void {
  const S = cfg.imageSize, C = cfg.numChannels;
  const s = pixels.shape;
  if (s.length !== 4 || s[1] !== C || s[2] !== S || s[3] !== S) {
    throw new Error(`${what} has shape [${s.join(', ')}], the ${cfg.family} tower expects [B, ${C}, ${S}, ${S}] ` +
      `(image_size ${S}; resize with the tower's image processor)`);
  }
}

/** The encoder container (`encoder.layers.{i}`). */
export class VisionEncoder extends Module {
  static className = 'VisionEncoder';
  layers: VisionEncoderLayer[];

  constructor(cfg: VisionTowerConfig, numLayers: number) {
    super();
    const lc = visionLayerConfig(cfg);
    this.layers = Array.from({ length: numLayers }, () => new VisionEncoderLayer(lc));
  }

  /** Runs every built layer; taps `vision.layer{i}`. */
  forward(x: tf.Tensor3D, taps?: Tap | null): tf.Tensor3D {
    return tf.tidy(() => {
      let h = x;
      this.layers.forEach((layer, i) => {
        const next = layer.forward(h);
        if (h !== x && !taps) h.dispose(); // keep ~2 activations alive, not one per layer (tidy frees at the end)
        h = next;
        taps?.(`vision.layer${i}`, h);
      });
      return h;
    });
  }
}
register(VisionEncoder);

/** NCHW pixels → patch-embedding input NHWC ([B, C, S, S] → [B, S, S, C]). */
export function toNHWC(pixels: tf.Tensor): tf.Tensor4D {
  return pixels.transpose([0, 2, 3, 1]) as tf.Tensor4D; // [B, S, S, C]
}

export class CLIPVisionEmbeddings extends Module {
  static className = 'CLIPVisionEmbeddings';
  readonly cfg: VisionTowerConfig;
  class_embedding: Param;
  patch_embedding: Conv2d;
  position_embedding: Embedding;

  constructor(cfg: VisionTowerConfig) {
    super();
    this.cfg = cfg;
    const E = cfg.hiddenSize;
    this.class_embedding = new Param([E]);
    this.patch_embedding = new Conv2d(cfg.numChannels, E, cfg.patchSize, { stride: cfg.patchSize, bias: false });
    this.position_embedding = new Embedding(patchGrid(cfg).patches + 1, E, { native: false });
  }

  /** pixels [B, C, S, S] → [B, 1 + N, E]. */
  forward(pixels: tf.Tensor4D): tf.Tensor3D {
    checkPixels(pixels, this.cfg);
    return tf.tidy(() => {
      const B = pixels.shape[0], E = this.cfg.hiddenSize;
      const patches = this.patch_embedding.forward(toNHWC(pixels)); // [B, S/P, S/P, E]
      const N = patches.shape[1] * patches.shape[2];
      const cls = tf.broadcastTo(this.class_embedding.value.reshape([1, 1, E]), [B, 1, E]);
      const x = tf.concat([cls, patches.reshape([B, N, E])], 1); // [B, 1 + N, E]: flatten(2).transpose(1, 2) in NCHW
      return tf.add(x, this.position_embedding.weight.value) as tf.Tensor3D; // position_ids = arange(1 + N)
    });
  }
}
register(CLIPVisionEmbeddings);

export interface VisionForwardOptions {
  /** Receives `vision.embeddings`, `vision.pre_layrnorm` (CLIP), `vision.layer{i}`. */
  taps?: Tap | null;
}

/** HF `CLIPVisionTransformer`, truncated after `numLayers` encoder layers. */
export class CLIPVisionTransformer extends Module {
  static className = 'CLIPVisionTransformer';
  readonly cfg: VisionTowerConfig;
  embeddings: CLIPVisionEmbeddings;
  pre_layrnorm: LayerNorm;
  encoder: VisionEncoder;

  constructor(cfg: VisionTowerConfig, numLayers = cfg.numHiddenLayers) {
    super();
    if (numLayers > cfg.numHiddenLayers) throw new Error(`CLIP tower: ${numLayers} layers requested, the config has ${cfg.numHiddenLayers}`);
    this.cfg = cfg;
    this.embeddings = new CLIPVisionEmbeddings(cfg);
    this.pre_layrnorm = new LayerNorm(cfg.hiddenSize, cfg.layerNormEps);
    this.encoder = new VisionEncoder(cfg, numLayers);
  }

  /** pixels [B, C, S, S] → hidden_states[numLayers] [B, 1 + N, E] (before post_layernorm). */
  forward(pixels: tf.Tensor4D, opts: VisionForwardOptions = {}): tf.Tensor3D {
    const taps = opts.taps ?? null;
    return tf.tidy(() => {
      const emb = this.embeddings.forward(pixels);
      taps?.('vision.embeddings', emb);
      const h0 = this.pre_layrnorm.forward(emb) as tf.Tensor3D;
      taps?.('vision.pre_layrnorm', h0);
      return this.encoder.forward(h0, taps);
    });
  }
}
register(CLIPVisionTransformer);

/** HF `CLIPVisionModel`: the `vision_model.` prefix of the checkpoint. */
export class CLIPVisionModel extends Module {
  static className = 'CLIPVisionModel';
  readonly cfg: VisionTowerConfig;
  vision_model: CLIPVisionTransformer;

  constructor(cfg: VisionTowerConfig, numLayers = cfg.numHiddenLayers) {
    super();
    this.cfg = cfg;
    this.vision_model = new CLIPVisionTransformer(cfg, numLayers);
  }

  get numLayers(): number {
    return this.vision_model.encoder.layers.length;
  }

  forward(pixels: tf.Tensor4D, opts: VisionForwardOptions = {}): tf.Tensor3D {
    return this.vision_model.forward(pixels, opts);
  }
}
register(CLIPVisionModel);
