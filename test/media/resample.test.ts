/**
 * Pillow resampling port: hand-derived small cases and every bad-input path. Bit-exactness on
 * real images (BICUBIC, up- and downscaling, every grid shape) is proven by the MiniCPM-V and
 * CLIP/SigLIP golden tests, whose pixels come from real Pillow.
 */
import {
  Raster,
  Resampling,
  checkResampling,
  cropImage,
  cropRaster,
  pyRound,
  resamplingName,
  resizeImage,
  resizeRaster,
} from '../../media/resample';

const gray = (width: number, height: number, values: number[]): Raster => ({ width, height, channels: 1, data: Uint8Array.from(values) });

describe('pyRound (Python 3 round, half to even)', () => {
  it('rounds halves to even and everything else to nearest', () => {
    // Python: [round(x) for x in (0.5, 1.5, 2.5, -0.5, -1.5, 2.4999, 2.5001, 3.0)] == [0, 2, 2, 0, -2, 2, 3, 3]
    expect([0.5, 1.5, 2.5, -0.5, -1.5, 2.4999, 2.5001, 3.0].map(pyRound)).toEqual([0, 2, 2, 0, -2, 2, 3, 3]);
  });
});

describe('resizeRaster', () => {
  it('returns a copy for the same size (Image.resize shortcut)', () => {
    const src = gray(2, 2, [1, 2, 3, 4]);
    const out = resizeRaster(src, 2, 2);
    expect(Array.from(out.data)).toEqual([1, 2, 3, 4]);
    expect(out.data).not.toBe(src.data);
  });

  it('keeps a constant image constant with every filter', () => {
    const src: Raster = { width: 7, height: 5, channels: 3, data: new Uint8Array(7 * 5 * 3).fill(77) };
    for (const f of [Resampling.NEAREST, Resampling.BOX, Resampling.BILINEAR, Resampling.HAMMING, Resampling.BICUBIC, Resampling.LANCZOS]) {
      for (const [w, h] of [[3, 2], [13, 11], [7, 9]]) {
        const out = resizeRaster(src, w, h, { resample: f });
        expect([out.width, out.height]).toEqual([w, h]);
        expect(out.data.every((v) => v === 77)).toBe(true);
      }
    }
  });

  it('BOX halves a row by averaging pairs with fixed-point rounding', () => {
    // Resample.c: scale 2, support 0.5·2 = 1, window [2i, 2i+2) with weights 1/2 → 2^21 each;
    // out = (2^21 + 2^21·(a + b)) >> 22 = floor((a + b + 1) / 2): [10, 21] → 16, [0, 255] → 128.
    const out = resizeRaster(gray(4, 1, [10, 21, 0, 255]), 2, 1, { resample: Resampling.BOX });
    expect(Array.from(out.data)).toEqual([16, 128]);
  });

  it('BILINEAR upscaling by 2 interpolates at ±1/4 pixel, clipping the window at the edges', () => {
    // scale 0.5 → filterscale 1, support 1; centers 0.25, 0.75, 1.25, 1.75.
    // out0: window [0, 1) → weight 1 on input 0 → 0.
    // out1: window [0, 2), weights bilinear(−0.25) = 0.75, bilinear(0.75) = 0.25 → 25 (+0.5 rounding, floored).
    // out2: weights 0.25, 0.75 → 75; out3: window [1, 2) → 100.
    const out = resizeRaster(gray(2, 1, [0, 100]), 4, 1, { resample: Resampling.BILINEAR });
    expect(Array.from(out.data)).toEqual([0, 25, 75, 100]);
  });

  it('NEAREST samples at pixel centres (ImagingScaleAffine)', () => {
    // a0 = 4/2 = 2, xo = 0 + 2·0.5 = 1 → inputs 1 and 3.
    expect(Array.from(resizeRaster(gray(4, 1, [5, 6, 7, 8]), 2, 1, { resample: Resampling.NEAREST }).data)).toEqual([6, 8]);
    // upscaling 2 → 5: a0 = 0.4, xo = 0.2, 0.6, 1.0, 1.4, 1.8 → 0, 0, 1, 1, 1
    expect(Array.from(resizeRaster(gray(2, 1, [1, 2]), 5, 1, { resample: Resampling.NEAREST }).data)).toEqual([1, 1, 2, 2, 2]);
  });

  it('supports a float/int box: integer box of the output size is a crop, others resample that region', () => {
    const src = gray(6, 1, [0, 10, 20, 30, 40, 50]);
    // box [1, 0, 4, 1] is 3x1 = the requested size → ImagingCrop.
    expect(Array.from(resizeRaster(src, 3, 1, { box: [1, 0, 4, 1] }).data)).toEqual([10, 20, 30]);
    // BOX over box [1, 0, 5, 1] → 2 px: scale 2, centers 2 and 4, windows [1, 3) and [3, 5).
    expect(Array.from(resizeRaster(src, 2, 1, { resample: Resampling.BOX, box: [1, 0, 5, 1] }).data)).toEqual([15, 35]);
    // The full-image box equals no box.
    const big = gray(5, 3, Array.from({ length: 15 }, (_, i) => (i * 37) % 256));
    expect(resizeRaster(big, 3, 2, { box: [0, 0, 5, 3] }).data).toEqual(resizeRaster(big, 3, 2).data);
  });

  it('handles any channel count like the 3-channel fast path', () => {
    const rgb: Raster = { width: 5, height: 4, channels: 3, data: Uint8Array.from({ length: 60 }, (_, i) => (i * 53) % 256) };
    const out3 = resizeRaster(rgb, 3, 7);
    for (let c = 0; c < 3; c++) {
      const plane = gray(5, 4, Array.from({ length: 20 }, (_, i) => rgb.data[i * 3 + c]));
      const out1 = resizeRaster(plane, 3, 7);
      expect(Array.from(out1.data)).toEqual(Array.from({ length: 21 }, (_, i) => out3.data[i * 3 + c]));
    }
  });

  it('rejects bad sizes, boxes, filters and buffers, naming the problem', () => {
    const src = gray(4, 4, Array(16).fill(0));
    expect(() => resizeRaster(src, 0, 2)).toThrow(/height and width must be integers > 0, got 0x2/);
    expect(() => resizeRaster(src, 2.5, 2)).toThrow(/integers > 0/);
    expect(() => resizeRaster(src, 2, 2, { box: [-1, 0, 4, 4] })).toThrow(/box offset can't be negative/);
    expect(() => resizeRaster(src, 2, 2, { box: [0, 0, 5, 4] })).toThrow(/box can't exceed original image size 4x4/);
    expect(() => resizeRaster(src, 2, 2, { box: [3, 0, 1, 4] })).toThrow(/box can't be empty/);
    expect(() => resizeRaster(src, 2, 2, { resample: 7 as never })).toThrow(/unknown resampling filter 7/);
    expect(() => resizeRaster({ ...src, data: new Uint8Array(15) }, 2, 2)).toThrow(/15 bytes for a 4x4x1 image \(16 expected\)/);
    expect(() => resizeRaster({ ...src, width: 0 }, 2, 2)).toThrow(/bad image geometry 0x4x1/);
  });
});

describe('crop', () => {
  it('crops, and fills the part outside the image with zeros (ImagingCrop)', () => {
    const src = gray(3, 2, [1, 2, 3, 4, 5, 6]);
    expect(Array.from(cropRaster(src, [1, 0, 3, 2]).data)).toEqual([2, 3, 5, 6]);
    expect(Array.from(cropRaster(src, [2, 1, 4, 3]).data)).toEqual([6, 0, 0, 0]);
    // Edges are rounded half to even: [0.5, 0, 2.5, 1] → [0, 0, 2, 1].
    expect(Array.from(cropRaster(src, [0.5, 0, 2.5, 1]).data)).toEqual([1, 2]);
  });

  it('rejects reversed boxes and bad RGB buffers', () => {
    const src = gray(3, 2, [1, 2, 3, 4, 5, 6]);
    expect(() => cropRaster(src, [2, 0, 1, 2])).toThrow(/'right' \(1\) is less than 'left' \(2\)/);
    expect(() => cropRaster(src, [0, 2, 1, 1])).toThrow(/'lower' \(1\) is less than 'upper' \(2\)/);
    expect(() => cropImage({ width: 2, height: 2, data: new Uint8Array(5) }, [0, 0, 1, 1])).toThrow(/crop: 5 bytes/);
  });
});

describe('RgbImage wrappers and filter names', () => {
  it('resizeImage is resizeRaster on 3 channels', () => {
    const img = { width: 4, height: 3, data: Uint8Array.from({ length: 36 }, (_, i) => i * 7) };
    const out = resizeImage(img, 2, 5);
    expect(out.data).toEqual(resizeRaster({ ...img, channels: 3 }, 2, 5).data);
    expect([out.width, out.height]).toEqual([2, 5]);
  });

  it('names filters and validates config values', () => {
    expect(resamplingName(3)).toBe('BICUBIC');
    expect(resamplingName(9)).toBe('unknown (9)');
    expect(checkResampling(2, 'x')).toBe(2);
    expect(() => checkResampling('3', 'cfg: resample')).toThrow(/cfg: resample: unknown resampling filter "3"/);
  });
});
