/**
 * Conv2d with torch.nn.Conv2d semantics (checkpoint weight [O, I/groups, kh, kw], optional bias
 * [O], symmetric integer padding, floor output size) on channels-last tensors: tfjs convs are
 * NHWC, so the whole vision stack keeps activations NHWC and only the taps transpose to torch's
 * NCHW.
 *
 * The computation is picked once, from the shape of the conv, with the weight layout to match
 * (module.ts `ParamLayout`, applied at load):
 *   - 'pointwise' (1×1, stride 1, no padding, groups 1 — RegStage conv1/conv3/shortcut, SE):
 *     a matmul [N·H·W, I] × W. With the OpenBLAS kernels the matmul runs multi-threaded sgemm while
 *     the wasm XNNPACK conv runs on the single wasm thread, so this is several times faster
 *     (measured in test/videollama2/bench_stc.ts, see `STC_TIMINGS` in models/videollama2/bench_cases.ts).
 *     The weight keeps torch's [O, I] ('same', transposeB) where the Linear layers do, else [I, O].
 *   - 'patch' (kernel = stride, no padding, groups 1 — the ViT patch embedding): non-overlapping
 *     patches are gathered by one reshape + transpose and multiplied by the HWIO weight seen as
 *     [kh·kw·I, O] (im2col without duplication).
 *   - 'depthwise' (groups = I = O — RegStage conv2): tf.depthwiseConv2d, weight [kh, kw, C, 1].
 *   - 'dense' (anything else with groups 1): tf.conv2d, weight HWIO.
 * Other group counts are rejected.
 *
 * Shape letters: B batch, H/W height/width, I/O input/output channels, k kernel size.
 */
import * as tf from '@tensorflow/tfjs';
import { LayoutChoice, byMatmul } from './layout';
import { Module, Param, register } from './module';
import { TensorStorage } from './storage';

export type Conv2dImpl = 'pointwise' | 'patch' | 'depthwise' | 'dense';

export interface Conv2dOptions {
  /** Stride (both axes). Default 1. */
  stride?: number;
  /** Zero padding on every side (torch `padding=int`). Default 0. */
  padding?: number;
  /** 1 or in_channels (depthwise, with out_channels = in_channels). Default 1. */
  groups?: number;
  /** Has a bias [O]. Default false (timm convs and CLIP's patch embedding have none). */
  bias?: boolean;
  /** Force an implementation ('dense' is always valid for groups 1); default: chosen from the shape. */
  impl?: Conv2dImpl;
}

/** The implementation `Conv2d` uses for a conv of this shape. */
export function conv2dImpl(inCh: number, outCh: number, k: number, stride: number, padding: number, groups: number): Conv2dImpl {
  if (groups !== 1) {
    if (groups === inCh && outCh === inCh) return 'depthwise';
    throw new Error(`Conv2d: groups = ${groups} is not supported (only 1 or in_channels = out_channels = ${inCh} for depthwise)`);
  }
  if (k === 1 && stride === 1 && padding === 0) return 'pointwise';
  if (k === stride && padding === 0) return 'patch';
  return 'dense';
}

/** torch.nn.Conv2d (square kernel) on NHWC input. Checkpoint keys: `weight` [O, I/groups, k, k], `bias` [O]. */
export class Conv2d extends Module {
  static className = 'Conv2d';
  readonly inChannels: number;
  readonly outChannels: number;
  readonly kernelSize: number;
  readonly stride: number;
  readonly padding: number;
  readonly groups: number;
  readonly impl: Conv2dImpl;
  weight: Param;
  bias: Param | null;

  constructor(inChannels: number, outChannels: number, kernelSize: number, opts: Conv2dOptions = {}) {
    super();
    this.inChannels = inChannels;
    this.outChannels = outChannels;
    this.kernelSize = kernelSize;
    this.stride = opts.stride ?? 1;
    this.padding = opts.padding ?? 0;
    this.groups = opts.groups ?? 1;
    const auto = conv2dImpl(inChannels, outChannels, kernelSize, this.stride, this.padding, this.groups);
    this.impl = opts.impl ?? auto;
    if (this.impl !== auto && !(this.impl === 'dense' && this.groups === 1)) {
      throw new Error(`Conv2d: impl '${this.impl}' does not fit this conv (k=${kernelSize}, stride ${this.stride}, padding ${this.padding}, groups ${this.groups})`);
    }
    let layout: LayoutChoice;
    if (this.impl === 'pointwise') layout = byMatmul('same', 'oihw_to_hwio');
    else if (this.impl === 'depthwise') layout = 'depthwise_to_hwc1';
    else layout = 'oihw_to_hwio';
    // a pointwise kernel is a matrix [O, I] read only by matmul: it may be stored natively (f16/bf16)
    this.weight = new Param([outChannels, inChannels / this.groups, kernelSize, kernelSize], { layout, storable: this.impl === 'pointwise' ? 'matmul' : undefined });
    this.bias = opts.bias ? new Param([outChannels]) : null;
  }

