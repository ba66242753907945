/**
 * MiniCPM-V 2.6 image processor against upstream goldens (real Pillow + upstream
 * image_processing_minicpmv.py): grid, sizes, tgt_sizes, placeholders and the sha256 of every
 * float32 pixel tensor, for every image of minicpmv26_preprocess in both configs (bundled, from
 * lossless WebP inputs), full tensors from ../shared when present, the tiny model fixture and the
 * tokenizer test vector.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { loadImage } from '../../media/image';
import { RgbImage } from '../../media/types';
import {
  MINICPMV_PREPROCESSOR_DEFAULTS,
  MiniCPMVImageProcessor,
  MiniCPMVPreprocessorConfig,
  minicpmvPreprocessBench,
  parseMiniCPMVPreprocessorConfig,
} from '../../models/minicpmv/processing';
import { expectClose, fixture, itIf, readAll, shared } from '../helpers/golden';
import { SafetensorsFile } from '../../weights/safetensors';

const FIX = fixture('preprocess', 'minicpmv26');
const golden = JSON.parse(fs.readFileSync(path.join(FIX, 'golden.json'), 'utf8'));
const realJson = JSON.parse(fs.readFileSync(path.join(FIX, 'preprocessor_config.json'), 'utf8'));
const real = MiniCPMVImageProcessor.fromDir(FIX);
const small = MiniCPMVImageProcessor.fromConfig({ ...realJson, ...golden.small_variant_overrides }, 'small variant');
const CONFIGS = { real448: real, small } as const;
const NAMES = Object.keys(golden.images);

const sha = (x: Float32Array | string): string =>
  crypto.createHash('sha256').update(typeof x === 'string' ? Buffer.from(x, 'utf8') : Buffer.from(x.buffer, x.byteOffset, x.byteLength)).digest('hex');

const images = new Map<string, RgbImage>();
beforeAll(async () => {
  for (const name of NAMES) images.set(name, await loadImage(path.join(FIX, golden.images[name].file)));
});

/** A 3-channel HWC image from an inputs.safetensors tensor (HxW gray → replicated, like convert("RGB")). */
function fromTensor(t: { shape: number[]; data: ArrayLike<number> }): RgbImage {
  const [h, w] = t.shape;
  const c = t.shape[2] ?? 1;
  const data = new Uint8Array(h * w * 3);
  for (let i = 0; i < h * w; i++) for (let k = 0; k < 3; k++) data[i * 3 + k] = t.data[i * c + (c === 1 ? 0 : k)];
  return { width: w, height: h, data };
}

// ---------------------------------------------------------------------------------------------

describe('minicpmv26_preprocess goldens (bundled)', () => {
  for (const name of NAMES) {
    for (const cfg of ['real448', 'small'] as const) {
      it(`${name} / ${cfg}: grid, sizes, tgt_sizes, placeholders and pixel sha256`, () => {
        const g = golden.images[name][cfg];
        const proc = CONFIGS[cfg];
        const img = images.get(name)!;
        expect([img.height, img.width]).toEqual(golden.images[name].input_shape.slice(0, 2));
        const r = proc.preprocess(img);
        expect(r.slicedGrid).toEqual(g.sliced_grid);
        expect(r.sliceSizes[0]).toEqual(g.source_size_wh);
        expect(r.sliceSizes).toEqual(g.slice_sizes_wh);
        expect(r.tgtSizes).toEqual(g.tgt_sizes);
        expect(r.pixelValues.map((p) => p.shape)).toEqual(g.pixel_values_shapes);
        expect(r.pixelValues.map((p) => sha(p.data))).toEqual(g.pixel_values_sha256_f32le);
        expect(sha(r.placeholder(0))).toBe(g.placeholder_sha256);
        expect(sha(proc.placeholder([img.width, img.height], 0, { useImageId: false }))).toBe(g.placeholder_no_image_id_sha256);
        if (g.refine_size_wh) {
          expect(proc.getRefineSize([img.width, img.height], g.sliced_grid, proc.config.scale_resolution, 14, true)).toEqual(g.refine_size_wh);
        }
      });
    }
  }
});

