/**
 * SentencePiece BPE encode/decode, mirroring google/sentencepiece v0.1.97 (the version the test
 * vectors were made with):
 *
 * - normalize (src/normalizer.cc `Normalizer::Normalize`, identity rules only): optional removal
 *   of extra whitespace, the dummy prefix `▁`, spaces escaped as `▁`.
 * - encode (src/bpe_model.cc `Model::SampleEncode` with alpha 0): the whole normalized string is
 *   split into characters (user-defined symbols are matched first and never merged), then the
 *   adjacent pair whose concatenation is a piece with the highest score is merged, ties to the
 *   leftmost pair, until no pair is a piece; UNUSED pieces are split back into their parts.
 * - unknown pieces (src/sentencepiece_processor.cc `PopulateSentencePieceText`): with
 *   byte_fallback each becomes its UTF-8 bytes `<0xXX>`, otherwise runs of them merge into one
 *   `<unk>`.
 * - decode (`SentencePieceProcessor::Decode`): `▁` -> space, the first piece loses its leading
 *   `▁` when the dummy prefix is on, control pieces vanish, byte pieces are joined and decoded as
 *   UTF-8 with U+FFFD per invalid byte.
 *
 * Lengths are UTF-16 code units where sentencepiece uses bytes; only their growth is compared, so
 * the merge order is the same.
 */
import { PieceType, SentencePieceModelProto, MODEL_TYPE_NAMES } from './sentencepiece_model';
import { TokenizerLoadError } from './types';

/** U+2581, the whitespace symbol of SentencePiece. */
export const SPIECE_UNDERLINE = '\u2581';

export interface SpPiece {
  piece: string;
  id: number;
}

/** Max-heap of candidate merges: higher score first, then the leftmost. */
class MergeQueue {
  private left: number[] = [];
  private right: number[] = [];
  private score: number[] = [];
  private size: number[] = [];
  private heap: number[] = [];

  get length(): number {
    return this.heap.length;
  }

  private better(a: number, b: number): boolean {
    const sa = this.score[a], sb = this.score[b];
    return sa > sb || (sa === sb && this.left[a] < this.left[b]);
  }

  push(left: number, right: number, score: number, size: number): void {
    const k = this.left.length;
    this.left.push(left);
    this.right.push(right);
    this.score.push(score);
    this.size.push(size);
    const h = this.heap;
    let i = h.length;
    h.push(k);
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.better(h[i], h[p])) break;
      [h[i], h[p]] = [h[p], h[i]];
      i = p;
    }
  }

  /** Pops the best entry; returns [left, right, size]. */
  pop(): [number, number, number] {
    const h = this.heap;
    const top = h[0];
    const last = h.pop() as number;
    if (h.length > 0) {
      h[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1, r = l + 1;
        let m = i;
        if (l < h.length && this.better(h[l], h[m])) m = l;
        if (r < h.length && this.better(h[r], h[m])) m = r;
        if (m === i) break;
        [h[i], h[m]] = [h[m], h[i]];
        i = m;
      }
    }
    return [this.left[top], this.right[top], this.size[top]];
  }
}

const BYTE_PIECE = /^<0x([0-9A-Fa-f]{2})>$/;

export class SentencePieceBpe {
  readonly pieces: readonly { piece: string; score: number; type: PieceType }[];
  /** NORMAL, USER_DEFINED and UNUSED pieces: what merges may produce (`pieces_`). */
  private readonly mergeable = new Map<string, number>();
  /** CONTROL, UNKNOWN and BYTE pieces (`reserved_id_map_`). */
  private readonly reserved = new Map<string, number>();
  /** USER_DEFINED pieces, longest first (matched before splitting into characters). */
  private readonly userDefined: string[];
  private readonly byteIds: number[] = new Array(256).fill(-1);
  readonly unkId: number;
  readonly addDummyPrefix: boolean;
  private readonly removeExtraWhitespaces: boolean;
  private readonly escapeWhitespaces: boolean;
  private readonly treatWhitespaceAsSuffix: boolean;
  private readonly byteFallback: boolean;
  private readonly unkSurface: string;

