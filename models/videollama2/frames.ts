/**
 * VideoLLaMA2 frame selection: which frames of a video the model sees.
 *
 * Mirrors DAMO-NLP-SG/VideoLLaMA2 @ c0bb03abf6b8a6b9a8dccac006fb4db5d4d9e414,
 * `videollama2/mm_utils.py` (`frame_sample`, `process_video` steps 1-4 and the MAX_FRAMES cut) and
 * `videollama2/constants.py` (NUM_FRAMES, MAX_FRAMES, NUM_FRAMES_PER_SECOND). Frame numbers are
 * decord's (decoded-frame order), the frame count and average fps are `len(vr)` and
 * `vr.get_avg_fps()`: media/video.ts `probeVideo` reproduces both.
 *
 * Numerics copied on purpose:
 * - uniform: seg = (duration − 1) / num_frames; frame i = np.round((seg·i + seg·(i+1)) / 2 + 1e-6),
 *   numpy rounding = half to even, in float64 like numpy;
 * - fps: seg = min(fps // 1, duration); np.arange(seg // 2, duration, seg, dtype=int), whose
 *   integer fill is v0 + k·(int(v0 + seg) − int(v0)) over ceil((duration − seg//2) / seg) items;
 * - window: f_start = max(int(s·fps) − 1, 0), f_end = min(int(e·fps) − 1, n − 1) (int truncates);
 *   s/e are clamped at 0, swapped when s > e, and e = s + 1 when equal — only when both are given;
 * - MAX_FRAMES = 32: the first 32 sampled frames are kept (after sampling, not by resampling).
 * Not mirrored: the `.gif` branch's pixels (read here through ffmpeg, not imageio; only its fps = 25
 * and ascending unique order are), frame directories, and the zero-frame padding loop (which
 * cannot trigger for a video file: uniform sampling always returns num_frames indices).
 */
import { RgbImage } from '../../media/types';
import { decodeFrames, FfmpegOptions, probeVideo, ProbeOptions, VideoError, VideoInfo, VideoOptions } from '../../media/video';

/** Upstream `NUM_FRAMES`: process_video's default num_frames (checkpoints set 16 in config.json). */
export const NUM_FRAMES = 8;
/** Upstream `MAX_FRAMES`: frames kept after sampling. */
export const MAX_FRAMES = 32;
/** Upstream `NUM_FRAMES_PER_SECOND`: fps-mode rate. */
export const NUM_FRAMES_PER_SECOND = 1;
/** process_video's fps for `.gif` inputs (upstream hard-codes it; imageio reports none). */
export const GIF_FPS = 25;

/** numpy's round(): half to even. */
function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** np.arange(start, stop, step, dtype=int) for step > 0, with numpy's integer fill. */
function arangeInt(start: number, stop: number, step: number): number[] {
  const len = Math.ceil((stop - start) / step);
  if (!(len > 0)) return [];
  const v0 = Math.trunc(start), delta = Math.trunc(start + step) - v0;
  return Array.from({ length: len }, (_, k) => v0 + k * delta);
}

/**
 * Upstream `frame_sample(duration, mode, num_frames, fps)`: positions (0-based, relative to the
 * window) of the frames to take from `duration` frames.
 */
export function frameSample(duration: number, mode: 'uniform' | 'fps', opts: { numFrames?: number; fps?: number }): number[] {
  if (!Number.isInteger(duration) || duration < 1) throw new Error(`frameSample: duration must be a positive frame count, got ${duration}`);
  if (mode === 'uniform') {
    const n = opts.numFrames;
    if (!Number.isInteger(n) || n! < 1) throw new Error(`frameSample: numFrames must be a positive integer for uniform sampling, got ${n}`);
    const seg = (duration - 1) / n!;
    return Array.from({ length: n! }, (_, i) => roundHalfEven((seg * i + seg * (i + 1)) / 2 + 1e-6));
  }
  if (mode === 'fps') {
    const fps = opts.fps;
    if (fps === undefined || !Number.isFinite(fps)) throw new Error(`frameSample: fps must be a finite number for fps sampling, got ${fps}`);
    const seg = Math.min(Math.floor(fps / NUM_FRAMES_PER_SECOND), duration);
    if (!(seg > 0)) throw new Error(`frameSample: fps ${fps} gives a segment of ${seg} frames (upstream divides by zero); fps must be >= ${NUM_FRAMES_PER_SECOND}`);
    return arangeInt(Math.floor(seg / 2), duration, seg);
  }
  throw new Error(`frameSample: unsupported mode ${JSON.stringify(mode)} (expected 'uniform' or 'fps')`);
}