describe('minicpmv26_preprocess goldens (../shared, full tensors)', () => {
  const dir = shared('fixtures', 'minicpmv26_preprocess');

  itIf(dir)('every slice of the scale-70 variant and the two full real-config tensors: max abs error <= 1e-6', () => {
    const inputs = SafetensorsFile.open(path.join(dir!, 'inputs.safetensors'));
    const full: [string, MiniCPMVImageProcessor, Record<string, ReturnType<typeof readAll>[string]>][] = [
      ['pixels_scale70.safetensors', small, readAll(path.join(dir!, 'pixels_scale70.safetensors'))],
      ['pixels_448_full.safetensors', real, readAll(path.join(dir!, 'pixels_448_full.safetensors'))],
    ];
    let checked = 0;
    for (const [file, proc, tensors] of full) {
      for (const name of NAMES) {
        const r = proc.preprocess(fromTensor(inputs.read(`${name}.input_u8`)));
        r.pixelValues.forEach((p, i) => {
          const ref = tensors[`${name}.slice${i}.pixel_values`];
          if (!ref) return;
          const res = expectClose(`${file} ${name}.slice${i}`, p, ref, 1e-6);
          expect(res.maxAbsErr).toBeLessThanOrEqual(1e-6);
          checked++;
        });
      }
    }
    inputs.close();
    expect(checked).toBe(58 + 2);
  });

  itIf(dir)('the raw uint8 inputs give the same sha256 and the golden.json sampled points', () => {
    const g = JSON.parse(fs.readFileSync(path.join(dir!, 'golden.json'), 'utf8'));
    const inputs = SafetensorsFile.open(path.join(dir!, 'inputs.safetensors'));
    for (const name of NAMES) {
      const r = real.preprocess(fromTensor(inputs.read(`${name}.input_u8`)));
      const gr = g.images[name].real448;
      expect(r.pixelValues.map((p) => sha(p.data))).toEqual(gr.pixel_values_sha256_f32le);
      expect(r.placeholder(0)).toBe(gr.placeholder);
      r.pixelValues.forEach((p, i) => {
        const { index_c_row_col: idx, values } = gr.pixel_values_sampled[i];
        idx.forEach(([c, y, x]: number[], k: number) => {
          expect(Math.abs(p.data[(c * p.shape[1] + y) * p.shape[2] + x] - values[k])).toBeLessThanOrEqual(1e-6);
        });
      });
    }
    inputs.close();
  });
});

