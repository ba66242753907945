/**
 * NativeWeight: a [rows, cols] matrix (torch Linear layout [out, in]) that lives outside the wasm
 * heap, in memory owned by the optional `tfjs-blas` addon: zero-copy in a read-only mmap of a
 * checkpoint file (f32 / f16 / bf16 exactly as safetensors stores them) or in an owned buffer
 * (any type, including GGML q8_0 / q4_0 blocks). See native/tfjs-blas/README.md for the addon API.
 *
 * `matmul` is an ordinary tfjs op (works inside tf.tidy, differentiable w.r.t. x and bias through
 * tf.customGrad; the weight itself is frozen). On the 'wasm' and 'cpu' backends it runs as a
 * registered kernel that hands the addon the backend's own buffers (zero-copy on the wasm heap,
 * like layers/wasm_kernels.ts); on other backends it reads x with dataSync() and uploads the result.
 * Measured on wasm for a [512, 3584] input to a q4_0 18944x3584 weight: the dataSync + upload
 * route adds ~67 ms per call (x read 60 ms, output 7.5 ms), the kernel route none.
 */
import * as tf from '@tensorflow/tfjs';
import fs from 'node:fs';
import path from 'node:path';

export type NativeType = 'f32' | 'f16' | 'bf16' | 'q8_0' | 'q4_0';
export const NATIVE_TYPES: readonly NativeType[] = ['f32', 'f16', 'bf16', 'q8_0', 'q4_0'];

/** Opaque handles created by the addon (napi externals). */
export type NativeMapping = { readonly __tfjsBlasMapping: unique symbol };
export type NativeHandle = { readonly __tfjsBlasWeight: unique symbol };

export interface NativeWeightInfo {
  type: NativeType;
  rows: number;
  cols: number;
  bytes: number;
  mapped: boolean;
  freed: boolean;
  path?: string;
}

export interface CpuFeatures {
  avx2: boolean; fma: boolean; f16c: boolean;
  avx512f: boolean; avx512bw: boolean; avx512vl: boolean; avx512vnni: boolean;
  /** kernel table in use: 'scalar' | 'avx2' | 'avx512' */
  kernels: string;
  avx512Built: boolean;
  /** '' or why the AVX-512 table was rejected at load */
  selfCheck: string;
  openblas: boolean;
  /** pool size (0 until the first parallel call) */
  threads: number;
  /** matmul runs the matrix-vector path for M <= mvMax, the panel/sgemm path above */
  mvMax: number;
  /** q4_0 above mvMax: 'int8' (x quantized to q8 blocks, int8 GEMM on repacked panels; the default)
   *  or 'f32' (TFJS_BLAS_Q4_PREFILL=f32: dequantized panels and sgemm). Absent in older builds. */
  q4Prefill?: 'int8' | 'f32';
  /** q8_0 prefill: 'int8x2' = the int8 GEMM on two-term q8 activations (VNNI CPUs), 'f32' = dequantized panels + sgemm */
  q8Prefill?: 'int8x2' | 'f32';
}

