/**
 * SentencePiece (Mistral v1 tokenizer.model) with transformers 4.40 slow LlamaTokenizer semantics,
 * legacy=True and legacy=False, against vectors made by LlamaTokenizer + sentencepiece 0.1.97;
 * plus the protobuf reader and the BPE rules on hand-built models.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { expectSameInts } from '../helpers/golden';
import { loadTokenizer, LlamaTokenizer, parseSentencePieceModel, SentencePieceBpe, TokenizerLoadError } from '../../tokenizers';
import { decodeUtf8PerByte } from '../../tokenizers/sentencepiece_bpe';
import { TOK, goldens, readJson } from './vectors';

interface Case { text: string; ids_add_special: number[]; ids_no_special: number[] }
const vectors = readJson(TOK('mistral_v1', 'test_vectors.json'));
const tmpDirs: string[] = [];

/** A temp tokenizer dir: the Mistral tokenizer.model + the given tokenizer_config.json (or none). */
function mistralDir(config?: Record<string, unknown>): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tok-sp-'));
  tmpDirs.push(dir);
  fs.copyFileSync(TOK('mistral_v1', 'tokenizer.model'), path.join(dir, 'tokenizer.model'));
  if (config) fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify(config));
  return dir;
}
const fixtureConfig = (): Record<string, unknown> => readJson(TOK('mistral_v1', 'tokenizer_config.json'));

afterAll(() => {
  for (const d of tmpDirs) fs.rmSync(d, { recursive: true, force: true });
});

describe('Mistral v1 tokenizer.model, legacy=True (the HF default)', () => {
  let tok: LlamaTokenizer;
  beforeAll(() => {
    tok = loadTokenizer(TOK('mistral_v1')) as LlamaTokenizer;
  });

  it('loads as sentencepiece with <unk>/<s>/</s> = 0/1/2', () => {
    expect(tok.kind).toBe('sentencepiece');
    expect(tok.legacy).toBe(true);
    expect(tok.vocabSize).toBe(32000);
    expect([tok.unkTokenId, tok.bosTokenId, tok.eosTokenId, tok.padTokenId]).toEqual([0, 1, 2, undefined]);
    expect(tok.specialIds).toEqual([0, 1, 2]);
    expect(tok.idToToken(28705)).toBe('▁');
    expect(tok.idToToken(3)).toBe('<0x00>');
    expect(tok.tokenToId('▁Hello')).toBe(22557);
    expect(tok.tokenToId('nope nope')).toBeUndefined();
  });

  it.each<[string, Case]>((vectors.legacy_True as Case[]).map((c) => [JSON.stringify(c.text), c]))('encodes %s', (_, c) => {
    const { text, ids_add_special, ids_no_special } = c;
    expectSameInts(`${text} (add_special_tokens)`, tok.encode(text), ids_add_special);
    expectSameInts(`${text} (no special)`, tok.encode(text, { addSpecialTokens: false }), ids_no_special);
  });

  it('decodes like LlamaTokenizer.decode', () => {
    for (const c of vectors.legacy_True as Case[]) {
      // sentencepiece drops the dummy-prefix space of the first piece and LlamaTokenizer the '▁' of
      // the first token, so a leading space is lost: HF decodes [28705, 22557, 1526] (' Hello world')
      // to 'Hello world'; after <s> only the first '▁' goes ('<s> Hello world')
      const lead = c.text === ' Hello world';
      const text = lead ? 'Hello world' : c.text;
      expect(tok.decode(c.ids_no_special)).toBe(text);
      expect(tok.decode(c.ids_add_special)).toBe(`<s>${lead ? ' ' : ''}${text}`);
      // <unk> is a special token too
      expect(tok.decode(c.ids_add_special, { skipSpecialTokens: true })).toBe(text.replaceAll('<unk>', ''));
    }
    // convert_tokens_to_string (legacy): a space is inserted before a special token that follows
    // text, and each run between special tokens is decoded on its own (losing its leading '▁')
    expect(tok.decode([22557, 2, 1526])).toBe(' Hello</s>world');
    expect(tok.decode([22557, 2, 1526], { skipSpecialTokens: true })).toBe('Hello world');
  });

  it('decodes byte-fallback pieces as UTF-8', () => {
    expect(tok.decode([243, 162, 169, 156])).toBe('🦙');
    expect(tok.decode([1233, 5326, 3632, 28705, 243, 162, 169, 156, 1369])).toBe('émoji 🦙 test');
    // an incomplete character: one U+FFFD per invalid byte (sentencepiece DecodeUTF8)
    expect(tok.decode([243, 162])).toBe('\ufffd\ufffd');
    expect(decodeUtf8PerByte([0xe2, 0x82, 0x41])).toBe('\ufffd\ufffdA');
    expect(decodeUtf8PerByte([0xed, 0xa0, 0x80])).toBe('\ufffd\ufffd\ufffd'); // a UTF-8-encoded surrogate
  });

  it('reproduces mm_infer outputs of the VideoLLaMA2 Mistral fixture (skip_special_tokens, strip)', () => {
    const g = goldens().videollama2_clip_mistral_tiny;
    for (const m of ['video', 'image']) expect(tok.decode(g[m].greedy_ids, { skipSpecialTokens: true }).trim()).toBe(g[m].mm_infer_return);
  });

  it('encodes a 2000-token prompt in milliseconds', () => {
    const text = (vectors.legacy_True as Case[]).filter((c) => !c.text.includes('<unk>')).map((c) => c.text).join('\n').repeat(20);
    const t0 = performance.now();
    const ids = tok.encode(text);
    const ms = performance.now() - t0;
    expect(ids.length).toBeGreaterThan(2000);
    expect(ms).toBeLessThan(1000); // ~15 ms measured
    expect(tok.decode(ids, { skipSpecialTokens: true })).toBe(text);
  });
});

