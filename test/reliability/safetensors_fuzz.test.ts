/**
 * Item 6 of the reliability issue: a safetensors file is accepted only when its tensors tile the
 * data section exactly (as the reference reader's Metadata::validate + read_metadata), and a
 * seeded fuzz of mutated headers never crashes, hangs or loads shifted data.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { Rng } from '../../generation/sampling';
import { SafetensorsError, SafetensorsFile, writeSafetensors } from '../../weights/safetensors';

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vlm-stfuzz-'));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function original(): Buffer {
  const f = path.join(tmp, 'orig.safetensors');
  writeSafetensors(f, {
    'a.weight': { dtype: 'F32', shape: [3, 5], data: Float32Array.from({ length: 15 }, (_, i) => i * 0.5 - 3) },
    'b.bias': { dtype: 'F16', shape: [7], data: Float32Array.from({ length: 7 }, (_, i) => i - 2) },
    ids: { dtype: 'I64', shape: [2, 2], data: [1, -2, 3, 40000] },
    mask: { dtype: 'U8', shape: [9], data: [1, 0, 1, 1, 0, 0, 1, 2, 3] },
  }, { format: 'pt' });
  return fs.readFileSync(f);
}

function withLength(buf: Buffer, hlen: number): Buffer {
  const b = Buffer.from(buf);
  b.writeBigUInt64LE(BigInt(hlen), 0);
  return b;
}

function rebuild(header: Record<string, unknown>, data: Buffer): Buffer {
  let json = Buffer.from(JSON.stringify(header));
  const pad = (8 - ((8 + json.length) % 8)) % 8;
  json = Buffer.concat([json, Buffer.alloc(pad, 0x20)]);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  return Buffer.concat([len, json, data]);
}

describe('safetensors: the tensors must tile the data section (reference validate)', () => {
  const orig = () => original();
  const hlen = (b: Buffer) => Number(b.readBigUInt64LE(0));

  it('a header length lowered into the space padding is an error, not a shifted load', () => {
    const b = orig();
    const f = path.join(tmp, 'shift.safetensors');
    const h = hlen(b);
    const text = b.toString('latin1', 8, 8 + h);
    const padding = text.length - text.trimEnd().length;
    for (let k = 1; k <= Math.max(padding, 1); k++) {
      fs.writeFileSync(f, withLength(b, h - k));
      expect(() => SafetensorsFile.open(f)).toThrow(SafetensorsError);
      expect(() => SafetensorsFile.open(f)).toThrow(f);
    }
  });

  it('trailing bytes after the data section are refused', () => {
    const f = path.join(tmp, 'trail.safetensors');
    fs.writeFileSync(f, Buffer.concat([orig(), Buffer.alloc(4096)]));
    expect(() => SafetensorsFile.open(f)).toThrow(/trailing byte/);
  });

  it('a gap between tensors is refused', () => {
    const b = orig();
    const header = JSON.parse(b.toString('utf8', 8, 8 + hlen(b)));
    const data = b.subarray(8 + hlen(b));
    // move the last tensor 4 bytes further, with 4 more bytes of data
    const last = Object.entries(header).filter(([k]) => k !== '__metadata__').sort((x: any, y: any) => y[1].data_offsets[0] - x[1].data_offsets[0])[0][1] as { data_offsets: number[] };
    last.data_offsets = [last.data_offsets[0] + 4, last.data_offsets[1] + 4];
    const f = path.join(tmp, 'gap.safetensors');
    fs.writeFileSync(f, rebuild(header, Buffer.concat([data, Buffer.alloc(4)])));
    expect(() => SafetensorsFile.open(f)).toThrow(/gap/);
  });

  it("a header that does not start with '{' or is not UTF-8 is refused", () => {
    const b = orig();
    const f = path.join(tmp, 'start.safetensors');
    const c = Buffer.from(b);
    c[8] = 0x20;
    fs.writeFileSync(f, c);
    expect(() => SafetensorsFile.open(f)).toThrow(/start with '\{'/);
    const d = Buffer.from(b);
    d[8 + hlen(b) - 1] = 0xff;
    fs.writeFileSync(f, d);
    expect(() => SafetensorsFile.open(f)).toThrow(SafetensorsError);
  });

  it('a FIFO is refused without blocking', () => {
    const f = path.join(tmp, 'fifo.safetensors');
    require('node:child_process').execFileSync('mkfifo', [f]);
    expect(() => SafetensorsFile.open(f)).toThrow(/not a regular file/);
  });
});

describe('safetensors fuzz (seeded)', () => {
  it('1,500 mutated headers: a clear error naming the file, or byte-identical tensors', () => {
    const b = original();
    const h = Number(b.readBigUInt64LE(0));
    const header = JSON.parse(b.toString('utf8', 8, 8 + h)) as Record<string, any>;
    const data = b.subarray(8 + h);
    const ref = SafetensorsFile.open(path.join(tmp, 'orig.safetensors'));
    const byRange = new Map<string, Buffer>();
    for (const k of ref.keys()) {
      const e = ref.entry(k);
      byRange.set(`${e.begin - 8 - h}:${e.end - 8 - h}`, ref.readBytes(k));
    }
    ref.close();
    const rng = new Rng(20240607);
    const int = (n: number) => Math.floor(rng.random() * n);
    const names = Object.keys(header).filter((k) => k !== '__metadata__');
    const dtypes = ['F64', 'F32', 'F16', 'BF16', 'I64', 'I32', 'I16', 'I8', 'U8', 'BOOL', 'X9'];
    const f = path.join(tmp, 'fuzz.safetensors');
    const counts = { error: 0, identical: 0 };
    const t0 = Date.now();
    for (let i = 0; i < 1500; i++) {
      let m: Buffer;
      const kind = i % 5;
      if (kind === 0) {
        m = Buffer.from(b);
        const nflip = 1 + int(3);
        for (let j = 0; j < nflip; j++) m[int(8 + h)] ^= 1 << int(8);
      } else if (kind === 1) {
        const delta = [-64, -16, -8, -7, -5, -3, -2, -1, 1, 2, 3, 7, 8, 16, 1e6][int(15)];
        m = withLength(b, Math.max(0, h + delta));
      } else if (kind === 2) {
        m = rng.random() < 0.5 ? Buffer.concat([b, Buffer.alloc(1 + int(4096))]) : b.subarray(0, b.length - 1 - int(16));
      } else {
        const hd = JSON.parse(JSON.stringify(header));
        const t = hd[names[int(names.length)]];
        const what = int(3);
        if (what === 0) {
          const j = int(2);
          t.data_offsets[j] += [-8, -4, -2, -1, 1, 2, 4, 8][int(8)];
          if (rng.random() < 0.5) t.data_offsets[1 - j] = t.data_offsets[j] + (j === 0 ? 1 : -1) * (t.data_offsets[1] - t.data_offsets[0]);
        } else if (what === 1) {
          t.dtype = dtypes[int(dtypes.length)];
        } else {
          const s = t.shape as number[];
          if (s.length && rng.random() < 0.6) s[int(s.length)] += [-1, 1, 2][int(3)];
          else if (rng.random() < 0.5) s.push(1 + int(2));
          else s.reverse();
        }
        m = rebuild(hd, data);
      }
      fs.writeFileSync(f, m);
      let file: SafetensorsFile | undefined;
      try {
        file = SafetensorsFile.open(f);
        for (const k of file.keys()) {
          const e = file.entry(k);
          const hl = Number(m.readBigUInt64LE(0));
          const want = byRange.get(`${e.begin - 8 - hl}:${e.end - 8 - hl}`);
          expect(want).toBeDefined();
          const got = file.readBytes(k);
          expect(Buffer.compare(got, want!)).toBe(0);
          file.read(k);
        }
        counts.identical++;
      } catch (e) {
        if (!(e instanceof SafetensorsError)) throw new Error(`mutation ${i} (kind ${kind}): ${(e as Error).name}: ${(e as Error).message}`);
        expect((e as Error).message).toContain(f);
        counts.error++;
      } finally {
        file?.close();
      }
    }
    expect(counts.error + counts.identical).toBe(1500);
    expect(counts.error).toBeGreaterThan(500);
    expect(Date.now() - t0).toBeLessThan(60_000);
  });
});
