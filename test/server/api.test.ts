/**
 * `vlm serve` API on the tiny fixtures, in-process: the official `openai` client (plain and
 * streaming) gets the token ids of `vlm chat --json --greedy`; the routes; every kind of bad
 * input is an OpenAI-style 4xx naming the field; auth; media limits; file:// sandboxing.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import OpenAI from 'openai';
import { VlmServer, startServer } from '../../server/app';
import { loadChatModel } from '../../models/registry';
import { IMAGE, MINICPM, VIDEO, VL2_MISTRAL, VL2_QWEN, cliChatJson, dataUrl, pngHeaderOnly } from './helpers';

let server: VlmServer;
let client: OpenAI;
let tmp: string;

beforeAll(async () => {
  tmp = fs.realpathSync(fs.mkdtempSync(path.join(os.tmpdir(), 'vlm-serve-test-')));
  fs.copyFileSync(IMAGE, path.join(tmp, 'image.png'));
  fs.mkdirSync(path.join(tmp, 'sub'));
  fs.symlinkSync('/etc/passwd', path.join(tmp, 'sub', 'escape.png'));
  server = await startServer({
    models: [{ dir: MINICPM }, { dir: VL2_QWEN }, { dir: VL2_MISTRAL }],
    port: 0, maxTokens: 64, allowFiles: tmp, maxImagePixels: 4096 * 4096, maxVideoSeconds: 60, onInternalError: () => undefined,
  });
  await server.ready;
  client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'unused', maxRetries: 0 });
});
afterAll(async () => {
  await server?.shutdown();
  fs.rmSync(tmp, { recursive: true, force: true });
});

const post = (body: unknown, headers: Record<string, string> = { 'content-type': 'application/json' }, url = server.url) =>
  fetch(`${url}/v1/chat/completions`, { method: 'POST', headers, body: typeof body === 'string' ? body : JSON.stringify(body) });

async function expectError(res: Response, status: number, param: string | null, code?: string | RegExp): Promise<{ message: string }> {
  const text = await res.text();
  expect({ status: res.status, text }).toEqual({ status, text: expect.any(String) });
  const j = JSON.parse(text);
  expect(Object.keys(j)).toEqual(['error']);
  expect(Object.keys(j.error).sort()).toEqual(['code', 'message', 'param', 'type']);
  expect(j.error.param).toBe(param);
  if (code) expect(j.error.code).toMatch(code);
  expect(text).not.toMatch(/at .*\.(ts|js):\d+/); // never a stack trace
  return j.error;
}

const imageTurn = (text: string, url = dataUrl(IMAGE, 'image/png')) => [{ role: 'user' as const, content: [{ type: 'image_url' as const, image_url: { url } }, { type: 'text' as const, text }] }];

describe('greedy parity with vlm chat --json --greedy (openai client)', () => {
  const cases: [string, string, string][] = [
    ['minicpmv26_tiny', MINICPM, IMAGE],
    ['videollama2_siglip_qwen2_tiny', VL2_QWEN, IMAGE],
    ['videollama2_clip_mistral_tiny', VL2_MISTRAL, IMAGE],
  ];
  it.each(cases)('%s: non-streaming and streaming give the CLI ids', async (id, dir, image) => {
    const cli = await cliChatJson(['--model', dir, '--image', image, '--prompt', 'What is in the image?', '--max-new-tokens', '8', '--greedy']);
    const req = { model: id, messages: imageTurn('What is in the image?'), max_tokens: 8, temperature: 0, repetition_penalty: 1 };
    const r = await client.chat.completions.create(req);
    const ext = (r as unknown as { x_tfjs_vlm: { token_ids: number[] } }).x_tfjs_vlm;
    expect(ext.token_ids).toEqual(cli.token_ids);
    expect((r.choices[0] as unknown as { token_ids: number[] }).token_ids).toEqual(cli.token_ids);
    expect(r.choices[0].message.content).toBe(cli.text);
    expect(r.object).toBe('chat.completion');
    expect(r.model).toBe(id);
    expect(r.usage).toEqual({ prompt_tokens: cli.prompt_tokens, completion_tokens: cli.token_ids.length, total_tokens: cli.prompt_tokens + cli.token_ids.length });

    const stream = await client.chat.completions.create({ ...req, stream: true, stream_options: { include_usage: true } });
    let text = '';
    let ids: number[] = [];
    let finish: string | null = null;
    let usage: unknown = null;
    for await (const c of stream) {
      expect(c.object).toBe('chat.completion.chunk');
      if (c.choices[0]?.delta?.content) text += c.choices[0].delta.content;
      if (c.choices[0]?.finish_reason) {
        finish = c.choices[0].finish_reason;
        ids = (c as unknown as { x_tfjs_vlm: { token_ids: number[] } }).x_tfjs_vlm.token_ids;
      }
      if (c.usage) usage = c.usage;
    }
    expect(ids).toEqual(cli.token_ids);
    expect(text.trim()).toBe(cli.text);
    expect(finish).toBe(r.choices[0].finish_reason);
    expect(usage).toEqual(r.usage);
  });

  it('multi-turn, multi-image and a system prompt run', async () => {
    const url = dataUrl(IMAGE, 'image/png');
    const r = await client.chat.completions.create({
      model: 'minicpmv26_tiny', max_tokens: 4, temperature: 0,
      messages: [
        { role: 'system', content: 'Be brief.' },
        { role: 'user', content: [{ type: 'image_url', image_url: { url } }, { type: 'image_url', image_url: { url } }, { type: 'text', text: 'Compare.' }] },
        { role: 'assistant', content: 'They are the same.' },
        { role: 'user', content: 'Sure?' },
      ],
    });
    expect(r.choices[0].message.role).toBe('assistant');
    expect(r.usage!.completion_tokens).toBeGreaterThan(0);
  });

  it('sampling with a seed is reproducible; stop strings are cut', async () => {
    const req = { model: 'minicpmv26_tiny', messages: imageTurn('Hi'), max_tokens: 6, temperature: 0.9, top_p: 0.9, top_k: 20, seed: 7 };
    const a = await client.chat.completions.create(req);
    const b = await client.chat.completions.create(req);
    expect(a.choices[0].message.content).toBe(b.choices[0].message.content);
    const full = await client.chat.completions.create({ model: 'minicpmv26_tiny', messages: imageTurn('What is in the image?'), max_tokens: 8, temperature: 0 });
    const stop = full.choices[0].message.content!.slice(3, 5);
    const cut = await client.chat.completions.create({ model: 'minicpmv26_tiny', messages: imageTurn('What is in the image?'), max_tokens: 8, temperature: 0, stop: [stop] });
    expect(cut.choices[0].message.content).toBe(full.choices[0].message.content!.slice(0, full.choices[0].message.content!.indexOf(stop)));
    expect(cut.choices[0].finish_reason).toBe('stop');
  });

  it('videos: video_url and {type: video} parts', async () => {
    const url = dataUrl(VIDEO, 'video/mp4');
    for (const part of [{ type: 'video_url', video_url: { url } }, { type: 'video', video: url }]) {
      const res = await post({ model: 'videollama2_siglip_qwen2_tiny', max_tokens: 4, temperature: 0, messages: [{ role: 'user', content: [part, { type: 'text', text: 'What happens?' }] }] });
      expect(res.status).toBe(200);
      const j = await res.json();
      expect(j.x_tfjs_vlm.token_ids.length).toBeGreaterThan(0);
    }
  });
});

describe('routes', () => {
  it('/v1/models lists the ids that `model` accepts; /health; /metrics', async () => {
    const models = await client.models.list();
    expect(models.data.map((m) => m.id)).toEqual(['minicpmv26_tiny', 'videollama2_siglip_qwen2_tiny', 'videollama2_clip_mistral_tiny']);
    const h = await (await fetch(`${server.url}/health`)).json();
    expect(h).toEqual(expect.objectContaining({ status: 'ok', tf_tensors: expect.any(Number) }));
    const m = await (await fetch(`${server.url}/metrics`)).text();
    for (const name of ['vlm_requests_total', 'vlm_queue_length', 'vlm_prefill_seconds_bucket', 'vlm_decode_seconds_bucket', 'vlm_vision_seconds_bucket',
      'vlm_prompt_seconds_bucket', 'vlm_decode_tokens_per_second_bucket', 'vlm_errors_total', 'vlm_tf_tensors', 'process_resident_memory_bytes']) {
      expect(m).toContain(name);
    }
    const page = await fetch(`${server.url}/`);
    expect(page.headers.get('content-type')).toMatch(/text\/html/);
  });
});

describe('bad input: OpenAI-style 4xx naming the field', () => {
  const ok = { model: 'minicpmv26_tiny', messages: [{ role: 'user', content: 'hi' }], max_tokens: 2 };
  it.each([
    ['malformed JSON', '{"model": ', 400, null, 'invalid_json'],
    ['empty messages', { ...ok, messages: [] }, 400, 'messages', 'invalid_value'],
    ['missing messages', { model: 'minicpmv26_tiny' }, 400, 'messages', 'invalid_value'],
    ['bad role', { ...ok, messages: [{ role: 'robot', content: 'x' }] }, 400, 'messages[0].role', 'invalid_value'],
    ['unknown part type', { ...ok, messages: [{ role: 'user', content: [{ type: 'audio', audio: 'x' }] }] }, 400, 'messages[0].content[0].type', 'invalid_value'],
    ['image_url without url', { ...ok, messages: [{ role: 'user', content: [{ type: 'image_url', image_url: {} }] }] }, 400, 'messages[0].content[0].image_url.url', 'invalid_value'],
    ['max_tokens as a string', { ...ok, max_tokens: '5' }, 400, 'max_tokens', 'invalid_value'],
    ['max_tokens over the cap', { ...ok, max_tokens: 65 }, 400, 'max_tokens', 'max_tokens_exceeded'],
    ['temperature < 0', { ...ok, temperature: -1 }, 400, 'temperature', 'invalid_value'],
    ['top_p 0', { ...ok, top_p: 0 }, 400, 'top_p', 'invalid_value'],
    ['n = 2', { ...ok, n: 2 }, 400, 'n', 'invalid_value'],
    ['five stop strings', { ...ok, stop: ['a', 'b', 'c', 'd', 'e'] }, 400, 'stop', 'invalid_value'],
    ['unknown model', { ...ok, model: 'gpt-4o' }, 404, 'model', 'model_not_found'],
    ['assistant first', { ...ok, messages: [{ role: 'assistant', content: 'x' }] }, 400, 'messages', null],
    ['http image URL', { ...ok, messages: imageTurn('x', 'http://127.0.0.1:1/a.png') }, 400, 'messages[0].content[0].image_url.url', 'remote_urls_disabled'],
    ['bad data URL', { ...ok, messages: imageTurn('x', 'data:image/png,abc') }, 400, 'messages[0].content[0].image_url.url', 'invalid_url'],
    ['not an image', { ...ok, messages: imageTurn('x', `data:image/png;base64,${Buffer.from('hello world').toString('base64')}`) }, 415, 'messages[0].content[0].image_url.url', 'invalid_image'],
    ['decompression bomb', { ...ok, messages: imageTurn('x', `data:image/png;base64,${pngHeaderOnly(60000, 60000).toString('base64')}`) }, 413, 'messages[0].content[0].image_url.url', 'image_too_large'],
    ['a video that is not a video', { ...ok, messages: [{ role: 'user', content: [{ type: 'video', video: `data:video/mp4;base64,${Buffer.from('not a video at all').toString('base64')}` }, { type: 'text', text: 'x' }] }] }, 400, 'messages[0].content[0].video', 'invalid_video'],
    ['file URL outside --allow-files', { ...ok, messages: imageTurn('x', 'file:///etc/passwd') }, 403, 'messages[0].content[0].image_url.url', 'file_not_allowed'],
    ['file URL with ..', { ...ok, messages: imageTurn('x', 'FILE_DIR/sub/../../../etc/passwd') }, 403, 'messages[0].content[0].image_url.url', 'file_not_allowed'],
    ['file URL through a symlink', { ...ok, messages: imageTurn('x', 'FILE_DIR/sub/escape.png') }, 403, 'messages[0].content[0].image_url.url', 'file_not_allowed'],
    ['missing file', { ...ok, messages: imageTurn('x', 'FILE_DIR/nope.png') }, 400, 'messages[0].content[0].image_url.url', 'file_not_found'],
  ])('%s', async (_what, body, status, param, code) => {
    const b = typeof body === 'string' ? body : JSON.parse(JSON.stringify(body).split('FILE_DIR').join(`file://${tmp}`));
    await expectError(await post(b), status as number, param as string | null, (code ?? undefined) as string | undefined);
  });

  it('wrong content type, oversized body, unknown route', async () => {
    await expectError(await post(JSON.stringify(ok), { 'content-type': 'text/plain' }), 415, null, 'unsupported_media_type');
    await expectError(await post(JSON.stringify(ok), { 'content-type': 'application/x-www-form-urlencoded' }), 415, null, 'unsupported_media_type');
    await expectError(await post('x'.repeat(33 * 1024 * 1024)), 413, null, 'body_too_large');
    await expectError(await fetch(`${server.url}/v1/nothing`), 404, null, 'not_found');
  });

  it('a file:// URL inside --allow-files works', async () => {
    const res = await post({ ...ok, temperature: 0, messages: imageTurn('x', `file://${tmp}/image.png`) });
    expect(res.status).toBe(200);
  });
});

describe('limits and auth (a second server sharing the loaded model)', () => {
  it('--api-key: Bearer checks on /v1 and /metrics, /health open; video duration limit', async () => {
    const s = await startServer({ models: [{ id: 'm', model: await loadShared() }], port: 0, apiKey: 'sekret', maxVideoSeconds: 0.5 });
    try {
      await expectError(await fetch(`${s.url}/v1/models`), 401, null, 'invalid_api_key');
      await expectError(await fetch(`${s.url}/v1/models`, { headers: { authorization: 'Bearer wrong' } }), 401, null, 'invalid_api_key');
      await expectError(await fetch(`${s.url}/metrics`), 401, null, 'invalid_api_key');
      expect((await fetch(`${s.url}/health`)).status).toBe(200);
      const c = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: 'sekret', maxRetries: 0 });
      expect((await c.models.list()).data.map((m) => m.id)).toEqual(['m']);
      const res = await post({ messages: [{ role: 'user', content: [{ type: 'video_url', video_url: { url: dataUrl(VIDEO, 'video/mp4') } }, { type: 'text', text: 'x' }] }] },
        { 'content-type': 'application/json', authorization: 'Bearer sekret' }, s.url);
      await expectError(res, 413, 'messages[0].content[0].video_url.url', 'video_too_long');
    } finally {
      await s.shutdown();
    }
  });
});

/** The already loaded MiniCPM-V of the main server (not disposed by the second one). */
async function loadShared() {
  return loadChatModel(MINICPM);
}
