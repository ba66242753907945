/**
 * A reader for SentencePiece `tokenizer.model` files: the protobuf `ModelProto` of
 * google/sentencepiece `src/sentencepiece_model.proto` (v0.1.97), decoded by hand (proto2 wire
 * format; only the fields an encoder/decoder needs are kept, unknown fields are skipped).
 *
 *   ModelProto      1: repeated SentencePiece pieces   2: TrainerSpec   3: NormalizerSpec
 *                   5: NormalizerSpec denormalizer_spec
 *   SentencePiece   1: piece (string)   2: score (float)   3: type (enum, default NORMAL)
 *   TrainerSpec     3: model_type (UNIGRAM=1 default, BPE=2, WORD=3, CHAR=4)   24: treat_whitespace_as_suffix
 *                   35: byte_fallback   40..43: unk/bos/eos/pad id   44: unk_surface
 *   NormalizerSpec  1: name   2: precompiled_charsmap   3: add_dummy_prefix (default true)
 *                   4: remove_extra_whitespaces (default true)   5: escape_whitespaces (default true)
 */
import { TokenizerLoadError } from './types';

/** `ModelProto.SentencePiece.Type`. */
export enum PieceType {
  NORMAL = 1,
  UNKNOWN = 2,
  CONTROL = 3,
  USER_DEFINED = 4,
  UNUSED = 5,
  BYTE = 6,
}

export interface SentencePiece {
  piece: string;
  score: number;
  type: PieceType;
}

export interface TrainerSpec {
  /** 1 UNIGRAM, 2 BPE, 3 WORD, 4 CHAR. */
  modelType: number;
  byteFallback: boolean;
  treatWhitespaceAsSuffix: boolean;
  unkId: number;
  bosId: number;
  eosId: number;
  padId: number;
  unkSurface: string;
}

export interface NormalizerSpec {
  name: string;
  /** Non-empty for the nmt_nfkc-style rule sets (a darts-clone trie). */
  precompiledCharsmap: Uint8Array;
  addDummyPrefix: boolean;
  removeExtraWhitespaces: boolean;
  escapeWhitespaces: boolean;
}

export interface SentencePieceModelProto {
  pieces: SentencePiece[];
  trainer: TrainerSpec;
  normalizer: NormalizerSpec;
  denormalizer?: NormalizerSpec;
}

export const MODEL_TYPE_NAMES: Record<number, string> = { 1: 'UNIGRAM', 2: 'BPE', 3: 'WORD', 4: 'CHAR' };

// ---------------------------------------------------------------------------------------------
// wire format
// ---------------------------------------------------------------------------------------------

// ignoreBOM: a piece may be U+FEFF itself (Mistral v1 id 31759), which TextDecoder would drop
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

class Reader {
  pos: number;
  constructor(readonly buf: Uint8Array, readonly file: string, start: number, readonly end: number) {
    this.pos = start;
  }

  fail(what: string): never {
    throw new TokenizerLoadError(`${this.file}: not a valid SentencePiece model (${what} at byte ${this.pos} of ${this.buf.length}); re-download tokenizer.model`);
  }

  /** A varint as [low 32 bits (unsigned), high bits]. */
  varint(): [number, number] {
    let lo = 0, hi = 0, shift = 0;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.end) this.fail('truncated varint');
      const b = this.buf[this.pos++];
      if (shift < 28) lo |= (b & 0x7f) << shift;
      else if (shift === 28) {
        lo |= (b & 0x0f) << 28;
        hi |= (b & 0x7f) >>> 4;
      } else hi |= (b & 0x7f) << (shift - 32);
      if (!(b & 0x80)) return [lo >>> 0, hi >>> 0];
      shift += 7;
    }
    this.fail('varint longer than 10 bytes');
  }

  /** int32 field (negative values are 10-byte varints: the low 32 bits carry the value). */
  int32(): number {
    return this.varint()[0] | 0;
  }

  bool(): boolean {
    const [lo, hi] = this.varint();
    return lo !== 0 || hi !== 0;
  }

  bytes(): Uint8Array {
    const n = this.varint()[0];
    if (n > this.end - this.pos) this.fail(`field length ${n} runs past the end (${this.end - this.pos} bytes left)`);
    const b = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return b;
  }

  string(): string {
    const b = this.bytes();
    try {
      return utf8.decode(b);
    } catch {
      this.fail('string field is not UTF-8');
    }
  }

  float(): number {
    if (this.end - this.pos < 4) this.fail('truncated float');
    const v = new DataView(this.buf.buffer, this.buf.byteOffset + this.pos, 4).getFloat32(0, true);
    this.pos += 4;
    return v;
  }

  /** Reads a field key; returns [field number, wire type]. */
  key(): [number, number] {
    const [lo, hi] = this.varint();
    if (hi !== 0) this.fail('field number out of range');
    const field = lo >>> 3, wire = lo & 7;
    if (field === 0) this.fail('field number 0');
    return [field, wire];
  }

  skip(wire: number): void {
    switch (wire) {
      case 0: this.varint(); return;
      case 1: this.advance(8); return;
      case 2: this.bytes(); return;
      case 5: this.advance(4); return;
      default: this.fail(`unsupported wire type ${wire}`);
    }
  }

  private advance(n: number): void {
    if (this.end - this.pos < n) this.fail('truncated field');
    this.pos += n;
  }

  sub(): Reader {
    const b = this.bytes();
    return new Reader(this.buf, this.file, b.byteOffset - this.buf.byteOffset, b.byteOffset - this.buf.byteOffset + b.length);
  }

  expectWire(wire: number, want: number, field: string): void {
    if (wire !== want) this.fail(`${field} has wire type ${wire}, expected ${want}`);
  }
}