  /**
   * `addDummyPrefix` overrides the model's normalizer_spec.add_dummy_prefix (transformers'
   * LlamaTokenizer with legacy=False loads the model with it turned off).
   */
  constructor(proto: SentencePieceModelProto, file: string, opts: { addDummyPrefix?: boolean } = {}) {
    if (proto.trainer.modelType !== 2) {
      throw new TokenizerLoadError(`${file}: SentencePiece model_type ${MODEL_TYPE_NAMES[proto.trainer.modelType] ?? proto.trainer.modelType} is not supported (only BPE models such as Llama/Mistral)`);
    }
    for (const [what, spec] of [['normalizer', proto.normalizer], ['denormalizer', proto.denormalizer]] as const) {
      if (spec && spec.precompiledCharsmap.length > 0) {
        throw new TokenizerLoadError(`${file}: ${what} '${spec.name}' uses a precompiled charsmap, which is not supported (only the identity normalizer of Llama/Mistral models)`);
      }
    }
    this.pieces = proto.pieces;
    proto.pieces.forEach((p, id) => {
      if (p.type === PieceType.NORMAL || p.type === PieceType.USER_DEFINED || p.type === PieceType.UNUSED) this.mergeable.set(p.piece, id);
      else this.reserved.set(p.piece, id);
      if (p.type === PieceType.BYTE) {
        const m = BYTE_PIECE.exec(p.piece);
        if (!m) throw new TokenizerLoadError(`${file}: byte piece ${id} is '${p.piece}', expected <0xXX>`);
        this.byteIds[parseInt(m[1], 16)] = id;
      }
    });
    this.userDefined = proto.pieces.filter((p) => p.type === PieceType.USER_DEFINED).map((p) => p.piece).sort((a, b) => b.length - a.length);
    this.unkId = proto.trainer.unkId;
    this.byteFallback = proto.trainer.byteFallback;
    if (this.byteFallback && this.byteIds.some((id) => id < 0)) {
      throw new TokenizerLoadError(`${file}: byte_fallback is on but the model lacks some of the 256 <0xXX> pieces`);
    }
    this.addDummyPrefix = opts.addDummyPrefix ?? proto.normalizer.addDummyPrefix;
    this.removeExtraWhitespaces = proto.normalizer.removeExtraWhitespaces;
    this.escapeWhitespaces = proto.normalizer.escapeWhitespaces;
    this.treatWhitespaceAsSuffix = proto.trainer.treatWhitespaceAsSuffix;
    this.unkSurface = proto.trainer.unkSurface;
  }

  get size(): number {
    return this.pieces.length;
  }

  /** `PieceToId`: reserved pieces first, then the others; unknown strings give the unk id. */
  pieceToId(piece: string): number {
    return this.reserved.get(piece) ?? this.mergeable.get(piece) ?? this.unkId;
  }

  /** Whether `piece` is in the model at all. */
  hasPiece(piece: string): boolean {
    return this.reserved.has(piece) || this.mergeable.has(piece);
  }

  idToPiece(id: number): string | undefined {
    return this.pieces[id]?.piece;
  }

  // -------------------------------------------------------------------------------------------
  // encode
  // -------------------------------------------------------------------------------------------

  /** Identity normalization (code points; a lone surrogate becomes U+FFFD like invalid UTF-8). */
  normalize(text: string): string {
    if (text.length === 0) return '';
    const ws = this.escapeWhitespaces ? SPIECE_UNDERLINE : ' ';
    let out = '';
    let i = 0;
    if (this.removeExtraWhitespaces) while (i < text.length && text[i] === ' ') i++;
    if (i === text.length) return '';
    if (!this.treatWhitespaceAsSuffix && this.addDummyPrefix) out += ws;
    let prevSpace = this.removeExtraWhitespaces;
    for (; i < text.length; i++) {
      let c = text[i];
      const code = c.charCodeAt(0);
      if (code >= 0xd800 && code <= 0xdbff && i + 1 < text.length && (text.charCodeAt(i + 1) & 0xfc00) === 0xdc00) {
        c = text.slice(i, i + 2);
        i++;
      } else if (code >= 0xd800 && code <= 0xdfff) {
        c = '\ufffd';
      }
      if (c === ' ') {
        if (prevSpace) continue;
        out += ws;
        prevSpace = this.removeExtraWhitespaces;
      } else {
        out += c;
        prevSpace = false;
      }
    }
    if (this.removeExtraWhitespaces) while (out.endsWith(ws)) out = out.slice(0, -ws.length);
    if (this.treatWhitespaceAsSuffix && this.addDummyPrefix) out += ws;
    return out;
  }

