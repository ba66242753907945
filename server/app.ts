/**
 * The HTTP server of `vlm serve` (fastify): routes, auth, error mapping, streaming, shutdown.
 *
 *   POST /v1/chat/completions   OpenAI chat completions (JSON or SSE stream)
 *   GET  /v1/models             the served model ids
 *   GET  /health                200 once the weights are loaded (503 while loading / draining)
 *   GET  /metrics               Prometheus text
 *   GET  /                      the web page (server/static)
 *
 * `createServer(opts)` builds the app; `listen()` opens the port and then loads the models
 * (`ready` settles when they are loaded; `load()` loads without listening); `startServer(opts)`
 * is createServer + listen. The server keeps no state besides its queues.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import Fastify, { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import * as tf from '@tensorflow/tfjs';
import type { ChatModel, ChatResult } from '../models/chat';
import { LoadOptions, loadChatModel } from '../models/registry';
import { ApiError, paramFromValidation } from './errors';
import { MediaLimits, RequestFiles } from './media';
import { Metrics } from './metrics';
import { ChatCompletionRequest, chunkObject, completionObject, cutAtStop, extension, finishReason, mapMessages, mapOptions, StopFilter, usage } from './openai';
import { Cancelled, ModelQueue } from './queue';
import { chatCompletionSchema } from './schema';

export const QUANTIZE_MODES = ['q8_0', 'q4_0', 'f16', 'bf16'] as const;
export type QuantizeMode = (typeof QUANTIZE_MODES)[number];

/** A model to serve: a checkpoint directory (loaded by the server) or an already loaded model. */
export type ModelSpec = { id?: string; dir: string } | { id: string; model: ChatModel };

export interface ServerOptions {
  models: ModelSpec[];
  host?: string;
  port?: number;
  /** Passed to loadChatModel as `{ quantize }` (honoured once the loader supports it). */
  quantize?: QuantizeMode;
  /** VideoLLaMA 2: local directory of the vision tower. */
  visionTowerDir?: string;
  /** Waiting requests per model before 429 (default 16). */
  maxQueue?: number;
  /** Require `Authorization: Bearer KEY` on /v1/* and /metrics. */
  apiKey?: string;
  /** Directory that file:// media URLs may read from (default: none, file URLs refused). */
  allowFiles?: string;
  /** Fetch http(s) media URLs (default false). */
  allowRemote?: boolean;
  /** Request body limit in bytes (default 32 MiB). */
  bodyLimit?: number;
  maxImageBytes?: number;
  maxImagePixels?: number;
  maxVideoBytes?: number;
  maxVideoSeconds?: number;
  /** MiniCPM-V: frames sampled from a video at most (default 64). */
  maxVideoFrames?: number;
  /** Cap (and default) of max_tokens (default 2048). */
  maxTokens?: number;
  /** Per-request timeout in ms, queue wait included (default 300000). */
  requestTimeoutMs?: number;
  /** fastify logger (default false). */
  logger?: boolean | { level: string };
  /** Called with each internal error (default: the fastify logger). */
  onInternalError?: (e: unknown) => void;
}

interface Served {
  id: string;
  model: ChatModel | null;
  queue: ModelQueue;
  created: number;
}

export interface VlmServer {
  app: FastifyInstance;
  /** Settles when every model is loaded (rejects when one fails to load); loading starts with `listen` or `load`. */
  ready: Promise<void>;
  /** Starts loading the models without listening (e.g. for `app.inject`); returns `ready`. */
  load(): Promise<void>;
  metrics: Metrics;
  /** The listening URL (after `listen`). */
  url: string;
  listen(): Promise<string>;
  /** Stops accepting, lets queued/running work finish for `graceMs`, cancels the rest, disposes the models. */
  shutdown(graceMs?: number): Promise<void>;
}

const DEFAULTS = {
  host: '127.0.0.1', port: 8080, maxQueue: 16, bodyLimit: 32 * 1024 * 1024, maxImageBytes: 20 * 1024 * 1024, maxImagePixels: 4096 * 4096,
  maxVideoBytes: 200 * 1024 * 1024, maxVideoSeconds: 600, maxVideoFrames: 64, maxTokens: 2048, requestTimeoutMs: 300_000,
};

