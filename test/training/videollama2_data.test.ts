/**
 * VideoLLaMA 2 training data (training/videollama2_data.ts) against upstream `train.py`
 * as the training goldens recorded it, for both fixtures (a Mistral video sample and a Qwen2 image
 * sample): input_ids with the placeholder, per-turn instruction-masked labels, attention_mask,
 * pixel_values (≤ 1e-6), the pretraining-stage `preprocess_plain` ids/labels; then the bad inputs.
 */
import { loadTokenizer } from '../../tokenizers';
import { loadVideoLLaMA2Config } from '../../models/videollama2/config';
import { loadTowerImageProcessor } from '../../models/clip/image_processing';
import { readDataFile } from '../../training/data';
import { IGNORE_INDEX } from '../../training/loss';
import { VideoLLaMA2TrainData, collateVideoLLaMA2, preprocessMultimodal } from '../../models/videollama2/train_data';
import { Golden, compare, expectSameInts, itIf } from '../helpers/golden';
import { TrainFx, trainFixture } from './helpers';

const FIXTURES: [TrainFx, string][] = [
  ['videollama2_clip_mistral_tiny', 'clip-vit-tiny-patch14-84'],
  ['videollama2_siglip_qwen2_tiny', 'siglip-tiny-patch14-84'],
];

function dataset(name: TrainFx, tower: string, samples: Record<string, unknown>[], plain = false): VideoLLaMA2TrainData {
  const fx = trainFixture(name);
  return new VideoLLaMA2TrainData(samples, loadTokenizer(fx.model), loadTowerImageProcessor(`${fx.model}/${tower}`), loadVideoLLaMA2Config(fx.model), { dataRoot: fx.dataRoot, plain });
}

describe.each(FIXTURES)('%s training data', (name, tower) => {
  const fx = trainFixture(name);
  const g = new Golden(fx.golden);
  const samples = readDataFile(fx.data);
  afterAll(() => g.close());

  it('input_ids, labels, attention_mask equal upstream; pixels within 1e-6', async () => {
    const ds = dataset(name, tower, samples);
    const ex = await ds.example(0);
    const b = collateVideoLLaMA2([ex], ds.padTokenId, ds.maxLength);
    expectSameInts('input_ids', b.inputIds[0], g.ints('input_ids'));
    expectSameInts('labels', b.labels[0], g.ints('labels'));
    expectSameInts('attention_mask', b.attentionMask[0], g.ints('attention_mask'));
    const px = ex.media!.pixels;
    const every = g.get('pixel_values@every97').data as Float32Array;
    const ours = Float32Array.from({ length: every.length }, (_, i) => px.data[i * 97]);
    expect(compare('pixel_values@every97', ours, [ours.length], every, [every.length]).maxAbsErr).toBeLessThanOrEqual(1e-6);
    expect(ex.media!.modal).toBe(name.includes('mistral') ? 'video' : 'image');
  });

  itIf(fx.fullGolden)('every pixel equals the full golden (../shared)', async () => {
    const full = new Golden(fx.fullGolden!);
    try {
      const ex = await dataset(name, tower, samples).example(0);
      const r = full.get('pixel_values');
      expect(compare('pixel_values', ex.media!.pixels.data, [...ex.media!.pixels.shape], r.data as Float32Array, r.shape).maxAbsErr).toBeLessThanOrEqual(1e-6);
    } finally {
      full.close();
    }
  });

  it('preprocess_plain (pretraining stage) on the first pair equals plain.input_ids / plain.labels', async () => {
    const first = [{ ...samples[0], conversations: (samples[0].conversations as unknown[]).slice(0, 2) }];
    const ex = await dataset(name, tower, first, true).example(0);
    expectSameInts('plain.input_ids', ex.inputIds, g.ints('plain.input_ids'));
    expectSameInts('plain.labels', ex.labels, g.ints('plain.labels'));
    await expect(dataset(name, tower, samples, true).example(0)).rejects.toThrow(/plain \(pretraining\) format takes exactly one \(human, gpt\) pair, got 4 turns/);
  });
});

