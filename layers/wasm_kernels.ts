/**
 * Kernel patches for the tfjs wasm backend (tfjs 4.22, pinned exactly: these touch internals).
 *
 * 1. `installNodeWorkerShim`: lets the threaded-SIMD wasm build start its pthread workers in Node
 *    (tfjs turns threads off under Node and hands Emscripten blob: URLs that worker_threads can't
 *    load). Facts and the recipe: shared/TFJS_BACKENDS.md §2.
 * 2. `registerCpuFallbacks`: wasm kernels that are missing (conv2d filter grad, depthwise grads,
 *    UnsortedSegmentSum = the gather/embedding grad, Einsum) or wrong in 4.22 (Conv3DBackpropInputV2,
 *    MaxPoolGrad) run the cpu kernel on a copy of the inputs.
 * 3. `registerWasmBlas`: BatchMatMul and _FusedMatMul run OpenBLAS sgemm from the optional
 *    `tfjs-blas` addon, zero-copy on the wasm heap (shared/NATIVE_KERNELS.md, design (a)).
 */
import * as tf from '@tensorflow/tfjs';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

 

// ---------------------------------------------------------------------------------------------
// 2-thread wasm in Node
// ---------------------------------------------------------------------------------------------

let workerShimInstalled = false;

/** Makes Emscripten's pthread workers loadable by worker_threads (tfjs 4.22 layout). */
export function installNodeWorkerShim(): void {
  if (workerShimInstalled) return;
  const pkgDir = path.dirname(require.resolve('@tensorflow/tfjs-backend-wasm/package.json'));
  const mainJs = path.join(pkgDir, 'wasm-out', 'tfjs-backend-wasm-threaded-simd.js');
  const { wasmWorkerContents } = require(path.join(pkgDir, 'wasm-out', 'tfjs-backend-wasm-threaded-simd.worker.js')) as {
    wasmWorkerContents: string;
  };
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tfjs-vlm-wasm-'));
  const workerFile = path.join(dir, 'tfjs-backend-wasm-threaded-simd.worker.cjs');
  // The worker receives the main script as a blob URL it cannot read: point it at the file.
  fs.writeFileSync(
    workerFile,
    `URL.createObjectURL=()=>${JSON.stringify(mainJs)};URL.revokeObjectURL=()=>{};\n` +
      wasmWorkerContents.replace(/\n/g, '\\n'),
  );
  const orig = URL.createObjectURL.bind(URL);
  URL.createObjectURL = (obj: Blob | MediaSource) =>
    obj instanceof Blob && obj.type === 'application/javascript' ? workerFile : orig(obj as Blob);
  workerShimInstalled = true;
}

/**
 * Runs `fn` while `os.cpus()` reports at least 2·threads cores: the wasm C++ side caps its pool at
 * cpus/2, which is 1 on a 2-core machine.
 */
export async function withReportedCores<T>(threads: number, fn: () => Promise<T>): Promise<T> {
  const origCpus = os.cpus;
  os.cpus = () => {
    const c = origCpus();
    return Array.from({ length: Math.max(2 * threads, c.length) }, (_, i) => c[i % c.length]);
  };
  try {
    return await fn();
  } finally {
    os.cpus = origCpus;
  }
}

/** The pthread pool would keep Node alive after main returns. */
export function unrefWasmWorkers(): void {
  const be = tf.findBackend('wasm') as any;
  const P = be?.wasm?.PThread;
  if (P) [...(P.unusedWorkers ?? []), ...(P.runningWorkers ?? [])].forEach((w: any) => w.unref?.());
}

// ---------------------------------------------------------------------------------------------
// cpu fallbacks
// ---------------------------------------------------------------------------------------------

/** Kernels the wasm backend lacks in 4.22 (training needs them). */
export const WASM_MISSING_KERNELS = [
  'Conv2DBackpropFilter',
  'DepthwiseConv2dNativeBackpropInput',
  'DepthwiseConv2dNativeBackpropFilter',
  'Einsum',
  'UnsortedSegmentSum',
];
/** Kernels the wasm backend computes wrongly in 4.22 (shared/TFJS_BACKENDS.md §4). */
export const WASM_WRONG_KERNELS = ['Conv3DBackpropInputV2', 'MaxPoolGrad'];

