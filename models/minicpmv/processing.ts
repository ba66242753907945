/**
 * MiniCPM-V 2.6 image processor: slicing, resizing, normalisation, `reshape_by_patch` and the
 * image placeholder text.
 *
 * Mirrors `MiniCPM-V-2_6/image_processing_minicpmv.py` (`MiniCPMVImageProcessor`, blob
 * 67ff552fbd59b6142f0969dfe00e19edfb1127bf in wusongbai139/AnyCaption@0d75254, a snapshot of
 * openbmb/MiniCPM-V-2_6) and the placeholder half of `processing_minicpmv.py`.
 *
 * Pipeline for one image (RGB uint8, like PIL after `.convert("RGB")`):
 *   grid = get_sliced_grid(size)            null → no slicing
 *   no grid: source = resize(find_best_resize(size, upscale allowed))        → 1 image
 *   grid:    source = resize(find_best_resize(size))                          (downscale only)
 *            refine = resize(get_refine_size(size, grid)) split into rows × cols crops
 *            → 1 + rows·cols images, source first, then the slices row-major
 *   each: x/255 (float32) → (x − mean)/std (float32) → CHW → reshape_by_patch
 * Resizes are PIL BICUBIC on uint8 (media/resample.ts, bit-exact with Pillow).
 *
 * Shapes: P = patch_size (14); a slice of H×W pixels (multiples of P) has h = H/P, w = W/P
 * patches, L = h·w; `pixel_values` is `[3, P, L·P]` with
 *   out[c, py, l·P + px] = img[c, (l div w)·P + py, (l mod w)·P + px]
 * (torch `unfold` + permute in upstream), and `tgt_sizes` is `[h, w]`.
 */
import path from 'node:path';

import { RgbImage } from '../../media/types';
import { cropImage, pyRound, resizeImage, Resampling } from '../../media/resample';
import { readBoundedText } from '../../io/files';

// ---------------------------------------------------------------------------------------------
// config
// ---------------------------------------------------------------------------------------------

/** `preprocessor_config.json` of MiniCPM-V 2.6, with the exact key names. */
export interface MiniCPMVPreprocessorConfig {
  /** Max slices besides the source image (default 9). */
  max_slice_nums: number;
  /** Side of the square pixel budget per image/slice (default 448). */
  scale_resolution: number;
  /** ViT patch size (default 14). */
  patch_size: number;
  /** Prefix each image's placeholder with `<image_id>i</image_id>` (default true, see below). */
  use_image_id: boolean;
  /** `<unk>` tokens per image/slice = resampler queries (default 64). */
  image_feature_size: number;
  im_start: string;
  im_end: string;
  slice_start: string;
  slice_end: string;
  unk: string;
  im_id_start: string;
  im_id_end: string;
  /** Slice large images (default true); false feeds the image unresized as one piece. */
  slice_mode: boolean;
  norm_mean: [number, number, number];
  norm_std: [number, number, number];
  version: number;
}

/**
 * Defaults: upstream `MiniCPMVImageProcessor.__init__` (`use_image_id` False when the key is
 * absent; the released 2.6 file sets it to true, and upstream `chat()` asserts it equals the
 * model config's, whose default is True).
 */
export const MINICPMV_PREPROCESSOR_DEFAULTS: Readonly<MiniCPMVPreprocessorConfig> = Object.freeze<MiniCPMVPreprocessorConfig>({
  max_slice_nums: 9,
  scale_resolution: 448,
  patch_size: 14,
  use_image_id: false,
  image_feature_size: 64,
  im_start: '<image>',
  im_end: '</image>',
  slice_start: '<slice>',
  slice_end: '</slice>',
  unk: '<unk>',
  im_id_start: '<image_id>',
  im_id_end: '</image_id>',
  slice_mode: true,
  norm_mean: [0.5, 0.5, 0.5],
  norm_std: [0.5, 0.5, 0.5],
  version: 2.0,
});

/** Keys HF writes into the file that do not affect preprocessing. */
const METADATA_KEYS = new Set(['image_processor_type', 'auto_map', 'processor_class', '_processor_class', 'feature_extractor_type']);

