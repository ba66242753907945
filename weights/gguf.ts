/**
 * GGUF v3 (https://github.com/ggml-org/ggml/blob/master/docs/gguf.md), the subset tfjs-vlm writes
 * and reads (little-endian only):
 *
 *   u32 magic 'GGUF' (bytes 47 47 55 46) · u32 version = 3 · u64 tensor_count · u64 metadata_kv_count
 *   metadata KVs: gguf string key (u64 length + UTF-8 bytes) · u32 value type · value
 *   tensor infos: gguf string name · u32 n_dims · u64 dims[n_dims] (ne[0] first: the innermost,
 *                 fastest-varying dimension, i.e. the REVERSE of the row-major shape) · u32 ggml type
 *                 · u64 offset (relative to the tensor data section, a multiple of the alignment)
 *   0x00 padding to `general.alignment` (u32; 32 when absent) · tensor data, each tensor padded
 *   with 0x00 to the alignment.
 *
 * GGML types used here (ids from ggml.h): F32 0, F16 1, Q4_0 2, Q8_0 8, I8 24, I16 25, I32 26,
 * I64 27, F64 28, BF16 30. Q8_0 blocks are 32 values in 34 bytes (f16 scale + 32 int8), Q4_0
 * blocks 32 values in 18 bytes (f16 scale + 16 bytes of nibbles); blocks run along ne[0], so a
 * quantized tensor's row length must be a multiple of 32.
 *
 * The writer computes the whole header from names, shapes and types first (sizes are known from
 * them), then takes each tensor's bytes in order and writes them at once (streamed: the caller
 * never holds more than one tensor, or one chunk of one). The reader validates every header field
 * and exposes tensors as `TensorEntry`s with absolute file offsets (so they can be memory-mapped).
 */
import fs from 'node:fs';
import { AlignedWriter } from '../io/aligned_writer';
import { NativeMapping, NativeType, NativeWeight } from '../layers/native_weight';
import { decodeTensor, EntryDtype, HostTensor, SafetensorsError, TensorEntry } from './safetensors';

export const GGUF_MAGIC = 0x46554747; // 'GGUF' read as a little-endian u32
export const GGUF_VERSION = 3;
export const GGUF_DEFAULT_ALIGNMENT = 32;

/** GGML tensor type ids (ggml.h `enum ggml_type`) of the types tfjs-vlm reads and writes. */
export const GGML_TYPE = { F32: 0, F16: 1, Q4_0: 2, Q8_0: 8, I8: 24, I16: 25, I32: 26, I64: 27, F64: 28, BF16: 30 } as const;
export type GgmlTypeName = keyof typeof GGML_TYPE;
const GGML_NAME = new Map<number, GgmlTypeName>(Object.entries(GGML_TYPE).map(([k, v]) => [v, k as GgmlTypeName]));

/** [values per block, bytes per block]. */
const BLOCK: Record<GgmlTypeName, [number, number]> = {
  F32: [1, 4], F16: [1, 2], BF16: [1, 2], F64: [1, 8], I8: [1, 1], I16: [1, 2], I32: [1, 4], I64: [1, 8], Q8_0: [32, 34], Q4_0: [32, 18],
};

/** llama.cpp `llama_ftype` values for `general.file_type` (MOSTLY_BF16 = 32 is llama.cpp's, after the spec's list). */
export const GGUF_FILE_TYPE: Record<string, number> = { f32: 0, f16: 1, q4_0: 2, q8_0: 7, bf16: 32 };

/** Metadata value types (gguf.md `gguf_metadata_value_type`). */
export const GGUF_VALUE = { UINT8: 0, INT8: 1, UINT16: 2, INT16: 3, UINT32: 4, INT32: 5, FLOAT32: 6, BOOL: 7, STRING: 8, ARRAY: 9, UINT64: 10, INT64: 11, FLOAT64: 12 } as const;

export class GgufError extends SafetensorsError {
  constructor(message: string) {
    super(message);
    this.name = 'GgufError';
  }
}

