/**
 * Qwen2 byte-level BPE (MiniCPM-V 2.6 vocab.json + merges.txt) against transformers 4.40 slow
 * Qwen2Tokenizer / MiniCPMVTokenizerFast vectors and the llama.cpp Qwen2 reference cases.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expectSameInts, itIf, shared } from '../helpers/golden';
import { HfJsTokenizer, loadTokenizer, Tokenizer } from '../../tokenizers';
import { hfTokenizers } from '../../tokenizers/hf_libs';
import { QWEN2_SPECIAL_DEFAULTS } from '../../tokenizers/hf_tokenizer';
import { qwen2TokenizerJson, readVocabAndMerges } from '../../tokenizers/bpe_files';
import { readTokenizerSettings, completeAddedTokens } from '../../tokenizers/tokenizer_config';
import { TOK, readJson, readLlamaCppVectors, unks } from './vectors';

const vectors = readJson(TOK('minicpmv26', 'test_vectors.json'));
const llamacpp = readLlamaCppVectors(TOK('llamacpp_qwen2', 'ggml-vocab-qwen2.gguf.inp'), TOK('llamacpp_qwen2', 'ggml-vocab-qwen2.gguf.out'));

let tok: Tokenizer;
beforeAll(() => {
  tok = loadTokenizer(TOK('minicpmv26'));
});

describe('MiniCPM-V 2.6 tokenizer (Qwen2 BPE from vocab.json + merges.txt)', () => {
  it('loads as bpe with the MiniCPM-V special tokens', () => {
    expect(tok.kind).toBe('bpe');
    expect(tok.vocabSize).toBe(151666); // config.json vocab_size of MiniCPM-V 2.6
    expect([tok.bosTokenId, tok.eosTokenId, tok.padTokenId, tok.unkTokenId]).toEqual([151644, 151645, 151643, 128244]);
    for (const [token, id] of Object.entries(vectors.special_ids as Record<string, number>)) {
      expect([token, tok.tokenToId(token)]).toEqual([token, id]);
      expect(tok.idToToken(id)).toBe(token);
    }
    // <unk> (an ordinary id inside the BPE range) and the 23 added tokens 151643..151665
    expect(tok.specialIds).toEqual([128244, ...Array.from({ length: 23 }, (_, i) => 151643 + i)]);
    expect(tok.tokenToId('Ġworld')).toBe(1879);
    expect(tok.tokenToId('no such token')).toBeUndefined();
    expect(tok.idToToken(151666)).toBeUndefined();
  });

  it.each<[string, { text: string; ids: number[] }]>(vectors.encode_add_special_tokens_default.map((c: { text: string; ids: number[] }) => [JSON.stringify(c.text), c]))('encodes %s', (_, c) => {
    const { text, ids } = c;
    expectSameInts(text, tok.encode(text), ids);
    // Qwen2 adds no BOS/EOS: add_special_tokens makes no difference
    expectSameInts(text, tok.encode(text, { addSpecialTokens: false }), ids);
    expect(tok.decode(ids)).toBe(text);
  });

  it('reproduces the chat prompt with an image placeholder -> input_ids', () => {
    const c = vectors.chat_with_image;
    const prompt = tok.applyChatTemplate([{ role: 'user', content: '(<image>./</image>)\nWhat is in the image?' }], { addGenerationPrompt: true });
    expect(prompt).toBe(c.prompt);
    // what MiniCPMVProcessor puts for (<image>./</image>): source image + a 1x2 slice grid, 64 queries each
    const placeholder = `<image_id>0</image_id><image>${unks(64)}</image><slice>${unks(64)}</slice>\n<slice>${unks(64)}</slice>`;
    const ids = tok.encode(prompt.replace('(<image>./</image>)', placeholder));
    expectSameInts('chat_with_image.input_ids', ids, c.input_ids);
    // image_bound = runs of <unk> after <image>/<slice>
    const bounds: number[][] = [];
    ids.forEach((id, i) => {
      if (id === 151646 || id === 151656) bounds.push([i + 1, ids.indexOf(id === 151646 ? 151647 : 151657, i)]);
    });
    expect(bounds).toEqual(c.image_bound);
  });

  it('decodes with and without special tokens', () => {
    const ids = tok.encode('<|im_start|>user\nHi 🦙<|im_end|>\n<|endoftext|>');
    expect(tok.decode(ids)).toBe('<|im_start|>user\nHi 🦙<|im_end|>\n<|endoftext|>');
    // skip_special_tokens drops every added special token and <unk> (HF all_special_ids)
    expect(tok.decode(ids, { skipSpecialTokens: true })).toBe('user\nHi 🦙\n');
    expect(tok.decode([151646, 128244, 128244, 151647])).toBe('<image><unk><unk></image>');
    expect(tok.decode([151646, 128244, 151647], { skipSpecialTokens: true })).toBe('');
    expect(tok.decode([])).toBe('');
    expect(tok.decode(new Int32Array([9707, 1879]))).toBe('Hello world');
  });

  it('decodes a split UTF-8 character to U+FFFD like bytes.decode(errors="replace")', () => {
    // 'émoji 🦙 test' -> [..., 11162 'ĠðŁ', 99 '¦', 247 'Ļ', ...]: the llama emoji spans three tokens
    expect(tok.decode([11162, 99])).toBe(' \ufffd');
    expect(tok.decode([11162, 99, 247])).toBe(' 🦙');
  });

  it('skips ids above the vocabulary and rejects negative or fractional ids', () => {
    expect(tok.decode([9707, 151666, 999999, 1879])).toBe('Hello world');
    expect(() => tok.decode([9707, -200])).toThrow(/ids\[1\] = -200 is not a token id/);
    expect(() => tok.decode([1.5])).toThrow(RangeError);
  });

  it('NFC-normalizes like Qwen2Tokenizer.prepare_for_tokenization', () => {
    expect(tok.encode('e\u0301moji')).toEqual(tok.encode('émoji'));
  });

  it.each<[number, string, { text: string; ids: number[] }]>(llamacpp.map((c, i) => [i, JSON.stringify(c.text).slice(0, 40), c]))('llama.cpp Qwen2 case %i %s', (_, __, c) => {
    const { text, ids } = c;
    expectSameInts(JSON.stringify(text), tok.encode(text), ids);
    // decode(encode(x)) == x for every case (all are NFC already)
    expect(tok.decode(ids)).toBe(text);
  });

  it('has all 43 llama.cpp cases', () => {
    expect(llamacpp).toHaveLength(43);
  });

  it('encodes a 2000-token prompt in milliseconds', () => {
    const text = llamacpp.map((c) => c.text).join('\n').repeat(5);
    const t0 = performance.now();
    const ids = tok.encode(text);
    const ms = performance.now() - t0;
    expect(ids.length).toBeGreaterThan(2000);
    expect(ms).toBeLessThan(1000); // ~10 ms measured; generous for a loaded CI box
  });
});

describe('tokenizer.json checkpoints', () => {
  let dir: string;
  afterAll(() => {
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('a tokenizer.json built like Qwen2Converter gives the same ids and takes precedence over vocab.json', () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tok-json-'));
    const src = TOK('minicpmv26');
    const settings = readTokenizerSettings(src, {});
    const { vocab, merges } = readVocabAndMerges(src);
    const added = completeAddedTokens(settings.added, settings.special, (s) => vocab.get(s), vocab.size, 'test');
    fs.writeFileSync(path.join(dir, 'tokenizer.json'), JSON.stringify(qwen2TokenizerJson(vocab, merges, added)));
    for (const f of ['tokenizer_config.json', 'vocab.json', 'merges.txt']) fs.copyFileSync(path.join(src, f), path.join(dir, f));
    const t = loadTokenizer(dir);
    expect(t.kind).toBe('tokenizer.json');
    expect(t.vocabSize).toBe(151666);
    expect(t.specialIds).toEqual(tok.specialIds);
    for (const c of vectors.encode_add_special_tokens_default) {
      expectSameInts(c.text, t.encode(c.text), c.ids);
      expect(t.decode(c.ids)).toBe(c.text);
    }
    for (const c of llamacpp) expectSameInts(c.text, t.encode(c.text), c.ids);
    expect(t.applyChatTemplate([{ role: 'user', content: 'Hi' }], { addGenerationPrompt: true })).toBe(
      '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n',
    );
  });
});

describe('fast BPE construction', () => {
  it.each(['minicpmv26_tiny_train', 'videollama2_qwen2_tiny', 'minicpmv26'])('%s: same model tables as the library constructor', (name) => {
    const src = TOK(name);
    const settings = readTokenizerSettings(src, QWEN2_SPECIAL_DEFAULTS);
    const { vocab, merges } = readVocabAndMerges(src);
    const added = completeAddedTokens(settings.added, settings.special, (s) => vocab.get(s), vocab.size, 'test');
    const viaLibrary = new hfTokenizers.Tokenizer(qwen2TokenizerJson(vocab, merges, added), {}).model as any;
    const ours = (loadTokenizer(src) as HfJsTokenizer).lib.model as any;
    expect(ours.vocab).toEqual(viaLibrary.vocab);
    expect([...ours.tokens_to_ids]).toEqual([...viaLibrary.tokens_to_ids]);
    expect([...ours.bpe_ranks]).toEqual([...viaLibrary.bpe_ranks]);
  });
});

describe('shared copies of the vectors', () => {
  itIf(shared('tokenizers', 'minicpmv26', 'test_vectors.json'))('match the bundled ones', () => {
    for (const f of ['minicpmv26/test_vectors.json', 'minicpmv26/vocab.json', 'minicpmv26/merges.txt', 'llamacpp_qwen2_vectors/ggml-vocab-qwen2.gguf.out']) {
      const mine = f.startsWith('llamacpp') ? TOK('llamacpp_qwen2', path.basename(f)) : TOK(...f.split('/'));
      expect(fs.readFileSync(mine).equals(fs.readFileSync(shared('tokenizers', f) as string))).toBe(true);
    }
  });
});
