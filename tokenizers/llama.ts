/**
 * SentencePiece tokenizers with the semantics of transformers 4.40 slow `LlamaTokenizer`
 * (src/transformers/models/llama/tokenization_llama.py, tag v4.40.0), which VideoLLaMA2 loads
 * for Mistral with `AutoTokenizer(use_fast=False)`.
 *
 * tokenizer_config.json keys read: `legacy` (default true, the HF default when unset),
 * `add_bos_token` (default true), `add_eos_token` (default false), `add_prefix_space` (default
 * true), `split_special_tokens` (default false), `clean_up_tokenization_spaces` (default false).
 *
 * legacy=true: each text chunk between added tokens is encoded by SentencePiece with its dummy
 * prefix, so a chunk after `<s>` gets an extra `▁` (" [INST]" -> `▁`, `▁[`).
 * legacy=false: the model is loaded with add_dummy_prefix off, the text gets one leading `▁`
 * (`add_prefix_space`), and a chunk that starts with a space is encoded as `<unk>` + chunk
 * with the `<unk>` pieces removed, so no spurious `▁` appears after special tokens.
 */
import path from 'node:path';
import { AddedTokenSplitter } from './added_tokens';
import { BaseTokenizer } from './base';
import { SentencePieceBpe, SPIECE_UNDERLINE } from './sentencepiece_bpe';
import { parseSentencePieceModel } from './sentencepiece_model';
import { AddedTokenSpec, TokenizerSettings, allSpecialTokens, completeAddedTokens, readTokenizerSettings } from './tokenizer_config';
import { DecodeOptions, EncodeOptions, TokenizerLoadError } from './types';
import { readBounded } from '../io/files';

/** LlamaTokenizer's special-token defaults (used for keys tokenizer_config.json lacks). */
export const LLAMA_SPECIAL_DEFAULTS = { unk_token: '<unk>', bos_token: '<s>', eos_token: '</s>' };

function boolOption(config: Record<string, unknown>, key: string, dflt: boolean, file: string): boolean {
  const v = config[key];
  if (v === undefined || v === null) return dflt;
  if (typeof v !== 'boolean') throw new TokenizerLoadError(`${file}: '${key}' must be true or false, got ${JSON.stringify(v)}`);
  return v;
}

/** HF `clean_up_tokenization` (tokenization_utils_base.py). */
export function cleanUpTokenization(s: string): string {
  return s
    .replaceAll(' .', '.').replaceAll(' ?', '?').replaceAll(' !', '!').replaceAll(' ,', ',')
    .replaceAll(" ' ", "'").replaceAll(" n't", "n't").replaceAll(" 'm", "'m").replaceAll(" 's", "'s")
    .replaceAll(" 've", "'ve").replaceAll(" 're", "'re");
}

export class LlamaTokenizer extends BaseTokenizer {
  readonly kind = 'sentencepiece' as const;
  readonly legacy: boolean;
  readonly addBosToken: boolean;
  readonly addEosToken: boolean;
  readonly addPrefixSpace: boolean;
  readonly sp: SentencePieceBpe;
  readonly vocabSize: number;
  private readonly splitSpecialTokens: boolean;
  private readonly cleanUp: boolean;
  private readonly splitter: AddedTokenSplitter;
  private readonly addedById = new Map<number, AddedTokenSpec>();
  private readonly allSpecial: Set<string>;
  /** Pieces of `unk_token` alone (legacy=false strips this many after encoding `<unk>` + text). */
  private readonly unkTokenLength: number;

  constructor(settings: TokenizerSettings, sp: SentencePieceBpe, added: AddedTokenSpec[], options: { legacy: boolean; addBos: boolean; addEos: boolean; addPrefixSpace: boolean; splitSpecialTokens: boolean; cleanUp: boolean }) {
    super(settings, added);
    this.sp = sp;
    this.legacy = options.legacy;
    this.addBosToken = options.addBos;
    this.addEosToken = options.addEos;
    this.addPrefixSpace = options.addPrefixSpace;
    this.splitSpecialTokens = options.splitSpecialTokens;
    this.cleanUp = options.cleanUp;
    this.splitter = new AddedTokenSplitter(added);
    for (const t of added) this.addedById.set(t.id, t);
    this.allSpecial = new Set(allSpecialTokens(settings.special));
    // python str(None) is 'None': what HF would encode without an unk token
    this.unkTokenLength = sp.encode(settings.special.unk_token ?? 'None').length;
    this.vocabSize = added.reduce((m, t) => Math.max(m, t.id + 1), sp.size);
  }

