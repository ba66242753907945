/**
 * Image decoding like PIL `Image.open(f).convert("RGB")`. The PNGs are built byte by byte here
 * (so bit depth, colour type, palette and tRNS are exactly what each case needs); the expected
 * values follow from Pillow's PngImagePlugin `_MODES` and Convert.c, cited per case.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import zlib from 'node:zlib';
import sharp from 'sharp';

import { ImageLoadError, MAX_IMAGE_PIXELS, checkRgbImage, decodeImage, loadImage } from '../../media/image';
import { fixture, itIf, shared } from '../helpers/golden';
import { HostTensor, SafetensorsFile } from '../../weights/safetensors';

// ---------------------------------------------------------------------------------------------
// a minimal PNG writer
// ---------------------------------------------------------------------------------------------

function crc32(buf: Buffer): number {
  let crc = 0xffffffff;
  for (const b of buf) {
    let c = (crc ^ b) & 0xff;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    crc = (crc >>> 8) ^ c;
  }
  return (crc ^ 0xffffffff) >>> 0;
}

function chunk(type: string, data: Buffer): Buffer {
  const td = Buffer.concat([Buffer.from(type, 'latin1'), data]);
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(td));
  return Buffer.concat([len, td, crc]);
}

/** PNG with the given bit depth / colour type; `samples` row-major, one number per sample. */
function png(w: number, h: number, bitDepth: number, colorType: 0 | 2 | 3 | 4 | 6, samples: number[], extra: Buffer[] = []): Buffer {
  const spp = { 0: 1, 2: 3, 3: 1, 4: 2, 6: 4 }[colorType];
  const bpr = Math.ceil((w * spp * bitDepth) / 8);
  const raw = Buffer.alloc(h * (bpr + 1));
  for (let y = 0; y < h; y++) {
    const off = y * (bpr + 1) + 1;
    for (let i = 0; i < w * spp; i++) {
      const v = samples[y * w * spp + i];
      if (bitDepth === 16) raw.writeUInt16BE(v, off + i * 2);
      else if (bitDepth === 8) raw[off + i] = v;
      else raw[off + ((i * bitDepth) >> 3)] |= v << (8 - bitDepth - ((i * bitDepth) & 7));
    }
  }
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(w, 0);
  ihdr.writeUInt32BE(h, 4);
  ihdr[8] = bitDepth;
  ihdr[9] = colorType;
  return Buffer.concat([Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]), chunk('IHDR', ihdr), ...extra, chunk('IDAT', zlib.deflateSync(raw)), chunk('IEND', Buffer.alloc(0))]);
}

/** A valid IHDR over a tiny IDAT: only the header claims the size. */
function pngHeaderOnly(w: number, h: number): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(w, 0);
  ihdr.writeUInt32BE(h, 4);
  ihdr[8] = 8;
  return Buffer.concat([Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]), chunk('IHDR', ihdr), chunk('IDAT', zlib.deflateSync(Buffer.alloc(16))), chunk('IEND', Buffer.alloc(0))]);
}

const rgb = async (buf: Buffer): Promise<number[]> => Array.from((await decodeImage(buf)).data);

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vlm-image-test-'));
});
afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------------------------

