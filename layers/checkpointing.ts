/**
 * Gradient checkpointing (torch.utils.checkpoint, as HF `gradient_checkpointing_enable` applies it
 * per decoder / vision layer): the layer's forward runs without recording its intermediates on the
 * tape; the backward pass re-runs the forward under a fresh tape and differentiates it w.r.t. the
 * layer input and the layer's trainable variables. Same ops on the same values, so the gradients
 * are the same (up to the order in which per-use contributions are summed).
 *
 * `withGradientCheckpointing(vars, fn)` turns it on while `fn` runs (the trainer does it around
 * `tf.variableGrads`); layers call `checkpointLayer(module, f, x)` in their loops. Randomness
 * inside a layer (LoRA dropout) is replayed: the RNG hooks registered with `onRecompute` snapshot
 * their state before the forward and restore it for the recomputation.
 */
import * as tf from '@tensorflow/tfjs';
import { Linear } from './linear';
import { Module } from './module';

let active: Set<tf.Variable> | null = null;

/** A random state that must be identical in the recomputation: `save` returns a restore function. */
export type RngHook = () => () => void;
const rngHooks: RngHook[] = [];

/** Registers a random-state hook (LoRA dropout); returns an unregister function. */
export function onRecompute(hook: RngHook): () => void {
  rngHooks.push(hook);
  return () => {
    const i = rngHooks.indexOf(hook);
    if (i >= 0) rngHooks.splice(i, 1);
  };
}

export function withGradientCheckpointing<T>(trainable: Set<tf.Variable>, fn: () => T): T {
  const prev = active;
  active = trainable;
  try {
    return fn();
  } finally {
    active = prev;
  }
}

export function gradientCheckpointingActive(): boolean {
  return active !== null;
}

/** The trainable variables a module's forward reads (its parameters and its Linears' adapters). */
function moduleVars(m: Module, trainable: Set<tf.Variable>): tf.Variable[] {
  const out = new Set<tf.Variable>();
  for (const [, p] of m.namedParams()) for (const c of p.chunks) if (trainable.has(c)) out.add(c);
  for (const [, sub] of m.namedModules()) {
    if (sub instanceof Linear && sub.lora) for (const v of [sub.lora.A, sub.lora.B]) if (trainable.has(v)) out.add(v);
  }
  return [...out];
}

/**
 * `f(x, aux)` (one layer), checkpointed when gradient checkpointing is active; otherwise simply
 * `f(x, aux)`. `f` must depend on trainable state only through `x` and `m`'s variables; the
 * non-differentiated tensors it reads (masks, rotary tables) come in `aux`, which is kept alive
 * for the recomputation (the caller's tidy frees the originals before the backward pass).
 */
export function checkpointLayer<T extends tf.Tensor>(m: Module, f: (x: T, aux: (tf.Tensor | null)[]) => T, x: T, aux: (tf.Tensor | null)[] = []): T {
  const trainable = active;
  if (!trainable) return f(x, aux);
  const vars = moduleVars(m, trainable);
  const restorers = rngHooks.map((h) => h());
  const kept = aux.map((t) => (t ? tf.keep(t.clone()) : null));
  const run = tf.customGrad(((...args: unknown[]) => {
    const save = args[args.length - 1] as tf.GradSaveFunc;
    const xin = args[0] as T;
    save([xin]);
    const value = tf.tidy(() => f(xin, aux)); // intermediates freed now: the backward recomputes them
    return {
      value,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        restorers.forEach((r) => r()); // the random state of the forward
        const xs = [saved[0], ...vars];
        // A nested tf.grads during the outer backward pass starts a fresh tape and, being at
        // gradient depth 0, frees it and nulls `activeTape` when done; the outer pass still
        // needs its own tape afterwards (to free its saved tensors), so it is put back.
        const state = (tf.engine() as unknown as { state: { activeTape: unknown } }).state;
        const outerTape = state.activeTape;
        try {
          const { value: y, grads } = tf.engine().gradients(() => f(saved[0] as T, kept), xs, dy, true);
          y.dispose();
          return grads.map((g, i) => g ?? tf.zerosLike(xs[i]));
        } finally {
          state.activeTape = outerTape;
          tf.dispose(kept.filter((t): t is tf.Tensor => !!t));
        }
      },
    };
     
  }) as any);
  return (run as unknown as (...a: tf.Tensor[]) => T)(x, ...vars);
}
