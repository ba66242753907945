/**
 * AdamW exactly as torch 1.13 `torch.optim.AdamW` (single-tensor path, amsgrad=False,
 * maximize=False, one param group), the optimizer of HF Trainer's `optim="adamw_torch"` and of the
 * upstream goldens:
 *
 *   t += 1
 *   p  *= 1 − lr·weight_decay                         decoupled weight decay, FIRST
 *   m   = β1·m + (1 − β1)·g
 *   v   = β2·v + (1 − β2)·g²
 *   p  −= lr / (1 − β1^t) · m / (√v / √(1 − β2^t) + ε)
 *
 * The scalars (1 − lr·wd, the bias corrections, the step size) are computed in float64 like
 * Python and applied to float32 tensors, as torch does. Moments start at zero and are created
 * lazily at the first step. Updates are elementwise, so parameters may be in any memory layout.
 * Weight decay applies to every parameter given (one group: biases and norms included).
 */
import * as tf from '@tensorflow/tfjs';

export interface AdamWOptions {
  /** Learning rate (torch default 1e-3). */
  lr?: number;
  /** [β1, β2] (default [0.9, 0.999]). */
  betas?: [number, number];
  /** Added to the denominator (default 1e-8). */
  eps?: number;
  /** Decoupled weight decay (torch AdamW default 1e-2). */
  weightDecay?: number;
}

export class AdamW {
  readonly params: readonly tf.Variable[];
  lr: number;
  readonly betas: [number, number];
  readonly eps: number;
  readonly weightDecay: number;
  /** Steps taken (torch `state['step']`). */
  step = 0;
  private m: tf.Variable[] | null = null;
  private v: tf.Variable[] | null = null;

  constructor(params: readonly tf.Variable[], opts: AdamWOptions = {}) {
    const lr = opts.lr ?? 1e-3, [b1, b2] = opts.betas ?? [0.9, 0.999], eps = opts.eps ?? 1e-8, wd = opts.weightDecay ?? 1e-2;
    // torch.optim.AdamW.__init__ checks, same messages
    if (!(lr >= 0)) throw new Error(`Invalid learning rate: ${lr}`);
    if (!(eps >= 0)) throw new Error(`Invalid epsilon value: ${eps}`);
    if (!(b1 >= 0 && b1 < 1)) throw new Error(`Invalid beta parameter at index 0: ${b1}`);
    if (!(b2 >= 0 && b2 < 1)) throw new Error(`Invalid beta parameter at index 1: ${b2}`);
    if (!(wd >= 0)) throw new Error(`Invalid weight_decay value: ${wd}`);
    if (!params.length) throw new Error('AdamW got an empty parameter list');
    if (new Set(params).size !== params.length) throw new Error('AdamW: some parameters appear more than once');
    this.params = params;
    this.lr = lr;
    this.betas = [b1, b2];
    this.eps = eps;
    this.weightDecay = wd;
  }

  /**
   * One update with `grads[i]` for `params[i]` (same shapes; a null gradient skips the parameter
   * for this step, as torch skips `p.grad is None`, but the step counter is shared). The
   * gradients are not disposed.
   */
  applyGradients(grads: readonly (tf.Tensor | null)[]): void {
    if (grads.length !== this.params.length) throw new Error(`AdamW: ${grads.length} gradients for ${this.params.length} parameters`);
    grads.forEach((g, i) => {
      const p = this.params[i];
      if (g && (g.shape.length !== p.shape.length || g.shape.some((d, k) => d !== p.shape[k]))) {
        throw new Error(`AdamW: gradient ${i} has shape [${g.shape}], its parameter ${p.name} is [${p.shape}]`);
      }
    });
    if (!this.m || !this.v) {
      const zeros = (p: tf.Variable) => tf.tidy(() => tf.variable(tf.zerosLike(p), false)); // the initial value is freed
      this.m = this.params.map(zeros);
      this.v = this.params.map(zeros);
    }
    this.step += 1;
    const [b1, b2] = this.betas;
    const t = this.step;
    const decay = 1 - this.lr * this.weightDecay;
    const stepSize = this.lr / (1 - b1 ** t); // lr / bias_correction1
    const bc2Sqrt = Math.sqrt(1 - b2 ** t); // sqrt(bias_correction2)
    const m = this.m, v = this.v;
    grads.forEach((g, i) => {
      if (!g) return;
      const p = this.params[i];
      tf.tidy(() => {
        const pd = tf.mul(p, decay); // param.mul_(1 - lr * weight_decay)
        const mi = tf.add(tf.mul(m[i], b1), tf.mul(g, 1 - b1)); // exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
        const vi = tf.add(tf.mul(v[i], b2), tf.mul(tf.mul(g, g), 1 - b2)); // exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        const denom = tf.add(tf.div(tf.sqrt(vi), bc2Sqrt), this.eps); // (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
        p.assign(tf.sub(pd, tf.mul(tf.div(mi, denom), stepSize))); // param.addcdiv_(exp_avg, denom, value=-step_size)
        m[i].assign(mi);
        v[i].assign(vi);
      });
    });
  }

  /** The first and second moments (null before the first step); owned by the optimizer. */
  state(): { step: number; m: readonly tf.Variable[] | null; v: readonly tf.Variable[] | null } {
    return { step: this.step, m: this.m, v: this.v };
  }

  /** Restores the step count and the moments (resuming); takes ownership of the tensors. */
  loadState(step: number, m: tf.Tensor[] | null, v: tf.Tensor[] | null): void {
    if ((m && m.length !== this.params.length) || (v && v.length !== this.params.length)) throw new Error('AdamW.loadState: wrong number of moments');
    this.dispose();
    this.step = step;
    const own = (ts: tf.Tensor[]) => ts.map((t) => { const x = tf.variable(t, false); t.dispose(); return x; });
    this.m = m ? own(m) : null;
    this.v = v ? own(v) : null;
  }

  /** Frees the moments. */
  dispose(): void {
    tf.dispose(this.m ?? []);
    tf.dispose(this.v ?? []);
    this.m = this.v = null;
  }
}
