/**
 * Video probing and frame decoding through the ffmpeg CLI, matching what upstream saw: VideoLLaMA2
 * and MiniCPM-V read videos with decord (the goldens: a PyAV reader), i.e. libavformat +
 * libavcodec + swscale to rgb24. Shared by both model families.
 *
 * Exactness (checked against the stored upstream frames, 0 LSB; see test/media/video.test.ts):
 * - Frame n is the n-th frame the decoder outputs (presentation order), as PyAV/decord number
 *   them: `-fps_mode`/`-vsync passthrough` (no dup/drop), `-noautorotate` (PyAV ignores rotation metadata),
 *   and the `select` filter counts decoded frames.
 * - Colour: PyAV (<= 14) `to_ndarray(format='rgb24')` runs swscale with SWS_BILINEAR and never
 *   sets colour details, so swscale's defaults apply: BT.601 matrix whatever the stream's tag, and
 *   limited range unless the pixel format is a "J" (full-range) one. ffmpeg's scale filter would
 *   instead follow the frame's tags (BT.709 for sample_demo_3: up to 17 LSB off), hence
 *   `scale=in_color_matrix=bt601:in_range=tv|pc:flags=bilinear,format=rgb24`. The result is
 *   bit-exact with the npm FFmpeg 4.x binary; a different ffmpeg build may pick other SIMD code
 *   for the same conversion (the C path differs by up to 3 LSB).
 * - Frame count: frames decoded by `ffmpeg -f null` with the same options (or the mp4 sample table
 *   with `countFrames: 'container'`, like decord's len()). Average fps: the mov demuxer's
 *   avg_frame_rate from the mp4 sample table (mp4_fps.ts), checked against the value ffmpeg prints;
 *   other containers use ffmpeg's printed value (2 decimals, snapped to k·1000/1001 or an integer
 *   when that prints the same).
 *
 * Memory: only the selected frames are converted (the `select` filter runs before `scale`), they
 * arrive one at a time as PPM images on a pipe, `-frames:v` stops ffmpeg after the last one, and the
 * streaming form holds one frame at a time. Videos above `maxPixels` per frame are refused (upstream
 * decodes at full resolution; we do not downscale).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { RgbImage } from './types';
import {
  errorSummary, exitError, FfmpegOptions, FfmpegProcess, InputHeader, parseInputHeader, parseLogLine, passthroughArgs,
  selectedVideoStream, startFfmpeg, StreamHeader, tooLargeError, VideoError,
} from './ffmpeg';
import { readMp4Timings } from './mp4_fps';

export { VideoError } from './ffmpeg';
export type { VideoErrorCode, FfmpegOptions } from './ffmpeg';

/** Default pixel limit per frame: 4096 x 4096 (4K UHD and DCI 4K pass, 8K is refused). */
export const DEFAULT_MAX_PIXELS = 4096 * 4096;

export interface VideoOptions extends FfmpegOptions {
  /** Refuse videos with more pixels per frame than this (default DEFAULT_MAX_PIXELS). */
  maxPixels?: number;
}

export interface ProbeOptions extends VideoOptions {
  /**
   * How to count frames: 'decode' (default) decodes the whole stream once, exact for every
   * container; 'container' trusts the mp4 sample table when there is one (no decode, like decord's
   * len(); differs when an edit list or damage hides frames) and decodes otherwise.
   */
  countFrames?: 'decode' | 'container';
}