/** The native-weight part of the `tfjs-blas` addon (its `gemm`/`setNumThreads`/`info` are in wasm_kernels.ts). */
export interface NativeAddon {
  mapFile(path: string): NativeMapping;
  mappingInfo(m: NativeMapping): { path: string; size: number; weights: number };
  weightFromMap(m: NativeMapping, byteOffset: number, type: NativeType, rows: number, cols: number): NativeHandle;
  weightFromBuffer(type: NativeType, rows: number, cols: number, data: ArrayBufferView): NativeHandle;
  weightAlloc?(type: NativeType, rows: number, cols: number): NativeHandle;
  writeRows?(dst: NativeHandle, row0: number, src: NativeHandle): void;
  quantize(src: NativeHandle | Float32Array, type: NativeType, rows?: number, cols?: number): NativeHandle;
  matmul(w: NativeHandle, x: Float32Array, xOff: number, M: number, out: Float32Array, outOff: number,
    bias?: Float32Array | null, biasOff?: number): void;
  matmulT(w: NativeHandle, dy: Float32Array, dyOff: number, M: number, out: Float32Array, outOff: number): void;
  gather(w: NativeHandle, ids: Int32Array, out: Float32Array, outOff: number): void;
  /** MADV_WILLNEED over a mapped weight's pages; returns the bytes advised (0 for owned weights). */
  prefetch?(w: NativeHandle): number;
  /** mlock over a mapped weight's pages until it is released; returns the bytes locked (0: owned, or refused). */
  pin?(w: NativeHandle): number;
  /** Returns the allocator's free memory to the OS (glibc malloc_trim); true when something was released. */
  trim?(): boolean;
  dequantize(w: NativeHandle, rowStart: number, rowCount: number, out: Float32Array, outOff?: number): void;
  readBytes(w: NativeHandle, byteOffset: number, out: Uint8Array): void;
  weightInfo(w: NativeHandle): NativeWeightInfo;
  free(w: NativeHandle): void;
  cpuFeatures(): CpuFeatures;
  setThreads(n: number): void;
  setMvMax(n: number): void;
  toF16(src: Float32Array, dst: Uint16Array): void;
  /** Decode attention on a KV cache with spare capacity; offsets in floats into `heap` (layers/cached_attention.ts). */
  attention?(heap: Float32Array, qOff: number, kOff: number, vOff: number, outOff: number, B: number, Hkv: number, R: number,
    T: number, D: number, S: number, cap: number, past: number, div: number, window: number): void;
  /** Fused inference ops on the heap (layers/heap_ops.ts). */
  rmsnorm?(heap: Float32Array, xOff: number, wOff: number, outOff: number, rows: number, n: number, eps: number): void;
  rotary?(heap: Float32Array, xOff: number, cosOff: number, sinOff: number, outOff: number, rows: number, T: number, D: number): void;
  siluMul?(heap: Float32Array, gOff: number, uOff: number, outOff: number, n: number): void;
  layerNorm?(heap: Float32Array, xOff: number, wOff: number, bOff: number, outOff: number, rows: number, n: number, eps: number): void;
  /** softmax over rows of n of x / scale (div = 1) or x · scale (div = 0). */
  softmax?(heap: Float32Array, xOff: number, outOff: number, rows: number, n: number, scale: number, div: number): void;
  /** kind 0: gelu (tanh form), 1: quick_gelu, 2: silu. */
  act?(heap: Float32Array, kind: number, xOff: number, outOff: number, n: number): void;
  /**
   * L Qwen2 / Mistral decoder layers for one new position (layers/fused_decode.ts): weights 7·L
   * handles [q, k, v, o, gate, up, down] per layer; offs [xOff, outOff, cosOff, sinOff, B, H, Hkv,
   * D, window]; layerOffs 9·L [ln1Off, ln2Off, bqOff, bkOff, bvOff, kOff, vOff, cap, past] (floats
   * into heap, -1: no bias / no window).
   */
  decodeLayers?(heap: Float32Array, weights: NativeHandle[], offs: number[], layerOffs: number[], eps: number): void;
  info(): { core: string; config: string; threads: number; openblas: boolean; openblasError: string; kernels: string };
}

let cached: { addon: NativeAddon | null; reason?: string } | undefined;

/**
 * Loads the addon: the installed `tfjs-blas` package, else the in-repo build (native/tfjs-blas,
 * from the sources or from dist/). `{ addon: null, reason }` when it is not built or too old.
 */
export function loadNativeAddon(): { addon: NativeAddon | null; reason?: string } {
  if (cached) return cached;
  const candidates = ['tfjs-blas', path.resolve(__dirname, '..', 'native', 'tfjs-blas'),
    path.resolve(__dirname, '..', '..', 'native', 'tfjs-blas')];
  const errors: string[] = [];
  for (const c of candidates) {
    try {
      const a = require(c) as Partial<NativeAddon>;
      if (typeof a.matmul !== 'function' || typeof a.weightFromMap !== 'function') {
        errors.push(`${c}: built without the native-weight API (rebuild: cd native/tfjs-blas && node scripts/install.js)`);
        continue;
      }
      return (cached = { addon: a as NativeAddon });
    } catch (e) {
      errors.push(`${c}: ${(e as Error).message.split('\n')[0]}`);
    }
  }
  return (cached = { addon: null, reason: `tfjs-blas native addon not available (${errors.join('; ')})` });
}