type Check = 'posInt' | 'bool' | 'str' | 'num' | 'triple';
const KEY_TYPES: Record<keyof MiniCPMVPreprocessorConfig, Check> = {
  max_slice_nums: 'posInt', scale_resolution: 'posInt', patch_size: 'posInt', use_image_id: 'bool',
  image_feature_size: 'posInt', im_start: 'str', im_end: 'str', slice_start: 'str', slice_end: 'str',
  unk: 'str', im_id_start: 'str', im_id_end: 'str', slice_mode: 'bool', norm_mean: 'triple',
  norm_std: 'triple', version: 'num',
};

const EXPECTED: Record<Check, string> = {
  posInt: 'an integer > 0', bool: 'a boolean', str: 'a string', num: 'a number', triple: 'an array of 3 numbers',
};

function valid(check: Check, v: unknown): boolean {
  switch (check) {
    case 'posInt': return typeof v === 'number' && Number.isInteger(v) && v > 0;
    case 'bool': return typeof v === 'boolean';
    case 'str': return typeof v === 'string';
    case 'num': return typeof v === 'number' && Number.isFinite(v);
    case 'triple': return Array.isArray(v) && v.length === 3 && v.every((x) => typeof x === 'number' && Number.isFinite(x));
  }
}

/**
 * Parses a MiniCPM-V `preprocessor_config.json` object: fills defaults, checks every known key's
 * type (errors name `file` and the key), rejects a zero `norm_std`, and reports unknown keys
 * through `warn`. Never mutates `json`.
 */
export function parseMiniCPMVPreprocessorConfig(json: unknown, file: string, warn: (msg: string) => void = console.warn): MiniCPMVPreprocessorConfig {
  if (json === null || typeof json !== 'object' || Array.isArray(json)) {
    throw new Error(`${file}: expected a JSON object, got ${Array.isArray(json) ? 'an array' : json === null ? 'null' : typeof json}`);
  }
  const src = json as Record<string, unknown>;
  const cfg = structuredClone(MINICPMV_PREPROCESSOR_DEFAULTS) as MiniCPMVPreprocessorConfig;
  const out = cfg as unknown as Record<string, unknown>;
  const ignored: string[] = [];
  for (const [key, v] of Object.entries(src)) {
    const check = KEY_TYPES[key as keyof MiniCPMVPreprocessorConfig];
    if (!check) {
      if (!METADATA_KEYS.has(key)) ignored.push(key);
      continue;
    }
    if (!valid(check, v)) throw new Error(`${file}: '${key}' must be ${EXPECTED[check]}, got ${JSON.stringify(v)}`);
    out[key] = Array.isArray(v) ? [...v] : v;
  }
  if (cfg.norm_std.some((s) => s === 0)) throw new Error(`${file}: 'norm_std' must not contain 0, got ${JSON.stringify(cfg.norm_std)}`);
  if (ignored.length) warn(`${file}: ignoring unknown keys ${ignored.map((k) => `'${k}'`).join(', ')}`);
  return cfg;
}

// ---------------------------------------------------------------------------------------------
// outputs
// ---------------------------------------------------------------------------------------------

/** One image or slice in `reshape_by_patch` layout. */
export interface PixelSlice {
  /** float32, length 3·P·L·P. */
  data: Float32Array;
  /** `[3, P, L·P]` with P = patch_size and L = h·w patches. */
  shape: [number, number, number];
}

/** What `preprocess` returns for one image. */
export interface MiniCPMVImageInputs {
  /** The source image first, then the slices row by row. */
  pixelValues: PixelSlice[];
  /** Per entry of `pixelValues`: `[h, w]` in patches. */
  tgtSizes: [number, number][];
  /** `[cols, rows]` of the slice grid, or null when the image is not sliced. */
  slicedGrid: [number, number] | null;
  /** Original image `[width, height]` (upstream `image_sizes`). */
  imageSize: [number, number];
  /** Per entry of `pixelValues`: `[width, height]` in pixels. */
  sliceSizes: [number, number][];
  /** The text that replaces `(<image>./</image>)` for this image at position `imageIndex` (default 0). */
  placeholder(imageIndex?: number): string;
}

