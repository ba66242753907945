/**
 * `Module`: the base of every tfjs-vlm layer — a `tf.layers.Layer` (so it is registered with
 * tf.serialization and can be `apply`-ed eagerly) that also knows its parameters by checkpoint name.
 *
 * Field names are the checkpoint path segments: walking the tree of a Qwen2 model yields
 * `model.layers.0.self_attn.q_proj.weight` with no lookup table. A field is a child when it holds a
 * Module or an array of Modules, and a parameter when it holds a `Param`.
 *
 * A `Param` is created empty with its checkpoint shape; loading fills it (weights/load.ts). Its
 * in-memory layout may differ from the checkpoint's (e.g. a Linear weight stored [in, out] on the
 * stock wasm backend): the layout is chosen once, at load, and described by `Param.layout`, so
 * export can undo it. A Param larger than `maxChunkBytes` is held as several row chunks (wasm
 * cannot safely hold one 2 GB tensor); layers that may see such params (Linear, Embedding) handle
 * chunks.
 */
import * as tf from '@tensorflow/tfjs';

/** How a parameter is laid out in memory relative to its checkpoint tensor. */
export type ParamLayout =
  /** as in the checkpoint */
  | 'same'
  /** 2-D, transposed: checkpoint [out, in] → memory [in, out] (stock wasm matmul prefers it) */
  | 'transposed'
  /** conv weight OIHW → HWIO (tfjs conv2d) */
  | 'oihw_to_hwio'
  /** depthwise conv weight [C, 1, kh, kw] → [kh, kw, C, 1] (tfjs depthwiseConv2d) */
  | 'depthwise_to_hwc1'
  /** conv3d weight OIDHW → DHWIO (tfjs conv3d) */
  | 'oidhw_to_dhwio';

/** Memory shape for a checkpoint shape under a layout. */
export function layoutShape(shape: number[], layout: ParamLayout): number[] {
  switch (layout) {
    case 'same': return shape.slice();
    case 'transposed': return [shape[1], shape[0]];
    case 'oihw_to_hwio': return [shape[2], shape[3], shape[1], shape[0]];
    case 'depthwise_to_hwc1': return [shape[2], shape[3], shape[0], shape[1]];
    case 'oidhw_to_dhwio': return [shape[2], shape[3], shape[4], shape[1], shape[0]];
  }
}

/** Permutation from checkpoint axes to memory axes (for tf.transpose), or null for 'same'. */
export function layoutPerm(layout: ParamLayout): number[] | null {
  switch (layout) {
    case 'same': return null;
    case 'transposed': return [1, 0];
    case 'oihw_to_hwio': return [2, 3, 1, 0];
    case 'depthwise_to_hwc1': return [2, 3, 0, 1];
    case 'oidhw_to_dhwio': return [2, 3, 4, 1, 0];
  }
}

export interface ParamOptions {
  layout?: ParamLayout;
  trainable?: boolean;
  /** Split along checkpoint axis 0 into chunks of at most this many bytes (default: never). */
  maxChunkBytes?: number;
}

/** One named parameter: its checkpoint shape and, once loaded, its variable(s). */
export class Param {
  /** Shape in the checkpoint (torch layout). */
  readonly shape: number[];
  layout: ParamLayout;
  trainable: boolean;
  maxChunkBytes?: number;
  /** Row chunks along checkpoint axis 0, each laid out per `layout`. Usually one. */
  chunks: tf.Variable[] = [];
  /** Checkpoint-axis-0 start row of each chunk. */
  chunkStarts: number[] = [];
  /** Set when this parameter shares another's storage (tied weights). */
  tiedTo: Param | null = null;

  constructor(shape: number[], opts: ParamOptions = {}) {
    this.shape = shape;
    this.layout = opts.layout ?? 'same';
    this.trainable = opts.trainable ?? true;
    this.maxChunkBytes = opts.maxChunkBytes;
  }

  get loaded(): boolean {
    return (this.tiedTo ?? this).chunks.length > 0;
  }

  /** The whole parameter (memory layout). Throws if it is chunked or not loaded. */
  get value(): tf.Variable {
    const p = this.tiedTo ?? this;
    if (p.chunks.length !== 1) {
      throw new Error(p.chunks.length === 0 ? 'parameter read before it was loaded' : 'parameter is chunked; use .chunks');
    }
    return p.chunks[0];
  }

