/**
 * Linear and Embedding, the two layers whose weights can be too big for one wasm tensor
 * (Qwen2's lm_head / embed_tokens: 151666 × 3584 float32 = 2.2 GB). Both accept row-chunked
 * weights (see Param in module.ts).
 *
 * Linear layout: the checkpoint stores torch's [out, in]. On the OpenBLAS kernels [out, in] with
 * transposeB is as fast for prefill and 6x faster for decode (sgemv) than [in, out]; on stock wasm
 * [in, out] is 15x faster (XNNPACK; measured in scripts/bench.ts `linear-layout`). The layout is
 * chosen once at construction from the active backend (`preferredLinearLayout`) and never
 * transposed per call.
 */
import * as tf from '@tensorflow/tfjs';
import { backendInfo } from './backend';
import { Module, Param, ParamLayout, register } from './module';

/** Bytes above which a parameter is split into row chunks (wasm: < 2 GB per tensor is safe). */
export const MAX_CHUNK_BYTES = 512 * 2 ** 20;

/** [out, in] ('same') when the OpenBLAS kernels are active, [in, out] ('transposed') otherwise. */
export function preferredLinearLayout(): ParamLayout {
  const env = process.env.VLM_LINEAR_LAYOUT;
  if (env === 'out_in') return 'same';
  if (env === 'in_out') return 'transposed';
  return blasActive() ? 'same' : 'transposed';
}

function blasActive(): boolean {
  const info = backendInfo();
  return !!info && info.kernels.includes('_FusedMatMul(openblas)');
}

/**
 * Vocab-sized (chunked) weights keep [out, in] on every backend. On the stock wasm matmul, a
 * weight used as the right operand is packed and cached by XNNPACK for its lifetime (a second
 * copy: a 2.2 GB LM head does not fit the heap twice), so such weights are used as the *left*
 * operand instead: y = (W · xᵀ)ᵀ — no copy, and 43 ms for a 537 MB chunk × one token.
 */
function leftOperandPath(): boolean {
  return tf.getBackend() === 'wasm' && !blasActive();
}

export interface LinearOptions {
  bias?: boolean;
  /** Split large weights into row chunks (for vocab-sized heads). */
  chunked?: boolean;
  layout?: ParamLayout;
}

/**
 * A LoRA adapter on a Linear (peft `lora.Linear` semantics):
 *   y = base(x) + (dropout(x) · Aᵀ · Bᵀ) · scale,   A [r, in], B [out, r] (torch layouts).
 * `base(x)` is whatever the weight's storage computes, so a frozen (quantized) base works as is.
 * Set by models/training/lora.ts; `merged` means W already holds W + scale·B·A (the adapter is skipped).
 */
export interface LinearAdapter {
  A: tf.Variable;
  B: tf.Variable;
  scale: number;
  dropout: number;
  /** Dropout is applied only while training (peft: nn.Dropout in train mode). */
  training: boolean;
  merged: boolean;
  /** Seed of the next dropout mask (deterministic, resumable). */
  nextSeed: () => number;
}

/** y = x Wᵀ + b, torch.nn.Linear semantics. Checkpoint keys: `weight` [out, in], `bias` [out]. */
export class Linear extends Module {
  static className = 'Linear';
  readonly inFeatures: number;
  readonly outFeatures: number;
  weight: Param;
  bias: Param | null;
  /** Optional LoRA adapter (not a checkpoint parameter of the base model). */
  lora: LinearAdapter | null = null;

  constructor(inFeatures: number, outFeatures: number, opts: LinearOptions = {}) {
    super();
    this.inFeatures = inFeatures;
    this.outFeatures = outFeatures;
    this.weight = new Param([outFeatures, inFeatures], {
      layout: opts.layout ?? (opts.chunked ? 'same' : preferredLinearLayout()),
      maxChunkBytes: opts.chunked ? MAX_CHUNK_BYTES : undefined,
    });
    this.bias = opts.bias ? new Param([outFeatures]) : null;
  }

