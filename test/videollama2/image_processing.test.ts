/**
 * CLIP / SigLIP image processors as VideoLLaMA2 uses them, against upstream goldens (real Pillow +
 * transformers v4.40 + VideoLLaMA2 mm_utils): per-frame sha256 for both processors and both
 * aspect modes (bundled frames), full frame-0 tensors and the tiny model fixtures from ../shared,
 * and every config / input error.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { loadImage } from '../../media/image';
import { RgbImage } from '../../media/types';
import {
  ClipImageProcessor,
  PixelBatch,
  SiglipImageProcessor,
  TowerImageProcessor,
  centerCrop,
  expand2square,
  loadTowerImageProcessor,
  padColor,
  processFrames,
  shortestEdgeSize,
} from '../../models/clip/image_processing';
import { expectClose, fixture, itIf, readAll, shared } from '../helpers/golden';

const FIX = fixture('preprocess', 'videollama2');
const golden = JSON.parse(fs.readFileSync(path.join(FIX, 'golden.json'), 'utf8'));
const quiet = (): void => undefined;

const sha = (x: Float32Array): string => crypto.createHash('sha256').update(Buffer.from(x.buffer, x.byteOffset, x.byteLength)).digest('hex');
const frameSha = (b: PixelBatch, i: number): string => {
  const per = b.shape[1] * b.shape[2] * b.shape[3];
  return sha(b.data.subarray(i * per, (i + 1) * per));
};

/** Splits a vertical strip of `n` equal frames. */
function splitFrames(strip: RgbImage, n: number): RgbImage[] {
  const h = strip.height / n, len = strip.width * h * 3;
  return Array.from({ length: n }, (_, i) => ({ width: strip.width, height: h, data: strip.data.slice(i * len, (i + 1) * len) }));
}

/** Frames from a `[N, H, W, 3]` (or `[H, W, 3]`) uint8 tensor. */
function framesOf(t: { shape: number[]; data: ArrayLike<number> }): RgbImage[] {
  const s = t.shape.length === 3 ? [1, ...t.shape] : t.shape;
  const [n, h, w] = s;
  const len = h * w * 3;
  return Array.from({ length: n }, (_, i) => ({ width: w, height: h, data: Uint8Array.from(Array.prototype.slice.call(t.data, i * len, (i + 1) * len)) }));
}

const processors: Record<string, TowerImageProcessor> = {
  clip336: ClipImageProcessor.fromConfig(golden.processors.clip336, 'clip336/preprocessor_config.json', quiet),
  siglip384: SiglipImageProcessor.fromConfig(golden.processors.siglip384, 'siglip384/preprocessor_config.json', quiet),
};

let frames: RgbImage[];
beforeAll(async () => {
  frames = splitFrames(await loadImage(path.join(FIX, golden.frames.file)), golden.frames.num_frames);
});

describe('videollama2_preprocess goldens (bundled frames, 8 x 180x320)', () => {
  for (const proc of ['clip336', 'siglip384']) {
    for (const mode of ['aspect_None', 'aspect_pad']) {
      it(`${proc} ${mode}: shape and per-frame sha256`, () => {
        const g = golden.processed[proc][mode];
        expect([frames[0].height, frames[0].width]).toEqual(golden.frames.frame_size_hw);
        const out = processFrames(frames, processors[proc], mode === 'aspect_pad' ? 'pad' : null);
        expect(out.shape).toEqual(g.shape);
        expect(Array.from({ length: 8 }, (_, i) => frameSha(out, i))).toEqual(g.per_frame_sha256_f32le);
      });
    }
  }
});

