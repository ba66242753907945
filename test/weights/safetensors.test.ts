import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { Linear } from '../../layers/linear';
import { Module, Param, register } from '../../layers/module';
import { Checkpoint } from '../../weights/checkpoint';
import { loadWeights, readParam, permuteHost } from '../../weights/load';
import { SafetensorsFile, floatToHalf, halfToFloat, writeSafetensors } from '../../weights/safetensors';

let dir: string;
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vlm-st-'));
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

/** Writes raw bytes: u64 header length + header JSON + data. */
function rawFile(name: string, header: unknown, data: Buffer, lenOverride?: bigint): string {
  const json = Buffer.from(JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(lenOverride ?? BigInt(json.length));
  const p = path.join(dir, name);
  fs.writeFileSync(p, Buffer.concat([len, json, data]));
  return p;
}

describe('safetensors reader/writer', () => {
  it('round-trips every dtype', () => {
    const p = path.join(dir, 'all.safetensors');
    writeSafetensors(p, {
      f32: { dtype: 'F32', shape: [2, 2], data: [1.5, -2, 3.25, 0] },
      f16: { dtype: 'F16', shape: [3], data: [1, -0.5, 65504] },
      bf16: { dtype: 'BF16', shape: [2], data: [1, -3.5] },
      i64: { dtype: 'I64', shape: [3], data: [-1, 0, 2147483647] },
      i32: { dtype: 'I32', shape: [1], data: [-7] },
      u8: { dtype: 'U8', shape: [2], data: [0, 255] },
      bool: { dtype: 'BOOL', shape: [2], data: [1, 0] },
      empty: { dtype: 'F32', shape: [0, 3], data: [] },
    }, { format: 'pt' });
    const f = SafetensorsFile.open(p);
    expect(f.metadata).toEqual({ format: 'pt' });
    expect(Array.from(f.read('f32').data)).toEqual([1.5, -2, 3.25, 0]);
    expect(Array.from(f.read('f16').data)).toEqual([1, -0.5, 65504]);
    expect(Array.from(f.read('bf16').data)).toEqual([1, -3.5]);
    expect(f.read('i64')).toMatchObject({ dtype: 'int32' });
    expect(Array.from(f.read('i64').data)).toEqual([-1, 0, 2147483647]);
    expect(Array.from(f.read('i32').data)).toEqual([-7]);
    expect(Array.from(f.read('u8').data)).toEqual([0, 255]);
    expect(f.read('bool').dtype).toBe('bool');
    expect(f.read('empty').shape).toEqual([0, 3]);
    expect(Array.from(f.readRows('f32', 1, 2).data)).toEqual([3.25, 0]);
    f.close();
  });

  it('F16 conversion is exact both ways (subnormals, inf, rounding to even)', () => {
    for (const h of [0x0001, 0x03ff, 0x0400, 0x3c00, 0x7bff, 0x7c00, 0xfc00, 0x8001]) expect(floatToHalf(halfToFloat(h))).toBe(h);
    expect(floatToHalf(1 + 2 ** -11)).toBe(0x3c00); // tie → even
    expect(floatToHalf(1 + 3 * 2 ** -11)).toBe(0x3c02);
    expect(Number.isNaN(halfToFloat(0x7e00))).toBe(true);
  });

  it('rejects an I64 value that does not fit int32, naming the tensor', () => {
    const p = path.join(dir, 'big.safetensors');
    writeSafetensors(p, { ids: { dtype: 'I64', shape: [1], data: [BigInt(2) ** BigInt(40)] } });
    const f = SafetensorsFile.open(p);
    expect(() => f.read('ids')).toThrow(/'ids'.*does not fit in int32/);
    f.close();
  });

  const f32 = (n: number) => Buffer.from(new Float32Array(n).buffer);
  const bad: [string, () => string, RegExp][] = [
    ['missing file', () => path.join(dir, 'nope.safetensors'), /nope\.safetensors: cannot open \(ENOENT\)/],
    ['empty file', () => { const p = path.join(dir, 'empty.safetensors'); fs.writeFileSync(p, ''); return p; }, /empty\.safetensors: not a safetensors file \(0 bytes/],
    ['header length beyond the file', () => rawFile('hlen.safetensors', { a: 1 }, Buffer.alloc(0), 1000n), /hlen\.safetensors: truncated: header length 1000 needs 1008 bytes, the file has/],
    ['absurd header length', () => rawFile('huge.safetensors', {}, Buffer.alloc(0), 2n ** 60n), /huge\.safetensors: header length \d+ is larger than/],
    ['header not JSON', () => { const p = path.join(dir, 'nojson.safetensors'); const b = Buffer.alloc(12); b.writeBigUInt64LE(4n); b.write('{{{{', 8); fs.writeFileSync(p, b); return p; }, /nojson\.safetensors: header is not valid JSON/],
    ['unknown dtype', () => rawFile('dtype.safetensors', { w: { dtype: 'Q4', shape: [1], data_offsets: [0, 1] } }, Buffer.alloc(1)), /dtype\.safetensors: tensor 'w': unsupported dtype 'Q4'/],
    ['bad shape', () => rawFile('shape.safetensors', { w: { dtype: 'F32', shape: [-1], data_offsets: [0, 4] } }, f32(1)), /tensor 'w': shape \[-1\] is not a list/],
    ['offsets inconsistent with shape', () => rawFile('off.safetensors', { w: { dtype: 'F32', shape: [2, 2], data_offsets: [0, 12] } }, f32(4)), /tensor 'w': data_offsets \[0, 12\] hold 12 bytes, but F32 \[2,2\] needs 16/],
    ['truncated data', () => rawFile('trunc.safetensors', { w: { dtype: 'F32', shape: [4], data_offsets: [0, 16] } }, f32(2)), /trunc\.safetensors: tensor 'w': truncated file: the tensor ends at data byte 16, the data section has 8 bytes/],
    ['overlapping tensors', () => rawFile('overlap.safetensors', { a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'F32', shape: [2], data_offsets: [4, 12] } }, f32(3)), /tensors 'a' and 'b' overlap/],
  ];
  for (const [what, make, msg] of bad) {
    it(`clear error: ${what}`, () => {
      expect(() => SafetensorsFile.open(make())).toThrow(msg);
    });
  }

  it('write is atomic: a failed write leaves no file behind', () => {
    const p = path.join(dir, 'atomic.safetensors');
    expect(() => writeSafetensors(p, { w: { dtype: 'F32', shape: [3], data: [1, 2] } })).toThrow(/'w': 2 values for shape \[3\]/);
    expect(fs.existsSync(p)).toBe(false);
    expect(fs.readdirSync(dir).filter((f) => f.includes('atomic'))).toEqual([]);
  });
});

describe('sharded checkpoints', () => {
  it('reads through model.safetensors.index.json and checks the index', () => {
    const d = fs.mkdtempSync(path.join(dir, 'ck-'));
    writeSafetensors(path.join(d, 'a.safetensors'), { x: { dtype: 'F32', shape: [1], data: [1] } });
    writeSafetensors(path.join(d, 'b.safetensors'), { y: { dtype: 'BF16', shape: [1], data: [2] } });
    fs.writeFileSync(path.join(d, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { x: 'a.safetensors', y: 'b.safetensors' } }));
    const ck = Checkpoint.open(d);
    expect(ck.keys().sort()).toEqual(['x', 'y']);
    expect(Array.from(ck.read('y').data)).toEqual([2]);
    expect(ck.shardOf('y')).toBe(path.join(d, 'b.safetensors'));
    ck.close();
    fs.writeFileSync(path.join(d, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { x: 'a.safetensors', y: 'c.safetensors' } }));
    expect(() => Checkpoint.open(d)).toThrow(/shard 'c\.safetensors' is listed but .* does not exist/);
    fs.writeFileSync(path.join(d, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { x: 'a.safetensors', z: 'b.safetensors' } }));
    expect(() => Checkpoint.open(d)).toThrow(/tensor 'z' is mapped to b\.safetensors, which does not contain it/);
  });
  it('names the directory when no weights are there', () => {
    const d = fs.mkdtempSync(path.join(dir, 'none-'));
    expect(() => Checkpoint.open(d)).toThrow(/no model\.safetensors or model\.safetensors\.index\.json/);
  });
});

