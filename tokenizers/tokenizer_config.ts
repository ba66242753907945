/**
 * Reads the HF tokenizer side files of a checkpoint directory: `tokenizer_config.json`,
 * `special_tokens_map.json` and `added_tokens.json`, the way transformers 4.40
 * `PreTrainedTokenizerBase._from_pretrained` combines them
 * (src/transformers/tokenization_utils_base.py, tag v4.40.0):
 *
 * - `tokenizer_config.json` gives the init kwargs (special tokens, `add_bos_token`, `legacy`,
 *   `chat_template`, ...). Keys it lacks take the tokenizer class defaults (`classDefaults`).
 * - If it has `added_tokens_decoder` (id -> {content, special, normalized, lstrip, rstrip,
 *   single_word}), that is the whole added vocabulary and the two other files are not read.
 * - Otherwise (legacy layout) `special_tokens_map.json` overrides the special tokens and
 *   `added_tokens.json` ({content: id}) lists the added tokens; a token is special when it is one
 *   of the special tokens.
 * - Finally special tokens that are not added tokens yet become added tokens, with their vocab id
 *   when the vocabulary has the string and a new id after it otherwise
 *   (`PreTrainedTokenizer.__init__` -> `_add_tokens(all_special_tokens_extended)`).
 */
import path from 'node:path';
import { TokenizerLoadError } from './types';
import { readBoundedText } from '../io/files';

/** One added token with the HF `AddedToken` flags. */
export interface AddedTokenSpec {
  id: number;
  content: string;
  special: boolean;
  /** Matched after the normalizer (fast tokenizers only; the slow ones ignore it). */
  normalized: boolean;
  /** Eat the whitespace on its left / right when matched. */
  lstrip: boolean;
  rstrip: boolean;
  /** Only match as a whole word. */
  singleWord: boolean;
}

/** The special-token attributes of HF tokenizers, as strings (unset ones are absent). */
export interface SpecialTokens {
  bos_token?: string;
  eos_token?: string;
  unk_token?: string;
  sep_token?: string;
  pad_token?: string;
  cls_token?: string;
  mask_token?: string;
  additional_special_tokens: string[];
}

/** HF `SPECIAL_TOKENS_ATTRIBUTES` order, which is also the order special tokens get added in. */
const SINGLE_SPECIAL_KEYS = ['bos_token', 'eos_token', 'unk_token', 'sep_token', 'pad_token', 'cls_token', 'mask_token'] as const;
type SingleSpecialKey = (typeof SINGLE_SPECIAL_KEYS)[number];

export interface TokenizerSettings {
  dir: string;
  /** tokenizer_config.json as parsed ({} when the file is absent). */
  config: Record<string, unknown>;
  special: SpecialTokens;
  /** Added tokens from the files (before `completeAddedTokens`). */
  added: AddedTokenSpec[];
  chatTemplate?: string;
}

// ---------------------------------------------------------------------------------------------
// JSON helpers (errors name the file)
// ---------------------------------------------------------------------------------------------

