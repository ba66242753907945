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
import { BackendContext, LayoutChoice, ParamLayout, toCheckpointLayout } from './layout';
import { ParamStorage, TensorMatmulOptions, TensorStorage } from './storage';

export type { BackendContext, LayoutChoice, ParamLayout } from './layout';
export { layoutPerm, layoutShape } from './layout';

export interface ParamOptions {
  /** Memory layout, fixed or chosen from the backend context at load (default 'same'). */
  layout?: LayoutChoice;
  trainable?: boolean;
  /** Split along checkpoint axis 0 into chunks of at most this many float32 bytes (default: never). */
  maxChunkBytes?: number;
  /**
   * A large matrix read only through `matmul` (a Linear weight, [out, in]) or `gather` (an
   * embedding table): it may be stored outside tfjs (native f16/bf16/q8_0/q4_0, see
   * layers/native_storage.ts). Norms, biases and small tensors stay float32 tfjs tensors.
   */
  storable?: 'matmul' | 'gather';
}

/** One named parameter: its checkpoint shape and, once loaded, its storage. */
export class Param {
  /** Shape in the checkpoint (torch layout). */
  readonly shape: number[];
  readonly layoutChoice: LayoutChoice;
  private chosenLayout: ParamLayout | null;
  trainable: boolean;
  maxChunkBytes?: number;
  readonly storable?: 'matmul' | 'gather';
  /** The values, once loaded. */
  private held: ParamStorage | null = null;
  /** Set when this parameter shares another's storage (tied weights). */
  tiedTo: Param | null = null;

  constructor(shape: number[], opts: ParamOptions = {}) {
    this.shape = shape;
    this.layoutChoice = opts.layout ?? 'same';
    this.chosenLayout = typeof this.layoutChoice === 'string' ? this.layoutChoice : null;
    this.trainable = opts.trainable ?? true;
    this.maxChunkBytes = opts.maxChunkBytes;
    this.storable = opts.storable;
  }

  /** Picks the memory layout for the backend the weights are loaded for (loaders call this first). */
  chooseLayout(ctx: BackendContext): ParamLayout {
    const p = this.tiedTo ?? this;
    if (typeof p.layoutChoice !== 'string') p.chosenLayout = p.layoutChoice(ctx);
    return p.chosenLayout!;
  }

  /** The memory layout (after load, or when fixed). */
  get layout(): ParamLayout {
    const p = this.tiedTo ?? this;
    if (!p.chosenLayout) throw new Error('parameter layout read before load (it is chosen from the backend at load)');
    return p.chosenLayout;
  }

  get loaded(): boolean {
    return (this.tiedTo ?? this).held !== null;
  }

  /** Where the values live (following ties); throws before load. */
  get storage(): ParamStorage {
    const s = (this.tiedTo ?? this).held;
    if (!s) throw new Error('parameter read before it was loaded');
    return s;
  }

  /** The float32 tfjs storage; throws when the parameter is held natively. */
  get tensors(): TensorStorage {
    const s = this.storage;
    if (!(s instanceof TensorStorage)) throw new Error(`parameter is stored as ${s.dtype} outside tfjs; only matmul/gather can read it`);
    return s;
  }

  /** Row chunks of a float32 tfjs parameter (following ties); [] before load. */
  get chunks(): tf.Variable[] {
    const s = (this.tiedTo ?? this).held;
    return s instanceof TensorStorage ? s.chunks : [];
  }

  /** Checkpoint-axis-0 start row of each chunk (float32 tfjs storage). */
  get chunkStarts(): number[] {
    const s = (this.tiedTo ?? this).held;
    return s instanceof TensorStorage ? s.starts : [];
  }

  /** The whole parameter (memory layout). Throws if it is chunked, native or not loaded. */
  get value(): tf.Variable {
    const { chunks } = this.tensors;
    if (chunks.length !== 1) throw new Error('parameter is chunked; use .chunks');
    return chunks[0];
  }

  /** x [N, in] · Wᵀ (+ bias), whatever the storage. */
  matmul(x: tf.Tensor2D, bias?: tf.Tensor): tf.Tensor2D {
    return this.storage.matmul(x, bias);
  }

  /** x [..., in] · Wᵀ (+ bias) → [..., out], whatever the storage (one op where it takes any rank). */
  matmulLastAxis(x: tf.Tensor, bias?: tf.Tensor): tf.Tensor {
    const s = this.storage;
    if (s.matmulAnyRank) return s.matmulAnyRank(x, bias);
    return tf.tidy(() => {
      const inF = x.shape[x.rank - 1];
      const y = s.matmul(x.reshape([-1, inF]) as tf.Tensor2D, bias); // [N, out]
      return y.reshape([...x.shape.slice(0, -1), y.shape[1]]);
    });
  }

  /** Rows `ids` (int32, in range) of a [num, dim] parameter, whatever the storage. */
  gather(ids: tf.Tensor1D): tf.Tensor2D {
    return this.storage.gather(ids);
  }

  /** Replaces the storage by float32 `tensors` (memory layout), taking ownership of them. */
  set(tensors: tf.Tensor[], starts: number[], opts?: TensorMatmulOptions): void {
    const layout = this.layout;
    const vars = tensors.map((t) => {
      const v = tf.variable(t, this.trainable);
      t.dispose();
      return v;
    });
    this.setStorage(new TensorStorage(vars, starts, layout, (c) => toCheckpointLayout(c.dataSync() as Float32Array, c.shape, layout), opts));
  }

  /** Replaces the storage (taking ownership). */
  setStorage(s: ParamStorage): void {
    this.dispose();
    this.held = s;
  }

  /** Makes this parameter share `other`'s storage (e.g. lm_head tied to embed_tokens). */
  tie(other: Param): void {
    this.dispose();
    this.tiedTo = other;
  }

  dispose(): void {
    this.held?.dispose();
    this.held = null;
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
      if (!p.tiedTo && p.loaded) n += p.chunks.length || 1;
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