describe('minicpmv26_tiny fixture (scale_resolution 56)', () => {
  const TINY = fixture('preprocess', 'minicpmv26_tiny');
  const tg = JSON.parse(fs.readFileSync(path.join(TINY, 'golden.json'), 'utf8'));

  it('bundled: grid, tgt_sizes, placeholder and pixel sha256 from the model golden', async () => {
    const proc = MiniCPMVImageProcessor.fromDir(TINY);
    expect(proc.config.scale_resolution).toBe(56);
    const img = await loadImage(path.join(TINY, 'input_image.png'));
    expect([img.width, img.height]).toEqual(tg.image_size_wh);
    const r = proc.preprocess(img);
    expect(r.slicedGrid).toEqual(tg.sliced_grid);
    expect(r.tgtSizes).toEqual(tg.tgt_sizes);
    expect(r.placeholder(0)).toBe(tg.placeholder);
    expect(r.pixelValues.map((p) => p.shape)).toEqual(tg.pixel_values_shapes);
    expect(r.pixelValues.map((p) => sha(p.data))).toEqual(tg.pixel_values_sha256_f32le);
  });

  const tdir = shared('fixtures', 'minicpmv26_tiny');
  itIf(tdir)('../shared: pixel_values.i and tgt_sizes from input.image_rgb_u8, max abs error <= 1e-6', () => {
    const gs = readAll(path.join(tdir!, 'golden.safetensors'));
    const r = MiniCPMVImageProcessor.fromDir(tdir!).preprocess(fromTensor(gs['input.image_rgb_u8']));
    r.pixelValues.forEach((p, i) => expect(expectClose(`pixel_values.${i}`, p, gs[`pixel_values.${i}`], 1e-6).maxAbsErr).toBeLessThanOrEqual(1e-6));
    expect(r.pixelValues.length).toBe(gs.tgt_sizes.shape[0]);
    expect(r.tgtSizes.flat()).toEqual(Array.from(gs.tgt_sizes.data));
  });

  it('tokenizer test vector chat_with_image (astronaut, real config): tgt_sizes and the placeholder token sequence', () => {
    const cv = tg.chat_with_image;
    const r = real.preprocess(images.get(cv.image)!);
    expect(r.tgtSizes).toEqual(cv.tgt_sizes);
    // The placeholder is special tokens plus '0' and '\n': map it to ids piece by piece.
    const ids: number[] = [];
    for (const piece of r.placeholder(0).match(/<\/?[a-z_]+>|./gs)!) {
      const id = cv.token_ids[piece];
      if (id === undefined) throw new Error(`placeholder piece ${JSON.stringify(piece)} has no id in the test vector`);
      ids.push(id);
    }
    expect(ids).toEqual(cv.placeholder_ids);
    // image_bound: [index after <image>/<slice>, index of </image>/</slice>) of each <unk> run.
    const bounds: number[][] = [];
    ids.forEach((id, i) => {
      if (id === cv.token_ids['<image>'] || id === cv.token_ids['<slice>']) bounds.push([cv.placeholder_offset + i + 1]);
      if (id === cv.token_ids['</image>'] || id === cv.token_ids['</slice>']) bounds[bounds.length - 1].push(cv.placeholder_offset + i);
    });
    expect(bounds).toEqual(cv.image_bound);
  });
});

// ---------------------------------------------------------------------------------------------