/** Reads a JSON file of a tokenizer directory; null when absent, TokenizerLoadError when corrupt. */
export function readJsonFile(file: string): unknown | null {
  let text: string;
  try {
    text = readBoundedText(file, 'config');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new TokenizerLoadError(`${file}: cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new TokenizerLoadError(`${file}: not valid JSON (${(e as Error).message}); re-download or re-save the tokenizer`);
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function readJsonObject(file: string): Record<string, unknown> | null {
  const j = readJsonFile(file);
  if (j === null) return null;
  if (!isObject(j)) throw new TokenizerLoadError(`${file}: expected a JSON object, got ${Array.isArray(j) ? 'an array' : typeof j}`);
  return j;
}

/** A special-token value: a string, an AddedToken dict ({content, ...}) or null. */
function tokenContent(v: unknown, where: string): string | undefined {
  if (v === null || v === undefined) return undefined;
  if (typeof v === 'string') return v;
  if (isObject(v) && typeof v.content === 'string') return v.content;
  throw new TokenizerLoadError(`${where}: expected a token string or {"content": ...}, got ${JSON.stringify(v)}`);
}

function flag(v: unknown, dflt: boolean, where: string): boolean {
  if (v === undefined || v === null) return dflt;
  if (typeof v !== 'boolean') throw new TokenizerLoadError(`${where}: expected true/false, got ${JSON.stringify(v)}`);
  return v;
}

function addedFromDict(id: number, v: unknown, where: string): AddedTokenSpec {
  if (!isObject(v) || typeof v.content !== 'string' || v.content === '') {
    throw new TokenizerLoadError(`${where}: expected {"content": "<non-empty string>", ...}, got ${JSON.stringify(v)}`);
  }
  const special = flag(v.special, false, `${where}.special`);
  return {
    id,
    content: v.content,
    special,
    // HF AddedToken: normalized defaults to `not special`
    normalized: flag(v.normalized, !special, `${where}.normalized`),
    lstrip: flag(v.lstrip, false, `${where}.lstrip`),
    rstrip: flag(v.rstrip, false, `${where}.rstrip`),
    singleWord: flag(v.single_word, false, `${where}.single_word`),
  };
}

function parseId(key: string, where: string): number {
  const id = Number(key);
  if (!Number.isInteger(id) || id < 0 || String(id) !== key.trim()) throw new TokenizerLoadError(`${where}: '${key}' is not a token id`);
  return id;
}

// ---------------------------------------------------------------------------------------------
// reading
// ---------------------------------------------------------------------------------------------

/**
 * Reads tokenizer_config.json / special_tokens_map.json / added_tokens.json of `dir`.
 * `classDefaults` are the special tokens of the tokenizer class (used for keys the config lacks).
 */
export function readTokenizerSettings(dir: string, classDefaults: Partial<Record<SingleSpecialKey, string>>): TokenizerSettings {
  const configFile = path.join(dir, 'tokenizer_config.json');
  const config = readJsonObject(configFile) ?? {};
  const single: Partial<Record<SingleSpecialKey, string>> = {};
  for (const k of SINGLE_SPECIAL_KEYS) {
    single[k] = k in config ? tokenContent(config[k], `${configFile}: '${k}'`) : classDefaults[k];
  }
  let additional = stringList(config.additional_special_tokens, `${configFile}: 'additional_special_tokens'`);
  const added: AddedTokenSpec[] = [];

  if (config.added_tokens_decoder !== undefined) {
    const atd = config.added_tokens_decoder;
    if (!isObject(atd)) throw new TokenizerLoadError(`${configFile}: 'added_tokens_decoder' must be an object {id: {...}}`);
    for (const [key, v] of Object.entries(atd)) {
      const where = `${configFile}: added_tokens_decoder['${key}']`;
      added.push(addedFromDict(parseId(key, where), v, where));
    }
  } else {
    // legacy layout: special_tokens_map.json overrides, added_tokens.json lists the added tokens
    const mapFile = path.join(dir, 'special_tokens_map.json');
    const map = readJsonObject(mapFile);
    if (map) {
      for (const k of SINGLE_SPECIAL_KEYS) {
        if (k in map) single[k] = tokenContent(map[k], `${mapFile}: '${k}'`);
      }
      for (const t of stringList(map.additional_special_tokens, `${mapFile}: 'additional_special_tokens'`)) {
        if (!additional.includes(t)) additional = [...additional, t];
      }
    }
    const addedFile = path.join(dir, 'added_tokens.json');
    const enc = readJsonObject(addedFile);
    if (enc) {
      const specials = new Set([...SINGLE_SPECIAL_KEYS.map((k) => single[k]).filter((s): s is string => !!s), ...additional]);
      for (const [content, id] of Object.entries(enc)) {
        if (!Number.isInteger(id) || (id as number) < 0) throw new TokenizerLoadError(`${addedFile}: id of '${content}' must be a non-negative integer, got ${JSON.stringify(id)}`);
        const special = specials.has(content);
        added.push({ id: id as number, content, special, normalized: !special, lstrip: false, rstrip: false, singleWord: false });
      }
    }
  }

  const special: SpecialTokens = { additional_special_tokens: additional };
  for (const k of SINGLE_SPECIAL_KEYS) if (single[k] !== undefined) special[k] = single[k];
  return { dir, config, special, added, chatTemplate: readChatTemplate(config.chat_template, configFile) };
}

function stringList(v: unknown, where: string): string[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) throw new TokenizerLoadError(`${where}: expected a list, got ${JSON.stringify(v)}`);
  return v.map((t, i) => {
    const s = tokenContent(t, `${where}[${i}]`);
    if (s === undefined) throw new TokenizerLoadError(`${where}[${i}]: null token`);
    return s;
  });
}

/** `chat_template` is a string, or (newer HF) a list of {name, template}: take "default". */
function readChatTemplate(v: unknown, where: string): string | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v === 'string') return v;
  if (Array.isArray(v)) {
    const d = v.find((t) => isObject(t) && t.name === 'default');
    if (d && typeof d.template === 'string') return d.template;
    return undefined;
  }
  throw new TokenizerLoadError(`${where}: 'chat_template' must be a string, got ${typeof v}`);
}

/** The special token strings in HF `all_special_tokens` order (bos, eos, unk, sep, pad, cls, mask, additional). */
export function allSpecialTokens(s: SpecialTokens): string[] {
  const out: string[] = [];
  for (const k of SINGLE_SPECIAL_KEYS) {
    const t = s[k];
    if (t !== undefined && !out.includes(t)) out.push(t);
  }
  for (const t of s.additional_special_tokens) if (!out.includes(t)) out.push(t);
  return out;
}

/**
 * Adds the special tokens that are not added tokens yet (HF `_add_tokens(..., special_tokens=True)`):
 * id from the base vocabulary when it has the string, otherwise a new id after everything.
 * Returns a new list; checks that no two added tokens share a string.
 */
export function completeAddedTokens(
  added: readonly AddedTokenSpec[],
  special: SpecialTokens,
  baseId: (s: string) => number | undefined,
  baseCount: number,
  where: string,
): AddedTokenSpec[] {
  const out = [...added];
  const byContent = new Map<string, AddedTokenSpec>();
  for (const t of out) {
    const prev = byContent.get(t.content);
    if (prev && prev.id !== t.id) throw new TokenizerLoadError(`${where}: added token '${t.content}' has two ids (${prev.id} and ${t.id})`);
    byContent.set(t.content, t);
  }
  // HF: new ids start at len(get_vocab()) = base strings + added strings not in the base vocab
  let next = baseCount + out.filter((t) => baseId(t.content) === undefined).length;
  for (const content of allSpecialTokens(special)) {
    if (content === '' || byContent.has(content)) continue;
    const id = baseId(content) ?? next++;
    const t: AddedTokenSpec = { id, content, special: true, normalized: false, lstrip: false, rstrip: false, singleWord: false };
    out.push(t);
    byContent.set(content, t);
  }
  return out;
}
