/**
 * Byte-level BPE checkpoints stored as `vocab.json` + `merges.txt` (Qwen2, MiniCPM-V 2.6), and
 * the in-memory tokenizer.json that transformers 4.40 `convert_slow_tokenizer.Qwen2Converter`
 * builds from them for `Qwen2TokenizerFast`:
 *
 *   normalizer     NFC
 *   pre_tokenizer  Split(Qwen2 regex, Isolated) -> ByteLevel(add_prefix_space=false, use_regex=false)
 *   model          BPE(vocab, merges, no unk, no dropout, no byte fallback)
 *   decoder        ByteLevel;  post_processor ByteLevel (adds no BOS/EOS)
 *
 * The slow `Qwen2Tokenizer` (what the test vectors were made with) does the same steps in Python:
 * NFC in `prepare_for_tokenization`, the same regex, the same merge ranks.
 */
import path from 'node:path';
import { readJsonFile, AddedTokenSpec } from './tokenizer_config';
import { TokenizerLoadError } from './types';
import { readBoundedText } from '../io/files';

/** `PRETOKENIZE_REGEX` of transformers' models/qwen2/tokenization_qwen2.py (also the Rust Split pattern). */
export const QWEN2_PRETOKENIZE_REGEX =
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/** Reads and checks vocab.json: an object of token -> non-negative integer id. */
export function readVocabJson(file: string): Map<string, number> {
  const vocab = readJsonFile(file);
  if (vocab === null) throw new TokenizerLoadError(`${file}: not found`);
  if (typeof vocab !== 'object' || Array.isArray(vocab)) throw new TokenizerLoadError(`${file}: expected a JSON object {token: id}`);
  const v = vocab as Record<string, unknown>;
  const map = new Map<string, number>();
  for (const k in v) {
    const id = v[k];
    if (typeof id !== 'number' || !Number.isInteger(id) || id < 0) {
      throw new TokenizerLoadError(`${file}: id of token ${JSON.stringify(k)} must be a non-negative integer, got ${JSON.stringify(id)}`);
    }
    map.set(k, id);
  }
  if (map.size === 0) throw new TokenizerLoadError(`${file}: empty vocabulary`);
  return map;
}

/**
 * Reads merges.txt like `Qwen2Tokenizer.__init__`: one `a b` pair per line, an optional
 * `#version` first line, blank lines skipped. Checks that `a`, `b` and `ab` are in the vocabulary,
 * as the Rust BPE builder does (a truncated or shuffled file fails here, naming the line).
 */
export function readMergesTxt(file: string, vocab: ReadonlyMap<string, number>): [string, string][] {
  let text: string;
  try {
    text = readBoundedText(file, 'config');
  } catch (e) {
    throw new TokenizerLoadError(`${file}: cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  const merges: [string, string][] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    let line = lines[i];
    // fast path: "a b" with no other whitespace (every line of a well-formed file)
    let sp = line.indexOf(' ');
    const last = line.charCodeAt(line.length - 1);
    if (sp <= 0 || sp === line.length - 1 || line.indexOf(' ', sp + 1) >= 0 || last <= 0x20 || (last > 0x7e && /\s/.test(line[line.length - 1]))) {
      line = line.trim();
      if ((i === 0 && line.startsWith('#version:')) || !line) continue;
      const parts = line.split(/\s+/);
      if (parts.length !== 2) throw new TokenizerLoadError(`${file}:${i + 1}: expected two tokens separated by a space, got ${JSON.stringify(line.slice(0, 80))}`);
      line = parts.join(' ');
      sp = parts[0].length;
    } else if (i === 0 && line.startsWith('#version:')) {
      continue;
    }
    const a = line.slice(0, sp), b = line.slice(sp + 1);
    if (!vocab.has(a) || !vocab.has(b) || !vocab.has(a + b)) {
      const t = !vocab.has(a) ? a : !vocab.has(b) ? b : a + b;
      throw new TokenizerLoadError(`${file}:${i + 1}: merge '${a} ${b}' uses ${JSON.stringify(t)}, which vocab.json does not have (vocab.json and merges.txt do not belong together?)`);
    }
    merges.push([a, b]);
  }
  if (merges.length === 0) throw new TokenizerLoadError(`${file}: no merges`);
  return merges;
}

/** The tokenizer.json object (format of HF `tokenizers`) for a Qwen2 byte-level BPE. */
export function qwen2TokenizerJson(vocab: ReadonlyMap<string, number>, merges: [string, string][], added: readonly AddedTokenSpec[]): Record<string, unknown> {
  return {
    version: '1.0',
    normalizer: { type: 'NFC' },
    pre_tokenizer: {
      type: 'Sequence',
      pretokenizers: [
        { type: 'Split', pattern: { Regex: QWEN2_PRETOKENIZE_REGEX }, behavior: 'Isolated', invert: false },
        { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false },
      ],
    },
    model: { type: 'BPE', vocab: Object.fromEntries(vocab), merges, dropout: null, unk_token: null, continuing_subword_prefix: '', end_of_word_suffix: '', fuse_unk: false, byte_fallback: false },
    post_processor: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false },
    decoder: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false },
    added_tokens: added.map(toJsonAddedToken),
  };
}

export function toJsonAddedToken(t: AddedTokenSpec): Record<string, unknown> {
  return { id: t.id, content: t.content, single_word: t.singleWord, lstrip: t.lstrip, rstrip: t.rstrip, normalized: t.normalized, special: t.special };
}

/** The vocab.json + merges.txt pair of `dir`. */
export function readVocabAndMerges(dir: string): { vocab: Map<string, number>; merges: [string, string][] } {
  const vocab = readVocabJson(path.join(dir, 'vocab.json'));
  return { vocab, merges: readMergesTxt(path.join(dir, 'merges.txt'), vocab) };
}
