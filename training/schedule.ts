/**
 * Learning-rate schedules as HF transformers' `get_scheduler` builds them (optimization.py), as a
 * factor of the base learning rate per optimizer step. HF wraps them in torch's LambdaLR, so the
 * k-th optimizer step (1-based) uses factor(k − 1): with warmup the first step has lr 0.
 *
 *   warmup (s < W):  s / max(1, W)
 *   constant:        1                      (HF `constant_with_warmup`; plain `constant` = W 0)
 *   linear:          max(0, (T − s) / max(1, T − W))
 *   cosine:          max(0, ½ · (1 + cos(π · 2 · 0.5 · p))),  p = (s − W) / max(1, T − W)
 *
 * W from `warmupSteps`, else ceil(T · warmupRatio) (HF `TrainingArguments.get_warmup_steps`).
 */
export type LrScheduleKind = 'constant' | 'linear' | 'cosine';
export type LrSchedule = (step: number) => number;

export const LR_SCHEDULES: readonly LrScheduleKind[] = ['constant', 'linear', 'cosine'];

/** HF `get_warmup_steps`. */
export function warmupStepsOf(totalSteps: number, opts: { warmupSteps?: number; warmupRatio?: number }): number {
  if (opts.warmupSteps !== undefined && opts.warmupRatio !== undefined && opts.warmupSteps > 0 && opts.warmupRatio > 0) {
    throw new Error('give either warmup steps or a warmup ratio, not both');
  }
  if (opts.warmupSteps !== undefined) {
    if (!(Number.isInteger(opts.warmupSteps) && opts.warmupSteps >= 0)) throw new Error(`warmup steps must be an integer >= 0, got ${opts.warmupSteps}`);
    if (opts.warmupSteps > 0) return opts.warmupSteps;
  }
  const r = opts.warmupRatio ?? 0;
  if (!(r >= 0 && r <= 1)) throw new Error(`warmup ratio must be in [0, 1], got ${r}`);
  return Math.ceil(totalSteps * r);
}

export function makeSchedule(kind: LrScheduleKind, totalSteps: number, opts: { warmupSteps?: number; warmupRatio?: number } = {}): LrSchedule {
  if (!LR_SCHEDULES.includes(kind)) throw new Error(`unknown learning-rate schedule '${kind}' (choose ${LR_SCHEDULES.join(', ')})`);
  const W = warmupStepsOf(totalSteps, opts);
  const T = totalSteps;
  return (s: number) => {
    if (s < W) return s / Math.max(1, W);
    if (kind === 'constant') return 1;
    if (kind === 'linear') return Math.max(0, (T - s) / Math.max(1, T - W));
    const p = (s - W) / Math.max(1, T - W);
    return Math.max(0, 0.5 * (1 + Math.cos(Math.PI * 2 * 0.5 * p)));
  };
}
