/**
 * Load and cancellation on localhost: 32 concurrent clients × 4 requests (mixed plain/streaming,
 * some with an image) against a bounded queue, 3 rounds — every request answered 200 or 429
 * (with Retry-After), the server alive, tf.js tensors back at the idle count, RSS stable; clients
 * that disconnect mid-stream (or while queued) stop their generation and leak nothing.
 */
import { VlmServer, startServer } from '../../server/app';
import { loadChatModel } from '../../models/registry';
import { IMAGE, MINICPM, dataUrl } from './helpers';

let server: VlmServer;
const image = dataUrl(IMAGE, 'image/png');

beforeAll(async () => {
  server = await startServer({ models: [{ id: 'm', dir: MINICPM }], port: 0, maxQueue: 8, maxTokens: 4000, onInternalError: (e) => console.error(e) });
  await server.ready;
});
afterAll(() => server?.shutdown());

const health = async () => (await fetch(`${server.url}/health`)).json() as Promise<{ tf_tensors: number; rss_bytes: number; queues: Record<string, { waiting: number; generating: boolean }> }>;

async function waitIdle(): Promise<{ tf_tensors: number; rss_bytes: number }> {
  for (let i = 0; i < 200; i++) {
    const h = await health();
    if (Object.values(h.queues).every((q) => !q.waiting && !q.generating)) return h;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error('the server did not become idle');
}

function body(i: number, maxTokens = 4): Record<string, unknown> {
  const content = i % 4 === 0 ? [{ type: 'image_url', image_url: { url: image } }, { type: 'text', text: `Question ${i}?` }] : `Question ${i}?`;
  return { model: 'm', messages: [{ role: 'user', content }], max_tokens: maxTokens, temperature: 0, stream: i % 2 === 1 };
}

async function request(i: number): Promise<number> {
  const res = await fetch(`${server.url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body(i)) });
  const text = await res.text();
  if (res.status === 200 && i % 2 === 1) expect(text.endsWith('data: [DONE]\n\n')).toBe(true);
  if (res.status === 429) expect(Number(res.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
  return res.status;
}

it('32 clients × 4 requests, 3 rounds: only 200/429, tensors back to idle, RSS stable', async () => {
  // warm-up: lazily built tables and kernels exist before the idle count is taken
  await request(0);
  await request(1);
  const idle = (await waitIdle()).tf_tensors;
  const rounds: { ok: number; busy: number; ms: number; tensors: number; rssMb: number }[] = [];
  for (let round = 0; round < 3; round++) {
    const t0 = performance.now();
    const statuses = (await Promise.all(Array.from({ length: 32 }, async (_, c) => {
      const out: number[] = [];
      for (let k = 0; k < 4; k++) out.push(await request(c * 4 + k));
      return out;
    }))).flat();
    const ms = performance.now() - t0;
    expect(statuses).toHaveLength(128);
    expect(statuses.filter((s) => s !== 200 && s !== 429)).toEqual([]);
    const h = await waitIdle();
    rounds.push({ ok: statuses.filter((s) => s === 200).length, busy: statuses.filter((s) => s === 429).length, ms: Math.round(ms), tensors: h.tf_tensors, rssMb: Math.round(h.rss_bytes / 2 ** 20) });
  }
  console.log(`load (32 clients × 4 requests, max-queue 8, idle tensors ${idle}):\n${rounds.map((r, i) => `  round ${i + 1}: ${r.ok} × 200, ${r.busy} × 429, ${r.ms} ms, tensors ${r.tensors}, RSS ${r.rssMb} MiB`).join('\n')}`);
  for (const r of rounds) {
    expect(r.tensors).toBe(idle);
    expect(r.ok).toBeGreaterThan(0);
  }
  expect(Math.abs(rounds[2].rssMb - rounds[1].rssMb)).toBeLessThan(64);
  expect((await health()).tf_tensors).toBe(idle);
});

it('clients that disconnect mid-stream or while queued stop generation and leak nothing', async () => {
  const idle = (await waitIdle()).tf_tensors;
  const t0 = performance.now();
  const results = await Promise.all(Array.from({ length: 6 }, async (_, i) => {
    const ac = new AbortController();
    try {
      const res = await fetch(`${server.url}/v1/chat/completions`, {
        method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ ...body(i * 2 + 1, 4000), stream: true }), signal: ac.signal,
      });
      if (res.status !== 200) return res.status;
      const reader = res.body!.getReader();
      await reader.read(); // the first chunk: generation has started
      ac.abort();
      return 'aborted';
    } catch (e) {
      return (e as Error).name;
    }
  }));
  // the generation of 4000 tokens would take many seconds; cancelled, the server is idle at once
  const h = await waitIdle();
  const ms = performance.now() - t0;
  console.log(`disconnect: ${JSON.stringify(results)} → idle after ${Math.round(ms)} ms, tensors ${h.tf_tensors} (idle ${idle})`);
  expect(results.every((r) => r === 'aborted')).toBe(true);
  expect(h.tf_tensors).toBe(idle);
  expect(ms).toBeLessThan(10_000);
  const m = await (await fetch(`${server.url}/metrics`)).text();
  expect(m).toMatch(/vlm_errors_total\{kind="client_closed"\} [1-9]/);
  // a request queued behind the cancelled ones is still served
  expect(await request(3)).toBe(200);
});

it('request timeout → 504 (generation cancelled); shutdown cancels in-flight work after the grace and resolves', async () => {
  const model = await loadChatModel(MINICPM);
  const s = await startServer({ models: [{ id: 'm', model }], port: 0, maxTokens: 4000, requestTimeoutMs: 300 });
  try {
    const post = (b: Record<string, unknown>) => fetch(`${s.url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(b) });
    const t0 = performance.now();
    const res = await post({ ...body(2, 4000), stream: false });
    expect(res.status).toBe(504);
    expect((await res.json()).error.code).toBe('timeout');
    expect(performance.now() - t0).toBeLessThan(3000);
  } finally {
    await s.shutdown();
  }
  const s2 = await startServer({ models: [{ id: 'm', model }], port: 0, maxTokens: 4000 });
  const res = await fetch(`${s2.url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ ...body(1, 4000), stream: true }) });
  const reader = res.body!.getReader();
  await reader.read();
  const t0 = performance.now();
  await s2.shutdown(200); // 4000 tokens would take far longer than the grace
  expect(performance.now() - t0).toBeLessThan(5000);
  let rest = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    rest += Buffer.from(value).toString();
  }
  expect(rest).toContain('"code":"shutting_down"');
  expect(rest.endsWith('data: [DONE]\n\n')).toBe(true);
  model.dispose();
});
