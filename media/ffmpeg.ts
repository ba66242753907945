/**
 * The ffmpeg child process behind video decoding: which binary, how it is run, and how its log is
 * read. No Python and no ffprobe (the npm binary ships without one): everything comes from the
 * `ffmpeg` CLI itself.
 *
 * Binary, first match wins:
 *   1. `opts.ffmpegPath`;
 *   2. `$VLM_FFMPEG` (must exist: a wrong path is an error, never a silent fallback);
 *   3. the static binary of the npm package `@ffmpeg-installer/ffmpeg` (FFmpeg 4.x, x264 built in);
 *   4. `ffmpeg` on PATH.
 *
 * Every process runs under a watchdog (`opts.timeoutMs`, else `$VLM_FFMPEG_TIMEOUT_MS`, else
 * 120 s) and an optional AbortSignal; on timeout, abort, error or an early exit of the consumer it
 * is killed with SIGKILL, so a call never hangs. The clock pauses while a streaming consumer holds a
 * frame (see `pauseClock`), so slow model code downstream does not count against ffmpeg.
 *
 * The log is requested as `-loglevel level+<lvl>`: every line carries `[info]`/`[warning]`/
 * `[error]`/`[fatal]`, which is how errors are told apart from the header dump.
 */
import { ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';

export const FFMPEG_ENV = 'VLM_FFMPEG';
export const FFMPEG_TIMEOUT_ENV = 'VLM_FFMPEG_TIMEOUT_MS';
/** Default wall-clock limit of one ffmpeg process, in milliseconds. */
export const DEFAULT_FFMPEG_TIMEOUT_MS = 120_000;

export type VideoErrorCode =
  | 'not_found' | 'not_media' | 'no_video_stream' | 'corrupt' | 'no_frames' | 'index_out_of_range'
  | 'too_large' | 'ffmpeg_missing' | 'ffmpeg_failed' | 'timeout' | 'aborted' | 'bad_argument' | 'too_few_frames';

/** Every video failure: `file` is the video (or the binary, for `ffmpeg_missing`), `code` the kind. */
export class VideoError extends Error {
  constructor(readonly code: VideoErrorCode, readonly file: string, message: string) {
    super(message);
    this.name = code === 'aborted' ? 'AbortError' : 'VideoError';
  }
}

/** Options shared by every call that runs ffmpeg. */
export interface FfmpegOptions {
  /** ffmpeg binary; default: see the resolution order in the file header. */
  ffmpegPath?: string;
  /** Wall-clock limit per ffmpeg process in ms (default `$VLM_FFMPEG_TIMEOUT_MS` or 120000). */
  timeoutMs?: number;
  /** Aborting kills the process and rejects with a VideoError of code 'aborted'. */
  signal?: AbortSignal;
}

export interface ResolvedFfmpeg {
  path: string;
  source: 'option' | 'env' | 'npm' | 'path';
}

function npmFfmpegPath(): string | null {
  try {
    // Lazy: the package throws at require time on platforms it has no binary for.
     
    const p = (require('@ffmpeg-installer/ffmpeg') as { path?: string }).path;
    return p && fs.existsSync(p) ? p : null;
  } catch {
    return null;
  }
}

function onPath(name: string): string | null {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    if (!dir) continue;
    const p = path.join(dir, name);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      if (fs.statSync(p).isFile()) return p;
    } catch { /* not here */ }
  }
  return null;
}

/** Finds the ffmpeg binary (see the file header for the order); throws 'ffmpeg_missing'. */
export function resolveFfmpeg(explicit?: string): ResolvedFfmpeg {
  const check = (p: string, source: ResolvedFfmpeg['source'], what: string): ResolvedFfmpeg => {
    if (!fs.existsSync(p)) {
      throw new VideoError('ffmpeg_missing', p, `ffmpeg binary not found: ${what} = ${p} does not exist ` +
        `(fix the path, or unset it to use the @ffmpeg-installer/ffmpeg binary or ffmpeg on PATH)`);
    }
    return { path: p, source };
  };
  if (explicit !== undefined) return check(explicit, 'option', 'opts.ffmpegPath');
  const env = process.env[FFMPEG_ENV];
  if (env) return check(env, 'env', `$${FFMPEG_ENV}`);
  const npm = npmFfmpegPath();
  if (npm) return { path: npm, source: 'npm' };
  const sys = onPath(process.platform === 'win32' ? 'ffmpeg.exe' : 'ffmpeg');
  if (sys) return { path: sys, source: 'path' };
  throw new VideoError('ffmpeg_missing', 'ffmpeg', 'ffmpeg not found: @ffmpeg-installer/ffmpeg has no binary for ' +
    `${process.platform}-${process.arch} and there is no ffmpeg on PATH (install ffmpeg or set $${FFMPEG_ENV})`);
}

