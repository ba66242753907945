/**
 * safetensors I/O (https://github.com/huggingface/safetensors format):
 *   [u64 LE header length N][N bytes UTF-8 JSON header][data section]
 * header: { "<name>": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {..} }
 * offsets are relative to the data section.
 *
 * Reading is tensor by tensor from an open file descriptor, so memory stays bounded by the largest
 * tensor (a 15 GB checkpoint is never one buffer). Every header field is validated on open, and
 * each error names the file and the tensor. Writing goes to a temporary file that is renamed into
 * place, so a failed write never leaves a half-written output.
 */
import fs from 'node:fs';
import { FileInputError, writeFileAtomic } from '../io/files';

export type SafetensorsDtype = 'F64' | 'F32' | 'F16' | 'BF16' | 'I64' | 'I32' | 'I16' | 'I8' | 'U8' | 'BOOL';

/** Bytes per element of each supported dtype. */
export const DTYPE_SIZE: Record<SafetensorsDtype, number> = {
  F64: 8, F32: 4, F16: 2, BF16: 2, I64: 8, I32: 4, I16: 2, I8: 1, U8: 1, BOOL: 1,
};

/** A tensor's stored type: a safetensors dtype, or a GGML block-quantized type (GGUF checkpoints, weights/gguf.ts). */
export type EntryDtype = SafetensorsDtype | 'Q8_0' | 'Q4_0';

export interface TensorEntry {
  name: string;
  dtype: EntryDtype;
  shape: number[];
  /** Absolute byte offsets in the file. */
  begin: number;
  end: number;
}

/** An entry of a safetensors file (its dtype is always a safetensors one). */
export interface SafetensorsEntry extends TensorEntry {
  dtype: SafetensorsDtype;
}

/** What `read` returns: floats become Float32Array, integers Int32Array, U8/BOOL Uint8Array. */
export interface HostTensor {
  dtype: 'float32' | 'int32' | 'uint8' | 'bool';
  shape: number[];
  data: Float32Array | Int32Array | Uint8Array;
}

export class SafetensorsError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SafetensorsError';
  }
}

/** Largest header we accept (the format's own readers cap it at 100 MB). */
const MAX_HEADER_BYTES = 100 * 2 ** 20;

