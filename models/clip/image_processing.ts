/**
 * The vision towers' image processors as VideoLLaMA2 uses them: HF `CLIPImageProcessor` and
 * `SiglipImageProcessor` (transformers v4.40.0, commit 745bbfe: `models/clip/image_processing_clip.py`
 * blob fd2f8b3, `models/siglip/image_processing_siglip.py` blob 5f24ffb, `image_transforms.py`
 * blob 016fae4), configured by the tower's `preprocessor_config.json`, and the last stage of
 * VideoLLaMA2's `mm_utils.process_image` / `process_video` (DAMO-NLP-SG/VideoLLaMA2@c0bb03a,
 * blob b03c7fe): optional `expand2square` padding, then the processor on every frame.
 *
 * CLIP:   resize so the shortest edge is `size.shortest_edge` (long edge `int(s · long / short)`,
 *         truncated) → center crop `crop_size` (zero padding if smaller) → `x · rescale_factor`
 *         (float64, then float32) → `(x − mean) / std` (float32) → CHW.
 * SigLIP: resize to `size.height × size.width` → rescale → normalize → CHW.
 * Resizes go through PIL on uint8 (media/resample.ts, bit-exact with Pillow).
 * Output: `[N, 3, H, W]` float32 for N frames.
 */
import fs from 'node:fs';
import path from 'node:path';

import { RgbImage } from '../../media/types';
import { checkResampling, resizeImage, Resampling, ResamplingFilter } from '../../media/resample';
import { readBoundedText } from '../../io/files';

/** `[N, 3, H, W]` float32, row-major. */
export interface PixelBatch {
  data: Float32Array;
  shape: [number, number, number, number];
}

/** What both tower processors offer. */
export interface TowerImageProcessor {
  readonly kind: 'clip' | 'siglip';
  /** Normalisation mean per channel (also the `pad` fill colour source). */
  readonly imageMean: [number, number, number];
  /** Processes every image; all outputs must share one size (they are stacked). */
  preprocess(images: RgbImage[]): PixelBatch;
}

// ---------------------------------------------------------------------------------------------
// config parsing (shared)
// ---------------------------------------------------------------------------------------------

/** transformers `OPENAI_CLIP_MEAN` / `OPENAI_CLIP_STD` (CLIPImageProcessor defaults). */
export const OPENAI_CLIP_MEAN: [number, number, number] = [0.48145466, 0.4578275, 0.40821073];
export const OPENAI_CLIP_STD: [number, number, number] = [0.26862954, 0.26130258, 0.27577711];
/** transformers `IMAGENET_STANDARD_MEAN` / `_STD` (SiglipImageProcessor defaults). */
export const IMAGENET_STANDARD_MEAN: [number, number, number] = [0.5, 0.5, 0.5];
export const IMAGENET_STANDARD_STD: [number, number, number] = [0.5, 0.5, 0.5];

const METADATA_KEYS = ['image_processor_type', 'feature_extractor_type', 'processor_class', '_processor_class', 'auto_map'];

/** Typed reads from one config object; every error names the file and the key. */
class ConfigReader {
  private readonly used = new Set<string>(METADATA_KEYS);
  constructor(readonly json: Record<string, unknown>, readonly file: string) {}

  private fail(key: string, expected: string): never {
    throw new Error(`${this.file}: '${key}' must be ${expected}, got ${JSON.stringify(this.json[key])}`);
  }

  has(key: string): boolean {
    this.used.add(key);
    return this.json[key] !== undefined && this.json[key] !== null;
  }

  bool(key: string, def: boolean): boolean {
    if (!this.has(key)) return def;
    const v = this.json[key];
    return typeof v === 'boolean' ? v : this.fail(key, 'a boolean');
  }

  num(key: string, def: number): number {
    if (!this.has(key)) return def;
    const v = this.json[key];
    return typeof v === 'number' && Number.isFinite(v) ? v : this.fail(key, 'a number');
  }