describe('Mistral v1 tokenizer.model, legacy=False', () => {
  let tok: LlamaTokenizer;
  beforeAll(() => {
    tok = loadTokenizer(mistralDir({ ...fixtureConfig(), legacy: false })) as LlamaTokenizer;
  });

  it.each<[string, Case]>((vectors.legacy_False as Case[]).map((c) => [JSON.stringify(c.text), c]))('encodes %s', (_, c) => {
    const { text, ids_add_special, ids_no_special } = c;
    expect(tok.legacy).toBe(false);
    expectSameInts(`${text} (add_special_tokens)`, tok.encode(text), ids_add_special);
    expectSameInts(`${text} (no special)`, tok.encode(text, { addSpecialTokens: false }), ids_no_special);
  });

  it('round-trips every vector and keeps the space after <s>', () => {
    for (const c of vectors.legacy_False as Case[]) {
      expect(tok.decode(c.ids_no_special)).toBe(c.text);
      expect(tok.decode(c.ids_add_special, { skipSpecialTokens: true })).toBe(c.text.replaceAll('<unk>', ''));
    }
    // add_dummy_prefix is off, so the '▁' after <s> decodes to a space
    expect(tok.decode([1, 22557, 1526])).toBe('<s> Hello world');
  });

  it('does not add a ▁ after special tokens written in the text', () => {
    // legacy=True gives 1867 '▁</' here (see the vectors)
    expect(tok.encode('<unk></image>', { addSpecialTokens: false })).toEqual([0, 700, 4075, 28767]);
    expect(tok.encode('a▁b', { addSpecialTokens: false })).toEqual(tok.encode('a b', { addSpecialTokens: false }));
  });
});