/** Model ids: the given id, else the directory's name (made unique). */
function modelIds(specs: ModelSpec[]): string[] {
  const seen = new Set<string>();
  return specs.map((s) => {
    const base = s.id ?? path.basename(path.resolve((s as { dir: string }).dir));
    let id = base;
    for (let k = 2; seen.has(id); k++) id = `${base}-${k}`;
    seen.add(id);
    return id;
  });
}

function staticDir(): string {
  for (const d of [path.join(__dirname, 'static'), path.join(__dirname, '..', '..', 'server', 'static')]) {
    if (fs.existsSync(path.join(d, 'index.html'))) return d;
  }
  throw new Error('server/static/index.html not found');
}

function sameSecret(a: string, b: string): boolean {
  const ha = crypto.createHash('sha256').update(a).digest();
  const hb = crypto.createHash('sha256').update(b).digest();
  return crypto.timingSafeEqual(ha, hb);
}

/** Library errors → client errors where the input was at fault, else a generic 500. */
function fromLibrary(e: unknown): ApiError {
  if (e instanceof ApiError) return e;
  if (e instanceof Cancelled) {
    if (e.reason === 'timeout') return new ApiError(504, 'the request timed out', 'timeout_error', null, 'timeout');
    if (e.reason === 'shutdown') return new ApiError(503, 'the server is shutting down', 'service_unavailable_error', null, 'shutting_down');
    return new ApiError(499, 'the client closed the request', 'invalid_request_error', null, 'client_closed');
  }
  const err = e as Error;
  const msg = String(err?.message ?? e);
  if (err?.name === 'ImageLoadError') return new ApiError(400, `the image could not be decoded: ${msg.replace(/^[^:]*: /, '')}`, 'invalid_request_error', 'messages', 'invalid_image');
  if (err?.name === 'VideoError') return new ApiError(400, `the video could not be decoded: ${msg.replace(/\/[^\s:]*\//g, '')}`, 'invalid_request_error', 'messages', 'invalid_video');
  if (/too long|max_position_embeddings|max_inp_length/i.test(msg)) return new ApiError(400, msg, 'invalid_request_error', 'messages', 'context_length_exceeded');
  if (/frames|reserved modal token|messages is empty|message \d+|system message|first message/i.test(msg)) return new ApiError(400, msg.replace(/\/[^\s:]*\//g, ''), 'invalid_request_error', 'messages', null);
  return new ApiError(500, 'internal server error', 'server_error', null, 'internal_error');
}

export function createServer(opts: ServerOptions): VlmServer {
  const o = { ...DEFAULTS, ...Object.fromEntries(Object.entries(opts).filter(([, v]) => v !== undefined)) } as typeof DEFAULTS & ServerOptions;
  if (!opts.models.length) throw new Error('no models to serve');
  if (o.quantize !== undefined && !QUANTIZE_MODES.includes(o.quantize)) throw new Error(`quantize: expected one of ${QUANTIZE_MODES.join(', ')}, got '${o.quantize}'`);
  const limits: MediaLimits = {
    maxImageBytes: o.maxImageBytes, maxImagePixels: o.maxImagePixels, maxVideoBytes: o.maxVideoBytes, maxVideoSeconds: o.maxVideoSeconds,
    allowFiles: o.allowFiles ? fs.realpathSync(o.allowFiles) : null, allowRemote: !!o.allowRemote,
  };
  const metrics = new Metrics();
  const app = Fastify({
    logger: o.logger ?? false,
    bodyLimit: o.bodyLimit,
    return503OnClosing: true,
    forceCloseConnections: 'idle',
    ajv: { customOptions: { coerceTypes: false, removeAdditional: false, useDefaults: false, allErrors: false, discriminator: true, allowUnionTypes: true } },
  });
  const internal = o.onInternalError ?? ((e: unknown) => app.log.error(e));
  app.removeContentTypeParser('text/plain');

  const ids = modelIds(opts.models);
  const served = new Map<string, Served>();
  const now = Math.floor(Date.now() / 1000);
  for (const id of ids) {
    const queue = new ModelQueue(o.maxQueue, () => {
      metrics.queueLength.set({ model: id }, queue.queueLength);
      metrics.generating.set({ model: id }, queue.busy ? 1 : 0);
    });
    served.set(id, { id, model: null, queue, created: now });
  }
  let loaded = false;
  let loadError: string | null = null;
  let draining = false;
  let startLoading: () => void = () => undefined;
  const ready = (async () => {
    await new Promise<void>((r) => (startLoading = r));
    for (const [i, spec] of opts.models.entries()) {
      const s = served.get(ids[i])!;
      if ('model' in spec) s.model = spec.model;
      else {
        const loadOpts = { visionTowerDir: o.visionTowerDir, warn: () => undefined, ...(o.quantize ? { quantize: o.quantize } : {}) } as LoadOptions;
        s.model = await loadChatModel(spec.dir, loadOpts);
      }
    }
    loaded = true;
  })();
  ready.catch((e) => (loadError = (e as Error).message));

  // --- errors: always the OpenAI shape, never a stack ---------------------------------------
  const sendError = (reply: FastifyReply, e: ApiError) => {
    metrics.errors.inc({ kind: e.code ?? e.type });
    for (const [k, v] of Object.entries(e.headers)) reply.header(k, v);
    return reply.code(e.status).type('application/json').send(e.body());
  };
  app.setErrorHandler((err: FastifyError, _req, reply) => {
    let e: ApiError;
    if (err instanceof ApiError) e = err;
    else if (err.validation?.length) {
      const v = err.validation[0];
      const param = paramFromValidation(v.instancePath, v.params as Record<string, unknown>);
      const what = v.keyword === 'discriminator' ? 'must be one of the part types text, image_url, video_url, video' : String(v.message).replace(/^must be (\w+),null$/, 'must be $1');
      e = new ApiError(400, `${param ?? 'body'}: ${what}`, 'invalid_request_error', param, 'invalid_value');
    } else if (err.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') e = new ApiError(415, `unsupported content type '${_req.headers['content-type'] ?? ''}'; send application/json`, 'invalid_request_error', null, 'unsupported_media_type');
    else if (err.code === 'FST_ERR_CTP_BODY_TOO_LARGE') e = new ApiError(413, `the request body is larger than the limit of ${o.bodyLimit} bytes`, 'invalid_request_error', null, 'body_too_large');
    else if (err.code === 'FST_ERR_CTP_EMPTY_JSON_BODY') e = new ApiError(400, 'the request body is empty', 'invalid_request_error', null, 'empty_body');
    else if (err instanceof SyntaxError || err.code === 'FST_ERR_CTP_INVALID_JSON_BODY') e = new ApiError(400, 'the request body is not valid JSON', 'invalid_request_error', null, 'invalid_json');
    else if (err.statusCode && err.statusCode >= 400 && err.statusCode < 500) e = new ApiError(err.statusCode, err.message, 'invalid_request_error', null, err.code ?? null);
    else {
      e = fromLibrary(err);
      if (e.status >= 500) internal(err);
    }
    return sendError(reply, e);
  });
  app.setNotFoundHandler((req, reply) => sendError(reply, new ApiError(404, `no route ${req.method} ${req.url.split('?')[0]}`, 'not_found_error', null, 'not_found')));

  // --- auth ----------------------------------------------------------------------------------
  if (o.apiKey) {
    const key = o.apiKey;
    app.addHook('onRequest', async (req) => {
      const url = req.url.split('?')[0];
      if (!url.startsWith('/v1/') && url !== '/metrics') return;
      const h = req.headers.authorization ?? '';
      const m = /^Bearer (.+)$/i.exec(h);
      if (!m || !sameSecret(m[1].trim(), key)) throw new ApiError(401, 'missing or wrong API key (send Authorization: Bearer KEY)', 'authentication_error', null, 'invalid_api_key');
    });
  }

  // --- static page ---------------------------------------------------------------------------
  const sdir = staticDir();
  const page = fs.readFileSync(path.join(sdir, 'index.html'));
  const js = fs.readFileSync(path.join(sdir, 'app.js'));
  app.get('/', async (_req, reply) => reply.type('text/html; charset=utf-8').header('cache-control', 'no-cache').send(page));
  app.get('/app.js', async (_req, reply) => reply.type('text/javascript; charset=utf-8').header('cache-control', 'no-cache').send(js));

  // --- info routes ---------------------------------------------------------------------------
  const modelObject = (s: Served) => ({ id: s.id, object: 'model', created: s.created, owned_by: 'tfjs-vlm', family: s.model?.family ?? null });
  app.get('/v1/models', async () => ({ object: 'list', data: [...served.values()].map(modelObject) }));
  app.get<{ Params: { id: string } }>('/v1/models/:id', async (req) => {
    const s = served.get(req.params.id);
    if (!s) throw new ApiError(404, `the model '${req.params.id}' does not exist`, 'not_found_error', 'model', 'model_not_found');
    return modelObject(s);
  });
  app.get('/health', async (_req, reply) => {
    const queues = Object.fromEntries([...served.values()].map((s) => [s.id, { waiting: s.queue.queueLength, generating: s.queue.busy }]));
    const status = loadError ? 'error' : draining ? 'draining' : loaded ? 'ok' : 'loading';
    return reply.code(status === 'ok' ? 200 : 503).send({
      status, models: [...served.keys()], queues, tf_tensors: tf.memory().numTensors, rss_bytes: process.memoryUsage().rss, ...(loadError ? { error: loadError } : {}),
    });
  });
  app.get('/metrics', async (_req, reply) => reply.type(metrics.registry.contentType).send(await metrics.registry.metrics()));

  // --- chat completions ----------------------------------------------------------------------
  const pickModel = (name: string | undefined): Served => {
    if (name === undefined) {
      if (served.size === 1) return [...served.values()][0];
      throw new ApiError(400, `model: required when several models are served (${[...served.keys()].join(', ')})`, 'invalid_request_error', 'model', 'missing_model');
    }
    const s = served.get(name);
    if (!s) throw new ApiError(404, `the model '${name}' does not exist; served: ${[...served.keys()].join(', ')}`, 'not_found_error', 'model', 'model_not_found');
    return s;
  };

  const observe = (id: string, r: ChatResult, waitedMs: number) => {
    const l = { model: id };
    metrics.queueWait.observe(l, waitedMs / 1000);
    metrics.prompt.observe(l, r.timings.preprocess_ms / 1000);
    metrics.vision.observe(l, r.timings.vision_ms / 1000);
    metrics.prefill.observe(l, r.timings.prefill_ms / 1000);
    metrics.decode.observe(l, r.timings.decode_ms / 1000);
    if (r.timings.tokens_per_s > 0) metrics.tokensPerSecond.observe(l, r.timings.tokens_per_s);
    metrics.promptTokens.inc(l, r.promptTokens);
    metrics.completionTokens.inc(l, r.tokenIds.length);
  };

  app.post('/v1/chat/completions', { schema: { body: chatCompletionSchema } }, async (req: FastifyRequest, reply: FastifyReply) => {
    const t0 = performance.now();
    const body = req.body as ChatCompletionRequest;
    const stream = !!body.stream;
    let modelId = body.model ?? '?';
    let status = 200;
    const files = new RequestFiles();
    // the client going away (reply closed before it finished) cancels the work
    const client = new AbortController();
    reply.raw.on('close', () => {
      if (!reply.raw.writableFinished) client.abort();
    });
    try {
      if (draining) throw new ApiError(503, 'the server is shutting down', 'service_unavailable_error', null, 'shutting_down');
      if (!loaded) throw new ApiError(503, loadError ? 'the model failed to load' : 'the model is still loading', 'service_unavailable_error', null, 'loading');
      const s = pickModel(body.model);
      modelId = s.id;
      const mapped = mapOptions(body, o.maxTokens, s.model?.samplesByDefault ?? true);
      const messages = await mapMessages(body, limits, files, client.signal);
      const options = { ...mapped.options, maxVideoFrames: o.maxVideoFrames };
      const id = `chatcmpl-${crypto.randomUUID().replace(/-/g, '')}`;
      const created = Math.floor(Date.now() / 1000);
      const model = s.model!;

      if (!stream) {
        const { r, waited } = await s.queue.submit(async (signal, waited) => {
          const r = await model.chat(messages, { ...options, signal });
          if (signal.aborted) throw signal.reason;
          return { r, waited };
        }, { signal: client.signal, timeoutMs: o.requestTimeoutMs });
        observe(s.id, r, waited);
        return reply.send(completionObject(id, created, s.id, r, cutAtStop(r.text, mapped.stop), mapped.seed, waited));
      }

      // streaming: errors before our turn (queue full, timeout while waiting) are ordinary HTTP errors
      await s.queue.submit(async (signal, waited) => {
        reply.hijack();
        const res = reply.raw;
        res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', connection: 'keep-alive', 'x-accel-buffering': 'no' });
        const withUsage = !!body.stream_options?.include_usage;
        const send = (obj: object) => {
          if (!res.destroyed) res.write(`data: ${JSON.stringify(obj)}\n\n`);
        };
        const chunk = (delta: Record<string, unknown>, finish: string | null, extra: Record<string, unknown> = {}) =>
          send(chunkObject(id, created, s.id, delta, finish, { ...(withUsage ? { usage: null } : {}), ...extra }));
        chunk({ role: 'assistant', content: '' }, null);
        const filter = new StopFilter(mapped.stop);
        try {
          const r = await model.chat(messages, {
            ...options, signal,
            onText: (c) => {
              const t = filter.push(c);
              if (t) chunk({ content: t }, null);
            },
          });
          if (signal.aborted) throw signal.reason;
          const tail = filter.flush();
          if (tail) chunk({ content: tail }, null);
          chunk({}, finishReason(r.finishReason), { x_tfjs_vlm: extension(r, mapped.seed, waited) });
          if (withUsage) send({ id, object: 'chat.completion.chunk', created, model: s.id, choices: [], usage: usage(r) });
          observe(s.id, r, waited);
        } catch (e) {
          const err = fromLibrary(e);
          status = err.status;
          metrics.errors.inc({ kind: err.code ?? err.type });
          if (err.status >= 500 && !(e instanceof Cancelled)) internal(e);
          send(err.body());
        } finally {
          if (!res.destroyed) res.end('data: [DONE]\n\n');
        }
      }, { signal: client.signal, timeoutMs: o.requestTimeoutMs });
      return reply;
    } catch (e) {
      const err = fromLibrary(e);
      status = err.status;
      if (err.status >= 500 && !(e instanceof Cancelled)) internal(e);
      return sendError(reply, err);
    } finally {
      files.cleanup();
      metrics.requests.inc({ model: modelId, status: String(status), stream: String(stream) });
      metrics.duration.observe({ model: modelId }, (performance.now() - t0) / 1000);
    }
  });

  let closing: Promise<void> | null = null;
  const server: VlmServer = {
    app, ready, metrics, url: '',
    load() {
      startLoading();
      return ready;
    },
    async listen() {
      const addr = await app.listen({ host: o.host, port: o.port });
      server.url = addr;
      // loading starts once the port is open, so /health answers 'loading' meanwhile
      setImmediate(startLoading);
      return addr;
    },
    shutdown(graceMs = 10_000) {
      closing ??= (async () => {
        draining = true;
        startLoading(); // (a server that never listened settles here)
        await ready.catch(() => undefined);
        const queues = [...served.values()].map((s) => s.queue);
        const timer = setTimeout(() => queues.forEach((q) => q.cancelAll('shutdown')), graceMs);
        await Promise.all(queues.map((q) => q.idle()));
        clearTimeout(timer);
        await app.close();
        for (const s of served.values()) {
          if (opts.models.some((m) => 'model' in m && m.model === s.model)) continue; // not ours to dispose
          s.model?.dispose();
          s.model = null;
        }
      })();
      return closing;
    },
  };
  return server;
}

/** createServer + listen. */
export async function startServer(opts: ServerOptions): Promise<VlmServer> {
  const s = createServer(opts);
  await s.listen();
  return s;
}