  resample(key: string): ResamplingFilter {
    if (!this.has(key)) return Resampling.BICUBIC;
    return checkResampling(this.json[key], `${this.file}: '${key}'`);
  }

  /** A float or a list of 3 floats (HF broadcasts a float over the channels). */
  triple(key: string, def: [number, number, number], nonZero = false): [number, number, number] {
    if (!this.has(key)) return [...def];
    const v = this.json[key];
    const arr = typeof v === 'number' ? [v, v, v] : v;
    const ok = Array.isArray(arr) && arr.length === 3 && arr.every((x) => typeof x === 'number' && Number.isFinite(x) && (!nonZero || x !== 0));
    return ok ? (arr as [number, number, number]) : this.fail(key, `a number or an array of 3 numbers${nonZero ? ', none 0' : ''}`);
  }

  /**
   * `get_size_dict`: an int becomes `{shortest_edge}` (or `{height, width}` when
   * `defaultToSquare`), `[h, w]` becomes `{height, width}`, and a dict must use one of HF's key sets.
   */
  sizeDict(key: string, def: Record<string, number>, defaultToSquare: boolean): Record<string, number> {
    if (!this.has(key)) return { ...def };
    const v = this.json[key];
    const posInt = (x: unknown): boolean => typeof x === 'number' && Number.isInteger(x) && x > 0;
    let d: Record<string, unknown>;
    if (posInt(v)) d = defaultToSquare ? { height: v, width: v } : { shortest_edge: v };
    else if (Array.isArray(v) && v.length === 2) d = { height: v[0], width: v[1] };
    else if (v !== null && typeof v === 'object' && !Array.isArray(v)) d = v as Record<string, unknown>;
    else return this.fail(key, 'an integer, [height, width] or a size dict');
    const keys = Object.keys(d).sort().join(',');
    const valid = ['height,width', 'shortest_edge', 'longest_edge,shortest_edge', 'longest_edge'];
    if (!valid.includes(keys) || !Object.values(d).every(posInt)) {
      return this.fail(key, 'a size dict with integer > 0 values and keys {height, width}, {shortest_edge}, {shortest_edge, longest_edge} or {longest_edge}');
    }
    return d as Record<string, number>;
  }

  /** Keys present in the file that the processor does not read. */
  unused(): string[] {
    return Object.keys(this.json).filter((k) => !this.used.has(k));
  }
}

