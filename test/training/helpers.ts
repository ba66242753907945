/**
 * Training-golden helpers: where each fixture's model, data, tokenizer and goldens are (bundled
 * copies first, ../shared for the full goldens), and the README's gradient metric:
 * per tensor max|ours − golden| ≤ 1e-3 · max|golden| + 1e-6 (the floor alone for gradients that are
 * analytically zero), with `@rows` goldens (vocabulary-sized gradients, rows of the used tokens).
 */
import * as tf from '@tensorflow/tfjs';
import { Golden, fixture, shared } from '../helpers/golden';
import { modelFixture } from '../helpers/fixtures';

export type TrainFx = 'minicpmv26_tiny' | 'videollama2_clip_mistral_tiny' | 'videollama2_siglip_qwen2_tiny';

export interface TrainFixture {
  name: TrainFx;
  /** Model directory (bundled copy). */
  model: string;
  /** Bundled trimmed training golden. */
  golden: string;
  /** The full golden in ../shared, or null. */
  fullGolden: string | null;
  /** Bundled sample.json and where its media resolve. */
  data: string;
  dataRoot: string;
  /** Tokenizer used by the upstream training run. */
  tokenizerDir: string;
}

export function trainFixture(name: TrainFx): TrainFixture {
  const model = modelFixture(name)!;
  const mc = name === 'minicpmv26_tiny';
  return {
    name,
    model,
    golden: fixture('training', name, 'train_golden.safetensors'),
    fullGolden: shared('fixtures', name, 'train', 'train_golden.safetensors'),
    data: fixture('training', name, 'sample.json'),
    dataRoot: mc ? fixture('preprocess', 'minicpmv26_tiny') : model,
    tokenizerDir: mc ? fixture('tokenizers', 'minicpmv26_tiny_train') : model,
  };
}

/** The README's per-tensor gradient check; returns max|a−b| / max|b| (or the abs error with `floorOnly`). */
export function expectGradClose(name: string, ours: ArrayLike<number>, ref: ArrayLike<number>, opts: { floorOnly?: boolean; rows?: { index: ArrayLike<number>; width: number } } = {}): number {
  let maxRef = 0, maxErr = 0, at = 0;
  const n = ref.length;
  for (let i = 0; i < n; i++) {
    const o = opts.rows ? ours[opts.rows.index[Math.floor(i / opts.rows.width)] * opts.rows.width + (i % opts.rows.width)] : ours[i];
    if (!Number.isFinite(o)) throw new Error(`${name}: non-finite gradient ${o} at ${i}`);
    maxRef = Math.max(maxRef, Math.abs(ref[i]));
    const e = Math.abs(o - ref[i]);
    if (e > maxErr) { maxErr = e; at = i; }
  }
  const bound = (opts.floorOnly ? 0 : 1e-3 * maxRef) + 1e-6;
  if (!(maxErr <= bound)) {
    throw new Error(`${name}: max|ours − golden| = ${maxErr.toExponential(3)} at ${at} > ${bound.toExponential(3)} (max|golden| ${maxRef.toExponential(3)})`);
  }
  return opts.floorOnly ? maxErr : maxRef > 0 ? maxErr / maxRef : maxErr;
}

/**
 * Checks every `grad.*` tensor of golden `g` against `grads` (checkpoint key → tensor): plain
 * names, `@rows` subsets; `zero` lists the analytically-zero ones (floor only), `slices` maps a key
 * to [start, end) ranges compared with the floor only. Returns the worst relative error and the
 * number of tensors checked.
 */
export function checkGrads(g: Golden, grads: Map<string, tf.Tensor>, zero: Record<string, [number, number] | 'all'> = {}): { worst: number; worstName: string; checked: number } {
  let worst = 0, worstName = '', checked = 0;
  for (const k of g.keys()) {
    if (!k.startsWith('grad.') || k.endsWith('@rows.index')) continue;
    const rowsMode = k.endsWith('@rows');
    const key = k.slice('grad.'.length, rowsMode ? -'@rows'.length : undefined);
    const t = grads.get(key);
    if (!t) throw new Error(`no gradient computed for '${key}' (golden ${k})`);
    const ours = t.dataSync();
    const ref = g.get(k).data as Float32Array;
    const z = zero[key];
    let rel: number;
    if (rowsMode) {
      rel = expectGradClose(k, ours, ref, { rows: { index: g.ints(`${k}.index`), width: t.shape[1] ?? 1 } });
    } else if (z === 'all') {
      expectGradClose(k, ours, ref, { floorOnly: true });
      rel = 0;
    } else if (z) {
      // the zero slice against the floor, the rest relatively (max over the rest)
      const mask = (i: number) => i >= z[0] && i < z[1];
      const pick = (a: ArrayLike<number>, inside: boolean) => Float32Array.from(Array.from(a).filter((_, i) => mask(i) === inside));
      expectGradClose(`${k}[${z[0]}:${z[1]}]`, pick(ours, true), pick(ref, true), { floorOnly: true });
      rel = expectGradClose(`${k} (outside [${z[0]}:${z[1]}])`, pick(ours, false), pick(ref, false));
    } else {
      rel = expectGradClose(k, ours, ref);
    }
    checked++;
    if (rel > worst) { worst = rel; worstName = k; }
  }
  return { worst, worstName, checked };
}

export function pairs(flat: number[]): [number, number][] {
  return Array.from({ length: flat.length / 2 }, (_, i) => [flat[2 * i], flat[2 * i + 1]] as [number, number]);
}


/**
 * Compares the trainer's parameters after AdamW steps with the golden `adamw3.<key>` tensors:
 * atol 1e-4 (README), except (a) `skip` ranges (the README's analytically-zero slices, whose
 * updates are driven by float32 round-off) and (b) "noise-driven" elements whose step-1 golden
 * gradient is below 1e-7 = 10·eps: there AdamW's m/(√v + eps) is decided by gradient round-off, so
 * they are only held to the largest move three steps can make (3·lr·(1 + wd) ≈ 3e-3).
 * Returns the max error over the regular elements and the number of noise-driven ones.
 */
export function checkAdamW3(g: Golden, params: readonly { key: string; value: ArrayLike<number> }[], gradOf: (key: string) => ArrayLike<number> | null, skip: Record<string, [number, number]> = {}): { maxErr: number; noise: number; noiseMaxErr: number; checked: number } {
  let maxErr = 0, noise = 0, noiseMaxErr = 0, checked = 0;
  for (const { key, value } of params) {
    const ref = g.get(`adamw3.${key}`).data as Float32Array;
    const grad = gradOf(key);
    const sk = skip[key];
    for (let i = 0; i < ref.length; i++) {
      if (sk && i >= sk[0] && i < sk[1]) continue;
      const e = Math.abs(value[i] - ref[i]);
      if (grad && Math.abs(grad[i]) < 1e-7) {
        noise++;
        noiseMaxErr = Math.max(noiseMaxErr, e);
        if (!(e <= 3.1e-3)) throw new Error(`adamw3.${key}[${i}] (noise-driven, |g| = ${Math.abs(grad[i]).toExponential(2)}): |ours − golden| = ${e.toExponential(3)}`);
        continue;
      }
      if (!(e <= 1e-4)) throw new Error(`adamw3.${key}[${i}]: |ours − golden| = ${e.toExponential(3)} > 1e-4 (ours ${value[i]}, golden ${ref[i]}, step-1 |g| ${grad ? Math.abs(grad[i]).toExponential(2) : '?'})`);
      maxErr = Math.max(maxErr, e);
    }
    checked++;
  }
  return { maxErr, noise, noiseMaxErr, checked };
}