class Tiny extends Module {
  static className = 'TinyTest';
  proj = new Linear(3, 2, { bias: true });
  scale = new Param([2]);
}
register(Tiny);

describe('strict loading', () => {
  const good = () => ({
    'proj.weight': { dtype: 'F32' as const, shape: [2, 3], data: [1, 2, 3, 4, 5, 6] },
    'proj.bias': { dtype: 'F32' as const, shape: [2], data: [0.5, -0.5] },
    'scale': { dtype: 'F16' as const, shape: [2], data: [2, 3] },
  });
  const load = (tensors: Record<string, { dtype: 'F32' | 'F16' | 'I64'; shape: number[]; data: number[] }>) => {
    const p = path.join(dir, `tiny-${Math.random()}.safetensors`);
    writeSafetensors(p, tensors);
    const m = new Tiny();
    const ck = Checkpoint.open(p);
    try {
      loadWeights(m, [{ checkpoint: ck, keymap: { name: 't', renames: [], ignore: [/^ignored\./] } }]);
      return m;
    } finally {
      ck.close();
    }
  };

  it('loads by name and computes torch Linear semantics', () => {
    const m = load({ ...good(), 'ignored.buffer': { dtype: 'F32', shape: [1], data: [0] } });
    const y = m.proj.forward(tf.tensor2d([[1, 1, 1]]));
    expect(Array.from(y.dataSync())).toEqual([6.5, 14.5]); // [1+2+3+.5, 4+5+6-.5]
    expect(readParam(m.proj.weight)).toEqual({ data: Float32Array.from([1, 2, 3, 4, 5, 6]), shape: [2, 3] });
    expect(Array.from(m.scale.value.dataSync())).toEqual([2, 3]);
    y.dispose();
    m.dispose();
  });

  it('reports missing, unexpected and wrong-shape keys together, with shard and shapes', () => {
    const t = good() as Record<string, { dtype: 'F32' | 'F16' | 'I64'; shape: number[]; data: number[] }>;
    delete t['proj.bias'];
    t['extra.weight'] = { dtype: 'F32', shape: [1], data: [0] };
    t['scale'] = { dtype: 'F32', shape: [3], data: [1, 2, 3] };
    let msg = '';
    try { load(t); } catch (e) { msg = (e as Error).message; }
    expect(msg).toMatch(/1 missing, 1 unexpected, 1 wrong-shape/);
    expect(msg).toMatch(/missing: 'proj\.bias' in .*tiny-.*\.safetensors \(shape \[2\]\)/);
    expect(msg).toMatch(/unexpected: 'extra\.weight' in .*tiny-.*\.safetensors/);
    expect(msg).toMatch(/wrong shape: 'scale' in .*\.safetensors is \[3\], TinyTest expects \[2\]/);
  });

  it('rejects integer tensors for float parameters', () => {
    expect(() => load({ ...good(), scale: { dtype: 'I64', shape: [2], data: [1, 2] } })).toThrow(/wrong dtype: 'scale' .* is I64/);
  });
});

