/**
 * The web page at / in a real headless Chromium (Debian's /usr/bin/chromium, or $CHROMIUM, driven
 * by playwright-core): upload an image, ask, the streamed answer appears; a long answer is stopped
 * with the Stop button and the server cancels the generation. Skipped (with a note) without Chromium.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { VlmServer, startServer } from '../../server/app';
import { IMAGE, MINICPM } from './helpers';

const CHROMIUM = [process.env.CHROMIUM, '/usr/bin/chromium', '/usr/bin/chromium-browser', '/usr/bin/google-chrome'].find((p) => p && fs.existsSync(p));
const maybe = CHROMIUM ? describe : describe.skip;
if (!CHROMIUM) console.warn('test/server/browser.test.ts: skipped — no Chromium found (set CHROMIUM=/path/to/chromium)');

maybe('web page in headless Chromium', () => {
  let server: VlmServer;
  let profile: string;
   
  let context: any;

  beforeAll(async () => {
    server = await startServer({ models: [{ id: 'tiny', dir: MINICPM }], port: 0, maxTokens: 4000 });
    await server.ready;
    profile = fs.mkdtempSync(path.join(os.tmpdir(), 'vlm-chromium-'));
    const { chromium } = await import('playwright-core');
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
        '--disable-component-update', '--disable-sync'],
    });
  });
  afterAll(async () => {
    await context?.close();
    await server?.shutdown();
    if (profile) fs.rmSync(profile, { recursive: true, force: true });
  });

  const health = async () => (await fetch(`${server.url}/health`)).json();

  it('upload an image, ask, the answer streams in; a second turn; Stop cancels generation', async () => {
    const page = await context.newPage();
    const errors: string[] = [];
    page.on('pageerror', (e: Error) => errors.push(e.message));
    await page.goto(`${server.url}/`);
    await page.waitForFunction(() => document.getElementById('status')!.textContent === 'ready');
    expect(await page.$eval('#model', (s: HTMLSelectElement) => s.value)).toBe('tiny');

    await page.setInputFiles('#file', IMAGE);
    await page.waitForSelector('#preview img');
    await page.fill('#maxTokens', '8');
    await page.fill('#temperature', '0');
    await page.fill('#prompt', 'What is in the image?');
    await page.click('#send');
    await page.waitForSelector('#history .assistant[data-done="1"]');
    const answer = await page.$eval('#history .assistant .text', (e: HTMLElement) => e.textContent);
    expect(answer!.length).toBeGreaterThan(0);
    expect(await page.$eval('#status', (e: HTMLElement) => e.textContent)).toMatch(/done \(length\): 8 tokens/);
    expect(await page.$$eval('#history .user img', (x: unknown[]) => x.length)).toBe(1);

    // second turn, long: stop it while it streams
    await page.fill('#maxTokens', '4000');
    await page.fill('#prompt', 'Tell me more.');
    await page.click('#send');
    await page.waitForFunction(() => {
      const a = document.querySelectorAll('#history .assistant .text');
      return a.length === 2 && (a[1].textContent ?? '').length > 0;
    });
    expect((await health()).queues.tiny.generating).toBe(true);
    await page.click('#stop');
    await page.waitForFunction(() => document.getElementById('status')!.textContent === 'stopped');
    // the server notices the closed connection and stops within a token
    let h = await health();
    for (let i = 0; i < 100 && h.queues.tiny.generating; i++) {
      await new Promise((r) => setTimeout(r, 20));
      h = await health();
    }
    expect(h.queues.tiny.generating).toBe(false);
    expect(await page.$$eval('#history .msg', (x: unknown[]) => x.length)).toBe(4);
    expect(errors).toEqual([]);
  });
});
