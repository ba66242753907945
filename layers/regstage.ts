/**
 * timm's RegNet stage (huggingface/pytorch-image-models v1.0.3, commit cb0e4391): `RegStage` of
 * `Bottleneck` blocks (timm/models/regnet.py), `ConvNormAct` (timm/layers/conv_bn_act.py),
 * `LayerNormAct2d` (timm/layers/norm_act.py) and `SEModule` (timm/layers/squeeze_excite.py), as
 * VideoLLaMA2's STC connector builds them (`RegStage(depth, in, out, stride=1, dilation=1,
 * act_layer=nn.SiLU, norm_layer=LayerNorm2d)`, videollama2/model/projector.py). Reusable: every
 * constructor argument that the connector fixes is a parameter here.
 *
 * All activations are channels-last NHWC (see conv.ts); LayerNormAct2d, which permutes torch's
 * NCHW to NHWC, normalises over C, then permutes back, is therefore a plain last-axis LayerNorm.
 *
 * Bottleneck (regnet.py `Bottleneck.forward`):
 *   y = act3( conv3( se( conv2( conv1(x) ) ) ) + shortcut(x) )
 *   conv1 = 1×1 conv → LN → act;  conv2 = 3×3 grouped conv (group_size 1 ⇒ depthwise), pad 1 →
 *   LN → act;  se = x · σ(fc2(act(fc1(mean_HW(x)))));  conv3 = 1×1 conv → LN (no act);
 *   shortcut = 1×1 conv → LN (no act) when channels or stride change (`create_shortcut`
 *   'conv1x1'), else identity. Convs have no bias; the SE 1×1 convs do.
 * Checkpoint keys per block: `conv{1,2,3}.conv.weight`, `conv{1,2,3}.bn.{weight,bias}` (the norm
 * keeps BatchNorm's attribute name `bn`), `se.fc{1,2}.{weight,bias}`,
 * `downsample.conv.weight`, `downsample.bn.{weight,bias}`. Blocks are `b1` … `b{depth}`.
 *
 * Shape letters: N images, H/W height/width, C channels, R squeeze channels.
 */
import * as tf from '@tensorflow/tfjs';
import { checkpointLayer } from './checkpointing';
import { assembleRows, heapOpsReady, inferenceOps, sliceRows } from './heap_ops';
import { Conv2d } from './conv';
import { ActName, activation } from './mlp';
import { Module, register } from './module';
import { LayerNorm } from './norms';

/**
 * timm `LayerNormAct2d`: layer_norm over channels (eps default 1e-5 — timm's, not LayerNorm2d's
 * 1e-6: `get_norm_act_layer` maps `LayerNorm2d` to `LayerNormAct2d` with its own default), then
 * the activation unless `apply_act=False`. Checkpoint keys: `weight`, `bias` [C].
 */
export class LayerNormAct2d extends LayerNorm {
  static override className = 'LayerNormAct2d';
  readonly act: ActName | null;

  constructor(channels: number, eps = 1e-5, act: ActName | null = null) {
    super(channels, eps);
    this.act = act;
  }

  /**
   * x [N, H, W, C] → same shape. The same float32 ops in the same order as LayerNorm.forward,
   * ((x − mean) · rsqrt(var + eps)) · weight + bias, but each full-size intermediate is freed as
   * soon as the next exists: at STC's real size one activation is 151 MB ([16·24·24, 4096]).
   */
  override forward(x: tf.Tensor): tf.Tensor {
    if (x.dtype === 'float32' && heapOpsReady('layerNorm')) { // inference: LayerNorm's native pass (+ one for the act)
      const y = super.forward(x);
      if (!this.act) return y;
      const a = activation(this.act, y);
      y.dispose();
      return a;
    }
    return tf.tidy(() => {
      // tf.moments would also cast x and compute x − mean a second time: do it once
      const mean = tf.mean(x, -1, true); // [N, H, W, 1]
      const d = tf.sub(x, mean);
      const inv = tf.tidy(() => tf.rsqrt(tf.add(tf.mean(tf.square(d), -1, true), this.eps))); // biased variance
      const steps: ((t: tf.Tensor) => tf.Tensor)[] = [
        (t) => tf.mul(t, inv),
        (t) => tf.mul(t, this.weight.value),
        (t) => tf.add(t, this.bias.value),
      ];
      if (this.act) steps.push((t) => activation(this.act!, t));
      let y = d;
      for (const f of steps) {
        const next = f(y);
        y.dispose();
        y = next;
      }
      return y;
    });
  }
}
register(LayerNormAct2d);

export interface ConvNormActOptions {
  stride?: number;
  padding?: number;
  groups?: number;
  /** Activation after the norm, or null (`apply_act=False`). */
  act: ActName | null;
  eps?: number;
}

/** timm `ConvNormAct`: bias-free conv → LayerNormAct2d. Checkpoint keys: `conv.weight`, `bn.{weight,bias}`. */
export class ConvNormAct extends Module {
  static className = 'ConvNormAct';
  conv: Conv2d;
  bn: LayerNormAct2d;

