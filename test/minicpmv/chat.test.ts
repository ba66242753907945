/**
 * MiniCPM-V chat end to end from the PNG, against the upstream goldens of the tiny fixture:
 * the processor + template + tokenizer reproduce `input_ids` / `image_bound` / `tgt_sizes`, greedy
 * reproduces `generate.greedy_ids`, and chat(sampling=False) reproduces upstream chat's ids
 * (beam 3, repetition penalty 1.2) and its returned text.
 */
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { MiniCPMVChat, userTurn } from '../../models/minicpmv/chat';
import { loadMiniCpmvVideoFrames } from '../../models/minicpmv/video';
import { Golden, expectSameInts, fixture } from '../helpers/golden';
import { modelFixture } from '../helpers/fixtures';
import { expectNoLeak } from '../helpers/memory';

const dir = modelFixture('minicpmv26_tiny')!;
const image = fixture('preprocess', 'minicpmv26_tiny', 'input_image.png');
const golden = require(path.join(fixture('preprocess', 'minicpmv26_tiny'), 'golden.json'));
// Upstream chat's returned text and ids (shared/fixtures/minicpmv26_tiny/golden.json -> generate).
const CHAT_RETURN = '.hph\uFFFD ar</box>s chess';

describe('MiniCPM-V chat (tiny fixture)', () => {
  let chat: MiniCPMVChat;
  let g: Golden;
  beforeAll(async () => {
    chat = await MiniCPMVChat.fromPretrained(dir, { warn: () => undefined });
    g = new Golden(path.join(dir, 'golden.safetensors'));
  });
  afterAll(() => {
    chat.dispose();
    g.close();
  });

  it('builds input_ids, image_bound and tgt_sizes exactly as upstream', async () => {
    const p = await chat.prepare(userTurn('What is in the image?', { images: [image] }));
    expectSameInts('input_ids', p.inputIds, g.ints('input_ids'));
    expectSameInts('image_bound', p.imageBound.flat(), g.ints('image_bound'));
    expectSameInts('tgt_sizes', p.inputs.tgtSizes[0].flat(), g.ints('tgt_sizes'));
    expect(p.images[0].slicedGrid).toEqual(golden.sliced_grid);
  });

  it('greedy ids equal generate.greedy_ids', async () => {
    const r = await chat.chat(userTurn('What is in the image?', { images: [image] }), { greedy: true, maxNewTokens: 8 });
    expectSameInts('generate.greedy_ids', r.tokenIds, g.ints('generate.greedy_ids'));
    expect(r.promptTokens).toBe(170);
  });

  it('chat(sampling=false) equals upstream chat: ids and returned text', async () => {
    let streamed = '';
    const r = await chat.chat(userTurn('What is in the image?', { images: [image] }), { sampling: false, maxNewTokens: 8, onText: (t) => (streamed += t) });
    expectSameInts('generate.chat_beam3_rep1.2_ids', r.tokenIds, g.ints('generate.chat_beam3_rep1.2_ids'));
    expect(r.text).toBe(CHAT_RETURN);
    expect(streamed.trim()).toBe(CHAT_RETURN);
    expect(r.timings.total_ms).toBeGreaterThan(0);
  });

  it('sampling with a seed is reproducible and streams the same text it returns', async () => {
    const msgs = userTurn('What is in the image?', { images: [image] });
    const a = await chat.chat(msgs, { maxNewTokens: 6, seed: 3 });
    const s = chat.chatStream(msgs, { maxNewTokens: 6, seed: 3 });
    let text = '';
    for await (const c of s) text += c;
    const b = await s.result;
    expect(b.tokenIds).toEqual(a.tokenIds);
    expect(text.trim()).toBe(b.text);
  });

  it('several images, multi-turn history and a system prompt', async () => {
    const msgs = [
      { role: 'user' as const, content: [{ type: 'image' as const, image }, { type: 'text' as const, text: 'first' }] },
      { role: 'assistant' as const, content: 'a cat' },
      { role: 'user' as const, content: [{ type: 'image' as const, image }, { type: 'text' as const, text: 'and this one?' }] },
    ];
    const p = await chat.prepare(msgs, { system: 'Be brief.' });
    expect(p.prompt.startsWith('<|im_start|>system\nBe brief.<|im_end|>')).toBe(true);
    expect(p.prompt).toContain('<image_id>0</image_id>');
    expect(p.prompt).toContain('<image_id>1</image_id>');
    expect(p.imageBound.length).toBe(14); // 2 × (source + 6 slices)
    const r = await chat.chat(msgs, { greedy: true, maxNewTokens: 2 });
    expect(r.tokenIds.length).toBeGreaterThan(0);
  });

  it('video: 1 frame per second (≤ 64), each an image with max_slice_nums 2 and no image id', async () => {
    const video = fixture('videollama2_siglip_qwen2_tiny', 'input_video.mp4'); // 219 frames at 23.976 fps
    const p = await chat.prepare(userTurn('Describe the video.', { video }));
    // model card: sample_fps = round(23.976) = 24 → frames 0, 24, …, 216 → 10 images
    expect(p.images.length).toBe(10);
    expect(p.prompt).not.toContain('<image_id>');
    for (const im of p.images) expect(im.pixelValues.length).toBeLessThanOrEqual(3); // source + ≤ 2 slices
    expect(p.prompt.split('(<image>./</image>)').length).toBe(1);
  });

  it('video as decoded frames: taken as sampled (the file\'s 10 frames give the same prompt and pixels), uniform_sample beyond maxVideoFrames', async () => {
    const file = fixture('videollama2_siglip_qwen2_tiny', 'input_video.mp4');
    const fromFile = await chat.prepare(userTurn('Describe the video.', { video: file }));
    const sampled = await loadMiniCpmvVideoFrames(file);
    const fromFrames = await chat.prepare(userTurn('Describe the video.', { video: sampled.frames }));
    expect(fromFrames.inputIds).toEqual(fromFile.inputIds);
    expect(fromFrames.images.length).toBe(10);
    const bytes = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);
    fromFrames.images.forEach((im, i) => im.pixelValues.forEach((pv, j) => expect(bytes(pv.data).equals(bytes(fromFile.images[i].pixelValues[j].data))).toBe(true)));
    // 10 frames, at most 4: uniform_sample picks 1, 3, 6, 8 (gap 2.5)
    const four = await chat.prepare(userTurn('Describe the video.', { video: sampled.frames }), { maxVideoFrames: 4 });
    expect(four.images.length).toBe(4);
    [1, 3, 6, 8].forEach((f, i) => expect(bytes(four.images[i].pixelValues[0].data).equals(bytes(fromFile.images[f].pixelValues[0].data))).toBe(true));
    for (const p of [fromFile, fromFrames, four]) p.dispose();
    await expect(chat.prepare(userTurn('x', { video: [{ width: 1 } as never] }))).rejects.toThrow(/message 0 video frame 0/);
  });

  it('a whole chat leaves tf.memory().numTensors unchanged', async () => {
    const msgs = userTurn('What is in the image?', { images: [image] });
    await expectNoLeak('MiniCPMVChat.chat greedy', () => chat.chat(msgs, { greedy: true, maxNewTokens: 3 }));
    await expectNoLeak('MiniCPMVChat.chat beams', () => chat.chat(msgs, { sampling: false, maxNewTokens: 3 }));
    await expectNoLeak('MiniCPMVChat.trace', () => chat.trace(msgs));
  });

  it('trace writes the golden-named tensors', async () => {
    const t = await chat.trace(userTurn('What is in the image?', { images: [image] }));
    for (const name of ['input_ids', 'image_bound', 'tgt_sizes', 'pixel_values.0', 'pixel_values.6', 'vpm.last_hidden_state', 'resampler.out',
      'llm.inputs_embeds', 'llm.layer0', 'llm.layer_last', 'llm.norm', 'llm.logits']) expect(t.has(name)).toBe(true);
    expect(t.get('llm.logits')!.shape).toEqual([1, 170, 1024]);
    expect(tf.memory().numTensors).toBeGreaterThan(0);
  });

  it('bad input: a missing image file, an image tag typed in the text, an empty conversation', async () => {
    await expect(chat.prepare(userTurn('x', { images: ['/nonexistent/cat.png'] }))).rejects.toThrow(/\/nonexistent\/cat\.png/);
    await expect(chat.prepare([{ role: 'user', content: 'look: (<image>./</image>)' }])).rejects.toThrow(/reserved image tag/);
    await expect(chat.prepare([])).rejects.toThrow(/messages is empty/);
    await expect(chat.prepare([{ role: 'assistant', content: 'hi' }])).rejects.toThrow(/first message/);
    await expect(chat.prepare(userTurn('What is in the image?', { images: [image] }), { maxInpLength: 100 })).rejects.toThrow(/prompt of 170 tokens is longer than max_inp_length = 100/);
    await expect(chat.prepare(userTurn('word '.repeat(3000)))).rejects.toThrow(/exceeds max_position_embeddings = 4096/);
  });
});
