/**
 * Random-weight checkpoints at real size, written streaming: the tensor list (names, shapes) of a
 * model family comes from its module tree (models/<family>/random_checkpoint.ts builds the spec,
 * `vlm make-random` writes it); this file plans the shards and writes them.
 *
 * - Sharding as Hugging Face `split_torch_state_dict_into_shards`: tensors in module order, a new
 *   shard when the next tensor would push the current one past `shardBytes`; files
 *   `model-0000i-of-0000N.safetensors` plus `model.safetensors.index.json` (metadata.total_size =
 *   tensor bytes, weight_map sorted by name), or one `model.safetensors` when everything fits one
 *   shard. A spec may instead fix the assignment (`shardOf`, e.g. the released index's).
 * - Within a shard tensors are stored sorted by name (what `safetensors.torch.save_file` does for
 *   one dtype); the header is computed from the shapes before any byte is written, padded with
 *   spaces to 8 bytes, `__metadata__: {format: "pt"}`.
 * - Values: `initKind` of layers/init.ts (the rule of `randomizeParams`): norm weights 1, biases
 *   0, the rest noise of std `std` (0.02): a triangular distribution (sum of the two 16-bit halves
 *   of one xorshift32 draw, through a lookup table), "normal-ish" and one PRNG step per value; each
 *   tensor has its own stream seeded from (seed, tensor index), so the bytes do not depend on the
 *   sharding. bf16 keeps the high 16 bits of the float32 (truncation), f16 rounds (floatToHalf).
 * - Written in chunks of `chunkBytes` (4 MiB) into a temporary directory next to the output
 *   (io/files.ts: removed on SIGINT/SIGTERM/exit), renamed into place when complete; memory stays
 *   at a few chunk buffers whatever the model size.
 */
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { InitKind, initKind } from '../layers/init';
import { Module } from '../layers/module';
import { FileInputError, discardTemp, makeTempDirNear, trackTemp, untrackTemp } from '../io/files';
import { floatToHalf } from './safetensors';
import { AlignedWriter } from '../io/aligned_writer';

export type RandomDtype = 'bf16' | 'f16' | 'f32';
export const RANDOM_DTYPES: readonly RandomDtype[] = ['bf16', 'f16', 'f32'];
const ST_DTYPE: Record<RandomDtype, string> = { bf16: 'BF16', f16: 'F16', f32: 'F32' };
const DTYPE_BYTES: Record<RandomDtype, number> = { bf16: 2, f16: 2, f32: 4 };
/** `torch_dtype` of config.json for each dtype. */
export const TORCH_DTYPE: Record<RandomDtype, string> = { bf16: 'bfloat16', f16: 'float16', f32: 'float32' };

/** One tensor to write: checkpoint name, checkpoint shape, how it is filled. */
export interface RandomTensor {
  name: string;
  shape: number[];
  init: InitKind;
}

/** What a family hands the writer: the tensors and the files beside them. */
export interface RandomCheckpointSpec {
  /** For messages, e.g. 'MiniCPM-V 2.6'. */
  title: string;
  tensors: RandomTensor[];
  /** Files written beside the weights: relative path (may contain one directory) → contents. */
  files: Record<string, string | Uint8Array>;
  /** Fixed shard file of every tensor (e.g. the released index's); default: greedy by shardBytes. */
  shardOf?: Record<string, string>;
  /** Notes for the log (where configs came from, what was checked). */
  notes: string[];
}

/** What `vlm make-random` asks of a family (models/<family>/random_checkpoint.ts). */
export interface RandomSpecOptions {
  /** The variant of the family row (e.g. 'videollama2.1'). */
  variant: string;
  dtype: RandomDtype;
  /** LLM `num_hidden_layers` (default: the released config's). */
  llmLayers?: number;
  /** Vision tower `num_hidden_layers` (default: the released config's). */
  visionLayers?: number;
  /**
   * Config keys set over the released ones, for tests at small widths: `config` on config.json,
   * `vision` on the vision config (MiniCPM-V `vision_config`; VideoLLaMA 2 the tower's config.json).
   */
  configOverrides?: { config?: Record<string, unknown>; vision?: Record<string, unknown> };
}

/** The tensors of a module tree that a checkpoint holds (tied parameters excluded), named by `toCheckpoint`. */
export function moduleTensors(m: Module, toCheckpoint: (moduleKey: string) => string, prefix = ''): RandomTensor[] {
  const out: RandomTensor[] = [];
  for (const [k, p] of m.namedParams(prefix)) {
    if (p.tiedTo) continue;
    const name = toCheckpoint(k);
    out.push({ name, shape: [...p.shape], init: initKind(name, p.shape) });
  }
  return out;
}