/**
 * Registers, for each name, a wasm kernel that copies its inputs to the cpu backend, runs the cpu
 * kernel and copies the outputs back. `override` replaces an existing wasm kernel.
 */
export function registerCpuFallbacks(names: string[], override = false): string[] {
  const cpu = tf.findBackend('cpu') as tf.KernelBackend | null;
  if (!cpu) throw new Error('registerCpuFallbacks: the cpu backend is not registered');
  const done: string[] = [];
  for (const name of names) {
    const cfg = tf.getKernel(name, 'cpu');
    if (!cfg) continue;
    if (tf.getKernel(name, 'wasm')) {
      if (!override) continue;
      tf.unregisterKernel(name, 'wasm');
    }
    tf.registerKernel({
      kernelName: name,
      backendName: 'wasm',
      kernelFunc: ({ inputs, backend, attrs }) => {
        const wb = backend as any;
        const created: object[] = [];
        const toCpu = (t: tf.TensorInfo) => {
          if (t == null) return t;
          const dataId = cpu.write(wb.readSync(t.dataId), t.shape, t.dtype);
          created.push(dataId);
          return { dataId, shape: t.shape, dtype: t.dtype };
        };
        const cpuInputs = Object.fromEntries(Object.entries(inputs).map(([k, t]) => [k, toCpu(t as tf.TensorInfo)]));
        try {
          const out = cfg.kernelFunc({ inputs: cpuInputs as tf.NamedTensorInfoMap, backend: cpu, attrs });
          const outs = Array.isArray(out) ? out : [out];
          const res = outs.map((o) => {
            const r = wb.makeOutput(o.shape, o.dtype, null, cpu.readSync(o.dataId));
            cpu.disposeData(o.dataId);
            return r;
          });
          return Array.isArray(out) ? res : res[0];
        } finally {
          created.forEach((d) => cpu.disposeData(d));
        }
      },
    });
    done.push(name);
  }
  return done;
}

// ---------------------------------------------------------------------------------------------
// _FusedMatMul fix (stock kernels)
// ---------------------------------------------------------------------------------------------

/**
 * The stock wasm `_FusedMatMul` of tfjs 4.22 gives wrong results (errors of order 1 on unit-normal
 * data) for transposeA or transposeB with an activation and for batched inputs with a bias, e.g.
 * relu(a^T b) with a [53,37], b [53,29] (test/layers/backend.test.ts). BatchMatMul itself is right,
 * so this kernel composes BatchMatMul → Add(bias) → activation from the backend's own kernels.
 */
export function registerWasmFusedMatMulFix(): string[] {
  const mm = tf.getKernel('BatchMatMul', 'wasm');
  const old = tf.getKernel('_FusedMatMul', 'wasm');
  if (!mm || !old) return [];
  const k = (name: string) => {
    const cfg = tf.getKernel(name, 'wasm');
    if (!cfg) throw new Error(`wasm kernel ${name} is not registered`);
    return cfg.kernelFunc;
  };
  const kernelFunc: tf.KernelFunc = ({ inputs, backend, attrs }) => {
    const { a, b, bias, preluActivationWeights } = inputs as Record<string, tf.TensorInfo>;
    const at = attrs as unknown as { transposeA: boolean; transposeB: boolean; activation?: string; leakyreluAlpha?: number };
    const be = backend as any;
    let out = mm.kernelFunc({ inputs: { a, b }, backend, attrs: { transposeA: at.transposeA, transposeB: at.transposeB } }) as tf.TensorInfo;
    const step = (next: tf.TensorInfo) => { be.disposeData(out.dataId); out = next; };
    if (bias) step(k('Add')({ inputs: { a: out, b: bias }, backend, attrs: {} }) as tf.TensorInfo);
    switch (at.activation ?? 'linear') {
      case 'linear': break;
      case 'relu': step(k('Relu')({ inputs: { x: out }, backend, attrs: {} }) as tf.TensorInfo); break;
      case 'relu6': step(k('Relu6')({ inputs: { x: out }, backend, attrs: {} }) as tf.TensorInfo); break;
      case 'elu': step(k('Elu')({ inputs: { x: out }, backend, attrs: {} }) as tf.TensorInfo); break;
      case 'sigmoid': step(k('Sigmoid')({ inputs: { x: out }, backend, attrs: {} }) as tf.TensorInfo); break;
      case 'leakyrelu':
        step(k('LeakyRelu')({ inputs: { x: out }, backend, attrs: { alpha: at.leakyreluAlpha ?? 0.2 } }) as tf.TensorInfo);
        break;
      case 'prelu':
        step(k('Prelu')({ inputs: { x: out, alpha: preluActivationWeights }, backend, attrs: {} }) as tf.TensorInfo);
        break;
      default:
        be.disposeData(out.dataId);
        throw new Error(`_FusedMatMul: unknown activation '${at.activation}'`);
    }
    return out;
  };
  tf.unregisterKernel('_FusedMatMul', 'wasm');
  tf.registerKernel({ kernelName: '_FusedMatMul', backendName: 'wasm', kernelFunc, setupFunc: old.setupFunc });
  return ['_FusedMatMul'];
}

