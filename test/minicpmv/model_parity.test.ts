/**
 * MiniCPM-V 2.6 (tiny fixture) against the upstream PyTorch goldens, stage by stage: from the
 * golden processor outputs (`input_ids`, `image_bound`, `tgt_sizes`, `pixel_values.*`) the
 * packed pixels, patch mask and NaViT position ids are exact, and every float stage of `vpm`,
 * the resampler, the spliced `llm.inputs_embeds` and the LLM is within max relative error 1e-4.
 * Splitting the vision batch (vision_batch_size) changes nothing; a forward leaks no tensor.
 */
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { MiniCPMV } from '../../models/minicpmv/modeling';
import { Golden, expectClose, expectSameInts, itIf } from '../helpers/golden';
import { modelFixture } from '../helpers/fixtures';
import { expectNoLeak } from '../helpers/memory';
import { tinyInputs } from './tiny_inputs';

const dir = modelFixture('minicpmv26_tiny');
type Host = { data: Float32Array | Int32Array; shape: number[] };

/** Runs `fn` with a tap that copies every tapped tensor to the host. */
function withTaps(fn: (tap: (name: string, t: tf.Tensor) => void) => tf.Tensor): Map<string, Host> {
  const taps = new Map<string, Host>();
  const out = fn((name, t) => taps.set(name, { data: t.dataSync() as Float32Array | Int32Array, shape: t.shape }));
  taps.set('llm.logits', { data: out.dataSync() as Float32Array, shape: out.shape });
  out.dispose();
  return taps;
}

/** Rows [b, 0..h·w) of a [B, N, E] tensor, for every image b (the padded rows dropped). */
function validRows(t: { data: ArrayLike<number>; shape: number[] }, sizes: [number, number][]): Host {
  const [, N, E] = t.shape;
  const rows: number[] = [];
  sizes.forEach(([h, w], b) => {
    for (let n = 0; n < h * w; n++) for (let e = 0; e < E; e++) rows.push(t.data[(b * N + n) * E + e]);
  });
  return { data: Float32Array.from(rows), shape: [rows.length / E, E] };
}

describe('MiniCPM-V 2.6 tiny: parity with upstream', () => {
  let model: MiniCPMV;
  let g: Golden;
  let taps: Map<string, Host>;
  beforeAll(() => {
    if (!dir) return;
    model = MiniCPMV.fromPretrained(dir);
    g = new Golden(path.join(dir, 'golden.safetensors'));
    const inputs = tinyInputs(g);
    taps = withTaps((tap) => model.forward(inputs, { taps: tap }));
  });
  afterAll(() => {
    model?.dispose();
    g?.close();
  });

  itIf(dir)('packed pixels, patch_attention_mask and NaViT position ids are exact', () => {
    expectClose('vpm.pixel_values_padded', taps.get('vpm.pixel_values_padded')!, g.get('vpm.pixel_values_padded'), 0);
    expectSameInts('vpm.patch_attention_mask', taps.get('vpm.patch_attention_mask')!.data, g.get('vpm.patch_attention_mask').data);
    expect(taps.get('vpm.patch_attention_mask')!.shape).toEqual(g.get('vpm.patch_attention_mask').shape);
    expectSameInts('vpm.position_ids', taps.get('vpm.position_ids')!.data, g.get('vpm.position_ids').data);
    expect(taps.get('vpm.position_ids')!.shape).toEqual(g.get('vpm.position_ids').shape);
  });

  const FLOAT_STAGES = [
    'vpm.patch_embeds', 'vpm.embeddings', 'vpm.layer0',
    'resampler.kv_proj', 'resampler.ln_kv', 'resampler.ln_q', 'resampler.attn_out_QBD', 'resampler.ln_post', 'resampler.out',
    'llm.inputs_embeds', 'llm.layer0', 'llm.layer_last', 'llm.norm', 'llm.logits',
  ];
  for (const name of FLOAT_STAGES) {
    itIf(dir)(`${name} within 1e-4 of upstream`, () => {
      expectClose(name, taps.get(name)!, g.get(name), 1e-4);
    });
  }

  itIf(dir)('vpm.last_hidden_state within 1e-4 on the valid rows (and on the padded rows, computed the same way)', () => {
    const sizes = tinyInputs(g).sizes;
    const ours = taps.get('vpm.last_hidden_state')!;
    const ref = g.get('vpm.last_hidden_state');
    expectClose('vpm.last_hidden_state (valid rows)', validRows(ours, sizes), validRows(ref, sizes), 1e-4);
    expectClose('vpm.last_hidden_state (all rows)', ours, ref, 1e-4);
  });

  itIf(dir)('vision_batch_size 3 (batches of 3, 3, 1) gives the same taps and embeddings, without leaks', async () => {
    const small = new MiniCPMV({ ...model.config, vision_batch_size: 3 });
    small.load(dir!);
    try {
      const inputs = tinyInputs(g);
      const t3 = withTaps((tap) => small.forward(inputs, { taps: tap }));
      for (const name of ['vpm.position_ids', 'vpm.patch_attention_mask']) expectSameInts(name, t3.get(name)!.data, taps.get(name)!.data);
      for (const name of ['vpm.patch_embeds', 'vpm.layer0', 'vpm.last_hidden_state', 'resampler.out', 'llm.inputs_embeds']) {
        expect(t3.get(name)!.shape).toEqual(taps.get(name)!.shape);
        expectClose(`${name} (batches of 3)`, t3.get(name)!, taps.get(name)!, 1e-5);
      }
      await expectNoLeak('MiniCPMV.embed in vision batches of 3, with taps', () => small.embed(inputs, { taps: () => undefined }).dispose());
    } finally {
      small.dispose();
    }
  });

  itIf(dir)('a text-only prompt is just embed_tokens', () => {
    const ids = [1001, 872, 198, 1002];
    const x = model.embed({ inputIds: [ids], pixelValues: [[]], tgtSizes: [[]], imageBound: [[]] });
    const ref = model.llm.model.embed(tf.tensor2d(ids, [1, 4], 'int32'));
    expectClose('text-only inputs_embeds', x, { data: ref.dataSync(), shape: ref.shape }, 0);
    tf.dispose([x, ref]);
  });

  itIf(dir)('vision + resampler + splice + LLM forward leaves tf.memory().numTensors unchanged', async () => {
    const inputs = tinyInputs(g);
    await expectNoLeak('MiniCPMV.forward', () => model.forward(inputs).dispose());
    await expectNoLeak('MiniCPMV.embed with taps', () => model.embed(inputs, { taps: () => undefined }).dispose());
    await expectNoLeak('MiniCPMV.visionFeatures', () => model.visionFeatures(inputs.strips, inputs.sizes).dispose());
  });
});