describe('host layout transforms', () => {
  it('permuteHost matches tf.transpose', () => {
    const x = tf.randomNormal([2, 3, 4, 5]);
    const got = permuteHost(x.dataSync() as Float32Array, [2, 3, 4, 5], [2, 3, 1, 0]);
    const want = tf.transpose(x, [2, 3, 1, 0]);
    expect(Array.from(got)).toEqual(Array.from(want.dataSync()));
    tf.dispose([x, want]);
  });
});

describe('wasm byte budget', () => {
  it('refuses to load weights past the budget with a clear message (never a silent heap overflow)', () => {
    if (tf.getBackend() !== 'wasm') return;
    const p = path.join(dir, 'budget.safetensors');
    writeSafetensors(p, {
      'proj.weight': { dtype: 'F32', shape: [2, 3], data: [1, 2, 3, 4, 5, 6] },
      'proj.bias': { dtype: 'F32', shape: [2], data: [0, 0] },
      scale: { dtype: 'F32', shape: [2], data: [1, 1] },
    });
    const prev = process.env.VLM_WASM_BUDGET_MB;
    process.env.VLM_WASM_BUDGET_MB = '0.000001';
    const ck = Checkpoint.open(p);
    try {
      expect(() => loadWeights(new Tiny(), [{ checkpoint: ck, keymap: { name: 't', renames: [], ignore: [] } }])).toThrow(/loading TinyTest .*needs .* GB more on the wasm heap.*budget/);
    } finally {
      ck.close();
      if (prev === undefined) delete process.env.VLM_WASM_BUDGET_MB;
      else process.env.VLM_WASM_BUDGET_MB = prev;
    }
  });
});
