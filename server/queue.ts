/**
 * One model's scheduler: one generation at a time (the tfjs backend is single-threaded), a
 * bounded FIFO of waiting requests (full → 429 with Retry-After), cancellation of waiting or
 * running work when the client goes away, a per-request timeout (queue wait included), and a
 * drain for graceful shutdown.
 */
import { ApiError } from './errors';

/** Why a job's signal fired. */
export type CancelReason = 'client_closed' | 'timeout' | 'shutdown';

export class Cancelled extends Error {
  constructor(readonly reason: CancelReason) {
    super(reason);
    this.name = 'Cancelled';
  }
}

interface Job {
  run: (signal: AbortSignal, waitedMs: number) => Promise<unknown>;
  resolve: (v: unknown) => void;
  reject: (e: unknown) => void;
  ac: AbortController;
  enqueued: number;
  detach: () => void;
}

export interface SubmitOptions {
  /** The client's signal (aborted when the connection closes). */
  signal?: AbortSignal;
  timeoutMs?: number;
}

export class ModelQueue {
  private waiting: Job[] = [];
  private running: Job | null = null;
  /** Running average of job durations (ms), for Retry-After. */
  private avgMs = 1000;
  private idleWaiters: (() => void)[] = [];

  constructor(readonly maxQueue: number, private readonly onChange: () => void = () => undefined) {}

  get queueLength(): number {
    return this.waiting.length;
  }
  get busy(): boolean {
    return this.running !== null;
  }

  /**
   * Runs `run` when it is this request's turn. `signal` passed to `run` aborts on client close,
   * timeout or shutdown; its `reason` is a `Cancelled`. Rejects with a 429 ApiError when full,
   * or with `Cancelled` when the request is cancelled while waiting.
   */
  submit<T>(run: (signal: AbortSignal, waitedMs: number) => Promise<T>, opts: SubmitOptions = {}): Promise<T> {
    if (this.running && this.waiting.length >= this.maxQueue) {
      const retry = Math.max(1, Math.ceil((this.avgMs * (this.waiting.length + 1)) / 1000));
      return Promise.reject(new ApiError(429, `the queue of this model is full (${this.maxQueue} waiting); retry in about ${retry} s`,
        'rate_limit_error', null, 'queue_full', { 'retry-after': String(retry) }));
    }
    return new Promise<T>((resolve, reject) => {
      const ac = new AbortController();
      const onClient = () => ac.abort(new Cancelled('client_closed'));
      opts.signal?.addEventListener('abort', onClient, { once: true });
      const timer = opts.timeoutMs ? setTimeout(() => ac.abort(new Cancelled('timeout')), opts.timeoutMs) : null;
      const job: Job = {
        run: run as Job['run'], resolve: resolve as Job['resolve'], reject, ac, enqueued: performance.now(),
        detach: () => {
          opts.signal?.removeEventListener('abort', onClient);
          if (timer) clearTimeout(timer);
        },
      };
      ac.signal.addEventListener('abort', () => {
        const i = this.waiting.indexOf(job);
        if (i >= 0) {
          this.waiting.splice(i, 1);
          job.detach();
          reject(ac.signal.reason);
          this.onChange();
        }
      }, { once: true });
      this.waiting.push(job);
      if (opts.signal?.aborted) return onClient();
      this.onChange();
      this.pump();
    });
  }

  private pump(): void {
    if (this.running || !this.waiting.length) return;
    const job = this.waiting.shift()!;
    this.running = job;
    this.onChange();
    const t0 = performance.now();
    job.run(job.ac.signal, t0 - job.enqueued).then(job.resolve, job.reject).finally(() => {
      job.detach();
      this.avgMs = 0.8 * this.avgMs + 0.2 * (performance.now() - t0);
      this.running = null;
      this.onChange();
      if (!this.waiting.length) for (const w of this.idleWaiters.splice(0)) w();
      this.pump();
    });
  }

  /** Resolves when nothing runs or waits. */
  idle(): Promise<void> {
    if (!this.running && !this.waiting.length) return Promise.resolve();
    return new Promise((r) => this.idleWaiters.push(r));
  }

  /** Cancels everything (waiting jobs reject, the running one is aborted). */
  cancelAll(reason: CancelReason): void {
    for (const j of [...this.waiting]) j.ac.abort(new Cancelled(reason));
    this.running?.ac.abort(new Cancelled(reason));
  }
}