/** The effective timeout: option, then env, then the default; validated. */
export function timeoutOf(opts: FfmpegOptions): number {
  const env = process.env[FFMPEG_TIMEOUT_ENV];
  const ms = opts.timeoutMs ?? (env ? Number(env) : DEFAULT_FFMPEG_TIMEOUT_MS);
  if (!Number.isFinite(ms) || ms <= 0) {
    const from = opts.timeoutMs !== undefined ? 'opts.timeoutMs' : `$${FFMPEG_TIMEOUT_ENV}`;
    throw new VideoError('bad_argument', String(ms), `${from} must be a positive number of milliseconds, got ${opts.timeoutMs ?? env}`);
  }
  return ms;
}

// ---------------------------------------------------------------------------------------------
// Running one process
// ---------------------------------------------------------------------------------------------

export interface FfmpegExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** Why we killed it, if we did. */
  killed: 'timeout' | 'abort' | 'done' | null;
  /** spawn failure (ENOENT, EACCES, ...). */
  spawnError: NodeJS.ErrnoException | null;
}

/** Lines kept from stderr: the head (the header dump lives there) and a tail ring. */
const LOG_HEAD_LINES = 400;
const LOG_TAIL_LINES = 200;

/** One running ffmpeg. `exited` never rejects. */
export class FfmpegProcess {
  readonly child: ChildProcess;
  readonly stdout: Readable;
  readonly exited: Promise<FfmpegExit>;
  readonly timeoutMs: number;
  private readonly head: string[] = [];
  private readonly tail: string[] = [];
  private dropped = 0;
  private partial = '';
  private killedFor: FfmpegExit['killed'] = null;
  private timer: NodeJS.Timeout | null = null;
  private remaining: number;
  private startedAt = 0;
  private done = false;
  private readonly signal: AbortSignal | undefined;
  private readonly onAbort = () => this.kill('abort');

  constructor(readonly bin: ResolvedFfmpeg, readonly args: string[], opts: FfmpegOptions) {
    this.timeoutMs = this.remaining = timeoutOf(opts);
    this.child = spawn(bin.path, args, { stdio: ['ignore', 'pipe', 'pipe'], windowsHide: true });
    this.stdout = this.child.stdout!;
    this.child.stderr!.setEncoding('utf8');
    this.child.stderr!.on('data', (s: string) => this.onStderr(s));
    let spawnError: NodeJS.ErrnoException | null = null;
    this.exited = new Promise((resolve) => {
      this.child.on('error', (e: NodeJS.ErrnoException) => {
        spawnError = e;
        // 'close' may never come for a failed spawn.
        if (this.child.pid === undefined) this.finish(resolve, null, null, spawnError);
      });
      this.child.on('close', (code, signal) => this.finish(resolve, code, signal, spawnError));
    });
    this.signal = opts.signal;
    this.signal?.addEventListener('abort', this.onAbort, { once: true });
    this.resumeClock();
  }

  private finish(resolve: (e: FfmpegExit) => void, code: number | null, signal: NodeJS.Signals | null,
    spawnError: NodeJS.ErrnoException | null): void {
    if (this.done) return;
    this.done = true;
    this.pauseClock();
    this.signal?.removeEventListener('abort', this.onAbort);
    if (this.partial) this.pushLine(this.partial);
    resolve({ code, signal, killed: this.killedFor, spawnError });
  }

  private onStderr(s: string): void {
    const lines = (this.partial + s).split(/\r?\n|\r/);
    this.partial = lines.pop()!;
    for (const l of lines) if (l.trim()) this.pushLine(l);
  }

  private pushLine(l: string): void {
    if (this.head.length < LOG_HEAD_LINES) {
      this.head.push(l);
      return;
    }
    this.tail.push(l);
    if (this.tail.length > LOG_TAIL_LINES) {
      this.tail.shift();
      this.dropped++;
    }
  }