export interface ShardTensor extends RandomTensor {
  /** Index of the tensor in the spec (its PRNG stream). */
  index: number;
  bytes: number;
}

export interface ShardPlan {
  file: string;
  tensors: ShardTensor[];
  /** 8-byte length + JSON header (padded). */
  header: Buffer;
  /** Tensor bytes (without the header). */
  dataBytes: number;
}

export interface RandomCheckpointPlan {
  spec: RandomCheckpointSpec;
  dtype: RandomDtype;
  shards: ShardPlan[];
  /** Sum of tensor bytes (the index's metadata.total_size). */
  totalSize: number;
  /** Bytes on disk of the weight files (headers included). */
  fileBytes: number;
  /** The index JSON (null for a single model.safetensors). */
  index: { metadata: { total_size: number }; weight_map: Record<string, string> } | null;
}

const numel = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);

function shardHeader(tensors: ShardTensor[], dtype: RandomDtype): Buffer {
  const h: Record<string, unknown> = { __metadata__: { format: 'pt' } };
  let off = 0;
  for (const t of tensors) {
    h[t.name] = { dtype: ST_DTYPE[dtype], shape: t.shape, data_offsets: [off, off + t.bytes] };
    off += t.bytes;
  }
  let json = Buffer.from(JSON.stringify(h), 'utf8');
  const pad = (8 - (json.length % 8)) % 8;
  if (pad) json = Buffer.concat([json, Buffer.alloc(pad, 0x20)]);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  return Buffer.concat([len, json]);
}

/** Plans the shards of `spec` (nothing is written). `shardBytes` default 4 GB (4e9, as HF's "4GB"). */
export function planRandomCheckpoint(spec: RandomCheckpointSpec, opts: { dtype?: RandomDtype; shardBytes?: number } = {}): RandomCheckpointPlan {
  const dtype = opts.dtype ?? 'bf16';
  const maxBytes = opts.shardBytes ?? 4e9;
  if (!(maxBytes > 0)) throw new Error(`shard size must be positive, got ${maxBytes}`);
  const seen = new Set<string>();
  const all: ShardTensor[] = spec.tensors.map((t, index) => {
    if (seen.has(t.name)) throw new Error(`${spec.title}: tensor '${t.name}' listed twice`);
    seen.add(t.name);
    return { ...t, index, bytes: numel(t.shape) * DTYPE_BYTES[dtype] };
  });
  const groups: ShardTensor[][] = [];
  let names: string[];
  if (spec.shardOf) {
    const byFile = new Map<string, ShardTensor[]>();
    for (const t of all) {
      const f = spec.shardOf[t.name];
      if (!f) throw new Error(`${spec.title}: no shard for tensor '${t.name}'`);
      if (!byFile.has(f)) byFile.set(f, []);
      byFile.get(f)!.push(t);
    }
    names = [...byFile.keys()].sort();
    for (const f of names) groups.push(byFile.get(f)!);
  } else {
    let cur: ShardTensor[] = [];
    let size = 0;
    for (const t of all) {
      if (cur.length && size + t.bytes > maxBytes) {
        groups.push(cur);
        cur = [];
        size = 0;
      }
      cur.push(t);
      size += t.bytes;
    }
    if (cur.length) groups.push(cur);
    const n = groups.length;
    const pad = (i: number) => String(i).padStart(5, '0');
    names = n === 1 ? ['model.safetensors'] : groups.map((_, i) => `model-${pad(i + 1)}-of-${pad(n)}.safetensors`);
  }
  const shards: ShardPlan[] = groups.map((g, i) => {
    const tensors = [...g].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    return { file: names[i], tensors, header: shardHeader(tensors, dtype), dataBytes: tensors.reduce((s, t) => s + t.bytes, 0) };
  });
  const totalSize = shards.reduce((s, x) => s + x.dataBytes, 0);
  const fileBytes = shards.reduce((s, x) => s + x.dataBytes + x.header.length, 0);
  let index: RandomCheckpointPlan['index'] = null;
  if (shards.length > 1 || shards[0]?.file !== 'model.safetensors') {
    const weight_map: Record<string, string> = {};
    for (const k of [...seen].sort()) weight_map[k] = shards.find((s) => s.tensors.some((t) => t.name === k))!.file;
    index = { metadata: { total_size: totalSize }, weight_map };
  }
  return { spec, dtype, shards, totalSize, fileBytes, index };
}

