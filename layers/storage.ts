/**
 * Where a parameter's values live, and the two entries that read them: `matmul` (y = x·Wᵀ + b, for
 * Linear weights stored [out, in] in the checkpoint) and `gather` (embedding rows). `Linear` and
 * `Embedding` call these and never look inside, so a new storage (native f16/bf16/q8_0/q4_0 weights
 * outside the wasm heap, see layers/native_storage.ts) changes no model file.
 *
 * `TensorStorage` is float32 tfjs variables, row-chunked for vocab-sized matrices (wasm cannot
 * safely hold one 2 GB tensor), in the memory layout chosen at load (`ParamLayout`).
 */
import * as tf from '@tensorflow/tfjs';
import type { BackendContext, ParamLayout } from './layout';

/** Element formats a parameter can be stored in (GGML's block layouts for the quantized ones). */
export type StorageDType = 'f32' | 'f16' | 'bf16' | 'q8_0' | 'q4_0';

/** Bytes per element of each storage type (q8_0: 34 bytes per 32 weights; q4_0: 18). */
export const BYTES_PER_ELEMENT: Record<StorageDType, number> = { f32: 4, f16: 2, bf16: 2, q8_0: 34 / 32, q4_0: 18 / 32 };

export interface ParamStorage {
  readonly dtype: StorageDType;
  /** Bytes the values take. */
  readonly bytes: number;
  /** Of those, bytes held by the tfjs backend (the wasm heap on wasm); native storage holds none. */
  readonly backendBytes: number;
  /** x [N, in] → x·Wᵀ (+ bias) [N, out] for a 2-D [out, in] parameter; differentiable w.r.t. x. */
  matmul(x: tf.Tensor2D, bias?: tf.Tensor): tf.Tensor2D;
  /** x [..., in] → [..., out] in one op, where the storage takes any rank (native storage: no reshapes). */
  matmulAnyRank?(x: tf.Tensor, bias?: tf.Tensor): tf.Tensor;
  /** Rows of a 2-D [num, dim] parameter: ids int32 [n] (in range) → [n, dim]. */
  gather(ids: tf.Tensor1D): tf.Tensor2D;
  /** The values in checkpoint layout as float32 (export, merge, trace). */
  toFloat32(): Float32Array;
  dispose(): void;
}

/** Options of the float32 tfjs storage's matmul that depend on the backend (set at load). */
export interface TensorMatmulOptions {
  /**
   * Stock wasm without native kernels: a [out, in] weight is used as the *left* operand,
   * y = (W·xᵀ)ᵀ, because XNNPACK keeps a packed copy of every right-operand weight for its
   * lifetime (a 2.2 GB LM head does not fit the heap twice); 43 ms for a 537 MB chunk × 1 token.
   */
  leftOperand: boolean;
}

/** The matmul options for a backend (stock wasm: vocab-sized weights as the left operand). */
export function tensorMatmulOptions(ctx: BackendContext): TensorMatmulOptions {
  return { leftOperand: ctx.backend === 'wasm' && !ctx.nativeMatmul };
}

/** float32 tfjs variables, one per row chunk, each in `layout`. */
export class TensorStorage implements ParamStorage {
  readonly dtype = 'f32' as const;
  constructor(
    readonly chunks: tf.Variable[],
    /** Checkpoint-axis-0 start row of each chunk. */
    readonly starts: number[],
    readonly layout: ParamLayout,
    private readonly toHost: (chunk: tf.Variable) => Float32Array,
    readonly opts: TensorMatmulOptions = { leftOperand: false },
  ) {}

  get bytes(): number {
    return this.chunks.reduce((a, c) => a + c.size * 4, 0);
  }

  get backendBytes(): number {
    return this.bytes;
  }

  matmul(x2: tf.Tensor2D, bias?: tf.Tensor): tf.Tensor2D {
    const chunks = this.chunks;
    const transposeB = this.layout === 'same'; // [out, in] in memory
    if (transposeB && this.opts.leftOperand) {
      const xT = tf.transpose(x2); // [in, N]
      const parts = chunks.map((c) => tf.matMul(c, xT)); // [rows, N] each
      const y = tf.transpose(parts.length === 1 ? parts[0] : tf.concat(parts, 0)) as tf.Tensor2D; // [N, out]
      return bias ? tf.add(y, bias) : y;
    }
    if (chunks.length === 1) return tf.fused.matMul({ a: x2, b: chunks[0] as tf.Tensor2D, transposeB, bias }) as tf.Tensor2D;
    const y = tf.concat(chunks.map((c) => tf.matMul(x2, c, false, transposeB)), 1) as tf.Tensor2D; // [N, out]
    return bias ? tf.add(y, bias) : y;
  }

  gather(ids: tf.Tensor1D): tf.Tensor2D {
    if (this.chunks.length === 1) return tf.gather(this.chunks[0], ids) as tf.Tensor2D;
    // Each chunk answers for its own rows; the others contribute zeros. Ids stay int32.
    const parts = this.chunks.map((c, i) => {
      const n = c.shape[0];
      const local = tf.sub(ids, tf.scalar(this.starts[i], 'int32'));
      const inside = tf.logicalAnd(tf.greaterEqual(local, tf.scalar(0, 'int32')), tf.less(local, tf.scalar(n, 'int32')));
      // clamp with int32 min/max: wasm's ClipByValue treats an int32 tensor as float32 (ids pass unclipped)
      const rows = tf.gather(c, tf.minimum(tf.maximum(local, tf.scalar(0, 'int32')), tf.scalar(n - 1, 'int32')));
      return tf.mul(rows, inside.cast('float32').expandDims(1));
    });
    return tf.addN(parts) as tf.Tensor2D;
  }

  toFloat32(): Float32Array {
    const parts = this.chunks.map(this.toHost);
    if (parts.length === 1) return parts[0];
    const out = new Float32Array(parts.reduce((a, p) => a + p.length, 0));
    let off = 0;
    for (const p of parts) {
      out.set(p, off);
      off += p.length;
    }
    return out;
  }

  dispose(): void {
    for (const c of this.chunks) c.dispose();
  }
}