describe('videollama2_preprocess goldens (../shared, full tensors)', () => {
  const dir = shared('fixtures', 'videollama2_preprocess');
  itIf(dir)('frame 0 of both processors and both aspect modes from raw_frames.safetensors: max abs error <= 1e-6', () => {
    const raw = framesOf(readAll(path.join(dir!, 'raw_frames.safetensors')).raw_frames_u8_uniform8);
    const g = JSON.parse(fs.readFileSync(path.join(dir!, 'golden.json'), 'utf8'));
    for (const proc of ['clip336', 'siglip384']) {
      const ref = readAll(path.join(dir!, `${proc}.safetensors`));
      for (const mode of ['None', 'pad'] as const) {
        const out = processFrames(raw, processors[proc], mode === 'pad' ? 'pad' : null);
        const per = out.data.length / out.shape[0];
        const f0 = { data: out.data.subarray(0, per), shape: out.shape.slice(1) };
        expect(expectClose(`${proc} aspect_${mode} frame0`, f0, ref[`aspect_${mode}.frame0.pixel_values`], 1e-6).maxAbsErr).toBeLessThanOrEqual(1e-6);
        // Every frame: the golden.json sampled points.
        const gp = g.videos['sample_demo_3.mp4'].processed[proc][`aspect_${mode}`];
        gp.per_frame_sampled.forEach((s: { index_c_row_col: number[][]; values: number[] }, i: number) => {
          s.index_c_row_col.forEach(([c, y, x], k) => {
            const v = out.data[i * per + (c * out.shape[2] + y) * out.shape[3] + x];
            expect(Math.abs(v - s.values[k])).toBeLessThanOrEqual(1e-6);
          });
        });
      }
    }
  });
});

describe('tiny VideoLLaMA2 fixtures (aspect_ratio None, as model_init / mm_infer)', () => {
  for (const [fx, tower, kind] of [['videollama2_clip_mistral_tiny', 'clip-vit-tiny-patch14-84', 'clip'], ['videollama2_siglip_qwen2_tiny', 'siglip-tiny-patch14-84', 'siglip']] as const) {
    it(`${fx} (bundled): image and 16-frame video pixel_values sha256`, async () => {
      const dir = fixture('preprocess', fx);
      const g = JSON.parse(fs.readFileSync(path.join(dir, 'golden.json'), 'utf8'));
      const proc = loadTowerImageProcessor(path.join(dir, tower), undefined, quiet);
      expect(proc.kind).toBe(kind);
      const image = processFrames([await loadImage(path.join(dir, g.image.file))], proc);
      expect(image.shape).toEqual(g.image.pixel_values.shape);
      expect(sha(image.data)).toBe(g.image.pixel_values.sha256_f32le);
      const video = processFrames(splitFrames(await loadImage(path.join(dir, g.video.file)), g.video.num_frames), proc);
      expect(video.shape).toEqual(g.video.pixel_values.shape);
      expect(sha(video.data)).toBe(g.video.pixel_values.sha256_f32le);
    });

    const sdir = shared('fixtures', fx);
    itIf(sdir)(`${fx} (../shared): image.pixel_values and video.pixel_values, max abs error <= 1e-6`, async () => {
      const gs = readAll(path.join(sdir!, 'golden.safetensors'));
      const proc = loadTowerImageProcessor(path.join(sdir!, tower), undefined, quiet);
      const fromPng = processFrames([await loadImage(path.join(sdir!, 'input_image.png'))], proc);
      expect(expectClose(`${fx} image.pixel_values`, fromPng, gs['image.pixel_values'], 1e-6).maxAbsErr).toBeLessThanOrEqual(1e-6);
      const fromU8 = processFrames(framesOf(gs['image.input_rgb_u8']), proc);
      expect(expectClose(`${fx} image.pixel_values (u8)`, fromU8, gs['image.pixel_values'], 1e-6).maxAbsErr).toBeLessThanOrEqual(1e-6);
      const video = processFrames(framesOf(gs['video.raw_frames_u8']), proc);
      expect(expectClose(`${fx} video.pixel_values`, video, gs['video.pixel_values'], 1e-6).maxAbsErr).toBeLessThanOrEqual(1e-6);
    });
  }
});

// ---------------------------------------------------------------------------------------------