// ---------------------------------------------------------------------------------------------
// OpenBLAS matmul kernels (optional addon)
// ---------------------------------------------------------------------------------------------

export interface BlasAddon {
  gemm(
    A: Float32Array, aOff: number, B: Float32Array, bOff: number, C: Float32Array, cOff: number,
    tA: number, tB: number, M: number, N: number, K: number, batch: number, batchA: number, batchB: number,
    bias?: Float32Array | null, biasOff?: number, biasLen?: number, act?: number, alpha?: number,
    prelu?: Float32Array | null, preluOff?: number, preluLen?: number,
  ): void;
  setNumThreads(n: number): void;
  info(): { core: string; config: string; threads: number };
}

/** Loads the optional `tfjs-blas` addon; null when it is not installed or OpenBLAS is missing. */
export function loadBlas(threads?: number): { addon: BlasAddon | null; error?: string } {
  try {
    const addon = require('tfjs-blas') as BlasAddon;
    if (threads) addon.setNumThreads(threads);
    return { addon };
  } catch (e) {
    return { addon: null, error: (e as Error).message.split('\n')[0] };
  }
}

const ACT: Record<string, number> = { linear: 0, relu: 1, relu6: 2, prelu: 3, leakyrelu: 4, sigmoid: 5, elu: 6 };

interface MMShape { outShape: number[]; M: number; N: number; K: number; batch: number; batchA: number; batchB: number }

/** Same shape logic as tfjs's BatchMatMul (outer dims broadcast; batches indexed modulo). */
function mmShapes(a: tf.TensorInfo, b: tf.TensorInfo, tA: boolean, tB: boolean): MMShape | null {
  const ar = a.shape.length, br = b.shape.length;
  const K = tA ? a.shape[ar - 2] : a.shape[ar - 1];
  const Kb = tB ? b.shape[br - 1] : b.shape[br - 2];
  const M = tA ? a.shape[ar - 1] : a.shape[ar - 2];
  const N = tB ? b.shape[br - 2] : b.shape[br - 1];
  if (K !== Kb) return null; // let the stock kernel raise its own error
  const outerA = a.shape.slice(0, -2), outerB = b.shape.slice(0, -2);
  const batchA = tf.util.sizeFromShape(outerA), batchB = tf.util.sizeFromShape(outerB);
  // Modulo indexing equals broadcasting only when one side is unbatched or both match.
  if (batchA !== batchB && batchA !== 1 && batchB !== 1) return null;
  const outer = tf.broadcast_util.assertAndGetBroadcastShape(outerA, outerB);
  return { outShape: [...outer, M, N], M, N, K, batch: Math.max(batchA, batchB), batchA, batchB };
}

