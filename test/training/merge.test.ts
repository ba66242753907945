/**
 * `vlm merge` streams the base checkpoint (training/merge.ts): on a sharded bf16 base the adapted
 * weights equal bf16(W + s·B·A) computed here independently, `modules_to_save` tensors are the
 * adapter's, every other tensor is byte-identical, the shard files and the index are the base's;
 * a mismatched adapter is refused naming modules; nothing is left behind on error.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { runCommand } from '../helpers/cli';
import { command as mergeCmd } from '../../scripts/merge';
import { Checkpoint } from '../../weights/checkpoint';
import { SafetensorsFile, WriteTensor, writeSafetensors } from '../../weights/safetensors';
import { kaimingUniform } from '../../training/lora';
import { trainFixture } from './helpers';

const vq = trainFixture('videollama2_siglip_qwen2_tiny');
let tmp: string;
let base: string;
const R = 3, ALPHA = 5;
const Q = /^model\.layers\.\d+\.self_attn\.q_proj\.weight$/;

/** bf16 bits of a float32 (round to nearest even), as torch rounds. */
function bf16(x: number): number {
  const u = new Uint32Array(new Float32Array([x]).buffer)[0];
  return (u + 0x7fff + ((u >>> 16) & 1)) >>> 16;
}

function writeAdapter(dir: string, modules: string[], shapes: Map<string, number[]>, extra: Record<string, WriteTensor> = {}, cfg: Record<string, unknown> = {}): void {
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'adapter_config.json'), JSON.stringify({
    peft_type: 'LORA', r: R, lora_alpha: ALPHA, lora_dropout: 0, target_modules: ['q_proj'], bias: 'none', use_rslora: false,
    modules_to_save: Object.keys(extra).length ? ['model.mm_projector'] : null, task_type: 'CAUSAL_LM', ...cfg,
  }));
  const t: Record<string, WriteTensor> = {};
  modules.forEach((m, i) => {
    const [out, inn] = shapes.get(`${m}.weight`)!;
    t[`base_model.model.${m}.lora_A.weight`] = { dtype: 'F32', shape: [R, inn], data: kaimingUniform(R, inn, 10 + i) };
    t[`base_model.model.${m}.lora_B.weight`] = { dtype: 'F32', shape: [out, R], data: kaimingUniform(out, R, 50 + i) };
  });
  writeSafetensors(path.join(dir, 'adapter_model.safetensors'), { ...t, ...extra });
}

beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vlm-merge-'));
  // the tiny fixture as a two-shard bf16 checkpoint with an index
  base = path.join(tmp, 'base');
  fs.mkdirSync(base);
  for (const f of fs.readdirSync(vq.model)) {
    const s = path.join(vq.model, f);
    if (f.endsWith('.safetensors') || f === 'model.safetensors.index.json') continue;
    if (fs.statSync(s).isFile()) fs.copyFileSync(s, path.join(base, f));
    else fs.cpSync(s, path.join(base, f), { recursive: true });
  }
  const ck = Checkpoint.open(vq.model);
  const keys = ck.keys().sort();
  const half = Math.floor(keys.length / 2);
  const weightMap: Record<string, string> = {};
  [keys.slice(0, half), keys.slice(half)].forEach((part, i) => {
    const name = `model-0000${i + 1}-of-00002.safetensors`;
    const t: Record<string, WriteTensor> = {};
    for (const k of part) {
      const h = ck.read(k);
      t[k] = { dtype: h.dtype === 'float32' ? 'BF16' : 'I64', shape: h.shape, data: h.data };
      weightMap[k] = name;
    }
    writeSafetensors(path.join(base, name), t, { format: 'pt' });
  });
  ck.close();
  fs.writeFileSync(path.join(base, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('vlm merge (streamed)', () => {
  it('bf16 base: adapted = bf16(W + s·B·A), modules_to_save from the adapter, the rest byte-identical, same shards and index', async () => {
    const src = Checkpoint.open(base);
    const shapes = new Map(src.keys().map((k) => [k, src.entry(k).shape]));
    const modules = src.keys().filter((k) => Q.test(k)).map((k) => k.slice(0, -'.weight'.length)).sort();
    expect(modules.length).toBeGreaterThan(0);
    const projKey = src.keys().find((k) => k.startsWith('model.mm_projector.') && shapes.get(k)!.length === 2)!;
    const ps = shapes.get(projKey)!;
    const projVals = kaimingUniform(ps[0], ps[1], 99);
    const adapter = path.join(tmp, 'adapter');
    writeAdapter(adapter, modules, shapes, { [`base_model.model.${projKey}`]: { dtype: 'F32', shape: ps, data: projVals } });
    const out = path.join(tmp, 'merged');
    await runCommand(mergeCmd, ['--model', base, '--adapter', adapter, '--out', out]);
    expect(fs.readdirSync(out).filter((f) => f.endsWith('.safetensors')).sort()).toEqual(['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors']);
    expect(fs.readFileSync(path.join(out, 'model.safetensors.index.json'), 'utf8')).toBe(fs.readFileSync(path.join(base, 'model.safetensors.index.json'), 'utf8'));
    const dst = Checkpoint.open(out);
    const ad = SafetensorsFile.open(path.join(adapter, 'adapter_model.safetensors'));
    try {
      const s = ALPHA / R;
      for (const k of src.keys()) {
        expect(dst.entry(k).dtype).toBe(src.entry(k).dtype);
        const got = dst.readBytes(k);
        const name = k.slice(0, -'.weight'.length);
        if (modules.includes(name)) {
          const W = src.read(k).data as Float32Array;
          const A = ad.read(`base_model.model.${name}.lora_A.weight`).data as Float32Array;
          const B = ad.read(`base_model.model.${name}.lora_B.weight`).data as Float32Array;
          const [out_, in_] = shapes.get(k)!;
          const bits = new Uint16Array(got.buffer, got.byteOffset, got.length / 2);
          let off = 0;
          for (let o = 0; o < out_; o++) {
            for (let i = 0; i < in_; i++) {
              let d = 0;
              for (let r = 0; r < R; r++) d += B[o * R + r] * A[r * in_ + i];
              const want = bf16(W[o * in_ + i] + Math.fround(Math.fround(d) * s));
              if (Math.abs(bits[o * in_ + i] - want) > 1) off++; // float32 sum order may move the last bf16 bit
            }
          }
          expect(off).toBe(0);
        } else if (k === projKey) {
          const bits = new Uint16Array(got.buffer, got.byteOffset, got.length / 2);
          expect(Array.from(bits)).toEqual(Array.from(projVals, bf16));
        } else {
          expect(got.equals(src.readBytes(k))).toBe(true);
        }
      }
    } finally {
      src.close();
      dst.close();
      ad.close();
    }
  });

  it('refuses an adapter that does not fit, naming modules and shapes; leaves nothing behind', async () => {
    const src = Checkpoint.open(base);
    const shapes = new Map(src.keys().map((k) => [k, src.entry(k).shape]));
    const modules = src.keys().filter((k) => Q.test(k)).map((k) => k.slice(0, -'.weight'.length)).sort();
    src.close();
    const wrongName = path.join(tmp, 'wrong_name');
    writeAdapter(wrongName, modules.slice(1), shapes);
    const out = path.join(tmp, 'never');
    await expect(runCommand(mergeCmd, ['--model', base, '--adapter', wrongName, '--out', out])).rejects.toThrow(/the adapter lacks: model\.layers\.0\.self_attn\.q_proj/);
    const wrongShape = path.join(tmp, 'wrong_shape');
    const bad = new Map(shapes);
    bad.set(`${modules[0]}.weight`, [shapes.get(`${modules[0]}.weight`)![0], 7]);
    writeAdapter(wrongShape, modules, bad);
    await expect(runCommand(mergeCmd, ['--model', base, '--adapter', wrongShape, '--out', out])).rejects.toThrow(/lora_A is \[3,7\].*needs/);
    expect(fs.existsSync(out)).toBe(false);
    expect(fs.readdirSync(tmp).filter((n) => n.includes('.partial-'))).toEqual([]);
  });
});
