/**
 * Parameters held by the native addon (native/tfjs-blas), outside the tfjs backend and so outside
 * the 4 GB wasm heap: f32/f16/bf16 memory-mapped from the checkpoint exactly as stored, or
 * q8_0/q4_0/f16/bf16 quantized at load. `Linear` and `Embedding` reach them through
 * `Param.matmul` / `Param.gather` like any storage; the matmul is differentiable w.r.t. x, so a
 * frozen native base back-propagates into trainable layers.
 */
import * as tf from '@tensorflow/tfjs';
import { NativeWeight } from './native_weight';
import { ParamStorage, StorageDType } from './storage';

export class NativeStorage implements ParamStorage {
  readonly backendBytes = 0;
  constructor(readonly weight: NativeWeight) {}

  get dtype(): StorageDType {
    return this.weight.type;
  }

  get bytes(): number {
    return this.weight.bytes;
  }

  matmul(x: tf.Tensor2D, bias?: tf.Tensor): tf.Tensor2D {
    return this.weight.matmul(x, bias) as tf.Tensor2D;
  }

  matmulAnyRank(x: tf.Tensor, bias?: tf.Tensor): tf.Tensor {
    return this.weight.matmul(x, bias);
  }

  gather(ids: tf.Tensor1D): tf.Tensor2D {
    return this.weight.gather(ids) as tf.Tensor2D;
  }

  toFloat32(): Float32Array {
    return this.weight.toFloat32();
  }

  dispose(): void {
    this.weight.dispose();
  }
}