  /** x [..., in] → [..., out]. */
  forward(x: tf.Tensor): tf.Tensor {
    return tf.tidy(() => {
      const lead = x.shape.slice(0, -1);
      if (x.shape[x.shape.length - 1] !== this.inFeatures) {
        throw new Error(`${this.name}: input has ${x.shape[x.shape.length - 1]} features, expected ${this.inFeatures}`);
      }
      const x2 = x.reshape([-1, this.inFeatures]); // [N, in]
      const { chunks, layout } = this.weight.storage();
      const transposeB = layout === 'same'; // [out, in] in memory
      const bias = this.bias ? this.bias.value : undefined;
      let y: tf.Tensor;
      if (transposeB && leftOperandPath()) {
        const xT = tf.transpose(x2); // [in, N]
        const parts = chunks.map((c) => tf.matMul(c, xT)); // [rows, N] each
        y = tf.transpose(parts.length === 1 ? parts[0] : tf.concat(parts, 0)); // [N, out]
        if (bias) y = tf.add(y, bias);
      } else if (chunks.length === 1) {
        y = tf.fused.matMul({ a: x2 as tf.Tensor2D, b: chunks[0] as tf.Tensor2D, transposeB, bias });
      } else {
        const parts = chunks.map((c) => tf.matMul(x2, c, false, transposeB));
        y = tf.concat(parts, 1);
        if (bias) y = tf.add(y, bias);
      }
      const ad = this.lora;
      if (ad && !ad.merged) {
        const xd = ad.training && ad.dropout > 0 ? tf.dropout(x2, ad.dropout, undefined, ad.nextSeed()) : x2;
        const d = tf.matMul(tf.matMul(xd, ad.A, false, true), ad.B, false, true); // [N, out]
        y = tf.add(y, ad.scale === 1 ? d : tf.mul(d, ad.scale));
      }
      return y.reshape([...lead, this.outFeatures]);
    });
  }

  override call(inputs: tf.Tensor | tf.Tensor[]): tf.Tensor {
    return this.forward(Array.isArray(inputs) ? inputs[0] : inputs);
  }

  override computeOutputShape(inputShape: tf.Shape): tf.Shape {
    return [...inputShape.slice(0, -1), this.outFeatures];
  }
}
register(Linear);

/** torch.nn.Embedding. Checkpoint key: `weight` [num, dim], row-chunked when large. */
export class Embedding extends Module {
  static className = 'Embedding';
  readonly numEmbeddings: number;
  readonly dim: number;
  weight: Param;

  constructor(numEmbeddings: number, dim: number) {
    super();
    this.numEmbeddings = numEmbeddings;
    this.dim = dim;
    this.weight = new Param([numEmbeddings, dim], { maxChunkBytes: MAX_CHUNK_BYTES });
  }

  /** ids int32 [...] → [..., dim]. Ids outside [0, num) are an error naming the first bad one. */
  forward(ids: tf.Tensor): tf.Tensor {
    const { chunks, starts } = this.weight.storage();
    return tf.tidy(() => {
      const flat = ids.reshape([-1]).cast('int32');
      let out: tf.Tensor;
      if (chunks.length === 1) {
        out = tf.gather(chunks[0], flat);
      } else {
        // Each chunk answers for its own rows; the others contribute zeros.
        const parts = chunks.map((c, i) => {
          const n = c.shape[0];
          const local = tf.sub(flat, starts[i]);
          const inside = tf.logicalAnd(tf.greaterEqual(local, 0), tf.less(local, n));
          const rows = tf.gather(c, tf.clipByValue(local, 0, n - 1));
          return tf.mul(rows, inside.cast('float32').expandDims(1));
        });
        out = tf.addN(parts);
      }
      return out.reshape([...ids.shape, this.dim]);
    });
  }

  override call(inputs: tf.Tensor | tf.Tensor[]): tf.Tensor {
    return this.forward(Array.isArray(inputs) ? inputs[0] : inputs);
  }

  override computeOutputShape(inputShape: tf.Shape): tf.Shape {
    return [...inputShape, this.dim];
  }
}
register(Embedding);

/** Throws naming the first id outside [0, vocab). Host-side check before an embedding lookup. */
export function assertIdsInRange(ids: ArrayLike<number>, vocab: number, what = 'input_ids'): void {
  for (let i = 0; i < ids.length; i++) {
    const v = ids[i];
    if (!Number.isInteger(v) || v < 0 || v >= vocab) {
      throw new Error(`${what}[${i}] = ${v} is outside the vocabulary [0, ${vocab})`);
    }
  }
}
