/**
 * MiniCPM-V fine-tuning data (training/minicpmv_data.ts) against upstream
 * `finetune/dataset.py` as the training golden recorded it (input_ids, pre-shifted labels,
 * image_bound, tgt_sizes exact; pixel_values within 1e-6), plus the paths the golden sample does
 * not take (a sliced image, several images, no tag, truncation) and every bad-input error.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadMiniCPMVConfig } from '../../models/minicpmv/config';
import { readDataFile } from '../../training/data';
import { IGNORE_INDEX } from '../../training/loss';
import { MiniCPMVFinetuneData, collateMiniCPMV } from '../../models/minicpmv/train_data';
import { loadTokenizer } from '../../tokenizers';
import { Golden, compare, expectSameInts, fixture, itIf } from '../helpers/golden';
import { trainFixture } from './helpers';

const fx = trainFixture('minicpmv26_tiny');
const tok = loadTokenizer(fx.tokenizerDir);
const config = loadMiniCPMVConfig(fx.model, () => undefined);
const convs = readDataFile(fx.data)[0].conversations as { role: string; content: string }[];
const data = (samples: Record<string, unknown>[], opts: { maxLength?: number; dataRoot?: string } = {}) =>
  new MiniCPMVFinetuneData(samples, tok, config, { dataRoot: opts.dataRoot ?? fx.dataRoot, maxLength: opts.maxLength });
const BIG = fixture('preprocess', 'minicpmv26', 'astronaut.webp');

describe('MiniCPM-V finetune data: the golden sample', () => {
  const g = new Golden(fx.golden);
  afterAll(() => g.close());

  it('input_ids, pre-shifted labels, image_bound, tgt_sizes equal upstream; pixels within 1e-6', async () => {
    const ds = new MiniCPMVFinetuneData(readDataFile(fx.data), tok, config, { dataRoot: fx.dataRoot });
    const ex = await ds.example(0);
    const b = collateMiniCPMV([ex]);
    expectSameInts('input_ids', b.inputs.inputIds[0], g.ints('input_ids'));
    expectSameInts('labels', b.labels[0], g.ints('labels'));
    expectSameInts('image_bound', ex.imageBound.flat(), g.ints('image_bound'));
    expectSameInts('tgt_sizes', ex.tgtSizes.flat(), g.ints('tgt_sizes'));
    expect(b.positionIds[0]).toEqual(ex.inputIds.map((_, i) => i));
    expect(b.attentionMask[0].every((v) => v === 1)).toBe(true);
    const px = ex.pixelValues[0];
    expect(px.shape).toEqual([3, 14, 14196]);
    const every = g.get('pixel_values.0@every97').data as Float32Array;
    const ours = Float32Array.from({ length: every.length }, (_, i) => px.data[i * 97]);
    expect(compare('pixel_values.0@every97', ours, [ours.length], every, [every.length]).maxAbsErr).toBeLessThanOrEqual(1e-6);
    // 61 supervised positions (README); each answer's last label is <|im_end|> again
    expect(b.labels[0].filter((l) => l !== IGNORE_INDEX)).toHaveLength(61);
  });

  itIf(fx.fullGolden)('every pixel equals the full golden (../shared)', async () => {
    const full = new Golden(fx.fullGolden!);
    try {
      const ex = await data(readDataFile(fx.data)).example(0);
      const r = full.get('pixel_values.0');
      expect(compare('pixel_values.0', ex.pixelValues[0].data, [...ex.pixelValues[0].shape], r.data as Float32Array, r.shape).maxAbsErr).toBeLessThanOrEqual(1e-6);
    } finally {
      full.close();
    }
  });
});

describe('MiniCPM-V finetune data: other upstream paths', () => {
  it('a sliced image gets <image_id>0</image_id>, slice rows, one bound per slice (finetune scale_resolution 448, not the processor’s 56)', async () => {
    const ex = await data([{ image: BIG, conversations: convs }]).example(0);
    const ds = data([]);
    expect(ds.processor.config.scale_resolution).toBe(448);
    const n = ex.pixelValues.length;
    expect(n).toBeGreaterThan(1);
    expect(ex.imageBound).toHaveLength(n);
    expect(ex.tgtSizes).toHaveLength(n);
    expect(ex.text).toContain('<image_id>0</image_id><image>');
    expect(ex.text.split('<slice>')).toHaveLength(n); // n − 1 slices
    ex.imageBound.forEach(([s, e]) => expect(e - s).toBe(config.query_num));
    ex.pixelValues.forEach((p, i) => expect(p.shape[2] / 14).toBe(ex.tgtSizes[i][0] * ex.tgtSizes[i][1]));
  });

  it('no <image> tag: placeholder + "\\n" before the first turn; tags of an image map are expanded in every turn, joined with "\\n"', async () => {
    const plain = convs.map((c, i) => (i === 0 ? { ...c, content: 'What animal is in this photo?' } : c));
    const a = await data([{ image: 'input_image.png', conversations: plain }]).example(0);
    expect(a.text).toContain(`<|im_start|>user\n<image>${'<unk>'.repeat(16)}</image>\nWhat animal`);
    const multi = [
      { role: 'user', content: 'Compare <image_00> and <image_01>.' },
      { role: 'assistant', content: 'They differ.' },
    ];
    const b = await data([{ image: { '<image_00>': 'input_image.png', '<image_01>': BIG }, conversations: multi }]).example(0);
    const ph0 = `<image>${'<unk>'.repeat(16)}</image>`;
    // upstream: re.split keeps the tags, '\n'.join(parts) puts a newline around each
    expect(b.text).toContain(`Compare \n${ph0}\n and \n<image_id>0</image_id>${ph0}`);
    expect(b.imageBound).toHaveLength(b.pixelValues.length);
  });

  it('truncation to max_length that cuts every answer leaves nothing to learn: an error', async () => {
    await expect(data(readDataFile(fx.data), { maxLength: 40 }).example(0)).rejects.toThrow(/no tokens available to compute loss.*within max_length 40/);
  });

  it('bad samples fail with the sample named', async () => {
    const s = (x: Record<string, unknown>) => data([{ id: 'x1', ...x }]).example(0);
    await expect(s({ conversations: convs })).rejects.toThrow(/sample 0 \(id "x1"\): no 'image'/);
    await expect(s({ image: 'missing.png', conversations: convs })).rejects.toThrow(/media file 'missing.png' not found \(looked for .*missing.png/);
    await expect(s({ image: 'input_image.png', conversations: [{ role: 'system', content: 'x' }, ...convs] })).rejects.toThrow(/conversations\[0\].role must be 'user' or 'assistant', got "system"/);
    await expect(s({ image: 'input_image.png', conversations: convs.slice(1) })).rejects.toThrow(/first turn must be the user's/);
    await expect(s({ image: 'input_image.png', conversations: convs.slice(0, 1) })).rejects.toThrow(/at least 2 turns/);
    await expect(s({ image: 'input_image.png', conversations: [convs[0], convs[2]] })).rejects.toThrow(/no assistant turn/);
    await expect(s({ image: { '<image_00>': 'input_image.png' }, conversations: [{ role: 'user', content: '<image_01> hi' }, convs[1]] })).rejects.toThrow(/mentions <image_01>, which is not a key of 'image'/);
    await expect(s({ image: 'input_image.png', conversations: [{ role: 'user', content: '<image> and <image>' }, convs[1]] })).rejects.toThrow(/2 image slot\(s\).*for 1 image/);
    await expect(s({ image: [], conversations: convs })).rejects.toThrow(/'image' must be a path or a non-empty/);
    await expect(data([]).example(3)).rejects.toThrow('sample 3 does not exist (0 samples)');
  });

  it('a tokenizer without the single "assistant" token is refused up front (upstream would find no answer)', () => {
    const plainTok = loadTokenizer(fx.model);
    expect(() => new MiniCPMVFinetuneData([], plainTok, config, { dataRoot: '.' })).toThrow(/no 'assistant' token/);
    expect(() => new MiniCPMVFinetuneData([], tok, config, { dataRoot: '.', llmType: 'llama3' })).toThrow(/llm_type 'llama3' is not supported/);
  });

  it('readDataFile: missing file, bad JSON, non-object samples', () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vlm-data-'));
    try {
      expect(() => readDataFile(path.join(tmp, 'nope.json'))).toThrow(/nope.json: cannot read it \(ENOENT\)/);
      fs.writeFileSync(path.join(tmp, 'bad.json'), '[{');
      expect(() => readDataFile(path.join(tmp, 'bad.json'))).toThrow(/bad.json: invalid JSON/);
      fs.writeFileSync(path.join(tmp, 'list.json'), '[{"a": 1}, 3]');
      expect(() => readDataFile(path.join(tmp, 'list.json'))).toThrow(/sample 1 is 3, expected an object/);
      fs.writeFileSync(path.join(tmp, 'empty.json'), '[]');
      expect(() => readDataFile(path.join(tmp, 'empty.json'))).toThrow(/the list of samples is empty/);
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });
});
