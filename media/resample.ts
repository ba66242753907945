/**
 * Pillow-exact resizing and cropping of 8-bit images.
 *
 * A port of Pillow's `Image.resize` → `_imaging.c _resize` → `libImaging/Resample.c`
 * `ImagingResample` (python-pillow/Pillow; the coefficient math is unchanged from 4.x to 12.x,
 * checked against 9.4.0, 10.0.0 and main), plus the NEAREST path (`Geometry.c`
 * `ImagingScaleAffine`) and `Image.crop`. Every image processor in this project (MiniCPM-V slicing,
 * HF CLIP/SigLIP `resize`) goes through PIL on uint8 pixels, so matching its integer arithmetic
 * bit for bit is what makes our pixel tensors equal to the upstream ones.
 *
 * What Pillow does for an 8-bit image, and what we reproduce:
 * 1. `Image.resize`: same size and full box → copy; integer box of the requested size → crop;
 *    NEAREST → affine nearest-neighbour scaling; any other filter → `ImagingResample`.
 * 2. `precompute_coeffs` (double): `scale = (in1 − in0) / outSize` (box edges are C floats),
 *    `filterscale = max(scale, 1)` (the antialiasing: the support grows with the downscale factor),
 *    `support = filter.support · filterscale`, per output pixel the window
 *    `[trunc(center − support + 0.5), trunc(center + support + 0.5))` clipped to the input, weights
 *    `filter((x + xmin − center + 0.5) / filterscale)` normalised to sum 1.
 * 3. `normalize_coeffs_8bpc`: weights → int32 fixed point with PRECISION_BITS = 22, rounded half
 *    away from zero (`(int)(w·2^22 ± 0.5)`).
 * 4. Horizontal pass first (only over the rows the vertical pass will read), into an intermediate
 *    uint8 image, then the vertical pass. Each output sample is `clip8((2^21 + Σ in·k) >> 22)`.
 *    A pass is skipped when its axis is unchanged (same size, box edges 0 and size).
 *
 * Layout: interleaved channels, row-major (`data[(y·width + x)·channels + c]`); any channel count.
 */
import { RgbImage } from './types';

/** PIL `Image.Resampling` values (also what HF configs store as `resample`). */
export const Resampling = {
  NEAREST: 0,
  LANCZOS: 1,
  BILINEAR: 2,
  BICUBIC: 3,
  BOX: 4,
  HAMMING: 5,
} as const;
export type ResamplingFilter = (typeof Resampling)[keyof typeof Resampling];

const FILTER_NAMES: Record<number, string> = { 0: 'NEAREST', 1: 'LANCZOS', 2: 'BILINEAR', 3: 'BICUBIC', 4: 'BOX', 5: 'HAMMING' };

/** The name of a PIL resampling filter (`3` → `'BICUBIC'`). */
export function resamplingName(filter: number): string {
  return FILTER_NAMES[filter] ?? `unknown (${filter})`;
}

/** Checks a `resample` value read from a config or an option; throws naming `what`. */
export function checkResampling(value: unknown, what: string): ResamplingFilter {
  if (typeof value !== 'number' || !(value in FILTER_NAMES)) {
    throw new Error(`${what}: unknown resampling filter ${JSON.stringify(value)}; expected one of ` +
      Object.entries(FILTER_NAMES).map(([k, v]) => `${k} (${v})`).join(', '));
  }
  return value as ResamplingFilter;
}

/** An 8-bit image with any number of interleaved channels. */
export interface Raster {
  width: number;
  height: number;
  channels: number;
  data: Uint8Array;
}

/** Left, upper, right, lower edges in source pixels (PIL's `box`). */
export type Box = [number, number, number, number];

// ---------------------------------------------------------------------------------------------
// filters (Resample.c; evaluated in double exactly as written there)
// ---------------------------------------------------------------------------------------------

interface Filter {
  fn: (x: number) => number;
  support: number;
}

const boxFilter = (x: number): number => (x > -0.5 && x <= 0.5 ? 1.0 : 0.0);

const bilinearFilter = (x: number): number => {
  if (x < 0.0) x = -x;
  return x < 1.0 ? 1.0 - x : 0.0;
};

// Resample.c uses the float literals 0.54f and 0.46f here.
const F054 = Math.fround(0.54), F046 = Math.fround(0.46);
const hammingFilter = (x: number): number => {
  if (x < 0.0) x = -x;
  if (x === 0.0) return 1.0;
  if (x >= 1.0) return 0.0;
  x = x * Math.PI;
  return (Math.sin(x) / x) * (F054 + F046 * Math.cos(x));
};

