/**
 * Safe file I/O shared by every command that reads user files or writes outputs:
 *
 * - `readBounded(file, kind)`: an input is checked with stat before it is opened. It must be a
 *   regular file (a FIFO, a character device such as /dev/zero, a socket or a directory is
 *   refused, naming the file) no larger than the limit of its kind, and it is read with that
 *   bound (a file that grows while being read is refused too). Limits (bytes), overridable by
 *   environment variables:
 *     image   256 MiB  VLM_MAX_IMAGE_BYTES
 *     text     16 MiB  VLM_MAX_TEXT_BYTES    (prompt / --file text inputs)
 *     config   64 MiB  VLM_MAX_CONFIG_BYTES  (config.json, tokenizer files, preprocessor configs, index)
 *     data      1 GiB  VLM_MAX_DATA_BYTES    (JSON training data)
 * - `checkOutputTarget(out, ...)`: before any work, an output path is checked: its directory
 *   exists and is writable, it is not a directory, and it is not (through symlinks or hard
 *   links) one of the input files nor inside an input directory. A character device or FIFO is
 *   written through, never replaced.
 * - `writeFileAtomic(out, chunks)`: regular targets get a temporary file in the same directory
 *   renamed into place; device/FIFO targets are written directly.
 * - a registry of in-flight temporaries (`trackTemp` / `untrackTemp`) removed on SIGINT, SIGTERM
 *   and process exit, so an interrupted write leaves nothing behind.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { AlignedWriter } from './aligned_writer';

/** A user file that cannot be used as an input or output (exit code 2 in the CLI). */
export class FileInputError extends Error {
  /** The errno code when the system refused (ENOENT, EACCES, ...); undefined when we refused. */
  readonly code?: string;
  constructor(message: string, code?: string) {
    super(message);
    this.name = 'FileInputError';
    this.code = code;
  }
}

export type FileKind = 'image' | 'text' | 'config' | 'data';

const MiB = 2 ** 20;
/** Documented default size limits per kind of input. */
export const DEFAULT_LIMITS: Record<FileKind, number> = {
  image: 256 * MiB,
  text: 16 * MiB,
  config: 64 * MiB,
  data: 1024 * MiB,
};
export const LIMIT_ENV: Record<FileKind, string> = {
  image: 'VLM_MAX_IMAGE_BYTES',
  text: 'VLM_MAX_TEXT_BYTES',
  config: 'VLM_MAX_CONFIG_BYTES',
  data: 'VLM_MAX_DATA_BYTES',
};

/** The size limit of `kind`: the environment override (a positive integer) or the default. */
export function sizeLimit(kind: FileKind): number {
  const env = process.env[LIMIT_ENV[kind]];
  if (env !== undefined && env !== '') {
    const v = Number(env);
    if (!Number.isSafeInteger(v) || v <= 0) throw new FileInputError(`${LIMIT_ENV[kind]}='${env}': expected a positive integer number of bytes`);
    return v;
  }
  return DEFAULT_LIMITS[kind];
}

function describeType(st: fs.Stats): string {
  if (st.isDirectory()) return 'a directory';
  if (st.isFIFO()) return 'a FIFO (named pipe)';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  if (st.isSocket()) return 'a socket';
  return 'not a regular file';
}

/**
 * Stats `file` (following symlinks) and checks it is a regular file within the limit of `kind`.
 * `label` prefixes messages (e.g. '--image'). Returns the size.
 */
export function checkInputFile(file: string, kind: FileKind, label?: string): number {
  const who = label ? `${label}: ${file}` : file;
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new FileInputError(`${who}: ${code === 'ENOENT' ? 'no such file' : `cannot access (${code ?? (e as Error).message})`}`);
  }
  if (!st.isFile()) throw new FileInputError(`${who}: is ${describeType(st)}, not a regular file; refusing to read it`);
  const limit = sizeLimit(kind);
  if (st.size > limit) {
    throw new FileInputError(`${who}: ${st.size} bytes is over the ${kind} file limit of ${limit} bytes (raise it with ${LIMIT_ENV[kind]})`);
  }
  return st.size;
}

/** Checks that `file` is an existing regular file (no size limit: e.g. a video streamed by ffmpeg). */
export function checkRegularFile(file: string, label?: string): void {
  const who = label ? `${label}: ${file}` : file;
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new FileInputError(`${who}: ${code === 'ENOENT' ? 'no such file' : `cannot access (${code ?? (e as Error).message})`}`);
  }
  if (!st.isFile()) throw new FileInputError(`${who}: is ${describeType(st)}, not a regular file; refusing to read it`);
}