  /** Pieces of `text` as `sp.encode(text, out_type=str)`, with their ids. */
  encode(text: string): SpPiece[] {
    const normalized = this.normalize(text);
    if (normalized.length === 0) return [];
    // split into characters (user-defined symbols first, frozen)
    const sym: string[] = [];
    const frozen: boolean[] = [];
    for (let i = 0; i < normalized.length;) {
      let len = 0;
      let freeze = false;
      for (const u of this.userDefined) {
        if (normalized.startsWith(u, i)) {
          len = u.length;
          freeze = true;
          break;
        }
      }
      if (!len) len = (normalized.charCodeAt(i) & 0xfc00) === 0xd800 ? 2 : 1;
      sym.push(normalized.slice(i, i + len));
      frozen.push(freeze);
      i += len;
    }
    const n = sym.length;
    const prev = new Int32Array(n), next = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      prev[i] = i - 1;
      next[i] = i + 1 < n ? i + 1 : -1;
    }
    const queue = new MergeQueue();
    const revMerge = new Map<string, [string, string]>();
    const tryPair = (l: number, r: number): void => {
      if (l < 0 || r < 0 || frozen[l] || frozen[r]) return;
      const piece = sym[l] + sym[r];
      const id = this.mergeable.get(piece);
      if (id === undefined) return;
      const p = this.pieces[id];
      queue.push(l, r, p.score, piece.length);
      if (p.type === PieceType.UNUSED) revMerge.set(piece, [sym[l], sym[r]]);
    };
    for (let i = 1; i < n; i++) tryPair(i - 1, i);
    while (queue.length > 0) {
      const [l, r, size] = queue.pop();
      // stale: one side was merged away or grew since the pair was queued
      if (sym[l] === '' || sym[r] === '' || sym[l].length + sym[r].length !== size) continue;
      sym[l] = sym[l] + sym[r];
      sym[r] = '';
      next[l] = next[r];
      if (next[r] >= 0) prev[next[r]] = l;
      tryPair(prev[l], l);
      tryPair(l, next[l]);
    }
    // resegment UNUSED pieces, then byte fallback / unk merging
    const out: SpPiece[] = [];
    let prevUnk = false;
    const emit = (w: string): void => {
      const id = this.pieceToId(w);
      if (this.pieces[id].type === PieceType.UNUSED) {
        const parts = revMerge.get(w);
        if (parts) {
          emit(parts[0]);
          emit(parts[1]);
          return;
        }
      }
      const isUnk = id === this.unkId;
      if (isUnk && this.byteFallback) {
        for (const b of Buffer.from(w, 'utf8')) out.push({ piece: this.pieces[this.byteIds[b]].piece, id: this.byteIds[b] });
      } else if (isUnk && prevUnk) {
        out[out.length - 1].piece += w;
      } else {
        out.push({ piece: w, id });
      }
      prevUnk = isUnk;
    };
    for (let i = 0; i !== -1; i = next[i]) emit(sym[i]);
    return out;
  }

  // -------------------------------------------------------------------------------------------
  // decode
  // -------------------------------------------------------------------------------------------

  /** `sp.decode(pieces)` for piece strings. */
  decode(pieces: readonly string[]): string {
    let text = '';
    let bytes: number[] = [];
    let isBosWs = true;
    let bosWsSeen = false;
    const flushBytes = (): void => {
      if (bytes.length) text += decodeUtf8PerByte(bytes);
      bytes = [];
    };
    for (const piece of pieces) {
      const id = this.pieceToId(piece);
      const type = this.pieces[id].type;
      if (type === PieceType.BYTE) {
        bytes.push(parseInt(piece.slice(3, 5), 16));
        continue;
      }
      flushBytes();
      if (bosWsSeen || text.length > 0) isBosWs = false;
      bosWsSeen = false;
      let s: string;
      if (type === PieceType.CONTROL) {
        s = '';
      } else if (id === this.unkId) {
        s = this.pieces[id].piece === piece ? this.unkSurface : piece;
      } else {
        s = piece;
        if (isBosWs && (this.addDummyPrefix || this.removeExtraWhitespaces) && s.startsWith(SPIECE_UNDERLINE)) {
          s = s.slice(1);
          bosWsSeen = !this.removeExtraWhitespaces;
        }
        s = s.replaceAll(SPIECE_UNDERLINE, ' ');
      }
      text += s;
    }
    flushBytes();
    return text;
  }
}

/**
 * UTF-8 decode where each structurally invalid byte becomes one U+FFFD (sentencepiece
 * `string_util::DecodeUTF8`; WHATWG TextDecoder would fold some invalid runs into one U+FFFD).
 */
export function decodeUtf8PerByte(b: readonly number[]): string {
  let s = '';
  const trail = (k: number): boolean => k < b.length && (b[k] & 0xc0) === 0x80;
  for (let i = 0; i < b.length;) {
    const c = b[i];
    let cp = -1, len = 1;
    if (c < 0x80) cp = c;
    else if ((c & 0xe0) === 0xc0 && trail(i + 1)) {
      cp = ((c & 0x1f) << 6) | (b[i + 1] & 0x3f);
      len = 2;
      if (cp < 0x80) cp = -1;
    } else if ((c & 0xf0) === 0xe0 && trail(i + 1) && trail(i + 2)) {
      cp = ((c & 0x0f) << 12) | ((b[i + 1] & 0x3f) << 6) | (b[i + 2] & 0x3f);
      len = 3;
      if (cp < 0x800) cp = -1;
    } else if ((c & 0xf8) === 0xf0 && trail(i + 1) && trail(i + 2) && trail(i + 3)) {
      cp = ((c & 0x07) << 18) | ((b[i + 1] & 0x3f) << 12) | ((b[i + 2] & 0x3f) << 6) | (b[i + 3] & 0x3f);
      len = 4;
      if (cp < 0x10000) cp = -1;
    }
    // valid code point: not a surrogate, <= U+10FFFF
    if (cp < 0 || (cp >= 0xd800 && cp < 0xe000) || cp > 0x10ffff) {
      s += '\ufffd';
      i += 1;
    } else {
      s += String.fromCodePoint(cp);
      i += len;
    }
  }
  return s;
}
