/**
 * The fine-tuning loop: HF `Trainer.training_step` semantics (train mode = inference mode here:
 * no dropout in either model, no batch statistics; only LoRA's adapter dropout is active while
 * training), torch AdamW, optional gradient accumulation and gradient clipping, and export of an
 * HF checkpoint directory. Trainable: the parts `tune` selects, or with `lora` the adapters (plus
 * the parts `tune` names, peft's modules_to_save); everything else is frozen and has no AdamW state.
 *
 *   step:  for each micro-batch: prepare (outside the tape) → loss / GA → tf.variableGrads over
 *          the trainable variables → accumulate; [clip]; AdamW; dispose everything but the
 *          parameters and the moments.
 *
 * Defaults are HF TrainingArguments' (learning_rate 5e-5, weight_decay 0, adam betas (0.9,
 * 0.999), eps 1e-8, seed 42, 3 epochs) except: constant learning rate unless `lrSchedule` is
 * given (schedule.ts), one parameter group (decay on every tensor, as the goldens'
 * `torch.optim.AdamW(model.parameters())`) unless `connectorLr` / `hfNoDecay` split it, no
 * gradient clipping unless `maxGradNorm` is given.
 * A trainable parameter that gets no gradient from a batch gets a zero gradient (torch: the
 * upstream forwards always touch every trainable part, e.g. VideoLLaMA 2 splices
 * `features[0:0]` into text-only samples), so AdamW still decays it.
 */
import * as tf from '@tensorflow/tfjs';
import { AdamW, AdamWOptions } from './adamw';
import { exportCheckpoint } from './export';
import { TrainFamily } from './family';
import { Module } from '../layers/module';
import { TrainableParam, countScalars, selectTrainable, toCheckpointTensor, underPrefix } from './params';
import { checkSeed, mixHigh } from '../generation/sampling';
import { LoraModel, LoraOptions, mixSeed } from './lora';
import { LrSchedule, LrScheduleKind, makeSchedule } from './schedule';
import { withGradientCheckpointing } from '../layers/checkpointing';
import { sampleName, RawSample } from './data';

export interface TrainerOptions extends AdamWOptions {
  /** Trainable parts by module or checkpoint prefix (default: the family's upstream default). */
  tune?: readonly string[];
  /** Micro-batches per optimizer step (default 1). */
  gradAccumSteps?: number;
  /** Clip the global gradient norm to this (torch clip_grad_norm_); default: no clipping. */
  maxGradNorm?: number | null;
  /**
   * LoRA adapters (peft semantics, see lora.ts): options, or adapters already attached. With LoRA
   * only the adapters train, plus the parts `tune` names (peft `modules_to_save`).
   */
  lora?: LoraOptions | LoraModel;
  /** Learning rate of the connector (VideoLLaMA 2 mm_projector, MiniCPM-V resampler): upstream `mm_projector_lr`. */
  connectorLr?: number;
  /** HF Trainer's rule (transformers 4.40): no weight decay on biases and nn.LayerNorm weights (default false: one decay for all, as the goldens). */
  hfNoDecay?: boolean;
  /** Recompute each decoder / vision layer's activations in the backward pass. */
  gradientCheckpointing?: boolean;
}

export interface TrainLoopOptions<E = any> {
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
  /** Learning-rate schedule (HF names; default constant) and warmup (steps, or a ratio of the total). */
  lrSchedule?: LrScheduleKind;
  warmupSteps?: number;
  warmupRatio?: number;
  /** Every `saveSteps` optimizer steps `onSave(step)` is called (the caller writes OUT/checkpoint-N). */
  saveSteps?: number;
  onSave?: (step: number, state: LoopState) => void;
  /** Evaluation set and its period (steps); `onEval` receives the mean loss. */
  evalData?: { length: number; example(i: number): Promise<E> } | null;
  evalSteps?: number;
  onEval?: (step: number, loss: number) => void;
}

/** Where the loop is: enough to resume bit-identically (with the trainable values and moments). */
export interface LoopState {
  step: number;
  epoch: number;
  seed: number;
  shuffle: boolean;
  batchSize: number;
  totalSteps: number;
  /** This epoch's sample order. */
  order: number[];
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
  /** Learning rate of the first group at this step. */
  lr: number;
  totalSteps: number;
}

export interface TrainResult {
  steps: number;
  epochs: number;
  losses: number[];
  ms: number;
}