/** Keys' cubic convolution with a = −0.5, written in the same operation order as Resample.c. */
const bicubicFilter = (x: number): number => {
  const a = -0.5;
  if (x < 0.0) x = -x;
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
};

const sincFilter = (x: number): number => {
  if (x === 0.0) return 1.0;
  x = x * Math.PI;
  return Math.sin(x) / x;
};

const lanczosFilter = (x: number): number => (-3.0 <= x && x < 3.0 ? sincFilter(x) * sincFilter(x / 3) : 0.0);

const FILTERS: Record<number, Filter> = {
  [Resampling.BOX]: { fn: boxFilter, support: 0.5 },
  [Resampling.BILINEAR]: { fn: bilinearFilter, support: 1.0 },
  [Resampling.HAMMING]: { fn: hammingFilter, support: 1.0 },
  [Resampling.BICUBIC]: { fn: bicubicFilter, support: 2.0 },
  [Resampling.LANCZOS]: { fn: lanczosFilter, support: 3.0 },
};

/** 32 − 8 − 2: 8 bits for the result, 2 for overflow of negative lobes and sums above 1. */
const PRECISION_BITS = 22;
const ONE = 1 << PRECISION_BITS;
const HALF = 1 << (PRECISION_BITS - 1);

// ---------------------------------------------------------------------------------------------
// coefficients
// ---------------------------------------------------------------------------------------------

interface Coeffs {
  /** Max taps per output pixel. */
  ksize: number;
  /** Per output pixel: first input index and tap count. */
  bounds: Int32Array;
  /** Fixed-point weights, `ksize` per output pixel (unused taps are 0). */
  kk: Int32Array;
}

/** `precompute_coeffs` + `normalize_coeffs_8bpc`. `in0`/`in1` are C floats, like Pillow's box. */
function precomputeCoeffs(inSize: number, in0: number, in1: number, outSize: number, filter: Filter): Coeffs {
  in0 = Math.fround(in0);
  in1 = Math.fround(in1);
  // (double)(in1 - in0) / outSize: the subtraction happens in float.
  const scale = Math.fround(in1 - in0) / outSize;
  const filterscale = scale < 1.0 ? 1.0 : scale;
  const support = filter.support * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(outSize * 2);
  const kk = new Int32Array(outSize * ksize);
  const k = new Float64Array(ksize);
  const invFilterscale = 1.0 / filterscale;
  for (let xx = 0; xx < outSize; xx++) {
    const center = in0 + (xx + 0.5) * scale;
    let ww = 0.0;
    let xmin = Math.trunc(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    let xmax = Math.trunc(center + support + 0.5);
    if (xmax > inSize) xmax = inSize;
    xmax -= xmin;
    for (let x = 0; x < xmax; x++) {
      const w = filter.fn((x + xmin - center + 0.5) * invFilterscale);
      k[x] = w;
      ww += w;
    }
    for (let x = 0; x < xmax; x++) {
      const w = ww !== 0.0 ? k[x] / ww : k[x];
      // (int)(±0.5 + w * 2^22): C truncation toward zero.
      kk[xx * ksize + x] = w < 0 ? Math.trunc(-0.5 + w * ONE) : Math.trunc(0.5 + w * ONE);
    }
    bounds[xx * 2] = xmin;
    bounds[xx * 2 + 1] = xmax;
  }
  return { ksize, bounds, kk };
}

/** clip8(ss): `ss >> 22` clamped to [0, 255] (Pillow's lookup table covers −640..639). */
function clip8(ss: number): number {
  const v = ss >> PRECISION_BITS;
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

// ---------------------------------------------------------------------------------------------
// the two passes (ImagingResampleHorizontal_8bpc / ImagingResampleVertical_8bpc)
// ---------------------------------------------------------------------------------------------

/** Resamples rows `offset .. offset + outHeight` of `src` horizontally to `outWidth`. */
function resampleHorizontal(src: Raster, outWidth: number, outHeight: number, offset: number, c: Coeffs): Raster {
  const { channels: C, width: inW } = src;
  const out = new Uint8Array(outWidth * outHeight * C);
  const { ksize, bounds, kk } = c;
  const inp = src.data;
  for (let yy = 0; yy < outHeight; yy++) {
    const rowIn = (yy + offset) * inW * C;
    const rowOut = yy * outWidth * C;
    for (let xx = 0; xx < outWidth; xx++) {
      const xmin = bounds[xx * 2], xmax = bounds[xx * 2 + 1];
      const k0 = xx * ksize;
      if (C === 3) {
        let s0 = HALF, s1 = HALF, s2 = HALF;
        let p = rowIn + xmin * 3;
        for (let x = 0; x < xmax; x++, p += 3) {
          const w = kk[k0 + x];
          s0 += inp[p] * w;
          s1 += inp[p + 1] * w;
          s2 += inp[p + 2] * w;
        }
        const o = rowOut + xx * 3;
        out[o] = clip8(s0);
        out[o + 1] = clip8(s1);
        out[o + 2] = clip8(s2);
      } else {
        for (let ch = 0; ch < C; ch++) {
          let s = HALF;
          for (let x = 0; x < xmax; x++) s += inp[rowIn + (xmin + x) * C + ch] * kk[k0 + x];
          out[rowOut + xx * C + ch] = clip8(s);
        }
      }
    }
  }
  return { width: outWidth, height: outHeight, channels: C, data: out };
}

/** Resamples `src` vertically to `outHeight` rows (bounds already relative to `src`). */
function resampleVertical(src: Raster, outHeight: number, c: Coeffs): Raster {
  const { channels: C, width: W } = src;
  const rowLen = W * C;
  const out = new Uint8Array(rowLen * outHeight);
  const { ksize, bounds, kk } = c;
  const inp = src.data;
  const acc = new Float64Array(rowLen);
  for (let yy = 0; yy < outHeight; yy++) {
    const ymin = bounds[yy * 2], ymax = bounds[yy * 2 + 1];
    const k0 = yy * ksize;
    // Row-wise accumulation: the same integer sums as Pillow's per-pixel loop (exact in doubles).
    acc.fill(HALF);
    for (let y = 0; y < ymax; y++) {
      const w = kk[k0 + y];
      if (w === 0) continue;
      const rowIn = (ymin + y) * rowLen;
      for (let i = 0; i < rowLen; i++) acc[i] += inp[rowIn + i] * w;
    }
    const rowOut = yy * rowLen;
    for (let i = 0; i < rowLen; i++) out[rowOut + i] = clip8(acc[i]);
  }
  return { width: W, height: outHeight, channels: C, data: out };
}

// ---------------------------------------------------------------------------------------------
// public entry points
// ---------------------------------------------------------------------------------------------

export interface ResizeOptions {
  /** PIL filter (default BICUBIC, PIL's default for 8-bit images). */
  resample?: ResamplingFilter;
  /** Source region to resample, PIL's `box` (default the whole image). Float edges allowed. */
  box?: Box;
}

function checkSize(width: number, height: number): void {
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
    throw new Error(`resize: height and width must be integers > 0, got ${width}x${height}`);
  }
}

function checkRaster(src: Raster, what: string): void {
  const { width, height, channels, data } = src;
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1 || !Number.isInteger(channels) || channels < 1) {
    throw new Error(`${what}: bad image geometry ${width}x${height}x${channels}`);
  }
  if (data.length !== width * height * channels) {
    throw new Error(`${what}: ${data.length} bytes for a ${width}x${height}x${channels} image (${width * height * channels} expected)`);
  }
}