/**
 * One line for `vlm --version`: the native weight kernels in use and the CPU features they were
 * chosen by (at run time), or why there are none.
 */
export function describeNative(): string {
  const { addon, reason } = loadNativeAddon();
  if (!addon) return `native weights: unavailable (${reason}); tiny models run on tfjs, real-size checkpoints need it: apt-get install build-essential and npm install`;
  const f = addon.cpuFeatures();
  const feats = ['avx2', 'fma', 'f16c', 'avx512f', 'avx512bw', 'avx512vl', 'avx512vnni'].filter((k) => (f as unknown as Record<string, unknown>)[k]);
  const bin = (addon as unknown as { binary?: string }).binary;
  return `native weights: ${f.kernels} kernels (CPU: ${feats.join(' ') || 'no AVX2'}${f.selfCheck ? `; ${f.selfCheck}` : ''}), ` +
    `${f.threads || 'all'} threads (VLM_THREADS), OpenBLAS ${f.openblas ? 'loaded' : 'not found (own sgemm)'}` +
    (f.q4Prefill ? `, q4_0 prefill ${f.q4Prefill === 'int8' ? 'int8 GEMM' : 'f32 sgemm (TFJS_BLAS_Q4_PREFILL)'}` : '') +
    (f.q8Prefill ? `, q8_0 prefill ${f.q8Prefill === 'int8x2' ? 'int8 GEMM on two-term activations' : 'f32 sgemm'}` : '') +
    (bin ? `, ${bin.includes('prebuilds') ? 'prebuilt binary' : 'built from source'}` : '') + `; ${describeHugePages()}`;
}

/**
 * Owned native weights (converted or quantized at load) of 2 MiB and more are advised as
 * transparent huge pages (the addon's alloc_weight_bytes): decode streams them with a TLB miss per
 * 2 MiB instead of per 4 KiB (f16 matvec ~5–15 % faster on this project's machine). Says whether the
 * kernel honours the advice (THP mode `always` or `madvise`) or VLM_NO_THP turned it off.
 */
/** An opt-out flag as the addon reads it (VLM_NO_THP in weights.c): set to anything but '' or '0'. */
export function envSet(name: string): boolean {
  const v = process.env[name];
  return !!v && v !== '0';
}

function describeHugePages(): string {
  if (envSet('VLM_NO_THP')) return 'huge pages for owned weights: off (VLM_NO_THP)';
  let mode = 'unknown';
  try {
    mode = /\[(\w+)\]/.exec(fs.readFileSync('/sys/kernel/mm/transparent_hugepage/enabled', 'utf8'))?.[1] ?? 'unknown';
  } catch {
    mode = 'unavailable';
  }
  return `huge pages for owned weights: ${mode === 'always' || mode === 'madvise' ? 'on' : 'off'} (THP ${mode})`;
}

/**
 * Hands memory the native allocator holds but no longer uses back to the OS. Converting weights at
 * load frees its chunk scratch into malloc's arenas, where it stayed resident (~310 MB after
 * VideoLLaMA 2.1's q4_0 load). A no-op without the addon or off glibc.
 */
export function releaseFreedNativeMemory(): void {
  loadNativeAddon().addon?.trim?.();
}

function need(): NativeAddon {
  const { addon, reason } = loadNativeAddon();
  if (!addon) throw new Error(reason);
  return addon;
}

/** Float32Array view of a float32 tensor's values (dataSync; a copy on wasm, zero-copy on cpu). */
function f32data(t: tf.Tensor, what: string): Float32Array {
  if (t.dtype !== 'float32') throw new Error(`NativeWeight: ${what} must be float32 (got ${t.dtype})`);
  return t.dataSync() as Float32Array;
}

// ---------------------------------------------------------------------------------------------
// Zero-copy kernels on the wasm and cpu backends
// ---------------------------------------------------------------------------------------------

 
const MM = 'NativeWeightMatMul', MMT = 'NativeWeightMatMulT';
/** Weights of the kernel calls in flight (an id travels in the attrs; entries live for one call). */
const inFlight = new Map<number, NativeWeight>();
/** How NativeWeight matmuls ran (for tests and --verbose). */
export const nativeStats = { kernelCalls: 0, dataSyncCalls: 0 };
let nextId = 1;
let kernelsFor: Set<string> | null = null;

