/**
 * Image decoding to 8-bit RGB, matching PIL's `Image.open(path).convert("RGB")`, which is what
 * every upstream processor (MiniCPM-V, VideoLLaMA2 `process_image`) starts from.
 *
 * Decoding is done by `sharp` (libvips). What we do to get PIL's pixels:
 * - No EXIF rotation: `Image.open` does not apply the orientation tag, and neither do we.
 * - No colour management: PIL ignores embedded ICC profiles in `convert`, so we pass `ignoreIcc`.
 * - Alpha is dropped, not composited (PIL `RGBA→RGB` / `LA→RGB` / `P→RGB` copy the colour bands).
 * - Grayscale (1/2/4/8-bit) is replicated into R, G and B; palettes are expanded.
 * - 16-bit: PIL reads 16-bit RGB(A) and gray+alpha PNGs by keeping the high byte (`RGB;16B`,
 *   `LA;16B` unpackers: `v >> 8`), but a 16-bit gray PNG becomes mode `I` / `I;16`, and its
 *   conversion to RGB *saturates* (`min(v, 255)`, Convert.c `i2rgb` / `I16_RGB`): a mid-gray
 *   16-bit image turns white. We reproduce both rules.
 * - CMYK JPEG: PIL's `cmyk2rgb` formula on the decoded ink values (libvips undoes the Adobe
 *   inversion like PIL's `CMYK;I` rawmode).
 * - Only the first frame of animated GIF/WebP/TIFF is read (PIL's `Image.open` frame 0).
 *
 * Known, documented differences: GIF pixels whose palette index is the transparent one come out
 * as libvips gives them (usually black) instead of the palette colour PIL would show; JPEG
 * decoding uses libvips' mozjpeg (libjpeg-turbo lineage, ISLOW IDCT, fancy upsampling like
 * Pillow's libjpeg-turbo) and has not been verified bit-exact against PIL here.
 *
 * Limits: at most `MAX_IMAGE_PIXELS` (178,956,970 = 2 × PIL's `Image.MAX_IMAGE_PIXELS`, the size
 * at which PIL raises `DecompressionBombError`), checked from the header before any pixel is
 * decoded. Formats: png, jpeg, webp, gif, tiff (what PIL opens out of the box and libvips decodes).
 */
import fs from 'node:fs';
import path from 'node:path';
import sharp from 'sharp';

import { RgbImage } from './types';
import { FileInputError, readBounded } from '../io/files';

/** Largest accepted image, in pixels: 2 × PIL `Image.MAX_IMAGE_PIXELS` (= int(1024·1024·1024 // 4 // 3)). */
export const MAX_IMAGE_PIXELS = 178_956_970;

/** Container formats we decode (sharp `metadata().format` names). */
export const SUPPORTED_IMAGE_FORMATS: readonly string[] = ['png', 'jpeg', 'webp', 'gif', 'tiff'];

/** A file or buffer that cannot be turned into an RGB image; the message names the source. */
export class ImageLoadError extends Error {
  constructor(readonly source: string, message: string) {
    super(`${source}: ${message}`);
    this.name = 'ImageLoadError';
  }
}

export interface LoadImageOptions {
  /** Pixel limit (default MAX_IMAGE_PIXELS); images with more pixels are refused before decoding. */
  maxPixels?: number;
  /** Name used in error messages for in-memory inputs (default '<buffer>'). */
  name?: string;
}

/** An encoded file (path), encoded bytes, or an already decoded RGB image. */
export type ImageSource = string | Uint8Array | RgbImage;

/**
 * Loads an image as 8-bit RGB like PIL `Image.open(src).convert("RGB")`.
 * A path is read from disk; bytes are decoded; an `RgbImage` is validated and returned as is.
 * Throws `ImageLoadError` naming the file for a missing, empty, unreadable, corrupt, unsupported,
 * zero-sized or over-limit image.
 */