describe('geometry helpers', () => {
  const img = (w: number, h: number, fill = 0): RgbImage => ({ width: w, height: h, data: new Uint8Array(w * h * 3).fill(fill) });

  it('shortestEdgeSize truncates the long edge (get_resize_output_image_size)', () => {
    // int(336 * 320 / 180) = int(597.33) = 597; int(336 * 451 / 300) = int(505.12) = 505.
    expect(shortestEdgeSize(180, 320, 336)).toEqual([336, 597]);
    expect(shortestEdgeSize(451, 300, 336)).toEqual([505, 336]);
    expect(shortestEdgeSize(84, 84, 336)).toEqual([336, 336]);
  });

  it('padColor truncates mean·255 (tuple(int(x*255) for x in image_mean))', () => {
    // int(0.48145466*255) = int(122.77) = 122, int(116.74) = 116, int(104.09) = 104; int(127.5) = 127.
    expect(padColor([0.48145466, 0.4578275, 0.40821073])).toEqual([122, 116, 104]);
    expect(padColor([0.5, 0.5, 0.5])).toEqual([127, 127, 127]);
  });

  it('expand2square centres on the long side with (long − short) // 2', () => {
    const wide = img(3, 2, 9);
    const sq = expand2square(wide, [1, 2, 3]);
    expect([sq.width, sq.height]).toEqual([3, 3]);
    // (3 − 2) // 2 = 0: rows 0-1 are the image, row 2 is background.
    expect(Array.from(sq.data.slice(0, 3))).toEqual([9, 9, 9]);
    expect(Array.from(sq.data.slice(6 * 3, 6 * 3 + 3))).toEqual([1, 2, 3]);
    const tall = expand2square(img(1, 4, 9), [5, 5, 5]);
    // (4 − 1) // 2 = 1: column 1 holds the image.
    expect(Array.from({ length: 4 }, (_, x) => tall.data[x * 3])).toEqual([5, 9, 5, 5]);
    const square = img(2, 2);
    expect(expand2square(square, [0, 0, 0])).toBe(square);
  });

  it('centerCrop crops at (orig − crop) // 2 and zero-pads when the crop is larger', () => {
    const im: RgbImage = { width: 4, height: 1, data: Uint8Array.from([1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4]) };
    expect(Array.from(centerCrop(im, 1, 2).data)).toEqual([2, 2, 2, 3, 3, 3]);
    // Larger than the image: a 1x1 image is centred on a 3x3 zero canvas.
    const one = centerCrop({ width: 1, height: 1, data: Uint8Array.from([7, 7, 7]) }, 3, 3);
    expect([one.width, one.height, one.data[4 * 3]]).toEqual([3, 3, 7]);
    expect(one.data.reduce((a, v) => a + v, 0)).toBe(21);
    // Upstream quirk kept: 2x1 → 3x3 gives a 2-wide result. left = (2 − 3) // 2 = −1,
    // left_pad = (3 − 2) // 2 = 0, right = left + 3 = 2 → columns [max(0, −1), min(3, 2)) = [0, 2).
    const odd = centerCrop({ width: 2, height: 1, data: Uint8Array.from([7, 7, 7, 8, 8, 8]) }, 3, 3);
    expect([odd.width, odd.height]).toEqual([2, 3]);
    const rows = Array.from({ length: 3 }, (_, y) => Array.from({ length: 2 }, (_, x) => odd.data[(y * 2 + x) * 3]));
    expect(rows).toEqual([[0, 0], [7, 8], [0, 0]]);
  });

  it('an image processor with do_resize / do_center_crop off passes the size through', () => {
    const p = ClipImageProcessor.fromConfig({ do_resize: false, do_center_crop: false, do_normalize: false }, 'c.json', quiet);
    const out = p.preprocess([img(5, 3, 255)]);
    expect(out.shape).toEqual([1, 3, 3, 5]);
    // rescale only: float32(255 · (1/255 in float64)) = 1.
    expect(out.data.every((v) => v === 1)).toBe(true);
  });
});