/** Broadcast length the C loop supports (`i % len`), 0 for none, -1 for "use the stock kernel". */
function bcastLen(t: tf.TensorInfo | undefined, m: MMShape): number {
  if (!t) return 0;
  const s = t.shape, n = tf.util.sizeFromShape(s), total = m.batch * m.M * m.N;
  if (n === 1) return 1;
  if (n === m.N && s[s.length - 1] === m.N) return n;
  if (n === m.M * m.N && s[s.length - 1] === m.N && s[s.length - 2] === m.M) return n;
  if (n === total) return n;
  return -1;
}

/** Number of matmuls that went through OpenBLAS (for tests and `--verbose`). */
export const blasStats = { calls: 0, fallbacks: 0 };

/** A BatchMatMul/_FusedMatMul call OpenBLAS can take: shapes, activation code, broadcast lengths. */
interface BlasCall {
  a: tf.TensorInfo; b: tf.TensorInfo; bias?: tf.TensorInfo; prelu?: tf.TensorInfo;
  tA: boolean; tB: boolean; m: MMShape; act: number; bl: number; pl: number; alpha: number;
}

/** Runs a matmul call on the stock kernel it replaced (counted in blasStats.fallbacks). */
function stockMatmul(mm: tf.KernelConfig, fusedMM: tf.KernelConfig) {
  return (args: Parameters<tf.KernelFunc>[0], fused: boolean) => {
    blasStats.fallbacks++;
    return (fused ? fusedMM : mm).kernelFunc(args);
  };
}

/** The OpenBLAS plan of a matmul kernel call, or null when the stock kernel must run it. */
function planBlasCall(args: Parameters<tf.KernelFunc>[0], fused: boolean): BlasCall | null {
  const { inputs, attrs } = args as any;
  const { a, b, bias, preluActivationWeights: prelu } = inputs as Record<string, tf.TensorInfo>;
  const tA = !!attrs.transposeA, tB = !!attrs.transposeB;
  const activation: string = fused ? (attrs.activation ?? 'linear') : 'linear';
  if (a.dtype !== 'float32' || b.dtype !== 'float32' || (bias && bias.dtype !== 'float32')) return null;
  const m = mmShapes(a, b, tA, tB);
  if (!m || m.M * m.N * m.K * m.batch === 0) return null;
  const act = ACT[activation];
  const bl = bcastLen(bias, m);
  const pl = activation === 'prelu' ? bcastLen(prelu, m) : 0;
  if (act === undefined || bl < 0 || pl < 0 || (activation === 'prelu' && pl <= 0)) return null;
  return { a, b, bias, prelu, tA, tB, m, act, bl, pl, alpha: attrs.leakyreluAlpha ?? 0.2 };
}

/**
 * Replaces the wasm BatchMatMul and _FusedMatMul kernels by OpenBLAS calls on the wasm heap.
 * Anything the addon doesn't cover (non-float32, empty, odd broadcasts) runs the stock kernel.
 */