function readPiece(r: Reader): SentencePiece {
  const p: SentencePiece = { piece: '', score: 0, type: PieceType.NORMAL };
  while (r.pos < r.end) {
    const [f, w] = r.key();
    if (f === 1) { r.expectWire(w, 2, 'piece'); p.piece = r.string(); }
    else if (f === 2) { r.expectWire(w, 5, 'score'); p.score = r.float(); }
    else if (f === 3) { r.expectWire(w, 0, 'type'); p.type = r.int32(); }
    else r.skip(w);
  }
  return p;
}

function readTrainer(r: Reader): TrainerSpec {
  const t: TrainerSpec = { modelType: 1, byteFallback: false, treatWhitespaceAsSuffix: false, unkId: 0, bosId: 1, eosId: 2, padId: -1, unkSurface: ' \u2047 ' };
  while (r.pos < r.end) {
    const [f, w] = r.key();
    if (f === 3 && w === 0) t.modelType = r.int32();
    else if (f === 24 && w === 0) t.treatWhitespaceAsSuffix = r.bool();
    else if (f === 35 && w === 0) t.byteFallback = r.bool();
    else if (f === 40 && w === 0) t.unkId = r.int32();
    else if (f === 41 && w === 0) t.bosId = r.int32();
    else if (f === 42 && w === 0) t.eosId = r.int32();
    else if (f === 43 && w === 0) t.padId = r.int32();
    else if (f === 44 && w === 2) t.unkSurface = r.string();
    else r.skip(w);
  }
  return t;
}

function readNormalizer(r: Reader): NormalizerSpec {
  const n: NormalizerSpec = { name: '', precompiledCharsmap: new Uint8Array(0), addDummyPrefix: true, removeExtraWhitespaces: true, escapeWhitespaces: true };
  while (r.pos < r.end) {
    const [f, w] = r.key();
    if (f === 1 && w === 2) n.name = r.string();
    else if (f === 2 && w === 2) n.precompiledCharsmap = r.bytes().slice();
    else if (f === 3 && w === 0) n.addDummyPrefix = r.bool();
    else if (f === 4 && w === 0) n.removeExtraWhitespaces = r.bool();
    else if (f === 5 && w === 0) n.escapeWhitespaces = r.bool();
    else r.skip(w);
  }
  return n;
}

/** Parses a tokenizer.model; `file` names it in errors. Checks pieces, types and special ids. */
export function parseSentencePieceModel(buf: Uint8Array, file: string): SentencePieceModelProto {
  const r = new Reader(buf, file, 0, buf.length);
  const pieces: SentencePiece[] = [];
  let trainer: TrainerSpec | undefined;
  let normalizer: NormalizerSpec | undefined;
  let denormalizer: NormalizerSpec | undefined;
  while (r.pos < r.end) {
    const [f, w] = r.key();
    if (f === 1) { r.expectWire(w, 2, 'pieces'); pieces.push(readPiece(r.sub())); }
    else if (f === 2) { r.expectWire(w, 2, 'trainer_spec'); trainer = readTrainer(r.sub()); }
    else if (f === 3) { r.expectWire(w, 2, 'normalizer_spec'); normalizer = readNormalizer(r.sub()); }
    else if (f === 5) { r.expectWire(w, 2, 'denormalizer_spec'); denormalizer = readNormalizer(r.sub()); }
    else r.skip(w);
  }
  const bad = (msg: string): never => {
    throw new TokenizerLoadError(`${file}: not a valid SentencePiece model (${msg}); re-download tokenizer.model`);
  };
  if (pieces.length === 0) bad('no pieces');
  if (!trainer) bad('no trainer_spec');
  if (!normalizer) bad('no normalizer_spec');
  const seen = new Map<string, number>();
  pieces.forEach((p, i) => {
    if (p.piece === '') bad(`piece ${i} is empty`);
    if (!(p.type >= 1 && p.type <= 6)) bad(`piece ${i} '${p.piece}' has unknown type ${p.type}`);
    if (!Number.isFinite(p.score)) bad(`piece ${i} '${p.piece}' has score ${p.score}`);
    const prev = seen.get(p.piece);
    if (prev !== undefined) bad(`piece '${p.piece}' appears twice (ids ${prev} and ${i})`);
    seen.set(p.piece, i);
  });
  const t = trainer as TrainerSpec;
  for (const [name, id] of [['unk_id', t.unkId], ['bos_id', t.bosId], ['eos_id', t.eosId], ['pad_id', t.padId]] as const) {
    if (id >= pieces.length) bad(`trainer_spec.${name} ${id} >= ${pieces.length} pieces`);
  }
  if (t.unkId < 0 || pieces[t.unkId].type !== PieceType.UNKNOWN) bad(`unk_id ${t.unkId} is not an UNKNOWN piece`);
  return { pieces, trainer: t, normalizer: normalizer as NormalizerSpec, denormalizer };
}
