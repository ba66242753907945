/**
 * Correctness at real dimensions (issue "real checkpoints", point 5): on a checkpoint with the real
 * widths (e.g. `vlm make-random --family minicpmv --llm-layers 2 --vision-layers 2`, bf16), compare
 *   - `vlm trace` with the weights as stored (native bf16, wasm) against the float32 path on the same
 *     upcast weights (tfjs float32 on the cpu backend, which holds them in RAM, with its matmuls on
 *     OpenBLAS sgemm: VLM_CPU_BLAS=1): every traced tensor;
 *   - `--quantize q8_0` / `q4_0` / `f16` against the same float32 reference: every traced tensor;
 *   - greedy ids over N steps for each storage against the float32 ones (top-1 agreement).
 * Each run is a separate `vlm` process (backends cannot be mixed in one).
 *
 *   node dist/bench/realsize_check.js DIR IMAGE [--steps 32] [--storages stored,q8_0,q4_0] [--reference f32|stored]
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { SafetensorsFile } from '../weights/safetensors';

const VLM = path.join(__dirname, '..', 'bin', 'vlm.js');
const vlmBin = fs.existsSync(VLM) ? VLM : path.join(__dirname, '..', '..', 'bin', 'vlm.js');

function vlm(args: string[], env: Record<string, string> = {}): string {
  const r = spawnSync(process.execPath, [vlmBin, ...args], { encoding: 'utf8', maxBuffer: 1 << 26, env: { ...process.env, ...env } });
  if (r.status !== 0) throw new Error(`vlm ${args.join(' ')} failed (${r.status}): ${(r.stderr || '').trim().split('\n').slice(-3).join(' | ')}`);
  return r.stdout;
}

/**
 * Per tensor: max |a − b| / max |b| (the goldens' relative error) and ‖a − b‖ / ‖b‖ (the relative
 * rms error, which a few outlying elements do not decide).
 */
function compareTraces(fileA: string, fileB: string): { max: Record<string, number>; rms: Record<string, number> } {
  const a = SafetensorsFile.open(fileA), b = SafetensorsFile.open(fileB);
  const max: Record<string, number> = {}, rms: Record<string, number> = {};
  try {
    for (const k of b.keys()) {
      if (!a.has(k)) continue;
      const x = a.read(k).data, y = b.read(k).data;
      if (!(y instanceof Float32Array)) continue;
      let d = 0, m = 0, d2 = 0, y2 = 0;
      for (let i = 0; i < y.length; i++) {
        const e = (x as Float32Array)[i] - y[i];
        d = Math.max(d, Math.abs(e));
        m = Math.max(m, Math.abs(y[i]));
        d2 += e * e;
        y2 += y[i] * y[i];
      }
      max[k] = d / (m || 1);
      rms[k] = Math.sqrt(d2 / (y2 || 1));
    }
  } finally {
    a.close();
    b.close();
  }
  return { max, rms };
}

function main(): void {
  const [dir, image, ...rest] = process.argv.slice(2);
  if (!dir || !image) throw new Error('usage: realsize_check DIR IMAGE [--steps 32] [--storages stored,q8_0,q4_0] [--json]');
  const opt = (k: string, d: string) => { const i = rest.indexOf(k); return i >= 0 ? rest[i + 1] : d; };
  const steps = opt('--steps', '32');
  const storages = opt('--storages', 'stored,q8_0,q4_0').split(',');
  // the float32 reference runs tfjs float32 on the cpu backend (RAM-sized tensors) with OpenBLAS
  // matmuls (the pure-JS ones took > 25 min at 2+2 real-size layers); `--reference stored`
  // compares against the as-stored native run instead
  const reference = opt('--reference', 'f32');
  const refEnv: Record<string, string> = reference === 'f32' ? { VLM_BACKEND: 'cpu', VLM_CPU_BLAS: '1' } : {};
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'realsize-'));
  const prompt = 'What is in the image?';
  const log = (s: string) => process.stderr.write(`${s}\n`);
  const result: Record<string, unknown> = { model: path.resolve(dir), steps: Number(steps) };
  try {
    const ref = path.join(tmp, 'f32.safetensors');
    log(`reference: --quantize ${reference}${reference === 'f32' ? ' (cpu backend, tfjs float32, OpenBLAS matmuls)' : ''}…`);
    vlm(['trace', '--model', dir, '--image', image, '--prompt', prompt, '--quantize', reference, '--out', ref], refEnv);
    const refIds: number[] = JSON.parse(vlm(['chat', '--model', dir, '--image', image, '--prompt', prompt, '--greedy', '--max-new-tokens', steps, '--json', '--quantize', reference], refEnv)).token_ids;
    result.reference = reference;
    result.reference_ids = refIds;
    for (const s of storages) {
      log(`${s}…`);
      const f = path.join(tmp, `${s}.safetensors`);
      vlm(['trace', '--model', dir, '--image', image, '--prompt', prompt, '--quantize', s, '--out', f]);
      const errs = compareTraces(f, ref);
      const ids: number[] = JSON.parse(vlm(['chat', '--model', dir, '--image', image, '--prompt', prompt, '--greedy', '--max-new-tokens', steps, '--json', '--quantize', s])).token_ids;
      let same = 0;
      while (same < Math.min(ids.length, refIds.length) && ids[same] === refIds[same]) same++;
      const agree = ids.filter((t, i) => t === refIds[i]).length;
      const worst = Math.max(...Object.values(errs.max)), worstRms = Math.max(...Object.values(errs.rms));
      result[s] = { max_rel_err: errs.max, rms_rel_err: errs.rms, worst, worst_rms: worstRms, ids, identical_prefix: same, top1_agreement: agree / refIds.length };
      log(`${s}: worst ${worst.toExponential(2)} (rms ${worstRms.toExponential(2)}), greedy ids equal for the first ${same}/${refIds.length}`);
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
  process.stdout.write(JSON.stringify(result) + '\n');
}

main();
