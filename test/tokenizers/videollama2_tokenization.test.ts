/**
 * VideoLLaMA2 `tokenizer_multimodal_token` (videollama2/mm_utils.py) on the Mistral vector and on
 * the prompts of both VideoLLaMA2 tiny fixtures (template -> split at the modal token -> ids).
 */
import { expectSameInts, Golden, itIf, shared } from '../helpers/golden';
import { loadTokenizer, Tokenizer } from '../../tokenizers';
import { IMAGE_TOKEN_INDEX, MODAL_INDEX_MAP, tokenizerMultimodalToken, VIDEO_TOKEN_INDEX } from '../../models/videollama2/tokenization';
import { TOK, goldens, readJson } from './vectors';

const g = goldens();
let mistral: Tokenizer, qwen2: Tokenizer;
beforeAll(() => {
  mistral = loadTokenizer(TOK('mistral_v1'));
  qwen2 = loadTokenizer(TOK('videollama2_qwen2_tiny'));
});

describe('tokenizerMultimodalToken', () => {
  it('placeholder ids as in videollama2/constants.py', () => {
    expect(MODAL_INDEX_MAP).toEqual({ '<image>': -200, '<video>': -201, '<audio>': -202 });
    expect([IMAGE_TOKEN_INDEX, VIDEO_TOKEN_INDEX]).toEqual([-200, -201]);
  });

  it('Mistral vector: BOS only from the literal <s>, a ▁ (28705) starting each chunk', () => {
    const v = readJson(TOK('mistral_v1', 'test_vectors.json')).videollama2_tokenizer_multimodal_token;
    expectSameInts('tokenizer_multimodal_token', tokenizerMultimodalToken(v.prompt, mistral, v.modal_token), v.input_ids);
  });

  const fixtures: [string, () => Tokenizer][] = [
    ['videollama2_clip_mistral_tiny', () => mistral],
    ['videollama2_siglip_qwen2_tiny', () => qwen2],
  ];
  for (const [fx, tok] of fixtures) {
    it.each([['video', '<video>'], ['image', '<image>']])(`${fx}: mm_infer prompt (%s) -> golden input_ids`, (modal, token) => {
      const c = g[fx][modal];
      const prompt = tok().applyChatTemplate(c.messages, { addGenerationPrompt: true });
      expect(prompt).toBe(c.prompt);
      const ids = tokenizerMultimodalToken(prompt, tok(), token);
      expectSameInts(`${fx} ${modal}.input_ids`, ids, c.input_ids);
      expect(ids.indexOf(MODAL_INDEX_MAP[token])).toBe(c.mm_token_position);
    });
  }

  it('several modal tokens, empty chunks, and a token outside MODAL_INDEX_MAP', () => {
    expect(tokenizerMultimodalToken('<video><video>', qwen2, '<video>')).toEqual([-201, -201]);
    expect(tokenizerMultimodalToken('a<image>b<image>', qwen2, '<image>')).toEqual([...qwen2.encode('a'), -200, ...qwen2.encode('b'), -200]);
    // upstream: tokenizer(prompt, add_special_tokens=False) for modal '' (text) or anything unknown
    expect(tokenizerMultimodalToken('<s> hi <video>', mistral, '')).toEqual(mistral.encode('<s> hi <video>', { addSpecialTokens: false }));
    // default modal token is <image>
    expect(tokenizerMultimodalToken('x<image>', qwen2)).toEqual([...qwen2.encode('x'), -200]);
  });
});

describe('against golden.safetensors of the shared fixtures', () => {
  for (const fx of ['videollama2_clip_mistral_tiny', 'videollama2_siglip_qwen2_tiny']) {
    const file = shared('fixtures', fx, 'golden.safetensors');
    itIf(file)(`${fx}: image.input_ids / video.input_ids`, () => {
      const golden = new Golden(file as string);
      try {
        const tok = loadTokenizer(shared('fixtures', fx) as string);
        const gj = readJson(shared('fixtures', fx, 'golden.json') as string);
        for (const [modal, token] of [['video', '<video>'], ['image', '<image>']]) {
          const prompt = tok.applyChatTemplate(gj[modal].messages, { addGenerationPrompt: true });
          expectSameInts(`${fx} ${modal}.input_ids`, tokenizerMultimodalToken(prompt, tok, token), golden.ints(`${modal}.input_ids`));
        }
      } finally {
        golden.close();
      }
    });
  }
});
