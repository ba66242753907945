/**
 * VideoLLaMA2 vision-language connectors: DAMO-NLP-SG/VideoLLaMA2 (commit c0bb03ab)
 * `videollama2/model/projector.py` (`build_vision_projector`, `build_mlp`, `STCConnector`,
 * `STCConnectorV35`, `STPConnector`, `SpatialConv`, `SpatialPool`) together with the frame
 * aggregation of `videollama2_arch.py` `temporal_aggregator`.
 *
 * STC (`stc_connector`, VideoLLaMA2; `stc_connector_v35`, VideoLLaMA2.1):
 *   x [B, T, N, D] → `b t (h w) d -> (b t) d h w` → s1 = RegStage(4, D → H) →
 *   `(b t) d h w -> b d t h w` → sampler = Conv3d(H, H, k=s=(2,2,2), bias) + SiLU →
 *   `b d t h w -> (b t) d h w` → s2 = RegStage(4, H → H) → `(b t) d h w -> b (t h w) d` →
 *   readout = Linear(H, H) → GELU(erf) → Linear(H, H)
 * The two differ only in the sampler's padding: 1 (STCConnector) vs 0 (STCConnectorV35, which
 * replaces `self.sampler` after the parent constructor; everything else is inherited).
 * `stp_connector` replaces the sampler by AvgPool3d(2) + SiLU; `spatial_conv` / `spatial_pool`
 * are STC / STP with depth 0 (s1 = s2 = identity) and downsample (1, 2, 2) — note spatial_conv
 * inherits padding 1 on every axis, the temporal one included. `linear` and `mlp{N}x_gelu` are
 * applied to the mean over frames (`frames_features.mean(1)`).
 *
 * Layout: activations stay channels-last, so every einops rearrange above is a plain reshape
 * (NHWC [(b t), h, w, d] and NDHWC [b, t, h, w, d] are the same memory); only the golden taps
 * transpose to torch's NCHW/NCDHW.
 *
 * Checkpoint keys (under `mm_projector.`): `s{1,2}.b{1..4}.*` (layers/regstage.ts),
 * `sampler.0.{weight,bias}` (Conv3d), `readout.{0,2}.{weight,bias}`; linear: `weight`, `bias`;
 * mlp{N}x_gelu: `{0,2,…}.{weight,bias}`.
 *
 * Shape letters: B videos, T frames, N patches per frame (= h·w), D tower hidden, H LLM hidden.
 */
import * as tf from '@tensorflow/tfjs';
import { Conv3d, Triple } from '../../layers/conv3d';
import { Tap } from '../../layers/decoder';
import { Linear } from '../../layers/linear';
import { activation } from '../../layers/mlp';
import { Module, register } from '../../layers/module';
import { RegStage } from '../../layers/regstage';
import { PROJECTOR_TYPES } from './config';

/** `build_mlp(depth, in, out)` / the `mlp{N}x_gelu` projector: Linear (→ GELU → Linear)×(depth−1), keys `0`, `2`, …. */
export class GeluMLP extends Module {
  static className = 'GeluMLP';
  readonly depth: number;

  constructor(depth: number, inFeatures: number, outFeatures: number) {
    super();
    if (!Number.isInteger(depth) || depth < 1) throw new Error(`build_mlp: depth must be a positive integer, got ${depth}`);
    this.depth = depth;
    const fields = this as unknown as Record<string, Linear>;
    for (let i = 0; i < depth; i++) fields[String(2 * i)] = new Linear(i === 0 ? inFeatures : outFeatures, outFeatures, { bias: true });
  }

  /** x [..., in] → [..., out]. */
  forward(x: tf.Tensor): tf.Tensor {
    const fields = this as unknown as Record<string, Linear>;
    return tf.tidy(() => {
      let h = fields['0'].forward(x);
      for (let i = 1; i < this.depth; i++) h = fields[String(2 * i)].forward(activation('gelu', h)); // nn.GELU(): erf form
      return h;
    });
  }
}
register(GeluMLP);

/** `nn.Sequential(nn.Conv3d(...), nn.SiLU())`: key `0` is the conv. */
export class ConvSampler extends Module {
  static className = 'ConvSampler';
  declare '0': Conv3d;

