/**
 * Media URLs of chat parts → what `model.chat` takes, with the server's limits applied before
 * anything is decoded:
 * - `data:image/...;base64,...` and `data:video/...;base64,...` (the default way to send media);
 * - `file:///abs/path` only under `--allow-files DIR` (real paths: `..` and symlinks that leave
 *   DIR are refused);
 * - `http(s)://` only with `--allow-remote` (fetched with the byte limit and a timeout).
 * Images: encoded size ≤ maxImageBytes and width × height ≤ maxImagePixels, read from the header
 * (sharp metadata) so decompression bombs are refused before decoding. Videos: size ≤
 * maxVideoBytes, duration ≤ maxVideoSeconds and frame size ≤ maxImagePixels (ffmpeg probe).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { probeVideo } from '../media/video';
import { ApiError, badRequest } from './errors';

export interface MediaLimits {
  maxImageBytes: number;
  maxImagePixels: number;
  maxVideoBytes: number;
  maxVideoSeconds: number;
  /** Real path of the directory file:// URLs may read from, or null (file URLs refused). */
  allowFiles: string | null;
  allowRemote: boolean;
}

const IMAGE_FORMATS = new Set(['png', 'jpeg', 'webp', 'gif', 'tiff']);
const VIDEO_TYPES: Record<string, string> = { 'video/mp4': '.mp4', 'video/webm': '.webm', 'video/quicktime': '.mov', 'video/x-matroska': '.mkv', 'video/x-msvideo': '.avi' };

/** Temporary files of one request (data: videos), removed by `cleanup`. */
export class RequestFiles {
  private dir: string | null = null;
  write(ext: string, bytes: Uint8Array): string {
    this.dir ??= fs.mkdtempSync(path.join(os.tmpdir(), 'vlm-serve-'));
    const f = path.join(this.dir, `video${fs.readdirSync(this.dir).length}${ext}`);
    fs.writeFileSync(f, bytes);
    return f;
  }
  cleanup(): void {
    if (this.dir) fs.rmSync(this.dir, { recursive: true, force: true });
    this.dir = null;
  }
}

function parseDataUrl(url: string, param: string): { mime: string; bytes: Buffer } {
  const m = /^data:([a-z0-9.+-]+\/[a-z0-9.+-]+)((?:;[^,;]*)*?);base64,/i.exec(url.slice(0, 200));
  if (!m) throw badRequest('a data URL must look like data:<mime type>;base64,<data>', param, 'invalid_url');
  const b64 = url.slice(m[0].length);
  if (!/^[A-Za-z0-9+/=\s_-]*$/.test(b64.slice(0, 1000))) throw badRequest('the data URL is not valid base64', param, 'invalid_url');
  return { mime: m[1].toLowerCase(), bytes: Buffer.from(b64, 'base64') };
}

/** A file:// URL → a real path inside allowFiles. */
export function allowedFile(url: string, allowFiles: string | null, param: string): string {
  if (!allowFiles) throw badRequest('file:// URLs are disabled on this server (start it with --allow-files DIR)', param, 'file_urls_disabled');
  let p: string;
  try {
    p = fileURLToPath(url);
  } catch {
    throw badRequest('not a valid local file:// URL', param, 'invalid_url');
  }
  let real: string;
  try {
    real = fs.realpathSync(p);
  } catch {
    throw badRequest(`${p}: no such file`, param, 'file_not_found');
  }
  const rel = path.relative(allowFiles, real);
  if (rel === '' || rel.startsWith('..') || path.isAbsolute(rel)) {
    throw new ApiError(403, `${p} is outside the directory allowed by --allow-files`, 'invalid_request_error', param, 'file_not_allowed');
  }
  if (!fs.statSync(real).isFile()) throw badRequest(`${p} is not a file`, param, 'file_not_found');
  return real;
}

function readLimited(file: string, max: number, param: string, what: string): Buffer {
  const size = fs.statSync(file).size;
  if (size > max) throw new ApiError(413, `the ${what} is ${size} bytes; the limit is ${max}`, 'invalid_request_error', param, `${what}_too_large`);
  return fs.readFileSync(file);
}

