/**
 * MLPs: the SwiGLU MLP of Llama/Qwen2/Mistral, and the two-layer fc1 → act → fc2 MLP of
 * CLIP/SigLIP vision towers. Activations follow torch exactly (quick_gelu = x·σ(1.702x),
 * gelu = erf form, gelu_pytorch_tanh = tanh form).
 */
import * as tf from '@tensorflow/tfjs';
import { FUSED_ACTS, actFused, heapOpsReady, siluMulFused } from './heap_ops';
import { Linear } from './linear';
import { Module, register } from './module';

export type ActName = 'silu' | 'gelu' | 'gelu_pytorch_tanh' | 'gelu_new' | 'quick_gelu' | 'relu';

/** Applies a named activation (HF ACT2FN names). */
export function activation(name: ActName | string, x: tf.Tensor): tf.Tensor {
  // inference on wasm: one native pass (the composite tanh form costs ~100 ms per SigLIP layer)
  if (name in FUSED_ACTS && x.dtype === 'float32' && heapOpsReady('act')) return actFused(name, x);
  return tf.tidy(() => {
    switch (name) {
      case 'silu':
      case 'swish':
        return tf.mul(x, tf.sigmoid(x));
      case 'relu':
        return tf.relu(x);
      case 'gelu': // 0.5·x·(1 + erf(x/√2))
        return tf.mul(tf.mul(x, 0.5), tf.add(1, tf.erf(tf.mul(x, Math.SQRT1_2))));
      case 'gelu_pytorch_tanh':
      case 'gelu_new': {
        // 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))
        const inner = tf.mul(Math.sqrt(2 / Math.PI), tf.add(x, tf.mul(0.044715, tf.mul(tf.mul(x, x), x))));
        return tf.mul(tf.mul(x, 0.5), tf.add(1, tf.tanh(inner)));
      }
      case 'quick_gelu':
        return tf.mul(x, tf.sigmoid(tf.mul(x, 1.702)));
      default:
        throw new Error(`unsupported activation '${name}'`);
    }
  });
}

/** down_proj(act(gate_proj(x)) · up_proj(x)). Checkpoint keys: `gate_proj`, `up_proj`, `down_proj`. */
export class GatedMLP extends Module {
  static className = 'GatedMLP';
  readonly act: ActName;
  gate_proj: Linear;
  up_proj: Linear;
  down_proj: Linear;

  constructor(hidden: number, intermediate: number, act: ActName = 'silu') {
    super();
    this.act = act;
    this.gate_proj = new Linear(hidden, intermediate);
    this.up_proj = new Linear(hidden, intermediate);
    this.down_proj = new Linear(intermediate, hidden);
  }

  forward(x: tf.Tensor): tf.Tensor {
    return tf.tidy(() => {
      const g = this.gate_proj.forward(x), u = this.up_proj.forward(x);
      const h = this.act === 'silu' && g.dtype === 'float32' && heapOpsReady('siluMul') ? siluMulFused(g, u) : tf.mul(activation(this.act, g), u);
      return this.down_proj.forward(h);
    });
  }

  override call(inputs: tf.Tensor | tf.Tensor[]): tf.Tensor {
    return this.forward(Array.isArray(inputs) ? inputs[0] : inputs);
  }
}
register(GatedMLP);

/** fc2(act(fc1(x))) with biases. Checkpoint keys: `fc1`, `fc2`. */
export class FcMLP extends Module {
  static className = 'FcMLP';
  readonly act: ActName;
  fc1: Linear;
  fc2: Linear;

  constructor(hidden: number, intermediate: number, act: ActName) {
    super();
    this.act = act;
    this.fc1 = new Linear(hidden, intermediate, { bias: true });
    this.fc2 = new Linear(intermediate, hidden, { bias: true });
  }

  forward(x: tf.Tensor): tf.Tensor {
    return tf.tidy(() => this.fc2.forward(activation(this.act, this.fc1.forward(x))));
  }

  override call(inputs: tf.Tensor | tf.Tensor[]): tf.Tensor {
    return this.forward(Array.isArray(inputs) ? inputs[0] : inputs);
  }
}
register(FcMLP);
