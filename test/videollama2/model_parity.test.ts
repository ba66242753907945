/**
 * VideoLLaMA2 parity with the upstream PyTorch goldens, stage by stage, for both tiny fixtures
 * (CLIP + stc_connector + Mistral; SigLIP + stc_connector_v35 + Qwen2) and both modalities:
 * from the golden `input_ids` + `pixel_values`, every captured tensor — vision embeddings,
 * pre_layrnorm (CLIP), layer 0, the tower output, each STC stage, the spliced `inputs_embeds`, the
 * LLM layers and the logits (or their summaries) — is within max relative error 1e-4, and the
 * attention mask after the splice is equal. Also: weights from the release-era tower directory
 * give the same tower output, and a full forward leaves numTensors unchanged.
 */
import * as tf from '@tensorflow/tfjs';
import { VideoLLaMA2 } from '../../models/videollama2/modeling';
import { Golden, expectClose, expectSameInts, itIf } from '../helpers/golden';
import { goldenFile, modelFixture } from '../helpers/fixtures';
import { expectNoLeak } from '../helpers/memory';
import { goldenPixels } from '../helpers/vl2_pixels';

const TOL = 1e-4;
const FIXTURES = ['videollama2_clip_mistral_tiny', 'videollama2_siglip_qwen2_tiny'];
const MODALS = ['image', 'video'] as const;
/** Captures compared as full tensors (when the golden has them). */
const STAGES = [
  'vision.embeddings', 'vision.pre_layrnorm', 'vision.layer0', 'vision_tower.out',
  'stc.s1.b1', 'stc.s1', 'stc.sampler.conv3d', 'stc.sampler', 'stc.s2', 'stc.readout',
  'llm.inputs_embeds', 'llm.layer0', 'llm.layer_last', 'llm.norm', 'llm.logits',
];

type Host = { data: Float32Array; shape: number[] };
const table: string[] = [];

async function run(model: VideoLLaMA2, g: Golden, dir: string, modal: 'image' | 'video'): Promise<{ taps: Map<string, Host>; logits: tf.Tensor3D }> {
  const taps = new Map<string, Host>();
  const pixels = await goldenPixels(g, dir, modal);
  try {
    const logits = model.forward(g.ints(`${modal}.input_ids`), [{ pixels, modal }], {
      attentionMask: g.ints(`${modal}.attention_mask`),
      taps: (name, t) => taps.set(name, { data: t.dataSync() as Float32Array, shape: t.shape }),
    });
    return { taps, logits };
  } finally {
    pixels.dispose();
  }
}

/** The attention mask `prepareInputsEmbeds` returns for the golden inputs. */
async function spliceMask(model: VideoLLaMA2, g: Golden, dir: string, modal: 'image' | 'video', attentionMask: number[]): Promise<number[]> {
  const pixels = await goldenPixels(g, dir, modal);
  const sp = model.prepareInputsEmbeds(g.ints(`${modal}.input_ids`), [{ pixels, modal }], { attentionMask });
  tf.dispose([pixels, sp.inputsEmbeds]);
  return sp.attentionMask;
}

for (const fx of FIXTURES) {
  const dir = modelFixture(fx);
  describe(`VideoLLaMA2 parity: ${fx}`, () => {
    let model: VideoLLaMA2;
    let g: Golden;
    const notes: string[] = [];
    beforeAll(async () => {
      if (!dir) return;
      model = await VideoLLaMA2.fromPretrained(dir, { log: (m) => notes.push(m) });
      g = new Golden(goldenFile(dir));
    });
    afterAll(() => {
      model?.dispose();
      g?.close();
    });

    for (const modal of MODALS) {
      itIf(dir)(`${modal}: tower, STC, splice and LLM within ${TOL} of upstream`, async () => {
        const { taps, logits } = await run(model, g, dir!, modal);
        const row: string[] = [];
        for (const name of STAGES) {
          const key = `${modal}.${name}`;
          if (!g.has(key)) continue;
          const ours = taps.get(name);
          if (!ours) throw new Error(`no tap '${name}'`);
          const r = expectClose(key, ours, g.get(key), TOL);
          row.push(`${name}=${r.maxRelErr.toExponential(2)}`);
        }
        expectSameInts(`${modal}.llm.attention_mask_after_splice`, await spliceMask(model, g, dir!, modal, g.ints(`${modal}.attention_mask`)), g.ints(`${modal}.llm.attention_mask_after_splice`));
        if (!g.has(`${modal}.llm.logits`)) {
          // Large vocab: the golden keeps the last 4 rows plus per-row summaries.
          const [B, S, V] = logits.shape;
          const cols = g.tensor(`${modal}.llm.logits.cols_index`);
          tf.tidy(() => {
            const checks: [string, tf.Tensor][] = [
              ['llm.logits.last4', logits.slice([0, S - 4, 0], [B, 4, V])],
              ['llm.logits.cols', tf.gather(logits, cols, 2)],
              ['llm.logits.logsumexp', tf.logSumExp(logits, -1)],
            ];
            for (const [name, t] of checks) row.push(`${name}=${expectClose(`${modal}.${name}`, t, g.get(`${modal}.${name}`), TOL).maxRelErr.toExponential(2)}`);
            expectSameInts(`${modal}.llm.logits.argmax`, tf.argMax(logits, -1).dataSync(), g.ints(`${modal}.llm.logits.argmax`));
          });
          cols.dispose();
        }
        logits.dispose();
        table.push(`${fx} ${modal}: ${row.join(' ')}`);
      });
    }

    itIf(dir)('attention mask after the splice: ones prepended (upstream quirk), not at the media position', async () => {
      const ids = g.ints('video.input_ids');
      const mask = ids.map((_, i) => (i === 0 ? 0 : 1)); // a padded first position
      const out = await spliceMask(model, g, dir!, 'video', mask);
      const added = out.length - ids.length;
      expect(added).toBe(model.connectorTokens() - 1);
      expect(out.slice(0, added + 1)).toEqual([...new Array(added).fill(1), 0]);
    });

    itIf(dir)('tower weights from the release-era tower directory (vision_model.* keys) give the same features', async () => {
      const viaTower = await VideoLLaMA2.fromPretrained(dir!, { towerWeights: 'tower', log: (m) => notes.push(m) });
      try {
        expect(notes.some((n) => n.includes('vision tower weights from'))).toBe(true);
        const pixels = (await goldenPixels(g, dir!, 'video')) as tf.Tensor4D;
        const a = viaTower.vision_tower.forward(pixels);
        expectClose('video.vision_tower.out (tower dir)', a, g.get('video.vision_tower.out'), TOL);
        tf.dispose([a, pixels]);
      } finally {
        viaTower.dispose();
      }
    });

    itIf(dir)('a full tower + connector + splice + LLM forward leaves numTensors unchanged', async () => {
      for (const modal of MODALS) {
        const pixels = await goldenPixels(g, dir!, modal);
        const ids = g.ints(`${modal}.input_ids`);
        await expectNoLeak(`${fx} ${modal} forward`, () => model.forward(ids, [{ pixels, modal }]).dispose());
        await expectNoLeak(`${fx} ${modal} forward with taps`, () => model.forward(ids, [{ pixels, modal }], { taps: () => {} }).dispose());
        await expectNoLeak(`${fx} ${modal} prepareInputsEmbeds`, () => model.prepareInputsEmbeds(ids, [{ pixels, modal }]).inputsEmbeds.dispose());
        pixels.dispose();
      }
    });
  });
}

afterAll(() => {
  if (table.length) console.log(`max relative error per golden tensor (tolerance ${TOL}):\n${table.join('\n')}`);
});