/** Per-call options of `preprocess` and `placeholder` (upstream `processor(...)` kwargs). */
export interface MiniCPMVPreprocessOptions {
  /** Overrides `max_slice_nums` (the video recipe uses 2). Integer > 0. */
  maxSliceNums?: number;
  /** Overrides `use_image_id` in the placeholder (the video recipe uses false). */
  useImageId?: boolean;
}

type Size = [number, number];

// ---------------------------------------------------------------------------------------------
// the processor
// ---------------------------------------------------------------------------------------------

export class MiniCPMVImageProcessor {
  readonly config: Readonly<MiniCPMVPreprocessorConfig>;
  /** float32 lookup: uint8 value → normalised value, per channel. */
  private readonly lut: Float32Array[];

  constructor(config: MiniCPMVPreprocessorConfig) {
    this.config = Object.freeze(structuredClone(config));
    this.lut = [0, 1, 2].map((c) => normalizeLut(config.norm_mean[c], config.norm_std[c]));
  }

  /** From a parsed `preprocessor_config.json` object; `file` names it in errors. */
  static fromConfig(json: unknown, file = 'preprocessor_config.json', warn?: (msg: string) => void): MiniCPMVImageProcessor {
    return new MiniCPMVImageProcessor(parseMiniCPMVPreprocessorConfig(json, file, warn));
  }