/**
 * `Image.resize((width, height), resample, box)` for an 8-bit image, bit-exact with Pillow.
 * Always returns a new buffer.
 */
export function resizeRaster(src: Raster, width: number, height: number, opts: ResizeOptions = {}): Raster {
  checkRaster(src, 'resize');
  checkSize(width, height);
  const filter = checkResampling(opts.resample ?? Resampling.BICUBIC, 'resize');
  const box: Box = opts.box ? [...opts.box] : [0, 0, src.width, src.height];
  // Image.resize: same size, whole image → copy.
  if (width === src.width && height === src.height && box[0] === 0 && box[1] === 0 && box[2] === src.width && box[3] === src.height) {
    return { ...src, data: src.data.slice() };
  }
  // _resize validates the box as C floats.
  const fb = box.map((v) => Math.fround(v)) as Box;
  if (fb[0] < 0 || fb[1] < 0) throw new Error(`resize: box offset can't be negative, got [${box}]`);
  if (fb[2] > src.width || fb[3] > src.height) throw new Error(`resize: box can't exceed original image size ${src.width}x${src.height}, got [${box}]`);
  if (fb[2] - fb[0] < 0 || fb[3] - fb[1] < 0) throw new Error(`resize: box can't be empty, got [${box}]`);
  // Integer box whose size equals the requested size → crop.
  if (fb[0] === Math.trunc(fb[0]) && Math.fround(fb[2] - fb[0]) === width && fb[1] === Math.trunc(fb[1]) && Math.fround(fb[3] - fb[1]) === height) {
    return cropRaster(src, [fb[0], fb[1], fb[2], fb[3]]);
  }
  if (filter === Resampling.NEAREST) return nearestScale(src, width, height, fb);
  return resample(src, width, height, FILTERS[filter], fb);
}