/** xorshift32 state for tensor `index` of a checkpoint with `seed` (never 0). */
function streamSeed(seed: number, index: number): number {
  let h = (Math.imul(seed >>> 0, 0x9e3779b1) ^ Math.imul(index + 1, 0x85ebca6b)) >>> 0;
  h ^= h >>> 16;
  h = Math.imul(h, 0x7feb352d) >>> 0;
  h ^= h >>> 15;
  return h >>> 0 || 0x1234567;
}

/**
 * The value of every draw: a draw is t = lo + hi of the two 16-bit halves of one xorshift32 state,
 * triangular on [0, 131070] (mean 65535, sd 65536·√(1/6)); `table[t]` is (t − 65535)·k in the
 * stored dtype (bf16: the high 16 bits of the float32, f16: rounded), so the hot loop is one PRNG
 * step and one lookup per value.
 */
function noiseTable(dtype: RandomDtype, std: number): Uint16Array | Float32Array {
  const k = std / (65536 * Math.sqrt(1 / 6));
  const f = new Float32Array(131071);
  for (let t = 0; t < f.length; t++) f[t] = (t - 65535) * k;
  if (dtype === 'f32') return f;
  const u = new Uint16Array(f.length);
  const hi = new Uint16Array(f.buffer);
  for (let t = 0; t < f.length; t++) u[t] = dtype === 'bf16' ? hi[2 * t + 1] : floatToHalf(f[t]);
  return u;
}

/** Fills `out[0..n)` with noise from `table`; returns the next xorshift32 state. */
function fillNoise(out: Uint16Array | Float32Array, n: number, state: number, table: Uint16Array | Float32Array): number {
  let x = state;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = table[(x & 0xffff) + ((x >>> 16) & 0xffff)];
  }
  return x >>> 0;
}

export interface WriteRandomOptions {
  /** Seed of every tensor's stream (default 0). */
  seed?: number;
  /** Noise std (default 0.02). */
  std?: number;
  /** Replace an existing non-empty output directory. */
  force?: boolean;
  /** Progress lines. */
  log?: (msg: string) => void;
  /** Bytes per write (default 4 MiB). */
  chunkBytes?: number;
}

export interface WriteRandomResult {
  seconds: number;
  /** Weight bytes written (headers included). */
  bytes: number;
}

/** Checks that `out` may be written (absent, an empty directory, or `force`). */
export function checkRandomOutput(out: string, force = false): void {
  let st: fs.Stats;
  try {
    st = fs.statSync(out);
  } catch {
    const parent = path.dirname(path.resolve(out));
    if (!fs.existsSync(parent)) throw new FileInputError(`--out: directory ${parent} does not exist`);
    return;
  }
  if (!st.isDirectory()) throw new FileInputError(`--out: ${out} exists and is not a directory`);
  if (fs.readdirSync(out).length && !force) throw new FileInputError(`--out: ${out} is not empty (pass --force to replace it)`);
}

/** Writes every shard, the index and the spec's files to `out` (see the file header). */
export function writeRandomCheckpoint(plan: RandomCheckpointPlan, out: string, opts: WriteRandomOptions = {}): WriteRandomResult {
  checkRandomOutput(out, opts.force);
  const log = opts.log ?? (() => {});
  const t0 = Date.now();
  const parent = path.dirname(path.resolve(out));
  const free = statfsFree(parent);
  if (free !== null && free < plan.fileBytes + 64 * 2 ** 20) {
    throw new FileInputError(`--out: ${parent} has ${(free / 1e9).toFixed(2)} GB free; the checkpoint needs ${(plan.fileBytes / 1e9).toFixed(2)} GB`);
  }
  const tmp = makeTempDirNear(out);
  try {
    const el = Math.max(1024, Math.floor((opts.chunkBytes ?? 4 * 2 ** 20) / DTYPE_BYTES[plan.dtype]));
    const chunk = plan.dtype === 'f32' ? new Float32Array(el) : new Uint16Array(el);
    const ones = constChunk(plan.dtype, el, 1);
    const zeros = constChunk(plan.dtype, el, 0);
    const table = noiseTable(plan.dtype, opts.std ?? 0.02);
    let written = 0;
    for (const s of plan.shards) {
      const fd = fs.openSync(path.join(tmp, s.file), 'w');
      try {
        const w = new AlignedWriter(fd); // whole 2 MiB folios in the page cache: mapped later in huge pages
        w.write(s.header);
        for (const t of s.tensors) {
          const n = numel(t.shape);
          let state = streamSeed(opts.seed ?? 0, t.index);
          for (let done = 0; done < n; done += el) {
            const m = Math.min(el, n - done);
            const nb = m * DTYPE_BYTES[plan.dtype];
            if (t.init === 'ones') w.write(ones.subarray(0, nb));
            else if (t.init === 'zeros') w.write(zeros.subarray(0, nb));
            else {
              state = fillNoise(chunk, m, state, table);
              w.write(new Uint8Array(chunk.buffer, 0, nb));
            }
          }
        }
        w.end();
      } finally {
        fs.closeSync(fd);
      }
      written += s.header.length + s.dataBytes;
      const sec = (Date.now() - t0) / 1000;
      log(`${s.file}: ${s.tensors.length} tensors, ${(s.dataBytes / 1e9).toFixed(3)} GB (${(written / 1e6 / Math.max(sec, 1e-3)).toFixed(0)} MB/s so far)`);
    }
    if (plan.index) fs.writeFileSync(path.join(tmp, 'model.safetensors.index.json'), JSON.stringify(plan.index, null, 2) + '\n');
    for (const [rel, data] of Object.entries(plan.spec.files)) {
      const f = path.join(tmp, rel);
      if (path.isAbsolute(rel) || path.relative(tmp, f).startsWith('..')) throw new Error(`${plan.spec.title}: file '${rel}' lies outside the checkpoint directory`);
      fs.mkdirSync(path.dirname(f), { recursive: true });
      fs.writeFileSync(f, data);
    }
    replaceDir(tmp, out);
    return { seconds: (Date.now() - t0) / 1000, bytes: written };
  } catch (e) {
    discardTemp(tmp);
    throw e;
  }
}