  /** torch's output size along one axis: ⌊(n + 2p − k) / s⌋ + 1. */
  outSize(n: number): number {
    return Math.floor((n + 2 * this.padding - this.kernelSize) / this.stride) + 1;
  }

  /** x [B, H, W, I] → [B, H', W', O]. */
  forward(x: tf.Tensor4D): tf.Tensor4D {
    const [B, H, W, C] = x.shape;
    if (C !== this.inChannels) throw new Error(`${this.name}: input has ${C} channels (NHWC [${x.shape}]), expected ${this.inChannels}`);
    const Ho = this.outSize(H), Wo = this.outSize(W);
    if (Ho < 1 || Wo < 1) throw new Error(`${this.name}: input ${H}×${W} is smaller than the ${this.kernelSize}×${this.kernelSize} kernel`);
    const O = this.outChannels, k = this.kernelSize;
    const bias = this.bias ? this.bias.value : undefined;
    if (this.impl === 'pointwise' && !(this.weight.storage instanceof TensorStorage)) {
      return tf.tidy(() => this.weight.matmul(x.reshape([B * H * W, C]) as tf.Tensor2D, bias).reshape([B, H, W, O]) as tf.Tensor4D); // native [O, I]
    }
    const w = this.weight.value;
    return tf.tidy(() => {
      switch (this.impl) {
        case 'pointwise': {
          const transposeB = this.weight.layout === 'same'; // [O, I] in memory, else [I, O]
          const w2 = (transposeB ? w.reshape([O, C]) : w.reshape([C, O])) as tf.Tensor2D;
          const y = tf.fused.matMul({ a: x.reshape([B * H * W, C]) as tf.Tensor2D, b: w2, transposeB, bias }); // [B·H·W, O]
          return y.reshape([B, H, W, O]) as tf.Tensor4D;
        }
        case 'patch': {
          // torch drops the rows/columns that do not fill a last patch
          const xc = Ho * k === H && Wo * k === W ? x : x.slice([0, 0, 0, 0], [B, Ho * k, Wo * k, C]);
          // one rank-4 transpose (wasm's rank-5+ transposes are much slower):
          // [B·Ho, kh, Wo, kw·I] → [B·Ho, Wo, kh, kw·I] = rows (B, Ho, Wo) of kh·kw·I values, HWIO order
          const patches = xc.reshape([B * Ho, k, Wo, k * C]).transpose([0, 2, 1, 3]).reshape([B * Ho * Wo, k * k * C]);
          const y = tf.fused.matMul({ a: patches as tf.Tensor2D, b: w.reshape([k * k * C, O]) as tf.Tensor2D, bias }); // HWIO as [kh·kw·I, O]
          return y.reshape([B, Ho, Wo, O]) as tf.Tensor4D;
        }
        case 'depthwise': {
          const y = tf.depthwiseConv2d(x, w as tf.Tensor4D, this.stride, this.padding);
          return (bias ? tf.add(y, bias) : y) as tf.Tensor4D;
        }
        case 'dense': {
          const y = tf.conv2d(x, w as tf.Tensor4D, this.stride, this.padding);
          return (bias ? tf.add(y, bias) : y) as tf.Tensor4D;
        }
      }
    });
  }

  override call(inputs: tf.Tensor | tf.Tensor[]): tf.Tensor {
    return this.forward((Array.isArray(inputs) ? inputs[0] : inputs) as tf.Tensor4D);
  }

  override computeOutputShape(inputShape: tf.Shape): tf.Shape {
    const [B, H, W] = inputShape as number[];
    return [B, this.outSize(H), this.outSize(W), this.outChannels];
  }

  override getConfig(): tf.serialization.ConfigDict {
    return {
      ...super.getConfig(), inChannels: this.inChannels, outChannels: this.outChannels, kernelSize: this.kernelSize,
      stride: this.stride, padding: this.padding, groups: this.groups, impl: this.impl,
    };
  }
}
register(Conv2d);
