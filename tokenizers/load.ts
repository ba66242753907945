/**
 * `loadTokenizer(dir)`: one loader for every checkpoint layout we meet.
 */
import fs from 'node:fs';
import path from 'node:path';
import { HfJsTokenizer } from './hf_tokenizer';
import { LlamaTokenizer } from './llama';
import { Tokenizer, TokenizerLoadError } from './types';

/** The files that decide the tokenizer kind, in order of preference. */
export const TOKENIZER_FILES = ['tokenizer.json', 'vocab.json + merges.txt', 'tokenizer.model'] as const;

/**
 * Loads the tokenizer of a checkpoint (or tokenizer-only) directory. Synchronous: it reads a few
 * MB and builds maps (~1 s for the 151k-token Qwen2 vocabulary, ~0.1 s for a SentencePiece
 * model).
 *
 * The kind comes from the files present, first match wins:
 * 1. `tokenizer.json` — run by @huggingface/tokenizers as the HF fast tokenizer would;
 * 2. `vocab.json` + `merges.txt` — Qwen2 byte-level BPE (Qwen2Tokenizer; MiniCPM-V 2.6,
 *    VideoLLaMA2.1-Qwen2);
 * 3. `tokenizer.model` — SentencePiece BPE with LlamaTokenizer semantics (Mistral/Llama;
 *    VideoLLaMA2-7B).
 * `tokenizer_config.json`, `special_tokens_map.json` and `added_tokens.json` are read when present
 * (special tokens, added tokens, `chat_template`, `legacy`, `add_bos_token`, ...).
 *
 * @throws TokenizerLoadError naming the directory and the files looked for when none is present,
 *   or naming the file (and line or byte) when one is corrupt.
 */
export function loadTokenizer(dir: string): Tokenizer {
  let st: fs.Stats;
  try {
    st = fs.statSync(dir);
  } catch {
    throw new TokenizerLoadError(`tokenizer directory not found: ${dir}`);
  }
  if (!st.isDirectory()) throw new TokenizerLoadError(`not a directory: ${dir} (pass the checkpoint directory that holds the tokenizer files)`);
  const has = (f: string): boolean => fs.existsSync(path.join(dir, f));
  if (has('tokenizer.json')) return HfJsTokenizer.fromTokenizerJson(dir);
  if (has('vocab.json') && has('merges.txt')) return HfJsTokenizer.fromVocabMerges(dir);
  if (has('tokenizer.model')) return LlamaTokenizer.load(dir);
  const partial = has('vocab.json') ? ' (vocab.json is there but merges.txt is missing)' : has('merges.txt') ? ' (merges.txt is there but vocab.json is missing)' : '';
  throw new TokenizerLoadError(`no tokenizer in ${dir}: looked for ${TOKENIZER_FILES.join(', or ')}${partial}`);
}
