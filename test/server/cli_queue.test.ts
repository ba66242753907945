/**
 * `vlm serve` as a process (start, /health, SIGTERM → exit 0; bad flags → exit 2) and the
 * scheduler on its own (FIFO, 429 + Retry-After, cancel while queued, timeout).
 */
import { spawn, spawnSync } from 'node:child_process';
import path from 'node:path';
import { Cancelled, ModelQueue } from '../../server/queue';
import { createServer } from '../../server/app';
import { StopFilter, mapOptions } from '../../server/openai';
import { ApiError } from '../../server/errors';
import { MINICPM, REPO } from './helpers';

const TSX = path.join(REPO, 'node_modules', 'tsx', 'dist', 'cli.mjs');
const VLM = path.join(REPO, 'scripts', 'vlm.ts');

describe('vlm serve CLI', () => {
  it('starts, reports ready, serves /health, and exits 0 on SIGTERM', async () => {
    const p = spawn(process.execPath, [TSX, VLM, 'serve', '--model', MINICPM, '--port', '0', '--quantize', 'q8_0'], { cwd: REPO, stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    const exited = new Promise<number | null>((r) => p.on('exit', (code) => r(code)));
    const url = await new Promise<string>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`no ready line: ${err}`)), 90_000);
      p.stderr.on('data', (d) => {
        err += String(d);
        const m = /ready in [\d.]+ s: (http:\/\/[^/\s]+)\/v1/.exec(err);
        if (m) {
          clearTimeout(t);
          resolve(m[1]);
        }
      });
      p.on('exit', () => reject(new Error(`exited early: ${err}`)));
    });
    expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    const h = await (await fetch(`${url}/health`)).json();
    expect(h.status).toBe('ok');
    p.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(err).toMatch(/SIGTERM: draining/);
    expect(err).toMatch(/stopped/);
  });

  it('bad flags are usage errors (exit 2)', () => {
    const r = spawnSync(process.execPath, [TSX, VLM, 'serve', '--model', MINICPM, '--quantize', 'q3'], { cwd: REPO, encoding: 'utf8' });
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(/--quantize: expected one of q8_0, q4_0, f16, bf16, got 'q3'/);
  });
});

describe('ModelQueue', () => {
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

  it('runs one job at a time in FIFO order; full → 429 with Retry-After', async () => {
    const q = new ModelQueue(2);
    const order: number[] = [];
    const job = (i: number) => q.submit(async () => {
      order.push(i);
      await sleep(10);
      return i;
    });
    const ps = [job(1), job(2), job(3)];
    const full = job(4);
    await expect(full).rejects.toBeInstanceOf(ApiError);
    await full.catch((e: ApiError) => {
      expect(e.status).toBe(429);
      expect(Number(e.headers['retry-after'])).toBeGreaterThanOrEqual(1);
    });
    expect(await Promise.all(ps)).toEqual([1, 2, 3]);
    expect(order).toEqual([1, 2, 3]);
  });

  it('a queued job cancelled by its client never runs; a running one sees the abort; timeouts', async () => {
    const q = new ModelQueue(4);
    let sawAbort: unknown = null;
    const running = q.submit(async (signal) => {
      while (!signal.aborted) await sleep(5);
      sawAbort = signal.reason;
      return 'stopped';
    }, { timeoutMs: 50 });
    const ac = new AbortController();
    let ran = false;
    const queued = q.submit(async () => (ran = true), { signal: ac.signal });
    ac.abort();
    await expect(queued).rejects.toEqual(new Cancelled('client_closed'));
    expect(q.queueLength).toBe(0);
    expect(await running).toBe('stopped');
    expect(sawAbort).toEqual(new Cancelled('timeout'));
    expect(ran).toBe(false);
    await q.idle();
  });
});

describe('createServer', () => {
  it('/health is 503 "loading" until the weights are loaded, then 200; chat answers 503 meanwhile', async () => {
    const s = createServer({ models: [{ dir: MINICPM }], port: 0 });
    const url = await s.app.listen({ host: '127.0.0.1', port: 0 }); // the port without loading
    const h = await fetch(`${url}/health`);
    expect(h.status).toBe(503);
    expect((await h.json()).status).toBe('loading');
    const c = await fetch(`${url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ messages: [{ role: 'user', content: 'x' }] }) });
    expect(c.status).toBe(503);
    expect((await c.json()).error.code).toBe('loading');
    await s.load();
    expect((await fetch(`${url}/health`)).status).toBe(200);
    await s.shutdown();
  });
});

describe('request → chat options', () => {
  it('temperature 0 is greedy; sampling fields sample; defaults stay the family defaults; stop → stopStrings', () => {
    expect(mapOptions({ messages: [], temperature: 0, max_tokens: 5 }, 64).options).toEqual({ maxNewTokens: 5, sampling: false, doSample: false, numBeams: 1, repetitionPenalty: 1 });
    const s = mapOptions({ messages: [], temperature: 0.5, top_k: -1, seed: 3, stop: 'x' }, 64);
    expect(s.options).toEqual({ maxNewTokens: 64, sampling: true, doSample: true, temperature: 0.5, topK: 0, seed: 3, stopStrings: ['x'] });
    expect(mapOptions({ messages: [] }, 64, false)).toEqual({ options: { maxNewTokens: 64 }, stop: [], maxTokens: 64, seed: null });
    expect(mapOptions({ messages: [] }, 64, true).seed).toEqual(expect.any(Number));
    expect(() => mapOptions({ messages: [], max_tokens: 65 }, 64)).toThrow(/at most 64/);
  });

  it('StopFilter never sends part of a stop string', () => {
    const f = new StopFilter(['END']);
    const out = ['ab', 'cE', 'N', 'Dxyz'].map((c) => f.push(c)).join('') + f.flush();
    expect(out).toBe('abc');
    const g = new StopFilter(['END']);
    expect(['ab', 'cE', 'Nx'].map((c) => g.push(c)).join('') + g.flush()).toBe('abcENx');
  });
});
