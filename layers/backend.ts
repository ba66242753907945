/**
 * Backend selection: tfjs-node-gpu > tfjs-node > wasm > cpu, overridable with `--backend NAME`
 * or the environment variable VLM_BACKEND, and reported by `backendInfo()`.
 *
 * - tfjs-node(-gpu) are optional peer dependencies: they need libtensorflow, which their install
 *   script downloads; where they can be required they win.
 * - wasm (the offline default): 1 thread plus the OpenBLAS kernels when the optional `tfjs-blas`
 *   addon is built (best pairing, shared/NATIVE_KERNELS.md §4), otherwise 2 threads through the
 *   Node worker shim. VLM_WASM_THREADS overrides the thread count, VLM_NO_BLAS=1 turns the addon
 *   off, VLM_BLAS_THREADS sets its threads (default: all cores).
 * - cpu: pure JS, slow, but holds tensors up to the machine's RAM. VLM_CPU_BLAS=1 runs its
 *   BatchMatMul/_FusedMatMul on the OpenBLAS addon (a fast float32 reference at real size).
 * On wasm and cpu, UnsortedSegmentSum (tf.gather's gradient) is replaced by a linear-time kernel
 * (segment_sum.ts). On every backend the backward pass frees gradients and saved tensors as it
 * goes (backprop.ts).
 */
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import * as wasm from '@tensorflow/tfjs-backend-wasm';
import os from 'node:os';
import {
  BlasAddon, WASM_MISSING_KERNELS, WASM_WRONG_KERNELS, installNodeWorkerShim, loadBlas,
  registerCpuBlas, registerCpuFallbacks, registerWasmBlas, registerWasmFusedMatMulFix, unrefWasmWorkers, withReportedCores,
} from './wasm_kernels';
import { registerSegmentSum } from './segment_sum';
import { installLeanBackprop } from './backprop';
import type { BackendContext } from './layout';

export const BACKEND_NAMES = ['tensorflow-gpu', 'tensorflow', 'wasm', 'cpu'] as const;
export type BackendName = (typeof BACKEND_NAMES)[number];

/** Accepted spellings for `--backend` / VLM_BACKEND. */
const ALIASES: Record<string, BackendName> = {
  'tfjs-node-gpu': 'tensorflow-gpu', 'node-gpu': 'tensorflow-gpu', 'tensorflow-gpu': 'tensorflow-gpu', gpu: 'tensorflow-gpu',
  'tfjs-node': 'tensorflow', node: 'tensorflow', tensorflow: 'tensorflow',
  wasm: 'wasm', cpu: 'cpu',
};

export interface BackendOptions {
  /** Backend name or alias; default: VLM_BACKEND, else the first that loads in preference order. */
  backend?: string;
  /** wasm threads (default: 1 with OpenBLAS, 2 without; VLM_WASM_THREADS). */
  wasmThreads?: number;
  /** Use the OpenBLAS kernels on wasm when available (default true; VLM_NO_BLAS=1 turns off). */
  blas?: boolean;
  /** OpenBLAS threads (default: the number of cores; VLM_BLAS_THREADS). */
  blasThreads?: number;
}

export interface BackendInfo {
  /** tfjs backend name actually active (`tensorflow` for tfjs-node and tfjs-node-gpu). */
  backend: string;
  /** What was asked for and why this one was picked. */
  requested: string;
  /** wasm threads (wasm only). */
  threads?: number;
  /** Kernels replaced or added on top of the stock backend. */
  kernels: string[];
  /** OpenBLAS core and threads when the native kernels are active. */
  blas?: string;
  /** BatchMatMul/_FusedMatMul run on the native kernels. */
  nativeMatmul: boolean;
  /** Why a preferred backend or the native kernels were not used. */
  notes: string[];
}

let current: BackendInfo | null = null;

/** Resolves a user-facing backend name; throws naming the argument on an unknown name. */
export function resolveBackendName(name: string, argName = '--backend'): BackendName {
  const r = ALIASES[name.trim().toLowerCase()];
  if (!r) {
    throw new Error(`${argName}: unknown backend '${name}'; expected one of tfjs-node-gpu, tfjs-node, wasm, cpu`);
  }
  return r;
}

