/**
 * A linear-time `UnsortedSegmentSum` kernel for the wasm and cpu backends.
 *
 * `tf.gather`'s gradient is an UnsortedSegmentSum (tfjs-core `GatherV2_grad`), so every embedding
 * lookup, the MiniCPM-V splice gather and the loss's row gather need it in training. tfjs 4.22's
 * cpu kernel (and so the wasm fallback of wasm_kernels.ts, which runs it) loops over the segments
 * and masks the WHOLE input for each one: O(numSegments · size). For a 1024-token vocabulary that
 * was 10 s of a 10.7 s training step of the tiny MiniCPM-V fixture; for a 151k vocabulary it would
 * never finish. This one adds each row into its segment once: O(size), summed in float64 and
 * rounded once to float32 (torch's embedding backward sums in float32; the difference is round-off).
 *
 * Semantics (tf.math.unsorted_segment_sum): out[s, ...] = Σ x[i, ...] over i with ids[i] = s;
 * `segmentIds` covers the leading axes of `x`; ids outside [0, numSegments) contribute nothing.
 */
import * as tf from '@tensorflow/tfjs';

 

/** Host computation: x (flat, `n` rows of `inner` values) summed by `ids` into `numSegments` rows. */
export function segmentSumHost(x: ArrayLike<number>, ids: ArrayLike<number>, numSegments: number, inner: number, dtype: 'float32' | 'int32'): Float32Array | Int32Array {
  const acc = new Float64Array(numSegments * inner);
  for (let i = 0; i < ids.length; i++) {
    const s = ids[i];
    if (s < 0 || s >= numSegments) continue;
    const src = i * inner, dst = s * inner;
    for (let k = 0; k < inner; k++) acc[dst + k] += x[src + k];
  }
  return dtype === 'int32' ? Int32Array.from(acc) : Float32Array.from(acc);
}

const kernelFunc = (backendName: 'wasm' | 'cpu'): tf.KernelFunc => ({ inputs, backend, attrs }) => {
  const { x, segmentIds } = inputs as { x: tf.TensorInfo; segmentIds: tf.TensorInfo };
  const { numSegments } = attrs as unknown as { numSegments: number };
  const be = backend as any;
  const lead = x.shape.slice(0, segmentIds.shape.length);
  if (lead.some((d, i) => d !== segmentIds.shape[i])) {
    throw new Error(`UnsortedSegmentSum: segmentIds [${segmentIds.shape}] must be a prefix of x [${x.shape}]`);
  }
  const inner = tf.util.sizeFromShape(x.shape.slice(segmentIds.shape.length));
  const dtype = x.dtype === 'int32' ? 'int32' : 'float32';
  const vals = segmentSumHost(be.readSync(x.dataId) as ArrayLike<number>, be.readSync(segmentIds.dataId) as ArrayLike<number>, numSegments, inner, dtype);
  const shape = [numSegments, ...x.shape.slice(segmentIds.shape.length)];
  return backendName === 'wasm' ? be.makeOutput(shape, dtype, null, vals) : be.makeTensorInfo(shape, dtype, vals);
};

/**
 * Registers the kernel for each of `backends` that is registered, replacing what is there (the
 * stock cpu kernel, or the cpu fallback on wasm). Returns the backends it was registered for.
 */
export function registerSegmentSum(backends: readonly ('wasm' | 'cpu')[] = ['wasm', 'cpu']): string[] {
  const done: string[] = [];
  for (const b of backends) {
    if (!tf.findBackendFactory(b)) continue;
    if (tf.getKernel('UnsortedSegmentSum', b)) tf.unregisterKernel('UnsortedSegmentSum', b);
    tf.registerKernel({ kernelName: 'UnsortedSegmentSum', backendName: b, kernelFunc: kernelFunc(b) });
    done.push(b);
  }
  return done;
}
