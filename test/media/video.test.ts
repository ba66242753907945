/**
 * Video probing and decoding against what upstream saw (PyAV/decord via FFmpeg): frame counts,
 * average fps, and decoded RGB frames bit-exact with the stored upstream frames.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { itIf, shared } from '../helpers/golden';
import { SafetensorsFile } from '../../weights/safetensors';
import { decodeFrames, probeVideo, rgbFilter, selectExpression, streamFrames } from '../../media/video';
import { reduceRational } from '../../media/mp4_fps';
import { resolveFfmpeg } from '../../media/ffmpeg';
import { ffmpegChildren, golden, maxLsb, sha256, testPattern, VIDEO_FIXTURES } from './video_helpers';

const demo3 = path.join(VIDEO_FIXTURES, 'sample_demo_3.mp4');
const demo9 = shared('fixtures', 'videollama2_preprocess', 'sample_demo_9.mp4');
const rawFrames = shared('fixtures', 'videollama2_preprocess', 'raw_frames.safetensors');

let dir: string;
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vlm-video-'));
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('probeVideo: frame count and average fps as upstream saw them', () => {
  const cases: [string, string, { decoded_frames: number; avg_fps: number; hw: [number, number] }][] = [
    ['sample_demo_3.mp4', demo3, { ...golden.videos['sample_demo_3.mp4'], hw: golden.videos['sample_demo_3.mp4'].frame_size_hw }],
    ...Object.entries(golden.tiny).map(([k, t]) => [k, path.join(VIDEO_FIXTURES, t.file), { ...t, hw: [0, 0] as [number, number] }] as [string, string, { decoded_frames: number; avg_fps: number; hw: [number, number] }]),
  ];
  it.each(cases)('%s', async (_name, file, want) => {
    const info = await probeVideo(file);
    expect(info.frameCount).toBe(want.decoded_frames);
    expect(info.avgFps).toBe(want.avg_fps); // 24000/1001 as a double, exactly
    expect(info.avgFpsRational).toEqual([24000, 1001]);
    expect(info.fpsSource).toBe('mp4-stts');
    expect(info.durationSec).toBeCloseTo(want.decoded_frames / want.avg_fps, 12);
    if (want.hw[0]) expect([info.height, info.width]).toEqual(want.hw);
    expect(info.warnings).toEqual([]);
  });

  itIf(demo9)('sample_demo_9.mp4 (shared fixture, 596x336 with an audio track)', async () => {
    const info = await probeVideo(demo9!);
    const want = golden.videos['sample_demo_9.mp4'];
    expect(info.frameCount).toBe(want.decoded_frames);
    expect(info.avgFps).toBe(want.avg_fps);
    expect([info.height, info.width]).toEqual(want.frame_size_hw);
  });

  it("countFrames: 'container' reads the mp4 sample table without decoding and agrees here", async () => {
    const info = await probeVideo(demo3, { countFrames: 'container' });
    expect(info.frameCountSource).toBe('container');
    expect(info.frameCount).toBe(146);
  });

  it('VFR mp4: avg fps = frames / total stts duration, frame count by decoding', async () => {
    // Keep frames 0-9 and then every 3rd of a 10 fps pattern: timestamps become irregular.
    const src = testPattern(dir, 'src.mp4', 60);
    const vfr = path.join(dir, 'vfr.mp4');
    execFileSync(resolveFfmpeg().path, ['-nostdin', '-v', 'error', '-i', src, '-vf', 'select=lt(n\\,10)+not(mod(n\\,3))',
      '-vsync', 'vfr', '-c:v', 'libx264', '-preset', 'ultrafast', '-pix_fmt', 'yuv420p', '-y', vfr]);
    const info = await probeVideo(vfr);
    // 10 + |{n in 10..59 : n % 3 == 0}| = 10 + |{12, 15, ..., 57}| = 10 + 16 frames
    expect(info.frameCount).toBe(26);
    expect(info.fpsSource).toBe('mp4-stts');
    // Frames at 0.0..0.9 s and 1.2..5.7 s, the last one 0.3 s long: 26 frames / 5.8 s = 130/29
    // (ffmpeg's own dump of vfr.mp4 prints "4.48 fps, 10 tbr": the average, not the stream rate).
    expect(info.avgFpsRational).toEqual([130, 29]);
  });

  it('non-mp4 container: fps from the ffmpeg dump, snapped to the exact NTSC rate', async () => {
    const mkv = testPattern(dir, 'ntsc.mkv', 30, { fps: '30000/1001' });
    const info = await probeVideo(mkv);
    expect(info.fpsSource).toBe('ffmpeg-fps');
    expect(info.avgFpsRational).toEqual([30000, 1001]);
    expect(info.frameCount).toBe(30);
  });
});

describe('decodeFrames: pixels equal the upstream-decoded frames (0 LSB)', () => {
  it('sample_demo_3.mp4 uniform_8 frames (bundled sha256 of raw_frames_u8_uniform8)', async () => {
    const g = golden.raw_frames_u8_uniform8;
    const frames = await decodeFrames(demo3, g.frame_indices);
    expect(frames.map((f) => [f.height, f.width])).toEqual(g.frame_indices.map(() => g.shape.slice(1, 3)));
    expect(frames.map(sha256)).toEqual(g.sha256);
  });

  it.each(Object.entries(golden.tiny))('%s input_video.mp4 frames (bundled sha256 of video.raw_frames_u8)', async (_k, t) => {
    const file = path.join(VIDEO_FIXTURES, t.file);
    const frames = await decodeFrames(file, t.frame_indices, { info: await probeVideo(file) });
    expect(frames[0].height).toBe(t.raw_frames_u8.shape[1]);
    expect(frames[0].width).toBe(t.raw_frames_u8.shape[2]);
    expect(frames.map(sha256)).toEqual(t.raw_frames_u8.sha256);
  });

  itIf(rawFrames)('max LSB difference vs raw_frames.safetensors is 0 (shared fixture)', async () => {
    const ref = SafetensorsFile.open(rawFrames!).read('raw_frames_u8_uniform8').data as Uint8Array;
    const frames = await decodeFrames(demo3, golden.raw_frames_u8_uniform8.frame_indices);
    expect(maxLsb(frames, ref)).toBe(0);
  });

  for (const [k, t] of Object.entries(golden.tiny)) {
    const g = shared('fixtures', k, 'golden.safetensors');
    itIf(g)(`max LSB difference vs ${k} video.raw_frames_u8 is 0 (shared fixture)`, async () => {
      const ref = SafetensorsFile.open(g!).read('video.raw_frames_u8').data as Uint8Array;
      const frames = await decodeFrames(path.join(VIDEO_FIXTURES, t.file), t.frame_indices);
      expect(maxLsb(frames, ref)).toBe(0);
    });
  }

  it('returns frames in the order asked, repeats as separate copies', async () => {
    const want = golden.raw_frames_u8_uniform8;
    const frames = await decodeFrames(demo3, [want.frame_indices[3], want.frame_indices[0], want.frame_indices[3]]);
    expect(frames.map(sha256)).toEqual([want.sha256[3], want.sha256[0], want.sha256[3]]);
    expect(frames[0].data).not.toBe(frames[2].data);
  });

  it('an empty index list decodes nothing', async () => {
    expect(await decodeFrames(demo3, [])).toEqual([]);
  });

  it('16 frames of the 320x180 clip: probe + decode well under a second', async () => {
    const idx = golden.videos['sample_demo_3.mp4'].sampling.uniform_16.frame_indices;
    await decodeFrames(demo3, idx.slice(0, 1)); // warm the page cache
    const t0 = performance.now();
    const info = await probeVideo(demo3);
    const t1 = performance.now();
    const frames = await decodeFrames(demo3, idx, { info });
    const t2 = performance.now();
    expect(frames).toHaveLength(16);
    console.log(`sample_demo_3.mp4 320x180: probe ${(t1 - t0).toFixed(0)} ms, decode 16 frames ${(t2 - t1).toFixed(0)} ms`);
    expect(t2 - t0).toBeLessThan(3000); // generous for a shared 2-core box; typically ~200 ms
  });
});

describe('streamFrames', () => {
  it('yields each distinct index once, in increasing order', async () => {
    const got: number[] = [];
    const hashes: Record<number, string> = {};
    for await (const f of streamFrames(demo3, [45, 9, 27, 9])) {
      got.push(f.index);
      hashes[f.index] = sha256(f.image);
    }
    expect(got).toEqual([9, 27, 45]);
    const g = golden.raw_frames_u8_uniform8;
    expect([hashes[9], hashes[27], hashes[45]]).toEqual(g.sha256.slice(0, 3));
  });

  it('stopping early kills ffmpeg (which is blocked on the full pipe meanwhile)', async () => {
    // 640x480 rgb24 frames are 900 KB: ffmpeg cannot finish on its own while we hold frame 0.
    const big = testPattern(dir, 'big.mp4', 30, { size: '640x480' });
    for await (const f of streamFrames(big, [0, 10, 20, 29])) {
      await new Promise((r) => setTimeout(r, 200));
      expect(ffmpegChildren()).toHaveLength(1);
      expect(f.index).toBe(0);
      break;
    }
    await new Promise((r) => setTimeout(r, 100));
    expect(ffmpegChildren()).toEqual([]);
  });

  it('contiguous runs decode every frame of the run', async () => {
    const all = await decodeFrames(demo3, [0, 1, 2, 3, 10]);
    const one = await decodeFrames(demo3, [2]);
    expect(all).toHaveLength(5);
    expect(sha256(all[2])).toBe(sha256(one[0]));
    expect(sha256(all[0])).not.toBe(sha256(all[1]));
  });
});

describe('filter construction', () => {
  it('select expression compresses runs', () => {
    expect(selectExpression([3])).toBe('eq(n\\,3)');
    expect(selectExpression([0, 1, 2, 5, 7, 8])).toBe('between(n\\,0\\,2)+eq(n\\,5)+between(n\\,7\\,8)');
  });

  it('colour conversion: BT.601 always, range from the pixel format', () => {
    expect(rgbFilter('yuv420p')).toBe('scale=in_color_matrix=bt601:in_range=tv:flags=bilinear,format=rgb24');
    expect(rgbFilter('yuvj420p')).toBe('scale=in_color_matrix=bt601:in_range=pc:flags=bilinear,format=rgb24');
    expect(rgbFilter('rgb24')).toBe('scale=in_color_matrix=bt601:flags=bilinear,format=rgb24');
    expect(rgbFilter(null)).toBe('scale=in_color_matrix=bt601:flags=bilinear,format=rgb24');
  });

  it('a selection too long for the command line goes through -filter_script', async () => {
    // 3000 isolated indices -> ~36 KB of select expression (> the 32 KB inline limit).
    const f = testPattern(dir, 'many.mp4', 6000, { fps: 100 });
    const odd = Array.from({ length: 3000 }, (_, i) => 2 * i + 1);
    expect(selectExpression(odd).length).toBeGreaterThan(32 * 1024);
    const frames = await decodeFrames(f, odd);
    const some = await decodeFrames(f, [1, 5997, 5999]);
    expect(frames).toHaveLength(3000);
    expect([frames[0], frames[2998], frames[2999]].map(sha256)).toEqual(some.map(sha256));
  });
});

describe('mp4 avg_frame_rate reduction', () => {
  it('reduces exactly when it fits, like av_reduce', () => {
    expect(reduceRational(24000n * 146n, 1001n * 146n)).toEqual([24000, 1001]);
    expect(reduceRational(90000n * 30n, 90000n)).toEqual([30, 1]);
  });

  it('bounded continued fraction when it does not fit in INT_MAX', () => {
    // (3·2^40 + 1) / 2^40 = [3; 2^40]: convergent 3/1, the next one overflows and the best
    // semiconvergent (x = floor((2^31 − 2) / 3)) is not closer, so av_reduce keeps 3/1.
    expect(reduceRational(3n * 2n ** 40n + 1n, 2n ** 40n)).toEqual([3, 1]);
    const [n, d] = reduceRational(314159265358979n, 10n ** 14n);
    expect(n).toBeLessThanOrEqual(2 ** 31 - 1);
    expect(d).toBeLessThanOrEqual(2 ** 31 - 1);
    expect(Math.abs(n / d - Math.PI)).toBeLessThan(1e-14);
  });
});
