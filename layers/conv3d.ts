/**
 * Conv3d with torch.nn.Conv3d semantics (checkpoint weight [O, I, kd, kh, kw], bias [O],
 * symmetric per-axis zero padding, floor output size) on channels-last NDHWC tensors (tfjs's
 * conv3d layout). Used by VideoLLaMA2's STC sampler (`projector.py` STCConnector:
 * Conv3d(k=(2,2,2), s=(2,2,2), padding 1 or, in `stc_connector_v35`, 0)).
 *
 * The weight is stored DHWIO ('oidhw_to_dhwio'). When kernel = stride (the sampler) the windows
 * do not overlap, so after zero-padding the conv is one reshape + transpose that gathers each
 * window's kd·kh·kw·I values in DHWIO order, and one matmul with the weight seen as
 * [kd·kh·kw·I, O] — which runs on the OpenBLAS sgemm instead of the single-threaded wasm Conv3D
 * kernel (measured in models/videollama2/bench_cases.ts). Otherwise tf.conv3d on the padded input.
 *
 * Shape letters: B batch, D/H/W depth (time)/height/width, I/O channels.
 */
import * as tf from '@tensorflow/tfjs';
import { sliceRows } from './heap_ops';
import { Module, Param, register } from './module';
import { TensorStorage } from './storage';

export type Triple = [number, number, number];

export interface Conv3dOptions {
  stride?: number | Triple;
  /** Zero padding per axis (torch `padding=int|tuple`), applied on both sides. Default 0. */
  padding?: number | Triple;
  bias?: boolean;
  /** 'patch' (kernel = stride only) or 'conv' (tf.conv3d); default: 'patch' when it applies. */
  impl?: 'patch' | 'conv';
}

const triple = (v: number | Triple): Triple => (typeof v === 'number' ? [v, v, v] : v);

/** torch.nn.Conv3d on NDHWC input. Checkpoint keys: `weight` [O, I, kd, kh, kw], `bias` [O]. */
export class Conv3d extends Module {
  static className = 'Conv3d';
  /** Input bytes the patch form gathers per pass (a few output slabs; tests lower it). */
  static slabBytes = 32 * 2 ** 20;
  readonly inChannels: number;
  readonly outChannels: number;
  readonly kernelSize: Triple;
  readonly stride: Triple;
  readonly padding: Triple;
  readonly impl: 'patch' | 'conv';
  weight: Param;
  bias: Param | null;

  constructor(inChannels: number, outChannels: number, kernelSize: number | Triple, opts: Conv3dOptions = {}) {
    super();
    this.inChannels = inChannels;
    this.outChannels = outChannels;
    this.kernelSize = triple(kernelSize);
    this.stride = triple(opts.stride ?? 1);
    this.padding = triple(opts.padding ?? 0);
    const isPatch = this.kernelSize.every((k, i) => k === this.stride[i]);
    this.impl = opts.impl ?? (isPatch ? 'patch' : 'conv');
    if (this.impl === 'patch' && !isPatch) throw new Error(`Conv3d: impl 'patch' needs kernel = stride, got kernel [${this.kernelSize}] stride [${this.stride}]`);
    const [kd, kh, kw] = this.kernelSize;
    // the patch form reads its kernel only by matmul: it may be stored natively as [O, I·kd·kh·kw]
    this.weight = new Param([outChannels, inChannels, kd, kh, kw], { layout: 'oidhw_to_dhwio', storable: this.impl === 'patch' ? 'matmul' : undefined });
    this.bias = opts.bias === false ? null : new Param([outChannels]); // torch default: bias=True
  }

  /** torch's output size along axis a: ⌊(n + 2p − k) / s⌋ + 1. */
  outSize(n: number, a: 0 | 1 | 2): number {
    return Math.floor((n + 2 * this.padding[a] - this.kernelSize[a]) / this.stride[a]) + 1;
  }