/** The shuffle seed of an epoch: seed + epoch, wrapping inside [0, 2^53−1]. */
export function epochSeed(seed: number, epoch: number): number {
  return seed > Number.MAX_SAFE_INTEGER - epoch ? seed - (Number.MAX_SAFE_INTEGER - epoch) - 1 : seed + epoch;
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

/** One parameter group: its own AdamW (own learning rate / weight decay) over some variables. */
export interface ParamGroup {
  name: string;
  optimizer: AdamW;
  baseLr: number;
  /** Indices into the trainer's variables. */
  vars: number[];
}

export class Trainer<E = unknown, B = unknown> {
  readonly params: TrainableParam[];
  /** The first parameter group's optimizer (all of them: `groups`). */
  readonly optimizer: AdamW;
  readonly groups: ParamGroup[];
  /** The LoRA adapters, when training with LoRA. */
  readonly lora: LoraModel | null;
  readonly gradientCheckpointing: boolean;
  /** Learning-rate factor per step (set by `train`; constant 1 otherwise). */
  schedule: LrSchedule = () => 1;
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
    const lo = opts.lora;
    this.lora = lo ? (lo instanceof LoraModel ? lo : new LoraModel(family.model, family.keymap, lo.exclude ?? null, lo)) : null;
    const tune = this.lora ? [...(opts.tune ?? [])] : opts.tune && opts.tune.length ? [...opts.tune] : [...family.defaultTune];
    if (tune.length) family.checkTune(tune);
    this.tune = tune;
    const full = tune.length ? selectTrainable(family.model, family.keymap, tune) : [];
    if (this.lora) {
      const adapted = new Set(this.lora.entries.map((e) => `${e.path}.weight`));
      const clash = full.filter((p) => adapted.has(p.name));
      if (clash.length) {
        throw new Error(`--tune ${tune.join(',')} would train ${clash.length} weight(s) that carry LoRA adapters (e.g. ${clash[0].key}); ` +
          'train either the adapters or the full weights of a module (MiniCPM-V finetune.py: "cannot simultaneously adjust LLM parameters and apply LoRA")');
      }
    }
    this.params = [...(this.lora?.trainables() ?? []), ...full];
    this.gradientCheckpointing = !!opts.gradientCheckpointing;
    this.vars = [];
    this.owner = [];
    this.params.forEach((p, i) => p.variables.forEach((v) => { this.vars.push(v); this.owner.push(i); }));
    this.gradAccumSteps = opts.gradAccumSteps ?? 1;
    if (!Number.isInteger(this.gradAccumSteps) || this.gradAccumSteps < 1) throw new Error(`gradient accumulation steps must be an integer >= 1, got ${this.gradAccumSteps}`);
    this.maxGradNorm = opts.maxGradNorm ?? null;
    if (this.maxGradNorm !== null && !(this.maxGradNorm > 0)) throw new Error(`maxGradNorm must be > 0, got ${this.maxGradNorm}`);
    this.groups = makeGroups(this, opts);
    this.optimizer = this.groups[0].optimizer;
  }

  /** Whether anything under a module path is trained (full parameters or LoRA adapters). */
  readonly trains = (modulePath: string): boolean => this.params.some((p) => underPrefix(p.name, modulePath)); // adapters are named <path>.lora_A.weight

  /** The trainable variables (memory layout), in `params` order. */
  get variables(): readonly tf.Variable[] {
    return this.vars;
  }

  /** Scalars being trained. */
  get numTrainable(): number {
    return countScalars(this.params);
  }

  /**
   * Loss of one batch and the gradient per variable (memory layout, null when none reached it),
   * with the loss scaled by `scale` before differentiation (HF divides by the accumulation steps).
   */
  private lossAndVarGrads(batch: B, scale = 1, micro = 0): { loss: number; grads: (tf.Tensor | null)[] } {
    const prep = this.family.prepare(batch, this.trains);
    if (this.lora) {
      this.lora.rng.step = mixSeed(this.stepCount, micro);
      this.lora.rng.counter = 0;
      this.lora.setTraining(true);
    }
    try {
      const run = () => tf.variableGrads(() => {
        const l = this.family.loss(batch, prep);
        return scale === 1 ? l : tf.tidy(() => tf.mul(l, scale) as tf.Scalar);
      }, this.vars);
      const { value, grads } = this.gradientCheckpointing ? withGradientCheckpointing(new Set(this.vars), run) : run();
      const loss = value.dataSync()[0] / scale;
      value.dispose();
      if (!Number.isFinite(loss)) {
        tf.dispose(grads);
        throw new Error(`the loss is ${loss}; stopping (lower the learning rate?)`);
      }
      return { loss, grads: this.vars.map((v) => grads[v.name] ?? null) };
    } finally {
      this.lora?.setTraining(false);
      prep.dispose();
    }
  }

  /** Mean loss over a dataset (no gradients, dropout off): HF `evaluate`'s eval_loss with batch size 1. */
  async evaluate(data: { length: number; example(i: number): Promise<E> }): Promise<number> {
    let sum = 0;
    for (let i = 0; i < data.length; i++) {
      const batch = this.family.collate([await data.example(i)]);
      const prep = this.family.prepare(batch, this.trains);
      try {
        sum += tf.tidy(() => this.family.loss(batch, prep).dataSync()[0]);
      } finally {
        prep.dispose();
      }
    }
    return sum / data.length;
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
      for (const [mi, b] of microBatches.entries()) {
        const { loss, grads } = this.lossAndVarGrads(b, scale, mi);
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
      const factor = this.schedule(this.stepCount); // HF LambdaLR: optimizer step k uses lr_lambda(k − 1)
      for (const g of this.groups) {
        g.optimizer.lr = g.baseLr * factor;
        g.optimizer.applyGradients(g.vars.map((i) => acc[i]));
      }
      this.stepCount++;
      return { loss: lossSum / microBatches.length, gradNorm };
    } finally {
      tf.dispose(acc.filter((g): g is tf.Tensor => !!g));
    }
  }

  /** Trains over the family's dataset; see TrainLoopOptions for the defaults. */
  async train(opts: TrainLoopOptions<E> = {}): Promise<TrainResult> {
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
    const shuffle = opts.shuffle !== false;
    this.schedule = makeSchedule(opts.lrSchedule ?? 'constant', totalSteps, { warmupSteps: opts.warmupSteps, warmupRatio: opts.warmupRatio });
    if (opts.saveSteps !== undefined && !(Number.isInteger(opts.saveSteps) && opts.saveSteps >= 1)) throw new Error(`save steps must be an integer >= 1, got ${opts.saveSteps}`);
    if (opts.evalSteps !== undefined && !(Number.isInteger(opts.evalSteps) && opts.evalSteps >= 1)) throw new Error(`eval steps must be an integer >= 1, got ${opts.evalSteps}`);
    if (this.stepCount >= totalSteps) throw new Error(`nothing to do: the trainer is at step ${this.stepCount} and max steps is ${totalSteps}`);
    const samples = (data as { samples?: readonly RawSample[] }).samples;
    const nameOf = (i: number) => (samples?.[i] ? sampleName(samples[i], i) : `sample ${i}`);
    const losses: number[] = [];
    const t0 = performance.now();
    let epoch = 0;
    let done = 0; // optimizer steps passed over (taken now or before a resume)
    while (this.stepCount < totalSteps) {
      const order = !shuffle ? Array.from({ length: data.length }, (_, i) => i) : seededPermutation(data.length, epochSeed(seed, epoch));
      const micro: number[][] = [];
      for (let s = 0; s < order.length; s += batchSize) micro.push(order.slice(s, s + batchSize));
      for (let g = 0; g < micro.length && this.stepCount < totalSteps; g += this.gradAccumSteps) {
        if (done++ < this.stepCount) continue; // resumed: this step was taken before
        const ts = performance.now();
        const group = micro.slice(g, g + this.gradAccumSteps);
        const batches: B[] = [];
        for (const idx of group) {
          const examples: E[] = [];
          for (const i of idx) examples.push(await data.example(i));
          batches.push(this.family.collate(examples));
        }
        let r: { loss: number; gradNorm: number };
        try {
          r = this.step(batches);
        } catch (e) {
          const msg = (e as Error).message;
          if (msg.startsWith('the loss is')) {
            throw new Error(`step ${this.stepCount + 1} (epoch ${epoch}, ${group.flat().map(nameOf).join(', ')}): ${msg}`);
          }
          throw e;
        }
        const { loss, gradNorm } = r;
        losses.push(loss);
        opts.onStep?.({
          step: this.stepCount, epoch, loss, gradNorm, ms: performance.now() - ts,
          samples: group.reduce((a, x) => a + x.length, 0),
          supervisedTokens: batches.reduce((a, b) => a + this.family.supervisedTokens(b), 0),
          lr: this.groups[0].optimizer.lr, totalSteps,
        });
        if (opts.evalData && (this.stepCount === totalSteps || (opts.evalSteps && this.stepCount % opts.evalSteps === 0))) {
          opts.onEval?.(this.stepCount, await this.evaluate(opts.evalData));
        }
        if (opts.saveSteps && this.stepCount % opts.saveSteps === 0) {
          opts.onSave?.(this.stepCount, { step: this.stepCount, epoch, seed, shuffle, batchSize, totalSteps, order });
        }
      }
      epoch++;
    }
    return { steps: losses.length, epochs: epoch, losses, ms: performance.now() - t0 };
  }

  /** Writes the model (all parameters, trained or not) as a checkpoint directory; see export.ts. */
  save(outDir: string, extraFiles: Record<string, string> = {}, stagingDir?: string): string {
    if (this.lora) throw new Error('Trainer.save writes the base model without the LoRA adapters: use saveAdapter (peft format) or merge them first (vlm merge)');
    const o = this.family.exportOptions();
    return exportCheckpoint(this.family.model, this.family.keymap, this.family.dir, outDir, {
      ...o, extraFiles: { ...o.extraFiles, ...extraFiles }, stagingDir,
      metadata: { 'tfjs-vlm': 'finetune', tune: this.tune.join(','), steps: String(this.stepCount) },
    });
  }

  /** Frees the optimizer state and the model. */
  dispose(): void {
    for (const g of this.groups) g.optimizer.dispose();
    this.lora?.dispose();
    this.family.dispose();
  }
}

