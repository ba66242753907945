/**
 * The truncated Qwen2 tokenizers of the tiny golden fixtures (256 bytes + the first merges of the
 * real Qwen2, added tokens from id 1000/1021), checked against the ids the upstream processors
 * produced with them (goldens.json).
 */
import { expectSameInts, itIf, shared } from '../helpers/golden';
import { loadTokenizer, Tokenizer } from '../../tokenizers';
import { TOK, goldens, unks } from './vectors';

const g = goldens();

describe('minicpmv26_tiny tokenizer', () => {
  let tok: Tokenizer;
  beforeAll(() => {
    tok = loadTokenizer(TOK('minicpmv26_tiny'));
  });

  it('has the 24 MiniCPM-V added tokens from id 1000, <unk> last', () => {
    expect(tok.kind).toBe('bpe');
    expect(tok.vocabSize).toBe(1024);
    expect([tok.bosTokenId, tok.eosTokenId, tok.padTokenId, tok.unkTokenId]).toEqual([1001, 1002, 1000, 1023]);
    expect(tok.specialIds).toEqual(Array.from({ length: 24 }, (_, i) => 1000 + i));
    expect(tok.tokenToId('<slice>')).toBe(1013);
  });

  it('chat prompt with the processor placeholder -> golden input_ids', () => {
    const c = g.minicpmv26_tiny;
    const ids = tok.encode(c.chat_prompt_after_template.replace('(<image>./</image>)', c.placeholder));
    expectSameInts('minicpmv26_tiny input_ids', ids, c.input_ids);
  });

  it('decodes the generated ids as MiniCPMV.chat / tokenizer.decode did', () => {
    const c = g.minicpmv26_tiny;
    // a token that ends inside a UTF-8 character decodes to U+FFFD
    expect(tok.decode(c.greedy.ids)).toBe(c.greedy.text);
    expect(tok.decode(c.chat_default_nonsampling.ids).trim()).toBe(c.chat_default_nonsampling.chat_return);
    expect(tok.decode(c.chat_default_nonsampling.ids, { skipSpecialTokens: true })).toBe('.hph\ufffd ars chess');
  });
});

describe('minicpmv26_tiny train tokenizer (added non-special "assistant" overlaid on id 188)', () => {
  let tok: Tokenizer;
  beforeAll(() => {
    tok = loadTokenizer(TOK('minicpmv26_tiny_train'));
  });

  it('maps "assistant" to 188 both ways and keeps the byte token Ā -> 188', () => {
    expect(tok.tokenToId('assistant')).toBe(188);
    expect(tok.idToToken(188)).toBe('assistant');
    expect(tok.tokenToId('Ā')).toBe(188);
    expect(tok.vocabSize).toBe(1024);
    // not special: kept by skipSpecialTokens
    expect(tok.specialIds).not.toContain(188);
    expect(tok.decode([1001, 188, 198], { skipSpecialTokens: true })).toBe('assistant\n');
  });

  it('the finetune sample -> golden input_ids (image tag expanded to <image> + 16 <unk> + </image>)', () => {
    const c = g.minicpmv26_tiny_train;
    const text = c.text_after_chat_template.replace('<image>', `<image>${unks(16)}</image>`);
    const ids = tok.encode(text);
    expectSameInts('train input_ids', ids, c.input_ids);
    expect([ids.indexOf(1003) + 1, ids.indexOf(1004)]).toEqual(c.image_bound[0]);
    // 'helpful assistant' -> 'Ġ' + the added token (the real vocab has one token 'Ġassistant')
    expect(ids.slice(12, 15)).toEqual([360, 220, 188]);
  });

  it('decodes the supervised label runs', () => {
    for (const r of g.minicpmv26_tiny_train.supervised_runs) expect(tok.decode(r.label_ids)).toBe(r.label_text);
  });
});

describe('videollama2_siglip_qwen2_tiny tokenizer', () => {
  it('3 added tokens from id 1021; no bos/unk (null in the config)', () => {
    const tok = loadTokenizer(TOK('videollama2_qwen2_tiny'));
    expect(tok.vocabSize).toBe(1024);
    expect([tok.bosTokenId, tok.eosTokenId, tok.padTokenId, tok.unkTokenId]).toEqual([undefined, 1023, 1021, undefined]);
    expect(tok.specialIds).toEqual([1021, 1022, 1023]);
    for (const m of ['video', 'image']) {
      const c = g.videollama2_siglip_qwen2_tiny[m];
      expect(tok.decode(c.greedy_ids, { skipSpecialTokens: true }).trim()).toBe(c.mm_infer_return);
    }
  });
});

describe('the shared fixture directories load as they are', () => {
  const cases: [string, number][] = [
    ['fixtures/minicpmv26_tiny', 1024],
    ['fixtures/minicpmv26_tiny/train/tokenizer', 1024],
    ['fixtures/videollama2_siglip_qwen2_tiny', 1024],
    ['fixtures/videollama2_clip_mistral_tiny', 32000],
  ];
  for (const [dir, size] of cases) {
    const d = shared(...dir.split('/'));
    itIf(d)(dir, () => {
      expect(loadTokenizer(d as string).vocabSize).toBe(size);
    });
  }
});
