/**
 * Native weights (tfjs-blas addon): GGML q8_0/q4_0 quantizers bit for bit, f16/bf16 conversion,
 * matmul / matmulT / gather / dequantize against float64 references for every storage type,
 * mmap'd checkpoints, NativeWeight as a differentiable tfjs op, leaks and error messages.
 * Skipped (with the reason printed) when the addon is not built.
 */
import * as tf from '@tensorflow/tfjs';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadNativeAddon, NativeAddon, nativeStats, NativeType, NativeWeight, NATIVE_TYPES } from '../../layers/native_weight';

const { addon, reason } = loadNativeAddon();
if (!addon) console.warn(`test/native skipped: ${reason}`);
const d = addon ? describe : describe.skip;
const A = addon as NativeAddon;

// ------------------------------------------------------------------------------------------
// JS references (written from the GGML formulas; float32 steps via Math.fround)
// ------------------------------------------------------------------------------------------
const fr = Math.fround;

/** f32 -> fp16 bits, round to nearest even, by arithmetic (independent of the C bit-twiddling). */
function f16(x: number): number {
  x = fr(x);
  if (Number.isNaN(x)) return 0x7e00;
  const sign = x < 0 || Object.is(x, -0) ? 0x8000 : 0;
  const ax = Math.abs(x);
  if (ax === 0) return sign;
  let e = Math.floor(Math.log2(ax));
  if (2 ** e > ax) e--; // guard against log2 rounding
  if (2 ** (e + 1) <= ax) e++;
  e = Math.max(-14, e);
  const q = ax / 2 ** (e - 10); // exact in double; in [0, 2048)
  let r = Math.floor(q);
  const rem = q - r;
  if (rem > 0.5 || (rem === 0.5 && r % 2 === 1)) r++;
  if (r < 1024) return sign | r; // subnormal (only when e == -14)
  const E = r === 2048 ? e + 16 : e + 15, m = r === 2048 ? 0 : r - 1024;
  return E >= 31 ? sign | 0x7c00 : sign | (E << 10) | m;
}
function f16ToF32(h: number): number {
  const s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 31, m = h & 1023;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}
function bf16(x: number): number {
  const u = new Uint32Array(new Float32Array([x]).buffer)[0];
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}
const roundf = (v: number) => Math.sign(v) * Math.floor(Math.abs(v) + 0.5);

function refQ8(x: Float32Array): Uint8Array {
  const nb = x.length / 32, y = new Uint8Array(nb * 34);
  for (let b = 0; b < nb; b++) {
    let amax = 0;
    for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(x[b * 32 + j]));
    const dd = fr(amax / 127), id = dd ? fr(1 / dd) : 0, h = f16(dd);
    y[b * 34] = h & 255; y[b * 34 + 1] = h >> 8;
    for (let j = 0; j < 32; j++) y[b * 34 + 2 + j] = roundf(fr(x[b * 32 + j] * id)) & 255;
  }
  return y;
}
function refQ4(x: Float32Array): Uint8Array {
  const nb = x.length / 32, y = new Uint8Array(nb * 18);
  for (let b = 0; b < nb; b++) {
    let amax = 0, max = 0;
    for (let j = 0; j < 32; j++) { const v = x[b * 32 + j]; if (amax < Math.abs(v)) { amax = Math.abs(v); max = v; } }
    const dd = fr(max / -8), id = dd ? fr(1 / dd) : 0, h = f16(dd);
    y[b * 18] = h & 255; y[b * 18 + 1] = h >> 8;
    for (let j = 0; j < 16; j++) {
      const q0 = Math.min(15, Math.trunc(fr(fr(x[b * 32 + j] * id) + 8.5)));
      const q1 = Math.min(15, Math.trunc(fr(fr(x[b * 32 + 16 + j] * id) + 8.5)));
      y[b * 18 + 2 + j] = q0 | (q1 << 4);
    }
  }
  return y;
}
/** what the storage holds, as float64 */
function refDequant(type: NativeType, raw: Uint8Array, n: number): Float64Array {
  const out = new Float64Array(n), dv = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  for (let i = 0; i < n; i++) {
    if (type === 'f32') out[i] = dv.getFloat32(4 * i, true);
    else if (type === 'f16') out[i] = f16ToF32(dv.getUint16(2 * i, true));
    else if (type === 'bf16') out[i] = new Float32Array(new Uint32Array([dv.getUint16(2 * i, true) << 16]).buffer)[0];
    else if (type === 'q8_0') { const b = Math.floor(i / 32); out[i] = fr(dv.getInt8(b * 34 + 2 + (i % 32)) * f16ToF32(dv.getUint16(b * 34, true))); }
    else {
      const b = Math.floor(i / 32), j = i % 32, byte = raw[b * 18 + 2 + (j % 16)];
      out[i] = fr(((j < 16 ? byte & 15 : byte >> 4) - 8) * f16ToF32(dv.getUint16(b * 18, true)));
    }
  }
  return out;
}
/** x as the decode kernels see it for q types: q8 blocks with an f32 scale */
function refXq8(x: Float32Array): Float64Array {
  const out = new Float64Array(x.length);
  for (let b = 0; b < x.length / 32; b++) {
    let amax = 0;
    for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(x[b * 32 + j]));
    const dd = fr(amax / 127), id = dd ? fr(1 / dd) : 0;
    for (let j = 0; j < 32; j++) out[b * 32 + j] = roundf(fr(x[b * 32 + j] * id)) * dd;
  }
  return out;
}