export async function loadImage(src: ImageSource, opts: LoadImageOptions = {}): Promise<RgbImage> {
  if (typeof src === 'string') {
    return decodeImage(readImageFile(src), { ...opts, name: src });
  }
  if (src instanceof Uint8Array) return decodeImage(src, opts);
  return checkRgbImage(src, opts.name ?? '<image>');
}

/** Reads a file's bytes, with errors that name it. */
function readImageFile(file: string): Buffer {
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new ImageLoadError(file, code === 'ENOENT' ? 'no such file' : `cannot access (${code ?? (e as Error).message})`);
  }
  if (st.isDirectory()) throw new ImageLoadError(file, 'is a directory, not an image file');
  try {
    // a regular file within the image size limit (VLM_MAX_IMAGE_BYTES), read with that bound
    return readBounded(file, 'image');
  } catch (e) {
    const fe = e as FileInputError;
    throw new ImageLoadError(file, fe.code ? `cannot read (${fe.code})` : fe.message.slice(file.length + 2));
  }
}

/** Checks the geometry of an in-memory RGB image (throws `ImageLoadError` naming `name`). */
export function checkRgbImage(img: RgbImage, name = '<image>'): RgbImage {
  if (img === null || typeof img !== 'object') throw new ImageLoadError(name, `expected an RgbImage {width, height, data}, got ${img === null ? 'null' : typeof img}`);
  const { width, height, data } = img;
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 0 || height < 0) {
    throw new ImageLoadError(name, `bad image size ${width}x${height}`);
  }
  if (width === 0 || height === 0) throw new ImageLoadError(name, `image has zero size (${width}x${height})`);
  if (!(data instanceof Uint8Array)) throw new ImageLoadError(name, 'image data must be a Uint8Array (HWC RGB)');
  if (data.length !== width * height * 3) {
    throw new ImageLoadError(name, `image data has ${data.length} bytes, ${width}x${height}x3 = ${width * height * 3} expected`);
  }
  return img;
}

function tooBig(w: number, h: number, limit: number): string {
  const f = (n: number): string => n.toLocaleString('en-US');
  return `image is ${w}x${h} = ${f(w * h)} pixels, over the limit of ${f(limit)} pixels ` +
    `(2 x PIL's MAX_IMAGE_PIXELS, where PIL raises DecompressionBombError); refusing to decode it`;
}

/** PNG / GIF header sizes, to report a 0-sized image that libvips rejects as 'corrupt header'. */
function sniffSize(buf: Uint8Array): [number, number] | null {
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  if (b.length >= 24 && b.readUInt32BE(0) === 0x89504e47 && b.toString('latin1', 12, 16) === 'IHDR') return [b.readUInt32BE(16), b.readUInt32BE(20)];
  if (b.length >= 10 && b.toString('latin1', 0, 4) === 'GIF8') return [b.readUInt16LE(6), b.readUInt16LE(8)];
  return null;
}

