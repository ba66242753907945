/**
 * Test-only helpers: the bundled video goldens (test/fixtures/video, see its README) and small
 * synthetic videos made with the same ffmpeg binary the library resolves.
 */
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fixture } from '../helpers/golden';
import { resolveFfmpeg } from '../../media/ffmpeg';
import { RgbImage } from '../../media/types';

export const VIDEO_FIXTURES = fixture('video');

export interface SamplingCase {
  kwargs: { num_frames: number | null; s?: number; e?: number };
  frame_indices: number[];
  kept_after_MAX_FRAMES: number;
}

export interface VideoGolden {
  videos: Record<string, { decoded_frames: number; avg_fps: number; frame_size_hw: [number, number]; sampling: Record<string, SamplingCase> }>;
  raw_frames_u8_uniform8: { file: string; frame_indices: number[]; shape: number[]; sha256: string[] };
  tiny: Record<string, { file: string; source: string; decoded_frames: number; avg_fps: number; num_frames: number;
    frame_indices: number[]; raw_frames_u8: { shape: number[]; sha256: string[] } }>;
}

export const golden: VideoGolden = JSON.parse(fs.readFileSync(path.join(VIDEO_FIXTURES, 'golden.json'), 'utf8'));

export const sha256 = (img: RgbImage): string => crypto.createHash('sha256').update(img.data).digest('hex');

/** Runs the resolved ffmpeg to write `name` in `dir` from lavfi/encoder `args`; returns the path. */
export function makeVideo(dir: string, name: string, args: string[]): string {
  const out = path.join(dir, name);
  execFileSync(resolveFfmpeg().path, ['-nostdin', '-v', 'error', ...args, '-y', out], { stdio: ['ignore', 'ignore', 'pipe'] });
  return out;
}

/** A yuv420p H.264 test pattern (default 64x48 at 10 fps) of `frames` frames. */
export function testPattern(dir: string, name: string, frames: number, o: { fps?: number | string; size?: string; extra?: string[] } = {}): string {
  return makeVideo(dir, name, ['-f', 'lavfi', '-i', `testsrc=size=${o.size ?? '64x48'}:rate=${o.fps ?? 10}`, '-frames:v', String(frames),
    '-c:v', 'libx264', '-preset', 'ultrafast', '-pix_fmt', 'yuv420p', ...(o.extra ?? [])]);
}

/** Max |a − b| over two same-shaped RGB frame lists laid out [N, H, W, 3] in `ref`. */
export function maxLsb(frames: RgbImage[], ref: Uint8Array): number {
  let max = 0, off = 0;
  for (const f of frames) {
    for (let i = 0; i < f.data.length; i++) max = Math.max(max, Math.abs(f.data[i] - ref[off + i]));
    off += f.data.length;
  }
  if (off !== ref.length) throw new Error(`frames hold ${off} bytes, reference ${ref.length}`);
  return max;
}

/** ffmpeg children of this process (Linux /proc), to check nothing is left running. */
export function ffmpegChildren(): number[] {
  if (process.platform !== 'linux') return [];
  const out: number[] = [];
  for (const pid of fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
      const m = /^\d+ \((.*)\) \S+ (\d+)/.exec(stat);
      if (m && m[1] === 'ffmpeg' && Number(m[2]) === process.pid) out.push(Number(pid));
    } catch { /* exited meanwhile */ }
  }
  return out;
}
