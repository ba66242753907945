/** Readers for the tokenizer test data in test/fixtures/tokenizers (see its README). */
import fs from 'node:fs';
import { fixture } from '../helpers/golden';

export const TOK = (...p: string[]): string => fixture('tokenizers', ...p);

export function readJson<T = any>(file: string): T {
  return JSON.parse(fs.readFileSync(file, 'utf8')) as T;
}

/** llama.cpp `ggml-vocab-*.gguf.inp/.out`: cases separated by `\n__ggml_vocab_test__\n`, one id line each. */
export function readLlamaCppVectors(inp: string, out: string): { text: string; ids: number[] }[] {
  const texts = fs.readFileSync(inp, 'utf8').split('\n__ggml_vocab_test__\n');
  const lines = fs.readFileSync(out, 'utf8').split('\n');
  // both files end with a separator / newline: the last element is empty
  if (texts[texts.length - 1] === '') texts.pop();
  if (lines[lines.length - 1] === '') lines.pop();
  if (texts.length !== lines.length) throw new Error(`${inp}: ${texts.length} cases but ${out} has ${lines.length} lines`);
  return texts.map((text, i) => ({ text, ids: lines[i].trim() === '' ? [] : lines[i].trim().split(/\s+/).map(Number) }));
}

/** The golden extracts (goldens.json). */
export const goldens = (): any => readJson(TOK('goldens.json'));

/** MiniCPM-V image placeholder text: `<image>` + n × `<unk>` + `</image>` style runs. */
export const unks = (n: number): string => '<unk>'.repeat(n);
