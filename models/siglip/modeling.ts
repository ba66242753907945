/**
 * SigLIP vision transformer, HF transformers v4.40.0 (commit 745bbfe4)
 * `src/transformers/models/siglip/modeling_siglip.py`: `SiglipVisionEmbeddings`,
 * `SiglipEncoder`, `SiglipVisionTransformer`, `SiglipVisionModel`.
 *
 *   embeddings = patch_embedding(pixels) (conv with bias, padding "valid") + position_embedding
 *   h_i = encoder.layers[i-1](h_{i-1})   gelu_pytorch_tanh MLP, 1/√D applied to the scores
 * No CLS token and no pre-norm. `output_hidden_states` = (embeddings, h1, …, h_L);
 * `post_layernorm` and the attention-pooling `head` (which v4.40's SiglipVisionTransformer always
 * builds) act on the last hidden state only, which VideoLLaMA2 never reads: they are not built
 * here and the key maps ignore `post_layernorm.*` and `head.*`.
 *
 * Checkpoint keys (under `vision_model.`): `embeddings.patch_embedding.{weight [E, C, P, P], bias [E]}`,
 * `embeddings.position_embedding.weight` [N, E], `encoder.layers.{i}.*` (layers/vit.ts).
 *
 * Shape letters: B images, C channels, S image side, P patch, N = (S/P)² patches, E hidden.
 */
import * as tf from '@tensorflow/tfjs';
import { Conv2d } from '../../layers/conv';
import { Embedding } from '../../layers/linear';
import { Module, register } from '../../layers/module';
import { VisionTowerConfig, patchGrid } from '../clip/config';
import { VisionEncoder, VisionForwardOptions, checkPixels, toNHWC } from '../clip/modeling';

export class SiglipVisionEmbeddings extends Module {
  static className = 'SiglipVisionEmbeddings';
  readonly cfg: VisionTowerConfig;
  patch_embedding: Conv2d;
  position_embedding: Embedding;

  constructor(cfg: VisionTowerConfig) {
    super();
    this.cfg = cfg;
    this.patch_embedding = new Conv2d(cfg.numChannels, cfg.hiddenSize, cfg.patchSize, { stride: cfg.patchSize, bias: true });
    this.position_embedding = new Embedding(patchGrid(cfg).patches, cfg.hiddenSize, { native: false });
  }

  /** pixels [B, C, S, S] → [B, N, E]. */
  forward(pixels: tf.Tensor4D): tf.Tensor3D {
    checkPixels(pixels, this.cfg);
    return tf.tidy(() => {
      const B = pixels.shape[0], E = this.cfg.hiddenSize;
      const patches = this.patch_embedding.forward(toNHWC(pixels)); // [B, S/P, S/P, E]
      const x = patches.reshape([B, patches.shape[1] * patches.shape[2], E]); // [B, N, E]: flatten(2).transpose(1, 2) in NCHW
      return tf.add(x, this.position_embedding.weight.value) as tf.Tensor3D; // position_ids = arange(N)
    });
  }
}
register(SiglipVisionEmbeddings);

/** HF `SiglipVisionTransformer`, truncated after `numLayers` encoder layers (no post_layernorm, no head). */
export class SiglipVisionTransformer extends Module {
  static className = 'SiglipVisionTransformer';
  readonly cfg: VisionTowerConfig;
  embeddings: SiglipVisionEmbeddings;
  encoder: VisionEncoder;

  constructor(cfg: VisionTowerConfig, numLayers = cfg.numHiddenLayers) {
    super();
    if (numLayers > cfg.numHiddenLayers) throw new Error(`SigLIP tower: ${numLayers} layers requested, the config has ${cfg.numHiddenLayers}`);
    this.cfg = cfg;
    this.embeddings = new SiglipVisionEmbeddings(cfg);
    this.encoder = new VisionEncoder(cfg, numLayers);
  }

  /** pixels [B, C, S, S] → hidden_states[numLayers] [B, N, E]. Taps `vision.embeddings`, `vision.layer{i}`. */
  forward(pixels: tf.Tensor4D, opts: VisionForwardOptions = {}): tf.Tensor3D {
    const taps = opts.taps ?? null;
    return tf.tidy(() => {
      const emb = this.embeddings.forward(pixels);
      taps?.('vision.embeddings', emb);
      return this.encoder.forward(emb, taps);
    });
  }
}
register(SiglipVisionTransformer);

/** HF `SiglipVisionModel`: the `vision_model.` prefix of the checkpoint. */
export class SiglipVisionModel extends Module {
  static className = 'SiglipVisionModel';
  readonly cfg: VisionTowerConfig;
  vision_model: SiglipVisionTransformer;

  constructor(cfg: VisionTowerConfig, numLayers = cfg.numHiddenLayers) {
    super();
    this.cfg = cfg;
    this.vision_model = new SiglipVisionTransformer(cfg, numLayers);
  }

  get numLayers(): number {
    return this.vision_model.encoder.layers.length;
  }

  forward(pixels: tf.Tensor4D, opts: VisionForwardOptions = {}): tf.Tensor3D {
    return this.vision_model.forward(pixels, opts);
  }
}
register(SiglipVisionModel);
