/**
 * `vlm chat --json` and `vlm trace --out` contracts, run in-process on the bundled tiny models:
 * the JSON object's keys, and every traced tensor equal to the upstream golden of the same name
 * (ids exact, floats within max relative error 1e-4).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { runStdout } from '../helpers/cli';
import { command as chat } from '../../scripts/chat';
import { command as trace } from '../../scripts/trace';
import { Golden, expectClose, expectSameInts, fixture, readAll } from '../helpers/golden';
import { modelFixture } from '../helpers/fixtures';

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vlm-cli-'));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const run = runStdout;

const INT_NAMES = new Set(['input_ids', 'image_bound', 'tgt_sizes']);

/** Compares every tensor of `out` that the golden also has (with a name prefix for the golden). */
function compareTrace(out: string, goldenFile: string, prefix: string, expected: string[]): void {
  const t = readAll(out);
  for (const name of expected) expect(Object.keys(t)).toContain(name);
  const g = new Golden(goldenFile);
  try {
    for (const [name, ours] of Object.entries(t)) {
      const gname = prefix + name;
      if (!g.has(gname)) continue;
      if (INT_NAMES.has(name)) expectSameInts(gname, ours.data, g.ints(gname));
      else expectClose(gname, ours, g.get(gname), 1e-4);
    }
  } finally {
    g.close();
  }
}

describe('MiniCPM-V CLI', () => {
  const model = modelFixture('minicpmv26_tiny')!;
  const image = fixture('preprocess', 'minicpmv26_tiny', 'input_image.png');

  it('vlm trace writes the golden names, equal to upstream', async () => {
    const out = path.join(tmp, 'minicpmv.safetensors');
    await run(trace, ['--model', model, '--image', image, '--prompt', 'What is in the image?', '--out', out]);
    compareTrace(out, path.join(model, 'golden.safetensors'), '', ['input_ids', 'image_bound', 'tgt_sizes', 'pixel_values.0',
      'vpm.last_hidden_state', 'resampler.out', 'llm.inputs_embeds', 'llm.layer0', 'llm.layer_last', 'llm.norm', 'llm.logits']);
  });

  it('vlm chat --json prints one object with text, token_ids, prompt_tokens and timings', async () => {
    const s = await run(chat, ['--model', model, '--image', image, '--prompt', 'What is in the image?', '--max-new-tokens', '8', '--num-beams', '3', '--json']);
    expect(s.trim().split('\n')).toHaveLength(1);
    const j = JSON.parse(s);
    expect(j).toEqual(expect.objectContaining({ text: '.hph\uFFFD ar</box>s chess', token_ids: [860, 759, 225, 796, 1008, 82, 521, 433], prompt_tokens: 170 }));
    expect(Object.keys(j.timings)).toEqual(expect.arrayContaining(['preprocess_ms', 'vision_ms', 'prefill_ms', 'decode_ms', 'total_ms']));
    const g = await run(chat, ['--model', model, '--image', image, '--prompt', 'What is in the image?', '--max-new-tokens', '8', '--greedy', '--json']);
    expect(JSON.parse(g).token_ids).toEqual([860, 759, 225, 796, 82, 759, 225, 796]);
  });

  it('bad arguments are clear errors naming the flag or file', async () => {
    await expect(run(chat, ['--model', model, '--prompt', 'x', '--max-new-tokens', '0'])).rejects.toThrow(/--max-new-tokens: must be >= 1, got 0/);
    await expect(run(chat, ['--model', model, '--prompt', 'x', '--temperature', 'hot'])).rejects.toThrow(/--temperature: expected a number, got 'hot'/);
    await expect(run(chat, ['--model', model, '--prompt', 'x', '--greedy', '--num-beams', '2'])).rejects.toThrow(/--greedy cannot be combined/);
    await expect(run(chat, ['--model', model, '--image', '/nope.png', '--prompt', 'x'])).rejects.toThrow(/\/nope\.png: no such file/);
    await expect(run(chat, ['--model', '/nope-dir', '--prompt', 'x'])).rejects.toThrow(/--model: \/nope-dir does not exist/);
    await expect(run(chat, ['--model', model, '--image', image])).rejects.toThrow(/--prompt is required/);
    await expect(run(trace, ['--model', model, '--image', image, '--prompt', 'x'])).rejects.toThrow(/--out is required/);
  });
});

describe.each(['videollama2_clip_mistral_tiny', 'videollama2_siglip_qwen2_tiny'])('VideoLLaMA 2 CLI: %s', (name) => {
  const model = modelFixture(name)!;
  const meta = require(path.join(model, 'golden.json'));

  it.each(['image', 'video'] as const)('vlm trace --%s writes the golden names, equal to upstream', async (modal) => {
    const out = path.join(tmp, `${name}-${modal}.safetensors`);
    const file = path.join(model, modal === 'image' ? 'input_image.png' : 'input_video.mp4');
    await run(trace, ['--model', model, `--${modal}`, file, '--prompt', meta[modal].question, '--out', out]);
    compareTrace(out, path.join(model, 'golden.safetensors'), `${modal}.`, ['input_ids', 'pixel_values', 'vision_tower.out', 'stc.s1', 'stc.sampler',
      'stc.s2', 'stc.readout', 'llm.inputs_embeds', 'llm.layer0', 'llm.layer_last', 'llm.norm', 'llm.logits']);
  });

  it('vlm chat --video --json reproduces the greedy ids and text', async () => {
    const s = await run(chat, ['--model', model, '--video', path.join(model, 'input_video.mp4'), '--prompt', meta.video.question, '--max-new-tokens', '8', '--json']);
    const j = JSON.parse(s);
    expect(j.token_ids).toEqual(meta.video.greedy_ids);
    expect(j.text).toBe(meta.video.mm_infer_return);
  });
});