/* the q8_0 prefill GEMM's two-term x (weights.c quant_row_xq8x2): q8 blocks of x, then of the float32 residual */
function refXq8x2(x: Float32Array): Float64Array {
  const hi = refXq8(x), res = new Float32Array(x.length);
  for (let i = 0; i < x.length; i++) res[i] = fr(x[i] - fr(hi[i])); // as the C code: float32 d * q, then a float32 subtraction
  const lo = refXq8(res), out = new Float64Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = hi[i] + lo[i];
  return out;
}

function rand(n: number, seed: number, scale = 1): Float32Array {
  let s = seed >>> 0;
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; a[i] = ((s / 2 ** 32) * 2 - 1) * scale; }
  return a;
}
function rawBytes(w: NativeWeight): Uint8Array {
  const b = new Uint8Array(w.bytes);
  A.readBytes(w.native, 0, b);
  return b;
}
function maxRelErr(got: ArrayLike<number>, want: ArrayLike<number>): number {
  let e = 0, m = 1e-30;
  for (let i = 0; i < want.length; i++) { e = Math.max(e, Math.abs(got[i] - want[i])); m = Math.max(m, Math.abs(want[i])); }
  return e / m;
}
const hex = (u: Uint8Array) => Buffer.from(u).toString('hex');

// ------------------------------------------------------------------------------------------
d('quantizers match GGML bit for bit', () => {
  const q = (x: number[], t: NativeType) => rawBytes(NativeWeight.quantize(new Float32Array(x), t, [1, x.length]));
  const pad = (x: number[]) => [...x, ...new Array(32 - x.length).fill(0)];

  test('q8_0 hand-computed blocks', () => {
    // all zero: d = 0, qs = 0
    expect(hex(q(pad([]), 'q8_0'))).toBe('0000' + '00'.repeat(32));
    // amax 127 -> d = 1 (fp16 0x3c00); roundf ties away from zero: 63.5 -> 64, 0.5 -> 1, 2.5 -> 3
    expect(hex(q(pad([127, -127, 63.5, -63.5, 0.5, -0.5, 1.5, 2.5]), 'q8_0')))
      .toBe('003c' + '7f81' + '40c0' + '01ff' + '0203' + '00'.repeat(24));
    // the max-|x| element negative: amax 254 -> d = 2 (0x4000), id 0.5
    expect(hex(q(pad([2, 2, 2, -254]), 'q8_0'))).toBe('0040' + '010101' + '81' + '00'.repeat(28));
    // d = 1/127 rounds to fp16 0x2008; 0.5*127 = 63.5 -> 64, 0.25*127 = 31.75 -> 32
    expect(hex(q(pad([1, 0.5, -0.5, 0.25]), 'q8_0'))).toBe('0820' + '7f40c020' + '00'.repeat(28));
  });

  test('q4_0 hand-computed blocks', () => {
    // all zero: max = +0 so d = 0/-8 = -0 (fp16 0x8000), id = 0, every q = (int8)(8.5) = 8
    expect(hex(q(pad([]), 'q4_0'))).toBe('0080' + '88'.repeat(16));
    // max-|x| element negative (-8): d = 1 (0x3c00), id = 1; q = min(15, trunc(x + 8.5))
    //   -8 -> 0, 7 -> 15, 7.4 -> 15, 6.5 -> 15, 6.4 -> 14, -7.5 -> 1, -7.6 -> 0, 0 -> 8
    expect(hex(q(pad([-8, 7, 7.4, 6.5, 6.4, -7.5, -7.6, 0]), 'q4_0')))
      .toBe('003c' + '80' + '8f' + '8f' + '8f' + '8e' + '81' + '80' + '88' + '88'.repeat(8));
    // max 16 (first of the tie 16 / -16): d = -2 (0xc000), id = -0.5; values near the 8.5 boundary:
    //   16 -> 0.5 -> 0; -16 -> 16.5 -> min(15, 16) = 15; 1 -> 8; 3 -> 7 exactly;
    //   fround(3.000001) -> 6.99999952 -> 6; 0 -> 8; -2 -> 9; 5 -> 6; -15 -> 16 -> 15; 15.5 -> 0.75 -> 0;
    //   0.5 -> 8.25 -> 8; -0.5 -> 8.75 -> 8; fround(2.9999998) -> 7.00000012 rounds to 7.0 -> 7; 7 -> 5; -7 -> 12; 10 -> 3
    //   high nibbles: 1.5 -> 7.75 -> 7, -1.5 -> 9.25 -> 9, 0 -> 8
    const lo = [16, -16, 1, 3, 3.000001, 0, -2, 5, -15, 15.5, 0.5, -0.5, 2.9999998, 7, -7, 10];
    const hi = [1.5, -1.5, ...new Array(14).fill(0)];
    expect(hex(q([...lo, ...hi], 'q4_0')))
      .toBe('00c0' + '70' + '9f' + '88' + '87' + '86' + '88' + '89' + '86' + '8f' + '80' + '88' + '88' + '87' + '85' + '8c' + '83');
  });

  test('random data: C quantizers == JS reference byte for byte (q8_0, q4_0, f16, bf16)', () => {
    const rows = 13, cols = 32 * 21;
    for (const seed of [1, 2, 3]) {
      const x = rand(rows * cols, seed, seed === 3 ? 1e-6 : 3); // seed 3: tiny scales (subnormal fp16 d)
      for (let i = 0; i < x.length; i += 97) x[i] = 0;
      x.fill(0, 64, 96); // one all-zero block
      x[200] = -Math.abs(x[200]) - 10 * (seed === 3 ? 1e-6 : 3); // a block whose max-|x| is negative
      const src = NativeWeight.quantize(x, 'f32', [rows, cols]);
      expect(hex(rawBytes(NativeWeight.quantize(src, 'q8_0')))).toBe(hex(refQ8(x)));
      expect(hex(rawBytes(NativeWeight.quantize(src, 'q4_0')))).toBe(hex(refQ4(x)));
      const h = rawBytes(NativeWeight.quantize(src, 'f16')), bh = rawBytes(NativeWeight.quantize(src, 'bf16'));
      const hv = new Uint16Array(h.buffer), bv = new Uint16Array(bh.buffer);
      for (let i = 0; i < x.length; i++) {
        if (hv[i] !== f16(x[i])) throw new Error(`f16(${x[i]}) = ${hv[i]}, want ${f16(x[i])}`);
        if (bv[i] !== bf16(x[i])) throw new Error(`bf16(${x[i]}) = ${bv[i]}, want ${bf16(x[i])}`);
      }
      src.dispose();
    }
  });

  test('fp16 rounding over the whole range (normal, subnormal, overflow, ties)', () => {
    const xs: number[] = [0, -0, 1, -1, 65504, 65519.99, 65520, 1e9, 2 ** -24, 2 ** -25, 1.5 * 2 ** -25, 2 ** -26, 2 ** -14,
      2 ** -14 - 2 ** -25, 1 + 2 ** -11, 1 + 3 * 2 ** -11, 1 / 127, 1 / 3];
    for (const x of rand(20000, 7, 1)) xs.push(x * 2 ** Math.floor(x * 60 - 10));
    const src = new Float32Array(xs), dst = new Uint16Array(xs.length);
    A.toF16(src, dst);
    for (let i = 0; i < xs.length; i++) if (dst[i] !== f16(src[i])) throw new Error(`f16(${src[i]}) = ${dst[i]}, want ${f16(src[i])}`);
  });

  test('dequantize round trip equals the stored blocks', () => {
    const rows = 9, cols = 96, x = rand(rows * cols, 11, 2);
    for (const t of NATIVE_TYPES) {
      const w = NativeWeight.quantize(x, t, [rows, cols]);
      const want = refDequant(t, rawBytes(w), rows * cols);
      expect(Array.from(w.toFloat32())).toEqual(Array.from(want));
      expect(Array.from(w.toFloat32(3, 2))).toEqual(Array.from(want.subarray(3 * cols, 5 * cols)));
      // re-quantizing the dequantized values reproduces the blocks (quantization is idempotent)
      if (t === 'q8_0' || t === 'f16' || t === 'bf16')
        expect(hex(rawBytes(NativeWeight.quantize(w.toFloat32(), t, [rows, cols])))).toBe(hex(rawBytes(w)));
      w.dispose();
    }
  });
});