/** Bytes of a tensor of `type` and row-major `shape` (q types: the last dimension a multiple of 32). */
export function ggmlTensorBytes(type: GgmlTypeName, shape: readonly number[]): number {
  const [per, bytes] = BLOCK[type];
  const inner = shape.length ? shape[shape.length - 1] : 1;
  if (inner % per !== 0) throw new GgufError(`${type} needs the last dimension to be a multiple of ${per}, got shape [${shape.join(', ')}]`);
  return (shape.reduce((a, b) => a * b, 1) / per) * bytes;
}

/** safetensors dtype ↔ GGML type for what is stored as is. */
export const GGML_OF_DTYPE: Partial<Record<EntryDtype, GgmlTypeName>> = {
  F32: 'F32', F16: 'F16', BF16: 'BF16', F64: 'F64', I8: 'I8', I16: 'I16', I32: 'I32', I64: 'I64', Q8_0: 'Q8_0', Q4_0: 'Q4_0',
};

/** The native-weight type of a GGML type (null for types native weights do not hold). */
export function nativeTypeOf(t: GgmlTypeName): NativeType | null {
  return ({ F32: 'f32', F16: 'f16', BF16: 'bf16', Q8_0: 'q8_0', Q4_0: 'q4_0' } as Partial<Record<GgmlTypeName, NativeType>>)[t] ?? null;
}

/** A typed metadata value for the writer. */
export type GgufValue =
  | { type: 'string'; value: string }
  | { type: 'uint32'; value: number }
  | { type: 'uint64'; value: number }
  | { type: 'int32'; value: number }
  | { type: 'float32'; value: number }
  | { type: 'bool'; value: boolean }
  | { type: 'string[]'; value: string[] };

export interface GgufTensorInfo {
  name: string;
  type: GgmlTypeName;
  /** Row-major shape (torch order); written reversed as GGUF dims. */
  shape: number[];
}

export const alignUp = (n: number, a: number): number => n + ((a - (n % a)) % a);

// ---------------------------------------------------------------------------------------------
// writing
// ---------------------------------------------------------------------------------------------

class ByteSink {
  private chunks: Buffer[] = [];
  length = 0;
  push(b: Buffer): void {
    this.chunks.push(b);
    this.length += b.length;
  }
  u32(v: number): void {
    const b = Buffer.alloc(4);
    b.writeUInt32LE(v);
    this.push(b);
  }
  u64(v: number): void {
    const b = Buffer.alloc(8);
    b.writeBigUInt64LE(BigInt(v));
    this.push(b);
  }
  str(s: string): void {
    const b = Buffer.from(s, 'utf8');
    this.u64(b.length);
    this.push(b);
  }
  bytes(): Buffer {
    return Buffer.concat(this.chunks, this.length);
  }
}

function writeValue(s: ByteSink, key: string, v: GgufValue): void {
  switch (v.type) {
    case 'string': s.u32(GGUF_VALUE.STRING); s.str(v.value); return;
    case 'uint32': s.u32(GGUF_VALUE.UINT32); s.u32(v.value); return;
    case 'uint64': s.u32(GGUF_VALUE.UINT64); s.u64(v.value); return;
    case 'int32': { s.u32(GGUF_VALUE.INT32); const b = Buffer.alloc(4); b.writeInt32LE(v.value); s.push(b); return; }
    case 'float32': { s.u32(GGUF_VALUE.FLOAT32); const b = Buffer.alloc(4); b.writeFloatLE(v.value); s.push(b); return; }
    case 'bool': s.u32(GGUF_VALUE.BOOL); s.push(Buffer.from([v.value ? 1 : 0])); return;
    case 'string[]':
      s.u32(GGUF_VALUE.ARRAY); s.u32(GGUF_VALUE.STRING); s.u64(v.value.length);
      for (const x of v.value) s.str(x);
      return;
    default: throw new GgufError(`metadata '${key}': unsupported value type`);
  }
}

/** Where each tensor lands: header bytes (padded), and each tensor's offset and size in the data section. */
export interface GgufLayout {
  header: Buffer;
  alignment: number;
  /** Per tensor (same order): offset relative to the data section, and its byte size. */
  tensors: { offset: number; bytes: number }[];
  /** Total file size. */
  fileBytes: number;
}

