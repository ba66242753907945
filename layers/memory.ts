/**
 * Byte budget for the wasm heap. A wasm allocation past ~4 GB does not throw: `_malloc` returns 0
 * and tfjs writes the tensor over address 0 (shared/TFJS_BACKENDS.md §3). So before anything big
 * is allocated on wasm we check our own count and refuse with a clear message.
 */
import * as tf from '@tensorflow/tfjs';
import type { BackendContext } from './layout';

/** Bytes of live tensors we allow on the wasm heap (VLM_WASM_BUDGET_MB overrides; default 3.5 GB). */
export function wasmBudgetBytes(): number {
  const mb = Number(process.env.VLM_WASM_BUDGET_MB ?? '');
  return Number.isFinite(mb) && mb > 0 ? mb * 2 ** 20 : 3.5e9;
}

/** Largest single tensor that is safe on wasm (input and output of one op both need heap). */
export const WASM_MAX_TENSOR_BYTES = 2 ** 31 - 2 ** 20;

/**
 * Throws when allocating `bytes` more (as one tensor of `largestTensorBytes`) would overflow the
 * wasm heap. A no-op on other backends. `what` names the thing being allocated.
 */
export function assertFitsBackend(bytes: number, what: string, largestTensorBytes = bytes): void {
  if (tf.getBackend() !== 'wasm') return;
  const live = tf.memory().numBytes;
  const budget = wasmBudgetBytes();
  if (largestTensorBytes > WASM_MAX_TENSOR_BYTES) {
    throw new Error(`${what}: one tensor of ${(largestTensorBytes / 1e9).toFixed(2)} GB is more than the wasm ` +
      `backend can hold safely (${(WASM_MAX_TENSOR_BYTES / 1e9).toFixed(2)} GB); split it or use --backend cpu`);
  }
  if (live + bytes > budget) {
    throw new Error(`${what}: needs ${(bytes / 1e9).toFixed(2)} GB more on the wasm heap, with ` +
      `${(live / 1e9).toFixed(2)} GB already live; the budget is ${(budget / 1e9).toFixed(2)} GB ` +
      `(wasm32 heap limit 4 GB). Use --backend cpu (limited by RAM) or a smaller model.`);
  }
}

/**
 * Heap bytes a float32 weight matrix used as a right matmul operand really costs. The stock wasm
 * matmul (XNNPACK fully-connected) keeps a packed copy of every weight matrix it has multiplied
 * with, for as long as the weight lives: a Qwen2 LM head (2.2 GB) grew the heap to 3.7 GB
 * (measured). With the native kernels nothing is copied.
 */
export function weightHeapFactor(ctx: BackendContext): number {
  return ctx.backend === 'wasm' && !ctx.nativeMatmul ? 2 : 1;
}

/** Bytes of float32 weights the active backend can take (wasm: the heap budget; others: unbounded here). */
export function backendWeightBudget(): number {
  return tf.getBackend() === 'wasm' ? wasmBudgetBytes() : Infinity;
}

/** Size of the wasm backend's heap in bytes (it only grows: its high-water mark), or null on other backends. */
export function wasmHeapBytes(): number | null {
  if (tf.getBackend() !== 'wasm') return null;
  const be = tf.backend() as unknown as { wasm?: { HEAPU8?: Uint8Array } };
  return be.wasm?.HEAPU8?.length ?? null;
}

/** Peak resident set of this process so far, in MiB. */
export function peakRssMb(): number {
  return Math.round(process.resourceUsage().maxRSS / 1024);
}
