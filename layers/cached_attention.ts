/**
 * Decode attention that reads the KV cache where it lies (wasm backend + native addon).
 *
 * A decode step (T = 1 new position, nothing masked) on the composite path costs, per layer, a
 * concat that copies the whole cache ([B, Hkv, S, D] twice) and two tiny batched matmuls: at 1024
 * cached positions on Qwen2-7B that was ~55 ms of a ~250 ms token. Here the cache keeps spare
 * capacity ([B, Hkv, cap, D], `KVCacheLayer` writes new rows in place) and one native call computes
 * softmax(q kᵀ / √D) v for every query row straight from it, in float32 like `attend`.
 *
 * Shape letters: B batch, Hkv KV heads, R = G·T query rows per KV head, D head dim, S valid positions.
 */
import * as tf from '@tensorflow/tfjs';
import { loadNativeAddon, wasmHeap } from './native_weight';

const KERNEL = 'NativeCachedAttention';
let registered = false;
/** Calls made (for tests and profiles). */
export const cachedAttentionStats = { calls: 0 };

/** True when cached attention can run: the wasm backend is active and the addon has `attention` (VLM_NATIVE_ATTENTION=0 turns it off). */
export function cachedAttentionReady(): boolean {
  if (process.env.VLM_NATIVE_ATTENTION === '0' || tf.getBackend() !== 'wasm') return false;
  const { addon } = loadNativeAddon();
  if (!addon || typeof addon.attention !== 'function') return false;
  if (!registered) {
    tf.registerKernel({ kernelName: KERNEL, backendName: 'wasm', kernelFunc: runKernel as unknown as tf.KernelFunc });
    registered = true;
  }
  return true;
}

/** Float offset of a wasm tensor's storage. */
export function wasmOffset(t: tf.TensorInfo): number {
  const be = tf.backend() as any;
  const off = be.dataIdMap.get(t.dataId).memoryOffset as number;
  if (off % 4 !== 0) throw new Error(`${KERNEL}: unaligned tensor storage`);
  return off / 4;
}

/** Copies `src`'s floats into `dst` at float offset `dstOff` + i·dstStride for block i of `blockLen` floats (wasm heap to wasm heap). */
export function copyBlocksInHeap(src: tf.Tensor, srcStride: number, dst: tf.Tensor, dstOff: number, dstStride: number, blocks: number, blockLen: number): void {
  const H = wasmHeap(tf.backend());
  const s = wasmOffset(src), d = wasmOffset(dst) + dstOff;
  for (let i = 0; i < blocks; i++) H.copyWithin(d + i * dstStride, s + i * srcStride, s + i * srcStride + blockLen);
}

function runKernel(args: { inputs: { q: tf.TensorInfo; k: tf.TensorInfo; v: tf.TensorInfo }; backend: any; attrs: Record<string, number> }): tf.TensorInfo {
  const { inputs: { q, k, v }, backend, attrs } = args;
  const [B, Hkv, R, D] = q.shape, cap = k.shape[2];
  const out: tf.TensorInfo = backend.makeOutput(q.shape, 'float32'); // allocate first (may grow the heap) ...
  const oOff = backend.dataIdMap.get(out.dataId).memoryOffset as number;
  if (oOff === 0) {
    backend.disposeData(out.dataId);
    throw new Error(`wasm heap exhausted: could not allocate a [${q.shape}] float32 output`);
  }
  const H = wasmHeap(backend); // ... then view the current buffer
  const off = (t: tf.TensorInfo) => (backend.dataIdMap.get(t.dataId).memoryOffset as number) / 4;
  cachedAttentionStats.calls++;
  loadNativeAddon().addon!.attention!(H, off(q), off(k), off(v), oOff / 4, B, Hkv, R, attrs.T, D, attrs.S, cap, attrs.past, attrs.div, attrs.window);
  return out;
}

/**
 * softmax(q kᵀ / div) v over the first S positions of capacity buffers k, v [B, Hkv, cap, D];
 * q [B, Hkv, R, D] with R = G·T rows (row g·T + t at position past + t sees keys ≤ past + t, and
 * ≥ past + t − window when window ≥ 0). Returns [B, Hkv, R, D].
 */
export function cachedAttention(q: tf.Tensor4D, k: tf.Tensor4D, v: tf.Tensor4D, opts: { S: number; past: number; T: number; div: number; window?: number }): tf.Tensor4D {
  if (!cachedAttentionReady()) throw new Error(`${KERNEL}: needs the wasm backend and the native addon`);
  if (q.dtype !== 'float32' || k.dtype !== 'float32' || v.dtype !== 'float32') throw new Error(`${KERNEL}: float32 tensors only`);
  return tf.engine().runKernel(KERNEL, { q, k, v }, { S: opts.S, past: opts.past, T: opts.T, div: opts.div, window: opts.window ?? -1 }) as tf.Tensor4D;
}
