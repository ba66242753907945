/**
 * Trainable parameters by name, and the way back from tfjs variables to checkpoint tensors.
 *
 * A `Param` (layers/module.ts) may live in memory in another layout than the checkpoint's (a
 * Linear weight kept [in, out], a conv weight in HWIO/DHWIO, a depthwise weight [kh, kw, C, 1]) and
 * as several row chunks along checkpoint axis 0 (the resampler's packed q/k/v projection, vocab-
 * sized heads). tfjs autodiff gives one gradient per variable, in that memory layout; upstream's
 * `param.grad` is one tensor in the checkpoint layout. `toCheckpointTensor` undoes the layout of
 * each chunk and stacks the chunks, so gradients compare with torch's and export writes HF keys.
 * Optimizers work on the variables themselves (AdamW is elementwise, so the layout is irrelevant).
 *
 * Selection: a prefix names a subtree either by module path (`resampler`, `llm.model.layers.1`,
 * `mm_projector`) or by checkpoint key (`model.mm_projector`, `lm_head`), matched on whole dotted
 * segments. Tied parameters (lm_head tied to embed_tokens) train through the parameter they are
 * tied to, as torch's `named_parameters()` lists a shared tensor once.
 */
import * as tf from '@tensorflow/tfjs';
import { Module, Param, layoutPerm } from '../layers/module';
import { KeyMap, toCheckpointKey } from '../weights/keymap';

/** One trainable parameter: its module name, checkpoint key and variables (memory layout). */
export interface TrainableParam {
  /** Module path (`llm.model.layers.0.self_attn.q_proj.weight`). */
  name: string;
  /** Checkpoint key (`model.layers.0.self_attn.q_proj.weight` for VideoLLaMA 2). */
  key: string;
  param: Param;
  /** The row chunks, each in `param.layout`. */
  variables: tf.Variable[];
}

/** True when `name` is `prefix` or lies under it (dotted segments; a trailing '.' is allowed). */
export function underPrefix(name: string, prefix: string): boolean {
  const p = prefix.endsWith('.') ? prefix.slice(0, -1) : prefix;
  return p === '' || name === p || name.startsWith(`${p}.`);
}

/**
 * The parameters under any of `prefixes` (module paths or checkpoint keys), in module order.
 * Throws naming an unknown prefix and the top-level parts that exist. Parameters are expected
 * to be loaded.
 */
export function selectTrainable(model: Module, keymap: KeyMap, prefixes: readonly string[]): TrainableParam[] {
  if (!prefixes.length) throw new Error('no trainable parameters selected (empty list of prefixes)');
  const all: TrainableParam[] = [];
  for (const [name, param] of model.namedParams()) {
    if (param.tiedTo) continue;
    if (!param.loaded) throw new Error(`parameter '${name}' is not loaded`);
    all.push({ name, key: toCheckpointKey(keymap, name), param, variables: param.chunks });
  }
  const hit = (t: TrainableParam, p: string) => underPrefix(t.name, p) || underPrefix(t.key, p);
  for (const p of prefixes) {
    if (!all.some((t) => hit(t, p))) {
      const tops = [...new Set(all.map((t) => t.name.split('.')[0]))];
      const ckTops = [...new Set(all.map((t) => t.key.split('.').slice(0, t.key.startsWith('model.') ? 2 : 1).join('.')))];
      throw new Error(`unknown trainable prefix '${p}': no parameter of ${keymap.name} is named '${p}' or lies under it ` +
        `(module parts: ${tops.join(', ')}; checkpoint prefixes: ${ckTops.join(', ')})`);
    }
  }
  const picked = all.filter((t) => prefixes.some((p) => hit(t, p)));
  const frozen = picked.filter((t) => t.variables.length === 0);
  if (frozen.length) {
    throw new Error(`${frozen.length} selected parameter(s) are held natively (${frozen[0].param.storage.dtype}, outside tfjs) and cannot be trained, ` +
      `e.g. '${frozen[0].key}': train them with LoRA adapters (--lora-*) or load the model with --quantize f32`);
  }
  return picked;
}

/** Inverse permutation of a layout (memory axes → checkpoint axes), or null for 'same'. */
function inversePerm(layout: Param['layout']): number[] | null {
  const perm = layoutPerm(layout);
  if (!perm) return null;
  const inv = new Array<number>(perm.length);
  perm.forEach((p, i) => { inv[p] = i; });
  return inv;
}

/**
 * Per-chunk tensors in `param`'s memory layout (e.g. its gradients) → one tensor in checkpoint
 * layout and shape. The caller owns the result; the inputs are not disposed.
 */
export function toCheckpointTensor(param: Param, chunks: readonly tf.Tensor[]): tf.Tensor {
  const { layout } = param;
  const inv = inversePerm(layout);
  return tf.tidy(() => {
    const parts = chunks.map((c) => (inv ? tf.transpose(c, inv) : c));
    const out = parts.length === 1 ? parts[0].clone() : tf.concat(parts, 0);
    const want = param.shape;
    if (out.shape.length !== want.length || out.shape.some((d, i) => d !== want[i])) {
      throw new Error(`internal: chunks of a [${want}] parameter stack to [${out.shape}]`);
    }
    return out;
  });
}

/** Total number of scalars of a list of trainable parameters. */
export function countScalars(params: readonly TrainableParam[]): number {
  return params.reduce((a, t) => a + t.param.shape.reduce((x, y) => x * y, 1), 0);
}
