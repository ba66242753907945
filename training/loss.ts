/**
 * The training losses of both families, as upstream computes them:
 *
 * - MiniCPM-V (`finetune/trainer.py` `CPMTrainer.compute_loss`): `nn.CrossEntropyLoss()` over
 *   `logits.view(-1, V)` and `labels.view(-1)` with NO shift — `finetune/dataset.py` already
 *   stored `labels[i] = input_ids[i + 1]` (the target of position i).
 * - VideoLLaMA 2 (HF v4.40 `*ForCausalLM.forward` with labels): `logits[..., :-1, :]` against
 *   `labels[..., 1:]`, the same CrossEntropyLoss.
 *
 * Both are the mean over the positions whose label is not IGNORE_INDEX (−100) of
 * `logsumexp(logits[i]) − logits[i, label]` (torch: log_softmax then nll_loss, float32).
 * Only the supervised rows are gathered before the log-sum-exp, so the cost is O(n·V) for n
 * supervised positions, and the gradient w.r.t. the logits is dense only on those rows.
 *
 * Shape letters: B batch, S positions, V vocab, n supervised positions.
 */
import * as tf from '@tensorflow/tfjs';

/** `IGNORE_INDEX` of both upstreams (torch CrossEntropyLoss's default ignore_index). */
export const IGNORE_INDEX = -100;

export interface CrossEntropyOptions {
  /** HF causal-LM shift: logits[b, i] is scored against labels[b, i + 1]. Default false. */
  shift?: boolean;
}

/** (row, target) pairs of the supervised positions: row = b·S + i of the flattened logits. */
export function supervisedPositions(labels: readonly (ArrayLike<number>)[], S: number, V: number, opts: CrossEntropyOptions = {}): { rows: Int32Array; targets: Int32Array } {
  const rows: number[] = [], targets: number[] = [];
  const off = opts.shift ? 1 : 0;
  labels.forEach((lab, b) => {
    if (lab.length !== S) throw new Error(`labels[${b}] has ${lab.length} entries, the logits have ${S} positions`);
    for (let i = 0; i + off < S; i++) {
      const t = lab[i + off];
      if (t === IGNORE_INDEX) continue;
      if (!Number.isInteger(t) || t < 0 || t >= V) {
        throw new Error(`labels[${b}][${i + off}] = ${t} is neither ${IGNORE_INDEX} (ignored) nor a token id in [0, ${V})`);
      }
      rows.push(b * S + i);
      targets.push(t);
    }
  });
  return { rows: Int32Array.from(rows), targets: Int32Array.from(targets) };
}

/**
 * torch `nn.CrossEntropyLoss()` (mean over non-ignored targets) of logits [B, S, V] against
 * per-sample labels [B][S]. Throws when no position is supervised (torch would return NaN).
 */
export function crossEntropy(logits: tf.Tensor3D, labels: readonly (ArrayLike<number>)[], opts: CrossEntropyOptions = {}): tf.Scalar {
  const [B, S, V] = logits.shape;
  if (labels.length !== B) throw new Error(`labels has ${labels.length} sample(s), the logits have ${B}`);
  const { rows, targets } = supervisedPositions(labels, S, V, opts);
  if (!rows.length) {
    throw new Error(`no supervised position: every label is ${IGNORE_INDEX}${opts.shift ? ' after the causal shift' : ''} (nothing to compute the loss on)`);
  }
  return tf.tidy(() => {
    const flat = logits.reshape([B * S, V]); // [B·S, V]
    const sel = rows.length === B * S ? flat : tf.gather(flat, tf.tensor1d(rows, 'int32')); // [n, V]
    const lse = tf.logSumExp(sel, 1); // [n]
    // tfjs-wasm 4.22 OneHot with dtype 'float32' writes int32 bit patterns (1 → 1.4e-45): build it
    // as int32 and cast
    const onehot = tf.oneHot(tf.tensor1d(targets, 'int32'), V).cast('float32'); // [n, V]
    const picked = tf.sum(tf.mul(sel, onehot), 1); // logits[i, label_i], [n]
    return tf.mean(tf.sub(lse, picked)) as tf.Scalar; // mean of −log_softmax[label]
  });
}
