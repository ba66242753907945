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
import { heapOpsReady, heapOpStats, runHeapKernel, wasmOffset } from './heap_ops';
import { wasmHeap } from './native_weight';

const KERNEL = 'NativeCachedAttention';

/** True when cached attention can run: the wasm backend, the addon's `attention`, no gradient tape (VLM_NATIVE_ATTENTION=0 turns it off). */
export function cachedAttentionReady(): boolean {
  return process.env.VLM_NATIVE_ATTENTION !== '0' && heapOpsReady('attention');
}

/** Calls made (for tests and profiles). */
export const cachedAttentionStats = { get calls(): number { return heapOpStats[KERNEL] ?? 0; } };


/** Copies block i of `blockLen` floats from `src` (i·srcStride) into `dst` at dstOff + i·dstStride (wasm heap to wasm heap). */
export function copyBlocksInHeap(src: tf.Tensor, srcStride: number, dst: tf.Tensor, dstOff: number, dstStride: number, blocks: number, blockLen: number): void {
  const H = wasmHeap(tf.backend());
  const s = wasmOffset(src), d = wasmOffset(dst) + dstOff;
  for (let i = 0; i < blocks; i++) H.copyWithin(d + i * dstStride, s + i * srcStride, s + i * srcStride + blockLen);
}

/**
 * A new [B, Hkv, S, D] tensor holding the first S positions of a capacity buffer [B, Hkv, cap, D],
 * copied inside the heap (tf.slice on wasm would first copy the whole buffer out of the heap).
 */
export function firstPositions(buf: tf.Tensor4D, S: number): tf.Tensor4D {
  const [B, Hkv, cap, D] = buf.shape;
  if (S > cap) throw new Error(`firstPositions: ${S} positions of a buffer with ${cap}`);
  return runHeapKernel('HeapFirstPositions', { buf }, [B, Hkv, S, D], {}, (_a, H, [bo], o) => {
    for (let i = 0; i < B * Hkv; i++) H.copyWithin(o + i * S * D, bo + i * cap * D, bo + i * cap * D + S * D);
  }) as tf.Tensor4D;
}

/**
 * softmax(q kᵀ / div) v over the first S positions of capacity buffers k, v [B, Hkv, cap, D];
 * q [B, Hkv, R, D] with R = G·T rows (row g·T + t at position past + t sees keys ≤ past + t, and
 * ≥ past + t − window when window ≥ 0). Returns [B, Hkv, R, D].
 */
export function cachedAttention(q: tf.Tensor4D, k: tf.Tensor4D, v: tf.Tensor4D, opts: { S: number; past: number; T: number; div: number; window?: number }): tf.Tensor4D {
  if (!cachedAttentionReady()) throw new Error(`${KERNEL}: needs the wasm backend and the native addon`);
  const [B, Hkv, R, D] = q.shape, cap = k.shape[2];
  const { S, past, T, div } = opts, window = opts.window ?? -1;
  return runHeapKernel(KERNEL, { q, k, v }, q.shape, {}, (a, H, [qo, ko, vo], o) =>
    a.attention!(H, qo, ko, vo, o, B, Hkv, R, T, D, S, cap, past, div, window)) as tf.Tensor4D;
}