describe('geometry and placeholder grammar', () => {
  const tinyCfg = (over: Partial<MiniCPMVPreprocessorConfig> = {}): MiniCPMVImageProcessor =>
    MiniCPMVImageProcessor.fromConfig({ ...realJson, scale_resolution: 28, image_feature_size: 2, ...over }, 'tiny.json');
  const img = (w: number, h: number): RgbImage => ({ width: w, height: h, data: new Uint8Array(w * h * 3).fill(128) });

  it('writes the placeholder grammar exactly (with and without image id)', () => {
    // upstream get_slice_image_placeholder for a 56x56 image at scale 28: ratio 4 → candidates
    // 3, 4, 5 → grid [2, 2] (log error 0); image_feature_size 2.
    const p = tinyCfg();
    const S = '<slice><unk><unk></slice>';
    expect(p.placeholder([56, 56], 3)).toBe(`<image_id>3</image_id><image><unk><unk></image>${S}${S}\n${S}${S}`);
    expect(p.placeholder([56, 56], 3, { useImageId: false })).toBe(`<image><unk><unk></image>${S}${S}\n${S}${S}`);
    // Not sliced: no grid part, no newline.
    expect(p.placeholder([20, 20], 0)).toBe('<image_id>0</image_id><image><unk><unk></image>');
    expect(tinyCfg({ use_image_id: false }).placeholder([20, 20], 1)).toBe('<image><unk><unk></image>');
  });

  it('get_sliced_grid: candidates around ceil(area ratio), best log aspect, first on ties', () => {
    const p = real;
    // 1344² / 448² = 9 → candidates 8, 9 (10 > 9) → [3, 3].
    expect(p.getSlicedGrid([1344, 1344], 9)).toEqual([3, 3]);
    // 512² / 448² = 1.31 → multiple 2 → [1, 2] and [2, 1] tie at log 2: the first, [1, 2], wins.
    expect(p.getSlicedGrid([512, 512], 9)).toEqual([1, 2]);
    // Small images are not sliced; never_split disables slicing.
    expect(p.getSlicedGrid([448, 448], 9)).toBeNull();
    expect(p.getSlicedGrid([1344, 1344], 9, true)).toBeNull();
    // max_slice_nums caps the count: 2400x160 with 2 → [2, 1]; with 1 → no slicing.
    expect(p.getSlicedGrid([2400, 160], 2)).toEqual([2, 1]);
    expect(p.getSlicedGrid([2400, 160], 1)).toBeNull();
  });

  it('ensure_divide rounds half to even (Python round)', () => {
    // round(21 / 14) = round(1.5) = 2 → 28; round(35 / 14) = round(2.5) = 2 → 28; minimum p.
    expect([real.ensureDivide(21, 14), real.ensureDivide(35, 14), real.ensureDivide(49, 14), real.ensureDivide(3, 14)]).toEqual([28, 28, 56, 14]);
  });

  it('max_slice_nums and use_image_id per call (the video recipe: 2 and false)', () => {
    const r = real.preprocess(img(2400, 160), { maxSliceNums: 2, useImageId: false });
    expect(r.slicedGrid).toEqual([2, 1]);
    expect(r.pixelValues.length).toBe(3);
    expect(r.placeholder(5).startsWith('<image><unk>')).toBe(true);
    expect(r.placeholder(5).split('<slice>').length - 1).toBe(2);
    const one = real.preprocess(img(2400, 160), { maxSliceNums: 1 });
    expect(one.slicedGrid).toBeNull();
    expect(one.pixelValues.length).toBe(1);
    expect(one.placeholder(7)).toBe(`<image_id>7</image_id><image>${'<unk>'.repeat(64)}</image>`);
  });

  it('reshape_by_patch layout: out[c, py, l·P + px] = img[c, ph·P + py, pw·P + px]', () => {
    const p = tinyCfg({ slice_mode: false, norm_mean: [0, 0, 0], norm_std: [1, 1, 1], patch_size: 2 });
    // 4x2 image (w = 2 patches, h = 1), channel value = x + 10·y (+100 per channel).
    const im = img(4, 2);
    for (let y = 0; y < 2; y++) for (let x = 0; x < 4; x++) for (let c = 0; c < 3; c++) im.data[(y * 4 + x) * 3 + c] = x + 10 * y + 100 * c;
    const r = p.preprocess(im);
    expect(r.tgtSizes).toEqual([[1, 2]]);
    expect(r.pixelValues[0].shape).toEqual([3, 2, 4]);
    const back = Array.from(r.pixelValues[0].data.slice(0, 8), (v) => Math.round(v * 255));
    // row py = 0: patch 0 (x 0, 1), patch 1 (x 2, 3); row py = 1: the same at y = 1.
    expect(back).toEqual([0, 1, 2, 3, 10, 11, 12, 13]);
  });

  it('slice_mode false keeps the image unresized and drops partial patches (torch unfold)', () => {
    const p = MiniCPMVImageProcessor.fromConfig({ ...realJson, slice_mode: false });
    const r = p.preprocess(img(30, 20));
    expect(r.slicedGrid).toBeNull();
    expect(r.sliceSizes).toEqual([[30, 20]]);
    expect(r.tgtSizes).toEqual([[1, 2]]);
    expect(r.placeholder(0)).toBe(`<image_id>0</image_id><image>${'<unk>'.repeat(64)}</image>`);
  });
});