function readJsonObject(file: string, what: string): Record<string, unknown> {
  let text: string;
  try {
    text = readBoundedText(file, 'config');
  } catch (e) {
    throw new Error(`${file}: cannot read the ${what} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new Error(`${file}: invalid JSON (${(e as Error).message})`);
  }
  return asObject(json, file);
}

function asObject(json: unknown, file: string): Record<string, unknown> {
  if (json === null || typeof json !== 'object' || Array.isArray(json)) {
    throw new Error(`${file}: expected a JSON object, got ${Array.isArray(json) ? 'an array' : json === null ? 'null' : typeof json}`);
  }
  return json as Record<string, unknown>;
}

function warnUnused(r: ConfigReader, warn: (msg: string) => void): void {
  const extra = r.unused();
  if (extra.length) warn(`${r.file}: ignoring keys ${extra.map((k) => `'${k}'`).join(', ')}`);
}

// ---------------------------------------------------------------------------------------------
// shared pixel steps
// ---------------------------------------------------------------------------------------------

/**
 * float32 lookup uint8 → output value per channel: `rescale` (uint8 · factor in float64, cast to
 * float32), then `normalize` in float32 (`(x − float32(mean)) / float32(std)`).
 */
function pixelLut(doRescale: boolean, factor: number, doNormalize: boolean, mean: number[], std: number[]): Float32Array[] {
  return [0, 1, 2].map((c) => {
    const lut = new Float32Array(256);
    const m = Math.fround(mean[c]), s = Math.fround(std[c]);
    for (let v = 0; v < 256; v++) {
      let x = doRescale ? Math.fround(v * factor) : v;
      if (doNormalize) x = Math.fround(Math.fround(x - m) / s);
      lut[v] = x;
    }
    return lut;
  });
}

/** HWC uint8 → CHW float32 via the per-channel lookup, written at `out[offset..]`. */
function writeChw(img: RgbImage, lut: Float32Array[], out: Float32Array, offset: number): void {
  const n = img.width * img.height;
  const [l0, l1, l2] = lut;
  const d = img.data;
  for (let i = 0, s = 0; i < n; i++, s += 3) {
    out[offset + i] = l0[d[s]];
    out[offset + n + i] = l1[d[s + 1]];
    out[offset + 2 * n + i] = l2[d[s + 2]];
  }
}

/** Stacks per-image CHW results into `[N, 3, H, W]`; all must have the same size. */
function stack(images: RgbImage[], lut: Float32Array[], who: string): PixelBatch {
  if (images.length === 0) throw new Error(`${who}: no images to process`);
  const { width: W, height: H } = images[0];
  images.forEach((im, i) => {
    if (im.width !== W || im.height !== H) {
      throw new Error(`${who}: image ${i} is ${im.width}x${im.height} after resizing but image 0 is ${W}x${H}; they cannot be stacked`);
    }
  });
  const per = 3 * H * W;
  const data = new Float32Array(images.length * per);
  images.forEach((im, i) => writeChw(im, lut, data, i * per));
  return { data, shape: [images.length, 3, H, W] };
}

function checkImage(img: RgbImage, i: number, who: string): void {
  const ok = Number.isInteger(img?.width) && Number.isInteger(img?.height) && img.width > 0 && img.height > 0 &&
    img.data instanceof Uint8Array && img.data.length === img.width * img.height * 3;
  if (!ok) throw new Error(`${who}: image ${i} is not an RGB image (${img?.width}x${img?.height}, ${img?.data?.length} bytes)`);
}

/**
 * `image_transforms.center_crop` on HWC uint8: top/left = (orig − crop) // 2; when the crop is
 * larger than the image, the image is first centred on a zero canvas.
 */
export function centerCrop(img: RgbImage, cropHeight: number, cropWidth: number): RgbImage {
  const { width: ow, height: oh } = img;
  const floorDiv = (a: number, b: number): number => Math.floor(a / b);
  let top = floorDiv(oh - cropHeight, 2), left = floorDiv(ow - cropWidth, 2);
  if (top >= 0 && top + cropHeight <= oh && left >= 0 && left + cropWidth <= ow) {
    return copyRegion(img, left, top, cropWidth, cropHeight);
  }
  // Pad to at least the crop size, then crop (the same indices as upstream).
  const nh = Math.max(cropHeight, oh), nw = Math.max(cropWidth, ow);
  const canvas = new Uint8Array(nh * nw * 3);
  const tp = floorDiv(nh - oh, 2), lp = floorDiv(nw - ow, 2);
  for (let y = 0; y < oh; y++) canvas.set(img.data.subarray(y * ow * 3, (y + 1) * ow * 3), ((y + tp) * nw + lp) * 3);
  top += tp;
  left += lp;
  const bottom = top + cropHeight, right = left + cropWidth;
  const t = Math.max(0, top), l = Math.max(0, left);
  return copyRegion({ width: nw, height: nh, data: canvas }, l, t, Math.min(nw, right) - l, Math.min(nh, bottom) - t);
}

function copyRegion(img: RgbImage, left: number, top: number, w: number, h: number): RgbImage {
  const out = new Uint8Array(w * h * 3);
  for (let y = 0; y < h; y++) {
    const s = ((top + y) * img.width + left) * 3;
    out.set(img.data.subarray(s, s + w * 3), y * w * 3);
  }
  return { width: w, height: h, data: out };
}

/**
 * `get_resize_output_image_size(image, size, default_to_square=False)`: `[height, width]` with
 * the short edge = `size` and the long edge `int(size · long / short)` (truncated).
 */
export function shortestEdgeSize(height: number, width: number, size: number): [number, number] {
  const [short, long] = width <= height ? [width, height] : [height, width];
  const newLong = Math.trunc((size * long) / short);
  return width <= height ? [newLong, size] : [size, newLong];
}

// ---------------------------------------------------------------------------------------------
// CLIP
// ---------------------------------------------------------------------------------------------

/** The CLIPImageProcessor settings, after HF's `get_size_dict` normalisation. */
export interface ClipImageProcessorConfig {
  do_resize: boolean;
  size: Record<string, number>;
  resample: ResamplingFilter;
  do_center_crop: boolean;
  crop_size: { height: number; width: number };
  do_rescale: boolean;
  rescale_factor: number;
  do_normalize: boolean;
  image_mean: [number, number, number];
  image_std: [number, number, number];
  do_convert_rgb: boolean;
}

export class ClipImageProcessor implements TowerImageProcessor {
  readonly kind = 'clip' as const;
  readonly config: Readonly<ClipImageProcessorConfig>;
  private readonly lut: Float32Array[];

  constructor(config: ClipImageProcessorConfig) {
    this.config = Object.freeze(structuredClone(config));
    const c = this.config;
    if (c.do_resize && !('shortest_edge' in c.size) && !('height' in c.size)) {
      throw new Error(`CLIPImageProcessor: size must contain either 'shortest_edge' or 'height' and 'width', got ${JSON.stringify(c.size)}`);
    }
    this.lut = pixelLut(c.do_rescale, c.rescale_factor, c.do_normalize, c.image_mean, c.image_std);
  }

  get imageMean(): [number, number, number] {
    return [...this.config.image_mean];
  }

  /** Parses a CLIP `preprocessor_config.json` object (defaults from CLIPImageProcessor.__init__). */
  static fromConfig(json: unknown, file = 'preprocessor_config.json', warn: (msg: string) => void = console.warn): ClipImageProcessor {
    const r = new ConfigReader(asObject(json, file), file);
    let size = r.sizeDict('size', { shortest_edge: 224 }, false);
    // CLIPImageProcessor.__init__: the legacy `use_square_size` kwarg squares the shortest edge.
    if (r.has('use_square_size') && 'shortest_edge' in size) size = { height: size.shortest_edge, width: size.shortest_edge };
    const crop = r.sizeDict('crop_size', { height: 224, width: 224 }, true);
    const doCenterCrop = r.bool('do_center_crop', true);
    if (doCenterCrop && !('height' in crop)) throw new Error(`${file}: 'crop_size' must give height and width, got ${JSON.stringify(crop)}`);
    const cfg: ClipImageProcessorConfig = {
      do_resize: r.bool('do_resize', true),
      size,
      resample: r.resample('resample'),
      do_center_crop: doCenterCrop,
      crop_size: { height: crop.height, width: crop.width },
      do_rescale: r.bool('do_rescale', true),
      rescale_factor: r.num('rescale_factor', 1 / 255),
      do_normalize: r.bool('do_normalize', true),
      image_mean: r.triple('image_mean', OPENAI_CLIP_MEAN),
      image_std: r.triple('image_std', OPENAI_CLIP_STD, true),
      do_convert_rgb: r.bool('do_convert_rgb', true),
    };
    if (cfg.do_resize && !('shortest_edge' in size) && !('height' in size)) {
      throw new Error(`${file}: 'size' must contain either 'shortest_edge' or 'height' and 'width', got ${JSON.stringify(size)}`);
    }
    warnUnused(r, warn);
    return new ClipImageProcessor(cfg);
  }

  /** Reads `DIR/preprocessor_config.json`. */
  static fromDir(dir: string, warn?: (msg: string) => void): ClipImageProcessor {
    const file = path.join(dir, 'preprocessor_config.json');
    return ClipImageProcessor.fromConfig(readJsonObject(file, 'image processor config'), file, warn);
  }

  /** resize → center crop, on uint8 (before rescale/normalize). */
  transform(img: RgbImage): RgbImage {
    const c = this.config;
    if (c.do_resize) {
      const [h, w] = 'shortest_edge' in c.size ? shortestEdgeSize(img.height, img.width, c.size.shortest_edge) : [c.size.height, c.size.width];
      img = resizeImage(img, w, h, { resample: c.resample });
    }
    if (c.do_center_crop) img = centerCrop(img, c.crop_size.height, c.crop_size.width);
    return img;
  }

  preprocess(images: RgbImage[]): PixelBatch {
    images.forEach((im, i) => checkImage(im, i, 'CLIPImageProcessor'));
    return stack(images.map((im) => this.transform(im)), this.lut, 'CLIPImageProcessor');
  }
}

// ---------------------------------------------------------------------------------------------
// SigLIP
// ---------------------------------------------------------------------------------------------

/** The SiglipImageProcessor settings. */
export interface SiglipImageProcessorConfig {
  do_resize: boolean;
  size: { height: number; width: number };
  resample: ResamplingFilter;
  do_rescale: boolean;
  rescale_factor: number;
  do_normalize: boolean;
  image_mean: [number, number, number];
  image_std: [number, number, number];
}

export class SiglipImageProcessor implements TowerImageProcessor {
  readonly kind = 'siglip' as const;
  readonly config: Readonly<SiglipImageProcessorConfig>;
  private readonly lut: Float32Array[];

  constructor(config: SiglipImageProcessorConfig) {
    this.config = Object.freeze(structuredClone(config));
    const c = this.config;
    this.lut = pixelLut(c.do_rescale, c.rescale_factor, c.do_normalize, c.image_mean, c.image_std);
  }

  get imageMean(): [number, number, number] {
    return [...this.config.image_mean];
  }

  /** Parses a SigLIP `preprocessor_config.json` object (defaults from SiglipImageProcessor.__init__). */
  static fromConfig(json: unknown, file = 'preprocessor_config.json', warn: (msg: string) => void = console.warn): SiglipImageProcessor {
    const r = new ConfigReader(asObject(json, file), file);
    const size = r.sizeDict('size', { height: 224, width: 224 }, false);
    const doResize = r.bool('do_resize', true);
    // SiglipImageProcessor.preprocess reads size["height"], size["width"] (an int size fails there).
    if (doResize && !('height' in size)) throw new Error(`${file}: 'size' must be {"height": H, "width": W} for SigLIP, got ${JSON.stringify(r.json.size)}`);
    const cfg: SiglipImageProcessorConfig = {
      do_resize: doResize,
      size: { height: size.height, width: size.width },
      resample: r.resample('resample'),
      do_rescale: r.bool('do_rescale', true),
      rescale_factor: r.num('rescale_factor', 1 / 255),
      do_normalize: r.bool('do_normalize', true),
      image_mean: r.triple('image_mean', IMAGENET_STANDARD_MEAN),
      image_std: r.triple('image_std', IMAGENET_STANDARD_STD, true),
    };
    warnUnused(r, warn);
    return new SiglipImageProcessor(cfg);
  }

  static fromDir(dir: string, warn?: (msg: string) => void): SiglipImageProcessor {
    const file = path.join(dir, 'preprocessor_config.json');
    return SiglipImageProcessor.fromConfig(readJsonObject(file, 'image processor config'), file, warn);
  }

  transform(img: RgbImage): RgbImage {
    const c = this.config;
    return c.do_resize ? resizeImage(img, c.size.width, c.size.height, { resample: c.resample }) : img;
  }

  preprocess(images: RgbImage[]): PixelBatch {
    images.forEach((im, i) => checkImage(im, i, 'SiglipImageProcessor'));
    return stack(images.map((im) => this.transform(im)), this.lut, 'SiglipImageProcessor');
  }
}

// ---------------------------------------------------------------------------------------------
// choosing the processor for a tower directory
// ---------------------------------------------------------------------------------------------

/**
 * The processor for a vision-tower directory. Upstream picks the class from the tower name
 * (`'clip' in name` → CLIP, `'siglip'` → SigLIP, `encoder.py build_vision_tower`); we use, in
 * order, `kind`, the tower's `config.json` `model_type`, the preprocessor's
 * `image_processor_type` / `feature_extractor_type`, then the directory name.
 */
export function loadTowerImageProcessor(dir: string, kind?: 'clip' | 'siglip', warn?: (msg: string) => void): TowerImageProcessor {
  const file = path.join(dir, 'preprocessor_config.json');
  const json = readJsonObject(file, 'image processor config');
  kind ??= detectKind(dir, json, file);
  return kind === 'clip' ? ClipImageProcessor.fromConfig(json, file, warn) : SiglipImageProcessor.fromConfig(json, file, warn);
}

function detectKind(dir: string, json: Record<string, unknown>, file: string): 'clip' | 'siglip' {
  const hints: string[] = [];
  const cfgFile = path.join(dir, 'config.json');
  if (fs.existsSync(cfgFile)) {
    const mt = readJsonObject(cfgFile, 'tower config').model_type;
    if (typeof mt === 'string') hints.push(mt);
  }
  for (const k of ['image_processor_type', 'feature_extractor_type']) if (typeof json[k] === 'string') hints.push(json[k] as string);
  hints.push(path.basename(path.resolve(dir)));
  for (const h of hints) {
    const s = h.toLowerCase();
    if (s.includes('siglip')) return 'siglip';
    if (s.includes('clip')) return 'clip';
  }
  throw new Error(`${file}: cannot tell whether this is a CLIP or a SigLIP image processor ` +
    `(no clip/siglip in config.json model_type, image_processor_type, feature_extractor_type or the directory name); pass the kind explicitly`);
}

// ---------------------------------------------------------------------------------------------
// VideoLLaMA2 aspect-ratio handling
// ---------------------------------------------------------------------------------------------

/** `aspect_ratio` of `process_image` / `process_video`: `'pad'` or none (`model_init` uses none). */
export type AspectRatio = 'pad' | null;

/** `tuple(int(x * 255) for x in processor.image_mean)`: the `pad` fill colour (truncated). */
export function padColor(imageMean: number[]): [number, number, number] {
  return [0, 1, 2].map((c) => Math.trunc(imageMean[c] * 255)) as [number, number, number];
}

/**
 * `mm_utils.expand2square`: centres the image on a square canvas of its longer side filled with
 * `background` (offset `(long − short) // 2`); a square image is returned as is.
 */
export function expand2square(img: RgbImage, background: [number, number, number]): RgbImage {
  const { width: w, height: h } = img;
  if (w === h) return img;
  const side = Math.max(w, h);
  const out = new Uint8Array(side * side * 3);
  for (let i = 0; i < side * side; i++) out.set(background, i * 3);
  const x0 = w > h ? 0 : Math.floor((h - w) / 2);
  const y0 = w > h ? Math.floor((w - h) / 2) : 0;
  for (let y = 0; y < h; y++) out.set(img.data.subarray(y * w * 3, (y + 1) * w * 3), ((y + y0) * side + x0) * 3);
  return { width: side, height: side, data: out };
}

/**
 * The processing half of VideoLLaMA2 `process_image` / `process_video`: optional `expand2square`
 * with the processor's mean colour, then the tower processor on every frame → `[N, 3, H, W]`.
 * An image is a list of one frame (`process_image` returns `[1, 3, H, W]`).
 */
export function processFrames(frames: RgbImage[], processor: TowerImageProcessor, aspectRatio: AspectRatio = null): PixelBatch {
  if (aspectRatio !== null && aspectRatio !== 'pad') throw new Error(`aspectRatio must be 'pad' or null, got ${JSON.stringify(aspectRatio)}`);
  if (aspectRatio === 'pad') {
    const bg = padColor(processor.imageMean);
    frames = frames.map((f, i) => {
      checkImage(f, i, 'expand2square');
      return expand2square(f, bg);
    });
  }
  return processor.preprocess(frames);
}
