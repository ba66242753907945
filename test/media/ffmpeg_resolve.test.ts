/**
 * Which ffmpeg runs: opts.ffmpegPath > $VLM_FFMPEG > the @ffmpeg-installer/ffmpeg binary > ffmpeg on
 * PATH, and a clear error when there is none.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { FFMPEG_ENV, resolveFfmpeg, VideoError } from '../../media/ffmpeg';
import { golden, VIDEO_FIXTURES } from './video_helpers';

type FfmpegModule = typeof import('../../media/ffmpeg');
type VideoModule = typeof import('../../media/video');

const saved = { env: process.env[FFMPEG_ENV], path: process.env.PATH };
let dir: string;
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vlm-ffbin-'));
});
afterEach(() => {
  if (saved.env === undefined) delete process.env[FFMPEG_ENV];
  else process.env[FFMPEG_ENV] = saved.env;
  process.env.PATH = saved.path;
  jest.dontMock('@ffmpeg-installer/ffmpeg');
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

it('order: option, then env, then the npm binary', () => {
  delete process.env[FFMPEG_ENV];
  const npm = resolveFfmpeg();
  expect(npm.source).toBe('npm');
  expect(npm.path).toBe(require('@ffmpeg-installer/ffmpeg').path);
  process.env[FFMPEG_ENV] = npm.path;
  expect(resolveFfmpeg().source).toBe('env');
  expect(resolveFfmpeg(npm.path).source).toBe('option');
});

it('falls back to ffmpeg on PATH when the npm package has no binary, and decodes with it', async () => {
  delete process.env[FFMPEG_ENV];
  const real = resolveFfmpeg().path;
  const bin = path.join(dir, 'bin');
  fs.mkdirSync(bin);
  fs.symlinkSync(real, path.join(bin, 'ffmpeg'));
  await jest.isolateModulesAsync(async () => {
    jest.doMock('@ffmpeg-installer/ffmpeg', () => {
      throw new Error('Unsupported platform/architecture');
    });
    const ff: FfmpegModule = require('../../media/ffmpeg');
    const video: VideoModule = require('../../media/video');
    process.env.PATH = bin;
    expect(ff.resolveFfmpeg()).toEqual({ path: path.join(bin, 'ffmpeg'), source: 'path' });
    const info = await video.probeVideo(path.join(VIDEO_FIXTURES, 'sample_demo_3.mp4'));
    expect(info.frameCount).toBe(golden.videos['sample_demo_3.mp4'].decoded_frames);

    process.env.PATH = path.join(dir, 'empty');
    let err: unknown;
    try {
      ff.resolveFfmpeg();
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ff.VideoError);
    expect((err as VideoError).code).toBe('ffmpeg_missing');
    expect((err as VideoError).message).toMatch(/no ffmpeg on PATH/);
    expect((err as VideoError).message).toContain(FFMPEG_ENV);
  });
});
