/**
 * LoRA with peft semantics (huggingface/peft `tuners/lora`), on our `Linear` (layers/linear.ts):
 *
 *   y = base(x) + (dropout(x) · Aᵀ · Bᵀ) · scaling,   scaling = alpha / r  (use_rslora: alpha / √r)
 *   A [r, in] ~ kaiming_uniform(a=√5) = U(−1/√in, 1/√in) (seeded; torch's RNG stream is not
 *   reproduced), B [out, r] = 0 — peft's `init_lora_weights=True`.
 *
 * Targets (peft `check_target_module_exists`), on the torch module name (the checkpoint key
 * without `.weight`, e.g. `llm.model.layers.0.self_attn.q_proj` for MiniCPM-V,
 * `model.layers.0.self_attn.q_proj` for VideoLLaMA 2):
 *   - a string: a regex that must match the WHOLE name (Python `re.fullmatch`);
 *   - a list: the name equals an entry or ends with "." + entry.
 * Only Linear modules are adapted. VideoLLaMA 2 never adapts its vision tower or mm_projector:
 * upstream train.py calls get_peft_model before `initialize_vision_modules` creates them.
 *
 * The adapters are not parameters of the base checkpoint (Linear.lora is not walked by
 * `namedParams`), so base export/loading is unchanged; `trainables()` lists them for the trainer
 * under their peft keys `base_model.model.<module>.lora_A.weight` / `.lora_B.weight`.
 */
import * as tf from '@tensorflow/tfjs';
import { onRecompute } from '../layers/checkpointing';
import { Linear } from '../layers/linear';
import { Module, Param } from '../layers/module';
import { KeyMap, toCheckpointKey } from '../weights/keymap';
import { TrainableParam } from './params';

export type TargetModules = string | readonly string[];

export interface LoraOptions {
  r: number;
  alpha: number;
  dropout?: number;
  /** A regex string (full match) or a list of names (equal or "."-suffix). */
  targetModules: TargetModules;
  useRslora?: boolean;
  /** Seed of A's initialisation (default 42, HF's seed). */
  seed?: number;
  /** false: A and B both start at zero... (not peft's; tests use `initA`/`initB` instead). Default true. */
  initLoraWeights?: boolean;
  /** Module names never adapted (the family's; loadTrainer fills it from the family table). */
  exclude?: LoraExclude;
}


export interface LoraPreset {
  r: number;
  alpha: number;
  dropout: number;
  /** null: every Linear of the LLM but lm_head (VideoLLaMA 2 `find_all_linear_names`). */
  targetModules: TargetModules | null;
  /** Parts trained fully beside the adapters. */
  tune: string[];
  /** Learning rate of the connector group (upstream --mm_projector_lr), when the script sets one. */
  connectorLr?: number;
  /** Module names LoRA never adapts in this family (VideoLLaMA 2: connector and vision tower). */
  exclude: LoraExclude;
}

/** Module names (torch paths) that LoRA never adapts in a family (its preset says which). */
export type LoraExclude = RegExp | null;

/** peft `check_target_module_exists` for a string or a list. */
export function matchesTarget(name: string, target: TargetModules): boolean {
  if (typeof target === 'string') return compileTarget(target).test(name);
  return target.some((t) => name === t || name.endsWith(`.${t}`));
}

const regexCache = new Map<string, RegExp>();
function compileTarget(t: string): RegExp {
  let r = regexCache.get(t);
  if (!r) {
    try {
      r = new RegExp(`^(?:${t})$`);
    } catch (e) {
      throw new Error(`--lora-target: invalid regular expression ${JSON.stringify(t)} (${(e as Error).message})`);
    }
    regexCache.set(t, r);
  }
  return r;
}

/** Parses `--lora-target`: "a,b,c" (plain names) → list; anything with regex syntax → a regex string. */
export function parseTargetModules(s: string): TargetModules {
  const t = s.trim();
  if (/^[A-Za-z0-9_]+(\s*,\s*[A-Za-z0-9_]+)*$/.test(t)) return t.split(',').map((x) => x.trim());
  return t;
}

/** A Linear the adapters may target, with its torch module name. */
export interface LinearSite {
  /** Our module path (`llm.model.layers.0.self_attn.q_proj`). */
  path: string;
  /** Torch module name (checkpoint key of the weight without `.weight`). */
  name: string;
  linear: Linear;
}

