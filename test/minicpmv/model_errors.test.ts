/**
 * Bad inputs to the MiniCPM-V model are refused before anything is computed, with messages naming
 * the sample, the image and both numbers: image_bound vs image features, tgt_sizes vs pixel
 * strips, malformed strips; and strict loading reports missing, unexpected and wrong-shape
 * tensors with the key.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { MiniCPMV, MiniCPMVInputs } from '../../models/minicpmv/modeling';
import { SafetensorsFile, WriteTensor, writeSafetensors } from '../../weights/safetensors';
import { Golden, itIf } from '../helpers/golden';
import { modelFixture } from '../helpers/fixtures';
import { tinyInputs } from './tiny_inputs';

const dir = modelFixture('minicpmv26_tiny');

describe('MiniCPMV: bad inputs', () => {
  let model: MiniCPMV;
  let g: Golden;
  let ok: ReturnType<typeof tinyInputs>;
  beforeAll(() => {
    if (!dir) return;
    model = MiniCPMV.fromPretrained(dir);
    g = new Golden(path.join(dir, 'golden.safetensors'));
    ok = tinyInputs(g);
  });
  afterAll(() => {
    model?.dispose();
    g?.close();
  });

  /** Expects `embed` to throw `msg` and to leave no tensor behind. */
  function refuses(inputs: MiniCPMVInputs, msg: string | RegExp): void {
    const before = tf.memory().numTensors;
    expect(() => model.embed(inputs)).toThrow(msg);
    expect(tf.memory().numTensors).toBe(before);
  }

  itIf(dir)('fewer image_bound ranges than images', () => {
    refuses({ ...ok, imageBound: [ok.bounds.slice(0, 6)] },
      'sample 0: image tokens: 96 in 6 image_bound range(s), image features: 112 from 7 image(s) × query_num 16');
  });

  itIf(dir)('more images than image_bound ranges (an extra slice)', () => {
    refuses({ ...ok, pixelValues: [[...ok.strips, ok.strips[1]]], tgtSizes: [[...ok.sizes, ok.sizes[1]]] },
      'sample 0: image tokens: 112 in 7 image_bound range(s), image features: 128 from 8 image(s)');
  });

  itIf(dir)('an image_bound range shorter than query_num names the image', () => {
    const bounds = ok.bounds.map((b) => [...b] as [number, number]);
    bounds[0] = [27, 42];
    refuses({ ...ok, imageBound: [bounds] }, 'sample 0, image 0 (source): image tokens: 15 (image_bound[0] = [27, 42)), image features: 16');
    bounds[0] = [27, 43];
    bounds[3] = [81, 98];
    refuses({ ...ok, imageBound: [bounds] }, 'sample 0, image 3 (slice 3): image tokens: 17 (image_bound[3] = [81, 98)), image features: 16');
  });

  itIf(dir)('image_bound outside the prompt or overlapping', () => {
    const bounds = ok.bounds.map((b) => [...b] as [number, number]);
    bounds[6] = [160, 176];
    refuses({ ...ok, imageBound: [bounds] }, 'sample 0: image_bound[6] = [160, 176) is not a range inside the 170 tokens');
    bounds[6] = [130, 146];
    refuses({ ...ok, imageBound: [bounds] }, 'sample 0: image_bound[6] = [130, 146) overlaps an earlier range at token 130');
  });

  itIf(dir)('tgt_sizes inconsistent with a pixel strip', () => {
    const sizes = ok.sizes.map((s) => [...s] as [number, number]);
    sizes[0] = [4, 4];
    refuses({ ...ok, tgtSizes: [sizes] }, 'pixel_values[0] is a strip of 15 patches ([3,14,210]) but tgt_sizes[0] = [4, 4] is 16 patches');
    sizes[0] = [3, 5];
    sizes[2] = [2, 8];
    // 2×8 = 16 patches matches the strip length: the layout is not checkable from pixels, so it is accepted
    expect(() => model.embed({ ...ok, tgtSizes: [sizes] }).dispose()).not.toThrow();
    sizes[2] = [0, 16];
    refuses({ ...ok, tgtSizes: [sizes] }, 'tgt_sizes[2] = [0,16] must be [h, w] in patches, positive integers');
  });

  itIf(dir)('malformed strips and count mismatches', () => {
    const bad = { data: new Float32Array(3 * 13 * 210), shape: [3, 13, 210] };
    refuses({ ...ok, pixelValues: [[bad, ...ok.strips.slice(1)]] }, 'pixel_values[0] has shape [3,13,210], expected [3, 14, L·14] (reshape_by_patch layout)');
    const short = { data: new Float32Array(10), shape: [3, 14, 210] };
    refuses({ ...ok, pixelValues: [[short, ...ok.strips.slice(1)]] }, 'pixel_values[0]: 10 values for shape [3,14,210] (8820 expected)');
    refuses({ ...ok, tgtSizes: [ok.sizes.slice(0, 6)] }, 'sample 0: 7 image(s) in pixel_values but 6 tgt_sizes');
    refuses({ ...ok, imageBound: [] }, 'image_bound has 0 sample(s), input_ids has 1');
    refuses({ ...ok, inputIds: [ok.inputIds[0], ok.inputIds[0].slice(1)], pixelValues: [ok.strips, []], tgtSizes: [ok.sizes, []], imageBound: [ok.bounds, []] },
      'input_ids[1] has 169 tokens, input_ids[0] has 170 (pad the batch)');
    refuses({ ...ok, inputIds: [[...ok.inputIds[0].slice(0, 169), 5000]] }, 'input_ids[169] = 5000 is outside the vocabulary [0, 1024)');
  });
});