// ------------------------------------------------------------------------------------------
function checkMatmuls(w: NativeWeight, label: string) {
  const [rows, cols] = w.shape;
  const Wd = refDequant(w.type, rawBytes(w), rows * cols);
  const mvMax = A.cpuFeatures().mvMax;
  for (const M of [1, 7, 64, 67]) {
    const x = rand(M * cols, rows + M, 1), bias = rand(rows, 5, 1);
    // q8_0 quantizes x to q8 blocks on the matrix-vector path (M <= mvMax), and to two terms of q8 blocks in its
    // VNNI prefill GEMM; q4_0 to q8 blocks at every M (its prefill is an int8 GEMM) unless TFJS_BLAS_Q4_PREFILL=f32
    const f = A.cpuFeatures();
    const quantX = (w.type === 'q8_0' && M <= mvMax) || (w.type === 'q4_0' && (M <= mvMax || f.q4Prefill === 'int8'));
    const xr = quantX ? refXq8(x) : w.type === 'q8_0' && f.q8Prefill === 'int8x2' ? refXq8x2(x) : Float64Array.from(x);
    const out = new Float32Array(M * rows + 3).fill(NaN), want = new Float64Array(M * rows);
    for (let m = 0; m < M; m++)
      for (let r = 0; r < rows; r++) {
        let s = bias[r];
        for (let c = 0; c < cols; c++) s += xr[m * cols + c] * Wd[r * cols + c];
        want[m * rows + r] = s;
      }
    A.matmul(w.native, x, 0, M, out, 3, bias, 0);
    const e = maxRelErr(out.subarray(3), want);
    if (!(e < 2e-5)) throw new Error(`${label} matmul M=${M}: rel err ${e}`);
    // matmulT: dx = dy · W
    const dy = rand(M * rows, 3 * M + 1, 1), dx = new Float32Array(M * cols), wantT = new Float64Array(M * cols);
    for (let m = 0; m < M; m++)
      for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) wantT[m * cols + c] += dy[m * rows + r] * Wd[r * cols + c];
    A.matmulT(w.native, dy, 0, M, dx, 0);
    const eT = maxRelErr(dx, wantT);
    if (!(eT < 2e-5)) throw new Error(`${label} matmulT M=${M}: rel err ${eT}`);
  }
  // gather
  const ids = new Int32Array([rows - 1, 0, Math.floor(rows / 2), 0]);
  const g = new Float32Array(ids.length * cols);
  A.gather(w.native, ids, g, 0);
  for (let i = 0; i < ids.length; i++)
    for (let c = 0; c < cols; c++) if (g[i * cols + c] !== Wd[ids[i] * cols + c]) throw new Error(`${label} gather row ${ids[i]}`);
}