export function registerWasmBlas(blas: BlasAddon): string[] {
  const origMM = tf.getKernel('BatchMatMul', 'wasm');
  const origFused = tf.getKernel('_FusedMatMul', 'wasm');
  if (!origMM || !origFused) throw new Error('registerWasmBlas: the wasm backend has no matmul kernels');
  const fallback = stockMatmul(origMM, origFused);
  // memory.grow detaches a non-shared ArrayBuffer, and a SharedArrayBuffer object keeps its old
  // length: always take the current buffer from the Memory object, after allocating the output.
  const heap = (be: any): Float32Array => {
    const mem: WebAssembly.Memory = be.wasm.wasmMemory ?? be.wasm.asm?.memory ?? be.wasm.HEAPF32?.buffer;
    return new Float32Array(mem instanceof WebAssembly.Memory ? mem.buffer : (mem as unknown as ArrayBuffer));
  };
  const offsetOf = (be: any, t: tf.TensorInfo): number => be.dataIdMap.get(t.dataId).memoryOffset as number;

  const run = (args: Parameters<tf.KernelFunc>[0], fused: boolean): tf.TensorInfo | tf.TensorInfo[] => {
    const p = planBlasCall(args, fused);
    if (!p) return fallback(args, fused);
    const { a, b, bias, prelu, m } = p;
    const be = args.backend as any;
    const aOff = offsetOf(be, a), bOff = offsetOf(be, b);
    const biasOff = bias ? offsetOf(be, bias) : 0, pOff = p.pl ? offsetOf(be, prelu!) : 0;
    if ((aOff | bOff | biasOff | pOff) % 4 !== 0) return fallback(args, fused);
    const out: tf.TensorInfo = be.makeOutput(m.outShape, 'float32'); // allocate FIRST (may grow memory) ...
    const cOff = offsetOf(be, out);
    if (cOff === 0) {
      be.disposeData(out.dataId);
      throw new Error(`wasm heap exhausted: could not allocate a [${m.outShape}] float32 matmul output ` +
        `(${(tf.util.sizeFromShape(m.outShape) * 4 / 2 ** 20).toFixed(0)} MiB)`);
    }
    const H = heap(be); // ... THEN take the view of the current buffer
    blas.gemm(H, aOff / 4, H, bOff / 4, H, cOff / 4, +p.tA, +p.tB, m.M, m.N, m.K,
      m.batch, m.batchA, m.batchB, bias ? H : null, biasOff / 4, p.bl, p.act, p.alpha, p.pl ? H : null, pOff / 4, p.pl);
    blasStats.calls++;
    return out;
  };
  const swap = (name: string, old: tf.KernelConfig, kernelFunc: tf.KernelFunc) => {
    tf.unregisterKernel(name, 'wasm');
    tf.registerKernel({ kernelName: name, backendName: 'wasm', kernelFunc, setupFunc: old.setupFunc });
  };
  swap('BatchMatMul', origMM, (args) => run(args, false));
  swap('_FusedMatMul', origFused, (args) => run(args, true));
  return ['BatchMatMul', '_FusedMatMul'];
}

/**
 * The same OpenBLAS kernels for the pure-JS cpu backend (opt-in: VLM_CPU_BLAS=1), whose tensors
 * are JS Float32Arrays: a float32 reference that holds a real-size model in RAM and runs at
 * sgemm speed (bench/realsize_check.ts). Anything else runs the stock kernel.
 */
export function registerCpuBlas(blas: BlasAddon): string[] {
  const origMM = tf.getKernel('BatchMatMul', 'cpu');
  const origFused = tf.getKernel('_FusedMatMul', 'cpu');
  if (!origMM || !origFused) throw new Error('registerCpuBlas: the cpu backend has no matmul kernels');
  const fallback = stockMatmul(origMM, origFused);
  const run = (args: Parameters<tf.KernelFunc>[0], fused: boolean): tf.TensorInfo | tf.TensorInfo[] => {
    const p = planBlasCall(args, fused);
    const be = args.backend as any;
    const vals = (t: tf.TensorInfo | undefined): Float32Array | null => {
      const v = t ? be.data.get(t.dataId)?.values : null;
      return v instanceof Float32Array ? v : null;
    };
    if (!p) return fallback(args, fused);
    const { m } = p;
    const A = vals(p.a), B = vals(p.b), Bias = vals(p.bias), P = vals(p.prelu);
    if (!A || !B || (p.bias && !Bias) || (p.pl && !P)) return fallback(args, fused);
    const C = new Float32Array(tf.util.sizeFromShape(m.outShape));
    blas.gemm(A, 0, B, 0, C, 0, +p.tA, +p.tB, m.M, m.N, m.K, m.batch, m.batchA, m.batchB, Bias, 0, p.bl, p.act, p.alpha, p.pl ? P : null, 0, p.pl);
    blasStats.calls++;
    return be.makeTensorInfo(m.outShape, 'float32', C);
  };
  for (const [name, old, fused] of [['BatchMatMul', origMM, false], ['_FusedMatMul', origFused, true]] as const) {
    tf.unregisterKernel(name, 'cpu');
    tf.registerKernel({ kernelName: name, backendName: 'cpu', kernelFunc: (args) => run(args, fused), setupFunc: old.setupFunc });
  }
  return ['BatchMatMul', '_FusedMatMul'];
}