function envInt(name: string): number | undefined {
  const v = process.env[name];
  if (v === undefined || v === '') return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new Error(`environment variable ${name}: expected a positive integer, got '${v}'`);
  return n;
}

function tryRequireNode(gpu: boolean): string | null {
  try {
    require(gpu ? '@tensorflow/tfjs-node-gpu' : '@tensorflow/tfjs-node');
    return null;
  } catch (e) {
    return `${gpu ? '@tensorflow/tfjs-node-gpu' : '@tensorflow/tfjs-node'} not loadable (${(e as Error).message.split('\n')[0]})`;
  }
}

async function initWasm(opts: BackendOptions, info: BackendInfo): Promise<void> {
  const useBlas = opts.blas ?? process.env.VLM_NO_BLAS !== '1';
  let blas: BlasAddon | null = null;
  if (useBlas) {
    const r = loadBlas(opts.blasThreads ?? envInt('VLM_BLAS_THREADS') ?? os.cpus().length);
    blas = r.addon;
    if (!blas) info.notes.push(`native kernels unavailable (${r.error}); stock wasm matmul in use`);
  } else {
    info.notes.push('native kernels turned off (VLM_NO_BLAS=1 or blas: false)');
  }
  const threads = opts.wasmThreads ?? envInt('VLM_WASM_THREADS') ?? (blas ? 1 : 2);
  if (threads > 1) {
    installNodeWorkerShim();
    tf.env().set('WASM_HAS_MULTITHREAD_SUPPORT', true);
    wasm.setThreadsCount(threads);
  } else {
    tf.env().set('WASM_HAS_MULTITHREAD_SUPPORT', false);
  }
  // The emscripten runtime and tfjs print raw traces (console.*) when instantiation fails, e.g.
  // `RuntimeError: Aborted(RangeError: WebAssembly.instantiate(): Out of memory ...)` under
  // `ulimit -v`: keep them and report one line instead.
  const printed: string[] = [];
  const saved = { log: console.log, warn: console.warn, error: console.error };
  const keep = (...a: unknown[]) => {
    printed.push(a.map((x) => (x instanceof Error ? x.message : String(x))).join(' '));
  };
  console.log = console.warn = console.error = keep;
  let ok = false;
  try {
    ok = await withReportedCores(threads, async () => {
      const r = await tf.setBackend('wasm');
      await tf.ready();
      return r;
    });
  } catch (e) {
    printed.push((e as Error).message);
  } finally {
    Object.assign(console, saved);
  }
  if (!ok) {
    const cause = printed.map((l) => /WebAssembly\.[\w]+\(\): [^)\n]*/.exec(l)?.[0]).find(Boolean) ?? printed.find((l) => l.trim())?.split('\n')[0];
    const hint = cause && /out of memory/i.test(cause) ? ' (a limited address space, e.g. ulimit -v, leaves no room for wasm memory; raise it or use --backend cpu)' : '';
    throw new Error(`the wasm backend failed to initialize${cause ? `: ${cause}` : ''}${hint}`);
  }
  for (const l of printed) if (l.trim()) saved.warn(l);
  unrefWasmWorkers();
  info.threads = wasm.getThreadsCount();
  info.kernels.push(...registerCpuFallbacks(WASM_MISSING_KERNELS).map((k) => `${k}(cpu)`));
  info.kernels.push(...registerCpuFallbacks(WASM_WRONG_KERNELS, true).map((k) => `${k}(cpu)`));
  if (blas) {
    info.kernels.push(...registerWasmBlas(blas).map((k) => `${k}(openblas)`));
    info.nativeMatmul = true;
  } else {
    info.kernels.push(...registerWasmFusedMatMulFix().map((k) => `${k}(composed)`));
  }
  if (blas) {
    const bi = blas.info();
    info.blas = `OpenBLAS ${bi.core}, ${bi.threads} threads`;
  }
}

/**
 * Picks and initialises the backend once per process. Later calls return the same info unless a
 * different backend is explicitly asked for.
 */