  /** x [B, D, H, W, I] → [B, D', H', W', O]. */
  forward(x: tf.Tensor5D): tf.Tensor5D {
    const [B, D, H, W, C] = x.shape;
    if (C !== this.inChannels) throw new Error(`${this.name}: input has ${C} channels (NDHWC [${x.shape}]), expected ${this.inChannels}`);
    const Do = this.outSize(D, 0), Ho = this.outSize(H, 1), Wo = this.outSize(W, 2);
    if (Do < 1 || Ho < 1 || Wo < 1) throw new Error(`${this.name}: input ${D}×${H}×${W} (+ padding [${this.padding}]) is smaller than the kernel [${this.kernelSize}]`);
    const [pd, ph, pw] = this.padding;
    const [kd, kh, kw] = this.kernelSize;
    const O = this.outChannels;
    const native = !(this.weight.storage instanceof TensorStorage); // [O, I·kd·kh·kw] outside tfjs
    const w = native ? null : this.weight.value;
    const bias = this.bias ? this.bias.value : undefined;
    if (this.impl === 'conv') {
      return tf.tidy(() => {
        const xp = pd || ph || pw ? tf.pad(x, [[0, 0], [pd, pd], [ph, ph], [pw, pw], [0, 0]]) : x;
        const y = tf.conv3d(xp, w as tf.Tensor5D, this.stride, 'valid');
        return (bias ? tf.add(y, bias) : y) as tf.Tensor5D;
      });
    }
    // Non-overlapping windows (kernel = stride), in passes of `dn` output depths for all B: the
    // input depths [d0·kd − pd, (d0 + dn)·kd − pd) are cut out, zero-padded (depth ends, H, W) and
    // cropped to whole windows (torch floors; a slice is slow on wasm, so only when needed); two
    // rank-4 transposes then gather each window's values (wasm's rank-5+ transposes are ~10x
    // slower: 3.8 s vs 0.3 s at STC's real size):
    // [G, kd, H', kh·W'·kw·I] → [G, H', kd, kh·W'·kw·I] = [G·H', kd·kh, W', kw·I]
    // → [G·H', W', kd·kh, kw·I] = rows (g, H', W') of kd·kh·kw·I values, DHWIO order, for the
    // G = B·dn output slabs of the pass. A pass gathers about `slabBytes`: at STC's real size one
    // output depth is 22 MB, while padding and gathering the whole input at once (200 MB per copy)
    // took the wasm heap's high-water mark from 0.63 to 1.47 GB.
    const K = kd * kh * kw, Hp = H + 2 * ph, Wp = W + 2 * pw;
    const per = Math.max(1, Math.floor(Conv3d.slabBytes / (B * kd * Hp * Wp * C * 4)));
    const parts: tf.Tensor5D[] = [];
    for (let d0 = 0; d0 < Do; d0 += per) {
      const dn = Math.min(per, Do - d0);
      parts.push(tf.tidy(() => {
        const lo = d0 * kd - pd, hi = (d0 + dn) * kd - pd; // input depths of this pass, padding included
        const a = Math.max(0, lo), b = Math.min(D, hi);
        let xs: tf.Tensor5D;
        if (b <= a) xs = tf.zeros([B, hi - lo, Hp, Wp, C]);
        else {
          const cut = a === 0 && b === D ? x
            : B === 1 ? sliceRows(x.reshape([D, H * W * C]), a, b - a).reshape([1, b - a, H, W, C]) as tf.Tensor5D
              : x.reshape([B, D, H * W * C]).slice([0, a, 0], [B, b - a, H * W * C]).reshape([B, b - a, H, W, C]) as tf.Tensor5D;
          xs = a - lo || hi - b || ph || pw ? tf.pad(cut, [[0, 0], [a - lo, hi - b], [ph, ph], [pw, pw], [0, 0]]) : cut;
        }
        const xc = Hp === Ho * kh && Wp === Wo * kw ? xs : crop5(xs, dn * kd, Ho * kh, Wo * kw);
        const t1 = xc.reshape([B * dn, kd, Ho, kh * Wo * kw * C]).transpose([0, 2, 1, 3]); // [G, H', kd, kh·W'·kw·I]
        const patches = t1.reshape([B * dn * Ho, kd * kh, Wo, kw * C]).transpose([0, 2, 1, 3]); // [G·H', W', kd·kh, kw·I]
        const N = B * dn * Ho * Wo;
        const y = native
          ? this.weight.matmul(patches.reshape([N, K, C]).transpose([0, 2, 1]).reshape([N, C * K]) as tf.Tensor2D, bias) // rows in torch's (I, kd, kh, kw) order
          : tf.fused.matMul({ a: patches.reshape([N, K * C]) as tf.Tensor2D, b: w!.reshape([K * C, O]) as tf.Tensor2D, bias }); // DHWIO as [kd·kh·kw·I, O]
        return y.reshape([B, dn, Ho, Wo, O]) as tf.Tensor5D;
      }));
    }
    if (parts.length === 1) return parts[0];
    const y = tf.concat(parts, 1) as tf.Tensor5D;
    tf.dispose(parts);
    return y;
  }

  override call(inputs: tf.Tensor | tf.Tensor[]): tf.Tensor {
    return this.forward((Array.isArray(inputs) ? inputs[0] : inputs) as tf.Tensor5D);
  }

  override computeOutputShape(inputShape: tf.Shape): tf.Shape {
    const [B, D, H, W] = inputShape as number[];
    return [B, this.outSize(D, 0), this.outSize(H, 1), this.outSize(W, 2), this.outChannels];
  }

  override getConfig(): tf.serialization.ConfigDict {
    return {
      ...super.getConfig(), inChannels: this.inChannels, outChannels: this.outChannels, kernelSize: this.kernelSize,
      stride: this.stride, padding: this.padding, impl: this.impl,
    };
  }
}
register(Conv3d);

/**
 * x[:, :D, :H, :W, :] of an NDHWC tensor as three rank-3 slices (tfjs-wasm slices rank ≥ 5
 * element by element in JS; rank ≤ 4 copies contiguous runs).
 */
function crop5(x: tf.Tensor5D, D: number, H: number, W: number): tf.Tensor5D {
  return tf.tidy(() => {
    const [B, D0, H0, W0, C] = x.shape;
    const a = x.reshape([B, D0, H0 * W0 * C]).slice([0, 0, 0], [B, D, H0 * W0 * C]); // [B, D, H0·W0·C]
    const b = a.reshape([B * D, H0, W0 * C]).slice([0, 0, 0], [B * D, H, W0 * C]); // [B·D, H, W0·C]
    return b.reshape([B * D * H, W0, C]).slice([0, 0, 0], [B * D * H, W, C]).reshape([B, D, H, W, C]) as tf.Tensor5D;
  });
}
