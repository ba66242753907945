/**
 * The fine-tuning loop: HF `Trainer.training_step` semantics (train mode = inference mode here:
 * no dropout in either model, no batch statistics), torch AdamW, optional gradient accumulation
 * and gradient clipping, and export of an HF checkpoint directory.
 *
 *   step:  for each micro-batch: prepare (outside the tape) → loss / GA → tf.variableGrads over
 *          the trainable variables → accumulate; [clip]; AdamW; dispose everything but the
 *          parameters and the moments.
 *
 * Defaults are HF TrainingArguments' (learning_rate 5e-5, weight_decay 0, adam betas (0.9,
 * 0.999), eps 1e-8, seed 42, 3 epochs) except: constant learning rate (no warmup/decay schedule),
 * one parameter group (decay on every tensor, as the goldens' `torch.optim.AdamW(model.parameters())`),
 * no gradient clipping unless `maxGradNorm` is given.
 * A trainable parameter that gets no gradient from a batch gets a zero gradient (torch: the
 * upstream forwards always touch every trainable part, e.g. VideoLLaMA 2 splices
 * `features[0:0]` into text-only samples), so AdamW still decays it.
 */
import * as tf from '@tensorflow/tfjs';
import { AdamW, AdamWOptions } from './adamw';
import { exportCheckpoint } from './export';
import { TrainFamily } from './family';
import { TrainableParam, countScalars, selectTrainable, toCheckpointTensor } from './params';
import { checkSeed, mixHigh } from '../generation/sampling';

export interface TrainerOptions extends AdamWOptions {
  /** Trainable parts by module or checkpoint prefix (default: the family's upstream default). */
  tune?: readonly string[];
  /** Micro-batches per optimizer step (default 1). */
  gradAccumSteps?: number;
  /** Clip the global gradient norm to this (torch clip_grad_norm_); default: no clipping. */
  maxGradNorm?: number | null;
}

export interface TrainLoopOptions {
  /** Passes over the data (default 3, HF's num_train_epochs). */
  epochs?: number;
  /** Stop after this many optimizer steps (HF max_steps; overrides epochs). */
  maxSteps?: number;
  /** Samples per micro-batch (default 1). */
  batchSize?: number;
  /** Shuffle seed (default 42); each epoch is a seeded permutation. */
  seed?: number;
  /** Shuffle the samples each epoch (default true). */
  shuffle?: boolean;
  /** Called after every optimizer step. */
  onStep?: (info: StepInfo) => void;
}

export interface StepInfo {
  step: number;
  epoch: number;
  /** Mean loss over the step's micro-batches (before the update). */
  loss: number;
  /** Global gradient norm before clipping. */
  gradNorm: number;
  ms: number;
  samples: number;
  supervisedTokens: number;
}

export interface TrainResult {
  steps: number;
  epochs: number;
  losses: number[];
  ms: number;
}

/** mulberry32: a small seeded PRNG for the sample order. */
export function seededPermutation(n: number, seed: number): number[] {
  checkSeed(seed);
  let a = (seed >>> 0) ^ (seed >= 4294967296 ? mixHigh(Math.floor(seed / 4294967296))[0] : 0);
  const rand = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const p = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [p[i], p[j]] = [p[j], p[i]];
  }
  return p;
}

export class Trainer<E = unknown, B = unknown> {
  readonly params: TrainableParam[];
  readonly optimizer: AdamW;
  readonly gradAccumSteps: number;
  readonly maxGradNorm: number | null;
  private readonly vars: tf.Variable[];
  /** Which param (index into `params`) each variable belongs to. */
  private readonly owner: number[];
  /** Optimizer steps taken. */
  stepCount = 0;
  /** The prefixes that selected `params`. */
  readonly tune: readonly string[];