describe('config and input errors', () => {
  const quiet = (): void => undefined;

  it('fills upstream defaults (use_image_id false when absent) and leaves the input object alone', () => {
    const json = { max_slice_nums: 4 };
    const frozen = JSON.stringify(json);
    const cfg = parseMiniCPMVPreprocessorConfig(json, 'p.json', quiet);
    expect(cfg).toEqual({ ...MINICPMV_PREPROCESSOR_DEFAULTS, max_slice_nums: 4 });
    expect(cfg.use_image_id).toBe(false); // upstream: kwargs.pop("use_image_id", False)
    expect(JSON.stringify(json)).toBe(frozen);
  });

  it('names the file and the key of an ill-typed value', () => {
    const bad: [Record<string, unknown>, RegExp][] = [
      [{ max_slice_nums: '9' }, /^p\.json: 'max_slice_nums' must be an integer > 0, got "9"$/],
      [{ scale_resolution: 0 }, /'scale_resolution' must be an integer > 0, got 0/],
      [{ patch_size: 14.5 }, /'patch_size' must be an integer > 0/],
      [{ use_image_id: 'yes' }, /'use_image_id' must be a boolean, got "yes"/],
      [{ unk: 5 }, /'unk' must be a string, got 5/],
      [{ norm_mean: [0.5, 0.5] }, /'norm_mean' must be an array of 3 numbers, got \[0.5,0.5\]/],
      [{ norm_std: [0.5, 0, 0.5] }, /'norm_std' must not contain 0/],
      [{ version: null }, /'version' must be a number, got null/],
    ];
    for (const [json, re] of bad) expect(() => parseMiniCPMVPreprocessorConfig(json, 'p.json', quiet)).toThrow(re);
    expect(() => parseMiniCPMVPreprocessorConfig([1], 'p.json')).toThrow(/p\.json: expected a JSON object, got an array/);
    expect(() => parseMiniCPMVPreprocessorConfig(null, 'p.json')).toThrow(/got null/);
  });

  it('reports unknown keys instead of dropping them silently', () => {
    const msgs: string[] = [];
    parseMiniCPMVPreprocessorConfig({ ...realJson, max_slices: 3 }, 'p.json', (m) => msgs.push(m));
    expect(msgs).toEqual([`p.json: ignoring unknown keys 'max_slices'`]);
  });

  it('fromDir: missing directory/file and invalid JSON name the file', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vlm-mcpv-'));
    try {
      const file = path.join(dir, 'preprocessor_config.json');
      expect(() => MiniCPMVImageProcessor.fromDir(dir)).toThrow(`${file}: cannot read the image processor config (ENOENT); --model must be a MiniCPM-V 2.6 checkpoint directory`);
      fs.writeFileSync(file, '{"max_slice_nums": 9,');
      expect(() => MiniCPMVImageProcessor.fromDir(dir)).toThrow(new RegExp(`${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: invalid JSON`));
      fs.writeFileSync(file, '{"patch_size": "14"}');
      expect(() => MiniCPMVImageProcessor.fromDir(dir)).toThrow(`${file}: 'patch_size' must be an integer > 0, got "14"`);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('rejects a bad max_slice_nums override and malformed images', () => {
    const im = { width: 10, height: 10, data: new Uint8Array(300) };
    expect(() => real.preprocess(im, { maxSliceNums: 0 })).toThrow('maxSliceNums must be an integer > 0, got 0');
    expect(() => real.preprocess(im, { maxSliceNums: 2.5 })).toThrow('maxSliceNums must be an integer > 0, got 2.5');
    expect(() => real.placeholder([10, 10], 0, { maxSliceNums: -1 })).toThrow('got -1');
    expect(() => real.preprocess({ width: 10, height: 10, data: new Uint8Array(299) })).toThrow('image data has 299 bytes, 10x10x3 = 300 expected');
    expect(() => real.preprocess({ width: 0, height: 10, data: new Uint8Array(0) })).toThrow('bad image size 0x10');
  });
});

describe('bench case minicpmv.preprocess.1344', () => {
  it('slices a 1344x1344 image into source + 3x3 at the real config, and is fast', () => {
    const b = minicpmvPreprocessBench();
    expect(b.name).toBe('minicpmv.preprocess.1344');
    const r = b.run();
    expect(r.slicedGrid).toEqual([3, 3]);
    expect(r.tgtSizes).toEqual(Array(10).fill([32, 32]));
    const times: number[] = [];
    for (let i = 0; i < 5; i++) {
      const t0 = performance.now();
      b.run();
      times.push(performance.now() - t0);
    }
    times.sort((a, c) => a - c);
    // The target is "well under a second"; the bound is loose because CI cores are shared.
    expect(times[2]).toBeLessThan(1000);
  });
});