describe('VideoLLaMA 2 training data: other paths and errors', () => {
  const [name, tower] = FIXTURES[1];
  const convs = readDataFile(trainFixture(name).data)[0].conversations as { from: string; value: string }[];
  const ds = (s: Record<string, unknown>[]) => dataset(name, tower, s);

  it('preprocess_multimodal moves every tag to the front of its turn', () => {
    expect(preprocessMultimodal([{ value: 'Look: <image> here <image>  ' }, { value: 'no tag' }], '<image>'))
      .toEqual([{ value: '<image>\nLook:  here' }, { value: 'no tag' }]);
  });

  it('a leading gpt turn is dropped; a text-only sample has no media and masks each instruction', async () => {
    const text = [{ from: 'human', value: 'Hi there' }, { from: 'gpt', value: 'Hello.' }];
    const a = await ds([{ conversations: [{ from: 'gpt', value: 'ignored' }, ...text] }]).example(0);
    const b = await ds([{ conversations: text }]).example(0);
    expect(a.inputIds).toEqual(b.inputIds);
    expect(b.media).toBeNull();
    expect(b.inputIds.some((t) => t < 0)).toBe(false);
    const first = b.labels.findIndex((l) => l !== IGNORE_INDEX);
    expect(first).toBeGreaterThan(0);
    expect(b.labels.slice(first)).toEqual(b.inputIds.slice(first));
  });

  it('batch of two: right padding with pad_token_id, labels −100, mask 0, truncation to max_length', async () => {
    const d = ds([{ image: 'input_image.png', conversations: convs }, { conversations: [{ from: 'human', value: 'Hi' }, { from: 'gpt', value: 'Yo.' }] }]);
    const e = [await d.example(0), await d.example(1)];
    const b = collateVideoLLaMA2(e, d.padTokenId, 2048);
    expect(b.inputIds[0]).toHaveLength(e[0].inputIds.length);
    const n1 = e[1].inputIds.length;
    expect(b.inputIds[1].slice(n1).every((t) => t === d.padTokenId)).toBe(true);
    expect(b.labels[1].slice(n1).every((t) => t === IGNORE_INDEX)).toBe(true);
    expect(b.attentionMask[1].slice(n1).every((t) => t === 0)).toBe(true);
    expect(b.media[1]).toBeNull();
    expect(collateVideoLLaMA2(e, d.padTokenId, 50).inputIds[0]).toHaveLength(50);
  });

  it('bad samples fail with the sample named', async () => {
    const s = (x: Record<string, unknown>) => ds([{ id: 7, ...x }]).example(0);
    await expect(s({ conversations: convs })).rejects.toThrow(/sample 0 \(id 7\): the conversation mentions <image> but the sample has no 'image' or 'video' file/);
    await expect(s({ image: 'nope.png', conversations: convs })).rejects.toThrow(/sample 0 \(id 7\), image: media file 'nope.png' not found/);
    await expect(s({ video: 'input_video.mp4', conversations: convs })).rejects.toThrow(/has a 'video' but no turn contains the <video> tag/);
    await expect(s({ image: 'input_image.png', conversations: convs.map((c) => ({ ...c, value: c.value.replace('<image>', '') })) })).rejects.toThrow(/no turn contains the <image> tag/);
    await expect(s({ image: 'input_image.png', conversations: [{ from: 'user', value: '<image>x' }, convs[1]] })).rejects.toThrow(/conversations\[0\].from must be 'human' or 'gpt', got "user"/);
    await expect(s({ image: 'input_image.png', conversations: convs.slice(0, 3) })).rejects.toThrow(/invalid conversation length 3/);
    await expect(s({ image: 'input_image.png', conversations: [convs[0], convs[0]] })).rejects.toThrow(/must be a \(human, gpt\) pair/);
    await expect(s({ image: 'input_image.png', conversations: [] })).rejects.toThrow(/'conversations' must be a non-empty list/);
  });
});
