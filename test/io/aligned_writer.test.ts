/**
 * io/aligned_writer.ts: the bytes are the caller's, in order, and every write but the last lands at a
 * 4 MiB-aligned offset with a length of whole 4 MiB blocks (so the page cache holds the file in 2 MiB
 * folios that a read-only mapping maps in huge pages). GGUF copies, random checkpoints, merges and
 * exports go through it.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { AlignedWriter } from '../../io/aligned_writer';

const MiB = 2 ** 20;

let tmp: string;
beforeAll(() => { tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vlm-aligned-')); });
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function pattern(n: number, seed: number): Uint8Array {
  const b = new Uint8Array(n);
  let x = seed;
  for (let i = 0; i < n; i++) { x = (x * 1103515245 + 12345) >>> 0; b[i] = x >>> 24; }
  return b;
}

describe('AlignedWriter', () => {
  it.each([
    ['a header then 4 MiB chunks (each straddling a boundary)', [4000, 4 * MiB, 4 * MiB, 4 * MiB, 123]],
    ['one write of several blocks plus a tail', [9 * MiB + 17]],
    ['exact blocks', [4 * MiB, 4 * MiB]],
    ['small writes and empty ones', [1, 0, 7, 4 * MiB - 8, 0, 3, 5 * MiB]],
    ['nothing', []],
  ])('%s', (_name, sizes) => {
    const file = path.join(tmp, `f${sizes.length}-${sizes[0] ?? 0}.bin`);
    const parts = sizes.map((n, i) => pattern(n, i + 1));
    const calls: { pos: number; len: number }[] = [];
    const real = fs.writeSync;
    const spy = jest.spyOn(fs, 'writeSync').mockImplementation(((fd: number, b: Uint8Array, off: number, len: number, pos: number) => {
      calls.push({ pos, len });
      return (real as (...a: unknown[]) => number)(fd, b, off, len, pos);
    }) as typeof fs.writeSync);
    const fd = fs.openSync(file, 'w');
    let w: AlignedWriter;
    try {
      w = new AlignedWriter(fd);
      for (const p of parts) w.write(p);
      w.end();
    } finally {
      fs.closeSync(fd);
      spy.mockRestore();
    }
    const total = sizes.reduce((a, b) => a + b, 0);
    expect(w.position).toBe(total);
    expect(Buffer.compare(fs.readFileSync(file), Buffer.concat(parts))).toBe(0);
    calls.forEach((c, i) => {
      expect(c.pos % (4 * MiB)).toBe(0);
      if (i < calls.length - 1) expect(c.len % (4 * MiB)).toBe(0);
    });
    expect(calls.reduce((a, c) => a + c.len, 0)).toBe(total);
  });
});
