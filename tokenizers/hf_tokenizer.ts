/**
 * Tokenizers run by @huggingface/tokenizers (the pure-JS port of HF `tokenizers`): a
 * `tokenizer.json`, or a Qwen2 byte-level BPE from vocab.json + merges.txt turned into the same
 * tokenizer.json in memory (bpe_files.ts).
 *
 * The library does the work (added-token split, NFC, the Qwen2 regex, byte-level BPE, the
 * byte-level decoder). What we add: HF's merging of the side files into the added vocabulary,
 * `skipSpecialTokens` by id (HF slow `all_special_ids`), decode of empty lists and of ids above
 * the vocabulary, and errors that name the directory.
 *
 * Checked against transformers 4.40 slow `Qwen2Tokenizer`: the MiniCPM-V 2.6 vectors and the 43
 * llama.cpp Qwen2 cases give identical ids. Decode joins added tokens and byte-level runs with
 * no space, as Qwen2Tokenizer.decode (spaces_between_special_tokens=False) does.
 */
import path from 'node:path';
import { BaseTokenizer } from './base';
import { qwen2TokenizerJson, readVocabAndMerges, toJsonAddedToken } from './bpe_files';
import { HfTokenizer, hfTokenizers } from './hf_libs';
import { AddedTokenSpec, TokenizerSettings, completeAddedTokens, readJsonFile, readTokenizerSettings } from './tokenizer_config';
import { DecodeOptions, EncodeOptions, TokenizerKind, TokenizerLoadError } from './types';
import { LLAMA_SPECIAL_DEFAULTS, cleanUpTokenization } from './llama';

/** Qwen2Tokenizer's special-token defaults (used for keys tokenizer_config.json lacks). */
export const QWEN2_SPECIAL_DEFAULTS = { unk_token: '<|endoftext|>', eos_token: '<|endoftext|>', pad_token: '<|endoftext|>' };

/** Class defaults for a tokenizer.json checkpoint, from `tokenizer_class` of its config. */
function classDefaults(dir: string): Record<string, string> {
  const cfg = readJsonFile(path.join(dir, 'tokenizer_config.json'));
  const cls = cfg && typeof cfg === 'object' ? (cfg as Record<string, unknown>).tokenizer_class : undefined;
  if (typeof cls !== 'string') return {};
  if (/^(Qwen2|MiniCPMV)/.test(cls)) return QWEN2_SPECIAL_DEFAULTS;
  if (/^(Llama|CodeLlama)/.test(cls)) return LLAMA_SPECIAL_DEFAULTS;
  return {};
}

function buildLibTokenizer(json: Record<string, unknown>, config: Record<string, unknown>, where: string): HfTokenizer {
  try {
    return new hfTokenizers.Tokenizer(json, config);
  } catch (e) {
    throw new TokenizerLoadError(`${where}: @huggingface/tokenizers cannot build it (${(e as Error).message})`);
  }
}

// ---------------------------------------------------------------------------------------------
// fast construction of a large BPE
// ---------------------------------------------------------------------------------------------

/** The library's BPE model fields (public in its typings) that its constructor fills. */
interface LibBpeModel {
  tokens_to_ids: Map<string, number>;
  vocab: string[];
  merges: [string, string][];
  bpe_ranks: Map<string, number>;
}