describe('tokenizer_config.json options', () => {
  it('without tokenizer_config.json: legacy, BOS added, no EOS, LlamaTokenizer special tokens', () => {
    const tok = loadTokenizer(mistralDir()) as LlamaTokenizer;
    expect(tok.legacy).toBe(true);
    expect(tok.encode('Hello world')).toEqual([1, 22557, 1526]);
    expect(tok.chatTemplate).toBeUndefined();
    expect(tok.specialIds).toEqual([0, 1, 2]);
  });

  it('add_bos_token / add_eos_token', () => {
    const tok = loadTokenizer(mistralDir({ ...fixtureConfig(), add_bos_token: false, add_eos_token: true }));
    expect(tok.encode('Hello world')).toEqual([22557, 1526, 2]);
    expect(tok.encode('Hello world', { addSpecialTokens: false })).toEqual([22557, 1526]);
  });

  it('rejects an ill-typed option, naming the file and key', () => {
    expect(() => loadTokenizer(mistralDir({ legacy: 'yes' }))).toThrow(/tokenizer_config\.json: 'legacy' must be true or false/);
  });

  it('added non-special tokens are split out and decoded verbatim', () => {
    const cfg = fixtureConfig();
    const atd = { ...(cfg.added_tokens_decoder as object), 32000: { content: '<video>', special: false, normalized: false, lstrip: false, rstrip: false, single_word: false } };
    const tok = loadTokenizer(mistralDir({ ...cfg, added_tokens_decoder: atd }));
    expect(tok.vocabSize).toBe(32001);
    expect(tok.encode('a<video>b', { addSpecialTokens: false })).toEqual([264, 32000, 287]);
    // PreTrainedTokenizer._decode joins the runs with spaces (spaces_between_special_tokens=True)
    expect(tok.decode([264, 32000, 287])).toBe('a <video> b');
  });
});

// ---------------------------------------------------------------------------------------------
// protobuf reader and BPE rules on hand-built models
// ---------------------------------------------------------------------------------------------

/** Minimal proto2 writer for ModelProto. */
function varint(n: number): number[] {
  const out: number[] = [];
  let v = n < 0 ? BigInt.asUintN(64, BigInt(n)) : BigInt(n);
  do {
    let b = Number(v & 0x7fn);
    v >>= 7n;
    if (v > 0n) b |= 0x80;
    out.push(b);
  } while (v > 0n);
  return out;
}
const field = (f: number, wire: number): number[] => varint((f << 3) | wire);
const lenField = (f: number, bytes: number[]): number[] => [...field(f, 2), ...varint(bytes.length), ...bytes];
const strField = (f: number, s: string): number[] => lenField(f, [...Buffer.from(s, 'utf8')]);
const intField = (f: number, v: number): number[] => [...field(f, 0), ...varint(v)];
const floatField = (f: number, v: number): number[] => {
  const b = Buffer.alloc(4);
  b.writeFloatLE(v);
  return [...field(f, 5), ...b];
};

function model(pieces: [string, number, number][], opts: { modelType?: number; byteFallback?: boolean; removeExtra?: boolean } = {}): Uint8Array {
  const out: number[] = [];
  for (const [p, score, type] of pieces) out.push(...lenField(1, [...strField(1, p), ...floatField(2, score), ...intField(3, type)]));
  out.push(...lenField(2, [...intField(3, opts.modelType ?? 2), ...intField(35, opts.byteFallback ? 1 : 0), ...intField(43, -1)]));
  out.push(...lenField(3, [...strField(1, 'identity'), ...intField(3, 1), ...intField(4, opts.removeExtra ? 1 : 0), ...intField(5, 1)]));
  return Uint8Array.from(out);
}

// NORMAL=1 UNKNOWN=2 CONTROL=3 USER_DEFINED=4 UNUSED=5
const TOY: [string, number, number][] = [
  ['<unk>', 0, 2], ['<s>', 0, 3], ['</s>', 0, 3],
  ['▁', -5, 1], ['a', -1, 1], ['b', -2, 1], ['c', -3, 1], ['ab', -0.5, 1], ['abc', -0.1, 5], ['<sep>', 0, 4], ['▁a', -4, 1],
];