/** The Linear modules of `model` that LoRA may adapt (minus `exclude`), by torch module name. */
export function linearSites(model: Module, keymap: KeyMap, exclude: LoraExclude = null): LinearSite[] {
  const out: LinearSite[] = [];
  for (const [p, m] of model.namedModules()) {
    if (!(m instanceof Linear)) continue;
    const key = toCheckpointKey(keymap, `${p}.weight`);
    const name = key.slice(0, -'.weight'.length);
    if (exclude && exclude.test(name)) continue;
    out.push({ path: p, name, linear: m });
  }
  return out;
}

/** VideoLLaMA 2 `find_all_linear_names`: last name segments of the LLM's Linears, minus lm_head (sorted). */
export function findAllLinearNames(model: Module, keymap: KeyMap, exclude: LoraExclude = null): string[] {
  const names = new Set<string>();
  for (const s of linearSites(model, keymap, exclude)) {
    const parts = s.name.split('.');
    names.add(parts.length === 1 ? parts[0] : parts[parts.length - 1]);
  }
  names.delete('lm_head');
  return [...names].sort();
}

/** mulberry32 → uniform [0, 1). */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A 32-bit mix of integers (for per-call dropout seeds). */
export function mixSeed(...xs: number[]): number {
  let h = 0x811c9dc5;
  for (const x of xs) {
    h = Math.imul(h ^ (x >>> 0), 0x01000193) >>> 0;
    h = Math.imul(h ^ (h >>> 15), 0x2c1b3c6d) >>> 0;
  }
  return h;
}

/** Kaiming-uniform(a=√5) for a [rows, fanIn] weight: U(−1/√fanIn, 1/√fanIn). */
export function kaimingUniform(rows: number, fanIn: number, seed: number): Float32Array {
  const bound = 1 / Math.sqrt(fanIn); // gain √(2/(1+5)) · √3 / √fanIn
  const r = rng(seed);
  const out = new Float32Array(rows * fanIn);
  for (let i = 0; i < out.length; i++) out[i] = (2 * r() - 1) * bound;
  return out;
}

/** One adapted Linear. */
export interface LoraEntry extends LinearSite {
  A: Param;
  B: Param;
}

/** peft key of an adapter tensor. */
export const peftKey = (moduleName: string, which: 'A' | 'B') => `base_model.model.${moduleName}.lora_${which}.weight`;

/** The dropout RNG state: the trainer sets `step` per micro-batch; `counter` counts calls. */
export interface LoraRng {
  seed: number;
  step: number;
  counter: number;
}

/** The adapters of one model. */
export class LoraModel {
  readonly entries: LoraEntry[] = [];
  readonly scaling: number;
  readonly rng: LoraRng;
  readonly config: Required<Omit<LoraOptions, 'initLoraWeights' | 'exclude'>>;
  private mergedState = false;
  private readonly unhook: () => void;

  constructor(readonly model: Module, readonly keymap: KeyMap, readonly exclude: LoraExclude, opts: LoraOptions) {
    const r = opts.r, alpha = opts.alpha, dropout = opts.dropout ?? 0;
    if (!(Number.isInteger(r) && r > 0)) throw new Error(`LoRA rank r must be an integer > 0, got ${r}`);
    if (!(Number.isFinite(alpha) && alpha > 0)) throw new Error(`LoRA alpha must be > 0, got ${alpha}`);
    if (!(dropout >= 0 && dropout < 1)) throw new Error(`LoRA dropout must be in [0, 1), got ${dropout}`);
    const t = opts.targetModules;
    if (typeof t !== 'string' && (!Array.isArray(t) || !t.length)) throw new Error('LoRA target modules: give a regex or a non-empty list of module names');
    this.config = { r, alpha, dropout, targetModules: t, useRslora: !!opts.useRslora, seed: opts.seed ?? 42 };
    this.scaling = opts.useRslora ? alpha / Math.sqrt(r) : alpha / r;
    this.rng = { seed: this.config.seed, step: 0, counter: 0 };
    // gradient checkpointing replays a layer's dropout masks in its recomputation
    this.unhook = onRecompute(() => { const c = this.rng.counter; return () => { this.rng.counter = c; }; });
    const sites = linearSites(model, keymap, exclude);
    const hits = sites.filter((s) => matchesTarget(s.name, t));
    if (!hits.length) {
      const examples = sites.slice(0, 6).map((s) => s.name);
      throw new Error(`LoRA target modules ${JSON.stringify(t)} match no Linear module of the model ` +
        `(peft rules: a string is a full-match regex, a list matches names equal to or ending in "." + entry; ` +
        `module names look like: ${examples.join(', ')}${sites.length > 6 ? ', …' : ''})`);
    }
    const init = opts.initLoraWeights ?? true;
    hits.forEach((s, i) => {
      if (s.linear.lora) throw new Error(`${s.name} already has a LoRA adapter`);
      const A = new Param([r, s.linear.inFeatures]);
      const B = new Param([s.linear.outFeatures, r]);
      A.set([init ? tf.tensor2d(kaimingUniform(r, s.linear.inFeatures, mixSeed(this.config.seed, i)), [r, s.linear.inFeatures]) : tf.zeros([r, s.linear.inFeatures])], [0]);
      B.set([tf.zeros([s.linear.outFeatures, r])], [0]);
      this.entries.push({ ...s, A, B });
      const rng = this.rng;
      s.linear.lora = {
        A: A.value, B: B.value, scale: this.scaling, dropout, training: false, merged: false,
        nextSeed: () => mixSeed(rng.seed, rng.step, i, rng.counter++),
      };
    });
  }

