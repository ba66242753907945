/**
 * From the golden `llm.inputs_embeds`, greedy decoding reproduces each fixture's
 * `generate.greedy_ids`, and beam 3 with repetition penalty 1.2 reproduces MiniCPM-V's
 * `generate.chat_beam3_rep1.2_ids` (upstream calls HF generate with inputs_embeds only, so the
 * penalty sees only generated ids). A whole generation leaves numTensors unchanged.
 */
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { CausalLM } from '../../layers/decoder';
import { asGenerationModel, generate } from '../../generation/generate';
import { Golden, expectSameInts, itIf } from '../helpers/golden';
import { loadFixtureLLM, modelFixture } from '../helpers/fixtures';
import { expectNoLeak } from '../helpers/memory';

interface Case { fixture: string; family: 'qwen2' | 'mistral'; llmPrefix: string; prefixes: string[]; eos: number[] }
const CASES: Case[] = [
  // MiniCPMV.chat terminators: <|im_end|>, <|endoftext|>
  { fixture: 'minicpmv26_tiny', family: 'qwen2', llmPrefix: 'llm.', prefixes: [''], eos: [1002, 1000] },
  { fixture: 'videollama2_clip_mistral_tiny', family: 'mistral', llmPrefix: '', prefixes: ['image.', 'video.'], eos: [2] },
  { fixture: 'videollama2_siglip_qwen2_tiny', family: 'qwen2', llmPrefix: '', prefixes: ['image.', 'video.'], eos: [1023] },
];


for (const c of CASES) {
  const dir = modelFixture(c.fixture);
  describe(`generation: ${c.fixture}`, () => {
    let lm: CausalLM;
    let g: Golden;
    beforeAll(() => {
      if (!dir) return;
      lm = loadFixtureLLM(dir, c.fixture);
      g = new Golden(path.join(dir, 'golden.safetensors'));
    });
    afterAll(() => {
      lm?.dispose();
      g?.close();
    });

    for (const gp of c.prefixes) {
      itIf(dir)(`${gp}greedy ids equal generate.greedy_ids`, async () => {
        const x = g.tensor(`${gp}llm.inputs_embeds`) as tf.Tensor3D;
        const r = await generate(asGenerationModel(lm), { inputsEmbeds: x }, { maxNewTokens: 8, eosTokenId: c.eos });
        expectSameInts(`${gp}generate.greedy_ids`, r.tokens, g.ints(`${gp}generate.greedy_ids`));
        x.dispose();
      });
    }

    if (c.fixture === 'minicpmv26_tiny') {
      itIf(dir)('beam 3 + repetition penalty 1.2 equal generate.chat_beam3_rep1.2_ids', async () => {
        const x = g.tensor('llm.inputs_embeds') as tf.Tensor3D;
        const r = await generate(asGenerationModel(lm), { inputsEmbeds: x }, { maxNewTokens: 8, numBeams: 3, repetitionPenalty: 1.2, eosTokenId: c.eos, padTokenId: 0 });
        expectSameInts('generate.chat_beam3_rep1.2_ids', r.tokens, g.ints('generate.chat_beam3_rep1.2_ids'));
        x.dispose();
      });
    }

    itIf(dir)('a masked prompt position is invisible (HF attention_mask + positions)', async () => {
      // [a, b, c] with mask [1, 0, 1] must continue exactly like [a, c]: b is never attended and
      // c gets position 1 (HF: position_ids = cumsum(mask) - 1).
      const m = asGenerationModel(lm);
      const ids = [5, 17, 9, 23];
      const masked = await generate(m, { inputIds: ids, attentionMask: [1, 0, 1, 1] }, { maxNewTokens: 4 });
      const plain = await generate(m, { inputIds: [5, 9, 23] }, { maxNewTokens: 4 });
      expect(masked.tokens).toEqual(plain.tokens);
      const beamMasked = await generate(m, { inputIds: ids, attentionMask: [1, 0, 1, 1] }, { maxNewTokens: 3, numBeams: 2 });
      const beamPlain = await generate(m, { inputIds: [5, 9, 23] }, { maxNewTokens: 3, numBeams: 2 });
      expect(beamMasked.tokens).toEqual(beamPlain.tokens);
    });

    itIf(dir)('greedy, sampling and beam generation leave numTensors unchanged', async () => {
      const x = g.tensor(`${c.prefixes[0]}llm.inputs_embeds`) as tf.Tensor3D;
      const m = asGenerationModel(lm);
      await expectNoLeak('greedy', () => generate(m, { inputsEmbeds: x }, { maxNewTokens: 3 }));
      await expectNoLeak('sampling', () => generate(m, { inputsEmbeds: x }, { maxNewTokens: 3, doSample: true, topK: 5, seed: 1 }));
      await expectNoLeak('beam', () => generate(m, { inputsEmbeds: x }, { maxNewTokens: 3, numBeams: 2, eosTokenId: c.eos }));
      await expectNoLeak('from ids', () => generate(m, { inputIds: [1, 2, 3] }, { maxNewTokens: 3 }));
      x.dispose();
    });
  });
}

describe('generation: stop strings, empty prompts, limits', () => {
  const dir = modelFixture('minicpmv26_tiny');
  let lm: CausalLM;
  beforeAll(() => {
    if (dir) lm = loadFixtureLLM(dir, 'minicpmv26_tiny');
  });
  afterAll(() => lm?.dispose());
  // A decode over byte-level ids good enough for the test: id → its decimal string + ' '.
  const decode = (ids: number[]) => ids.map((i) => `${i} `).join('');

  itIf(dir)('stops as soon as the decoded continuation contains a stop string (HF keeps the tokens)', async () => {
    const m = asGenerationModel(lm);
    const free = await generate(m, { inputIds: [5, 9, 23] }, { maxNewTokens: 6 }, { decode });
    expect(free.tokens.length).toBe(6);
    const stop = `${free.tokens[2]} `;
    const first = free.tokens.findIndex((t) => `${t} ` === stop);
    const r = await generate(m, { inputIds: [5, 9, 23] }, { maxNewTokens: 6, stopStrings: [stop] }, { decode });
    expect(r.finishReason).toBe('stop_string');
    expect(r.tokens).toEqual(free.tokens.slice(0, first + 1));
  });

  itIf(dir)('empty prompts, max_new_tokens <= 0 and over-long prompts are clear errors', async () => {
    const m = asGenerationModel(lm);
    await expect(generate(m, { inputIds: [] }, {})).rejects.toThrow(/empty prompt/);
    await expect(generate(m, { inputIds: [1] }, { maxNewTokens: 0 })).rejects.toThrow(/max_new_tokens: must be an integer >= 1/);
    const long = new Array(lm.cfg.maxPositionEmbeddings).fill(5);
    await expect(generate(m, { inputIds: long }, { maxNewTokens: 1 })).rejects.toThrow(/too long.*max_position_embeddings = 4096/);
    await expect(generate(m, { inputIds: [5000] }, {})).rejects.toThrow(/input_ids\[0\] = 5000 is outside the vocabulary \[0, 1024\)/);
  });
});