/** Decodes encoded image bytes; see the file header for the PIL-compatible conversion rules. */
export async function decodeImage(bytes: Uint8Array, opts: LoadImageOptions = {}): Promise<RgbImage> {
  const name = opts.name ?? '<buffer>';
  const limit = opts.maxPixels ?? MAX_IMAGE_PIXELS;
  if (bytes.length === 0) throw new ImageLoadError(name, 'empty file (0 bytes)');
  // 1. Header only: format, size, depth.
  let meta: sharp.Metadata;
  try {
    meta = await sharp(bytes, { limitInputPixels: false }).metadata();
  } catch (e) {
    const sz = sniffSize(bytes);
    if (sz && (sz[0] === 0 || sz[1] === 0)) throw new ImageLoadError(name, `image has zero size (${sz[0]}x${sz[1]})`);
    const msg = (e as Error).message.trim();
    if (bytes.length >= 26 && bytes[0] === 0x42 && bytes[1] === 0x4d) {
      // 'BM' + a header: a Windows bitmap, which libvips (sharp) does not decode
      throw new ImageLoadError(name, `BMP images are not supported (supported: ${SUPPORTED_IMAGE_FORMATS.join(', ')}); convert it first, e.g. to PNG`);
    }
    const ext = path.extname(name).toLowerCase();
    const hint = /unsupported image format/i.test(msg)
      ? ` - the content is not a known image format${ext ? ` (despite the '${ext}' extension)` : ''}`
      : '';
    throw new ImageLoadError(name, `cannot read the image: ${msg}${hint}`);
  }
  const format = meta.format as string;
  if (!SUPPORTED_IMAGE_FORMATS.includes(format)) {
    throw new ImageLoadError(name, `unsupported image format '${format}' (supported: ${SUPPORTED_IMAGE_FORMATS.join(', ')})`);
  }
  const width = meta.width ?? 0, height = meta.height ?? 0;
  if (width === 0 || height === 0) throw new ImageLoadError(name, `image has zero size (${width}x${height})`);
  if (width * height > limit) throw new ImageLoadError(name, tooBig(width, height, limit));
  if (meta.depth !== 'uchar' && meta.depth !== 'ushort') {
    throw new ImageLoadError(name, `unsupported sample format '${meta.depth}' (8- and 16-bit images only)`);
  }
  // 2. Pixels.
  try {
    const base = (): sharp.Sharp => sharp(bytes, { limitInputPixels: limit, ignoreIcc: true, pages: 1, page: 0 });
    if (meta.space === 'cmyk') return await decodeCmyk(base());
    if (meta.depth === 'ushort') return await decode16(base(), meta.space === 'grey16' && !meta.hasAlpha);
    const { data, info } = await base().raw().toBuffer({ resolveWithObject: true });
    return dropToRgb(data, info.width, info.height, info.channels, (v) => v);
  } catch (e) {
    throw new ImageLoadError(name, `corrupt or truncated image data: ${(e as Error).message.trim()}`);
  }
}

/** Keeps the first three channels (or replicates a single one), mapping each sample. */
function dropToRgb(data: ArrayLike<number>, width: number, height: number, channels: number, map: (v: number) => number): RgbImage {
  const n = width * height;
  const out = new Uint8Array(n * 3);
  for (let i = 0; i < n; i++) {
    const s = i * channels;
    if (channels >= 3) {
      out[i * 3] = map(data[s]);
      out[i * 3 + 1] = map(data[s + 1]);
      out[i * 3 + 2] = map(data[s + 2]);
    } else {
      out[i * 3] = out[i * 3 + 1] = out[i * 3 + 2] = map(data[s]);
    }
  }
  return { width, height, data: out };
}

/** 16-bit images: gray without alpha saturates (PIL mode I / I;16), everything else keeps the high byte. */
async function decode16(img: sharp.Sharp, saturate: boolean): Promise<RgbImage> {
  const { data, info } = await img.toColourspace(saturate ? 'grey16' : 'rgb16').raw({ depth: 'ushort' }).toBuffer({ resolveWithObject: true });
  const u16 = new Uint16Array(data.buffer, data.byteOffset, data.byteLength / 2);
  return dropToRgb(u16, info.width, info.height, info.channels, saturate ? (v) => (v > 255 ? 255 : v) : (v) => v >> 8);
}

/** PIL Convert.c `cmyk2rgb`: `nk = 255 − K; out = clip8(nk − MULDIV255(C, nk))`. */
async function decodeCmyk(img: sharp.Sharp): Promise<RgbImage> {
  const { data, info } = await img.toColourspace('cmyk').raw().toBuffer({ resolveWithObject: true });
  const n = info.width * info.height, C = info.channels;
  const out = new Uint8Array(n * 3);
  const muldiv255 = (a: number, b: number): number => {
    const t = a * b + 128;
    return ((t >> 8) + t) >> 8;
  };
  for (let i = 0; i < n; i++) {
    const nk = 255 - data[i * C + 3];
    for (let c = 0; c < 3; c++) {
      const v = nk - muldiv255(data[i * C + c], nk);
      out[i * 3 + c] = v < 0 ? 0 : v > 255 ? 255 : v;
    }
  }
  return { width: info.width, height: info.height, data: out };
}
