/**
 * tfjs's backward pass, frugal with memory. The stock `Engine.gradients` (tfjs-core 4.22
 * `tape.ts` `backpropagateGradients`) keeps every intermediate gradient and every saved forward
 * tensor until the whole backward pass ends: the peak is the sum over the network, not the
 * frontier. A LoRA step on a 28-layer 7B LLM with a 152k vocabulary does not fit the 4 GB wasm
 * heap that way (measured: the 2-layer, real-width MiniCPM-V peaked at 4.5 GB).
 *
 * This replacement walks the same filtered tape in the same order with the same gradient
 * functions and the same accumulation (so the gradients are bit-identical), and additionally
 *   - frees a node's output gradients once the node has been differentiated (every consumer of an
 *     output comes later on the tape, so its gradient is complete and used up) — except the
 *     gradients being returned, the caller's `dy`, and tensors still referenced elsewhere;
 *   - frees a node's saved forward tensors once its gradient functions have run, when this is
 *     not a higher-order pass (gradient depth 0, where the stock engine frees them at the end).
 *
 * `installLeanBackprop()` swaps the method on tfjs's engine (idempotent); initBackend calls it.
 */
import * as tf from '@tensorflow/tfjs';

interface TapeNode {
  id: number;
  kernelName: string;
  outputs: tf.Tensor[];
  inputs: Record<string, tf.Tensor>;
  gradient?: (dys: (tf.Tensor | null)[]) => Record<string, () => tf.Tensor>;
  saved?: tf.Tensor[];
}

interface EngineInternals {
  state: { activeTape: TapeNode[] | null; gradientDepth: number };
  scopedRun<T>(start: () => void, end: () => void, f: () => T): T;
  startTape(): void;
  endTape(): void;
  tidy<T extends tf.TensorContainer>(nameOrFn: string | (() => T), fn?: () => T): T;
  gradients: GradientsFn;
  vlmStockGradients?: GradientsFn;
}

type GradientsFn = (f: () => tf.Tensor, xs: tf.Tensor[], dy?: tf.Tensor, allowNoGradients?: boolean) => { value: tf.Tensor; grads: tf.Tensor[] };

/** The nodes on a path from one of `xs` to `y`, inputs pruned to those that depend on `xs` (tfjs getFilteredNodesXToY). */
function nodesFromXToY(tape: TapeNode[], xs: tf.Tensor[], y: tf.Tensor): TapeNode[] {
  const fromX = new Set<number>(xs.map((x) => x.id));
  const nodeFromX = new Set<number>();
  for (const node of tape) {
    if (Object.values(node.inputs).some((t) => fromX.has(t.id))) {
      for (const o of node.outputs) fromX.add(o.id);
      nodeFromX.add(node.id);
    }
  }
  const toY = new Set<number>([y.id]);
  const nodeToY = new Set<number>();
  for (let i = tape.length - 1; i >= 0; i--) {
    const node = tape[i];
    if (node.outputs.some((o) => toY.has(o.id))) {
      for (const t of Object.values(node.inputs)) toY.add(t.id);
      nodeToY.add(node.id);
    }
  }
  const out: TapeNode[] = [];
  for (const node of tape) {
    if (!nodeFromX.has(node.id) || !nodeToY.has(node.id)) continue;
    const inputs: Record<string, tf.Tensor> = {};
    for (const [name, t] of Object.entries(node.inputs)) if (fromX.has(t.id)) inputs[name] = t;
    out.push({ ...node, inputs, outputs: node.outputs });
  }
  return out;
}

/**
 * Walks `tape` backwards accumulating into `acc` (tensor id → gradient). Gradients of `keepIds`
 * (the xs) and the tensor `keep` (the caller's dy) are never freed; `freeSaved` frees each node's
 * saved tensors after its gradient functions ran.
 */