function numel(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** An open safetensors file; call `close()` when done. */
export class SafetensorsFile {
  readonly path: string;
  readonly metadata: Record<string, string>;
  private readonly entries = new Map<string, SafetensorsEntry>();
  private fd: number | null;
  readonly fileSize: number;

  private constructor(file: string, fd: number, fileSize: number, entries: SafetensorsEntry[], metadata: Record<string, string>) {
    this.path = file;
    this.fd = fd;
    this.fileSize = fileSize;
    this.metadata = metadata;
    for (const e of entries) this.entries.set(e.name, e);
  }

  /** Opens and validates `file`. Throws a SafetensorsError naming the file on any problem. */
  static open(file: string): SafetensorsFile {
    let fd: number;
    try {
      const st = fs.statSync(file);
      if (!st.isFile()) throw new SafetensorsError(`${file}: not a regular file (a directory, FIFO or device); refusing to read it`);
      fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
    } catch (e) {
      if (e instanceof SafetensorsError) throw e;
      throw new SafetensorsError(`${file}: cannot open (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
    }
    try {
      const size = fs.fstatSync(fd).size;
      const { entries, metadata } = parseHeader(fd, size, file);
      return new SafetensorsFile(file, fd, size, entries, metadata);
    } catch (e) {
      fs.closeSync(fd);
      throw e;
    }
  }

  keys(): string[] {
    return [...this.entries.keys()];
  }

  has(name: string): boolean {
    return this.entries.has(name);
  }

  entry(name: string): SafetensorsEntry {
    const e = this.entries.get(name);
    if (!e) throw new SafetensorsError(`${this.path}: no tensor named '${name}'`);
    return e;
  }

  /** Raw bytes of one tensor (little-endian, as stored), or of bytes [from, to) of it. */
  readBytes(name: string, from = 0, to?: number): Buffer {
    const e = this.entry(name);
    if (this.fd === null) throw new SafetensorsError(`${this.path}: file is closed`);
    const end = to ?? e.end - e.begin;
    const n = end - from;
    const buf = Buffer.allocUnsafe(n);
    let done = 0;
    while (done < n) {
      const r = fs.readSync(this.fd, buf, done, n - done, e.begin + from + done);
      if (r === 0) throw new SafetensorsError(`${this.path}: tensor '${name}': unexpected end of file`);
      done += r;
    }
    return buf;
  }

  /** Reads one tensor and converts it to a host array (F16/BF16/F64 → float32; I64 → int32, range-checked). */
  read(name: string): HostTensor {
    const e = this.entry(name);
    return decode(this.readBytes(name), e, this.path);
  }

  /** Reads rows [start, end) along axis 0 only (bounded memory for huge embeddings / heads). */
  readRows(name: string, start: number, end: number): HostTensor {
    const e = this.entry(name);
    if (e.shape.length === 0 || start < 0 || end > e.shape[0] || start > end) {
      throw new SafetensorsError(`${this.path}: tensor '${name}': rows [${start}, ${end}) out of range for shape ${JSON.stringify(e.shape)}`);
    }
    const rowBytes = (e.shape.slice(1).reduce((a, b) => a * b, 1)) * DTYPE_SIZE[e.dtype];
    const sub: TensorEntry = { ...e, shape: [end - start, ...e.shape.slice(1)] };
    return decode(this.readBytes(name, start * rowBytes, end * rowBytes), sub, this.path);
  }

  close(): void {
    if (this.fd !== null) {
      fs.closeSync(this.fd);
      this.fd = null;
    }
  }
}

/** Reads exactly buf.length bytes at `pos`. */
function readFully(fd: number, buf: Buffer, pos: number, file: string): void {
  let done = 0;
  while (done < buf.length) {
    const r = fs.readSync(fd, buf, done, buf.length - done, pos + done);
    if (r === 0) throw new SafetensorsError(`${file}: unexpected end of file`);
    done += r;
  }
}

function parseHeader(fd: number, size: number, file: string): { entries: SafetensorsEntry[]; metadata: Record<string, string> } {
  if (size < 8) throw new SafetensorsError(`${file}: not a safetensors file (${size} bytes, the 8-byte header length is missing)`);
  const lenBuf = Buffer.alloc(8);
  readFully(fd, lenBuf, 0, file);
  const hlenBig = lenBuf.readBigUInt64LE(0);
  if (hlenBig > BigInt(MAX_HEADER_BYTES)) {
    throw new SafetensorsError(`${file}: header length ${hlenBig} is larger than the ${MAX_HEADER_BYTES}-byte limit (corrupt file?)`);
  }
  const hlen = Number(hlenBig);
  if (8 + hlen > size) {
    throw new SafetensorsError(`${file}: truncated: header length ${hlen} needs ${8 + hlen} bytes, the file has ${size}`);
  }
  const hbuf = Buffer.alloc(hlen);
  readFully(fd, hbuf, 8, file);
  // As the reference reader (safetensors/src/tensor.rs read_metadata): the header is UTF-8 JSON
  // (invalid UTF-8 is an error, not replaced), its first byte is '{' (the reference's
  // InvalidHeaderStart), and only JSON whitespace (the writer's space padding) may follow it.
  if (hlen === 0 || hbuf[0] !== 0x7b) {
    throw new SafetensorsError(`${file}: header does not start with '{' (header length field ${hlen}; corrupt file?)`);
  }
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(hbuf);
  } catch {
    throw new SafetensorsError(`${file}: header is not valid UTF-8`);
  }
  let header: unknown;
  try {
    header = JSON.parse(text);
  } catch (e) {
    throw new SafetensorsError(`${file}: header is not valid JSON (${(e as Error).message})`);
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) {
    throw new SafetensorsError(`${file}: header is not a JSON object`);
  }
  const dataStart = 8 + hlen;
  const dataLen = size - dataStart;
  const entries: SafetensorsEntry[] = [];
  let metadata: Record<string, string> = {};
  for (const [name, raw] of Object.entries(header as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (raw === null) continue;
      if (typeof raw !== 'object' || Array.isArray(raw) || !Object.values(raw as object).every((v) => typeof v === 'string')) {
        throw new SafetensorsError(`${file}: "__metadata__" must be an object of strings`);
      }
      metadata = raw as Record<string, string>;
      continue;
    }
    const r = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    const where = `${file}: tensor '${name}'`;
    if (typeof r !== 'object' || r === null) throw new SafetensorsError(`${where}: header entry is not an object`);
    if (typeof r.dtype !== 'string' || !(r.dtype in DTYPE_SIZE)) {
      throw new SafetensorsError(`${where}: unsupported dtype '${String(r.dtype)}' (supported: ${Object.keys(DTYPE_SIZE).join(', ')})`);
    }
    const dtype = r.dtype as SafetensorsDtype;
    if (!Array.isArray(r.shape) || !r.shape.every((d) => Number.isInteger(d) && d >= 0)) {
      throw new SafetensorsError(`${where}: shape ${JSON.stringify(r.shape)} is not a list of non-negative integers`);
    }
    const shape = r.shape as number[];
    const off = r.data_offsets;
    if (!Array.isArray(off) || off.length !== 2 || !off.every((d) => Number.isInteger(d) && d >= 0) || off[1] < off[0]) {
      throw new SafetensorsError(`${where}: data_offsets ${JSON.stringify(off)} must be [begin, end] with 0 <= begin <= end`);
    }
    const [b, e] = off as number[];
    const expected = numel(shape) * DTYPE_SIZE[dtype];
    if (!Number.isSafeInteger(expected) || !Number.isSafeInteger(e)) throw new SafetensorsError(`${where}: shape ${JSON.stringify(shape)} or data_offsets overflow`);
    if (e - b !== expected) {
      throw new SafetensorsError(`${where}: data_offsets [${b}, ${e}] hold ${e - b} bytes, but ${dtype} ${JSON.stringify(shape)} needs ${expected}`);
    }
    if (e > dataLen) {
      throw new SafetensorsError(`${where}: truncated file: the tensor ends at data byte ${e}, the data section has ${dataLen} bytes ` +
        `(file size ${size}, expected at least ${dataStart + e})`);
    }
    entries.push({ name, dtype, shape, begin: dataStart + b, end: dataStart + e });
  }
  // As the reference's Metadata::validate + read_metadata: sorted by offsets, the tensors tile
  // the data section exactly — each starts where the previous ended, the first at 0, the last at
  // the end of the file (no gap, no overlap, no trailing byte). A header length field moved into
  // the padding shifts every tensor and leaves bytes over: an error here, never a silent shift.
  const sorted = [...entries].sort((x, y) => x.begin - y.begin || x.end - y.end);
  let pos = dataStart;
  for (const t of sorted) {
    if (t.begin !== pos) {
      const prev = sorted[sorted.indexOf(t) - 1];
      throw new SafetensorsError(t.begin < pos
        ? `${file}: tensors '${prev.name}' and '${t.name}' overlap in the data section`
        : `${file}: tensor '${t.name}' starts at data byte ${t.begin - dataStart}, but the ${prev ? `previous tensor '${prev.name}' ends` : 'data section starts'} at ${pos - dataStart} ` +
          '(a gap: the tensors must tile the data section; corrupt header?)');
    }
    pos = t.end;
  }
  if (pos !== size) {
    throw new SafetensorsError(`${file}: the tensors cover ${pos - dataStart} data bytes but the data section has ${dataLen} ` +
      `(${size - pos} trailing byte(s) after the last tensor; corrupt header length or file?)`);
  }
  return { entries, metadata };
}

// ---------------------------------------------------------------------------------------------
// dtype conversion
// ---------------------------------------------------------------------------------------------

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/** IEEE half → float32 (exact; subnormals, inf and NaN included). */
export function halfToFloat(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

/** float32 → IEEE half bits, round-to-nearest-even (as numpy/torch). */
export function floatToHalf(x: number): number {
  f32Scratch[0] = x;
  const f = u32Scratch[0];
  const sign = (f >>> 16) & 0x8000;
  const exp = (f >>> 23) & 0xff;
  let mant = f & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    let r = mant >> shift;
    const rem = mant & ((1 << shift) - 1);
    if (rem > half || (rem === half && (r & 1))) r++;
    return sign | r;
  }
  let r = mant >> 13;
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (r & 1))) {
    r++;
    if (r === 0x400) {
      r = 0;
      e++;
      if (e >= 31) return sign | 0x7c00;
    }
  }
  return sign | (e << 10) | r;
}

/** Converts one tensor's raw little-endian bytes to a host array (shared with the GGUF reader). */
export function decodeTensor(buf: Buffer, e: TensorEntry, file: string): HostTensor {
  return decode(buf, e, file);
}

function decode(buf: Buffer, e: TensorEntry, file: string): HostTensor {
  const n = numel(e.shape);
  const { dtype, shape } = e;
  // Copy into an aligned buffer of our own (Buffer slices may be unaligned / pooled).
  const ab = new ArrayBuffer(buf.length);
  new Uint8Array(ab).set(buf);
  switch (dtype) {
    case 'F32':
      return { dtype: 'float32', shape, data: new Float32Array(ab, 0, n) };
    case 'F64': {
      const src = new Float64Array(ab, 0, n);
      return { dtype: 'float32', shape, data: Float32Array.from(src) };
    }
    case 'F16': {
      const src = new Uint16Array(ab, 0, n);
      const out = new Float32Array(n);
      // 65536-entry table: faster than bit twiddling per element for big tensors.
      const table = halfTable();
      for (let i = 0; i < n; i++) out[i] = table[src[i]];
      return { dtype: 'float32', shape, data: out };
    }
    case 'BF16': {
      const src = new Uint16Array(ab, 0, n);
      const out = new Float32Array(n);
      const bits = new Uint32Array(out.buffer);
      for (let i = 0; i < n; i++) bits[i] = src[i] << 16;
      return { dtype: 'float32', shape, data: out };
    }
    case 'I64': {
      const src = new BigInt64Array(ab, 0, n);
      const out = new Int32Array(n);
      for (let i = 0; i < n; i++) {
        const v = src[i];
        if (v > 2147483647n || v < -2147483648n) {
          throw new SafetensorsError(`${file}: tensor '${e.name}': I64 value ${v} at index ${i} does not fit in int32`);
        }
        out[i] = Number(v);
      }
      return { dtype: 'int32', shape, data: out };
    }
    case 'I32':
      return { dtype: 'int32', shape, data: new Int32Array(ab, 0, n) };
    case 'I16':
      return { dtype: 'int32', shape, data: Int32Array.from(new Int16Array(ab, 0, n)) };
    case 'I8':
      return { dtype: 'int32', shape, data: Int32Array.from(new Int8Array(ab, 0, n)) };
    case 'U8':
      return { dtype: 'uint8', shape, data: new Uint8Array(ab, 0, n) };
    case 'BOOL':
      return { dtype: 'bool', shape, data: new Uint8Array(ab, 0, n) };
    default:
      throw new SafetensorsError(`${file}: tensor '${e.name}': ${dtype} cannot be decoded here`);
  }
}

let _halfTable: Float32Array | null = null;
function halfTable(): Float32Array {
  if (!_halfTable) {
    _halfTable = new Float32Array(65536);
    for (let i = 0; i < 65536; i++) _halfTable[i] = halfToFloat(i);
  }
  return _halfTable;
}

// ---------------------------------------------------------------------------------------------
// writing
// ---------------------------------------------------------------------------------------------

export interface WriteTensor {
  dtype: SafetensorsDtype;
  shape: number[];
  /** Values; converted to `dtype` on write (float32 → F16/BF16 round to nearest even). */
  data: ArrayLike<number> | ArrayLike<bigint>;
}

function encode(t: WriteTensor, name: string): Buffer {
  const n = numel(t.shape);
  if (t.data.length !== n) {
    throw new SafetensorsError(`tensor '${name}': ${t.data.length} values for shape ${JSON.stringify(t.shape)} (${n} expected)`);
  }
  const d = t.data as ArrayLike<number>;
  switch (t.dtype) {
    case 'F32': return Buffer.from(Float32Array.from(d).buffer);
    case 'F64': return Buffer.from(Float64Array.from(d).buffer);
    case 'F16': return Buffer.from(Uint16Array.from(d, (x) => floatToHalf(x)).buffer);
    case 'BF16': {
      const f = Float32Array.from(d);
      const u = new Uint32Array(f.buffer);
      const out = new Uint16Array(n);
      for (let i = 0; i < n; i++) {
        const x = u[i];
        if ((x & 0x7f800000) === 0x7f800000 && (x & 0x7fffff)) out[i] = (x >>> 16) | 0x40; // NaN stays NaN
        else out[i] = (x + 0x7fff + ((x >>> 16) & 1)) >>> 16; // round to nearest even
      }
      return Buffer.from(out.buffer);
    }
    case 'I64': return Buffer.from(BigInt64Array.from(t.data as ArrayLike<number | bigint>, (x) => BigInt(x)).buffer);
    case 'I32': return Buffer.from(Int32Array.from(d).buffer);
    case 'I16': return Buffer.from(Int16Array.from(d).buffer);
    case 'I8': return Buffer.from(Int8Array.from(d).buffer);
    case 'U8': return Buffer.from(Uint8Array.from(d).buffer);
    case 'BOOL': return Buffer.from(Uint8Array.from(d, (x) => (x ? 1 : 0)).buffer);
  }
}

/** Float values encoded as a safetensors dtype (float32 → F16/BF16 round to nearest even); `name` is for errors. */
export function encodeValues(dtype: SafetensorsDtype, data: Float32Array, name: string): Buffer {
  return encode({ dtype, shape: [data.length], data }, name);
}

/**
 * Writes tensors (in the given order) to `file` atomically: a temporary file in the same
 * directory is renamed into place only after every byte is written.
 */
export function writeSafetensors(file: string, tensors: Record<string, WriteTensor>, metadata?: Record<string, string>, opts: { flag?: string } = {}): void {
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = metadata;
  const bodies: Buffer[] = [];
  let off = 0;
  for (const [name, t] of Object.entries(tensors)) {
    if (!(t.dtype in DTYPE_SIZE)) throw new SafetensorsError(`tensor '${name}': unsupported dtype '${t.dtype}'`);
    const b = encode(t, name);
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [off, off + b.length] };
    bodies.push(b);
    off += b.length;
  }
  let json = Buffer.from(JSON.stringify(header), 'utf8');
  // Pad the header with spaces so the data section starts 8-byte aligned (as the reference writer does).
  const pad = (8 - ((8 + json.length) % 8)) % 8;
  if (pad) json = Buffer.concat([json, Buffer.alloc(pad, 0x20)]);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  try {
    writeFileAtomic(file, [len, json, ...bodies], opts.flag);
  } catch (e) {
    if (e instanceof FileInputError) throw e;
    throw new SafetensorsError((e as Error).message);
  }
}