describe('config and input errors', () => {
  it('parses HF size forms (int → shortest_edge for CLIP, crop_size int → square)', () => {
    const c = ClipImageProcessor.fromConfig({ size: 84, crop_size: 84 }, 'c.json', quiet);
    expect(c.config.size).toEqual({ shortest_edge: 84 });
    expect(c.config.crop_size).toEqual({ height: 84, width: 84 });
    expect(ClipImageProcessor.fromConfig({ size: { height: 10, width: 20 } }, 'c.json', quiet).config.size).toEqual({ height: 10, width: 20 });
    expect(ClipImageProcessor.fromConfig({ size: 30, use_square_size: true }, 'c.json', quiet).config.size).toEqual({ height: 30, width: 30 });
    expect(SiglipImageProcessor.fromConfig({ size: [32, 48] }, 's.json', quiet).config.size).toEqual({ height: 32, width: 48 });
  });

  it('names the file and key of bad values', () => {
    const cases: [() => unknown, string | RegExp][] = [
      [() => ClipImageProcessor.fromConfig({ size: 'big' }, 'c.json', quiet), /^c\.json: 'size' must be an integer, \[height, width\] or a size dict, got "big"$/],
      [() => ClipImageProcessor.fromConfig({ size: { height: 10 } }, 'c.json', quiet), /c\.json: 'size' must be a size dict/],
      [() => ClipImageProcessor.fromConfig({ size: { longest_edge: 10 } }, 'c.json', quiet), /c\.json: 'size' must contain either 'shortest_edge' or 'height' and 'width'/],
      [() => ClipImageProcessor.fromConfig({ crop_size: 0 }, 'c.json', quiet), /'crop_size' must be an integer/],
      [() => ClipImageProcessor.fromConfig({ resample: 9 }, 'c.json', quiet), /c\.json: 'resample': unknown resampling filter 9/],
      [() => ClipImageProcessor.fromConfig({ image_std: [0.2, 0, 0.2] }, 'c.json', quiet), /'image_std' must be a number or an array of 3 numbers, none 0/],
      [() => ClipImageProcessor.fromConfig({ image_mean: [0.5, 0.5] }, 'c.json', quiet), /'image_mean' must be a number or an array of 3 numbers, got \[0.5,0.5\]/],
      [() => ClipImageProcessor.fromConfig({ do_resize: 1 }, 'c.json', quiet), /'do_resize' must be a boolean, got 1/],
      [() => ClipImageProcessor.fromConfig({ rescale_factor: '1/255' }, 'c.json', quiet), /'rescale_factor' must be a number/],
      [() => SiglipImageProcessor.fromConfig({ size: 384 }, 's.json', quiet), `s.json: 'size' must be {"height": H, "width": W} for SigLIP, got 384`],
      [() => SiglipImageProcessor.fromConfig('x', 's.json', quiet), 's.json: expected a JSON object, got string'],
    ];
    for (const [f, re] of cases) expect(f).toThrow(re);
  });

  it('warns about keys it does not read (SigLIP has no center crop)', () => {
    const msgs: string[] = [];
    SiglipImageProcessor.fromConfig({ do_center_crop: true, crop_size: 3, image_processor_type: 'SiglipImageProcessor' }, 's.json', (m) => msgs.push(m));
    expect(msgs).toEqual([`s.json: ignoring keys 'do_center_crop', 'crop_size'`]);
  });

  it('loadTowerImageProcessor: missing file, bad JSON, undetectable kind', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vlm-tower-'));
    try {
      const file = path.join(dir, 'preprocessor_config.json');
      expect(() => loadTowerImageProcessor(dir)).toThrow(`${file}: cannot read the image processor config (ENOENT)`);
      fs.writeFileSync(file, '{');
      expect(() => loadTowerImageProcessor(dir)).toThrow(`${file}: invalid JSON`);
      fs.writeFileSync(file, '{"size": 84}');
      expect(() => loadTowerImageProcessor(dir)).toThrow(/cannot tell whether this is a CLIP or a SigLIP image processor/);
      expect(loadTowerImageProcessor(dir, 'clip', quiet).kind).toBe('clip');
      fs.writeFileSync(path.join(dir, 'config.json'), '{"model_type": "siglip_vision_model"}');
      fs.writeFileSync(file, '{"size": {"height": 84, "width": 84}}');
      expect(loadTowerImageProcessor(dir, undefined, quiet).kind).toBe('siglip');
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('rejects empty lists, bad frames, unstackable sizes and unknown aspect modes', () => {
    const clip = processors.clip336;
    const good: RgbImage = { width: 4, height: 4, data: new Uint8Array(48) };
    expect(() => clip.preprocess([])).toThrow('CLIPImageProcessor: no images to process');
    expect(() => clip.preprocess([good, { width: 4, height: 4, data: new Uint8Array(47) }])).toThrow(/CLIPImageProcessor: image 1 is not an RGB image \(4x4, 47 bytes\)/);
    const noResize = SiglipImageProcessor.fromConfig({ do_resize: false }, 's.json', quiet);
    expect(() => noResize.preprocess([good, { width: 2, height: 4, data: new Uint8Array(24) }])).toThrow('SiglipImageProcessor: image 1 is 2x4 after resizing but image 0 is 4x4; they cannot be stacked');
    expect(() => processFrames([good], clip, 'square' as never)).toThrow(`aspectRatio must be 'pad' or null, got "square"`);
    expect(() => processFrames([{ width: 2, height: 1, data: new Uint8Array(1) }], clip, 'pad')).toThrow(/expand2square: image 0 is not an RGB image/);
  });
});
