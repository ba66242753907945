/**
 * MiniCPM-V 2.6 video input: the frames the model card's `encode_video` passes to `model.chat` as a
 * list of images (openbmb/MiniCPM-V-2_6 README, "Chat with video"; same code in OpenBMB/MiniCPM-V):
 *
 *     MAX_NUM_FRAMES = 64
 *     vr = VideoReader(video_path, ctx=cpu(0))
 *     sample_fps = round(vr.get_avg_fps() / 1)               # one frame per second
 *     frame_idx = [i for i in range(0, len(vr), sample_fps)]
 *     if len(frame_idx) > MAX_NUM_FRAMES:
 *         frame_idx = uniform_sample(frame_idx, MAX_NUM_FRAMES)  # gap = len/n; int(i*gap + gap/2)
 *
 * Python's round() is half-to-even; a video below 0.5 fps gives sample_fps 0, where upstream's
 * range() raises — we raise a clear error instead. Frame count and fps come from
 * media/video.ts `probeVideo` (decord's len() and get_avg_fps()). Each frame is then
 * processed as an image (the card passes max_slice_nums=2, use_image_id=False; not here).
 */
import { RgbImage } from '../../media/types';
import { loadImage } from '../../media/image';
import { decodeFrames, FfmpegOptions, probeVideo, ProbeOptions, VideoError, VideoInfo, VideoOptions } from '../../media/video';

/** The model card's MAX_NUM_FRAMES ("if cuda OOM set a smaller number"). */
export const MAX_NUM_FRAMES = 64;

/** Python round() for floats: half to even. */
function pyRound(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}

/** The card's `uniform_sample(l, n)`: n items at the centres of n equal gaps of l. */
export function uniformSample<T>(l: readonly T[], n: number): T[] {
  if (!Number.isInteger(n) || n < 1) throw new Error(`uniformSample: n must be a positive integer, got ${n}`);
  const gap = l.length / n;
  return Array.from({ length: n }, (_, i) => l[Math.trunc(i * gap + gap / 2)]);
}

/** Frame indices encode_video decodes for `frameCount` frames at `avgFps`. */
export function minicpmvFrameIndices(frameCount: number, avgFps: number, maxNumFrames = MAX_NUM_FRAMES): number[] {
  if (!Number.isInteger(frameCount) || frameCount < 1) throw new Error(`minicpmvFrameIndices: frameCount must be a positive integer, got ${frameCount}`);
  if (!Number.isInteger(maxNumFrames) || maxNumFrames < 1) throw new Error(`minicpmvFrameIndices: maxNumFrames must be a positive integer, got ${maxNumFrames}`);
  if (!Number.isFinite(avgFps)) throw new Error(`minicpmvFrameIndices: the video's average fps is unknown (${avgFps})`);
  const step = pyRound(avgFps / 1);
  if (step < 1) throw new Error(`minicpmvFrameIndices: average fps ${avgFps} rounds to a sampling step of ${step} frames (upstream range() fails); need >= 0.5 fps`);
  const idx: number[] = [];
  for (let i = 0; i < frameCount; i += step) idx.push(i);
  return idx.length > maxNumFrames ? uniformSample(idx, maxNumFrames) : idx;
}

export interface MiniCpmvVideoOptions extends VideoOptions, FfmpegOptions {
  /** Upper bound on frames (default MAX_NUM_FRAMES = 64). */
  maxNumFrames?: number;
  /** Frame counting for probeVideo (default 'decode'). */
  countFrames?: ProbeOptions['countFrames'];
}

export interface MiniCpmvVideo {
  frameIndices: number[];
  /** One RGB image per index, in order; each is later processed as an image. */
  frames: RgbImage[];
  info: VideoInfo;
}

/** encode_video for a file: probe, select, decode only the selected frames. */
export async function loadMiniCpmvVideoFrames(file: string, opts: MiniCpmvVideoOptions = {}): Promise<MiniCpmvVideo> {
  const info = await probeVideo(file, opts);
  let indices: number[];
  try {
    indices = minicpmvFrameIndices(info.frameCount, info.avgFps, opts.maxNumFrames ?? MAX_NUM_FRAMES);
  } catch (e) {
    throw new VideoError('bad_argument', file, `${file}: ${(e as Error).message}`);
  }
  const frames = await decodeFrames(file, indices, { ...opts, info });
  return { frameIndices: indices, frames, info };
}

/**
 * Frames the caller already decoded, taken as encode_video's 1 fps selection: all of them, or
 * `uniform_sample` down to `maxNumFrames`. Each is checked as an RGB image.
 */
export async function decodedVideoFrames(frames: readonly RgbImage[], maxNumFrames = MAX_NUM_FRAMES, name = 'video'): Promise<RgbImage[]> {
  if (!Number.isInteger(maxNumFrames) || maxNumFrames < 1) throw new Error(`${name}: maxNumFrames must be a positive integer, got ${maxNumFrames}`);
  const idx = Array.from(frames, (_, i) => i);
  const keep = idx.length > maxNumFrames ? uniformSample(idx, maxNumFrames) : idx;
  return Promise.all(keep.map((f) => loadImage(frames[f], { name: `${name} frame ${f}` })));
}
