/**
 * loadTokenizer: kind selection, the HF side-file rules, and every bad-input path (missing
 * directory or files, corrupt vocab.json / merges.txt / tokenizer_config.json / tokenizer.json).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadTokenizer, TokenizerLoadError } from '../../tokenizers';
import { TOK, readJson } from './vectors';

const tmpDirs: string[] = [];
afterAll(() => {
  for (const d of tmpDirs) fs.rmSync(d, { recursive: true, force: true });
});

/** A temp dir with copies of `files` from test/fixtures/tokenizers/`from`, then `edits` written over them. */
function dirWith(from: string, files: string[], edits: Record<string, string | Buffer> = {}): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tok-load-'));
  tmpDirs.push(dir);
  for (const f of files) fs.copyFileSync(TOK(from, f), path.join(dir, f));
  for (const [f, content] of Object.entries(edits)) fs.writeFileSync(path.join(dir, f), content);
  return dir;
}
const QWEN_FILES = ['vocab.json', 'merges.txt', 'tokenizer_config.json', 'added_tokens.json', 'special_tokens_map.json'];
const tiny = (edits: Record<string, string | Buffer> = {}, files = QWEN_FILES): string => dirWith('minicpmv26_tiny', files, edits);
const expectLoadError = (dir: string, re: RegExp): void => {
  expect(() => loadTokenizer(dir)).toThrow(TokenizerLoadError);
  expect(() => loadTokenizer(dir)).toThrow(re);
};

describe('kind selection', () => {
  it('vocab.json + merges.txt beats tokenizer.model', () => {
    const dir = tiny();
    fs.copyFileSync(TOK('mistral_v1', 'tokenizer.model'), path.join(dir, 'tokenizer.model'));
    expect(loadTokenizer(dir).kind).toBe('bpe');
    fs.rmSync(path.join(dir, 'merges.txt'));
    expect(loadTokenizer(dir).kind).toBe('sentencepiece');
  });

  it('the tokenizer files alone are enough (no tokenizer_config.json: Qwen2Tokenizer defaults)', () => {
    const tok = loadTokenizer(tiny({}, ['vocab.json', 'merges.txt']));
    expect(tok.vocabSize).toBe(1001); // Qwen2Tokenizer adds its default '<|endoftext|>' (unk/eos/pad) after the vocab
    expect([tok.eosTokenId, tok.padTokenId, tok.unkTokenId, tok.bosTokenId]).toEqual([1000, 1000, 1000, undefined]);
    expect(tok.encode('Hello world')).toEqual(loadTokenizer(tiny()).encode('Hello world'));
    expect(tok.encode('<|endoftext|>')).toEqual([1000]);
  });

  it('legacy layout (no added_tokens_decoder): added_tokens.json + special_tokens_map.json', () => {
    const cfg = readJson(TOK('minicpmv26_tiny', 'tokenizer_config.json'));
    delete cfg.added_tokens_decoder;
    const legacy = loadTokenizer(tiny({ 'tokenizer_config.json': JSON.stringify(cfg) }));
    const modern = loadTokenizer(tiny());
    expect(legacy.vocabSize).toBe(1024);
    expect(legacy.specialIds).toEqual(modern.specialIds);
    const text = '<|im_start|>user\n<image><unk></image><|im_end|>';
    expect(legacy.encode(text)).toEqual(modern.encode(text));
  });
});

describe('missing files', () => {
  it('a directory that does not exist', () => {
    expectLoadError('/no/such/dir', /tokenizer directory not found: \/no\/such\/dir/);
  });
  it('a file instead of a directory', () => {
    expectLoadError(TOK('minicpmv26_tiny', 'vocab.json'), /not a directory: .*vocab\.json/);
  });
  it('no tokenizer files: names the directory and the files looked for', () => {
    const dir = tiny({}, ['tokenizer_config.json']);
    expectLoadError(dir, new RegExp(`no tokenizer in ${dir}: looked for tokenizer\\.json, or vocab\\.json \\+ merges\\.txt, or tokenizer\\.model$`));
  });
  it('vocab.json without merges.txt', () => {
    expectLoadError(tiny({}, ['vocab.json']), /vocab\.json is there but merges\.txt is missing/);
  });
});

describe('corrupt vocab.json', () => {
  it.each([
    ['not JSON', '{"a": 1,', /vocab\.json: not valid JSON/],
    ['an array', '["a", "b"]', /vocab\.json: expected a JSON object/],
    ['a bad id', '{"a": 0, "b": "one"}', /vocab\.json: id of token "b" must be a non-negative integer, got "one"/],
    ['a negative id', '{"a": -1}', /id of token "a" must be a non-negative integer, got -1/],
    ['empty', '{}', /vocab\.json: empty vocabulary/],
  ])('%s', (_, content, re) => {
    expectLoadError(tiny({ 'vocab.json': content as string }), re as RegExp);
  });
  it('truncated (half the file)', () => {
    const v = fs.readFileSync(TOK('minicpmv26_tiny', 'vocab.json'));
    expectLoadError(tiny({ 'vocab.json': v.subarray(0, v.length >> 1) }), /vocab\.json: not valid JSON/);
  });
});

