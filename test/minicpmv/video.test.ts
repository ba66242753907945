/**
 * MiniCPM-V 2.6 video frame selection: the model card's encode_video (sample_fps = round(avg_fps),
 * range(0, len, sample_fps), uniform_sample down to MAX_NUM_FRAMES = 64).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadMiniCpmvVideoFrames, MAX_NUM_FRAMES, minicpmvFrameIndices, uniformSample } from '../../models/minicpmv/video';
import { decodeFrames, VideoError } from '../../media/video';
import { sha256, testPattern, VIDEO_FIXTURES } from '../media/video_helpers';

/*
 * Reference Python code (openbmb/MiniCPM-V-2_6 README "Chat with video", with decord's len() and
 * get_avg_fps() replaced by the arguments):
 *
 *   def uniform_sample(l, n):
 *       gap = len(l) / n
 *       idxs = [int(i * gap + gap / 2) for i in range(n)]
 *       return [l[i] for i in idxs]
 *   def enc(n, fps, M=64):
 *       sample_fps = round(fps / 1)
 *       frame_idx = [i for i in range(0, n, sample_fps)]
 *       if len(frame_idx) > M: frame_idx = uniform_sample(frame_idx, M)
 *       return frame_idx
 */
const NTSC = 24000 / 1001;

describe('minicpmvFrameIndices', () => {
  const cases: [string, number, number, number[]][] = [
    ['sample_demo_3 (146 frames @ 23.976)', 146, NTSC, [0, 24, 48, 72, 96, 120, 144]],
    ['sample_demo_9 (219 frames @ 23.976)', 219, NTSC, [0, 24, 48, 72, 96, 120, 144, 168, 192, 216]],
    ['2.5 fps rounds half to even: step 2', 100, 2.5, Array.from({ length: 50 }, (_, i) => 2 * i)],
    ['0.6 fps rounds to step 1', 30, 0.6, Array.from({ length: 30 }, (_, i) => i)],
    ['70 candidates at 2 fps -> uniform_sample to 64', 140, 2,
      [0, 2, 4, 6, 8, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30, 32, 36, 38, 40, 42, 44, 46, 48, 50, 52, 54, 56, 60, 62, 64, 66, 68, 70, 72, 74, 76, 78,
        82, 84, 86, 88, 90, 92, 94, 96, 98, 100, 102, 106, 108, 110, 112, 114, 116, 118, 120, 122, 124, 126, 130, 132, 134, 136, 138]],
    ['4000 frames @ 29.97 -> 64', 4000, 30000 / 1001,
      [30, 90, 150, 210, 270, 330, 390, 450, 510, 570, 630, 720, 780, 840, 900, 960, 1020, 1080, 1140, 1200, 1260, 1350, 1410, 1470, 1530, 1590,
        1650, 1710, 1770, 1830, 1890, 1950, 2040, 2100, 2160, 2220, 2280, 2340, 2400, 2460, 2520, 2580, 2640, 2730, 2790, 2850, 2910, 2970, 3030,
        3090, 3150, 3210, 3270, 3360, 3420, 3480, 3540, 3600, 3660, 3720, 3780, 3840, 3900, 3960]],
  ];
  it.each(cases)('%s', (_name, n, fps, want) => {
    expect(minicpmvFrameIndices(n, fps)).toEqual(want);
    expect(minicpmvFrameIndices(n, fps).length).toBeLessThanOrEqual(MAX_NUM_FRAMES);
  });

  it('uniform_sample', () => {
    // uniform_sample(list(range(10)), 4) -> [1, 3, 6, 8]
    expect(uniformSample([0, 1, 2, 3, 4, 5, 6, 7, 8, 9], 4)).toEqual([1, 3, 6, 8]);
  });

  it('a smaller maxNumFrames', () => {
    // enc(146, 24000/1001, M=4) -> uniform_sample([0, 24, ..., 144], 4): gap 1.75 -> [0, 48, 96, 144]
    expect(minicpmvFrameIndices(146, NTSC, 4)).toEqual([0, 48, 96, 144]);
  });

  it.each([
    ['fps below 0.5 (upstream range() step 0)', () => minicpmvFrameIndices(10, 0.4), /sampling step of 0/],
    ['unknown fps', () => minicpmvFrameIndices(10, NaN), /fps is unknown/],
    ['no frames', () => minicpmvFrameIndices(0, 25), /frameCount/],
    ['bad maxNumFrames', () => minicpmvFrameIndices(10, 25, 0), /maxNumFrames/],
  ])('%s', (_name, fn, msg) => {
    expect(fn).toThrow(msg);
  });
});

describe('loadMiniCpmvVideoFrames', () => {
  it('sample_demo_3.mp4: one frame per second, decoded like any other frame', async () => {
    const file = path.join(VIDEO_FIXTURES, 'sample_demo_3.mp4');
    const v = await loadMiniCpmvVideoFrames(file);
    expect(v.frameIndices).toEqual([0, 24, 48, 72, 96, 120, 144]);
    expect(v.frames.map((f) => [f.width, f.height])).toEqual(v.frameIndices.map(() => [320, 180]));
    expect(v.frames.map(sha256)).toEqual((await decodeFrames(file, v.frameIndices)).map(sha256));
  });

  it('a 70 s clip is cut to 64 frames', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vlm-minicpmv-'));
    try {
      const f = testPattern(dir, 'long.mp4', 140, { fps: 2, size: '32x32' });
      const v = await loadMiniCpmvVideoFrames(f);
      expect(v.info.frameCount).toBe(140);
      expect(v.frameIndices).toEqual(minicpmvFrameIndices(140, 2));
      expect(v.frames).toHaveLength(64);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('errors name the file', async () => {
    const file = path.join(VIDEO_FIXTURES, 'missing.mp4');
    const err = await loadMiniCpmvVideoFrames(file).catch((e) => e);
    expect(err).toBeInstanceOf(VideoError);
    expect(err.message).toContain(file);
  });
});