  constructor(readonly family: TrainFamily<E, B>, opts: TrainerOptions = {}) {
    const tune = opts.tune && opts.tune.length ? [...opts.tune] : [...family.defaultTune];
    family.checkTune(tune);
    this.tune = tune;
    this.params = selectTrainable(family.model, family.keymap, tune);
    this.vars = [];
    this.owner = [];
    this.params.forEach((p, i) => p.variables.forEach((v) => { this.vars.push(v); this.owner.push(i); }));
    this.gradAccumSteps = opts.gradAccumSteps ?? 1;
    if (!Number.isInteger(this.gradAccumSteps) || this.gradAccumSteps < 1) throw new Error(`gradient accumulation steps must be an integer >= 1, got ${this.gradAccumSteps}`);
    this.maxGradNorm = opts.maxGradNorm ?? null;
    if (this.maxGradNorm !== null && !(this.maxGradNorm > 0)) throw new Error(`maxGradNorm must be > 0, got ${this.maxGradNorm}`);
    this.optimizer = new AdamW(this.vars, { lr: opts.lr ?? 5e-5, betas: opts.betas, eps: opts.eps, weightDecay: opts.weightDecay ?? 0 });
  }

  /** Scalars being trained. */
  get numTrainable(): number {
    return countScalars(this.params);
  }

  /**
   * Loss of one batch and the gradient per variable (memory layout, null when none reached it),
   * with the loss scaled by `scale` before differentiation (HF divides by the accumulation steps).
   */
  private lossAndVarGrads(batch: B, scale = 1): { loss: number; grads: (tf.Tensor | null)[] } {
    const prep = this.family.prepare(batch);
    try {
      const { value, grads } = tf.variableGrads(() => {
        const l = this.family.loss(batch, prep);
        return scale === 1 ? l : tf.tidy(() => tf.mul(l, scale) as tf.Scalar);
      }, this.vars);
      const loss = value.dataSync()[0] / scale;
      value.dispose();
      if (!Number.isFinite(loss)) {
        tf.dispose(grads);
        throw new Error(`the loss is ${loss}; stopping (lower the learning rate?)`);
      }
      return { loss, grads: this.vars.map((v) => grads[v.name] ?? null) };
    } finally {
      prep.dispose();
    }
  }

  /**
   * Loss of a batch and d loss / d param for every trainable parameter, in the checkpoint layout
   * and under its checkpoint key (what upstream's `param.grad` holds after one backward). The
   * caller disposes the gradients. Nothing is updated.
   */
  lossAndGrads(batch: B): { loss: number; grads: Map<string, tf.Tensor> } {
    const { loss, grads } = this.lossAndVarGrads(batch);
    const out = new Map<string, tf.Tensor>();
    const full = grads.map((g, k) => g ?? tf.zerosLike(this.vars[k])); // no gradient: zeros
    try {
      this.params.forEach((p, i) => out.set(p.key, toCheckpointTensor(p.param, full.filter((_, k) => this.owner[k] === i))));
    } finally {
      tf.dispose(full);
    }
    return { loss, grads: out };
  }

  /**
   * One optimizer step over `microBatches` (gradient accumulation: the loss of each is divided by
   * their number, the gradients summed). Returns the mean loss and the gradient norm.
   */
  step(microBatches: readonly B[]): { loss: number; gradNorm: number } {
    if (!microBatches.length) throw new Error('step: no batch');
    const scale = 1 / microBatches.length;
    let acc: (tf.Tensor | null)[] = this.vars.map(() => null);
    let lossSum = 0;
    try {
      for (const b of microBatches) {
        const { loss, grads } = this.lossAndVarGrads(b, scale);
        lossSum += loss;
        acc = acc.map((a, i) => {
          const g = grads[i];
          if (!a) return g;
          if (!g) return a;
          const s = tf.add(a, g);
          a.dispose();
          g.dispose();
          return s;
        });
      }
      const full = acc.map((g, i) => g ?? tf.zerosLike(this.vars[i])); // no gradient: zeros (see header)
      acc = full;
      const gradNorm = tf.tidy(() => Math.sqrt(tf.addN(full.map((g) => tf.sum(tf.square(g)))).dataSync()[0]));
      if (this.maxGradNorm !== null) {
        const coef = this.maxGradNorm / (gradNorm + 1e-6); // torch clip_grad_norm_
        if (coef < 1) acc = full.map((g) => { const c = tf.mul(g, coef); g.dispose(); return c; });
      }
      this.optimizer.applyGradients(acc);
      this.stepCount++;
      return { loss: lossSum / microBatches.length, gradNorm };
    } finally {
      tf.dispose(acc.filter((g): g is tf.Tensor => !!g));
    }
  }