/** Moves the finished `tmp` to `out`, replacing an existing `out` only once `tmp` is complete. */
function replaceDir(tmp: string, out: string): void {
  let old: string | null = null;
  if (fs.existsSync(out)) {
    old = `${tmp}.old`;
    trackTemp(old);
    fs.renameSync(out, old);
  }
  fs.renameSync(tmp, out);
  untrackTemp(tmp);
  if (old) discardTemp(old);
}

function constChunk(dtype: RandomDtype, n: number, v: 0 | 1): Uint8Array {
  if (dtype === 'f32') return new Uint8Array(new Float32Array(n).fill(v).buffer);
  const bits = v === 0 ? 0 : dtype === 'bf16' ? 0x3f80 : 0x3c00;
  return new Uint8Array(new Uint16Array(n).fill(bits).buffer);
}

function statfsFree(dir: string): number | null {
  try {
    const s = fs.statfsSync(dir);
    return s.bavail * s.bsize;
  } catch {
    return null;
  }
}

/** Shard listing for --dry-run and logs: one line per shard and a total. */
export function describePlan(plan: RandomCheckpointPlan): string[] {
  const lines = plan.shards.map((s) => `  ${s.file}  ${s.tensors.length} tensors  ${s.dataBytes} bytes (${(s.dataBytes / 1e9).toFixed(3)} GB)`);
  lines.push(`  total: ${plan.spec.tensors.length} tensors, ${plan.totalSize} bytes of ${plan.dtype} (${(plan.totalSize / 1e9).toFixed(3)} GB) in ${plan.shards.length} file(s)`);
  return lines;
}

/** Finds a data directory of the project: the first of `candidates` (relative to the repository root) that exists. */
export function findProjectDir(candidates: readonly string[], what: string): string {
  let root = __dirname;
  for (let i = 0; i < 6; i++) {
    if (fs.existsSync(path.join(root, 'package.json')) && fs.existsSync(path.join(root, 'models'))) break;
    root = path.dirname(root);
  }
  // from dist/… the repository root is one level above dist
  if (path.basename(root) === 'dist') root = path.dirname(root);
  const tried = candidates.map((c) => path.resolve(root, c));
  for (const d of tried) if (fs.existsSync(d)) return d;
  throw new Error(`${what}: not found (tried ${tried.join(', ')})`);
}

/** Files of a tokenizer directory that are not tokenizer files. */
const NOT_TOKENIZER = new Set(['README.md', 'test_vectors.json']);

/** Tokenizer files of a directory (`.gz` ones unpacked), for writing beside the weights. */
export function tokenizerFiles(dir: string, skip: ReadonlySet<string> = NOT_TOKENIZER): Record<string, Uint8Array> {
  const out: Record<string, Uint8Array> = {};
  for (const f of fs.readdirSync(dir).sort()) {
    if (skip.has(f)) continue;
    const data = fs.readFileSync(path.join(dir, f));
    if (f.endsWith('.gz')) out[f.slice(0, -3)] = zlib.gunzipSync(data);
    else out[f] = data;
  }
  return out;
}