  /** The kept stderr lines (head, a gap marker if lines were dropped, tail). */
  get log(): string[] {
    return this.dropped ? [...this.head, `[... ${this.dropped} log lines dropped ...]`, ...this.tail] : [...this.head, ...this.tail];
  }

  /** Stops the watchdog while the consumer holds a frame. */
  pauseClock(): void {
    if (!this.timer) return;
    clearTimeout(this.timer);
    this.timer = null;
    this.remaining -= Date.now() - this.startedAt;
  }

  resumeClock(): void {
    if (this.timer || this.done) return;
    this.startedAt = Date.now();
    this.timer = setTimeout(() => this.kill('timeout'), Math.max(0, this.remaining));
  }

  /** Kills the process (idempotent; a no-op once it has exited). */
  kill(reason: 'timeout' | 'abort' | 'done'): void {
    if (this.done || this.child.exitCode !== null || this.child.signalCode !== null) return;
    this.killedFor ??= reason;
    this.child.kill('SIGKILL');
  }
}

/** Starts ffmpeg with `args`; throws at once if the signal is already aborted or no binary exists. */
export function startFfmpeg(file: string, args: string[], opts: FfmpegOptions): FfmpegProcess {
  if (opts.signal?.aborted) throw new VideoError('aborted', file, `${file}: aborted before ffmpeg started`);
  const bin = resolveFfmpeg(opts.ffmpegPath);
  return new FfmpegProcess(bin, ['-nostdin', '-hide_banner', ...args], opts);
}

/** Per binary: whether it takes `-fps_mode` (FFmpeg >= 5.1, libavformat >= 59.27). */
const fpsModeSupport = new Map<string, Promise<boolean>>();

/**
 * The output option that passes every decoded frame through unchanged (no duplication or drop):
 * `-fps_mode passthrough` where the binary has it, else `-vsync passthrough` (deprecated since 5.1,
 * the only spelling in the npm binary's 4.x). Checked once per binary with `ffmpeg -version`.
 */
export async function passthroughArgs(file: string, opts: FfmpegOptions): Promise<string[]> {
  const bin = resolveFfmpeg(opts.ffmpegPath);
  let known = fpsModeSupport.get(bin.path);
  if (!known) {
    known = (async () => {
      const proc = new FfmpegProcess(bin, ['-version'], opts);
      let out = '';
      proc.stdout.setEncoding('utf8');
      proc.stdout.on('data', (s: string) => (out += s));
      const exit = await proc.exited;
      const err = exitError(file, 'reporting its version', proc, exit);
      if (err) throw err;
      const v = /libavformat\s+(\d+)\.\s*(\d+)/.exec(out);
      return v !== null && (Number(v[1]) > 59 || (Number(v[1]) === 59 && Number(v[2]) >= 27));
    })();
    fpsModeSupport.set(bin.path, known);
    known.catch(() => fpsModeSupport.delete(bin.path));
  }
  return (await known) ? ['-fps_mode', 'passthrough'] : ['-vsync', 'passthrough'];
}

// ---------------------------------------------------------------------------------------------
// Reading the log
// ---------------------------------------------------------------------------------------------

export interface LogLine {
  level: 'info' | 'warning' | 'error' | 'fatal' | 'other';
  /** The component in brackets before the level (`h264`, `mov,mp4,m4a,3gp,3g2,mj2`), or ''. */
  component: string;
  text: string;
}

/** Splits `[h264 @ 0x..] [error] text` into its parts. */
export function parseLogLine(line: string): LogLine {
  const m = /^((?:\[[^\]]*@ 0x[0-9a-f]+\] )*)\[(info|warning|error|fatal|verbose|debug|trace|panic)\] ?(.*)$/.exec(line);
  if (!m) return { level: 'other', component: '', text: line };
  const comp = /^\[([^\]@]+?) @/.exec(m[1]);
  const lvl = m[2] === 'panic' ? 'fatal' : m[2];
  return {
    level: (['info', 'warning', 'error', 'fatal'].includes(lvl) ? lvl : 'other') as LogLine['level'],
    component: comp ? comp[1] : '',
    text: m[3],
  };
}

