/**
 * VideoLLaMA2 frame selection (upstream mm_utils.frame_sample / process_video, c0bb03a) against the
 * upstream goldens, plus edge cases computed with the upstream code itself.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { frameSample, loadVideoLlama2Frames, MAX_FRAMES, NUM_FRAMES, videoLlama2FrameIndices } from '../../models/videollama2/frames';
import { VideoError } from '../../media/video';
import { golden, sha256, testPattern, VIDEO_FIXTURES } from '../media/video_helpers';

/*
 * Reference Python code for the hand-written cases below (upstream functions, numpy 2.4):
 *
 *   from videollama2.mm_utils import frame_sample          # c0bb03a, verbatim
 *   def idx(n, fps, s=None, e=None, num_frames=8):         # process_video steps 2-3 + MAX_FRAMES
 *       if s is not None and e is not None:
 *           s = s if s >= 0. else 0.; e = e if e >= 0. else 0.
 *           if s > e: s, e = e, s
 *           elif s == e: e = s + 1
 *       f_start = 0 if s is None else max(int(s * fps) - 1, 0)
 *       f_end = n - 1 if e is None else min(int(e * fps) - 1, n - 1)
 *       fi = list(range(f_start, f_end + 1))
 *       mode = dict(mode='fps', fps=fps) if num_frames is None else dict(mode='uniform', num_frames=num_frames)
 *       return [int(fi[i]) for i in frame_sample(len(fi), **mode)][:32]
 */
const NTSC = 24000 / 1001;

describe('golden sampling cases (videollama2_preprocess/golden.json)', () => {
  for (const [file, v] of Object.entries(golden.videos)) {
    for (const [name, c] of Object.entries(v.sampling)) {
      it(`${file} ${name}`, () => {
        const got = videoLlama2FrameIndices(v.decoded_frames, v.avg_fps, {
          numFrames: c.kwargs.num_frames, start: c.kwargs.s, end: c.kwargs.e,
        });
        expect(got).toEqual(c.frame_indices);
        expect(got).toHaveLength(c.kept_after_MAX_FRAMES);
      });
    }
  }

  it.each(Object.entries(golden.tiny))('%s: 16 uniform frames', (_k, t) => {
    expect(videoLlama2FrameIndices(t.decoded_frames, t.avg_fps, { numFrames: t.num_frames })).toEqual(t.frame_indices);
  });
});

describe('edge cases (values from the reference code above)', () => {
  const cases: [string, number, number, Parameters<typeof videoLlama2FrameIndices>[2], number[]][] = [
    ['default num_frames is NUM_FRAMES = 8', 146, NTSC, {}, [9, 27, 45, 63, 82, 100, 118, 136]],
    ['1-frame video', 1, 30, {}, [0, 0, 0, 0, 0, 0, 0, 0]],
    ['3 frames, 8 samples: repeats', 3, 30, {}, [0, 0, 1, 1, 1, 1, 2, 2]],
    ['10 frames, 5 samples', 10, 30, { numFrames: 5 }, [1, 3, 5, 6, 8]],
    ['4 frames, 3 samples', 4, 30, { numFrames: 3 }, [1, 2, 3]],
    ['fps mode, 29.97 fps, 40 s: cut to MAX_FRAMES', 1200, 30000 / 1001, { numFrames: null },
      [14, 43, 72, 101, 130, 159, 188, 217, 246, 275, 304, 333, 362, 391, 420, 449, 478, 507, 536, 565, 594, 623, 652, 681, 710, 739, 768, 797, 826, 855, 884, 913]],
    ['fps mode, shorter than a second', 10, 30, { numFrames: null }, [5]],
    ['fps mode, 12.5 fps', 100, 12.5, { numFrames: null }, [6, 18, 30, 42, 54, 66, 78, 90]],
    ['fps mode, 1.5 fps: one frame per frame, cut to 32', 50, 1.5, { numFrames: null }, Array.from({ length: 32 }, (_, i) => i)],
    ['64 uniform frames: cut to the first 32', 300, 25, { numFrames: 64 },
      [2, 7, 12, 16, 21, 26, 30, 35, 40, 44, 49, 54, 58, 63, 68, 72, 77, 82, 86, 91, 96, 100, 105, 110, 114, 119, 124, 128, 133, 138, 142, 147]],
    ['window s > e is swapped', 146, NTSC, { start: 3.5, end: 1.0 }, [26, 33, 41, 48, 56, 63, 71, 78]],
    ['window s == e gets e = s + 1', 146, NTSC, { start: 2, end: 2 }, [48, 51, 54, 57, 60, 63, 66, 69]],
    ['window with negative s clamps to 0', 146, NTSC, { start: -1, end: 0.5, numFrames: 4 }, [1, 4, 6, 9]],
    ['window with only e', 146, NTSC, { end: 2, numFrames: 4 }, [6, 17, 29, 40]],
    ['window with only s', 146, NTSC, { start: 5, numFrames: 4 }, [121, 128, 135, 142]],
    ['window past the end, fps mode', 146, NTSC, { start: 1, end: 100, numFrames: null }, [33, 56, 79, 102, 125]],
  ];
  it.each(cases)('%s', (_name, n, fps, opts, want) => {
    expect(videoLlama2FrameIndices(n, fps, opts)).toEqual(want);
  });

  it('constants', () => {
    expect([NUM_FRAMES, MAX_FRAMES]).toEqual([8, 32]);
  });

  it('frameSample on its own', () => {
    // frame_sample(146, 'uniform', num_frames=8); frame_sample(146, 'fps', fps=24000/1001)
    expect(frameSample(146, 'uniform', { numFrames: 8 })).toEqual([9, 27, 45, 63, 82, 100, 118, 136]);
    expect(frameSample(146, 'fps', { fps: NTSC })).toEqual([11, 34, 57, 80, 103, 126]);
  });
});