  /** Trains over the family's dataset; see TrainLoopOptions for the defaults. */
  async train(opts: TrainLoopOptions = {}): Promise<TrainResult> {
    const data = this.family.data;
    if (!data) throw new Error('train: no training data was given to the trainer');
    const batchSize = opts.batchSize ?? 1;
    if (!Number.isInteger(batchSize) || batchSize < 1) throw new Error(`batch size must be an integer >= 1, got ${batchSize}`);
    const epochsOpt = opts.epochs ?? 3;
    if (!(epochsOpt > 0)) throw new Error(`epochs must be > 0, got ${epochsOpt}`);
    if (opts.maxSteps !== undefined && !(Number.isInteger(opts.maxSteps) && opts.maxSteps >= 1)) throw new Error(`max steps must be an integer >= 1, got ${opts.maxSteps}`);
    const microPerEpoch = Math.ceil(data.length / batchSize);
    const stepsPerEpoch = Math.ceil(microPerEpoch / this.gradAccumSteps);
    const totalSteps = opts.maxSteps ?? Math.ceil(epochsOpt * stepsPerEpoch);
    const seed = opts.seed ?? 42;
    const losses: number[] = [];
    const t0 = performance.now();
    let epoch = 0;
    while (losses.length < totalSteps) {
      const order = opts.shuffle === false ? Array.from({ length: data.length }, (_, i) => i) : seededPermutation(data.length, seed > Number.MAX_SAFE_INTEGER - epoch ? seed - (Number.MAX_SAFE_INTEGER - epoch) - 1 : seed + epoch);
      const micro: number[][] = [];
      for (let s = 0; s < order.length; s += batchSize) micro.push(order.slice(s, s + batchSize));
      for (let g = 0; g < micro.length && losses.length < totalSteps; g += this.gradAccumSteps) {
        const ts = performance.now();
        const group = micro.slice(g, g + this.gradAccumSteps);
        const batches: B[] = [];
        for (const idx of group) {
          const examples: E[] = [];
          for (const i of idx) examples.push(await data.example(i));
          batches.push(this.family.collate(examples));
        }
        const { loss, gradNorm } = this.step(batches);
        losses.push(loss);
        opts.onStep?.({
          step: this.stepCount, epoch, loss, gradNorm, ms: performance.now() - ts,
          samples: group.reduce((a, x) => a + x.length, 0),
          supervisedTokens: batches.reduce((a, b) => a + this.family.supervisedTokens(b), 0),
        });
      }
      epoch++;
    }
    return { steps: losses.length, epochs: epoch, losses, ms: performance.now() - t0 };
  }

  /** Writes the model (all parameters, trained or not) as a checkpoint directory; see export.ts. */
  save(outDir: string, extraFiles: Record<string, string> = {}, stagingDir?: string): string {
    const o = this.family.exportOptions();
    return exportCheckpoint(this.family.model, this.family.keymap, this.family.dir, outDir, {
      ...o, extraFiles: { ...o.extraFiles, ...extraFiles }, stagingDir,
      metadata: { 'tfjs-vlm': 'finetune', tune: this.tune.join(','), steps: String(this.stepCount) },
    });
  }

  /** Frees the optimizer state and the model. */
  dispose(): void {
    this.optimizer.dispose();
    this.family.dispose();
  }
}