/** The current Memory buffer (memory.grow detaches / outgrows older views: take it after allocating). */
export function wasmHeap(be: any): Float32Array {
  const mem = be.wasm.wasmMemory ?? be.wasm.asm?.memory ?? be.wasm.HEAPF32?.buffer;
  return new Float32Array(mem instanceof WebAssembly.Memory ? mem.buffer : (mem as ArrayBuffer));
}

interface Buf { arr: Float32Array; off: number }
/** Backend-owned float32 storage of a tensor, or null when the backend isn't supported. */
function inputBuf(be: any, t: tf.TensorInfo, backendName: string): Buf | null {
  if (backendName === 'wasm') {
    const off = be.dataIdMap.get(t.dataId).memoryOffset as number;
    return off % 4 === 0 ? { arr: null as unknown as Float32Array, off: off / 4 } : null; // arr: filled after output allocation
  }
  const v = be.data.get(t.dataId).values;
  return v instanceof Float32Array ? { arr: v, off: 0 } : null;
}

function runNative(kind: 'mm' | 'mmT', args: any, backendName: string): tf.TensorInfo {
  const { inputs, backend, attrs } = args;
  const w = inFlight.get(attrs.weightId as number);
  if (!w) throw new Error(`${kind === 'mm' ? MM : MMT}: no weight in flight (call it through NativeWeight)`);
  const a = need();
  const [rows, cols] = w.shape;
  const x = inputs.x as tf.TensorInfo, bias = inputs.bias as tf.TensorInfo | undefined;
  const inner = kind === 'mm' ? cols : rows, outer = kind === 'mm' ? rows : cols;
  const M = tf.util.sizeFromShape(x.shape) / inner;
  const outShape = [...x.shape.slice(0, -1), outer];
  const xb = inputBuf(backend, x, backendName), bb = bias ? inputBuf(backend, bias, backendName) : null;
  if (!xb || (bias && !bb)) throw new Error(`${MM}: unsupported tensor storage`);
  if (backendName === 'wasm') {
    const out: tf.TensorInfo = backend.makeOutput(outShape, 'float32'); // allocate FIRST (may grow memory)
    const oOff = backend.dataIdMap.get(out.dataId).memoryOffset as number;
    if (oOff === 0 && M > 0) {
      backend.disposeData(out.dataId);
      throw new Error(`wasm heap exhausted: could not allocate a [${outShape}] float32 output`);
    }
    const H = wasmHeap(backend); // ... THEN view the current buffer
    if (kind === 'mm') a.matmul(w.native, H, xb.off, M, H, oOff / 4, bb ? H : null, bb ? bb.off : 0);
    else a.matmulT(w.native, H, xb.off, M, H, oOff / 4);
    return out;
  }
  const out = new Float32Array(M * outer);
  if (kind === 'mm') a.matmul(w.native, xb.arr, 0, M, out, 0, bb ? bb.arr : null, 0);
  else a.matmulT(w.native, xb.arr, 0, M, out, 0);
  return backend.makeTensorInfo(outShape, 'float32', out);
}

/** Registers the kernels on 'wasm' and 'cpu' (once); returns the backends that have them. */
function ensureKernels(): Set<string> {
  if (kernelsFor) return kernelsFor;
  kernelsFor = new Set();
  for (const b of ['wasm', 'cpu']) {
    for (const [name, kind] of [[MM, 'mm'], [MMT, 'mmT']] as const)
      if (!tf.getKernel(name, b)) tf.registerKernel({ kernelName: name, backendName: b, kernelFunc: (args) => runNative(kind, args, b) });
    kernelsFor.add(b);
  }
  return kernelsFor;
}
 

export class NativeWeight {
  readonly type: NativeType;
  /** [rows, cols] = torch Linear [out, in] */
  readonly shape: [number, number];
  readonly bytes: number;
  private handle: NativeHandle | null;
  private readonly addon: NativeAddon;

  private constructor(addon: NativeAddon, handle: NativeHandle) {
    this.addon = addon;
    this.handle = handle;
    const i = addon.weightInfo(handle);
    this.type = i.type;
    this.shape = [i.rows, i.cols];
    this.bytes = i.bytes;
  }

