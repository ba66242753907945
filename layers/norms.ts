/**
 * RMSNorm (Llama/Qwen2/Mistral) and LayerNorm (CLIP, SigLIP, the resampler, STC's LayerNorm2d).
 * eps always comes from the config or the upstream constructor (CLIP 1e-5, SigLIP 1e-6,
 * resampler 1e-6, STC 1e-5): there is no default that silently differs from upstream.
 */
import * as tf from '@tensorflow/tfjs';
import { heapOpsReady, layerNormFused, rmsNormFused } from './heap_ops';
import { Module, Param, register } from './module';

/**
 * HF LlamaRMSNorm: x * rsqrt(mean(x², -1) + eps), then weight * (that). float32 throughout.
 * Checkpoint key: `weight` [dim].
 */
export class RMSNorm extends Module {
  static className = 'RMSNorm';
  readonly eps: number;
  weight: Param;

  constructor(dim: number, eps: number) {
    super();
    this.eps = eps;
    this.weight = new Param([dim]);
  }

  forward(x: tf.Tensor): tf.Tensor {
    const w = this.weight.value;
    if (x.dtype === 'float32' && w.dtype === 'float32' && heapOpsReady('rmsnorm')) return rmsNormFused(x, w, this.eps); // inference on wasm: one call
    return tf.tidy(() => {
      const variance = tf.mean(tf.square(x), -1, true);
      const normed = tf.mul(x, tf.rsqrt(tf.add(variance, this.eps)));
      return tf.mul(this.weight.value, normed);
    });
  }

  override call(inputs: tf.Tensor | tf.Tensor[]): tf.Tensor {
    return this.forward(Array.isArray(inputs) ? inputs[0] : inputs);
  }

  override getConfig(): tf.serialization.ConfigDict {
    return { ...super.getConfig(), eps: this.eps };
  }
}
register(RMSNorm);

/**
 * torch.nn.LayerNorm over the last axis: (x − mean) / sqrt(var + eps) · weight + bias, biased
 * variance. Checkpoint keys: `weight`, `bias` [dim].
 */
export class LayerNorm extends Module {
  static className = 'LayerNorm';
  readonly eps: number;
  weight: Param;
  bias: Param;

  constructor(dim: number, eps: number) {
    super();
    this.eps = eps;
    this.weight = new Param([dim]);
    this.bias = new Param([dim]);
  }

  forward(x: tf.Tensor): tf.Tensor {
    if (x.dtype === 'float32' && heapOpsReady('layerNorm')) return layerNormFused(x, this.weight.value, this.bias.value, this.eps);
    return tf.tidy(() => {
      const { mean, variance } = tf.moments(x, -1, true);
      const normed = tf.mul(tf.sub(x, mean), tf.rsqrt(tf.add(variance, this.eps)));
      return tf.add(tf.mul(normed, this.weight.value), this.bias.value);
    });
  }

  override call(inputs: tf.Tensor | tf.Tensor[]): tf.Tensor {
    return this.forward(Array.isArray(inputs) ? inputs[0] : inputs);
  }

  override getConfig(): tf.serialization.ConfigDict {
    return { ...super.getConfig(), eps: this.eps };
  }
}
register(LayerNorm);
