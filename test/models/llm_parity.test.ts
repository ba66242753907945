/**
 * LLM parity with the upstream PyTorch goldens: feeding the golden `llm.inputs_embeds`, the
 * outputs of layer 0, the last layer, the final norm and the logits match within max relative
 * error 1e-4 for all three fixtures; the KV-cached forward equals the full forward within 1e-5.
 */
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { CausalLM } from '../../layers/decoder';
import { KVCache } from '../../layers/kv_cache';
import { Golden, expectClose, itIf } from '../helpers/golden';
import { expectNoLeak } from '../helpers/memory';
import { loadFixtureLLM, modelFixture } from '../helpers/fixtures';

interface Case { fixture: string; family: 'qwen2' | 'mistral'; llmPrefix: string; goldenPrefixes: string[] }
const CASES: Case[] = [
  { fixture: 'minicpmv26_tiny', family: 'qwen2', llmPrefix: 'llm.', goldenPrefixes: [''] },
  { fixture: 'videollama2_clip_mistral_tiny', family: 'mistral', llmPrefix: '', goldenPrefixes: ['image.', 'video.'] },
  { fixture: 'videollama2_siglip_qwen2_tiny', family: 'qwen2', llmPrefix: '', goldenPrefixes: ['image.', 'video.'] },
];


for (const c of CASES) {
  const dir = modelFixture(c.fixture);
  describe(`LLM parity: ${c.fixture}`, () => {
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

    for (const gp of c.goldenPrefixes) {
      itIf(dir)(`${gp}llm.* within 1e-4 of upstream`, () => {
        const taps = new Map<string, { data: Float32Array; shape: number[] }>();
        const x = g.tensor(`${gp}llm.inputs_embeds`) as tf.Tensor3D;
        const logits = lm.forward(x, { taps: (name, t) => taps.set(name, { data: t.dataSync() as Float32Array, shape: t.shape }) });
        for (const name of ['llm.layer0', 'llm.layer_last', 'llm.norm']) expectClose(`${gp}${name}`, taps.get(name)!, g.get(`${gp}${name}`), 1e-4);
        if (g.has(`${gp}llm.logits`)) {
          expectClose(`${gp}llm.logits`, logits, g.get(`${gp}llm.logits`), 1e-4);
        } else {
          // Large vocab: the golden keeps the last 4 rows in full plus argmax/logsumexp/columns of every row.
          const [B, S, V] = logits.shape;
          expectClose(`${gp}llm.logits.last4`, logits.slice([0, S - 4, 0], [B, 4, V]), g.get(`${gp}llm.logits.last4`), 1e-4);
          const cols = g.tensor(`${gp}llm.logits.cols_index`);
          expectClose(`${gp}llm.logits.cols`, tf.gather(logits, cols, 2), g.get(`${gp}llm.logits.cols`), 1e-4);
          expectClose(`${gp}llm.logits.logsumexp`, tf.logSumExp(logits, -1), g.get(`${gp}llm.logits.logsumexp`), 1e-4);
          expect(Array.from(tf.argMax(logits, -1).dataSync())).toEqual(g.ints(`${gp}llm.logits.argmax`));
          cols.dispose();
        }
        tf.dispose([x, logits]);
      });
    }

    itIf(dir)('cached prefill + single steps equal the full forward (1e-5)', () => {
      const gp = c.goldenPrefixes[0];
      const x = g.tensor(`${gp}llm.inputs_embeds`) as tf.Tensor3D;
      const [B, S, E] = x.shape;
      const full = lm.forward(x); // [B, S, V]
      const V = full.shape[2];
      const cache = new KVCache(lm.cfg.numHiddenLayers);
      const P = S - 5;
      // prefill P positions (logits of the last one), then 5 single-token steps
      const parts = [lm.forward(x.slice([0, 0, 0], [B, P, E]), { cache, logits: 'last' })];
      for (let t = P; t < S; t++) parts.push(lm.forward(x.slice([0, t, 0], [B, 1, E]), { cache }));
      expect(cache.seqLength).toBe(S);
      const cached = tf.concat(parts, 1); // rows P-1 .. S-1
      const ref = full.slice([0, P - 1, 0], [B, S - P + 1, V]);
      expectClose('cached logits', cached, { data: ref.dataSync(), shape: ref.shape }, 1e-5);
      ref.dispose();
      cache.dispose();
      tf.dispose([x, full, cached, ...parts]);
    });

    itIf(dir)('forward leaves tf.memory().numTensors unchanged', async () => {
      const x = g.tensor(`${c.goldenPrefixes[0]}llm.inputs_embeds`) as tf.Tensor3D;
      await expectNoLeak('CausalLM.forward', () => lm.forward(x).dispose());
      await expectNoLeak('CausalLM.forward with cache', () => {
        const cache = new KVCache(lm.cfg.numHiddenLayers);
        lm.forward(x, { cache }).dispose();
        cache.dispose();
      });
      x.dispose();
    });
  });
}
