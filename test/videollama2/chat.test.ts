/**
 * VideoLLaMA 2 / 2.1 chat end to end from the files (PNG, mp4) against the upstream goldens of
 * both tiny fixtures: `input_ids` exact (with the negative placeholder), pixel values equal,
 * greedy ids equal `generate.greedy_ids`, and the returned text equal mm_infer's.
 */
import path from 'node:path';
import { VideoLLaMA2Chat } from '../../models/videollama2/chat';
import { decodeFrames, probeVideo } from '../../media/video';
import { Golden, expectClose, expectSameInts } from '../helpers/golden';
import { modelFixture } from '../helpers/fixtures';
import { expectNoLeak } from '../helpers/memory';

const CASES = ['videollama2_clip_mistral_tiny', 'videollama2_siglip_qwen2_tiny'];

for (const name of CASES) {
  const dir = modelFixture(name)!;
  const meta = require(path.join(dir, 'golden.json'));
  describe(`VideoLLaMA2 chat: ${name}`, () => {
    let chat: VideoLLaMA2Chat;
    let g: Golden;
    beforeAll(async () => {
      chat = await VideoLLaMA2Chat.fromPretrained(dir);
      g = new Golden(path.join(dir, 'golden.safetensors'));
    });
    afterAll(() => {
      chat.dispose();
      g.close();
    });

    for (const modal of ['image', 'video'] as const) {
      it(`${modal}: input_ids, pixel_values, greedy ids and text equal upstream mm_infer`, async () => {
        const file = path.join(dir, modal === 'image' ? 'input_image.png' : 'input_video.mp4');
        const msgs = [{ role: 'user' as const, content: [modal === 'image' ? { type: 'image' as const, image: file } : { type: 'video' as const, video: file }, { type: 'text' as const, text: meta[modal].question }] }];
        const p = await chat.prepare(msgs);
        expect(p.prompt).toBe(meta[modal].prompt);
        expectSameInts(`${modal}.input_ids`, p.inputIds, g.ints(`${modal}.input_ids`));
        if (g.has(`${modal}.pixel_values`)) expectClose(`${modal}.pixel_values`, p.media[0].pixels, g.get(`${modal}.pixel_values`), 1e-6);
        p.media.forEach((m) => m.pixels.dispose());
        const r = await chat.chat(msgs, { maxNewTokens: 8 });
        expectSameInts(`${modal}.generate.greedy_ids`, r.tokenIds, meta[modal].greedy_ids);
        expect(r.text).toBe(meta[modal].mm_infer_return);
      });
    }

    it('video as decoded frames: the file\'s pixel values and greedy ids, frames sampled as the file\'s', async () => {
      const file = path.join(dir, 'input_video.mp4');
      const info = await probeVideo(file);
      const frames = await decodeFrames(file, Array.from({ length: info.frameCount }, (_, i) => i), { info });
      const msgs = [{ role: 'user' as const, content: [{ type: 'video' as const, video: frames }, { type: 'text' as const, text: meta.video.question }] }];
      const p = await chat.prepare(msgs);
      expectSameInts('video.input_ids', p.inputIds, g.ints('video.input_ids'));
      if (g.has('video.pixel_values')) expectClose('video.pixel_values', p.media[0].pixels, g.get('video.pixel_values'), 1e-6);
      p.dispose();
      const r = await chat.chat(msgs, { maxNewTokens: 8 });
      expectSameInts('video.generate.greedy_ids', r.tokenIds, meta.video.greedy_ids);
      // fewer frames than num_frames: refused, naming the message
      const few = [{ role: 'user' as const, content: [{ type: 'video' as const, video: frames.slice(0, 2) }, { type: 'text' as const, text: 'x' }] }];
      await expect(chat.prepare(few)).rejects.toThrow(/message 0 video: the video has 2 frame\(s\), fewer than the \d+ requested/);
      // a frame that is not an RGB image: named
      const bad = [{ role: 'user' as const, content: [{ type: 'video' as const, video: frames.map(() => ({ width: 3 }) as never) }, { type: 'text' as const, text: 'x' }] }];
      await expect(chat.prepare(bad)).rejects.toThrow(/message 0 video frame \d+/);
    });

    it('a whole chat leaves numTensors unchanged', async () => {
      const msgs = [{ role: 'user' as const, content: [{ type: 'image' as const, image: path.join(dir, 'input_image.png') }, { type: 'text' as const, text: 'hi' }] }];
      await expectNoLeak('VideoLLaMA2Chat.chat', () => chat.chat(msgs, { maxNewTokens: 2 }));
      await expectNoLeak('VideoLLaMA2Chat.trace', () => chat.trace(msgs));
    });

    it('bad input: two media, a typed modal token, a missing file', async () => {
      const img = path.join(dir, 'input_image.png');
      await expect(chat.prepare([{ role: 'user', content: [{ type: 'image', image: img }, { type: 'image', image: img }, { type: 'text', text: 'x' }] }])).rejects.toThrow(/one image or one video/);
      await expect(chat.prepare([{ role: 'user', content: '<video>\nx' }])).rejects.toThrow(/reserved modal token/);
      await expect(chat.prepare([{ role: 'user', content: [{ type: 'video', video: '/nope.mp4' }, { type: 'text', text: 'x' }] }])).rejects.toThrow(/\/nope\.mp4/);
    });
  });
}

describe('VideoLLaMA2 chat: a video shorter than num_frames', () => {
  it('is a clear error naming the file and both counts', async () => {
    const dir = modelFixture('videollama2_siglip_qwen2_tiny')!;
    const chat = await VideoLLaMA2Chat.fromPretrained(dir);
    try {
      const file = path.join(dir, 'input_video.mp4'); // 219 frames
      await expect(chat.prepare([{ role: 'user', content: [{ type: 'video', video: file }, { type: 'text', text: 'x' }] }], { numFrames: 300 }))
        .rejects.toThrow(/input_video\.mp4: the video has 219 frame\(s\), fewer than the 300 requested/);
    } finally {
      chat.dispose();
    }
  });
});