function backprop(acc: Map<number, tf.Tensor>, tape: TapeNode[], tidy: (f: () => tf.Tensor) => tf.Tensor,
  keepIds: Set<number>, keep: tf.Tensor | null, freeSaved: boolean): void {
  const referenced = (t: tf.Tensor) => {
    for (const v of acc.values()) if (v === t) return true;
    return false;
  };
  for (let i = tape.length - 1; i >= 0; i--) {
    const node = tape[i];
    const dys = node.outputs.map((o) => acc.get(o.id) ?? null);
    if (!node.gradient) throw new Error(`Cannot compute gradient: gradient function not found for ${node.kernelName}.`);
    const inputGradients = node.gradient(dys);
    for (const name in node.inputs) {
      if (!(name in inputGradients)) {
        throw new Error(`Cannot backprop through input ${name}. Available gradients found: ${Object.keys(inputGradients)}.`);
      }
      const dx = tidy(() => inputGradients[name]());
      if (dx.dtype !== 'float32') {
        throw new Error(`Error in gradient for op ${node.kernelName}. The gradient of input ${name} must have 'float32' dtype, but has '${dx.dtype}'`);
      }
      const x = node.inputs[name];
      if (!tf.util.arraysEqual(dx.shape, x.shape)) {
        throw new Error(`Error in gradient for op ${node.kernelName}. The gradient of input '${name}' has shape '${dx.shape}', which does not match the shape of the input '${x.shape}'`);
      }
      const cur = acc.get(x.id);
      if (cur === undefined) {
        acc.set(x.id, dx);
      } else {
        acc.set(x.id, tf.add(cur, dx));
        cur.dispose();
      }
    }
    // this node's output gradients are complete and consumed
    for (const o of node.outputs) {
      const g = acc.get(o.id);
      if (g === undefined || keepIds.has(o.id) || g === keep) continue;
      acc.delete(o.id);
      if (!referenced(g)) g.dispose();
    }
    if (freeSaved) for (const t of node.saved ?? []) t.dispose();
  }
}

/** Replaces tfjs's `Engine.gradients` with the frugal backward pass above (once per process). */
export function installLeanBackprop(): void {
  const engine = tf.engine() as unknown as EngineInternals;
  if (engine.vlmStockGradients) return;
  engine.vlmStockGradients = engine.gradients;
  engine.gradients = function (this: EngineInternals, f, xs, dy, allowNoGradients = false) {
    if (xs.length === 0) throw new Error('gradients() received an empty list of xs.');
    if (dy != null && dy.dtype !== 'float32') throw new Error(`dy must have 'float32' dtype, but has '${dy.dtype}'`);
    const y = this.scopedRun(() => this.startTape(), () => this.endTape(), () => this.tidy('forward', f));
    if (!(y instanceof tf.Tensor)) throw new Error('The result y returned by f() must be a tensor.');
    const tape = nodesFromXToY(this.state.activeTape ?? [], xs, y);
    if (!allowNoGradients && tape.length === 0 && xs.length > 0) {
      throw new Error('Cannot compute gradient of y=f(x) with respect to x. Make sure that the f you passed encloses all operations that lead from x to y.');
    }
    return this.tidy('backward', () => {
      const acc = new Map<number, tf.Tensor>();
      acc.set(y.id, dy ?? tf.ones(y.shape));
      const topLevel = this.state.gradientDepth === 0;
      backprop(acc, tape, (fn) => this.tidy(fn), new Set(xs.map((x) => x.id)), dy ?? null, topLevel);
      const grads = xs.map((x) => acc.get(x.id)!);
      if (topLevel) {
        for (const node of this.state.activeTape ?? []) for (const t of node.saved ?? []) t.dispose();
        this.state.activeTape = null;
      }
      return { value: y, grads } as unknown as tf.TensorContainer;
    }) as unknown as { value: tf.Tensor; grads: tf.Tensor[] };
  };
}

/** Runs `fn` with tfjs's own backward pass (tests compare against it). */
export function withStockBackprop<T>(fn: () => T): T {
  const engine = tf.engine() as unknown as EngineInternals;
  const lean = engine.gradients, stock = engine.vlmStockGradients;
  if (!stock) return fn();
  engine.gradients = stock;
  try {
    return fn();
  } finally {
    engine.gradients = lean;
  }
}