describe('PNG modes → RGB like PIL convert("RGB")', () => {
  it('8-bit RGB and RGBA: alpha is dropped, not composited (Convert.c rgba2rgb)', async () => {
    expect(await rgb(png(2, 1, 8, 2, [1, 2, 3, 250, 251, 252]))).toEqual([1, 2, 3, 250, 251, 252]);
    expect(await rgb(png(2, 1, 8, 6, [10, 20, 30, 0, 40, 50, 60, 128]))).toEqual([10, 20, 30, 40, 50, 60]);
  });

  it('grayscale (8/2/1-bit) and gray+alpha replicate L into R, G, B', async () => {
    expect(await rgb(png(2, 1, 8, 0, [7, 200]))).toEqual([7, 7, 7, 200, 200, 200]);
    // PIL 'L;2' unpacks 0..3 to 0, 85, 170, 255; mode '1' to 0 / 255.
    expect(await rgb(png(4, 1, 2, 0, [0, 1, 2, 3]))).toEqual([0, 0, 0, 85, 85, 85, 170, 170, 170, 255, 255, 255]);
    expect(await rgb(png(2, 1, 1, 0, [0, 1]))).toEqual([0, 0, 0, 255, 255, 255]);
    expect(await rgb(png(2, 1, 8, 4, [7, 0, 200, 255]))).toEqual([7, 7, 7, 200, 200, 200]);
  });

  it('palette images use the palette colour, transparency (tRNS) ignored', async () => {
    const plte = chunk('PLTE', Buffer.from([10, 20, 30, 40, 50, 60]));
    expect(await rgb(png(3, 1, 8, 3, [0, 1, 0], [plte]))).toEqual([10, 20, 30, 40, 50, 60, 10, 20, 30]);
    expect(await rgb(png(2, 1, 8, 3, [0, 1], [plte, chunk('tRNS', Buffer.from([0]))]))).toEqual([10, 20, 30, 40, 50, 60]);
    expect(await rgb(png(1, 1, 8, 2, [1, 2, 3], [chunk('tRNS', Buffer.from([0, 1, 0, 2, 0, 3]))]))).toEqual([1, 2, 3]);
  });

  it('16-bit RGB, RGBA and gray+alpha keep the high byte (RGB;16B / LA;16B unpackers)', async () => {
    expect(await rgb(png(1, 1, 16, 2, [0x12ff, 0x0080, 0xffff]))).toEqual([0x12, 0x00, 0xff]);
    expect(await rgb(png(1, 1, 16, 6, [0x12ff, 0x0080, 0xffff, 0x0001]))).toEqual([0x12, 0x00, 0xff]);
    expect(await rgb(png(1, 1, 16, 4, [0x12ff, 0x8000]))).toEqual([0x12, 0x12, 0x12]);
  });

  it('16-bit grayscale saturates at 255 (mode I / I;16 → RGB: Convert.c i2rgb / I16_RGB)', async () => {
    // PIL: Image.open(gray16.png).convert('RGB') maps 0x12ff → 255, 0x0080 → 128, 0x00ff → 255, 0 → 0.
    expect(await rgb(png(4, 1, 16, 0, [0x12ff, 0x0080, 0x00ff, 0]))).toEqual([255, 255, 255, 128, 128, 128, 255, 255, 255, 0, 0, 0]);
  });

  itIf(shared('fixtures', 'videollama2_clip_mistral_tiny'))('decodes the fixtures\' input PNGs to the goldens\' uint8 arrays', async () => {
    const cases: [string, string, string][] = [
      ['videollama2_clip_mistral_tiny/input_image.png', 'videollama2_clip_mistral_tiny/golden.safetensors', 'image.input_rgb_u8'],
      ['videollama2_siglip_qwen2_tiny/input_image.png', 'videollama2_siglip_qwen2_tiny/golden.safetensors', 'image.input_rgb_u8'],
      ['minicpmv26_tiny/train/input_image.png', 'minicpmv26_tiny/golden.safetensors', 'input.image_rgb_u8'],
    ];
    for (const [img, gold, key] of cases) {
      const ours = await loadImage(shared('fixtures', img)!);
      const f = SafetensorsFile.open(shared('fixtures', gold)!);
      const ref: HostTensor = f.read(key);
      f.close();
      expect([ours.height, ours.width, 3]).toEqual(ref.shape);
      expect(Buffer.compare(Buffer.from(ours.data), Buffer.from(ref.data)) === 0).toBe(true);
    }
  });

  it('decodes the bundled copies of those PNGs', async () => {
    const img = await loadImage(fixture('preprocess', 'videollama2_clip_mistral_tiny', 'input_image.png'));
    expect([img.width, img.height, img.data.length]).toEqual([120, 90, 120 * 90 * 3]);
  });
});