/** The most telling error lines of a log, for messages (deduplicated, at most `max`). */
export function errorSummary(log: string[], max = 3): string {
  const seen = new Set<string>();
  for (const l of log.map(parseLogLine)) {
    if (l.level !== 'error' && l.level !== 'fatal') continue;
    if (/^To ignore this|^Conversion failed!?$/.test(l.text)) continue;
    const text = l.text.length > 300 ? `${l.text.slice(0, 300)}...` : l.text;
    seen.add(l.component ? `[${l.component}] ${text}` : text);
    if (seen.size >= max) break;
  }
  return [...seen].join('; ');
}

/** How the process ended, as a VideoError, or null when it exited 0 on its own. */
export function exitError(file: string, what: string, proc: FfmpegProcess, exit: FfmpegExit): VideoError | null {
  if (exit.spawnError) {
    const e = exit.spawnError;
    return new VideoError('ffmpeg_missing', proc.bin.path, `${file}: cannot run ffmpeg (${proc.bin.path}, from ${proc.bin.source}): ` +
      `${e.code ?? e.message}; install ffmpeg or set $${FFMPEG_ENV}`);
  }
  if (exit.killed === 'timeout') {
    return new VideoError('timeout', file, `${file}: ffmpeg did not finish ${what} within ${proc.timeoutMs} ms and was killed ` +
      `(raise opts.timeoutMs or $${FFMPEG_TIMEOUT_ENV})`);
  }
  if (exit.killed === 'abort') return new VideoError('aborted', file, `${file}: ${what} aborted`);
  if (exit.code === 0 || exit.killed === 'done') return null;
  return classifyFailure(file, what, proc.log, exit);
}

/** The refusal of a frame above the pixel limit. */
export function tooLargeError(file: string, w: number, h: number, max: number): VideoError {
  return new VideoError('too_large', file, `${file}: ${w}x${h} video (${w * h} pixels per frame) exceeds the limit of ` +
    `${max} pixels; upstream decodes at full resolution, so it is refused rather than downscaled ` +
    `(raise opts.maxPixels if you have the memory)`);
}

/** Maps a non-zero ffmpeg exit to the kind of bad input it reveals. */
function classifyFailure(file: string, what: string, log: string[], exit: FfmpegExit): VideoError {
  const all = log.join('\n');
  const summary = errorSummary(log) || `exit code ${exit.code ?? exit.signal}`;
  const header = parseInputHeader(log);
  if (/No such file or directory/.test(all) && !header) {
    return new VideoError('not_found', file, `${file}: video file not found`);
  }
  if (/Permission denied/.test(all) && !header) {
    return new VideoError('not_found', file, `${file}: cannot read the video file (permission denied)`);
  }
  const px = /Picture size (\d+)x(\d+) exceeds specified max pixel count (\d+)/.exec(all);
  if (px) return tooLargeError(file, Number(px[1]), Number(px[2]), Number(px[3]));
  if (/moov atom not found/.test(all) && !/misdetection possible/.test(all)) {
    return new VideoError('corrupt', file, `${file}: truncated or incomplete mp4/mov: its index (moov atom) is missing, ` +
      `e.g. a recording or download that was cut off (${summary})`);
  }
  if (!header) {
    return new VideoError('not_media', file, `${file}: not a readable video: ffmpeg could not open it as a media ` +
      `container (${summary}). Is it a video file (mp4, mkv, webm, avi, mov, ...)?`);
  }
  if (/matches no streams/.test(all)) {
    const found = header.streams.map((s) => `#${s.index} ${s.kind}${s.codec ? ` (${s.codec})` : ''}${s.attachedPic ? ' attached picture' : ''}`);
    return new VideoError('no_video_stream', file, `${file}: no video stream in this ${header.format} file ` +
      `(streams: ${found.length ? found.join(', ') : 'none'})`);
  }
  return new VideoError('corrupt', file, `${file}: corrupt or undecodable video: ffmpeg failed ${what} (${summary})`);
}

// ---------------------------------------------------------------------------------------------
// The header dump (`Input #0, ...` / `Stream #0:N: Video: ...`)
// ---------------------------------------------------------------------------------------------

