/**
 * Linear and Embedding, the two layers whose weights can be too big for one wasm tensor
 * (Qwen2's lm_head / embed_tokens: 151666 × 3584 float32 = 2.2 GB). Both accept row-chunked
 * weights (see Param in module.ts).
 *
 * Both read their weight only through `Param.matmul` / `Param.gather`, so the storage (float32 tfjs
 * chunks, or native f16/bf16/q8_0/q4_0 outside the wasm heap) is the loader's choice.
 *
 * Linear layout (float32 tfjs storage): the checkpoint stores torch's [out, in]. On the OpenBLAS
 * kernels [out, in] with transposeB is as fast for prefill and 6x faster for decode (sgemv) than
 * [in, out]; on stock wasm [in, out] is 15x faster (XNNPACK). The layout is chosen once, at load,
 * from the backend context (`LINEAR_LAYOUT`), and never transposed per call.
 */
import * as tf from '@tensorflow/tfjs';
import { LINEAR_LAYOUT, LayoutChoice } from './layout';
import { Module, Param, register } from './module';

/** Bytes above which a float32 parameter is split into row chunks (wasm: < 2 GB per tensor is safe). */
export const MAX_CHUNK_BYTES = 512 * 2 ** 20;

export interface LinearOptions {
  bias?: boolean;
  /** Split large weights into row chunks (for vocab-sized heads). */
  chunked?: boolean;
  layout?: LayoutChoice;
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
      // vocab-sized (chunked) weights keep [out, in] on every backend (see TensorStorage.matmul)
      layout: opts.layout ?? (opts.chunked ? 'same' : LINEAR_LAYOUT),
      maxChunkBytes: opts.chunked ? MAX_CHUNK_BYTES : undefined,
      storable: 'matmul',
    });
    this.bias = opts.bias ? new Param([outFeatures]) : null;
  }

  /** x [..., in] → [..., out]. */
  forward(x: tf.Tensor): tf.Tensor {
    if (x.shape[x.shape.length - 1] !== this.inFeatures) {
      throw new Error(`${this.name}: input has ${x.shape[x.shape.length - 1]} features, expected ${this.inFeatures}`);
    }
    const bias = this.bias ? this.bias.value : undefined;
    // no adapter in the way: one op where the storage takes any rank (a decode step runs ~200 of these)
    if (!this.lora || this.lora.merged) return this.weight.matmulLastAxis(x, bias);
    return tf.tidy(() => {
      const lead = x.shape.slice(0, -1);
      const x2 = x.reshape([-1, this.inFeatures]) as tf.Tensor2D; // [N, in]
      let y = this.weight.matmul(x2, bias); // [N, out], whatever the storage
      const ad = this.lora;
      if (ad && !ad.merged) {
        // peft LoRA: + (dropout(x) · Aᵀ · Bᵀ) · scale, on top of the (frozen) base
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

  /** `opts.native: false` keeps the table a float32 tfjs tensor (position embeddings, read whole). */
  constructor(numEmbeddings: number, dim: number, opts: { native?: boolean } = {}) {
    super();
    this.numEmbeddings = numEmbeddings;
    this.dim = dim;
    this.weight = new Param([numEmbeddings, dim], { maxChunkBytes: MAX_CHUNK_BYTES, storable: opts.native === false ? undefined : 'gather' });
  }

  /** ids int32 [...] → [..., dim]. Ids outside [0, num) are an error naming the first bad one. */
  forward(ids: tf.Tensor): tf.Tensor {
    return tf.tidy(() => {
      const out = this.weight.gather(ids.reshape([-1]).cast('int32') as tf.Tensor1D); // [n, dim]
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
