/**
 * Conv2d / Conv3d (torch semantics on channels-last tensors) against a direct-loop reference of
 * torch's NCHW / NCDHW convolution, for every implementation path (pointwise matmul, patch
 * matmul, depthwise, dense tf.conv2d; Conv3d patch matmul and tf.conv3d), including sizes that do
 * not divide (torch floors), plus the timm helpers (Python rounding of the SE width, the
 * Bottleneck's shortcut rule) and leak checks.
 */
import * as tf from '@tensorflow/tfjs';
import { Conv2d, Conv2dImpl, conv2dImpl } from '../../layers/conv';
import { Conv3d } from '../../layers/conv3d';
import { fillParam, noise } from '../../layers/init';
import { Bottleneck, RegStage, pyRound } from '../../layers/regstage';
import { Linear } from '../../layers/linear';
import { Module } from '../../layers/module';
import { NativeStorage } from '../../layers/native_storage';
import { NativeWeight, loadNativeAddon } from '../../layers/native_weight';
import { GeluMLP, STCConnector, aggregate, buildConnector } from '../../models/videollama2/connector';
import { readParam } from '../../weights/load';
import { expectClose } from '../helpers/golden';
import { expectNoLeak } from '../helpers/memory';

/** torch.nn.functional.conv2d on NCHW with OIHW weights (groups, stride, symmetric padding). */
function refConv2d(x: Float32Array, [B, C, H, W]: number[], w: Float32Array, [O, Ig, k]: number[], b: Float32Array | null, stride: number, pad: number, groups: number): { data: Float32Array; shape: number[] } {
  const Ho = Math.floor((H + 2 * pad - k) / stride) + 1, Wo = Math.floor((W + 2 * pad - k) / stride) + 1;
  const out = new Float32Array(B * O * Ho * Wo);
  const og = O / groups;
  for (let n = 0; n < B; n++) for (let o = 0; o < O; o++) for (let y = 0; y < Ho; y++) for (let xx = 0; xx < Wo; xx++) {
    let s = b ? b[o] : 0;
    const g = Math.floor(o / og);
    for (let ci = 0; ci < Ig; ci++) for (let ky = 0; ky < k; ky++) for (let kx = 0; kx < k; kx++) {
      const iy = y * stride - pad + ky, ix = xx * stride - pad + kx;
      if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
      const c = g * Ig + ci;
      s += x[((n * C + c) * H + iy) * W + ix] * w[((o * Ig + ci) * k + ky) * k + kx];
    }
    out[((n * O + o) * Ho + y) * Wo + xx] = s;
  }
  return { data: out, shape: [B, O, Ho, Wo] };
}