d('matmul / matmulT / gather vs float64 reference', () => {
  afterAll(() => A.setThreads(os.cpus().length));
  for (const threads of [2, 3]) {
    for (const t of NATIVE_TYPES) {
      // q4_0 prefill (int8 GEMM): fewer than 8 rows, a rows % 8 tail, and [24, 6400] packed in K chunks
      const shapes: [number, number][] = t === 'q8_0' || t === 'q4_0' ? [[37, 64], [129, 96], [300, 256], [5, 64], [24, 6400]]
        : [[37, 50], [129, 96], [300, 257]];
      test(`${t}, ${threads} threads, shapes ${shapes.map((s) => s.join('x')).join(' ')}`, () => {
        A.setThreads(threads);
        for (const [rows, cols] of shapes) {
          const w = NativeWeight.quantize(rand(rows * cols, rows * cols, 0.5), t, [rows, cols]);
          checkMatmuls(w, `${t} [${rows},${cols}]`);
          w.dispose();
        }
      });
    }
  }

  // owned weights of 2 MiB and more are 2 MiB aligned and advised as huge pages (their whole 2 MiB
  // pages only; the tail stays in small pages): the bytes and the decode matvec are unchanged
  test('owned weights past 2 MiB (huge-page advised): bit-exact blocks, M = 1 matvec, gather', () => {
    const cols = 1024;
    for (const [t, rows] of [['f16', 1100], ['q8_0', 2300], ['q4_0', 4100]] as const) {
      const x = rand(rows * cols, rows, 0.5);
      const w = NativeWeight.quantize(x, t, [rows, cols]);
      expect(w.bytes).toBeGreaterThan(2 << 20);
      const raw = rawBytes(w);
      if (t === 'f16') expect(hex(raw)).toBe(hex(new Uint8Array(new Uint16Array(x.length).map((_, i) => f16(x[i])).buffer)));
      else expect(hex(raw)).toBe(hex(t === 'q8_0' ? refQ8(x) : refQ4(x)));
      const Wd = refDequant(t, raw, rows * cols), v = rand(cols, 7, 1), xr = t === 'f16' ? Float64Array.from(v) : refXq8(v);
      const out = new Float32Array(rows), want = new Float64Array(rows);
      for (let r = 0; r < rows; r++) { let a = 0; for (let c = 0; c < cols; c++) a += xr[c] * Wd[r * cols + c]; want[r] = a; }
      A.matmul(w.native, v, 0, 1, out, 0);
      expect(maxRelErr(out, want)).toBeLessThan(2e-5);
      const g = new Float32Array(cols);
      A.gather(w.native, new Int32Array([rows - 1]), g, 0);
      for (let c = 0; c < cols; c++) if (g[c] !== Wd[(rows - 1) * cols + c]) throw new Error(`${t} gather of the last row, column ${c}`);
      w.dispose();
    }
  });

  test('mapped f32 / f16 / bf16 from a real file (unaligned offsets), zero copy', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nw-'));
    const file = path.join(dir, 'w.bin');
    const rows = 70, cols = 96, x = rand(rows * cols, 99, 1);
    const f16b = new Uint16Array(x.length).map((_, i) => f16(x[i])), bf16b = new Uint16Array(x.length).map((_, i) => bf16(x[i]));
    const parts = [Buffer.alloc(14), Buffer.from(x.buffer), Buffer.alloc(2), Buffer.from(f16b.buffer), Buffer.from(bf16b.buffer)];
    fs.writeFileSync(file, Buffer.concat(parts));
    const offs = { f32: 14, f16: 14 + x.byteLength + 2, bf16: 14 + x.byteLength + 2 + f16b.byteLength };
    const m = NativeWeight.mapFile(file);
    const ws = (['f32', 'f16', 'bf16'] as const).map((t) => NativeWeight.fromMap(m, offs[t], t, rows, cols));
    for (const w of ws) {
      expect(w.info().mapped).toBe(true);
      expect(w.info().path).toBe(file);
      checkMatmuls(w, `mapped ${w.type}`);
    }
    expect(Array.from(ws[0].toFloat32())).toEqual(Array.from(x));
    // read-ahead advice (embedding tables): the mapped bytes, nothing for an owned weight; values unchanged
    expect(A.prefetch!(ws[1].native)).toBe(rows * cols * 2);
    checkMatmuls(ws[1], 'mapped f16 after prefetch');
    const owned = NativeWeight.quantize(x, 'f16', [rows, cols]);
    expect(A.prefetch!(owned.native)).toBe(0);
    // pin (mlock until dispose): the mapped bytes where mlock is allowed, else 0; never an owned weight
    const pinned = ws[1].pin();
    expect([0, rows * cols * 2]).toContain(pinned);
    expect(ws[1].pin()).toBe(pinned); // idempotent
    checkMatmuls(ws[1], 'mapped f16 after pin');
    expect(owned.pin()).toBe(0);
    owned.dispose();
    expect(typeof A.trim!()).toBe('boolean'); // malloc_trim: frees nothing in use
    checkMatmuls(ws[1], 'mapped f16 after trim');
    // a quantized copy of a mapped bf16 weight equals quantizing its values
    const q = NativeWeight.quantize(ws[2], 'q8_0');
    expect(hex(rawBytes(q))).toBe(hex(refQ8(ws[2].toFloat32())));
    expect(A.mappingInfo(m).weights).toBe(3);
    expect(() => NativeWeight.fromMap(m, offs.bf16 + 2, 'bf16', rows, cols)).toThrow(/past the end of '.*w\.bin'/);
    ws.forEach((w) => w.dispose());
    q.dispose();
    expect(A.mappingInfo(m).weights).toBe(0);
    expect(() => NativeWeight.mapFile(dir)).toThrow(/is not a regular file/);
    expect(() => NativeWeight.mapFile(path.join(dir, 'nope.safetensors'))).toThrow(/cannot open '.*nope\.safetensors'/);
    fs.rmSync(dir, { recursive: true });
  });
});