  /** Reads `DIR/preprocessor_config.json` (nothing else is needed). */
  static fromDir(dir: string, warn?: (msg: string) => void): MiniCPMVImageProcessor {
    const file = path.join(dir, 'preprocessor_config.json');
    let text: string;
    try {
      text = readBoundedText(file, 'config');
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      throw new Error(`${file}: cannot read the image processor config (${code ?? (e as Error).message})` +
        (code === 'ENOENT' ? '; --model must be a MiniCPM-V 2.6 checkpoint directory' : ''));
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (e) {
      throw new Error(`${file}: invalid JSON (${(e as Error).message})`);
    }
    return MiniCPMVImageProcessor.fromConfig(json, file, warn);
  }

  /** Resolves the per-call `max_slice_nums` (upstream: `int(...)`, asserted > 0). */
  private maxSlices(opts: MiniCPMVPreprocessOptions): number {
    const n = opts.maxSliceNums ?? this.config.max_slice_nums;
    if (!Number.isInteger(n) || n <= 0) throw new Error(`maxSliceNums must be an integer > 0, got ${n}`);
    return n;
  }

  // --- geometry (upstream method names in comments) -----------------------------------------

  /** `ensure_divide`: `max(round(length / p) · p, p)`, Python round (half to even). */
  ensureDivide(length: number, p: number): number {
    return Math.max(pyRound(length / p) * p, p);
  }

  /** `find_best_resize`: fit the area into scale_resolution² (or grow to it when `allowUpscale`). */
  findBestResize([width, height]: Size, scaleResolution: number, patchSize: number, allowUpscale = false): Size {
    if (width * height > scaleResolution * scaleResolution || allowUpscale) {
      const r = width / height;
      height = Math.trunc(scaleResolution / Math.sqrt(r));
      width = Math.trunc(height * r);
    }
    return [this.ensureDivide(width, patchSize), this.ensureDivide(height, patchSize)];
  }

  /** `get_refine_size`: the size to resize to before cutting the grid, upscale allowed. */
  getRefineSize([width, height]: Size, [gridX, gridY]: Size, scaleResolution: number, patchSize: number, allowUpscale = false): Size {
    const refineWidth = this.ensureDivide(width, gridX);
    const refineHeight = this.ensureDivide(height, gridY);
    const best = this.findBestResize([refineWidth / gridX, refineHeight / gridY], scaleResolution, patchSize, allowUpscale);
    return [best[0] * gridX, best[1] * gridY];
  }

  /**
   * `get_sliced_grid`: `[cols, rows]` for an image of `[width, height]`, or null when it fits in
   * one piece. Candidates are the factorisations of ⌈area / scale_resolution²⌉ (capped at
   * `maxSliceNums`) and its neighbours; the grid whose log aspect is closest to the image's wins
   * (first one on ties).
   */
  getSlicedGrid([width, height]: Size, maxSliceNums: number, neverSplit = false): Size | null {
    const s = this.config.scale_resolution;
    const logRatio = Math.log(width / height);
    const ratio = (width * height) / (s * s);
    const multiple = Math.min(Math.ceil(ratio), maxSliceNums);
    if (multiple <= 1 || neverSplit) return null;
    const candidates: Size[] = [];
    for (const n of [multiple - 1, multiple, multiple + 1]) {
      if (n === 1 || n > maxSliceNums) continue;
      for (let m = 1; m <= n; m++) if (n % m === 0) candidates.push([m, n / m]);
    }
    let best: Size = [1, 1];
    let minError = Infinity;
    for (const g of candidates) {
      const error = Math.abs(logRatio - Math.log(g[0] / g[1]));
      if (error < minError) {
        best = g;
        minError = error;
      }
    }
    return best;
  }

  /**
   * `slice_image` + `get_sliced_images`: the resized source image and the grid slices (row-major),
   * all uint8 RGB. With `slice_mode` false the image is returned as is.
   */
  sliceImage(image: RgbImage, opts: MiniCPMVPreprocessOptions = {}): { images: RgbImage[]; grid: Size | null } {
    const { scale_resolution: s, patch_size: p } = this.config;
    const maxSlices = this.maxSlices(opts);
    if (!this.config.slice_mode) return { images: [image], grid: null };
    const size: Size = [image.width, image.height];
    const grid = this.getSlicedGrid(size, maxSlices);
    const bicubic = { resample: Resampling.BICUBIC };
    if (grid === null) {
      const [w, h] = this.findBestResize(size, s, p, true);
      return { images: [resizeImage(image, w, h, bicubic)], grid };
    }
    const [sw, sh] = this.findBestResize(size, s, p);
    const images = [resizeImage(image, sw, sh, bicubic)];
    const [rw, rh] = this.getRefineSize(size, grid, s, p, true);
    const refine = resizeImage(image, rw, rh, bicubic);
    // split_to_patches: cells of int(W / cols) × int(H / rows), row by row.
    const cellW = Math.trunc(rw / grid[0]), cellH = Math.trunc(rh / grid[1]);
    for (let y = 0; y < rh; y += cellH) {
      for (let x = 0; x < rw; x += cellW) images.push(cropImage(refine, [x, y, x + cellW, y + cellH]));
    }
    return { images, grid };
  }

  // --- placeholder text ---------------------------------------------------------------------

  /**
   * `get_slice_image_placeholder`: `<image_id>i</image_id>` (when image ids are on) +
   * `<image>` + `<unk>`×N + `</image>`, then, if sliced, `rows` lines joined by `\n`, each
   * `cols` × (`<slice>` + `<unk>`×N + `</slice>`). No newline before the first row, none after.
   */
  placeholder(imageSize: Size, imageIndex = 0, opts: MiniCPMVPreprocessOptions = {}): string {
    const c = this.config;
    const grid = this.getSlicedGrid(imageSize, this.maxSlices(opts));
    const unks = c.unk.repeat(c.image_feature_size);
    let text = c.im_start + unks + c.im_end;
    if (opts.useImageId ?? c.use_image_id) text = `${c.im_id_start}${imageIndex}${c.im_id_end}` + text;
    if (c.slice_mode && grid) {
      const row = (c.slice_start + unks + c.slice_end).repeat(grid[0]);
      text += Array.from({ length: grid[1] }, () => row).join('\n');
    }
    return text;
  }

  // --- tensors ------------------------------------------------------------------------------

  /** Normalises one uint8 RGB slice and lays it out as `[3, P, L·P]` (`reshape_by_patch`). */
  toPatches(img: RgbImage): { pixels: PixelSlice; tgtSize: [number, number] } {
    const P = this.config.patch_size;
    // torch unfold drops a partial last row/column of patches (only reachable with slice_mode off).
    const h = Math.floor(img.height / P), w = Math.floor(img.width / P);
    const L = h * w;
    const rowLen = L * P;
    const out = new Float32Array(3 * P * rowLen);
    const src = img.data;
    const [l0, l1, l2] = this.lut;
    for (let ph = 0; ph < h; ph++) {
      for (let py = 0; py < P; py++) {
        const y = ph * P + py;
        for (let pw = 0; pw < w; pw++) {
          const o = py * rowLen + (ph * w + pw) * P;
          let s = (y * img.width + pw * P) * 3;
          for (let px = 0; px < P; px++, s += 3) {
            out[o + px] = l0[src[s]];
            out[P * rowLen + o + px] = l1[src[s + 1]];
            out[2 * P * rowLen + o + px] = l2[src[s + 2]];
          }
        }
      }
    }
    return { pixels: { data: out, shape: [3, P, rowLen] }, tgtSize: [h, w] };
  }

  /**
   * Upstream `preprocess` for one image: slices, normalised `[3, P, L·P]` tensors, `tgt_sizes`
   * and the placeholder. The image must already be RGB (see media/image.ts).
   */
  preprocess(image: RgbImage, opts: MiniCPMVPreprocessOptions = {}): MiniCPMVImageInputs {
    checkImage(image);
    const { images, grid } = this.sliceImage(image, opts);
    const pixelValues: PixelSlice[] = [];
    const tgtSizes: [number, number][] = [];
    for (const im of images) {
      const { pixels, tgtSize } = this.toPatches(im);
      pixelValues.push(pixels);
      tgtSizes.push(tgtSize);
    }
    const imageSize: Size = [image.width, image.height];
    const frozen = { ...opts };
    return {
      pixelValues,
      tgtSizes,
      slicedGrid: grid,
      imageSize,
      sliceSizes: images.map((im) => [im.width, im.height] as Size),
      placeholder: (imageIndex = 0) => this.placeholder(imageSize, imageIndex, frozen),
    };
  }
}

/** `(float32(v) / 255 − mean) / std`, every step rounded to float32 like numpy on float32 arrays. */
function normalizeLut(mean: number, std: number): Float32Array {
  const m = Math.fround(mean), s = Math.fround(std);
  const lut = new Float32Array(256);
  for (let v = 0; v < 256; v++) lut[v] = Math.fround(Math.fround(Math.fround(v / 255) - m) / s);
  return lut;
}

function checkImage(img: RgbImage): void {
  const { width, height, data } = img;
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
    throw new Error(`MiniCPM-V preprocess: bad image size ${width}x${height}`);
  }
  if (!(data instanceof Uint8Array) || data.length !== width * height * 3) {
    throw new Error(`MiniCPM-V preprocess: image data has ${data?.length} bytes, ${width}x${height}x3 = ${width * height * 3} expected`);
  }
}

// ---------------------------------------------------------------------------------------------
// bench case
// ---------------------------------------------------------------------------------------------

/**
 * The `minicpmv.preprocess.1344` bench case: the real 2.6 config (448 / 9 slices / 14) on a
 * deterministic 1344×1344 RGB image (3×3 grid, 10 pieces). Returns a closure that runs one
 * `preprocess` call; building the input is not timed.
 */
export function minicpmvPreprocessBench(size = 1344): { name: string; run: () => MiniCPMVImageInputs } {
  const processor = new MiniCPMVImageProcessor({ ...structuredClone(MINICPMV_PREPROCESSOR_DEFAULTS), version: 2.6 });
  const data = new Uint8Array(size * size * 3);
  let seed = 12345;
  for (let i = 0; i < data.length; i++) {
    seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
    data[i] = (((i / 3) % size) + (seed >>> 24)) & 255;
  }
  const image: RgbImage = { width: size, height: size, data };
  return { name: `minicpmv.preprocess.${size}`, run: () => processor.preprocess(image) };
}