export async function initBackend(opts: BackendOptions = {}): Promise<BackendInfo> {
  const asked = opts.backend ?? process.env.VLM_BACKEND;
  const argName = opts.backend !== undefined ? '--backend' : 'VLM_BACKEND';
  const want = asked ? resolveBackendName(asked, argName) : undefined;
  if (current && (!want || want === current.requested || want === current.backend)) return current;

  const info: BackendInfo = { backend: '', requested: want ?? 'auto', kernels: [], notes: [], nativeMatmul: false };
  const order: BackendName[] = want ? [want] : [...BACKEND_NAMES];
  for (const name of order) {
    if (name === 'tensorflow-gpu' || name === 'tensorflow') {
      const err = tryRequireNode(name === 'tensorflow-gpu');
      if (err) {
        if (want) throw new Error(`${argName}: ${err}. Install it where libtensorflow can be downloaded, or use wasm/cpu.`);
        info.notes.push(err);
        continue;
      }
      if (!(await tf.setBackend('tensorflow'))) throw new Error('the tensorflow backend failed to initialize');
      await tf.ready();
      info.backend = 'tensorflow';
      break;
    }
    if (name === 'wasm') {
      try {
        await initWasm(opts, info);
        info.backend = 'wasm';
        break;
      } catch (e) {
        if (want) throw e;
        info.notes.push(`wasm failed: ${(e as Error).message}`);
        continue;
      }
    }
    if (!(await tf.setBackend('cpu'))) throw new Error('the cpu backend failed to initialize');
    await tf.ready();
    // the cpu backend's first write prints a multi-line "install tfjs-node" banner: we report the
    // backend ourselves (--version, VLM_DEBUG), so consume that first write quietly
    const warn = console.warn;
    console.warn = () => undefined;
    try {
      tf.tensor1d([0]).dispose();
    } finally {
      console.warn = warn;
    }
    info.backend = 'cpu';
    if (process.env.VLM_CPU_BLAS === '1') {
      const r = loadBlas(opts.blasThreads ?? envInt('VLM_BLAS_THREADS') ?? os.cpus().length);
      if (r.addon) info.kernels.push(...registerCpuBlas(r.addon).map((k) => `${k}(openblas)`));
      else info.notes.push(`VLM_CPU_BLAS=1: native kernels unavailable (${r.error})`);
    }
    break;
  }
  if (info.backend === 'wasm' || info.backend === 'cpu') {
    // tf.gather's gradient; the stock kernel is O(segments · size) (segment_sum.ts)
    if (registerSegmentSum([info.backend]).length) {
      info.kernels = [...info.kernels.filter((k) => !k.startsWith('UnsortedSegmentSum(')), 'UnsortedSegmentSum(linear)'];
    }
  }
  installLeanBackprop(); // intermediate gradients freed as the backward pass goes (backprop.ts)
  current = info;
  return info;
}

/** The info of the initialised backend, or null before `initBackend`. */
export function backendInfo(): BackendInfo | null {
  return current;
}

/**
 * What weight layouts and budgets depend on, from the initialised backend: loaders take it
 * explicitly (a model built before `initBackend` gets the same layout, chosen at load).
 * VLM_LINEAR_LAYOUT=out_in|in_out overrides the Linear layout (for measurements).
 */
export function backendContext(): BackendContext {
  if (!current) throw new Error('initBackend() must run before weights are loaded: their memory layout depends on the backend');
  const env = process.env.VLM_LINEAR_LAYOUT;
  const preferOutIn = env === 'out_in' ? true : env === 'in_out' ? false : current.nativeMatmul;
  return { backend: current.backend, nativeMatmul: current.nativeMatmul, preferOutIn };
}

/** One line for `--version` and debug output. */
export function describeBackend(info: BackendInfo): string {
  const parts = [`backend ${info.backend}`];
  if (info.threads !== undefined) parts.push(`${info.threads} thread${info.threads > 1 ? 's' : ''}`);
  if (info.blas) parts.push(info.blas);
  if (info.kernels.length) parts.push(`kernels: ${info.kernels.join(', ')}`);
  return parts.join('; ');
}