/** What probeVideo reports. */
export interface VideoInfo {
  file: string;
  /** Number of decodable frames (indices 0 .. frameCount-1). */
  frameCount: number;
  /** Average frame rate as upstream reads it (decord get_avg_fps / PyAV average_rate). */
  avgFps: number;
  /** avgFps as num/den when known exactly. */
  avgFpsRational: [number, number] | null;
  fpsSource: 'mp4-stts' | 'ffmpeg-fps' | 'ffmpeg-tbr' | 'none';
  frameCountSource: 'decode' | 'container';
  /** frameCount / avgFps, in seconds (what the recipes call the video duration). */
  durationSec: number;
  /** The container's duration as ffmpeg prints it (10 ms resolution), or null. */
  containerDurationSec: number | null;
  width: number;
  height: number;
  pixFmt: string | null;
  codec: string;
  /** ffmpeg demuxer names, e.g. 'mov,mp4,m4a,3gp,3g2,mj2'. */
  container: string;
  /** Index of the decoded stream in the file. */
  streamIndex: number;
  /** Non-fatal ffmpeg errors/warnings seen while counting (deduplicated, at most 10). */
  warnings: string[];
}

export interface DecodeOptions extends VideoOptions {
  /** A probeVideo result for this file: skips the header probe and checks indices up front. */
  info?: VideoInfo;
}

