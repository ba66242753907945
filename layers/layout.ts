/**
 * Memory layouts of parameters relative to their checkpoint tensors, and the host-side
 * conversions between the two (load, export, random init). The layout of a parameter is chosen once,
 * at load, from the backend context (`LayoutChoice`), and never transposed per call.
 */
import * as tf from '@tensorflow/tfjs';

/** How a parameter is laid out in memory relative to its checkpoint tensor. */
export type ParamLayout =
  /** as in the checkpoint */
  | 'same'
  /** 2-D, transposed: checkpoint [out, in] → memory [in, out] (stock wasm matmul prefers it) */
  | 'transposed'
  /** conv weight OIHW → HWIO (tfjs conv2d) */
  | 'oihw_to_hwio'
  /** depthwise conv weight [C, 1, kh, kw] → [kh, kw, C, 1] (tfjs depthwiseConv2d) */
  | 'depthwise_to_hwc1'
  /** conv3d weight OIDHW → DHWIO (tfjs conv3d) */
  | 'oidhw_to_dhwio';

/** Memory shape for a checkpoint shape under a layout. */
export function layoutShape(shape: number[], layout: ParamLayout): number[] {
  switch (layout) {
    case 'same': return shape.slice();
    case 'transposed': return [shape[1], shape[0]];
    case 'oihw_to_hwio': return [shape[2], shape[3], shape[1], shape[0]];
    case 'depthwise_to_hwc1': return [shape[2], shape[3], shape[0], shape[1]];
    case 'oidhw_to_dhwio': return [shape[2], shape[3], shape[4], shape[1], shape[0]];
  }
}

/** Permutation from checkpoint axes to memory axes (for tf.transpose), or null for 'same'. */
export function layoutPerm(layout: ParamLayout): number[] | null {
  switch (layout) {
    case 'same': return null;
    case 'transposed': return [1, 0];
    case 'oihw_to_hwio': return [2, 3, 1, 0];
    case 'depthwise_to_hwc1': return [2, 3, 0, 1];
    case 'oidhw_to_dhwio': return [2, 3, 4, 1, 0];
  }
}

/** What the layout choice may depend on: the backend the weights are loaded for, stated explicitly. */
export interface BackendContext {
  /** The tfjs backend name ('wasm', 'cpu', 'tensorflow'). */
  backend: string;
  /** The native (OpenBLAS) matmul kernels replace the backend's: nothing keeps packed weight copies. */
  nativeMatmul: boolean;
  /** Linear weights prefer [out, in] (native matmul kernels: sgemm/sgemv with transposeB) over [in, out] (stock wasm/XNNPACK). */
  preferOutIn: boolean;
}

/** A fixed layout, or one picked from the backend context at load. */
export type LayoutChoice = ParamLayout | ((ctx: BackendContext) => ParamLayout);

/** A layout picked by the matmul kernels of the backend: `outIn` when [out, in] is preferred, else `inOut`. */
export function byMatmul(outIn: ParamLayout, inOut: ParamLayout): LayoutChoice {
  return (ctx) => (ctx.preferOutIn ? outIn : inOut);
}

/** The layout of a torch Linear weight ([out, in] in the checkpoint). */
export const LINEAR_LAYOUT: LayoutChoice = byMatmul('same', 'transposed');

/** Permutes a host array from `shape` by `perm` (like np.transpose). */
export function permuteHost(data: Float32Array, shape: number[], perm: number[]): Float32Array {
  const rank = shape.length;
  const outShape = perm.map((p) => shape[p]);
  const out = new Float32Array(data.length);
  if (rank === 2) {
    // Blocked 2-D transpose (cache friendly for multi-hundred-MB matrices).
    const [R, C] = shape, BS = 64;
    for (let r0 = 0; r0 < R; r0 += BS) {
      for (let c0 = 0; c0 < C; c0 += BS) {
        const r1 = Math.min(r0 + BS, R), c1 = Math.min(c0 + BS, C);
        for (let r = r0; r < r1; r++) for (let c = c0; c < c1; c++) out[c * R + r] = data[r * C + c];
      }
    }
    return out;
  }
  const inStrides = new Array(rank).fill(1);
  for (let d = rank - 2; d >= 0; d--) inStrides[d] = inStrides[d + 1] * shape[d + 1];
  const strides = perm.map((p) => inStrides[p]); // input stride of each output axis
  const idx = new Array(rank).fill(0);
  for (let o = 0; o < out.length; o++) {
    let src = 0;
    for (let d = 0; d < rank; d++) src += idx[d] * strides[d];
    out[o] = data[src];
    for (let d = rank - 1; d >= 0; d--) {
      if (++idx[d] < outShape[d]) break;
      idx[d] = 0;
    }
  }
  return out;
}

/** Host float32 tensor in checkpoint layout → tf tensor in the parameter's memory layout. */
export function toMemoryLayout(data: Float32Array, ckptShape: number[], layout: ParamLayout): tf.Tensor {
  const perm = layoutPerm(layout);
  const memShape = layoutShape(ckptShape, layout);
  return tf.tensor(perm ? permuteHost(data, ckptShape, perm) : data, memShape, 'float32');
}

/** Inverse of `toMemoryLayout` (for export): memory layout → checkpoint layout, on the host. */
export function toCheckpointLayout(data: Float32Array, memShape: number[], layout: ParamLayout): Float32Array {
  const perm = layoutPerm(layout);
  if (!perm) return data;
  const inv = new Array(perm.length);
  perm.forEach((p, i) => { inv[p] = i; });
  return permuteHost(data, memShape, inv);
}

/** Row ranges [start, end) that split `shape` along axis 0 into chunks of at most maxBytes (float32). */
export function chunkRows(shape: number[], maxBytes?: number): [number, number][] {
  const rows = shape[0] ?? 1;
  const rowBytes = shape.slice(1).reduce((a, b) => a * b, 1) * 4;
  if (!maxBytes || rows * rowBytes <= maxBytes || shape.length < 2) return [[0, rows]];
  const per = Math.max(1, Math.floor(maxBytes / rowBytes));
  const out: [number, number][] = [];
  for (let s = 0; s < rows; s += per) out.push([s, Math.min(rows, s + per)]);
  return out;
}