  constructor(inCh: number, outCh: number, kernelSize: number, opts: ConvNormActOptions) {
    super();
    // timm create_conv2d with padding='' → symmetric ((stride − 1) + (k − 1)) / 2 for these sizes
    const padding = opts.padding ?? Math.floor(((opts.stride ?? 1) - 1 + (kernelSize - 1)) / 2);
    this.conv = new Conv2d(inCh, outCh, kernelSize, { stride: opts.stride, padding, groups: opts.groups });
    this.bn = new LayerNormAct2d(outCh, opts.eps ?? 1e-5, opts.act);
  }

  forward(x: tf.Tensor4D): tf.Tensor4D {
    return tf.tidy(() => {
      const c = this.conv.forward(x);
      const y = this.bn.forward(c) as tf.Tensor4D;
      c.dispose();
      return y;
    });
  }
}
register(ConvNormAct);

/**
 * timm `SEModule` with explicit `rd_channels`: x · sigmoid(fc2(act(fc1(mean over H, W)))), fc1/fc2
 * 1×1 convs with bias. Checkpoint keys: `fc1.{weight,bias}` [R, C, 1, 1], `fc2.{weight,bias}` [C, R, 1, 1].
 */
export class SqueezeExcite extends Module {
  static className = 'SqueezeExcite';
  readonly act: ActName;
  fc1: Conv2d;
  fc2: Conv2d;

  constructor(channels: number, rdChannels: number, act: ActName) {
    super();
    this.act = act;
    this.fc1 = new Conv2d(channels, rdChannels, 1, { bias: true });
    this.fc2 = new Conv2d(rdChannels, channels, 1, { bias: true });
  }

  /** x [N, H, W, C] → same shape. */
  forward(x: tf.Tensor4D): tf.Tensor4D {
    return tf.tidy(() => {
      const [N, H, W, C] = x.shape;
      // at inference the mean over H×W is one batched matmul with a row of 1/(H·W) (sgemm): wasm's
      // Mean over inner axes transposes first (40 ms per STC block); training keeps tf.mean (inferenceOps)
      const s = (!inferenceOps() ? tf.mean(x, [1, 2], true)
        : tf.matMul(tf.fill([N, 1, H * W], 1 / (H * W)), x.reshape([N, H * W, C])).reshape([N, 1, 1, C])) as tf.Tensor4D; // [N, 1, 1, C]
      const gate = tf.sigmoid(this.fc2.forward(activation(this.act, this.fc1.forward(s)) as tf.Tensor4D));
      return tf.mul(x, gate) as tf.Tensor4D;
    });
  }
}
register(SqueezeExcite);

export interface BottleneckOptions {
  stride?: number;
  /** `bottle_ratio` (default 1): bottleneck channels = round(out · ratio). */
  bottleRatio?: number;
  /** `group_size` (default 1 ⇒ depthwise conv2). */
  groupSize?: number;
  /** `se_ratio` (default 0.25): squeeze channels = round(in · ratio) — of the block's *input*. */
  seRatio?: number;
  /** `act_layer` (default 'relu' in timm; STC passes SiLU). Used after conv1, conv2, in SE and at the end. */
  act?: ActName;
  /** `linear_out` (default false): no final activation. */
  linearOut?: boolean;
  /** LayerNormAct2d eps (default 1e-5). */
  eps?: number;
}

/** timm regnet `Bottleneck` (dilation 1, no drop path: inference). */
export class Bottleneck extends Module {
  static className = 'Bottleneck';
  readonly act: ActName | null;
  conv1: ConvNormAct;
  conv2: ConvNormAct;
  se: SqueezeExcite | null;
  conv3: ConvNormAct;
  /** The shortcut; null means identity (timm returns nn.Identity, which has no keys). */
  downsample: ConvNormAct | null;

  constructor(inCh: number, outCh: number, opts: BottleneckOptions = {}) {
    super();
    const act = opts.act ?? 'relu';
    const stride = opts.stride ?? 1;
    const eps = opts.eps ?? 1e-5;
    const bott = Math.round(outCh * (opts.bottleRatio ?? 1));
    const groupSize = opts.groupSize ?? 1;
    if (bott % groupSize !== 0) throw new Error(`Bottleneck: ${bott} bottleneck channels are not divisible by group_size ${groupSize}`);
    const groups = bott / groupSize;
    this.conv1 = new ConvNormAct(inCh, bott, 1, { act, eps });
    this.conv2 = new ConvNormAct(bott, bott, 3, { stride, groups, act, eps });
    const seRatio = opts.seRatio ?? 0.25;
    // Python round() is round-half-to-even; channel counts here are never exact halves in practice,
    // but follow it anyway.
    this.se = seRatio ? new SqueezeExcite(bott, pyRound(inCh * seRatio), act) : null;
    this.conv3 = new ConvNormAct(bott, outCh, 1, { act: null, eps });
    this.act = opts.linearOut ? null : act;
    this.downsample = inCh !== outCh || stride !== 1 ? new ConvNormAct(inCh, outCh, 1, { stride, padding: 0, act: null, eps }) : null;
  }