/** Computes the header and data layout (general.alignment is added when absent). */
export function ggufLayout(metadata: Record<string, GgufValue>, tensors: readonly GgufTensorInfo[], alignment = GGUF_DEFAULT_ALIGNMENT): GgufLayout {
  if (alignment % 8 !== 0 || alignment <= 0) throw new GgufError(`general.alignment must be a positive multiple of 8, got ${alignment}`);
  const md: Record<string, GgufValue> = { 'general.alignment': { type: 'uint32', value: alignment }, ...metadata };
  if (md['general.alignment'].type !== 'uint32' || md['general.alignment'].value !== alignment) throw new GgufError('metadata general.alignment disagrees with the alignment argument');
  const s = new ByteSink();
  s.u32(GGUF_MAGIC);
  s.u32(GGUF_VERSION);
  s.u64(tensors.length);
  s.u64(Object.keys(md).length);
  for (const [k, v] of Object.entries(md)) {
    s.str(k);
    writeValue(s, k, v);
  }
  const out: { offset: number; bytes: number }[] = [];
  const seen = new Set<string>();
  let off = 0;
  for (const t of tensors) {
    if (seen.has(t.name)) throw new GgufError(`tensor '${t.name}' appears twice`);
    seen.add(t.name);
    if (!(t.type in GGML_TYPE)) throw new GgufError(`tensor '${t.name}': unsupported GGML type '${t.type}'`);
    const bytes = ggmlTensorBytes(t.type, t.shape);
    s.str(t.name);
    s.u32(t.shape.length);
    for (let i = t.shape.length - 1; i >= 0; i--) s.u64(t.shape[i]);
    s.u32(GGML_TYPE[t.type]);
    s.u64(off);
    out.push({ offset: off, bytes });
    off = alignUp(off + bytes, alignment);
  }
  const pad = alignUp(s.length, alignment) - s.length;
  if (pad) s.push(Buffer.alloc(pad));
  const header = s.bytes();
  const last = out.length ? out[out.length - 1] : null;
  return { header, alignment, tensors: out, fileBytes: header.length + (last ? last.offset + last.bytes : 0) };
}

/**
 * A streamed GGUF writer on an open file descriptor: the header is written on construction, then
 * `write(bytes)` appends the current tensor's bytes (in as many chunks as wanted) and `next()`
 * pads and moves to the following tensor. `close()` checks that every tensor was written whole.
 */
export class GgufWriter {
  readonly layout: GgufLayout;
  private pos = 0;
  private index = 0;
  private written = 0;
  private readonly out: AlignedWriter; // whole 2 MiB folios in the page cache: the copy maps in huge pages

  constructor(fd: number, private readonly tensors: readonly GgufTensorInfo[], metadata: Record<string, GgufValue>, alignment = GGUF_DEFAULT_ALIGNMENT) {
    this.layout = ggufLayout(metadata, tensors, alignment);
    this.out = new AlignedWriter(fd);
    this.raw(this.layout.header);
  }

  private raw(b: Uint8Array): void {
    this.out.write(b);
    this.pos += b.length;
  }

  /** Appends bytes of the current tensor. */
  write(b: Uint8Array): void {
    const t = this.tensors[this.index];
    if (!t) throw new GgufError('GgufWriter: every tensor has been written');
    const want = this.layout.tensors[this.index].bytes;
    if (this.written + b.length > want) throw new GgufError(`tensor '${t.name}': ${this.written + b.length} bytes written, ${want} expected`);
    this.raw(b);
    this.written += b.length;
  }

  /** Finishes the current tensor (its size must be complete) and pads to the next one. */
  next(): void {
    const t = this.tensors[this.index];
    const want = this.layout.tensors[this.index].bytes;
    if (this.written !== want) throw new GgufError(`tensor '${t.name}': ${this.written} bytes written, ${want} expected`);
    this.index++;
    this.written = 0;
    if (this.index < this.tensors.length) {
      const target = this.layout.header.length + this.layout.tensors[this.index].offset;
      if (target > this.pos) this.raw(Buffer.alloc(target - this.pos));
    }
  }