/**
 * Module paths of torch `nn.LayerNorm` layers. HF transformers 4.40 (the version both upstreams
 * pin) exempts from weight decay the parameters of ALL_LAYERNORM_LAYERS = [nn.LayerNorm,
 * LlamaRMSNorm] and every name containing "bias"; Qwen2RMSNorm / MistralRMSNorm are not in that
 * list, so the LLM's RMSNorm weights ARE decayed upstream, and so they are here.
 */
function layerNormModules(model: Module): Set<string> {
  const out = new Set<string>();
  for (const [p, m] of model.namedModules()) if ((m.constructor as { className?: string }).className === 'LayerNorm') out.add(p);
  return out;
}

/**
 * The parameter groups (HF Trainer `create_optimizer` + LLaVA/VideoLLaMA 2's mm_projector_lr):
 * connector vs the rest (own learning rate when `connectorLr` is set) × decay vs no decay (biases
 * and LayerNorm weights, when `hfNoDecay`; see layerNormModules). Empty groups are dropped; the first group is the main one.
 */
function makeGroups(t: Trainer<any, any>, opts: TrainerOptions): ParamGroup[] {
  const lr = opts.lr ?? 5e-5, wd = opts.weightDecay ?? 0;
  if (opts.connectorLr !== undefined && !(opts.connectorLr > 0)) throw new Error(`connector learning rate must be > 0, got ${opts.connectorLr}`);
  const connector = t.family.connector;
  const norms = opts.hfNoDecay ? layerNormModules(t.family.model) : new Set<string>();
  const specs = new Map<string, { lr: number; wd: number; vars: number[] }>();
  const owner: number[] = [];
  t.params.forEach((p, i) => p.variables.forEach(() => owner.push(i)));
  owner.forEach((pi, vi) => {
    const p = t.params[pi];
    const conn = opts.connectorLr !== undefined && underPrefix(p.name, connector);
    const mod = p.name.split('.').slice(0, -1).join('.');
    const noDecay = !!opts.hfNoDecay && (p.key.includes('bias') || norms.has(mod));
    const name = `${conn ? 'connector' : 'main'}${noDecay ? '.no_decay' : ''}`;
    let g = specs.get(name);
    if (!g) specs.set(name, (g = { lr: conn ? opts.connectorLr! : lr, wd: noDecay ? 0 : wd, vars: [] }));
    g.vars.push(vi);
  });
  const order = ['main', 'main.no_decay', 'connector', 'connector.no_decay'].filter((n) => specs.has(n));
  return order.map((name) => {
    const g = specs.get(name)!;
    const vars = (t as unknown as { vars: tf.Variable[] }).vars;
    return { name, baseLr: g.lr, vars: g.vars, optimizer: new AdamW(g.vars.map((i) => vars[i]), { lr: g.lr, betas: opts.betas, eps: opts.eps, weightDecay: g.wd }) };
  });
}