describe('MiniCPMV: strict loading', () => {
  let tmp: string;
  beforeAll(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'minicpmv-load-'));
  });
  afterAll(() => {
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  /** A copy of the tiny checkpoint with `edit` applied to its tensors. */
  function variant(name: string, edit: (t: Record<string, WriteTensor>) => void): string {
    const d = path.join(tmp, name);
    fs.mkdirSync(d);
    fs.copyFileSync(path.join(dir!, 'config.json'), path.join(d, 'config.json'));
    const f = SafetensorsFile.open(path.join(dir!, 'model.safetensors'));
    const t: Record<string, WriteTensor> = {};
    for (const k of f.keys()) t[k] = { dtype: 'F32', shape: f.entry(k).shape, data: f.read(k).data };
    f.close();
    edit(t);
    writeSafetensors(path.join(d, 'model.safetensors'), t);
    return d;
  }

  itIf(dir)('missing, unexpected and wrong-shape tensors are all reported with their keys', () => {
    const d = variant('bad', (t) => {
      delete t['resampler.proj'];
      delete t['vpm.encoder.layers.1.mlp.fc2.bias'];
      t['resampler.extra'] = { dtype: 'F32', shape: [2], data: [1, 2] };
      t['resampler.query'] = { dtype: 'F32', shape: [8, 256], data: new Float32Array(8 * 256) };
    });
    const before = tf.memory().numTensors;
    let msg = '';
    try {
      MiniCPMV.fromPretrained(d).dispose();
    } catch (e) {
      msg = (e as Error).message;
    }
    expect(msg).toMatch(/cannot load MiniCPMV: 2 missing, 1 unexpected, 1 wrong-shape/);
    expect(msg).toContain("missing: 'resampler.proj'");
    expect(msg).toContain("missing: 'vpm.encoder.layers.1.mlp.fc2.bias'");
    expect(msg).toContain("unexpected: 'resampler.extra'");
    expect(msg).toContain("wrong shape: 'resampler.query'");
    expect(msg).toContain('is [8, 256], MiniCPMV expects [16, 256]');
    expect(tf.memory().numTensors).toBe(before);
  });

  itIf(dir)('a stored resampler.pos_embed buffer is ignored, and a clean copy loads', () => {
    const d = variant('pos_embed', (t) => {
      t['resampler.pos_embed'] = { dtype: 'F32', shape: [2, 2, 256], data: new Float32Array(4 * 256) };
    });
    const m = MiniCPMV.fromPretrained(d);
    expect([...m.namedParams()].every(([, p]) => p.loaded)).toBe(true);
    m.dispose();
  });

  it('a missing directory or config names the path', () => {
    expect(() => MiniCPMV.fromPretrained(path.join(tmp, 'nope'))).toThrow(/nope\/config.json: cannot read \(ENOENT\)/);
  });
});