// ------------------------------------------------------------------------------------------
d('NativeWeight as a tfjs op', () => {
  let initial = 'wasm';
  beforeAll(() => { initial = tf.getBackend(); });
  afterAll(async () => {
    delete process.env.VLM_NATIVE_DATASYNC;
    await tf.setBackend(initial);
  });
  test.each([
    ['wasm', 'kernel'], ['wasm', 'datasync'], ['cpu', 'kernel'], ['cpu', 'datasync'],
  ])('on %s via %s: matmul (+bias) = x·Wᵀ+b; tf.grad gives dy·W and the bias gradient; no leaked tensors', async (backend, route) => {
    await tf.setBackend(backend);
    if (route === 'datasync') process.env.VLM_NATIVE_DATASYNC = '1';
    else delete process.env.VLM_NATIVE_DATASYNC;
    const rows = 48, cols = 64;
    const stats0 = { ...nativeStats };
    for (const t of ['bf16', 'q4_0'] as NativeType[]) {
      const w = NativeWeight.quantize(rand(rows * cols, 4, 1), t, [rows, cols]);
      const Wf = w.toFloat32();
      const before = tf.memory().numTensors;
      tf.tidy(() => {
        const xv = rand(2 * 9 * cols, 8, 1);
        const x = tf.tensor(xv, [2, 9, cols]); // M = 18: panel path (exact x; q4_0: int8 GEMM, x in q8 blocks)
        const b = tf.tensor(rand(rows, 9, 1), [rows]);
        const Wt = tf.tensor(Wf, [rows, cols]);
        const y = w.matmul(x, b);
        expect(y.shape).toEqual([2, 9, rows]);
        const xr = t === 'q4_0' && A.cpuFeatures().q4Prefill === 'int8' ? tf.tensor(Float32Array.from(refXq8(xv)), [18, cols]) : tf.reshape(x, [-1, cols]);
        const ref = tf.add(tf.matMul(xr, Wt, false, true), b);
        expect(maxRelErr(y.dataSync(), ref.dataSync())).toBeLessThan(1e-5);
        const c = tf.tensor(rand(2 * 9 * rows, 10, 1), [2, 9, rows]);
        const [gx, gb] = tf.grads((xx: tf.Tensor, bb: tf.Tensor) => tf.sum(tf.mul(w.matmul(xx, bb), c)))([x, b]);
        expect(gx.shape).toEqual(x.shape);
        expect(maxRelErr(gx.dataSync(), tf.matMul(tf.reshape(c, [-1, rows]), Wt).dataSync())).toBeLessThan(1e-5);
        expect(maxRelErr(gb.dataSync(), tf.sum(tf.reshape(c, [-1, rows]), 0).dataSync())).toBeLessThan(1e-5);
        const gx1 = tf.grad((xx: tf.Tensor) => tf.sum(tf.mul(w.matmul(xx), c)))(x);
        expect(maxRelErr(gx1.dataSync(), gx.dataSync())).toBeLessThan(1e-6);
        const emb = w.gather(tf.tensor([[3, 0], [47, 3]], [2, 2], 'int32'));
        expect(emb.shape).toEqual([2, 2, cols]);
        expect(Array.from(emb.dataSync().subarray(0, cols))).toEqual(Array.from(Wf.subarray(3 * cols, 4 * cols)));
      });
      expect(tf.memory().numTensors).toBe(before);
      w.dispose();
      w.dispose(); // idempotent
      expect(() => tf.tidy(() => w.matmul(tf.zeros([1, cols])))).toThrow(/disposed/);
      expect(tf.memory().numTensors).toBe(before);
    }
    const viaKernel = nativeStats.kernelCalls - stats0.kernelCalls, viaSync = nativeStats.dataSyncCalls - stats0.dataSyncCalls;
    expect(route === 'kernel' ? [viaKernel > 0, viaSync] : [viaKernel, viaSync > 0]).toEqual(route === 'kernel' ? [true, 0] : [0, true]);
  });
});