const JSON_UNSAFE = /["\\\u0000-\u001f\ud800-\udfff]/;
/** The library keys `bpe_ranks` by JSON.stringify([a, b]); built without the call when nothing needs escaping. */
const rankKey = (a: string, b: string): string => (JSON_UNSAFE.test(a) || JSON_UNSAFE.test(b) ? JSON.stringify([a, b]) : `["${a}","${b}"]`);

/**
 * A byte-level BPE for `vocab`/`merges`. The library's BPE constructor spends about half of a
 * 151k-token load turning the vocab object into a Map and stringifying every merge; we already
 * hold the Map, so we build the tokenizer on an empty model and fill the model's fields the way
 * its constructor (and the Tokenizer constructor, for added tokens) would. `vocab` is consumed.
 */
function buildQwen2Fast(vocab: Map<string, number>, merges: [string, string][], added: readonly AddedTokenSpec[], where: string): HfTokenizer {
  const lib = buildLibTokenizer(qwen2TokenizerJson(new Map(), [], added), {}, where);
  const model = lib.model as unknown as LibBpeModel;
  const byId: string[] = new Array(vocab.size);
  for (const [t, id] of vocab) byId[id] = t;
  for (const t of added) {
    vocab.set(t.content, t.id);
    byId[t.id] = t.content;
  }
  const ranks = new Map<string, number>();
  for (let i = 0; i < merges.length; i++) ranks.set(rankKey(merges[i][0], merges[i][1]), i);
  model.tokens_to_ids = vocab;
  model.vocab = byId;
  model.merges = merges;
  model.bpe_ranks = ranks;
  return lib;
}

let fastPathChecked: boolean | undefined;
/**
 * Whether buildQwen2Fast reproduces the library's own construction (checked once on a toy BPE
 * with a quote in a merge); if a library update changes its internals we take the slow path.
 */
function fastPathWorks(): boolean {
  if (fastPathChecked === undefined) {
    try {
      const toy = (): Map<string, number> => new Map(['a', 'b', '"', 'ab', 'a"', 'aba"'].map((t, i) => [t, i]));
      const merges: [string, string][] = [['a', 'b'], ['a', '"'], ['ab', 'a"']];
      const added = [{ id: 6, content: '<x>', special: true, normalized: false, lstrip: false, rstrip: false, singleWord: false }];
      const slow = buildLibTokenizer(qwen2TokenizerJson(toy(), merges, added), {}, 'probe');
      const fast = buildQwen2Fast(toy(), merges, added, 'probe');
      const sm = slow.model as unknown as LibBpeModel, fm = fast.model as unknown as LibBpeModel;
      const text = 'aba"<x>ab"b';
      fastPathChecked =
        sm.bpe_ranks instanceof Map && JSON.stringify([...sm.bpe_ranks]) === JSON.stringify([...fm.bpe_ranks]) &&
        JSON.stringify([...sm.tokens_to_ids]) === JSON.stringify([...fm.tokens_to_ids]) &&
        JSON.stringify(sm.vocab) === JSON.stringify(fm.vocab) &&
        slow.encode(text).ids.join() === fast.encode(text).ids.join() && fast.decode(fast.encode(text).ids) === text &&
        fast.decode([6, 5]) === '<x>aba"';
    } catch {
      fastPathChecked = false;
    }
  }
  return fastPathChecked;
}

export class HfJsTokenizer extends BaseTokenizer {
  readonly kind: TokenizerKind;
  readonly lib: HfTokenizer;
  readonly vocabSize: number;
  private readonly cleanUp: boolean;

  private constructor(settings: TokenizerSettings, lib: HfTokenizer, added: AddedTokenSpec[], kind: TokenizerKind, cleanUp: boolean) {
    super(settings, added);
    this.lib = lib;
    this.kind = kind;
    this.cleanUp = cleanUp;
    this.vocabSize = lib.model?.vocab.length ?? 0;
  }

  /** Qwen2 byte-level BPE from `dir/vocab.json` + `dir/merges.txt` (+ the HF side files). */
  static fromVocabMerges(dir: string): HfJsTokenizer {
    const settings = readTokenizerSettings(dir, QWEN2_SPECIAL_DEFAULTS);
    const { vocab, merges } = readVocabAndMerges(dir);
    const added = completeAddedTokens(settings.added, settings.special, (s) => vocab.get(s), vocab.size, path.join(dir, 'tokenizer_config.json'));
    const lib = fastPathWorks() ? buildQwen2Fast(vocab, merges, added, dir) : buildLibTokenizer(qwen2TokenizerJson(vocab, merges, added), {}, dir);
    // Qwen2Tokenizer.decode passes clean_up_tokenization_spaces=False unless asked otherwise
    return new HfJsTokenizer(settings, lib, added, 'bpe', false);
  }

  /** Any `dir/tokenizer.json` the library supports (+ the HF side files). */
  static fromTokenizerJson(dir: string): HfJsTokenizer {
    const file = path.join(dir, 'tokenizer.json');
    const json = readJsonFile(file);
    if (json === null) throw new TokenizerLoadError(`${file}: not found`);
    if (typeof json !== 'object' || Array.isArray(json) || !('model' in json)) {
      throw new TokenizerLoadError(`${file}: not a tokenizer.json (expected an object with "model")`);
    }
    // the library wants every stage key present (null when unused)
    const tj: Record<string, unknown> = { normalizer: null, pre_tokenizer: null, post_processor: null, decoder: null, added_tokens: [], ...(json as Record<string, unknown>) };
    if (!Array.isArray(tj.added_tokens)) throw new TokenizerLoadError(`${file}: "added_tokens" must be a list`);
    const settings = readTokenizerSettings(dir, classDefaults(dir));
    const fromJson: AddedTokenSpec[] = (tj.added_tokens as Record<string, unknown>[]).map((t, i) => {
      if (typeof t !== 'object' || t === null || typeof t.content !== 'string' || !Number.isInteger(t.id)) {
        throw new TokenizerLoadError(`${file}: added_tokens[${i}] must be {"id": int, "content": string, ...}`);
      }
      const special = t.special === true;
      return { id: t.id as number, content: t.content, special, normalized: (t.normalized as boolean | undefined) ?? !special, lstrip: t.lstrip === true, rstrip: t.rstrip === true, singleWord: t.single_word === true };
    });
    // tokenizer_config.json's added_tokens_decoder entries the tokenizer.json lacks are added too
    const have = new Set(fromJson.map((t) => t.content));
    const merged = [...fromJson, ...settings.added.filter((t) => !have.has(t.content))];
    const model = (tj.model ?? {}) as Record<string, unknown>;
    const vocab = model.vocab;
    const baseId = (s: string): number | undefined => {
      if (Array.isArray(vocab)) {
        const i = vocab.findIndex((e) => (Array.isArray(e) ? e[0] : e) === s);
        return i >= 0 ? i : undefined;
      }
      if (vocab && typeof vocab === 'object' && Object.prototype.hasOwnProperty.call(vocab, s)) return (vocab as Record<string, number>)[s];
      return undefined;
    };
    const baseCount = Array.isArray(vocab) ? vocab.length : vocab && typeof vocab === 'object' ? Object.keys(vocab).length : 0;
    const added = completeAddedTokens(merged, settings.special, baseId, baseCount, file);
    const lib = buildLibTokenizer({ ...tj, added_tokens: added.map(toJsonAddedToken) }, settings.config, file);
    const cleanUp = settings.config.clean_up_tokenization_spaces === true;
    return new HfJsTokenizer(settings, lib, added, 'tokenizer.json', cleanUp);
  }

  encode(text: string, opts: EncodeOptions = {}): number[] {
    if (opts.splitSpecialTokens) {
      const ids = this.encodePlain(text);
      if (opts.addSpecialTokens ?? true) {
        const wrap = this.lib.encode('', { add_special_tokens: true }).ids;
        const bos = wrap.length && wrap[0] === this.bosTokenId ? [wrap[0]] : [];
        return [...bos, ...ids, ...wrap.slice(bos.length)];
      }
      return ids;
    }
    return this.lib.encode(text, { add_special_tokens: opts.addSpecialTokens ?? true }).ids;
  }

  /**
   * `split_special_tokens=True` for the library tokenizer (which always matches added tokens):
   * runs without an added token go through as they are; an added token's text is cut into
   * pieces that contain none (first character, rest), each tokenized by the model.
   */
  private encodePlain(text: string): number[] {
    const contents = this.addedTokenContents().filter((c) => c.length > 0);
    const has = (s: string) => contents.some((c) => s.includes(c));
    const ids: number[] = [];
    const enc = (s: string) => {
      if (!s) return;
      if (!has(s)) {
        ids.push(...this.lib.encode(s, { add_special_tokens: false }).ids);
        return;
      }
      // the leftmost-longest added token in s
      let at = -1, len = 0;
      for (const c of contents) {
        const i = s.indexOf(c);
        if (i >= 0 && (at < 0 || i < at || (i === at && c.length > len))) {
          at = i;
          len = c.length;
        }
      }
      enc(s.slice(0, at));
      const lit = s.slice(at, at + len);
      let k = 1;
      while (k < lit.length && (has(lit.slice(0, k)) || has(lit.slice(k)))) k++;
      if (k >= lit.length) for (const ch of lit) ids.push(...this.lib.encode(ch, { add_special_tokens: false }).ids);
      else {
        enc(lit.slice(0, k));
        enc(lit.slice(k));
      }
      enc(s.slice(at + len));
    };
    enc(text);
    return ids;
  }

  decode(ids: ArrayLike<number>, opts: DecodeOptions = {}): string {
    this.checkIds(ids);
    const skip = opts.skipSpecialTokens ? new Set(this.specialIds) : undefined;
    const keep: number[] = [];
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      if (skip?.has(id) || this.lib.id_to_token(id) === undefined) continue;
      keep.push(id);
    }
    if (keep.length === 0) return '';
    const text = this.lib.decode(keep, { skip_special_tokens: false, clean_up_tokenization_spaces: false });
    return this.cleanUp ? cleanUpTokenization(text) : text;
  }

  tokenToId(token: string): number | undefined {
    return this.lib.token_to_id(token);
  }

  idToToken(id: number): string | undefined {
    return this.lib.id_to_token(id);
  }
}