describe('corrupt merges.txt', () => {
  const merges = fs.readFileSync(TOK('minicpmv26_tiny', 'merges.txt'), 'utf8').split('\n');
  it('a line with three tokens names the line', () => {
    const bad = [...merges];
    bad[4] = 'Ġ t h';
    expectLoadError(tiny({ 'merges.txt': bad.join('\n') }), /merges\.txt:5: expected two tokens separated by a space, got "Ġ t h"/);
  });
  it('a merge whose token is not in vocab.json', () => {
    const bad = [...merges];
    bad[10] = 'Ġ zzzz';
    expectLoadError(tiny({ 'merges.txt': bad.join('\n') }), /merges\.txt:11: merge 'Ġ zzzz' uses "zzzz", which vocab\.json does not have/);
  });
  it('a merges.txt of another vocabulary (result not in vocab.json)', () => {
    const bad = [...merges];
    bad[2] = 'q x';
    expectLoadError(tiny({ 'merges.txt': bad.join('\n') }), /merges\.txt:3: merge 'q x' uses "qx"/);
  });
  it('empty / binary', () => {
    expectLoadError(tiny({ 'merges.txt': '#version: 0.2\n' }), /merges\.txt: no merges/);
    expectLoadError(tiny({ 'merges.txt': Buffer.from([0x00, 0x20, 0xff, 0xfe, 0x0a, 0x41]) }), /merges\.txt:1: /);
  });
  it('tolerates CRLF line ends and trailing blank lines', () => {
    const tok = loadTokenizer(tiny({ 'merges.txt': merges.join('\r\n') + '\r\n\r\n' }));
    const text = 'What is happening in this video?';
    expect(tok.encode(text)).toEqual(loadTokenizer(tiny()).encode(text));
  });
});

describe('corrupt side files', () => {
  const cfg = (): Record<string, any> => readJson(TOK('minicpmv26_tiny', 'tokenizer_config.json'));
  it('tokenizer_config.json not JSON / not an object', () => {
    expectLoadError(tiny({ 'tokenizer_config.json': '{"chat_template": ' }), /tokenizer_config\.json: not valid JSON/);
    expectLoadError(tiny({ 'tokenizer_config.json': '[]' }), /tokenizer_config\.json: expected a JSON object, got an array/);
  });
  it('a bad added_tokens_decoder entry names the id', () => {
    const c = cfg();
    c.added_tokens_decoder['1005'] = { special: true };
    expectLoadError(tiny({ 'tokenizer_config.json': JSON.stringify(c) }), /added_tokens_decoder\['1005'\]: expected \{"content"/);
    const c2 = cfg();
    c2.added_tokens_decoder.x = c2.added_tokens_decoder['1005'];
    expectLoadError(tiny({ 'tokenizer_config.json': JSON.stringify(c2) }), /added_tokens_decoder\['x'\]: 'x' is not a token id/);
  });
  it('one added token on two ids', () => {
    const c = cfg();
    c.added_tokens_decoder['1030'] = { ...c.added_tokens_decoder['1005'] };
    expectLoadError(tiny({ 'tokenizer_config.json': JSON.stringify(c) }), /added token '<ref>' has two ids \(1005 and 1030\)/);
  });
  it('an ill-typed special token or chat_template', () => {
    expectLoadError(tiny({ 'tokenizer_config.json': JSON.stringify({ ...cfg(), eos_token: 5 }) }), /'eos_token': expected a token string/);
    expectLoadError(tiny({ 'tokenizer_config.json': JSON.stringify({ ...cfg(), chat_template: 5 }) }), /'chat_template' must be a string/);
  });
  it('legacy added_tokens.json with a bad id', () => {
    const c = cfg();
    delete c.added_tokens_decoder;
    expectLoadError(tiny({ 'tokenizer_config.json': JSON.stringify(c), 'added_tokens.json': '{"<x>": "7"}' }), /added_tokens\.json: id of '<x>' must be a non-negative integer/);
  });
});

describe('corrupt tokenizer.json', () => {
  it.each([
    ['not JSON', '{', /tokenizer\.json: not valid JSON/],
    ['no model', '{"version": "1.0"}', /tokenizer\.json: not a tokenizer\.json \(expected an object with "model"\)/],
    ['an unknown model type', '{"model": {"type": "Nope"}}', /tokenizer\.json: @huggingface\/tokenizers cannot build it/],
    ['bad added_tokens', '{"model": {"type": "BPE", "vocab": {}, "merges": []}, "added_tokens": [{"content": 1}]}', /added_tokens\[0\] must be \{"id": int/],
  ])('%s', (_, content, re) => {
    expectLoadError(tiny({ 'tokenizer.json': content as string }), re as RegExp);
  });
});