  /** Writes the buffered tail and checks that every tensor was written. */
  close(): void {
    this.out.end();
    if (this.index !== this.tensors.length) throw new GgufError(`GgufWriter: ${this.index} of ${this.tensors.length} tensors written`);
    if (this.pos !== this.layout.fileBytes) throw new GgufError(`GgufWriter: wrote ${this.pos} bytes, the layout has ${this.layout.fileBytes}`);
  }
}

/** Writes a whole GGUF file from in-memory tensors (tests and small files). */
export function writeGguf(file: string, metadata: Record<string, GgufValue>, tensors: { name: string; type: GgmlTypeName; shape: number[]; data: Uint8Array }[], alignment?: number): void {
  const fd = fs.openSync(file, 'w');
  try {
    const w = new GgufWriter(fd, tensors, metadata, alignment);
    for (const t of tensors) {
      w.write(t.data);
      w.next();
    }
    w.close();
  } finally {
    fs.closeSync(fd);
  }
}

// ---------------------------------------------------------------------------------------------
// reading
// ---------------------------------------------------------------------------------------------

/** Largest header we read (metadata + tensor infos). */
const MAX_HEADER_BYTES = 256 * 2 ** 20;

class Cursor {
  pos = 0;
  constructor(private readonly buf: Buffer, private readonly file: string) {}
  need(n: number): void {
    if (this.pos + n > this.buf.length) throw new GgufError(`${this.file}: truncated GGUF header (needs more than ${this.buf.length} bytes at byte ${this.pos})`);
  }
  u8(): number { this.need(1); return this.buf[this.pos++]; }
  u32(): number { this.need(4); const v = this.buf.readUInt32LE(this.pos); this.pos += 4; return v; }
  u64(what: string): number {
    this.need(8);
    const v = this.buf.readBigUInt64LE(this.pos);
    this.pos += 8;
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new GgufError(`${this.file}: ${what} ${v} is too large`);
    return Number(v);
  }
  str(what: string): string {
    const n = this.u64(`${what} length`);
    this.need(n);
    const s = this.buf.toString('utf8', this.pos, this.pos + n);
    this.pos += n;
    return s;
  }
  value(type: number, key: string, depth = 0): unknown {
    const b = this.buf;
    switch (type) {
      case GGUF_VALUE.UINT8: return this.u8();
      case GGUF_VALUE.INT8: { this.need(1); return b.readInt8(this.pos++); }
      case GGUF_VALUE.UINT16: { this.need(2); const v = b.readUInt16LE(this.pos); this.pos += 2; return v; }
      case GGUF_VALUE.INT16: { this.need(2); const v = b.readInt16LE(this.pos); this.pos += 2; return v; }
      case GGUF_VALUE.UINT32: return this.u32();
      case GGUF_VALUE.INT32: { this.need(4); const v = b.readInt32LE(this.pos); this.pos += 4; return v; }
      case GGUF_VALUE.FLOAT32: { this.need(4); const v = b.readFloatLE(this.pos); this.pos += 4; return v; }
      case GGUF_VALUE.BOOL: { const v = this.u8(); if (v > 1) throw new GgufError(`${this.file}: metadata '${key}': bool byte ${v}`); return v === 1; }
      case GGUF_VALUE.STRING: return this.str(`metadata '${key}'`);
      case GGUF_VALUE.UINT64: { this.need(8); const v = b.readBigUInt64LE(this.pos); this.pos += 8; return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v; }
      case GGUF_VALUE.INT64: { this.need(8); const v = b.readBigInt64LE(this.pos); this.pos += 8; return v <= BigInt(Number.MAX_SAFE_INTEGER) && v >= BigInt(Number.MIN_SAFE_INTEGER) ? Number(v) : v; }
      case GGUF_VALUE.FLOAT64: { this.need(8); const v = b.readDoubleLE(this.pos); this.pos += 8; return v; }
      case GGUF_VALUE.ARRAY: {
        if (depth > 8) throw new GgufError(`${this.file}: metadata '${key}': arrays nested too deep`);
        const et = this.u32();
        const n = this.u64(`metadata '${key}' array length`);
        if (n > this.buf.length) throw new GgufError(`${this.file}: metadata '${key}': array of ${n} elements is longer than the header`);
        const out: unknown[] = [];
        for (let i = 0; i < n; i++) out.push(this.value(et, key, depth + 1));
        return out;
      }
      default: throw new GgufError(`${this.file}: metadata '${key}': unknown value type ${type}`);
    }
  }
}