/** ImagingResampleInner for 8-bit images. */
function resample(src: Raster, xsize: number, ysize: number, filter: Filter, box: Box): Raster {
  // Pillow's quirky test compares box[2] with the *output* width; kept as is.
  const needHorizontal = xsize !== src.width || box[0] !== 0 || box[2] !== xsize;
  const needVertical = ysize !== src.height || box[1] !== 0 || box[3] !== ysize;
  const vert = precomputeCoeffs(src.height, box[1], box[3], ysize, filter);
  // First and last source rows the vertical pass reads.
  const yboxFirst = vert.bounds[0];
  const yboxLast = vert.bounds[ysize * 2 - 2] + vert.bounds[ysize * 2 - 1];
  let img = src;
  let out: Raster | null = null;
  if (needHorizontal) {
    const horiz = precomputeCoeffs(src.width, box[0], box[2], xsize, filter);
    for (let i = 0; i < ysize; i++) vert.bounds[i * 2] -= yboxFirst;
    img = out = resampleHorizontal(src, xsize, yboxLast - yboxFirst, yboxFirst, horiz);
  }
  if (needVertical) out = resampleVertical(img, ysize, vert);
  return out ?? { ...img, data: img.data.slice() };
}

/** `_resize` NEAREST branch → ImagingScaleAffine (16.16-free double stepping, `fill` = 1). */
function nearestScale(src: Raster, xsize: number, ysize: number, box: Box): Raster {
  const C = src.channels;
  const a0 = Math.fround(box[2] - box[0]) / xsize;
  const a4 = Math.fround(box[3] - box[1]) / ysize;
  const coord = (v: number): number => (v < 0.0 ? -1 : Math.trunc(v));
  const xintab = new Int32Array(xsize).fill(-1);
  let xo = box[0] + a0 * 0.5;
  for (let x = 0; x < xsize; x++) {
    const xin = coord(xo);
    if (xin >= 0 && xin < src.width) xintab[x] = xin;
    xo += a0;
  }
  const out = new Uint8Array(xsize * ysize * C);
  let yo = box[1] + a4 * 0.5;
  for (let y = 0; y < ysize; y++) {
    const yi = coord(yo);
    if (yi >= 0 && yi < src.height) {
      for (let x = 0; x < xsize; x++) {
        const xin = xintab[x];
        if (xin < 0) continue;
        const s = (yi * src.width + xin) * C, d = (y * xsize + x) * C;
        for (let c = 0; c < C; c++) out[d + c] = src.data[s + c];
      }
    }
    yo += a4;
  }
  return { width: xsize, height: ysize, channels: C, data: out };
}

/**
 * `Image.crop(box)`: edges are rounded with Python's `round` (half to even); the region may
 * extend past the image, where it is filled with zeros (ImagingCrop).
 */
export function cropRaster(src: Raster, box: Box): Raster {
  const [x0, y0, x1, y1] = box.map(pyRound);
  if (x1 < x0) throw new Error(`crop: coordinate 'right' (${box[2]}) is less than 'left' (${box[0]})`);
  if (y1 < y0) throw new Error(`crop: coordinate 'lower' (${box[3]}) is less than 'upper' (${box[1]})`);
  const C = src.channels;
  const w = x1 - x0, h = y1 - y0;
  const out = new Uint8Array(w * h * C);
  const cx0 = Math.max(x0, 0), cx1 = Math.min(x1, src.width);
  if (cx1 > cx0) {
    for (let y = Math.max(y0, 0); y < Math.min(y1, src.height); y++) {
      const s = (y * src.width + cx0) * C;
      out.set(src.data.subarray(s, s + (cx1 - cx0) * C), ((y - y0) * w + (cx0 - x0)) * C);
    }
  }
  return { width: w, height: h, channels: C, data: out };
}

/** Python 3 `round(x)` for a float: to the nearest integer, ties to even. */
export function pyRound(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

// ---------------------------------------------------------------------------------------------
// RgbImage wrappers
// ---------------------------------------------------------------------------------------------

const asRaster = (img: RgbImage): Raster => ({ width: img.width, height: img.height, channels: 3, data: img.data });
const asRgb = (r: Raster): RgbImage => ({ width: r.width, height: r.height, data: r.data });

/** PIL `image.resize((width, height), resample, box)` for an RGB image (default BICUBIC). */
export function resizeImage(img: RgbImage, width: number, height: number, opts: ResizeOptions = {}): RgbImage {
  return asRgb(resizeRaster(asRaster(img), width, height, opts));
}

/** PIL `image.crop(box)` for an RGB image. */
export function cropImage(img: RgbImage, box: Box): RgbImage {
  checkRaster(asRaster(img), 'crop');
  return asRgb(cropRaster(asRaster(img), box));
}