export interface DecodedFrame {
  index: number;
  image: RgbImage;
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

function checkFile(file: string): void {
  if (typeof file !== 'string' || !file) throw new VideoError('bad_argument', String(file), `video path must be a non-empty string, got ${JSON.stringify(file)}`);
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch {
    throw new VideoError('not_found', file, `${file}: video file not found`);
  }
  if (!st.isFile()) throw new VideoError('not_found', file, `${file}: not a regular file`);
  if (st.size === 0) throw new VideoError('not_media', file, `${file}: not a readable video: the file is empty (0 bytes)`);
}

function maxPixelsOf(file: string, opts: VideoOptions): number {
  const m = opts.maxPixels ?? DEFAULT_MAX_PIXELS;
  if (!Number.isInteger(m) || m <= 0) throw new VideoError('bad_argument', file, `opts.maxPixels must be a positive integer, got ${m}`);
  return m;
}

function checkPixels(file: string, w: number, h: number, max: number): void {
  if (w * h > max) throw tooLargeError(file, w, h, max);
}

/**
 * Input options common to every run. The path goes through the `file:` protocol so that names like
 * `concat:a|b` or `pipe:0` are never taken for another protocol.
 */
function inputArgs(file: string, maxPixels: number, loglevel: string): string[] {
  return ['-loglevel', `level+${loglevel}`, '-nostats', '-noautorotate', '-max_pixels', String(maxPixels),
    '-i', `file:${path.resolve(file)}`, '-map', '0:V:0'];
}

/** Collects stdout as text (small outputs only) and waits for the exit. */
async function runToEnd(proc: FfmpegProcess): Promise<{ out: string; exit: Awaited<FfmpegProcess['exited']> }> {
  let out = '';
  proc.stdout.setEncoding('utf8');
  proc.stdout.on('data', (s: string) => {
    out = out.length > 1 << 20 ? out.slice(-(1 << 16)) + s : out + s;
  });
  const exit = await proc.exited;
  return { out, exit };
}

interface Header {
  header: InputHeader;
  stream: StreamHeader;
}

/** Opens the file with ffmpeg (no decoding) and reads the header of the video stream. */
async function readHeader(file: string, opts: VideoOptions): Promise<Header> {
  checkFile(file);
  const max = maxPixelsOf(file, opts);
  const proc = startFfmpeg(file, [...inputArgs(file, max, 'info'), '-frames:v', '0', '-f', 'null', '-'], opts);
  const { exit } = await runToEnd(proc);
  const err = exitError(file, 'reading the header', proc, exit);
  if (err) throw err;
  const header = parseInputHeader(proc.log);
  const stream = header && selectedVideoStream(header);
  if (!header || !stream) throw new VideoError('no_video_stream', file, `${file}: no video stream found (ffmpeg log: ${errorSummary(proc.log) || 'no header'})`);
  if (stream.width !== undefined && stream.height !== undefined) checkPixels(file, stream.width, stream.height, max);
  return { header, stream };
}

/** print_fps of libavformat's dump: how ffmpeg prints a frame rate. */
function fpsTolerance(text: string): { value: number; tol: number } {
  const k = text.endsWith('k');
  const value = parseFloat(text) * (k ? 1000 : 1);
  const decimals = k ? -3 : (text.split('.')[1] ?? '').length;
  return { value, tol: 0.5 * 10 ** -decimals + 1e-9 };
}

/** The frame rate ffmpeg printed, snapped to k*1000/1001 or an integer when that prints the same. */
function fpsFromText(text: string): { fps: number; rational: [number, number] | null } {
  const { value, tol } = fpsTolerance(text);
  const ntsc = Math.round(value * 1.001);
  if (Number.isInteger(value)) return { fps: value, rational: [value, 1] };
  if (ntsc > 0 && Math.abs((ntsc * 1000) / 1001 - value) <= tol) return { fps: (ntsc * 1000) / 1001, rational: [ntsc * 1000, 1001] };
  return { fps: value, rational: null };
}

interface FpsResult {
  fps: number;
  rational: [number, number] | null;
  source: VideoInfo['fpsSource'];
  sampleCount: number | null;
  warning?: string;
}

function averageFps(file: string, h: Header): FpsResult {
  let warning: string | undefined;
  if (/\bmp4\b|\bmov\b/.test(h.header.format)) {
    const timings = readMp4Timings(file).filter((t) => t.handler === 'vide');
    const t = timings.find((x) => x.trackIndex === h.stream.index) ?? timings[0];
    if (t) {
      const fps = t.fpsNum / t.fpsDen;
      const banner = h.stream.fpsText && fpsTolerance(h.stream.fpsText);
      if (!banner || Math.abs(fps - banner.value) <= banner.tol) {
        return { fps, rational: [t.fpsNum, t.fpsDen], source: 'mp4-stts', sampleCount: t.sampleCount };
      }
      warning = `mp4 sample table gives ${t.fpsNum}/${t.fpsDen} fps but ffmpeg prints ${h.stream.fpsText}; using ffmpeg's value`;
    }
  }
  if (h.stream.fpsText) return { ...fpsFromText(h.stream.fpsText), source: 'ffmpeg-fps', sampleCount: null, warning };
  if (h.stream.tbrText) {
    return { ...fpsFromText(h.stream.tbrText), source: 'ffmpeg-tbr', sampleCount: null,
      warning: 'no average frame rate in the container; using the stream rate (tbr)' };
  }
  return { fps: NaN, rational: null, source: 'none', sampleCount: null, warning: 'ffmpeg reports no frame rate for this stream' };
}

/** Log lines that mean the container itself is cut short or damaged. */
const TRUNCATION = /partial file|Read error|corrupt input packet|ended prematurely|Truncat/i;

/** Decodes the whole stream once and counts frames; throws on damage that loses frames. */
async function decodeCount(file: string, h: Header, declared: number | null, opts: VideoOptions): Promise<{ count: number; warnings: string[] }> {
  const args = [...inputArgs(file, maxPixelsOf(file, opts), 'warning'), ...(await passthroughArgs(file, opts)), '-f', 'null', '-progress', 'pipe:1', '-'];
  const proc = startFfmpeg(file, args, opts);
  const { out, exit } = await runToEnd(proc);
  const frames = [...out.matchAll(/^frame=(\d+)\s*$/gm)];
  const count = frames.length ? Number(frames[frames.length - 1][1]) : 0;
  const lines = proc.log.map(parseLogLine).filter((l) => l.level !== 'info' && l.level !== 'other');
  // ffmpeg exits 69 when decode errors exceed its error rate; with nothing decoded that is
  // 'no_frames', with some frames 'corrupt'.
  const stopped = exit.spawnError !== null || exit.killed !== null;
  if (count === 0 && !stopped && /progress=end/.test(out)) {
    throw new VideoError('no_frames', file, `${file}: the ${h.stream.codec} video stream has no decodable frames` +
      (lines.length ? ` (ffmpeg: ${errorSummary(proc.log)})` : ''));
  }
  const err = exitError(file, 'counting frames', proc, exit);
  if (err) throw err;
  const damage = lines.filter((l) => TRUNCATION.test(l.text) || (l.component === h.header.format && l.level !== 'warning'));
  if (count === 0) throw new VideoError('no_frames', file, `${file}: the ${h.stream.codec} video stream has no decodable frames`);
  if (damage.length) {
    throw new VideoError('corrupt', file, `${file}: truncated or corrupt video: ffmpeg decoded ${count} frames` +
      (declared !== null ? ` of the ${declared} the container declares` : '') + ` and reported: ${damage.slice(0, 3).map((l) => l.text).join('; ')}`);
  }
  const warnings = [...new Set(lines.map((l) => (l.component ? `[${l.component}] ${l.text}` : l.text)))].slice(0, 10);
  return { count, warnings };
}

// ---------------------------------------------------------------------------------------------
// Probe
// ---------------------------------------------------------------------------------------------

/**
 * Frame count, average fps, size and codec of the first video stream of `file`.
 * Throws a VideoError naming the file for a missing file, a non-media file, a file without video,
 * a truncated/corrupt stream, zero decodable frames, a frame above `maxPixels`, a missing ffmpeg,
 * a timeout or an abort.
 */
export async function probeVideo(file: string, opts: ProbeOptions = {}): Promise<VideoInfo> {
  const mode = opts.countFrames ?? 'decode';
  if (mode !== 'decode' && mode !== 'container') throw new VideoError('bad_argument', file, `opts.countFrames must be 'decode' or 'container', got ${JSON.stringify(mode)}`);
  const h = await readHeader(file, opts);
  const fps = averageFps(file, h);
  let count: number, warnings: string[] = [], source: VideoInfo['frameCountSource'] = 'decode';
  if (mode === 'container' && fps.sampleCount !== null && fps.sampleCount > 0) {
    count = fps.sampleCount;
    source = 'container';
  } else {
    ({ count, warnings } = await decodeCount(file, h, fps.sampleCount, opts));
  }
  if (fps.warning) warnings.unshift(fps.warning);
  return {
    file, frameCount: count, avgFps: fps.fps, avgFpsRational: fps.rational, fpsSource: fps.source, frameCountSource: source,
    durationSec: count / fps.fps, containerDurationSec: h.header.durationSec,
    width: h.stream.width ?? 0, height: h.stream.height ?? 0, pixFmt: h.stream.pixFmt ?? null, codec: h.stream.codec,
    container: h.header.format, streamIndex: h.stream.index, warnings,
  };
}

// ---------------------------------------------------------------------------------------------
// Decode
// ---------------------------------------------------------------------------------------------

/** Sorted distinct indices; throws naming the bad entry. */
function checkIndices(file: string, indices: readonly number[]): number[] {
  if (!Array.isArray(indices)) throw new VideoError('bad_argument', file, `${file}: frame indices must be an array of integers`);
  indices.forEach((i, k) => {
    if (!Number.isSafeInteger(i) || i < 0) throw new VideoError('bad_argument', file, `${file}: indices[${k}] = ${i} is not a non-negative integer`);
  });
  return [...new Set(indices)].sort((a, b) => a - b);
}

/**
 * `select` expression over decoded-frame numbers, with consecutive runs as between(). Long sums
 * are grouped into a balanced tree of parenthesised halves: newer ffmpeg builds refuse a flat sum
 * of thousands of terms (expression depth).
 */
export function selectExpression(sorted: readonly number[]): string {
  const terms: string[] = [];
  for (let i = 0; i < sorted.length;) {
    let j = i;
    while (j + 1 < sorted.length && sorted[j + 1] === sorted[j] + 1) j++;
    terms.push(i === j ? `eq(n\\,${sorted[i]})` : `between(n\\,${sorted[i]}\\,${sorted[j]})`);
    i = j + 1;
  }
  const group = (t: string[]): string => {
    if (t.length <= 16) return t.join('+');
    const mid = t.length >> 1;
    return `(${group(t.slice(0, mid))})+(${group(t.slice(mid))})`;
  };
  return group(terms);
}

/** The colour conversion PyAV's to_ndarray('rgb24') performs (see the file header). */
export function rgbFilter(pixFmt: string | null | undefined): string {
  const range = !pixFmt ? '' : /^yuvj/.test(pixFmt) ? ':in_range=pc' : /^(yuv|yuva|nv|p0|p2|y2|uyvy|yuyv|yvyu)/.test(pixFmt) ? ':in_range=tv' : '';
  return `scale=in_color_matrix=bt601${range}:flags=bilinear,format=rgb24`;
}

/** Longest filter graph passed on the command line; longer ones go through -filter_script. */
const MAX_INLINE_FILTER = 32 * 1024;

/** Incremental reader of the `P6 <w> <h> 255` frames ffmpeg's ppm encoder writes back to back. */
class PpmReader {
  private head = Buffer.alloc(0);
  private frame: Uint8Array | null = null;
  private width = 0;
  private height = 0;
  private filled = 0;