export interface StreamHeader {
  index: number;
  kind: string;
  codec: string;
  attachedPic: boolean;
  /** Video only (absent when ffmpeg prints none). */
  pixFmt?: string;
  /** 'tv' | 'pc' when ffmpeg prints a colour range. */
  colorRange?: string;
  width?: number;
  height?: number;
  /** The avg_frame_rate as printed (2 decimals, or `30k`), e.g. '23.98'. */
  fpsText?: string;
  /** r_frame_rate as printed. */
  tbrText?: string;
}

export interface InputHeader {
  /** Demuxer names, e.g. 'mov,mp4,m4a,3gp,3g2,mj2'. */
  format: string;
  /** Container duration (10 ms resolution), or null for N/A. */
  durationSec: number | null;
  streams: StreamHeader[];
  /** Input stream index ffmpeg mapped to output 0 (`Stream mapping:`), when printed. */
  mappedIndex: number | null;
}

/** Splits on commas outside parentheses/brackets. */
function topLevelFields(s: string): string[] {
  const out: string[] = [];
  let depth = 0, cur = '';
  for (const ch of s) {
    if (ch === '(' || ch === '[') depth++;
    else if (ch === ')' || ch === ']') depth = Math.max(0, depth - 1);
    if (ch === ',' && depth === 0) {
      out.push(cur.trim());
      cur = '';
    } else cur += ch;
  }
  if (cur.trim()) out.push(cur.trim());
  return out;
}

function parseStreamLine(index: number, kind: string, rest: string): StreamHeader {
  const fields = topLevelFields(rest);
  const st: StreamHeader = { index, kind, codec: (fields[0] ?? '').split(' ')[0], attachedPic: /\(attached pic\)/.test(rest) };
  if (kind !== 'Video') return st;
  const pf = /^([a-z0-9_]+)(?:\(([^)]*)\))?$/.exec(fields[1] ?? '');
  if (pf && !/^\d+x\d+/.test(fields[1])) {
    st.pixFmt = pf[1];
    const range = (pf[2] ?? '').split(/,\s*/).find((t) => t === 'tv' || t === 'pc');
    if (range) st.colorRange = range;
  }
  for (const f of fields.slice(1)) {
    const dims = /^(\d+)x(\d+)(?:\s|$)/.exec(f);
    if (dims && st.width === undefined) {
      st.width = Number(dims[1]);
      st.height = Number(dims[2]);
    }
    const fps = /^([\d.]+k?) fps$/.exec(f);
    if (fps) st.fpsText = fps[1];
    const tbr = /^([\d.]+k?) tbr$/.exec(f);
    if (tbr) st.tbrText = tbr[1];
  }
  return st;
}

/** Reads the `Input #0` section of an ffmpeg log; null when ffmpeg never opened the input. */
export function parseInputHeader(log: string[]): InputHeader | null {
  let header: InputHeader | null = null;
  let inInput = false;
  for (const raw of log) {
    const { text } = parseLogLine(raw);
    const input = /^Input #0, (.+?), from '/.exec(text);
    if (input) {
      header = { format: input[1], durationSec: null, streams: [], mappedIndex: null };
      inInput = true;
      continue;
    }
    if (!header) continue;
    if (/^Output #0|^Stream mapping:/.test(text)) inInput = false;
    const map = /^\s*Stream #0:(\d+)(?:\[[^\]]*\])? -> #0:0/.exec(text);
    if (map && header.mappedIndex === null) header.mappedIndex = Number(map[1]);
    if (!inInput) continue;
    const dur = /^\s*Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)/.exec(text);
    if (dur) header.durationSec = Number(dur[1]) * 3600 + Number(dur[2]) * 60 + Number(dur[3]);
    const st = /^\s*Stream #0:(\d+)(?:\[[^\]]*\])?(?:\([^)]*\))?: (\w+): (.*)$/.exec(text);
    if (st) header.streams.push(parseStreamLine(Number(st[1]), st[2], st[3]));
  }
  return header;
}

/** The video stream ffmpeg decodes for `-map 0:V:0` (first non-attached-picture video stream). */
export function selectedVideoStream(header: InputHeader): StreamHeader | null {
  if (header.mappedIndex !== null) {
    const s = header.streams.find((x) => x.index === header.mappedIndex);
    if (s && s.kind === 'Video') return s;
  }
  return header.streams.find((s) => s.kind === 'Video' && !s.attachedPic) ?? null;
}