  /** Chunks of the storage (following ties). */
  storage(): { chunks: tf.Variable[]; starts: number[]; layout: ParamLayout } {
    const p = this.tiedTo ?? this;
    return { chunks: p.chunks, starts: p.chunkStarts, layout: p.layout };
  }

  /** Replaces the storage by `tensors` (memory layout), taking ownership of them. */
  set(tensors: tf.Tensor[], starts: number[]): void {
    this.dispose();
    this.chunks = tensors.map((t) => {
      const v = tf.variable(t, this.trainable);
      t.dispose();
      return v;
    });
    this.chunkStarts = starts;
  }

  /** Makes this parameter share `other`'s storage (e.g. lm_head tied to embed_tokens). */
  tie(other: Param): void {
    this.dispose();
    this.tiedTo = other;
  }

  dispose(): void {
    for (const c of this.chunks) c.dispose();
    this.chunks = [];
    this.chunkStarts = [];
  }
}

/** Fields of tf.layers.Layer that are never children or params. */
const LAYER_INTERNALS = new Set(['_inboundNodes', '_outboundNodes', '_trainableWeights', '_nonTrainableWeights', '_losses', '_updates', '_callHook', 'inputSpec', 'supportsMasking']);

export abstract class Module extends tf.layers.Layer {
  constructor(name?: string) {
    super(name ? { name } : {});
    this.built = true; // modules create their params in the constructor; nothing to infer from shapes
  }

  /** Walks own fields: yields [name, Param] and recurses into child Modules (arrays by index). */
  *namedParams(prefix = ''): Generator<[string, Param]> {
    for (const [k, v] of Object.entries(this)) {
      if (LAYER_INTERNALS.has(k) || v == null) continue;
      if (v instanceof Param) yield [prefix + k, v];
      else if (v instanceof Module) yield* v.namedParams(`${prefix}${k}.`);
      else if (Array.isArray(v) && v.length && v[0] instanceof Module) {
        for (let i = 0; i < v.length; i++) yield* (v[i] as Module).namedParams(`${prefix}${k}.${i}.`);
      }
    }
  }

  /** Child modules by dotted path (for taps and partial loading). */
  *namedModules(prefix = ''): Generator<[string, Module]> {
    yield [prefix.replace(/\.$/, ''), this];
    for (const [k, v] of Object.entries(this)) {
      if (LAYER_INTERNALS.has(k) || v == null) continue;
      if (v instanceof Module) yield* v.namedModules(`${prefix}${k}.`);
      else if (Array.isArray(v) && v.length && v[0] instanceof Module) {
        for (let i = 0; i < v.length; i++) yield* (v[i] as Module).namedModules(`${prefix}${k}.${i}.`);
      }
    }
  }

  /** Trainable variables whose checkpoint name starts with one of `prefixes` (all when empty). */
  variablesFor(prefixes: string[] = []): Map<string, tf.Variable[]> {
    const out = new Map<string, tf.Variable[]>();
    for (const [name, p] of this.namedParams()) {
      if (p.tiedTo || !p.trainable) continue;
      if (prefixes.length && !prefixes.some((x) => name === x || name.startsWith(x.endsWith('.') ? x : `${x}.`))) continue;
      out.set(name, p.chunks);
    }
    return out;
  }

  /** Number of scalars in this module's (untied) parameters. */
  numParams(): number {
    let n = 0;
    for (const [, p] of this.namedParams()) if (!p.tiedTo) n += p.shape.reduce((a, b) => a * b, 1);
    return n;
  }

  /** Frees every parameter of this module and its children. */
  disposeParams(): void {
    for (const [, p] of this.namedParams()) p.dispose();
  }

  /** Frees non-parameter tensors the module owns (caches, tables). Called by `dispose` on every submodule. */
  disposeBuffers(): void {}

  override dispose(): ReturnType<tf.layers.Layer['dispose']> {
    for (const [, m] of this.namedModules()) m.disposeBuffers();
    let n = 0;
    for (const [, p] of this.namedParams()) {
      n += p.chunks.length;
      p.dispose();
    }
    return { refCountAfterDispose: 0, numDisposedVariables: n };
  }

  override getConfig(): tf.serialization.ConfigDict {
    return { ...super.getConfig() };
  }
}

/** Registers a Module subclass with tf.serialization under the 'tfjs-vlm' package name. */
export function register<T extends tf.serialization.SerializableConstructor<tf.serialization.Serializable>>(cls: T): T {
  tf.serialization.registerClass(cls, 'tfjs-vlm');
  return cls;
}
