/**
 * crossEntropy (training/loss.ts): torch `nn.CrossEntropyLoss()` semantics against a
 * float64 host reference — mean over non-ignored targets, no shift (MiniCPM-V's pre-shifted
 * labels) or the HF causal shift (VideoLLaMA 2) — its analytic gradient (softmax − onehot) / n,
 * and the errors for labels that cannot be scored.
 */
import * as tf from '@tensorflow/tfjs';
import { IGNORE_INDEX, crossEntropy, supervisedPositions } from '../../training/loss';

/** Reference: mean over (row, target) of logsumexp(row) − row[target], float64. */
function refLoss(logits: number[][][], labels: number[][], shift: boolean): number {
  let s = 0, n = 0;
  logits.forEach((rows, b) => rows.forEach((row, i) => {
    const t = labels[b][i + (shift ? 1 : 0)];
    if (t === undefined || t === IGNORE_INDEX) return;
    const m = Math.max(...row);
    s += m + Math.log(row.reduce((a, x) => a + Math.exp(x - m), 0)) - row[t];
    n++;
  }));
  return s / n;
}

const LOGITS = [
  [[1.5, -0.5, 2.0, 0.1], [0.3, 0.3, -1.0, 4.0], [-2.0, 1.0, 0.5, 0.0]],
  [[0.0, 0.0, 0.0, 0.0], [10.0, -10.0, 3.0, 2.5], [1.0, 2.0, 3.0, 4.0]],
];
const LABELS = [[2, IGNORE_INDEX, 1], [IGNORE_INDEX, 0, 3]];

describe('crossEntropy', () => {
  it('equals torch CrossEntropyLoss (mean over supervised positions), without and with the causal shift', () => {
    const x = tf.tensor3d(LOGITS);
    for (const shift of [false, true]) {
      const l = crossEntropy(x, LABELS, { shift });
      expect(l.dataSync()[0]).toBeCloseTo(refLoss(LOGITS, LABELS, shift), 5);
      l.dispose();
    }
    x.dispose();
  });

  it('gradient = (softmax − onehot) / n on supervised rows, 0 elsewhere', () => {
    const x = tf.variable(tf.tensor3d(LOGITS));
    const { grads } = tf.variableGrads(() => crossEntropy(x, LABELS), [x]);
    const g = grads[x.name].arraySync() as number[][][];
    const n = 4;
    LOGITS.forEach((rows, b) => rows.forEach((row, i) => {
      const t = LABELS[b][i];
      const z = row.reduce((a, v) => a + Math.exp(v), 0);
      row.forEach((v, j) => {
        const want = t === IGNORE_INDEX ? 0 : (Math.exp(v) / z - (j === t ? 1 : 0)) / n;
        expect(g[b][i][j]).toBeCloseTo(want, 6);
      });
    }));
    tf.dispose([x, grads[x.name]]);
  });

  it('positions: rows b·S + i with the (shifted) target', () => {
    const p = supervisedPositions(LABELS, 3, 4, { shift: true });
    expect(Array.from(p.rows)).toEqual([1, 3, 4]);
    expect(Array.from(p.targets)).toEqual([1, 0, 3]);
  });

  it('rejects all-masked labels, out-of-vocabulary targets and mismatched shapes, naming them', () => {
    const x = tf.zeros([1, 3, 4]) as tf.Tensor3D;
    expect(() => crossEntropy(x, [[IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]])).toThrow(/no supervised position: every label is -100/);
    expect(() => crossEntropy(x, [[IGNORE_INDEX, IGNORE_INDEX, 2]], { shift: false })).not.toThrow();
    expect(() => crossEntropy(x, [[5, IGNORE_INDEX, IGNORE_INDEX]], { shift: true })).toThrow(/no supervised position.*after the causal shift/);
    expect(() => crossEntropy(x, [[0, 4, 1]])).toThrow('labels[0][1] = 4 is neither -100 (ignored) nor a token id in [0, 4)');
    expect(() => crossEntropy(x, [[0, 1]])).toThrow('labels[0] has 2 entries, the logits have 3 positions');
    expect(() => crossEntropy(x, [[0, 1, 2], [0, 1, 2]])).toThrow('labels has 2 sample(s), the logits have 1');
    x.dispose();
  });
});