  get rows(): number { return this.shape[0]; }
  get cols(): number { return this.shape[1]; }
  get disposed(): boolean { return this.handle === null; }
  /** The addon handle (for direct addon calls). */
  get native(): NativeHandle {
    if (!this.handle) throw new Error(`NativeWeight [${this.shape}] ${this.type} was disposed`);
    return this.handle;
  }
  info(): NativeWeightInfo { return this.addon.weightInfo(this.native); }

  /** Memory-maps a file read-only (keep the mapping object while creating weights; each weight keeps the file mapped). */
  static mapFile(file: string): NativeMapping { return need().mapFile(file); }

  /** Zero-copy view of `rows*cols` values of `type` at `byteOffset` in a mapped file. */
  static fromMap(mapping: NativeMapping, byteOffset: number, type: NativeType, rows: number, cols: number): NativeWeight {
    const a = need();
    return new NativeWeight(a, a.weightFromMap(mapping, byteOffset, type, rows, cols));
  }

  /** An owned weight of `rows` × `cols` in `type`, to be filled with `writeRows` (null when the addon build lacks it). */
  static alloc(type: NativeType, rows: number, cols: number): NativeWeight | null {
    const a = need();
    return a.weightAlloc ? new NativeWeight(a, a.weightAlloc(type, rows, cols)) : null;
  }

  /** Copies raw storage bytes (or f32 values for 'f32') into native memory. */
  static fromBuffer(type: NativeType, rows: number, cols: number, data: ArrayBufferView): NativeWeight {
    const a = need();
    return new NativeWeight(a, a.weightFromBuffer(type, rows, cols, data));
  }

  /** Converts a weight (e.g. a mapped bf16 one) or a [rows, cols] Float32Array to `type`, row by row. */
  static quantize(src: NativeWeight | Float32Array, type: NativeType, shape?: [number, number]): NativeWeight {
    const a = need();
    if (src instanceof NativeWeight) return new NativeWeight(a, a.quantize(src.native, type));
    if (!shape) throw new Error('NativeWeight.quantize: a Float32Array source needs its [rows, cols] shape');
    return new NativeWeight(a, a.quantize(src, type, shape[0], shape[1]));
  }

  /** y[..., rows] = x[..., cols] · Wᵀ (+ bias[rows]). Differentiable w.r.t. x and bias. */
  matmul(x: tf.Tensor, bias?: tf.Tensor): tf.Tensor {
    const [rows, cols] = this.shape;
    const h = this.native;
    const a = this.addon;
    if (x.rank < 1 || x.shape[x.rank - 1] !== cols)
      throw new Error(`NativeWeight.matmul: x has shape [${x.shape}], expected [..., ${cols}]`);
    if (bias && (bias.size !== rows || bias.shape[bias.rank - 1] !== rows))
      throw new Error(`NativeWeight.matmul: bias has shape [${bias.shape}], expected [${rows}]`);
    const outShape = [...x.shape.slice(0, -1), rows];
    const M = x.size / cols;
    const viaKernel = ensureKernels().has(tf.getBackend()) && process.env.VLM_NATIVE_DATASYNC !== '1';
    const call = (kernel: string, inputs: tf.NamedTensorMap): tf.Tensor => {
      const id = nextId++;
      inFlight.set(id, this);
      nativeStats.kernelCalls++;
      try {
        return tf.engine().runKernel(kernel, inputs, { weightId: id }) as tf.Tensor;
      } finally {
        inFlight.delete(id);
      }
    };
    const forward = (xt: tf.Tensor, bt?: tf.Tensor): tf.Tensor => {
      if (xt.dtype !== 'float32') throw new Error(`NativeWeight: x must be float32 (got ${xt.dtype})`);
      if (bt && bt.dtype !== 'float32') throw new Error(`NativeWeight: bias must be float32 (got ${bt.dtype})`);
      if (viaKernel) return call(MM, bt ? { x: xt, bias: bt } : { x: xt });
      nativeStats.dataSyncCalls++;
      const out = new Float32Array(M * rows);
      a.matmul(h, f32data(xt, 'x'), 0, M, out, 0, bt ? f32data(bt, 'bias') : null, 0);
      return tf.tensor(out, outShape, 'float32');
    };
    const dx = (dy: tf.Tensor): tf.Tensor => {
      if (viaKernel) return call(MMT, { x: dy.dtype === 'float32' ? dy : tf.cast(dy, 'float32') });
      nativeStats.dataSyncCalls++;
      const g = new Float32Array(M * cols);
      a.matmulT(h, f32data(dy, 'dy'), 0, M, g, 0);
      return tf.tensor(g, x.shape, 'float32');
    };
    // Inference (no gradient tape recording): skip the customGrad wrapper (~0.1 ms per call).
    const tapeOn = (tf.engine() as unknown as { isTapeOn?: () => boolean }).isTapeOn?.() ?? true;
    if (!tapeOn) return forward(x, bias);
    if (bias) {
      const f = tf.customGrad((...args: Array<tf.Tensor | tf.GradSaveFunc>) => {
        const xt = args[0] as tf.Tensor, bt = args[1] as tf.Tensor;
        return {
          value: forward(xt, bt),
          gradFunc: (dy: tf.Tensor) => [dx(dy), tf.tidy(() => tf.reshape(tf.sum(tf.reshape(dy, [-1, rows]), 0), bt.shape))],
        };
      });
      return (f as (a: tf.Tensor, b: tf.Tensor) => tf.Tensor)(x, bias);
    }
    const f = tf.customGrad((...args: Array<tf.Tensor | tf.GradSaveFunc>) => {
      const xt = args[0] as tf.Tensor;
      return { value: forward(xt), gradFunc: (dy: tf.Tensor) => dx(dy) };
    });
    return (f as (a: tf.Tensor) => tf.Tensor)(x);
  }