  /** x [N, H, W, in] → [N, H', W', out]. Intermediates are freed as soon as they are used. */
  forward(x: tf.Tensor4D): tf.Tensor4D {
    return tf.tidy(() => {
      const stages: ((t: tf.Tensor4D) => tf.Tensor4D)[] = [(t) => this.conv2.forward(t)];
      if (this.se) stages.push((t) => this.se!.forward(t));
      stages.push((t) => this.conv3.forward(t));
      let y = this.conv1.forward(x);
      for (const f of stages) {
        const next = f(y);
        y.dispose();
        y = next;
      }
      const shortcut = this.downsample ? this.downsample.forward(x) : x;
      const sum = tf.add(y, shortcut) as tf.Tensor4D;
      y.dispose();
      if (shortcut !== x) shortcut.dispose();
      if (!this.act) return sum;
      const out = activation(this.act, sum) as tf.Tensor4D;
      sum.dispose();
      return out;
    });
  }
}
register(Bottleneck);

/** Python 3 round(): half to even. */
export function pyRound(v: number): number {
  const f = Math.floor(v), d = v - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/**
 * Activation budget of one pass through a stage's blocks, in bytes: larger batches are run in
 * chunks of whole images (every op of a block is per image — convs, per-position norms, the SE
 * mean over H×W — so the result is the same). At STC's real size one activation of all 16 frames
 * is 151 MB and a block holds ~5 of them, which with 1.9 GB of weights nears the 4 GB wasm heap;
 * with the weights outside the heap, 64 MB chunks (6 frames) still set the heap's high-water mark
 * of a quantized 16-frame chat (0.75 GB), so chunks are 32 MB (3 frames).
 */
export const REGSTAGE_CHUNK_BYTES = 32 * 2 ** 20;

/**
 * timm `RegStage`: `depth` Bottleneck blocks named b1 … b{depth}; the first maps in → out with the
 * stage's stride, the others out → out with stride 1.
 */
export class RegStage extends Module {
  static className = 'RegStage';
  readonly depth: number;
  /** Widest channel count of any block activation (for the chunk size). */
  readonly maxChannels: number;
  /** See REGSTAGE_CHUNK_BYTES; Infinity runs every batch at once. */
  chunkBytes = REGSTAGE_CHUNK_BYTES;

  constructor(depth: number, inCh: number, outCh: number, opts: BottleneckOptions = {}) {
    super();
    if (!Number.isInteger(depth) || depth < 1) throw new Error(`RegStage: depth must be a positive integer, got ${depth}`);
    this.depth = depth;
    this.maxChannels = Math.max(inCh, outCh, Math.round(outCh * (opts.bottleRatio ?? 1)));
    for (let i = 0; i < depth; i++) {
      // fields b1, b2, …: the checkpoint path segments
      (this as unknown as Record<string, Bottleneck>)[`b${i + 1}`] = new Bottleneck(i === 0 ? inCh : outCh, outCh, { ...opts, stride: i === 0 ? opts.stride : 1 });
    }
  }

  /** Block `b{i}` (1-based, as in the checkpoint). */
  block(i: number): Bottleneck {
    return (this as unknown as Record<string, Bottleneck>)[`b${i}`];
  }

  /**
   * x [N, H, W, in] → [N, H', W', out]; `onBlock(i, y)` sees each block's output (1-based i).
   * Without `onBlock`, batches larger than `chunkBytes` per activation run in chunks of images.
   */
  forward(x: tf.Tensor4D, onBlock?: (i: number, y: tf.Tensor4D) => void): tf.Tensor4D {
    const [N, H, W] = x.shape;
    const perImage = H * W * this.maxChannels * 4;
    const chunk = onBlock ? N : Math.max(1, Math.floor(this.chunkBytes / perImage));
    if (chunk >= N) return this.runBlocks(x, onBlock);
    return assembleRows(N, chunk, (s, n) => tf.tidy(() => this.runBlocks(sliceRows(x, s, n)))) as tf.Tensor4D;
  }

  private runBlocks(x: tf.Tensor4D, onBlock?: (i: number, y: tf.Tensor4D) => void): tf.Tensor4D {
    return tf.tidy(() => {
      let h = x;
      for (let i = 1; i <= this.depth; i++) {
        const blk = this.block(i);
        const next = checkpointLayer(blk, (t: tf.Tensor4D) => blk.forward(t), h); // --gradient-checkpointing: per block
        // Without a tap nothing else holds the previous output: free it now (peak ≈ 2 activations).
        if (h !== x && !onBlock) h.dispose();
        h = next;
        onBlock?.(i, h);
      }
      return h;
    });
  }

  override call(inputs: tf.Tensor | tf.Tensor[]): tf.Tensor {
    return this.forward((Array.isArray(inputs) ? inputs[0] : inputs) as tf.Tensor4D);
  }
}
register(RegStage);