export interface VideoLlama2SampleOptions {
  /** Frames to sample uniformly (default NUM_FRAMES = 8); null = one frame per second (fps mode). */
  numFrames?: number | null;
  /** Window start in seconds (upstream `s`). */
  start?: number | null;
  /** Window end in seconds (upstream `e`). */
  end?: number | null;
  /** Frames kept after sampling (default MAX_FRAMES = 32). */
  maxFrames?: number;
}

/**
 * Frame indices process_video decodes for a video of `frameCount` frames at `fps` (steps 2-3 of
 * process_video plus the MAX_FRAMES cut). Throws when the window holds no frame.
 */
export function videoLlama2FrameIndices(frameCount: number, fps: number, opts: VideoLlama2SampleOptions = {}): number[] {
  if (!Number.isInteger(frameCount) || frameCount < 1) throw new Error(`videoLlama2FrameIndices: frameCount must be a positive integer, got ${frameCount}`);
  const maxFrames = opts.maxFrames ?? MAX_FRAMES;
  if (!Number.isInteger(maxFrames) || maxFrames < 1) throw new Error(`videoLlama2FrameIndices: maxFrames must be a positive integer, got ${maxFrames}`);
  let s = opts.start ?? null, e = opts.end ?? null;
  for (const [k, v] of [['start', s], ['end', e]] as const) {
    if (v !== null && !Number.isFinite(v)) throw new Error(`videoLlama2FrameIndices: ${k} must be a finite number of seconds, got ${v}`);
  }
  if (s !== null && e !== null) {
    s = s >= 0 ? s : 0;
    e = e >= 0 ? e : 0;
    if (s > e) [s, e] = [e, s];
    else if (s === e) e = s + 1;
  }
  const needsFps = s !== null || e !== null || opts.numFrames === null;
  if (needsFps && !(Number.isFinite(fps) && fps > 0)) throw new Error(`videoLlama2FrameIndices: a positive fps is needed for a time window or fps mode, got ${fps}`);
  const fStart = s === null ? 0 : Math.max(Math.trunc(s * fps) - 1, 0);
  const fEnd = e === null ? frameCount - 1 : Math.min(Math.trunc(e * fps) - 1, frameCount - 1);
  const duration = fEnd - fStart + 1;
  if (duration < 1) {
    throw new Error(`videoLlama2FrameIndices: the window start=${opts.start} s, end=${opts.end} s selects frames ` +
      `${fStart}..${fEnd} of a ${frameCount}-frame video at ${fps} fps: no frame`);
  }
  const pos = opts.numFrames === null
    ? frameSample(duration, 'fps', { fps })
    : frameSample(duration, 'uniform', { numFrames: opts.numFrames ?? NUM_FRAMES });
  return pos.map((i) => fStart + i).slice(0, maxFrames);
}

export interface VideoLlama2VideoOptions extends VideoLlama2SampleOptions, VideoOptions, FfmpegOptions {
  /** Frame counting for probeVideo (default 'decode'). */
  countFrames?: ProbeOptions['countFrames'];
  /** A probeVideo result for this file (skips probing again). */
  info?: VideoInfo;
}

export interface SampledVideo {
  /** Decoded frame numbers, in the order of `frames`. */
  frameIndices: number[];
  frames: RgbImage[];
  info: VideoInfo;
}

/**
 * process_video steps 1-4 and the MAX_FRAMES cut for a video file: probe, sample, decode only the
 * sampled frames. The frames then go to the image processor (not here).
 */
export async function loadVideoLlama2Frames(file: string, opts: VideoLlama2VideoOptions = {}): Promise<SampledVideo> {
  const info = opts.info ?? (await probeVideo(file, opts));
  const gif = file.endsWith('.gif');
  let indices: number[];
  try {
    indices = videoLlama2FrameIndices(info.frameCount, gif ? GIF_FPS : info.avgFps, opts);
  } catch (e) {
    throw new VideoError('bad_argument', file, `${file}: ${(e as Error).message}`);
  }
  // The gif branch keeps frames by membership while iterating: ascending, without repeats.
  if (gif) indices = [...new Set(indices)].sort((a, b) => a - b);
  const frames = await decodeFrames(file, indices, { ...opts, info });
  return { frameIndices: indices, frames, info };
}