describe('SentencePiece BPE rules (hand-built models)', () => {
  const sp = new SentencePieceBpe(parseSentencePieceModel(model(TOY), 'toy.model'), 'toy.model');
  const pieces = (text: string): string[] => sp.encode(text).map((p) => p.piece);

  it('merges the best-scoring pair first and splits UNUSED pieces back', () => {
    // ▁ a b c: 'ab' (-0.5) beats '▁a' (-4); then 'abc' is UNUSED (-0.1) so it merges and is resegmented
    expect(pieces('abc')).toEqual(['▁', 'ab', 'c']);
    expect(pieces('a')).toEqual(['▁a']);
  });

  it('never merges user-defined symbols', () => {
    expect(pieces('a<sep>b')).toEqual(['▁a', '<sep>', 'b']);
  });

  it('without byte fallback, runs of unknown characters become one <unk>', () => {
    expect(sp.encode('xyab')).toEqual([{ piece: '▁', id: 3 }, { piece: 'xy', id: 0 }, { piece: 'ab', id: 7 }]);
    expect(sp.decode(['▁a', '<unk>', '<s>', 'b'])).toBe('a ⁇ b');
  });

  it('remove_extra_whitespaces trims and collapses spaces', () => {
    const sp2 = new SentencePieceBpe(parseSentencePieceModel(model(TOY, { removeExtra: true }), 'toy.model'), 'toy.model');
    expect(sp2.normalize('  a   b  ')).toBe('▁a▁b');
    expect(sp2.normalize('   ')).toBe('');
    expect(sp.normalize('  a ')).toBe('▁▁▁a▁');
  });

  it('rejects non-BPE models and byte_fallback without byte pieces', () => {
    expect(() => new SentencePieceBpe(parseSentencePieceModel(model(TOY, { modelType: 1 }), 'u.model'), 'u.model')).toThrow(/model_type UNIGRAM is not supported/);
    expect(() => new SentencePieceBpe(parseSentencePieceModel(model(TOY, { byteFallback: true }), 'b.model'), 'b.model')).toThrow(/lacks some of the 256 <0xXX> pieces/);
  });
});

describe('corrupt tokenizer.model', () => {
  const real = fs.readFileSync(TOK('mistral_v1', 'tokenizer.model'));
  const parse = (b: Uint8Array): unknown => parseSentencePieceModel(b, 'x/tokenizer.model');

  it('truncated', () => {
    expect(() => parse(real.subarray(0, 1000))).toThrow(/x\/tokenizer\.model: not a valid SentencePiece model \((truncated|field length)/);
  });
  it('empty', () => {
    expect(() => parse(new Uint8Array(0))).toThrow(/no pieces/);
  });
  it('random bytes / a text file', () => {
    expect(() => parse(Buffer.from('{"not": "a model"}'))).toThrow(TokenizerLoadError);
    const junk = Uint8Array.from({ length: 4096 }, (_, i) => (i * 2654435761) >>> 24);
    expect(() => parse(junk)).toThrow(TokenizerLoadError);
  });
  it('duplicate pieces and a bad unk id', () => {
    expect(() => parse(model([['<unk>', 0, 2], ['a', 0, 1], ['a', 0, 1]]))).toThrow(/piece 'a' appears twice/);
    expect(() => parse(model([['a', 0, 1], ['<unk>', 0, 2], ['b', 0, 1]]))).toThrow(/unk_id 0 is not an UNKNOWN piece/);
  });
  it('through loadTokenizer: names the file', () => {
    const dir = mistralDir();
    fs.writeFileSync(path.join(dir, 'tokenizer.model'), real.subarray(0, 5000));
    expect(() => loadTokenizer(dir)).toThrow(new RegExp(`${dir}/tokenizer\\.model: not a valid SentencePiece model`));
  });
});