describe('bad arguments', () => {
  it.each([
    ['empty window', () => videoLlama2FrameIndices(146, NTSC, { start: 10, end: 20 }), /no frame/],
    ['zero frames', () => videoLlama2FrameIndices(0, NTSC), /frameCount/],
    ['numFrames 0', () => videoLlama2FrameIndices(146, NTSC, { numFrames: 0 }), /numFrames/],
    ['fps below 1 in fps mode', () => videoLlama2FrameIndices(146, 0.5, { numFrames: null }), /segment of 0 frames/],
    ['no fps for a window', () => videoLlama2FrameIndices(146, NaN, { start: 1, end: 2 }), /positive fps/],
    ['non-finite window', () => videoLlama2FrameIndices(146, NTSC, { start: Infinity, end: 2 }), /start must be a finite/],
    ['unknown mode', () => frameSample(10, 'random' as 'fps', {}), /unsupported mode/],
  ])('%s', (_name, fn, msg) => {
    expect(fn).toThrow(msg);
  });
});

describe('loadVideoLlama2Frames: probe + sample + decode', () => {
  it('the tiny clip_mistral fixture: README indices and upstream pixels', async () => {
    const t = golden.tiny.videollama2_clip_mistral_tiny;
    const v = await loadVideoLlama2Frames(path.join(VIDEO_FIXTURES, t.file), { numFrames: 16 });
    expect(v.info.frameCount).toBe(146);
    expect(v.frameIndices).toEqual(t.frame_indices);
    expect(v.frames.map(sha256)).toEqual(t.raw_frames_u8.sha256);
  });

  it('sample_demo_3.mp4 with the default 8 frames: the raw_frames golden', async () => {
    const g = golden.raw_frames_u8_uniform8;
    const v = await loadVideoLlama2Frames(path.join(VIDEO_FIXTURES, g.file));
    expect(v.frameIndices).toEqual(g.frame_indices);
    expect(v.frames.map(sha256)).toEqual(g.sha256);
  });

  it('an empty window is a VideoError naming the file', async () => {
    const file = path.join(VIDEO_FIXTURES, 'sample_demo_3.mp4');
    const err = await loadVideoLlama2Frames(file, { start: 50, end: 60 }).catch((e) => e);
    expect(err).toBeInstanceOf(VideoError);
    expect(err.message).toContain(file);
    expect(err.message).toMatch(/no frame/);
  });

  it('.gif inputs use fps 25 and ascending unique frames, as the upstream gif branch', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vlm-gif-'));
    try {
      // 3 frames, 8 uniform samples -> [0, 0, 1, 1, 1, 1, 2, 2] -> kept once each: [0, 1, 2].
      const gif = testPattern(dir, 'clip.gif', 3, { extra: ['-c:v', 'gif', '-pix_fmt', 'rgb8'] });
      const v = await loadVideoLlama2Frames(gif);
      expect(v.frameIndices).toEqual([0, 1, 2]);
      expect(v.frames).toHaveLength(3);
      // fps mode with fps 25 on 3 frames: seg = min(25, 3) = 3 -> arange(1, 3, 3) = [1].
      expect((await loadVideoLlama2Frames(gif, { numFrames: null })).frameIndices).toEqual([1]);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