  /** Dropout on (training) or off (inference, evaluation). */
  setTraining(on: boolean): void {
    for (const e of this.entries) e.linear.lora!.training = on;
  }

  get merged(): boolean {
    return this.mergedState;
  }

  /** The adapters as trainable parameters under their peft keys. */
  trainables(): TrainableParam[] {
    return this.entries.flatMap((e) => [
      { name: `${e.path}.lora_A.weight`, key: peftKey(e.name, 'A'), param: e.A, variables: e.A.chunks },
      { name: `${e.path}.lora_B.weight`, key: peftKey(e.name, 'B'), param: e.B, variables: e.B.chunks },
    ]);
  }

  /** Entry by peft key prefix (module name). */
  entry(moduleName: string): LoraEntry | undefined {
    return this.entries.find((e) => e.name === moduleName);
  }

  /** W += s·B·A (sign +1) or W −= s·B·A (−1), chunk by chunk, in the weight's memory layout. */
  private fold(sign: 1 | -1): void {
    for (const e of this.entries) {
      const { chunks, starts, layout } = e.linear.weight.tensors; // merging needs float32 tfjs weights
      const ad = e.linear.lora!;
      chunks.forEach((c, k) => {
        tf.tidy(() => {
          const rows = (layout === 'same' ? c.shape[0] : c.shape[1]) as number;
          const Bk = starts.length > 1 || rows !== e.linear.outFeatures ? tf.slice(ad.B, [starts[k] ?? 0, 0], [rows, -1]) : ad.B;
          const delta = layout === 'same'
            ? tf.matMul(Bk, ad.A) // [out, in]
            : tf.matMul(ad.A, Bk, true, true); // [in, out]
          c.assign(tf.add(c, tf.mul(delta, sign * ad.scale)));
        });
      });
    }
  }

  /** Folds the adapters into the base weights (peft `merge`): forward then skips them. */
  merge(): void {
    if (this.mergedState) throw new Error('the LoRA adapters are already merged');
    this.fold(1);
    for (const e of this.entries) e.linear.lora!.merged = true;
    this.mergedState = true;
  }

  /** Undoes `merge` (W −= s·B·A; float32 round-off remains). */
  unmerge(): void {
    if (!this.mergedState) throw new Error('the LoRA adapters are not merged');
    this.fold(-1);
    for (const e of this.entries) e.linear.lora!.merged = false;
    this.mergedState = false;
  }

  /** Removes the adapters from the Linears and frees them (merged weights stay merged). */
  dispose(): void {
    this.unhook();
    for (const e of this.entries) {
      e.linear.lora = null;
      e.A.dispose();
      e.B.dispose();
    }
    this.entries.length = 0;
  }
}

/** LoRA options from a preset, with explicit values taking precedence. */
export function loraFromPreset(p: LoraPreset, model: Module, keymap: KeyMap, over: Partial<LoraOptions> = {}): { lora: LoraOptions; tune: string[]; connectorLr?: number } {
  const targetModules = over.targetModules ?? p.targetModules ?? findAllLinearNames(model, keymap, p.exclude);
  return {
    lora: { r: over.r ?? p.r, alpha: over.alpha ?? p.alpha, dropout: over.dropout ?? p.dropout, targetModules, useRslora: over.useRslora, seed: over.seed },
    tune: p.tune, connectorLr: p.connectorLr,
  };
}