  constructor(private readonly file: string, private readonly maxPixels: number) {}

  get midFrame(): boolean {
    return this.frame !== null || this.head.length > 0;
  }

  push(chunk: Buffer, out: RgbImage[]): void {
    let p = 0;
    while (p < chunk.length) {
      if (!this.frame) {
        p = this.readHeader(chunk, p);
        continue;
      }
      const n = Math.min(chunk.length - p, this.frame.length - this.filled);
      this.frame.set(chunk.subarray(p, p + n), this.filled);
      this.filled += n;
      p += n;
      if (this.filled === this.frame.length) {
        out.push({ width: this.width, height: this.height, data: this.frame });
        this.frame = null;
      }
    }
  }

  /** Consumes header bytes from chunk[p..]; returns the new position. */
  private readHeader(chunk: Buffer, p: number): number {
    const take = Math.min(chunk.length - p, 64 - this.head.length);
    const head = Buffer.concat([this.head, chunk.subarray(p, p + take)]);
    const m = /^P6\s+(\d+)\s+(\d+)\s+(\d+)\s/.exec(head.toString('latin1'));
    if (!m) {
      if (head.length >= 64 || !/^P?6?[\s\d]*$/.test(head.toString('latin1'))) {
        throw new VideoError('ffmpeg_failed', this.file, `${this.file}: unexpected output from ffmpeg (not a PPM frame header)`);
      }
      this.head = head;
      return p + take;
    }
    const [w, h, maxval] = [Number(m[1]), Number(m[2]), Number(m[3])];
    if (maxval !== 255) throw new VideoError('ffmpeg_failed', this.file, `${this.file}: ffmpeg wrote ${maxval}-level PPM, expected 8-bit`);
    checkPixels(this.file, w, h, this.maxPixels);
    const used = m[0].length - this.head.length;
    this.head = Buffer.alloc(0);
    this.width = w;
    this.height = h;
    this.frame = new Uint8Array(w * h * 3);
    this.filled = 0;
    return p + used;
  }
}

function indexError(file: string, index: number, count: number): VideoError {
  return new VideoError('index_out_of_range', file, `${file}: frame index ${index} requested but the video has only ` +
    `${count} decodable frames (valid indices 0..${count - 1})`);
}

/**
 * Decodes the frames at `indices` (frame numbers in decode output order, as decord/PyAV count
 * them), yielding each distinct index once, in increasing order, as soon as it is decoded. Only
 * one frame is held at a time; breaking out of the loop kills ffmpeg. The watchdog pauses while the
 * consumer holds a frame. Throws a VideoError naming the file (see probeVideo), including
 * 'index_out_of_range' when an index is past the last decodable frame.
 */
export async function* streamFrames(file: string, indices: readonly number[], opts: DecodeOptions = {}): AsyncGenerator<DecodedFrame, void, undefined> {
  const wanted = checkIndices(file, indices);
  if (!wanted.length) return;
  const maxPixels = maxPixelsOf(file, opts);
  let pixFmt: string | null | undefined;
  if (opts.info) {
    checkFile(file);
    checkPixels(file, opts.info.width, opts.info.height, maxPixels);
    const last = wanted[wanted.length - 1];
    if (last >= opts.info.frameCount) throw indexError(file, last, opts.info.frameCount);
    pixFmt = opts.info.pixFmt;
  } else {
    pixFmt = (await readHeader(file, opts)).stream.pixFmt;
  }
  const graph = `select=${selectExpression(wanted)},${rgbFilter(pixFmt)}`;
  let script: string | null = null;
  if (graph.length > MAX_INLINE_FILTER) {
    script = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'vlm-ffmpeg-')), 'select.txt');
    fs.writeFileSync(script, graph);
  }
  const args = [...inputArgs(file, maxPixels, 'warning'), ...(await passthroughArgs(file, opts)), ...(script ? ['-filter_script:v', script] : ['-vf', graph]),
    '-frames:v', String(wanted.length), '-f', 'image2pipe', '-c:v', 'ppm', '-pix_fmt', 'rgb24', 'pipe:1'];
  let proc: FfmpegProcess | null = null;
  try {
    proc = startFfmpeg(file, args, opts);
    const reader = new PpmReader(file, maxPixels);
    const ready: RgbImage[] = [];
    let k = 0, first: RgbImage | null = null;
    for await (const chunk of proc.stdout as AsyncIterable<Buffer>) {
      reader.push(chunk, ready);
      while (ready.length) {
        const image = ready.shift()!;
        first ??= image;
        if (image.width !== first.width || image.height !== first.height) {
          throw new VideoError('corrupt', file, `${file}: the resolution changes mid-stream (${first.width}x${first.height} -> ` +
            `${image.width}x${image.height}); frame numbers after the change cannot be selected reliably`);
        }
        if (k >= wanted.length) throw new VideoError('ffmpeg_failed', file, `${file}: ffmpeg returned more frames than the ${wanted.length} selected`);
        proc.pauseClock();
        yield { index: wanted[k++], image };
        proc.resumeClock();
      }
    }
    const exit = await proc.exited;
    const err = exitError(file, 'decoding frames', proc, exit);
    if (err) throw err;
    if (reader.midFrame) throw new VideoError('ffmpeg_failed', file, `${file}: ffmpeg output ended inside a frame`);
    if (k < wanted.length) {
      const damage = errorSummary(proc.log);
      const count = opts.info?.frameCount ?? (await probeVideo(file, { ...opts, countFrames: 'decode' })).frameCount;
      const e = indexError(file, wanted[k], count);
      if (damage) e.message += ` (ffmpeg: ${damage})`;
      throw e;
    }
  } finally {
    proc?.kill('done');
    if (script) fs.rmSync(path.dirname(script), { recursive: true, force: true });
  }
}

/**
 * Decodes the frames at `indices` and returns them in the order asked (a repeated index gets its
 * own copy). Memory: the selected frames only. See streamFrames for errors.
 */
export async function decodeFrames(file: string, indices: readonly number[], opts: DecodeOptions = {}): Promise<RgbImage[]> {
  const got = new Map<number, RgbImage>();
  for await (const f of streamFrames(file, indices, opts)) got.set(f.index, f.image);
  const used = new Set<number>();
  return indices.map((i) => {
    const img = got.get(i)!;
    if (!used.has(i)) {
      used.add(i);
      return img;
    }
    return { width: img.width, height: img.height, data: img.data.slice() };
  });
}
