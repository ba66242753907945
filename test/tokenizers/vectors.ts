/** Readers for the tokenizer test data in test/fixtures/tokenizers (see its README). */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import { fixture } from '../helpers/golden';

/**
 * Path of tokenizer test data. Two directories are stored compactly and materialised once per
 * process into a temp dir: `minicpmv26` keeps the real 4.3 MB vocab.json/merges.txt gzipped, and
 * `mistral_v1` takes its tokenizer.model from the VideoLLaMA2 fixture (the same file).
 */
export const TOK = (...p: string[]): string => {
  const [name, ...rest] = p;
  const dir = materialised.get(name) ?? materialise(name);
  return path.join(dir, ...rest);
};

const materialised = new Map<string, string>();
function materialise(name: string): string {
  const src = fixture('tokenizers', name);
  const isDir = fs.existsSync(src) && fs.statSync(src).isDirectory();
  const gz = isDir ? fs.readdirSync(src).filter((f) => f.endsWith('.gz')) : [];
  const sp = isDir && name === 'mistral_v1' && !fs.existsSync(path.join(src, 'tokenizer.model'));
  if (!gz.length && !sp) {
    materialised.set(name, src);
    return src;
  }
  const out = fs.mkdtempSync(path.join(os.tmpdir(), `vlm-tok-${name}-`));
  for (const f of fs.readdirSync(src)) {
    const data = fs.readFileSync(path.join(src, f));
    if (f.endsWith('.gz')) fs.writeFileSync(path.join(out, f.slice(0, -3)), zlib.gunzipSync(data));
    else fs.writeFileSync(path.join(out, f), data);
  }
  if (sp) fs.copyFileSync(fixture('videollama2_clip_mistral_tiny', 'tokenizer.model'), path.join(out, 'tokenizer.model'));
  process.on('exit', () => fs.rmSync(out, { recursive: true, force: true }));
  materialised.set(name, out);
  return out;
}

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