/** Reads a regular file of `kind` with its size bound (see the file header). */
export function readBounded(file: string, kind: FileKind, label?: string): Buffer {
  const who = label ? `${label}: ${file}` : file;
  try {
    fs.statSync(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new FileInputError(`${who}: cannot read (${code ?? (e as Error).message})`, code);
  }
  checkInputFile(file, kind, label);
  const limit = sizeLimit(kind);
  let fd: number;
  try {
    // O_NONBLOCK: a file swapped for a FIFO after the stat cannot block the open
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  } catch (e) {
    throw new FileInputError(`${who}: cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, (e as NodeJS.ErrnoException).code);
  }
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile()) throw new FileInputError(`${who}: is ${describeType(st)}, not a regular file; refusing to read it`);
    const chunks: Buffer[] = [];
    let total = 0;
    for (;;) {
      const buf = Buffer.allocUnsafe(Math.min(Math.max(st.size - total, 0) + 1, limit + 1 - total, 16 * MiB));
      const n = fs.readSync(fd, buf, 0, buf.length, null);
      if (n === 0) break;
      total += n;
      if (total > limit) throw new FileInputError(`${who}: grew past the ${kind} file limit of ${limit} bytes while being read (raise it with ${LIMIT_ENV[kind]})`);
      chunks.push(n === buf.length ? buf : buf.subarray(0, n));
    }
    return chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, total);
  } catch (e) {
    if (e instanceof FileInputError) throw e;
    throw new FileInputError(`${who}: cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`, (e as NodeJS.ErrnoException).code);
  } finally {
    fs.closeSync(fd);
  }
}

/** `readBounded` as UTF-8 text. */
export function readBoundedText(file: string, kind: FileKind, label?: string): string {
  return readBounded(file, kind, label).toString('utf8');
}

// ---------------------------------------------------------------------------------------------
// outputs
// ---------------------------------------------------------------------------------------------

export interface OutputCheck {
  /** The flag named in errors (default '--out'). */
  flag?: string;
  /** Input files the output must not be (compared by device+inode and by real path). */
  inputs?: string[];
  /** Input directories the output must not lie in (e.g. the model directory). */
  inputDirs?: string[];
}

/** How an output target will be written. */
export interface OutputTarget {
  path: string;
  /** 'file': temp file + rename; 'stream': an existing character device or FIFO, written through. */
  mode: 'file' | 'stream';
}

function realOrResolved(p: string): string {
  try {
    return fs.realpathSync(p);
  } catch {
    return path.resolve(p);
  }
}

function isInside(child: string, dir: string): boolean {
  const rel = path.relative(dir, child);
  return rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel));
}

/**
 * Checks an output file path before any work (see the file header). Throws a FileInputError
 * naming the flag.
 */
export function checkOutputTarget(out: string, opts: OutputCheck = {}): OutputTarget {
  const flag = opts.flag ?? '--out';
  const dir = path.dirname(path.resolve(out));
  let st: fs.Stats | undefined;
  try {
    st = fs.statSync(out);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw new FileInputError(`${flag}: ${out}: cannot access (${(e as NodeJS.ErrnoException).code})`);
  }
  if (st?.isDirectory()) throw new FileInputError(`${flag}: ${out} is a directory`);
  const real = realOrResolved(out);
  for (const d of opts.inputDirs ?? []) {
    const rd = realOrResolved(d);
    if (isInside(real, rd) || isInside(path.resolve(out), path.resolve(d))) {
      throw new FileInputError(`${flag}: ${out} lies inside the input directory ${d}; refusing to write into an input (choose a path outside it)`);
    }
  }
  for (const f of opts.inputs ?? []) {
    let same = realOrResolved(f) === real;
    if (!same && st) {
      try {
        const fst = fs.statSync(f);
        same = fst.dev === st.dev && fst.ino === st.ino;
      } catch {
        /* a missing input is reported by its reader */
      }
    }
    if (same) throw new FileInputError(`${flag}: ${out} is the input file ${f}; refusing to overwrite an input`);
  }
  if (st && (st.isCharacterDevice() || st.isFIFO())) {
    try {
      fs.accessSync(out, fs.constants.W_OK);
    } catch {
      throw new FileInputError(`${flag}: ${out} is not writable`);
    }
    return { path: out, mode: 'stream' };
  }
  if (st && !st.isFile()) throw new FileInputError(`${flag}: ${out} is ${describeType(st)}; refusing to replace it`);
  let dst: fs.Stats;
  try {
    dst = fs.statSync(dir);
  } catch {
    throw new FileInputError(`${flag}: directory ${dir} does not exist`);
  }
  if (!dst.isDirectory()) throw new FileInputError(`${flag}: ${dir} is not a directory`);
  try {
    fs.accessSync(dir, fs.constants.W_OK | fs.constants.X_OK);
  } catch {
    throw new FileInputError(`${flag}: directory ${dir} is not writable`);
  }
  return { path: out, mode: 'file' };
}

function writeAll(fd: number, chunks: readonly Uint8Array[]): void {
  for (const b of chunks) {
    let done = 0;
    while (done < b.length) done += fs.writeSync(fd, b, done, b.length - done);
  }
}

/**
 * Writes `chunks` to `out`: an existing character device or FIFO is written through (opened
 * without O_CREAT/O_TRUNC, never replaced); anything else goes to a tracked temporary file in
 * the same directory, renamed into place when complete. Errors name `out` and `flag`, never the
 * temporary path.
 */
export function writeFileAtomic(out: string, chunks: readonly Uint8Array[], flag?: string): void {
  const who = flag ? `${flag}: ${out}` : out;
  let st: fs.Stats | undefined;
  try {
    st = fs.statSync(out);
  } catch {
    st = undefined;
  }
  if (st && (st.isCharacterDevice() || st.isFIFO())) {
    let fd: number;
    try {
      fd = fs.openSync(out, fs.constants.O_WRONLY);
    } catch (e) {
      throw new FileInputError(`${who}: cannot open for writing (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
    }
    try {
      writeAll(fd, chunks);
    } catch (e) {
      throw new Error(`${who}: write failed (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
    } finally {
      fs.closeSync(fd);
    }
    return;
  }
  if (st && !st.isFile()) throw new FileInputError(`${who}: is ${describeType(st)}; refusing to replace it`);
  const dir = path.dirname(path.resolve(out));
  if (!fs.existsSync(dir)) throw new FileInputError(`${who}: directory ${dir} does not exist`);
  const tmp = path.join(dir, `.${path.basename(out)}.${process.pid}.${crypto.randomBytes(4).toString('hex')}.tmp`);
  let fd: number | null = null;
  trackTemp(tmp);
  try {
    fd = fs.openSync(tmp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o666);
    const w = new AlignedWriter(fd); // whole 2 MiB folios in the page cache (exported weights map in huge pages)
    for (const c of chunks) w.write(c);
    w.end();
    fs.closeSync(fd);
    fd = null;
    fs.renameSync(tmp, out);
  } catch (e) {
    if (fd !== null) fs.closeSync(fd);
    fs.rmSync(tmp, { force: true });
    const code = (e as NodeJS.ErrnoException).code;
    const msg = `${who}: cannot write (${code ?? (e as Error).message})`;
    throw code === 'EACCES' || code === 'EPERM' || code === 'ENOENT' || code === 'EROFS' ? new FileInputError(msg) : new Error(msg);
  } finally {
    untrackTemp(tmp);
  }
}

// ---------------------------------------------------------------------------------------------
// temporaries removed on signals and exit
// ---------------------------------------------------------------------------------------------

const temps = new Set<string>();
let installed = false;

/** Removes every tracked temporary now (files and directories), synchronously. */
export function cleanupTemps(): void {
  for (const t of temps) {
    try {
      fs.rmSync(t, { recursive: true, force: true });
    } catch {
      /* best effort */
    }
  }
  temps.clear();
}

function onSignal(sig: NodeJS.Signals): void {
  cleanupTemps();
  // Someone else handles this signal too: leave the decision to them.
  if (process.listenerCount(sig) > 1) return;
  process.removeListener('SIGINT', onSignal);
  process.removeListener('SIGTERM', onSignal);
  installed = false;
  // die of the same signal, as if we had no handler (the parent sees 128 + n)
  process.kill(process.pid, sig);
}

/**
 * Installed with the first temporary and kept for the life of the process (removing the last
 * listener while a signal is pending would swallow it); with no temporary left the handler
 * only re-raises the signal.
 */
function install(): void {
  if (installed) return;
  installed = true;
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
}

process.on('exit', cleanupTemps);

/** Registers an in-flight temporary (file or directory) to remove on SIGINT/SIGTERM/exit. */
export function trackTemp(p: string): void {
  temps.add(path.resolve(p));
  install();
}

/** Unregisters a temporary (renamed into place or removed). */
export function untrackTemp(p: string): void {
  temps.delete(path.resolve(p));
}

/** Removes a temporary (file or directory) now and unregisters it. */
export function discardTemp(p: string): void {
  fs.rmSync(p, { recursive: true, force: true });
  untrackTemp(p);
}

/** Tracked temporaries (for tests). */
export function trackedTemps(): string[] {
  return [...temps];
}

/**
 * Creates a temporary directory next to `target` named `.<name>.partial-XXXXXX`, with the mode
 * a plain mkdir would get (0777 minus the umask), tracked for cleanup.
 */
export function makeTempDirNear(target: string): string {
  const parent = path.dirname(path.resolve(target));
  for (let i = 0; ; i++) {
    const p = path.join(parent, `.${path.basename(target)}.partial-${crypto.randomBytes(4).toString('hex')}`);
    try {
      fs.mkdirSync(p, { mode: 0o777 });
      trackTemp(p);
      return p;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST' || i > 10) throw e;
    }
  }
}