async function fetchRemote(url: string, max: number, param: string, what: string, signal?: AbortSignal): Promise<{ mime: string; bytes: Buffer }> {
  let res: Response;
  try {
    res = await fetch(url, { signal: signal ? AbortSignal.any([signal, AbortSignal.timeout(30_000)]) : AbortSignal.timeout(30_000) });
  } catch (e) {
    throw badRequest(`could not fetch the ${what} URL: ${(e as Error).message}`, param, 'fetch_failed');
  }
  if (!res.ok || !res.body) throw badRequest(`fetching the ${what} URL gave HTTP ${res.status}`, param, 'fetch_failed');
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of res.body as unknown as AsyncIterable<Uint8Array>) {
    n += c.length;
    if (n > max) throw new ApiError(413, `the ${what} is larger than the limit of ${max} bytes`, 'invalid_request_error', param, `${what}_too_large`);
    chunks.push(Buffer.from(c));
  }
  return { mime: (res.headers.get('content-type') ?? '').split(';')[0].trim().toLowerCase(), bytes: Buffer.concat(chunks) };
}

async function fetchBytes(url: string, max: number, limits: MediaLimits, param: string, what: 'image' | 'video', signal?: AbortSignal): Promise<{ mime: string; bytes: Buffer; file?: string }> {
  if (/^data:/i.test(url)) {
    const d = parseDataUrl(url, param);
    if (d.bytes.length > max) throw new ApiError(413, `the ${what} is ${d.bytes.length} bytes; the limit is ${max}`, 'invalid_request_error', param, `${what}_too_large`);
    return d;
  }
  if (/^file:/i.test(url)) {
    const file = allowedFile(url, limits.allowFiles, param);
    return { mime: '', bytes: readLimited(file, max, param, what), file };
  }
  if (/^https?:/i.test(url)) {
    if (!limits.allowRemote) throw badRequest('http(s) media URLs are disabled on this server (send a data: URL, or start it with --allow-remote)', param, 'remote_urls_disabled');
    return fetchRemote(url, max, param, what, signal);
  }
  throw badRequest(`unsupported ${what} URL scheme (use data:, file:// or http(s)://)`, param, 'invalid_url');
}

/** An image URL → encoded bytes, checked against the size and pixel limits without decoding. */
export async function resolveImage(url: string, limits: MediaLimits, param: string, signal?: AbortSignal): Promise<Uint8Array> {
  const { mime, bytes } = await fetchBytes(url, limits.maxImageBytes, limits, param, 'image', signal);
  if (mime && !mime.startsWith('image/')) throw new ApiError(415, `expected an image, got ${mime}`, 'invalid_request_error', param, 'unsupported_media_type');
  let meta: sharp.Metadata;
  try {
    // header only: nothing is decoded here
    meta = await sharp(bytes, { limitInputPixels: false }).metadata();
  } catch {
    throw new ApiError(415, 'the image could not be read (supported: PNG, JPEG, WebP, GIF, TIFF)', 'invalid_request_error', param, 'invalid_image');
  }
  if (!meta.format || !IMAGE_FORMATS.has(meta.format)) {
    throw new ApiError(415, `unsupported image format ${meta.format ?? 'unknown'} (supported: PNG, JPEG, WebP, GIF, TIFF)`, 'invalid_request_error', param, 'invalid_image');
  }
  const w = meta.width ?? 0;
  const h = meta.height ?? 0;
  if (!w || !h) throw badRequest('the image has no pixels', param, 'invalid_image');
  if (w * h > limits.maxImagePixels) {
    throw new ApiError(413, `the image is ${w}×${h} = ${w * h} pixels; the limit is ${limits.maxImagePixels}`, 'invalid_request_error', param, 'image_too_large');
  }
  return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.length);
}

/** A video URL → a file path (data:/remote bytes go to a per-request temp file), probed against the limits. */
export async function resolveVideo(url: string, limits: MediaLimits, files: RequestFiles, param: string, signal?: AbortSignal): Promise<string> {
  const r = await fetchBytes(url, limits.maxVideoBytes, limits, param, 'video', signal);
  let file = r.file;
  if (!file) {
    if (r.mime && !VIDEO_TYPES[r.mime]) throw new ApiError(415, `expected a video (${Object.keys(VIDEO_TYPES).join(', ')}), got ${r.mime}`, 'invalid_request_error', param, 'unsupported_media_type');
    file = files.write(VIDEO_TYPES[r.mime] ?? '.mp4', r.bytes);
  }
  let info;
  try {
    info = await probeVideo(file, { countFrames: 'container', maxPixels: limits.maxImagePixels, timeoutMs: 30_000, signal });
  } catch (e) {
    const m = (e as Error).message.replace(file, 'the video');
    throw new ApiError(/too large|pixels/i.test(m) ? 413 : 400, `the video could not be read: ${m}`, 'invalid_request_error', param, 'invalid_video');
  }
  if (info.durationSec > limits.maxVideoSeconds) {
    throw new ApiError(413, `the video lasts ${info.durationSec.toFixed(1)} s; the limit is ${limits.maxVideoSeconds} s`, 'invalid_request_error', param, 'video_too_long');
  }
  return file;
}
