/**
 * Every bad-input path of the video decoder: a clear VideoError naming the file (or the binary),
 * with the right code, and no ffmpeg left running.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { decodeFrames, probeVideo, streamFrames, VideoError, VideoErrorCode } from '../../media/video';
import { FFMPEG_ENV, FFMPEG_TIMEOUT_ENV } from '../../media/ffmpeg';
import { ffmpegChildren, makeVideo, testPattern } from './video_helpers';

let dir: string;
let good: string; // 48 frames, 64x48, moov at the end
let fast: string; // the same with +faststart (moov first)
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vlm-video-bad-'));
  good = testPattern(dir, 'good.mp4', 48);
  fast = testPattern(dir, 'fast.mp4', 48, { extra: ['-movflags', '+faststart'] });
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
afterEach(() => expect(ffmpegChildren()).toEqual([]));

/** Expects `p` to reject with a VideoError of `code` (or one of several) whose message contains every `parts`. */
async function rejects(p: Promise<unknown>, code: VideoErrorCode | VideoErrorCode[], ...parts: (string | RegExp)[]): Promise<VideoError> {
  let err: unknown;
  try {
    await p;
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(VideoError);
  const ve = err as VideoError;
  if (![code].flat().includes(ve.code)) throw new Error(`expected code ${code}, got ${ve.code}: ${ve.message}`);
  for (const part of parts) expect(ve.message).toMatch(part);
  return ve;
}

function write(name: string, data: string | Buffer): string {
  const p = path.join(dir, name);
  fs.writeFileSync(p, data);
  return p;
}

describe('files that are not videos', () => {
  it('missing file', async () => {
    const p = path.join(dir, 'nope.mp4');
    await rejects(probeVideo(p), 'not_found', p, /not found/);
    await rejects(decodeFrames(p, [0]), 'not_found', p);
  });

  it('a directory', async () => {
    await rejects(probeVideo(dir), 'not_found', dir, /not a regular file/);
  });

  it('an empty file', async () => {
    const p = write('empty.mp4', '');
    await rejects(probeVideo(p), 'not_media', p, /empty/);
  });

  it('a text file named .mp4', async () => {
    const p = write('notes.mp4', 'hello, this is not a video\n');
    await rejects(probeVideo(p), 'not_media', p, /not a readable video/);
    await rejects(decodeFrames(p, [0]), 'not_media', p);
  });

  it('random bytes in an unknown container', async () => {
    const bytes = Buffer.alloc(4096);
    for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 2654435761) >>> 24;
    const p = write('noise.mkv', bytes);
    await rejects(probeVideo(p), 'not_media', p, /could not open it as a media container/);
  });

  it('a container without video: audio-only wav, subtitles', async () => {
    const wav = makeVideo(dir, 'tone.wav', ['-f', 'lavfi', '-i', 'sine=duration=0.5']);
    await rejects(probeVideo(wav), 'no_video_stream', wav, /no video stream/, /Audio \(pcm_s16le\)/);
    const srt = write('subs.srt', '1\n00:00:00,000 --> 00:00:01,000\nhello\n');
    await rejects(decodeFrames(srt, [0]), 'no_video_stream', srt);
  });
});

describe('damaged videos', () => {
  it('truncated mp4 without its index (moov at the end, cut off)', async () => {
    const data = fs.readFileSync(good);
    const p = write('cut.mp4', data.subarray(0, data.length >> 1));
    await rejects(probeVideo(p), 'corrupt', p, /moov atom/, /cut off/);
  });

  it('truncated faststart mp4: frames missing at the end', async () => {
    const data = fs.readFileSync(fast);
    const p = write('cutfast.mp4', data.subarray(0, Math.floor(data.length * 0.6)));
    await rejects(probeVideo(p), 'corrupt', p, /truncated or corrupt/, /of the 48 the container declares/, /partial file/);
  });

  it('garbled frame data', async () => {
    const data = Buffer.from(fs.readFileSync(fast));
    const mdat = data.indexOf('mdat');
    for (let i = mdat + 200; i < data.length; i += 7) data[i] = (i * 131) & 255;
    const p = write('garbled.mp4', data);
    // FFmpeg 4.x conceals a few frames, then gives up past its error rate; 5.x decodes none.
    await rejects(probeVideo(p), ['corrupt', 'no_frames'], p, /corrupt|no decodable frames/);
  });

  it('a video stream with zero decodable frames (every keyframe removed)', async () => {
    const p = makeVideo(dir, 'noidr.mp4', ['-f', 'lavfi', '-i', 'testsrc=size=64x48:rate=10', '-frames:v', '20',
      '-c:v', 'libx264', '-pix_fmt', 'yuv420p', '-g', '1000', '-bsf:v', 'filter_units=remove_types=5']);
    await rejects(probeVideo(p), 'no_frames', p, /no decodable frames/);
  });
});

describe('file names', () => {
  it("odd names decode: quotes, spaces, pipes, a leading dash, a relative 'pipe:0'", async () => {
    for (const name of ["it's a clip.mp4", 'a|b.mp4', '-dash.mp4', 'concat:x.mp4']) {
      const p = path.join(dir, name);
      fs.copyFileSync(good, p);
      expect((await probeVideo(p)).frameCount).toBe(48);
    }
    const cwd = process.cwd();
    try {
      fs.copyFileSync(good, path.join(dir, 'pipe:0'));
      process.chdir(dir);
      expect((await decodeFrames('pipe:0', [0, 47]))).toHaveLength(2);
    } finally {
      process.chdir(cwd);
    }
  });
});