/** torch conv3d on NCDHW with OIDHW weights, bias, stride, symmetric padding. */
function refConv3d(x: Float32Array, [B, C, D, H, W]: number[], w: Float32Array, O: number, k: number[], b: Float32Array, s: number[], p: number[]): { data: Float32Array; shape: number[] } {
  const out3 = [0, 1, 2].map((a) => Math.floor(([D, H, W][a] + 2 * p[a] - k[a]) / s[a]) + 1);
  const [Do, Ho, Wo] = out3;
  const out = new Float32Array(B * O * Do * Ho * Wo);
  for (let n = 0; n < B; n++) for (let o = 0; o < O; o++) for (let d = 0; d < Do; d++) for (let y = 0; y < Ho; y++) for (let xx = 0; xx < Wo; xx++) {
    let acc = b[o];
    for (let c = 0; c < C; c++) for (let kd = 0; kd < k[0]; kd++) for (let ky = 0; ky < k[1]; ky++) for (let kx = 0; kx < k[2]; kx++) {
      const id = d * s[0] - p[0] + kd, iy = y * s[1] - p[1] + ky, ix = xx * s[2] - p[2] + kx;
      if (id < 0 || id >= D || iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
      acc += x[(((n * C + c) * D + id) * H + iy) * W + ix] * w[((((o * C + c) * k[0] + kd) * k[1] + ky) * k[2]) + kx];
    }
    out[(((n * O + o) * Do + d) * Ho + y) * Wo + xx] = acc;
  }
  return { data: out, shape: [B, O, Do, Ho, Wo] };
}

interface Conv2dCase { name: string; I: number; O: number; k: number; stride: number; pad: number; groups: number; bias: boolean; H: number; W: number; impl: Conv2dImpl }
const CASES: Conv2dCase[] = [
  { name: '1x1 (RegStage conv1/conv3)', I: 6, O: 10, k: 1, stride: 1, pad: 0, groups: 1, bias: false, H: 5, W: 4, impl: 'pointwise' },
  { name: '1x1 with bias (SE fc)', I: 8, O: 3, k: 1, stride: 1, pad: 0, groups: 1, bias: true, H: 1, W: 1, impl: 'pointwise' },
  { name: 'patch 4/4 (ViT patch embedding), 10x9 input: floor', I: 3, O: 7, k: 4, stride: 4, pad: 0, groups: 1, bias: true, H: 10, W: 9, impl: 'patch' },
  { name: '3x3 depthwise pad 1 (RegStage conv2)', I: 5, O: 5, k: 3, stride: 1, pad: 1, groups: 5, bias: false, H: 6, W: 7, impl: 'depthwise' },
  { name: '3x3 depthwise stride 2 pad 1', I: 4, O: 4, k: 3, stride: 2, pad: 1, groups: 4, bias: true, H: 7, W: 6, impl: 'depthwise' },
  { name: '3x3 dense stride 2 pad 1', I: 3, O: 4, k: 3, stride: 2, pad: 1, groups: 1, bias: true, H: 7, W: 8, impl: 'dense' },
];

describe('Conv2d (torch semantics, NHWC)', () => {
  for (const c of CASES) {
    it(`${c.name}: ${c.impl} path equals torch's conv2d`, () => {
      expect(conv2dImpl(c.I, c.O, c.k, c.stride, c.pad, c.groups)).toBe(c.impl);
      const impls: Conv2dImpl[] = c.groups === 1 && c.impl !== 'dense' ? [c.impl, 'dense'] : [c.impl];
      const B = 2;
      const x = noise(B * c.I * c.H * c.W, 1, 3);
      const wShape = [c.O, c.I / c.groups, c.k, c.k];
      const w = noise(wShape.reduce((a, b) => a * b, 1), 0.5, 5);
      const b = c.bias ? noise(c.O, 0.5, 7) : null;
      const ref = refConv2d(x, [B, c.I, c.H, c.W], w, wShape, b, c.stride, c.pad, c.groups);
      for (const impl of impls) {
        const conv = new Conv2d(c.I, c.O, c.k, { stride: c.stride, padding: c.pad, groups: c.groups, bias: c.bias, impl });
        expect(conv.impl).toBe(impl);
        fillParam(conv.weight, () => w.slice());
        if (b) fillParam(conv.bias!, () => b.slice());
        const xt = tf.tensor4d(x, [B, c.I, c.H, c.W]).transpose([0, 2, 3, 1]) as tf.Tensor4D; // NHWC
        const y = conv.forward(xt).transpose([0, 3, 1, 2]); // back to NCHW
        expect(conv.computeOutputShape([B, c.H, c.W, c.I])).toEqual([B, ref.shape[2], ref.shape[3], c.O]);
        expectClose(`${c.name} (${impl})`, y, ref, 1e-5);
        tf.dispose([xt, y]);
        conv.dispose();
      }
    });
  }

  it('rejects other group counts, mismatched channels and impls that do not fit', () => {
    expect(() => new Conv2d(4, 8, 3, { groups: 2 })).toThrow(/groups = 2 is not supported/);
    expect(() => new Conv2d(4, 4, 3, { padding: 1, impl: 'pointwise' })).toThrow(/impl 'pointwise' does not fit/);
    const conv = new Conv2d(4, 4, 1);
    fillParam(conv.weight, (n) => noise(n, 1, 1));
    const x = tf.zeros([1, 2, 2, 3]) as tf.Tensor4D;
    expect(() => conv.forward(x)).toThrow(/input has 3 channels .* expected 4/);
    x.dispose();
    conv.dispose();
  });
});

describe('Conv3d (torch semantics, NDHWC)', () => {
  const cases: { name: string; k: number[]; s: number[]; p: number[]; D: number; H: number }[] = [
    { name: 'k=s=2 pad 1 (stc_connector sampler)', k: [2, 2, 2], s: [2, 2, 2], p: [1, 1, 1], D: 6, H: 4 },
    { name: 'k=s=2 pad 0 (stc_connector_v35), odd sizes floor', k: [2, 2, 2], s: [2, 2, 2], p: [0, 0, 0], D: 5, H: 5 },
    { name: 'k=s=(1,2,2) pad 1 (spatial_conv)', k: [1, 2, 2], s: [1, 2, 2], p: [1, 1, 1], D: 3, H: 4 },
  ];
  for (const c of cases) {
    it(`${c.name}: patch matmul (in one pass and slab by slab) and tf.conv3d equal torch's conv3d`, () => {
      const B = 2, C = 3, O = 4, W = c.H + 1;
      const x = noise(B * C * c.D * c.H * W, 1, 11);
      const w = noise(O * C * c.k[0] * c.k[1] * c.k[2], 0.5, 13);
      const b = noise(O, 0.5, 17);
      const ref = refConv3d(x, [B, C, c.D, c.H, W], w, O, c.k, b, c.s, c.p);
      const slabBytes = Conv3d.slabBytes;
      for (const impl of ['patch', 'patch by slabs', 'conv'] as const) {
        // 'patch by slabs': one output slab (b, d') per pass, in (b, d', h', w') order
        Conv3d.slabBytes = impl === 'patch by slabs' ? 1 : slabBytes;
        const conv = new Conv3d(C, O, c.k as [number, number, number], { stride: c.s as [number, number, number], padding: c.p as [number, number, number], impl: impl === 'conv' ? 'conv' : 'patch' });
        fillParam(conv.weight, () => w.slice());
        fillParam(conv.bias!, () => b.slice());
        const xt = tf.tensor5d(x, [B, C, c.D, c.H, W]).transpose([0, 2, 3, 4, 1]) as tf.Tensor5D; // NDHWC
        const y = conv.forward(xt).transpose([0, 4, 1, 2, 3]); // NCDHW
        expectClose(`${c.name} (${impl})`, y, ref, 1e-5);
        tf.dispose([xt, y]);
        conv.dispose();
      }
      Conv3d.slabBytes = slabBytes;
    });
  }

  (loadNativeAddon().addon ? it : it.skip)('a natively held kernel [O, I·kd·kh·kw], slab by slab, equals torch\'s conv3d', () => {
    const B = 2, C = 3, O = 4, D = 6, H = 4, W = 5, k = [2, 2, 2];
    const x = noise(B * C * D * H * W, 1, 21);
    const w = noise(O * C * 8, 0.5, 23);
    const b = noise(O, 0.5, 29);
    const ref = refConv3d(x, [B, C, D, H, W], w, O, k, b, [2, 2, 2], [1, 1, 1]);
    const slabBytes = Conv3d.slabBytes;
    try {
      for (const bytes of [slabBytes, 1]) {
        Conv3d.slabBytes = bytes;
        const conv = new Conv3d(C, O, 2, { stride: 2, padding: 1 });
        conv.weight.setStorage(new NativeStorage(NativeWeight.fromBuffer('f32', O, C * 8, new Uint8Array(w.slice().buffer)))); // OIDHW rows
        fillParam(conv.bias!, () => b.slice());
        const xt = tf.tensor5d(x, [B, C, D, H, W]).transpose([0, 2, 3, 4, 1]) as tf.Tensor5D;
        const y = conv.forward(xt).transpose([0, 4, 1, 2, 3]);
        expectClose(`native f32 kernel, ${bytes === 1 ? 'one slab per pass' : 'one pass'}`, y, ref, 1e-5);
        tf.dispose([xt, y]);
        conv.dispose();
      }
    } finally {
      Conv3d.slabBytes = slabBytes;
    }
  });

  it('rejects a patch impl when kernel != stride, and inputs smaller than the kernel', () => {
    expect(() => new Conv3d(2, 2, 3, { stride: 2, impl: 'patch' })).toThrow(/needs kernel = stride/);
    const conv = new Conv3d(2, 2, 2, { stride: 2 });
    fillParam(conv.weight, (n) => noise(n, 1, 1));
    fillParam(conv.bias!, (n) => noise(n, 1, 2));
    const x = tf.zeros([1, 1, 4, 4, 2]) as tf.Tensor5D;
    expect(() => conv.forward(x)).toThrow(/smaller than the kernel/);
    x.dispose();
    conv.dispose();
  });

  it('forward leaves numTensors unchanged', async () => {
    const conv = new Conv3d(3, 4, 2, { stride: 2, padding: 1 });
    fillParam(conv.weight, (n) => noise(n, 1, 1));
    fillParam(conv.bias!, (n) => noise(n, 1, 2));
    const x = tf.ones([1, 4, 4, 4, 3]) as tf.Tensor5D;
    await expectNoLeak('Conv3d.forward', () => conv.forward(x).dispose());
    x.dispose();
    conv.dispose();
  });
});

describe('timm RegStage helpers', () => {
  it('Python round (half to even) for the SE width, squeeze width from the block input', () => {
    // Reference: Python 3 — [round(x) for x in (0.5, 1.5, 2.5, 2.4, 2.6, 12.0)] == [0, 2, 2, 2, 3, 12]
    expect([0.5, 1.5, 2.5, 2.4, 2.6, 12.0].map(pyRound)).toEqual([0, 2, 2, 2, 3, 12]);
    const b1 = new Bottleneck(48, 64, { act: 'silu', seRatio: 0.25 });
    expect(b1.se!.fc1.weight.shape).toEqual([12, 64, 1, 1]); // int(round(in_chs * se_ratio)) = 12, on bottleneck channels 64
    expect(b1.downsample).not.toBeNull(); // in != out → 1×1 conv + norm shortcut
    const b2 = new Bottleneck(64, 64, { act: 'silu' });
    expect(b2.downsample).toBeNull(); // identity
    expect(b2.conv2.conv.impl).toBe('depthwise'); // group_size 1
  });

  it('RegStage names its blocks b1..b{depth} like the checkpoint, and forward does not leak', async () => {
    const st = new RegStage(2, 6, 8, { act: 'silu' });
    const names = [...st.namedParams()].map(([n]) => n);
    expect(names).toContain('b1.downsample.conv.weight');
    expect(names).toContain('b2.se.fc2.bias');
    expect(names.some((n) => n.startsWith('b2.downsample'))).toBe(false);
    for (const [name, p] of st.namedParams()) fillParam(p, (n) => (name.endsWith('bn.weight') ? new Float32Array(n).fill(1) : noise(n, 0.3, name.length)));
    const x = tf.ones([2, 3, 3, 6]) as tf.Tensor4D;
    const seen: number[] = [];
    const y = st.forward(x, (i) => seen.push(i));
    expect(y.shape).toEqual([2, 3, 3, 8]);
    expect(seen).toEqual([1, 2]);
    await expectNoLeak('RegStage.forward', () => st.forward(x).dispose());
    tf.dispose([x, y]);
    st.dispose();
  });

  it('large batches run in chunks of whole images with the same result', async () => {
    const st = new RegStage(2, 6, 8, { act: 'silu' });
    for (const [name, p] of st.namedParams()) fillParam(p, (n) => (name.endsWith('bn.weight') ? new Float32Array(n).fill(1) : noise(n, 0.3, name.length)));
    const x = tf.tensor4d(noise(5 * 3 * 3 * 6, 1, 21), [5, 3, 3, 6]);
    const whole = st.forward(x);
    st.chunkBytes = 2 * 3 * 3 * 8 * 4; // 2 images per chunk: 2 + 2 + 1
    const chunked = st.forward(x);
    expectClose('chunked RegStage', chunked, { data: whole.dataSync(), shape: whole.shape }, 1e-6);
    await expectNoLeak('chunked RegStage.forward', () => st.forward(x).dispose());
    tf.dispose([x, whole, chunked]);
    st.dispose();
  });
});

describe('other projector types (build_vision_projector + temporal_aggregator)', () => {
  // No upstream goldens for these: checked against the definitions in projector.py / videollama2_arch.py.
  const fillAll = (m: Module) => {
    for (const [name, p] of m.namedParams()) fillParam(p, (n) => (name.endsWith('bn.weight') ? new Float32Array(n).fill(1) : noise(n, 0.3, name.length + n)));
  };
  /** torch Linear from the checkpoint-layout weights: h Wᵀ + b. */
  const torchLinear = (h: tf.Tensor2D, lin: Linear) => {
    const w = readParam(lin.weight), b = readParam(lin.bias!);
    return tf.add(tf.matMul(h, tf.tensor2d(w.data, w.shape as [number, number]), false, true), tf.tensor1d(b.data)) as tf.Tensor2D;
  };

  it('mlp2x_gelu / linear: Linear(-GELU-Linear) on the mean over frames, keys 0 and 2', () => {
    const mlp = buildConnector('mlp2x_gelu', 6, 4) as GeluMLP;
    expect([...mlp.namedParams()].map(([n]) => n)).toEqual(['0.weight', '0.bias', '2.weight', '2.bias']);
    fillAll(mlp);
    const x = tf.tensor4d(noise(1 * 3 * 5 * 6, 1, 4), [1, 3, 5, 6]); // [B, T, N, D]
    const y = aggregate(mlp, x);
    const layers = mlp as unknown as Record<string, Linear>;
    const ref = tf.tidy(() => {
      const h = torchLinear(tf.mean(x, 1).reshape([5, 6]), layers['0']); // frames_features.mean(1) → Linear
      const g = tf.mul(tf.mul(h, 0.5), tf.add(1, tf.erf(tf.mul(h, Math.SQRT1_2)))); // nn.GELU()
      return torchLinear(g as tf.Tensor2D, layers['2']).reshape([1, 5, 4]);
    });
    expect(y.shape).toEqual([1, 5, 4]);
    expectClose('mlp2x_gelu', y, { data: ref.dataSync(), shape: ref.shape }, 1e-5);
    const lin = buildConnector('linear', 6, 4);
    expect([...lin.namedParams()].map(([n]) => n)).toEqual(['weight', 'bias']);
    tf.dispose([x, y, ref]);
    mlp.dispose();
  });

  it('stp_connector / spatial_conv / spatial_pool: output lengths and keys', () => {
    const x = tf.tensor4d(noise(1 * 4 * 16 * 8, 1, 5), [1, 4, 16, 8]); // T=4 frames of 4×4, D = H = 8
    const cases: [string, number, boolean][] = [
      ['stp_connector', 2 * 2 * 2, false], // AvgPool3d(2): T 4→2, 4×4→2×2
      ['spatial_conv', 6 * 3 * 3, true], // Conv3d k=s=(1,2,2), padding 1 on every axis: T 4→6, 4→3
      ['spatial_pool', 4 * 2 * 2, false], // AvgPool3d((1,2,2))
    ];
    for (const [type, L, hasConv] of cases) {
      const c = buildConnector(type, 8, 8) as STCConnector;
      fillAll(c);
      const names = [...c.namedParams()].map(([n]) => n);
      expect(names.some((n) => n.startsWith('sampler.0.'))).toBe(hasConv);
      expect(names.some((n) => n.startsWith('s1.'))).toBe(type === 'stp_connector');
      const y = c.forward(x);
      expect(y.shape).toEqual([1, L, 8]);
      y.dispose();
      c.dispose();
    }
    expect(() => buildConnector('identity', 8, 8)).toThrow(/mm_projector_type 'identity' is not supported/);
    x.dispose();
  });
});
