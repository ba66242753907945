/**
 * `vlm serve --model DIR [--model DIR ...] [--host H] [--port P] [...]` — the OpenAI-compatible
 * HTTP server (server/app.ts). Loads the models once, serves until SIGINT/SIGTERM, then drains
 * (stops accepting, lets in-flight work finish for --shutdown-grace seconds, cancels the rest)
 * and exits 0.
 */
import fs from 'node:fs';
import { ModelSpec, QUANTIZE_MODES, QuantizeMode, createServer } from '../server/app';
import { Command, UsageError, flag, num, str, strList } from './cli';

const MiB = 1024 * 1024;

export const command: Command = {
  name: 'serve',
  summary: 'OpenAI-compatible HTTP server (chat completions with streaming, /v1/models, /health, /metrics, a web page at /).',
  usage: '--model [ID=]DIR [--model ...] [--host 127.0.0.1] [--port 8080] [--quantize Q] [--max-queue N] [--api-key KEY] ' +
    '[--allow-files DIR] [--allow-remote] [--max-tokens N] [--timeout S] [limits ...]',
  options: {
    model: { type: 'string', multiple: true, arg: '[ID=]DIR', help: 'checkpoint directory to serve; the model id is the directory name unless ID= is given' },
    host: { type: 'string', arg: 'HOST', help: 'address to bind', default: '127.0.0.1' },
    port: { type: 'string', arg: 'PORT', help: 'port (0: any free port)', default: '8080' },
    quantize: { type: 'string', arg: 'Q', help: `weight quantization passed to the loader: ${QUANTIZE_MODES.join(' | ')}` },
    'vision-tower': { type: 'string', arg: 'DIR', help: 'VideoLLaMA 2: local directory of the vision tower named by mm_vision_tower' },
    'max-queue': { type: 'string', arg: 'N', help: 'requests waiting per model before 429 (default 16)' },
    'api-key': { type: 'string', arg: 'KEY', help: 'require Authorization: Bearer KEY on /v1/* and /metrics (env VLM_API_KEY)' },
    'allow-files': { type: 'string', arg: 'DIR', help: 'let file:// media URLs read files under DIR (default: refused)' },
    'allow-remote': { type: 'boolean', help: 'fetch http(s) media URLs (default: refused)' },
    'max-tokens': { type: 'string', arg: 'N', help: 'cap and default of max_tokens (default 2048)' },
    timeout: { type: 'string', arg: 'S', help: 'per-request timeout in seconds, queue wait included (default 300)' },
    'max-body-mb': { type: 'string', arg: 'MB', help: 'request body limit (default 32)' },
    'max-image-mb': { type: 'string', arg: 'MB', help: 'encoded image size limit (default 20)' },
    'max-image-pixels': { type: 'string', arg: 'N', help: 'width × height limit of images and video frames, checked before decoding (default 16777216)' },
    'max-video-mb': { type: 'string', arg: 'MB', help: 'video size limit (default 200)' },
    'max-video-seconds': { type: 'string', arg: 'S', help: 'video duration limit (default 600)' },
    'max-video-frames': { type: 'string', arg: 'N', help: 'MiniCPM-V: frames sampled from a video at most (default 64)' },
    'shutdown-grace': { type: 'string', arg: 'S', help: 'on SIGINT/SIGTERM, seconds to let in-flight work finish before cancelling it (default 10)' },
    log: { type: 'boolean', help: 'log every request (fastify/pino JSON lines on stdout)' },
  },
  async run(opts) {
    const specs: ModelSpec[] = strList(opts, 'model').map((m) => {
      const eq = m.indexOf('=');
      if (eq > 0 && !fs.existsSync(m)) return { id: m.slice(0, eq), dir: m.slice(eq + 1) };
      return { dir: m };
    });
    if (!specs.length) throw new UsageError('--model is required (repeat it to serve several models)');
    for (const s of specs) if ('dir' in s && !fs.existsSync(s.dir)) throw new UsageError(`--model: ${s.dir} does not exist`);
    const quantize = str(opts, 'quantize');
    if (quantize !== undefined && !QUANTIZE_MODES.includes(quantize as QuantizeMode)) throw new UsageError(`--quantize: expected one of ${QUANTIZE_MODES.join(', ')}, got '${quantize}'`);
    const allowFiles = str(opts, 'allow-files');
    if (allowFiles !== undefined && !fs.existsSync(allowFiles)) throw new UsageError(`--allow-files: ${allowFiles} does not exist`);
    const mb = (name: string) => {
      const v = num(opts, name, { min: 0, exclusiveMin: true });
      return v === undefined ? undefined : Math.round(v * MiB);
    };
    const sec = (name: string) => {
      const v = num(opts, name, { min: 0, exclusiveMin: true });
      return v === undefined ? undefined : v * 1000;
    };
    const server = createServer({
      models: specs,
      host: str(opts, 'host'),
      port: num(opts, 'port', { int: true, min: 0, max: 65535 }),
      quantize: quantize as QuantizeMode | undefined,
      visionTowerDir: str(opts, 'vision-tower'),
      maxQueue: num(opts, 'max-queue', { int: true, min: 0 }),
      apiKey: str(opts, 'api-key') ?? process.env.VLM_API_KEY,
      allowFiles,
      allowRemote: flag(opts, 'allow-remote'),
      maxTokens: num(opts, 'max-tokens', { int: true, min: 1 }),
      requestTimeoutMs: sec('timeout'),
      bodyLimit: mb('max-body-mb'),
      maxImageBytes: mb('max-image-mb'),
      maxImagePixels: num(opts, 'max-image-pixels', { int: true, min: 1 }),
      maxVideoBytes: mb('max-video-mb'),
      maxVideoSeconds: num(opts, 'max-video-seconds', { min: 0, exclusiveMin: true }),
      maxVideoFrames: num(opts, 'max-video-frames', { int: true, min: 1 }),
      logger: flag(opts, 'log') ? { level: 'info' } : { level: 'error' },
    });
    const grace = sec('shutdown-grace') ?? 10_000;
    let signalled: (sig: string) => void = () => undefined;
    const stopped = new Promise<string>((r) => (signalled = r));
    const onSignal = (sig: string) => signalled(sig);
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
    try {
      const url = await server.listen();
      process.stderr.write(`vlm serve: listening on ${url} (loading ${specs.length} model${specs.length > 1 ? 's' : ''}...)\n`);
      const t0 = performance.now();
      const loaded = await Promise.race([server.ready.then(() => true), stopped.then(() => false)]);
      if (loaded) process.stderr.write(`vlm serve: ready in ${((performance.now() - t0) / 1000).toFixed(1)} s: ${url}/v1 (web page: ${url}/)\n`);
      const sig = await stopped;
      process.stderr.write(`vlm serve: ${sig}: draining (up to ${grace / 1000} s)...\n`);
      await server.shutdown(grace);
      process.stderr.write('vlm serve: stopped\n');
      return 0;
    } catch (e) {
      await server.shutdown(0).catch(() => undefined);
      throw e;
    } finally {
      process.removeListener('SIGINT', onSignal);
      process.removeListener('SIGTERM', onSignal);
    }
  },
};