  constructor(channels: number, downsample: Triple, padding: number) {
    super();
    this['0'] = new Conv3d(channels, channels, downsample, { stride: downsample, padding, bias: true });
  }

  /** x [B, T, h, w, H] (NDHWC) → SiLU(conv3d(x)); taps `stc.sampler.conv3d` (before the SiLU) in NCDHW. */
  forward(x: tf.Tensor5D, taps?: Tap | null): tf.Tensor5D {
    return tf.tidy(() => {
      const y = this['0'].forward(x);
      taps?.('stc.sampler.conv3d', y.transpose([0, 4, 1, 2, 3])); // [B, H, T', h', w']
      return activation('silu', y) as tf.Tensor5D;
    });
  }
}
register(ConvSampler);

/** `nn.Sequential(nn.AvgPool3d(k), nn.SiLU())` (stride = kernel, no padding, floor): no keys. */
export class PoolSampler extends Module {
  static className = 'PoolSampler';
  readonly kernel: Triple;

  constructor(kernel: Triple) {
    super();
    this.kernel = kernel;
  }

  forward(x: tf.Tensor5D): tf.Tensor5D {
    const [B, T, h, w, C] = x.shape;
    const [kt, kh, kw] = this.kernel;
    const To = Math.floor(T / kt), Ho = Math.floor(h / kh), Wo = Math.floor(w / kw);
    if (To < 1 || Ho < 1 || Wo < 1) throw new Error(`AvgPool3d: input ${T}×${h}×${w} is smaller than the kernel [${this.kernel}]`);
    return tf.tidy(() => {
      const xc = x.slice([0, 0, 0, 0, 0], [B, To * kt, Ho * kh, Wo * kw, C]);
      const m = tf.mean(xc.reshape([B, To, kt, Ho, kh, Wo, kw, C]), [2, 4, 6]); // [B, T', h', w', C]
      return activation('silu', m) as tf.Tensor5D;
    });
  }
}
register(PoolSampler);

export interface STCOptions {
  /** (temporal, height, width) downsample = Conv3d kernel = stride. Default (2, 2, 2). */
  downsample?: Triple;
  /** RegStage depth; 0 = identity stages. Default 4. */
  depth?: number;
  /** readout `build_mlp` depth. Default 2. */
  mlpDepth?: number;
  /** Conv3d padding (1: stc_connector / spatial_conv, 0: stc_connector_v35), or 'avgpool' (stp / spatial_pool). */
  sampler: number | 'avgpool';
}

/** `STCConnector` and its variants (see the header). */
export class STCConnector extends Module {
  static className = 'STCConnector';
  readonly encoderHiddenSize: number;
  readonly hiddenSize: number;
  s1: RegStage | null;
  sampler: ConvSampler | PoolSampler;
  s2: RegStage | null;
  readout: GeluMLP;

  constructor(mmHiddenSize: number, hiddenSize: number, opts: STCOptions) {
    super();
    this.encoderHiddenSize = mmHiddenSize;
    this.hiddenSize = hiddenSize;
    const depth = opts.depth ?? 4;
    const downsample = opts.downsample ?? [2, 2, 2];
    // RegStage(depth, in, out, stride=1, dilation=1, act_layer=nn.SiLU, norm_layer=LayerNorm2d): timm
    // Bottleneck defaults bottle_ratio 1, group_size 1, se_ratio 0.25, downsample 'conv1x1'.
    const block = { act: 'silu' as const, eps: 1e-5, bottleRatio: 1, groupSize: 1, seRatio: 0.25, stride: 1 };
    this.s1 = depth ? new RegStage(depth, mmHiddenSize, hiddenSize, block) : null;
    this.sampler = opts.sampler === 'avgpool' ? new PoolSampler(downsample) : new ConvSampler(hiddenSize, downsample, opts.sampler);
    this.s2 = depth ? new RegStage(depth, hiddenSize, hiddenSize, block) : null;
    this.readout = new GeluMLP(opts.mlpDepth ?? 2, hiddenSize, hiddenSize);
  }