  /** Loads `dir/tokenizer.model` + the HF side files. */
  static load(dir: string): LlamaTokenizer {
    const file = path.join(dir, 'tokenizer.model');
    let buf: Buffer;
    try {
      buf = readBounded(file, 'config');
    } catch (e) {
      throw new TokenizerLoadError(`${file}: cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
    }
    const proto = parseSentencePieceModel(buf, file);
    const settings = readTokenizerSettings(dir, LLAMA_SPECIAL_DEFAULTS);
    const cfgFile = path.join(dir, 'tokenizer_config.json');
    const c = settings.config;
    const legacy = boolOption(c, 'legacy', true, cfgFile);
    const sp = new SentencePieceBpe(proto, file, legacy ? {} : { addDummyPrefix: false });
    const added = completeAddedTokens(settings.added, settings.special, (s) => (sp.hasPiece(s) ? sp.pieceToId(s) : undefined), sp.size, cfgFile);
    return new LlamaTokenizer(settings, sp, added, {
      legacy,
      addBos: boolOption(c, 'add_bos_token', true, cfgFile),
      addEos: boolOption(c, 'add_eos_token', false, cfgFile),
      addPrefixSpace: boolOption(c, 'add_prefix_space', true, cfgFile),
      splitSpecialTokens: boolOption(c, 'split_special_tokens', false, cfgFile),
      cleanUp: boolOption(c, 'clean_up_tokenization_spaces', false, cfgFile),
    });
  }

  // -------------------------------------------------------------------------------------------
  // encode
  // -------------------------------------------------------------------------------------------

  /** Token strings of `text` (HF `tokenizer.tokenize`), without BOS/EOS. */
  tokenize(text: string, splitSpecial = this.splitSpecialTokens): string[] {
    if (this.legacy || text.length === 0) return this.tokenizeChunks(text, splitSpecial);
    let t = text.replaceAll(SPIECE_UNDERLINE, ' ');
    if (this.addPrefixSpace) t = SPIECE_UNDERLINE + t;
    const tokens = this.tokenizeChunks(t, splitSpecial);
    if (tokens.length > 1 && tokens[0] === SPIECE_UNDERLINE && this.allSpecial.has(tokens[1])) return tokens.slice(1);
    return tokens;
  }

  /** `PreTrainedTokenizer.tokenize`: added tokens split out, the rest through `_tokenize`. */
  private tokenizeChunks(text: string, splitSpecial: boolean): string[] {
    const parts = splitSpecial ? (text ? [text] : []) : this.splitter.split(text);
    const out: string[] = [];
    for (const p of parts) {
      if (typeof p !== 'string') out.push(p.content);
      else for (const sp of this.spTokenize(p)) out.push(sp);
    }
    return out;
  }

  /** `LlamaTokenizer._tokenize`. */
  private spTokenize(text: string): string[] {
    if (this.legacy || !(text.startsWith(SPIECE_UNDERLINE) || text.startsWith(' '))) return this.sp.encode(text).map((p) => p.piece);
    const pieces = this.sp.encode((this.special.unk_token ?? 'None') + text).map((p) => p.piece);
    return pieces.length >= this.unkTokenLength ? pieces.slice(this.unkTokenLength) : pieces;
  }

  encode(text: string, opts: EncodeOptions = {}): number[] {
    const split = opts.splitSpecialTokens ?? this.splitSpecialTokens;
    const ids = this.tokenize(text, split).map((t) => (split ? undefined : this.splitter.byContent.get(t)?.id) ?? this.sp.pieceToId(t));
    if (opts.addSpecialTokens ?? true) {
      const bos = this.bosTokenId, eos = this.eosTokenId;
      if (this.addBosToken && bos !== undefined) ids.unshift(bos);
      if (this.addEosToken && eos !== undefined) ids.push(eos);
    }
    return ids;
  }

  // -------------------------------------------------------------------------------------------
  // decode
  // -------------------------------------------------------------------------------------------

  /** `LlamaTokenizer.convert_tokens_to_string`. */
  private tokensToString(tokens: string[]): string {
    if (tokens[0].startsWith(SPIECE_UNDERLINE) && this.addPrefixSpace) tokens[0] = tokens[0].slice(1);
    let sub: string[] = [];
    let out = '';
    let prevIsSpecial = false;
    tokens.forEach((token, i) => {
      if (this.allSpecial.has(token)) {
        if (!prevIsSpecial && i !== 0 && this.legacy) out += ' ';
        out += this.sp.decode(sub) + token;
        prevIsSpecial = true;
        sub = [];
      } else {
        if (prevIsSpecial && i === 1 && this.addPrefixSpace && !token.startsWith(SPIECE_UNDERLINE)) out += ' ';
        sub.push(token);
        prevIsSpecial = false;
      }
    });
    return out + this.sp.decode(sub);
  }

  /**
   * `PreTrainedTokenizer._decode` (spaces_between_special_tokens=True, its default for Llama):
   * added tokens that are not special are emitted verbatim between SentencePiece runs.
   */
  decode(ids: ArrayLike<number>, opts: DecodeOptions = {}): string {
    this.checkIds(ids);
    const skip = new Set(opts.skipSpecialTokens ? this.specialIds : []);
    const tokens: string[] = [];
    for (let i = 0; i < ids.length; i++) {
      if (skip.has(ids[i])) continue;
      const t = this.idToToken(ids[i]);
      if (t !== undefined) tokens.push(t);
    }
    const legacyAdded = new Set<string>();
    for (const t of this.added) if (!this.allSpecial.has(t.content)) legacyAdded.add(t.content);
    for (const s of this.special.additional_special_tokens) {
      const id = this.tokenToId(s);
      if (id !== undefined && id >= this.sp.size) legacyAdded.add(s);
    }
    const subTexts: string[] = [];
    let cur: string[] = [];
    for (const t of tokens) {
      if (legacyAdded.has(t)) {
        if (cur.length) {
          const s = this.tokensToString(cur);
          if (s.length > 0) subTexts.push(s);
          cur = [];
        }
        subTexts.push(t);
      } else {
        cur.push(t);
      }
    }
    if (cur.length) subTexts.push(this.tokensToString(cur));
    const text = subTexts.join(' ');
    return this.cleanUp ? cleanUpTokenization(text) : text;
  }

  tokenToId(token: string): number | undefined {
    const a = this.splitter.byContent.get(token);
    if (a) return a.id;
    return this.sp.hasPiece(token) ? this.sp.pieceToId(token) : undefined;
  }

  idToToken(id: number): string | undefined {
    return this.addedById.get(id)?.content ?? this.sp.idToPiece(id);
  }
}