describe('frame indices', () => {
  it('more frames requested than the video has (probed and not)', async () => {
    await rejects(decodeFrames(good, [3, 48]), 'index_out_of_range', good, /frame index 48/, /only 48 decodable frames/);
    const info = await probeVideo(good);
    await rejects(decodeFrames(good, [47, 100], { info }), 'index_out_of_range', good, /frame index 100/, /0\.\.47/);
  });

  it('bad index values name the entry', async () => {
    await rejects(decodeFrames(good, [0, -1]), 'bad_argument', good, /indices\[1\] = -1/);
    await rejects(decodeFrames(good, [1.5]), 'bad_argument', good, /indices\[0\] = 1.5/);
    await rejects(decodeFrames(good, [NaN]), 'bad_argument', /indices\[0\] = NaN/);
  });
});

describe('resolution limit', () => {
  it('refuses frames above opts.maxPixels before decoding', async () => {
    await rejects(probeVideo(good, { maxPixels: 1000 }), 'too_large', good, /64x48/, /3072 pixels/, /limit of 1000/);
    await rejects(decodeFrames(good, [0], { maxPixels: 1000 }), 'too_large', good);
  });

  it('refuses a 5000x4000 video under the default limit (4096*4096)', async () => {
    const p = makeVideo(dir, 'huge.mkv', ['-f', 'lavfi', '-i', 'color=c=gray:size=5000x4000', '-frames:v', '1', '-c:v', 'mjpeg', '-pix_fmt', 'yuvj420p']);
    await rejects(probeVideo(p), 'too_large', p, /5000x4000/, /16777216/, /not downscaled|refused/);
  });

  it('rejects a bad maxPixels', async () => {
    await rejects(probeVideo(good, { maxPixels: 0 }), 'bad_argument', /maxPixels/);
  });
});

describe('the ffmpeg process', () => {
  const saved = { ...process.env };
  afterEach(() => {
    process.env[FFMPEG_ENV] = saved[FFMPEG_ENV];
    process.env[FFMPEG_TIMEOUT_ENV] = saved[FFMPEG_TIMEOUT_ENV];
    if (saved[FFMPEG_ENV] === undefined) delete process.env[FFMPEG_ENV];
    if (saved[FFMPEG_TIMEOUT_ENV] === undefined) delete process.env[FFMPEG_TIMEOUT_ENV];
  });

  it(`missing binary: $${FFMPEG_ENV} pointing nowhere`, async () => {
    process.env[FFMPEG_ENV] = path.join(dir, 'no-such-ffmpeg');
    await rejects(probeVideo(good), 'ffmpeg_missing', FFMPEG_ENV, 'no-such-ffmpeg', /does not exist/);
    await rejects(decodeFrames(good, [0]), 'ffmpeg_missing', 'no-such-ffmpeg');
  });

  it('missing binary: opts.ffmpegPath pointing nowhere; a binary that cannot run', async () => {
    await rejects(probeVideo(good, { ffmpegPath: '/nonexistent/ffmpeg' }), 'ffmpeg_missing', 'opts.ffmpegPath', '/nonexistent/ffmpeg');
    const notExec = write('not-exec-ffmpeg', 'just text');
    await rejects(probeVideo(good, { ffmpegPath: notExec }), 'ffmpeg_missing', good, /cannot run ffmpeg/, /EACCES/);
  });

  it('a hung ffmpeg is killed at the timeout', async () => {
    const hung = write('hung-ffmpeg.sh', '#!/bin/sh\nexec sleep 30\n');
    fs.chmodSync(hung, 0o755);
    const t0 = Date.now();
    await rejects(probeVideo(good, { ffmpegPath: hung, timeoutMs: 300 }), 'timeout', good, /within 300 ms/, FFMPEG_TIMEOUT_ENV);
    expect(Date.now() - t0).toBeLessThan(5000);
  });

  it('timeout from the environment; a bad value is refused', async () => {
    process.env[FFMPEG_TIMEOUT_ENV] = '1';
    await rejects(probeVideo(good), 'timeout', good, /within 1 ms/);
    process.env[FFMPEG_TIMEOUT_ENV] = 'soon';
    await rejects(probeVideo(good), 'bad_argument', FFMPEG_TIMEOUT_ENV);
  });

  it('abort: before the start and while decoding', async () => {
    await rejects(probeVideo(good, { signal: AbortSignal.abort() }), 'aborted', good);
    const ac = new AbortController();
    const big = testPattern(dir, 'abort.mp4', 20, { size: '640x480' });
    const frames: number[] = [];
    const run = (async () => {
      for await (const f of streamFrames(big, [0, 5, 10, 15], { signal: ac.signal })) {
        frames.push(f.index);
        ac.abort();
        await new Promise((r) => setTimeout(r, 50));
      }
    })();
    const e = await rejects(run, 'aborted', big);
    expect(e.name).toBe('AbortError');
    expect(frames).toEqual([0]);
  });

  it('rejects an unknown countFrames mode', async () => {
    await rejects(probeVideo(good, { countFrames: 'guess' as 'decode' }), 'bad_argument', /countFrames/);
  });
});
