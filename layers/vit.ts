/**
 * The pre-LayerNorm ViT encoder layer shared by the CLIP, SigLIP and SigLIP-NaViT vision towers
 * (HF v4.40 `CLIPEncoderLayer` / `SiglipEncoderLayer`, MiniCPM-V `modeling_navit_siglip.py`):
 *
 *   h = x + self_attn(layer_norm1(x), mask)
 *   y = h + mlp(layer_norm2(h))          mlp = fc2(act(fc1(·)))
 *
 * Checkpoint keys per layer: `self_attn.{q,k,v,out}_proj.{weight,bias}`,
 * `layer_norm1.{weight,bias}`, `layer_norm2.{weight,bias}`, `mlp.fc1.*`, `mlp.fc2.*`.
 *
 * The one numeric difference between the towers is where the 1/√D scale goes: CLIP multiplies the
 * query before the matmul (`q_proj(x) * scale`), SigLIP multiplies the scores after it.
 *
 * Shape letters: B images, N tokens, E hidden, H heads, D head dim.
 */
import * as tf from '@tensorflow/tfjs';
import { attend, attendHeads } from './attention';
import { Linear } from './linear';
import { ActName, FcMLP } from './mlp';
import { Module, register } from './module';
import { LayerNorm } from './norms';

export interface VisionLayerConfig {
  hiddenSize: number;
  numHeads: number;
  intermediateSize: number;
  act: ActName;
  layerNormEps: number;
  /** 'query': scale q before q·kᵀ (CLIP); 'scores': scale the scores (SigLIP). */
  scaleAt: 'query' | 'scores';
}

/** Multi-head self-attention with biases (no rotary, no cache). */
export class VisionAttention extends Module {
  static className = 'VisionAttention';
  readonly cfg: VisionLayerConfig;
  readonly headDim: number;
  q_proj: Linear;
  k_proj: Linear;
  v_proj: Linear;
  out_proj: Linear;

  constructor(cfg: VisionLayerConfig) {
    super();
    if (cfg.hiddenSize % cfg.numHeads !== 0) throw new Error(`hidden_size (${cfg.hiddenSize}) must be divisible by num_attention_heads (${cfg.numHeads})`);
    this.cfg = cfg;
    this.headDim = cfg.hiddenSize / cfg.numHeads;
    const E = cfg.hiddenSize;
    this.q_proj = new Linear(E, E, { bias: true });
    this.k_proj = new Linear(E, E, { bias: true });
    this.v_proj = new Linear(E, E, { bias: true });
    this.out_proj = new Linear(E, E, { bias: true });
  }

  /** x [B, N, E]; mask additive, broadcastable to [B, H, N, N] (e.g. [B, 1, 1, N] for padded keys), or null. */
  forward(x: tf.Tensor3D, mask: tf.Tensor | null): tf.Tensor3D {
    return tf.tidy(() => {
      const [B, N, E] = x.shape;
      const H = this.cfg.numHeads, D = this.headDim;
      const scale = D ** -0.5;
      const heads = (t: tf.Tensor) => t.reshape([B, N, H, D]).transpose([0, 2, 1, 3]); // [B, H, N, D]
      let q = this.q_proj.forward(x);
      if (this.cfg.scaleAt === 'query') q = tf.mul(q, scale);
      const k = heads(this.k_proj.forward(x));
      const v = heads(this.v_proj.forward(x));
      const sc = this.cfg.scaleAt === 'scores' ? { mul: scale } : null;
      const ctx = mask && mask.rank === 4 && mask.shape[1] !== 1
        ? attend(heads(q), k, v, sc, mask) // a per-head mask: one call
        : attendHeads(heads(q) as tf.Tensor4D, k as tf.Tensor4D, v as tf.Tensor4D, sc, () => mask); // [B, H, N, D]
      return this.out_proj.forward(ctx.transpose([0, 2, 1, 3]).reshape([B, N, E])) as tf.Tensor3D;
    });
  }
}
register(VisionAttention);

export class VisionEncoderLayer extends Module {
  static className = 'VisionEncoderLayer';
  self_attn: VisionAttention;
  layer_norm1: LayerNorm;
  mlp: FcMLP;
  layer_norm2: LayerNorm;

  constructor(cfg: VisionLayerConfig) {
    super();
    this.self_attn = new VisionAttention(cfg);
    this.layer_norm1 = new LayerNorm(cfg.hiddenSize, cfg.layerNormEps);
    this.mlp = new FcMLP(cfg.hiddenSize, cfg.intermediateSize, cfg.act);
    this.layer_norm2 = new LayerNorm(cfg.hiddenSize, cfg.layerNormEps);
  }

  forward(x: tf.Tensor3D, mask: tf.Tensor | null = null): tf.Tensor3D {
    return tf.tidy(() => {
      const h = tf.add(x, this.self_attn.forward(this.layer_norm1.forward(x) as tf.Tensor3D, mask));
      return tf.add(h, this.mlp.forward(this.layer_norm2.forward(h))) as tf.Tensor3D;
    });
  }

  override call(inputs: tf.Tensor | tf.Tensor[]): tf.Tensor {
    return this.forward((Array.isArray(inputs) ? inputs[0] : inputs) as tf.Tensor3D);
  }
}
register(VisionEncoderLayer);