function readFully(fd: number, buf: Buffer, pos: number): number {
  let done = 0;
  while (done < buf.length) {
    const r = fs.readSync(fd, buf, done, buf.length - done, pos + done);
    if (r === 0) break;
    done += r;
  }
  return done;
}

export interface GgufTensorEntry extends TensorEntry {
  ggmlType: GgmlTypeName;
}

/** An open GGUF file: metadata, and tensors readable by name (the interface of a checkpoint shard). */
export class GgufFile {
  readonly path: string;
  readonly version: number;
  readonly alignment: number;
  readonly metadata: Map<string, unknown>;
  /** Absolute offset of the tensor data section. */
  readonly dataStart: number;
  readonly fileSize: number;
  private readonly entries = new Map<string, GgufTensorEntry>();
  private fd: number | null;
  private mapping: NativeMapping | null = null;

  private constructor(file: string, fd: number, size: number) {
    this.path = file;
    this.fd = fd;
    this.fileSize = size;
    const head = Buffer.alloc(Math.min(size, MAX_HEADER_BYTES));
    const got = readFully(fd, head, 0);
    const c = new Cursor(head.subarray(0, got), file);
    if (got < 24 || head.readUInt32LE(0) !== GGUF_MAGIC) throw new GgufError(`${file}: not a GGUF file (no 'GGUF' magic)`);
    c.pos = 4;
    this.version = c.u32();
    if (this.version !== 3) throw new GgufError(`${file}: GGUF version ${this.version} is not supported (only version 3; big-endian files are not supported either)`);
    const nTensors = c.u64('tensor count');
    const nKv = c.u64('metadata count');
    this.metadata = new Map();
    for (let i = 0; i < nKv; i++) {
      const key = c.str('metadata key');
      if (this.metadata.has(key)) throw new GgufError(`${file}: metadata key '${key}' appears twice`);
      this.metadata.set(key, c.value(c.u32(), key));
    }
    const al = this.metadata.get('general.alignment') ?? GGUF_DEFAULT_ALIGNMENT;
    if (typeof al !== 'number' || !Number.isInteger(al) || al <= 0 || al % 8 !== 0) throw new GgufError(`${file}: general.alignment ${String(al)} is not a positive multiple of 8`);
    this.alignment = al;
    const infos: { name: string; type: GgmlTypeName; shape: number[]; offset: number }[] = [];
    for (let i = 0; i < nTensors; i++) {
      const name = c.str('tensor name');
      const nd = c.u32();
      if (nd > 8) throw new GgufError(`${file}: tensor '${name}': ${nd} dimensions`);
      const dims: number[] = [];
      for (let d = 0; d < nd; d++) dims.push(c.u64(`tensor '${name}' dimension`));
      const tid = c.u32();
      const type = GGML_NAME.get(tid);
      if (!type) throw new GgufError(`${file}: tensor '${name}': GGML type ${tid} is not supported (supported: ${Object.entries(GGML_TYPE).map(([k, v]) => `${k}=${v}`).join(', ')})`);
      const offset = c.u64(`tensor '${name}' offset`);
      if (offset % al !== 0) throw new GgufError(`${file}: tensor '${name}': data offset ${offset} is not a multiple of the alignment ${al}`);
      if (this.entries.has(name) || infos.some((t) => t.name === name)) throw new GgufError(`${file}: tensor '${name}' appears twice`);
      infos.push({ name, type, shape: dims.reverse(), offset });
    }
    this.dataStart = alignUp(c.pos, al);
    const ranges: [number, number, string][] = [];
    for (const t of infos) {
      let bytes: number;
      try {
        bytes = ggmlTensorBytes(t.type, t.shape);
      } catch (e) {
        throw new GgufError(`${file}: tensor '${t.name}': ${(e as Error).message}`);
      }
      const begin = this.dataStart + t.offset;
      if (begin + bytes > size) throw new GgufError(`${file}: truncated: tensor '${t.name}' ends at byte ${begin + bytes}, the file has ${size}`);
      const dtype: EntryDtype = t.type;
      this.entries.set(t.name, { name: t.name, dtype, ggmlType: t.type, shape: t.shape, begin, end: begin + bytes });
      ranges.push([begin, begin + bytes, t.name]);
    }
    ranges.sort((a, b) => a[0] - b[0]);
    for (let i = 1; i < ranges.length; i++) {
      if (ranges[i][0] < ranges[i - 1][1]) throw new GgufError(`${file}: tensors '${ranges[i - 1][2]}' and '${ranges[i][2]}' overlap in the data section`);
    }
  }