describe('other formats', () => {
  const src = Buffer.from(Array.from({ length: 8 * 6 * 3 }, (_, i) => (i * 11) % 256));
  const raw = { raw: { width: 8, height: 6, channels: 3 as const } };

  it('lossless WebP round-trips exactly', async () => {
    const webp = await sharp(src, raw).webp({ lossless: true }).toBuffer();
    expect(Buffer.from((await decodeImage(webp)).data).equals(src)).toBe(true);
  });

  it('JPEG decodes close to its source; grayscale JPEG gives equal channels', async () => {
    const smooth = Buffer.from(Array.from({ length: 16 * 16 * 3 }, (_, i) => 64 + (Math.floor(i / 48) % 16) * 4));
    const jpg = await sharp(smooth, { raw: { width: 16, height: 16, channels: 3 } }).jpeg({ quality: 100 }).toBuffer();
    const out = await decodeImage(jpg);
    expect(Math.max(...Array.from(out.data, (v, i) => Math.abs(v - smooth[i])))).toBeLessThanOrEqual(2);
    const grayJpg = await sharp(smooth, { raw: { width: 16, height: 16, channels: 3 } }).grayscale().jpeg().toBuffer();
    const g = await decodeImage(grayJpg);
    for (let i = 0; i < 256; i++) expect(g.data[i * 3]).toBe(g.data[i * 3 + 2]);
  });

  it('does not apply EXIF orientation (PIL Image.open keeps the stored pixels)', async () => {
    const jpg = await sharp(src, raw).jpeg().withMetadata({ orientation: 6 }).toBuffer();
    expect((await sharp(jpg).metadata()).orientation).toBe(6);
    const out = await decodeImage(jpg);
    expect([out.width, out.height]).toEqual([8, 6]);
  });

  it('CMYK JPEG uses PIL cmyk2rgb: no ink → white, full black ink → black', async () => {
    const px = Buffer.from([255, 255, 255, 0, 0, 0]);
    const jpg = await sharp(px, { raw: { width: 2, height: 1, channels: 3 } }).toColourspace('cmyk').jpeg({ quality: 100 }).toBuffer();
    expect((await sharp(jpg).metadata()).space).toBe('cmyk');
    const out = Array.from((await decodeImage(jpg)).data);
    expect(out.slice(0, 3).every((v) => v >= 250)).toBe(true);
    expect(out.slice(3).every((v) => v <= 5)).toBe(true);
  });

  it('reads the first frame of an animated GIF', async () => {
    const frames = Buffer.concat([Buffer.alloc(2 * 2 * 4, 0), Buffer.alloc(2 * 2 * 4, 255)]);
    for (let i = 0; i < 4; i++) frames[i * 4 + 3] = 255;
    const gif = await sharp(frames, { raw: { width: 2, height: 4, channels: 4, pageHeight: 2 } as never, animated: true }).gif().toBuffer();
    const out = await decodeImage(gif);
    expect([out.width, out.height]).toEqual([2, 2]);
    expect(Array.from(out.data)).toEqual(Array(12).fill(0));
  });
});

describe('in-memory inputs', () => {
  it('returns a valid RgbImage as is and decodes Buffers/Uint8Arrays', async () => {
    const img = { width: 1, height: 1, data: Uint8Array.from([1, 2, 3]) };
    expect(await loadImage(img)).toBe(img);
    expect(Array.from((await loadImage(new Uint8Array(png(1, 1, 8, 2, [4, 5, 6])))).data)).toEqual([4, 5, 6]);
  });

  it('validates RgbImage geometry', () => {
    expect(() => checkRgbImage({ width: 2, height: 1, data: new Uint8Array(5) }, 'frame 3')).toThrow(/frame 3: image data has 5 bytes, 2x1x3 = 6 expected/);
    expect(() => checkRgbImage({ width: 0, height: 0, data: new Uint8Array(0) })).toThrow(/image has zero size \(0x0\)/);
    expect(() => checkRgbImage({ width: 1.5, height: 1, data: new Uint8Array(3) })).toThrow(/bad image size 1.5x1/);
    expect(() => checkRgbImage({ width: 1, height: 1, data: [1, 2, 3] as never })).toThrow(/must be a Uint8Array/);
    expect(() => checkRgbImage(null as never)).toThrow(/expected an RgbImage/);
  });
});

