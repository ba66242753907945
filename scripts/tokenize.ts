/**
 * `vlm tokenize`: encode text with a checkpoint's tokenizer.
 *
 *   vlm tokenize --model DIR (--text TEXT | --file FILE) [--no-special-tokens] [--json]
 *
 * DIR needs only the tokenizer files (tokenizer.json, or vocab.json + merges.txt, or
 * tokenizer.model, plus tokenizer_config.json & co). Encoding is HF `tokenizer.encode(text)`:
 * special tokens added as the model does by default (Mistral/Llama: BOS; Qwen2: none), or none
 * with --no-special-tokens. `--file` holds one JSON-encoded string per line.
 *
 * With --json stdout carries exactly one `{"ids": [...]}` line per input (a contract for scripts);
 * without it, a human-readable listing.
 */

import { Command, ParsedOptions, UsageError, flag, requireStr, str } from './cli';
import { Tokenizer, TokenizerLoadError, loadTokenizer } from '../tokenizers';
import { readBoundedText } from '../io/files';

/** Reads a --file: one JSON string per line (a final empty line is allowed); errors name the line. */
export function readJsonLines(file: string): string[] {
  let text: string;
  try {
    text = readBoundedText(file, 'text');
  } catch (e) {
    throw new UsageError(`--file: cannot read ${file} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  const lines = text.split('\n');
  if (lines.length > 0 && lines[lines.length - 1] === '') lines.pop();
  return lines.map((line, i) => {
    let v: unknown;
    try {
      v = JSON.parse(line);
    } catch (e) {
      throw new UsageError(`--file ${file}, line ${i + 1}: not valid JSON (${(e as Error).message}); each line must be one JSON string such as "Hello\\nworld"`);
    }
    if (typeof v !== 'string') throw new UsageError(`--file ${file}, line ${i + 1}: expected a JSON string, got ${v === null ? 'null' : Array.isArray(v) ? 'an array' : typeof v}`);
    return v;
  });
}

/** Loads DIR's tokenizer; a missing or unusable directory is the user's argument (UsageError). */
export function loadTokenizerArg(dir: string): Tokenizer {
  try {
    return loadTokenizer(dir);
  } catch (e) {
    if (e instanceof TokenizerLoadError) throw new UsageError(`--model: ${e.message}`);
    throw e;
  }
}

function humanLine(tok: Tokenizer, ids: number[], label: string): string {
  const pieces = ids.map((id) => JSON.stringify(tok.idToToken(id) ?? `#${id}`)).join(' ');
  return `${label}${ids.length} tokens\n  ids:    ${JSON.stringify(ids)}\n  tokens: ${pieces}\n`;
}

export const command: Command = {
  name: 'tokenize',
  usesBackend: false,
  summary: "Encode text with a checkpoint's tokenizer (HF tokenizer.encode semantics)",
  usage: '--model DIR (--text TEXT | --file FILE) [--no-special-tokens] [--json]',
  options: {
    model: { type: 'string', arg: 'DIR', help: 'directory with the tokenizer files (tokenizer.json | vocab.json+merges.txt | tokenizer.model)' },
    text: { type: 'string', arg: 'TEXT', help: 'text to encode' },
    file: { type: 'string', arg: 'FILE', help: 'file with one JSON-encoded string per line' },
    'no-special-tokens': { type: 'boolean', help: 'add no special tokens (HF add_special_tokens=False)' },
    json: { type: 'boolean', help: 'print exactly one {"ids": [...]} line per input on stdout' },
  },
  async run(opts: ParsedOptions) {
    const dir = requireStr(opts, 'model');
    const text = str(opts, 'text');
    const file = str(opts, 'file');
    if (text !== undefined && file !== undefined) throw new UsageError('give either --text or --file, not both');
    if (text === undefined && file === undefined) throw new UsageError('--text or --file is required');
    const inputs = file !== undefined ? readJsonLines(file) : [text as string];
    const tok = loadTokenizerArg(dir);
    const addSpecialTokens = !flag(opts, 'no-special-tokens');
    const json = flag(opts, 'json');
    const out: string[] = [];
    inputs.forEach((s, i) => {
      const ids = tok.encode(s, { addSpecialTokens });
      out.push(json ? `${JSON.stringify({ ids })}\n` : humanLine(tok, ids, file !== undefined ? `line ${i + 1}: ` : ''));
    });
    process.stdout.write(out.join(''));
  },
};