  /** Opens and validates a GGUF file. */
  static open(file: string): GgufFile {
    let fd: number;
    try {
      const st = fs.statSync(file);
      if (!st.isFile()) throw new GgufError(`${file}: not a regular file; refusing to read it`);
      fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
    } catch (e) {
      if (e instanceof GgufError) throw e;
      throw new GgufError(`${file}: cannot open (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
    }
    try {
      return new GgufFile(file, fd, fs.fstatSync(fd).size);
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

  entry(name: string): GgufTensorEntry {
    const e = this.entries.get(name);
    if (!e) throw new GgufError(`${this.path}: no tensor named '${name}'`);
    return e;
  }

  /** A metadata string (undefined when absent; an error when not a string). */
  string(key: string): string | undefined {
    const v = this.metadata.get(key);
    if (v !== undefined && typeof v !== 'string') throw new GgufError(`${this.path}: metadata '${key}' is not a string`);
    return v;
  }

  /** Raw bytes [from, to) of one tensor, as stored. */
  readBytes(name: string, from = 0, to?: number): Buffer {
    const e = this.entry(name);
    if (this.fd === null) throw new GgufError(`${this.path}: file is closed`);
    const buf = Buffer.allocUnsafe((to ?? e.end - e.begin) - from);
    if (readFully(this.fd, buf, e.begin + from) !== buf.length) throw new GgufError(`${this.path}: tensor '${name}': unexpected end of file`);
    return buf;
  }

  private quantRows(e: GgufTensorEntry, start: number, end: number): HostTensor {
    if (e.shape.length !== 2) throw new GgufError(`${this.path}: tensor '${e.name}': ${e.ggmlType} tensors must be 2-D to be read as float32`);
    if (!this.mapping) this.mapping = NativeWeight.mapFile(this.path);
    const w = NativeWeight.fromMap(this.mapping, e.begin, nativeTypeOf(e.ggmlType)!, e.shape[0], e.shape[1]);
    try {
      return { dtype: 'float32', shape: [end - start, e.shape[1]], data: w.toFloat32(start, end - start) };
    } finally {
      w.dispose();
    }
  }

  /** One tensor as a host array (F16/BF16/F64 and Q8_0/Q4_0 → float32, as the safetensors reader). */
  read(name: string): HostTensor {
    const e = this.entry(name);
    if (e.ggmlType === 'Q8_0' || e.ggmlType === 'Q4_0') return this.quantRows(e, 0, e.shape[0]);
    return decodeTensor(this.readBytes(name), e, this.path);
  }

  /** Rows [start, end) along axis 0. */
  readRows(name: string, start: number, end: number): HostTensor {
    const e = this.entry(name);
    if (e.shape.length === 0 || start < 0 || end > e.shape[0] || start > end) {
      throw new GgufError(`${this.path}: tensor '${name}': rows [${start}, ${end}) out of range for shape ${JSON.stringify(e.shape)}`);
    }
    if (e.ggmlType === 'Q8_0' || e.ggmlType === 'Q4_0') return this.quantRows(e, start, end);
    const rowBytes = ggmlTensorBytes(e.ggmlType, e.shape) / e.shape[0];
    return decodeTensor(this.readBytes(name, start * rowBytes, end * rowBytes), { ...e, shape: [end - start, ...e.shape.slice(1)] }, this.path);
  }

  close(): void {
    if (this.fd !== null) {
      fs.closeSync(this.fd);
      this.fd = null;
    }
    this.mapping = null;
  }
}