// ------------------------------------------------------------------------------------------
d('weights assembled chunk by chunk (weightAlloc + writeRows, the load-time conversion)', () => {
  test('equal the whole-matrix conversion byte for byte; mismatched rows are refused', () => {
    const rows = 10, cols = 64, W = rand(rows * cols, 1);
    for (const t of ['f16', 'bf16', 'q8_0', 'q4_0'] as NativeType[]) {
      const whole = NativeWeight.quantize(W, t, [rows, cols]);
      const dst = NativeWeight.alloc(t, rows, cols)!;
      for (const [r0, n] of [[0, 3], [3, 4], [7, 3]]) {
        const part = NativeWeight.quantize(W.subarray(r0 * cols, (r0 + n) * cols), t, [n, cols]);
        dst.writeRows(r0, part);
        part.dispose();
      }
      expect(dst.readBytes(new Uint8Array(dst.bytes))).toEqual(whole.readBytes(new Uint8Array(whole.bytes)));
      if (t === 'q8_0') {
        const other = NativeWeight.quantize(rand(2 * 32, 2), 'q8_0', [2, 32]);
        expect(() => dst.writeRows(0, other)).toThrow(/source q8_0 \[2, 32\] does not match the destination q8_0 \[·, 64\]/);
        other.dispose();
        const tail = NativeWeight.quantize(rand(2 * cols, 3), 'q8_0', [2, cols]);
        expect(() => dst.writeRows(9, tail)).toThrow(/rows \[9, 11\) are outside the destination's 10/);
        tail.dispose();
      }
      whole.dispose();
      dst.dispose();
    }
  });
});

d('bad inputs throw clear errors', () => {
  test('shapes, offsets, ids, types, freed weights', () => {
    const w = NativeWeight.quantize(rand(4 * 64, 1), 'q8_0', [4, 64]);
    const h = w.native;
    expect(() => NativeWeight.quantize(rand(4 * 40, 1), 'q4_0', [4, 40])).toThrow(/q4_0 needs cols to be a multiple of 32 \(got 40\)/);
    expect(() => A.weightFromBuffer('q8_0', 2, 33, new Uint8Array(100))).toThrow(/multiple of 32/);
    expect(() => A.weightFromBuffer('f16', 2, 32, new Uint8Array(100))).toThrow(/needs exactly 128 bytes, the buffer has 100/);
    expect(() => A.quantize(rand(10, 1), 'q9' as NativeType, 1, 10)).toThrow(/type must be one of/);
    expect(() => A.matmul(h, new Float32Array(64), 1, 1, new Float32Array(4), 0, null, 0)).toThrow(/x needs M\*cols = 1\*64 floats from offset 1/);
    expect(() => A.matmul(h, new Float32Array(128), 0, 2, new Float32Array(7), 0, null, 0)).toThrow(/out needs M\*rows = 2\*4/);
    expect(() => A.matmul(h, new Float32Array(64), 0, 1, new Float32Array(4), 0, new Float32Array(3), 0)).toThrow(/bias needs 4 floats/);
    expect(() => A.matmul(h, new Float64Array(64) as unknown as Float32Array, 0, 1, new Float32Array(4), 0)).toThrow(/x must be a Float32Array/);
    expect(() => A.matmul(h, new Float32Array(64), -1, 1, new Float32Array(4), 0)).toThrow(/xOff must be a non-negative integer/);
    expect(() => A.matmulT(h, new Float32Array(3), 0, 1, new Float32Array(64), 0)).toThrow(/dy needs M\*rows = 1\*4/);
    expect(() => A.gather(h, new Int32Array([0, 4]), new Float32Array(128), 0)).toThrow(/ids\[1\] = 4 is out of range \[0, 4\)/);
    expect(() => A.gather(h, new Int32Array([-1]), new Float32Array(64), 0)).toThrow(/ids\[0\] = -1/);
    expect(() => A.dequantize(h, 3, 2, new Float32Array(128))).toThrow(/rows \[3, 5\) are out of range \[0, 4\)/);
    expect(() => A.matmul({} as never, new Float32Array(64), 0, 1, new Float32Array(4), 0)).toThrow(/expected a native weight/);
    expect(() => tf.tidy(() => w.matmul(tf.zeros([2, 63])))).toThrow(/expected \[\.\.\., 64\]/);
    w.dispose();
    expect(() => A.matmul(h, new Float32Array(64), 0, 1, new Float32Array(4), 0)).toThrow(/was freed/);
    expect(A.weightInfo(h).freed).toBe(true);
  });
});

// ------------------------------------------------------------------------------------------
d('fallback builds (separate processes)', () => {
  test('load-time kernel self-check (used to vet the AVX-512 table) passes for scalar vs avx2 and scalar vs avx512', () => {
    const f = A.cpuFeatures();
    if (!f.avx2) return;
    const r = spawnSync(process.execPath, ['-e', `console.log(require(${JSON.stringify(path.resolve(__dirname, '../../native/tfjs-blas'))}).cpuFeatures().selfCheck)`],
      { env: { ...process.env, TFJS_BLAS_SELFCHECK: '1' }, encoding: 'utf8', timeout: 60000 });
    expect(r.stdout.trim()).toBe(f.kernels === 'avx512' ? 'scalar vs avx2: ok; scalar vs avx512: ok' : 'scalar vs avx2: ok');
  });

  test('the best kernel table for this CPU is in use (an AVX-512 table that failed its self-check would fall back)', () => {
    const f = A.cpuFeatures();
    if (!f.avx2 || !f.fma || !f.f16c) return;
    const avx512 = f.avx512Built && f.avx512f && f.avx512bw && f.avx512vl && f.avx512vnni;
    expect([f.kernels, f.selfCheck]).toEqual([avx512 ? 'avx512' : 'avx2', '']);
  });

  test('scalar kernels and no OpenBLAS give the same results', () => {
    const script = `
      const b = require(${JSON.stringify(path.resolve(__dirname, '../../native/tfjs-blas'))});
      const rows = 75, cols = 96, M = 9; let s = 7;
      const r = (n) => Float32Array.from({ length: n }, () => ((s = (s * 1103515245 + 12345) % 2147483648) / 2147483648) - 0.5);
      const W = r(rows * cols), x = r(M * cols), dy = r(M * rows), res = {};
      for (const t of ['f32','f16','bf16','q8_0','q4_0']) {
        const w = b.quantize(W, t, rows, cols), Wd = new Float32Array(rows * cols); b.dequantize(w, 0, rows, Wd);
        let e = 0, m = 0;
        for (const MM of [1, M]) {
          const o = new Float32Array(MM * rows); b.matmul(w, x, 0, MM, o, 0, null, 0);
          for (let i = 0; i < MM; i++) for (let j = 0; j < rows; j++) { let z = 0; for (let c = 0; c < cols; c++) z += x[i*cols+c] * Wd[j*cols+c]; e = Math.max(e, Math.abs(z - o[i*rows+j])); m = Math.max(m, Math.abs(z)); }
        }
        const g = new Float32Array(M * cols); b.matmulT(w, dy, 0, M, g, 0);
        let eT = 0; for (let i = 0; i < M; i++) for (let c = 0; c < cols; c++) { let z = 0; for (let j = 0; j < rows; j++) z += dy[i*rows+j] * Wd[j*cols+c]; eT = Math.max(eT, Math.abs(z - g[i*cols+c])); }
        res[t] = [e / m, eT];
      }
      const C = new Float32Array(6); b.gemm(new Float32Array([1,2,3,4]), 0, new Float32Array([1,0,0,1,1,1]), 0, C, 0, 0, 0, 2, 3, 2, 1, 1, 1);
      console.log(JSON.stringify({ kernels: b.cpuFeatures().kernels, openblas: b.cpuFeatures().openblas, res, gemm: Array.from(C) }));`;
    for (const env of [{ TFJS_BLAS_ISA: 'scalar' }, { TFJS_BLAS_NO_OPENBLAS: '1' }, { TFJS_BLAS_ISA: 'scalar', TFJS_BLAS_NO_OPENBLAS: '1', VLM_THREADS: '3' }]) {
      const r = spawnSync(process.execPath, ['-e', script], { env: { ...process.env, ...env }, encoding: 'utf8', timeout: 60000 });
      expect(r.stderr).toBe('');
      const o = JSON.parse(r.stdout);
      if (env.TFJS_BLAS_ISA) expect(o.kernels).toBe('scalar');
      if (env.TFJS_BLAS_NO_OPENBLAS) expect(o.openblas).toBe(false);
      expect(o.gemm).toEqual([3, 2, 2, 7, 4, 4]); // [[1,2],[3,4]] · [[1,0,0],[1,1,1]]
      for (const t of NATIVE_TYPES) {
        const [e, eT] = o.res[t];
        // q types at M = 1 quantize x to q8 blocks: ~0.5 % of the output scale
        expect(e).toBeLessThan(t === 'q8_0' || t === 'q4_0' ? 1e-2 : 1e-5);
        expect(eT).toBeLessThan(1e-5);
      }
    }
  });
});

d('float32 gemm: x·Wᵀ with few rows of x on the weight pool (decode with tfjs float32 weights)', () => {
  // gemm routes tB, M <= 8, one shared W of >= 65536 elements, bias absent or per column, to the
  // pool's f32 matvec (1.15-1.6x OpenBLAS sgemv here); everything else stays on OpenBLAS
  const blas = addon as unknown as { gemm: (...a: unknown[]) => void };
  const rnd = (n: number, seed: number) => { let s = seed; return Float32Array.from({ length: n }, () => ((s = (s * 1103515245 + 12345) % 2147483648) / 2147483648) - 0.5); };
  const ref = (A: Float32Array, W: Float32Array, M: number, N: number, K: number, bias: Float32Array | null, relu: boolean) => {
    const C = new Float64Array(M * N);
    for (let i = 0; i < M; i++) for (let j = 0; j < N; j++) {
      let z = bias ? bias[(i * N + j) % bias.length] : 0;
      for (let k = 0; k < K; k++) z += A[i * K + k] * W[j * K + k];
      C[i * N + j] = relu && z < 0 ? 0 : z;
    }
    return C;
  };
  const relErr = (C: Float32Array, R: Float64Array) => { let e = 0, m = 0; for (let i = 0; i < R.length; i++) { e = Math.max(e, Math.abs(C[i] - R[i])); m = Math.max(m, Math.abs(R[i])); } return e / m; };
  test.each([
    [1, 300, 256, 'none', 1], [3, 300, 256, 'column', 1], [8, 257, 320, 'column', 1], [9, 300, 256, 'column', 1],
    [1, 300, 256, 'full', 1], [2, 300, 256, 'column', 3], [1, 40, 40, 'column', 1],
  ] as const)('M=%i N=%i K=%i bias %s batch %i', (M, N, K, biasKind, batch) => {
    const A = rnd(batch * M * K, 1 + M), W = rnd(N * K, 7 + N);
    const bias = biasKind === 'none' ? null : rnd(biasKind === 'column' ? N : M * N, 3);
    for (const relu of [false, true]) {
      const C = new Float32Array(batch * M * N + 5).fill(NaN); // the pool path must write every output
      blas.gemm(A, 0, W, 0, C, 5, 0, 1, M, N, K, batch, batch, 1, bias, 0, bias ? bias.length : 0, relu ? 1 : 0, 0, null, 0, 0);
      for (let b = 0; b < batch; b++) {
        const R = ref(A.subarray(b * M * K), W, M, N, K, bias, relu);
        expect(relErr(C.subarray(5 + b * M * N, 5 + (b + 1) * M * N), R)).toBeLessThan(1e-6);
      }
      expect(C.subarray(0, 5).every(Number.isNaN)).toBe(true);
    }
  });
});