describe('bad inputs: errors name the file', () => {
  const write = (name: string, data: Buffer | string): string => {
    const p = path.join(tmp, name);
    fs.writeFileSync(p, data);
    return p;
  };

  it('missing file and directories', async () => {
    const p = path.join(tmp, 'missing.png');
    await expect(loadImage(p)).rejects.toThrow(`${p}: no such file`);
    await expect(loadImage(tmp)).rejects.toThrow(`${tmp}: is a directory, not an image file`);
  });

  it('empty file', async () => {
    const p = write('empty.png', Buffer.alloc(0));
    await expect(loadImage(p)).rejects.toThrow(`${p}: empty file (0 bytes)`);
  });

  it('a text file named .png', async () => {
    const p = write('notes.png', 'this is not an image\n');
    const err = await loadImage(p).catch((e) => e);
    expect(err).toBeInstanceOf(ImageLoadError);
    expect(err.message).toMatch(new RegExp(`^${p.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: cannot read the image: .*unsupported image format - the content is not a known image format \\(despite the '.png' extension\\)`));
  });

  it('corrupt and truncated PNG data', async () => {
    const good = png(8, 8, 8, 2, Array(192).fill(100));
    const trunc = write('trunc.png', good.subarray(0, good.length - 20));
    await expect(loadImage(trunc)).rejects.toThrow(new RegExp(`trunc.png: corrupt or truncated image data`));
    const bad = Buffer.from(good);
    bad.fill(0x55, 45, 60); // inside IDAT
    const corrupt = write('corrupt.png', bad);
    await expect(loadImage(corrupt)).rejects.toThrow(/corrupt.png: corrupt or truncated image data/);
    const header = write('header.png', good.subarray(0, 20));
    await expect(loadImage(header)).rejects.toThrow(/header.png: cannot read the image/);
  });

  it('unsupported formats (SVG, AVIF)', async () => {
    const svg = write('x.svg', '<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"><rect width="4" height="4"/></svg>');
    await expect(loadImage(svg)).rejects.toThrow(`${svg}: unsupported image format 'svg' (supported: png, jpeg, webp, gif, tiff)`);
    const avif = await sharp(Buffer.alloc(8 * 8 * 3, 9), { raw: { width: 8, height: 8, channels: 3 } }).avif().toBuffer();
    await expect(decodeImage(avif, { name: 'photo.avif' })).rejects.toThrow(`photo.avif: unsupported image format 'heif'`);
  });

  it('0x0 images', async () => {
    const p = write('zero.png', pngHeaderOnly(0, 0));
    await expect(loadImage(p)).rejects.toThrow(`${p}: image has zero size (0x0)`);
    await expect(decodeImage(pngHeaderOnly(0, 3), { name: 'z.png' })).rejects.toThrow('z.png: image has zero size (0x3)');
  });

  it('huge images are refused from the header, before decoding, with the limit in the message', async () => {
    // A 30000x30000 header over a few bytes of IDAT: decoding would need 2.7 GB.
    const p = write('huge.png', pngHeaderOnly(30000, 30000));
    const t0 = Date.now();
    await expect(loadImage(p)).rejects.toThrow(`${p}: image is 30000x30000 = 900,000,000 pixels, over the limit of 178,956,970 pixels`);
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(MAX_IMAGE_PIXELS).toBe(2 * Math.floor((1024 * 1024 * 1024) / 4 / 3));
    await expect(decodeImage(png(20, 20, 8, 0, Array(400).fill(0)), { name: 'b.png', maxPixels: 399 })).rejects.toThrow('b.png: image is 20x20 = 400 pixels, over the limit of 399 pixels');
  });

  it('names in-memory buffers', async () => {
    await expect(decodeImage(Buffer.from('nope'))).rejects.toThrow(/^<buffer>: cannot read the image/);
    await expect(loadImage(Buffer.from('nope'), { name: 'upload #2' })).rejects.toThrow(/^upload #2: cannot read the image/);
  });
});