  /**
   * Frame features [B, T, N, D] (N = h·w, square) → tokens [B, T'·h'·w', H]. Taps (torch layout):
   * `stc.s1.b{i}`, `stc.s1` [B·T, H, h, w], `stc.sampler.conv3d`, `stc.sampler` [B, H, T', h', w'],
   * `stc.s2.b{i}`, `stc.s2` [B·T', H, h', w'], `stc.readout` [B, T'·h'·w', H].
   */
  forward(x: tf.Tensor4D, taps?: Tap | null): tf.Tensor3D {
    const [B, T, N, D] = x.shape;
    const hw = Math.floor(Math.sqrt(N));
    if (hw * hw !== N) throw new Error(`STC connector: ${N} tokens per frame is not a square grid (einops 'b t (h w) d' with h = w = int(√N) = ${hw})`);
    if (D !== this.encoderHiddenSize) throw new Error(`STC connector: features have ${D} channels, mm_hidden_size is ${this.encoderHiddenSize}`);
    const nchw = (t: tf.Tensor) => t.transpose([0, 3, 1, 2]); // [N, C, h, w] for taps
    return tf.tidy(() => {
      // Without taps each stage's input is freed once the next stage has run (peak ≈ 2 activations).
      const free = (t: tf.Tensor) => { if (!taps) t.dispose(); };
      let h = x.reshape([B * T, hw, hw, D]) as tf.Tensor4D; // b t (h w) d -> (b t) d h w, channels-last
      if (this.s1) {
        const y = this.s1.forward(h, taps ? (i, t) => taps(`stc.s1.b${i}`, nchw(t)) : undefined);
        free(h);
        h = y;
        taps?.('stc.s1', nchw(h));
      }
      const C = h.shape[3];
      const v = this.sampler.forward(h.reshape([B, T, hw, hw, C]) as tf.Tensor5D, taps); // (b t) d h w -> b d t h w
      free(h);
      taps?.('stc.sampler', v.transpose([0, 4, 1, 2, 3]));
      const [, To, Ho, Wo] = v.shape;
      h = v.reshape([B * To, Ho, Wo, C]) as tf.Tensor4D; // b d t h w -> (b t) d h w
      free(v);
      if (this.s2) {
        const y = this.s2.forward(h, taps ? (i, t) => taps(`stc.s2.b${i}`, nchw(t)) : undefined);
        free(h);
        h = y;
        taps?.('stc.s2', nchw(h));
      }
      const out = this.readout.forward(h.reshape([B, To * Ho * Wo, C])) as tf.Tensor3D; // (b t) d h w -> b (t h w) d
      taps?.('stc.readout', out);
      return out;
    });
  }
}
register(STCConnector);


export type Connector = STCConnector | Linear | GeluMLP;

/** `build_vision_projector(config)` for the types above. */
export function buildConnector(type: string, mmHiddenSize: number, hiddenSize: number): Connector {
  const mlp = /^mlp(\d+)x_gelu$/.exec(type);
  if (mlp) return new GeluMLP(Number(mlp[1]), mmHiddenSize, hiddenSize);
  switch (type) {
    case 'linear': return new Linear(mmHiddenSize, hiddenSize, { bias: true });
    case 'stc_connector': return new STCConnector(mmHiddenSize, hiddenSize, { sampler: 1 });
    case 'stc_connector_v35': return new STCConnector(mmHiddenSize, hiddenSize, { sampler: 0 });
    case 'stp_connector': return new STCConnector(mmHiddenSize, hiddenSize, { sampler: 'avgpool' });
    case 'spatial_conv': return new STCConnector(mmHiddenSize, hiddenSize, { sampler: 1, depth: 0, downsample: [1, 2, 2] });
    case 'spatial_pool': return new STCConnector(mmHiddenSize, hiddenSize, { sampler: 'avgpool', depth: 0, downsample: [1, 2, 2] });
    default:
      throw new Error(`mm_projector_type '${type}' is not supported; expected one of ${PROJECTOR_TYPES.join(', ')}`);
  }
}

/**
 * `temporal_aggregator`: frame features [B, T, N, D] → [B, L, H] through `connector`
 * (STC-family: the whole [B, T, N, D]; linear / mlp: the mean over frames).
 */
export function aggregate(connector: Connector, frames: tf.Tensor4D, taps?: Tap | null): tf.Tensor3D {
  if (connector instanceof STCConnector) return connector.forward(frames, taps);
  return tf.tidy(() => {
    const out = connector.forward(tf.mean(frames, 1)) as tf.Tensor3D; // frames_features.mean(1)
    taps?.('stc.readout', out);
    return out;
  });
}