  /**
   * Asks the OS to read a mapped weight into the page cache ahead of use (an embedding table is read
   * a row per token: without it, each new token can wait on the disk). Owned weights: no-op.
   */
  prefetch(): void {
    this.addon.prefetch?.(this.native);
  }

  /**
   * Locks a mapped weight's pages in memory until it is disposed (mlock): an embedding table is read
   * a row per token at random, and once the OS reclaims its cold pages (memory pressure, or a host's
   * proactive reclaim: this project's VM pages out what was not touched for ~6 s) each new token's
   * row waits on the disk (13–25 ms measured). Returns the bytes locked: 0 for an owned weight, an
   * addon without `pin`, or where mlock is refused (RLIMIT_MEMLOCK) — then the read-ahead stays.
   */
  pin(): number {
    return this.addon.pin?.(this.native) ?? 0;
  }

  /** Rows of W as float32: ids [...] -> [..., cols] (embedding lookup; no gradient). */
  gather(ids: tf.Tensor): tf.Tensor {
    if (ids.dtype !== 'int32') throw new Error(`NativeWeight.gather: ids must be int32 (got ${ids.dtype})`);
    const idv = ids.dataSync() as Int32Array;
    const out = new Float32Array(idv.length * this.cols);
    this.addon.gather(this.native, idv, out, 0);
    return tf.tensor(out, [...ids.shape, this.cols], 'float32');
  }

  /** Rows [rowStart, rowStart+rowCount) dequantized to f32 (row-major). */
  toFloat32(rowStart = 0, rowCount = this.rows - rowStart): Float32Array {
    const out = new Float32Array(rowCount * this.cols);
    this.addon.dequantize(this.native, rowStart, rowCount, out, 0);
    return out;
  }

  /** Copies `out.length` raw storage bytes (GGML block layout for q8_0/q4_0) from `byteOffset` into `out`. */
  /** Copies `src`'s rows (same type and columns) into this owned weight from row `row0`. */
  writeRows(row0: number, src: NativeWeight): void {
    if (!this.addon.writeRows) throw new Error('tfjs-blas: this build of the addon has no writeRows (rebuild native/tfjs-blas)');
    this.addon.writeRows(this.native, row0, src.native);
  }

  readBytes(out: Uint8Array, byteOffset = 0): Uint8Array {
    this.addon.readBytes(this.native, byteOffset, out);
    return out;
  }

  /** Frees the native memory now (idempotent; the GC finalizer would do it later). */
  dispose(): void {
    if (this.handle) this.addon.free(this.handle);
    this.handle = null;
  }
}
