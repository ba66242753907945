/**
 * Native kernels that work on float32 tensors where they lie in the wasm heap: the addon reads and
 * writes the heap's Float32Array at the tensors' offsets, so a step costs one kernel call instead of
 * several wasm ops (each ~5–20 µs of engine and broadcast overhead at decode sizes; Qwen2-7B ran
 * ~1,800 of them per token). They have no gradients: callers use them only while no gradient tape
 * is recording (`heapOpsReady`), and keep the composite ops for training and other backends.
 *
 * Fused ops (kern.h, the composite path's float32 operations in the same order):
 *   rmsNormFused   w · (x · rsqrt(mean(x²) + eps))          (layers/norms.ts RMSNorm)
 *   rotaryFused    x · cos + rotate_half(x) · sin           (layers/rotary.ts applyRotary)
 *   siluMulFused   silu(g) · u                              (layers/mlp.ts GatedMLP)
 *   layerNormFused (x − mean) · rsqrt(var + eps) · w + b      (layers/norms.ts LayerNorm)
 *   softmaxFused   softmax(x / div | x · mul) over the last axis (layers/attention.ts attend)
 *   actFused       gelu (tanh form), quick_gelu, silu        (layers/mlp.ts activation)
 * Prefill- and vision-sized calls run on the addon's thread pool.
 */
import * as tf from '@tensorflow/tfjs';
import { loadNativeAddon, NativeAddon, wasmHeap } from './native_weight';

const registered = new Set<string>();

/**
 * Whether a gradient computation is under way (gradientDepth > 0: also the forward of a customGrad,
 * e.g. a checkpointed layer, where isTapeOn() is false). Outside one, intermediates may be freed
 * early and tape-less kernels may run.
 */
export function inGradient(): boolean {
  return (tf.engine() as unknown as { state: { gradientDepth: number } }).state.gradientDepth > 0;
}

/**
 * Inference-only rewrites that round differently from the composite ops (or skip their gradient
 * bookkeeping) may run: outside gradient computations, unless VLM_NATIVE_OPS=0.
 */
export function inferenceOps(): boolean {
  return process.env.VLM_NATIVE_OPS !== '0' && !inGradient();
}

/** True on the wasm backend with an addon that has `fn`, outside gradient computations (VLM_NATIVE_OPS=0 turns them off). */
export function heapOpsReady(fn: keyof NativeAddon): boolean {
  if (process.env.VLM_NATIVE_OPS === '0' || tf.getBackend() !== 'wasm') return false;
  // inside a gradient computation the composite ops run, so training is one path
  if (inGradient()) return false;
  const { addon } = loadNativeAddon();
  return !!addon && typeof addon[fn] === 'function';
}

/** Calls made per kernel (for tests and profiles). */
export const heapOpStats: Record<string, number> = {};

type HeapRun = (addon: NativeAddon, heap: Float32Array, inputs: number[], out: number, attrs: Record<string, number>) => void;

/**
 * Runs wasm kernel `name` (registered on first use): allocates a float32 output of `outShape`, then
 * `run` gets the addon, the current heap view and the float offsets of the inputs and the output.
 */
export function runHeapKernel(name: string, inputs: Record<string, tf.Tensor>, outShape: number[], attrs: Record<string, number>, run: HeapRun): tf.Tensor {
  if (!registered.has(name)) {
    tf.registerKernel({
      kernelName: name, backendName: 'wasm',
      kernelFunc: ((args: { inputs: Record<string, tf.TensorInfo>; backend: any; attrs: Record<string, unknown> }) => {
        const be = args.backend;
        const out: tf.TensorInfo = be.makeOutput(args.attrs.outShape as number[], 'float32'); // allocate first (may grow the heap) ...
        const oOff = be.dataIdMap.get(out.dataId).memoryOffset as number;
        if (oOff === 0 && tf.util.sizeFromShape(out.shape) > 0) {
          be.disposeData(out.dataId);
          throw new Error(`${name}: wasm heap exhausted allocating a [${out.shape}] float32 output`);
        }
        const offs = Object.values(args.inputs).map((t) => {
          if (t.dtype !== 'float32') throw new Error(`${name}: float32 tensors only (got ${t.dtype})`);
          return (be.dataIdMap.get(t.dataId).memoryOffset as number) / 4;
        });
        heapOpStats[name] = (heapOpStats[name] ?? 0) + 1;
        (args.attrs.run as HeapRun)(loadNativeAddon().addon!, wasmHeap(be), offs, oOff / 4, args.attrs as Record<string, number>); // ... then view the heap
        return out;
      }) as unknown as tf.KernelFunc,
    });
    registered.add(name);
  }
  return tf.engine().runKernel(name, inputs, { ...attrs, outShape, run } as unknown as tf.NamedAttrMap) as tf.Tensor;
}

/** RMSNorm over the last axis: w · (x · rsqrt(mean(x²) + eps)); x [..., n], w [n]. */
export function rmsNormFused(x: tf.Tensor, w: tf.Tensor, eps: number): tf.Tensor {
  const n = x.shape[x.shape.length - 1];
  return runHeapKernel('NativeRMSNorm', { x, w }, x.shape, { eps }, (a, H, [xo, wo], o, at) => a.rmsnorm!(H, xo, wo, o, x.size / n, n, at.eps));
}

/** x · cos + rotate_half(x) · sin; x [..., T, D], cos and sin [T, D]. */
export function rotaryFused(x: tf.Tensor, cos: tf.Tensor, sin: tf.Tensor): tf.Tensor {
  const [T, D] = cos.shape;
  return runHeapKernel('NativeRotary', { x, cos, sin }, x.shape, {}, (a, H, [xo, co, so], o) => a.rotary!(H, xo, co, so, o, x.size / D, T, D));
}

/** silu(g) · u = g · sigmoid(g) · u (same shapes). */
export function siluMulFused(g: tf.Tensor, u: tf.Tensor): tf.Tensor {
  return runHeapKernel('NativeSiluMul', { g, u }, g.shape, {}, (a, H, [go, uo], o) => a.siluMul!(H, go, uo, o, g.size));
}

/** LayerNorm over the last axis: (x − mean) · rsqrt(var + eps) · w + b; x [..., n], w and b [n]. */
export function layerNormFused(x: tf.Tensor, w: tf.Tensor, b: tf.Tensor, eps: number): tf.Tensor {
  const n = x.shape[x.shape.length - 1];
  return runHeapKernel('NativeLayerNorm', { x, w, b }, x.shape, { eps }, (a, H, [xo, wo, bo], o, at) => a.layerNorm!(H, xo, wo, bo, o, x.size / n, n, at.eps));
}

/** softmax over the last axis of x / scale.div or x · scale.mul (or x). */
export function softmaxFused(x: tf.Tensor, scale: { div: number } | { mul: number } | null): tf.Tensor {
  const n = x.shape[x.shape.length - 1];
  const div = scale && 'div' in scale ? 1 : 0;
  const s = scale ? ('div' in scale ? scale.div : scale.mul) : 1;
  return runHeapKernel('NativeSoftmax', { x }, x.shape, { s, div }, (a, H, [xo], o, at) => a.softmax!(H, xo, o, x.size / n, n, at.s, at.div));
}

/** Activations with a native kernel (heap_ops `act` kinds). */
export const FUSED_ACTS: Record<string, number> = { gelu_pytorch_tanh: 0, gelu_new: 0, quick_gelu: 1, silu: 2, swish: 2 };

/** gelu (tanh form), quick_gelu or silu of x (a name in FUSED_ACTS). */
export function actFused(name: string, x: tf.Tensor): tf.Tensor {
  const kind = FUSED_ACTS[name];
  if (kind === undefined) throw new Error(`actFused: no native kernel for '${name}'`);
  return runHeapKernel('NativeAct', { x }, x.shape, { kind }, (a, H, [xo], o, at) => a.act!(H, at.kind, xo, o, x.size));
}

/**
 * x[start : start + count] along axis 0 (one contiguous block). On wasm outside gradient
 * computations it is one copy inside the heap: tfjs-wasm's Slice first reads the whole input out
 * of the heap (readSync), ~100 ms for the 151 MB of STC activations whatever the slice's size.
 * Elsewhere tf.slice. Needs no addon.
 */
export function sliceRows<T extends tf.Tensor>(x: T, start: number, count: number): T {
  const N = x.shape[0];
  if (!Number.isInteger(start) || !Number.isInteger(count) || start < 0 || count < 0 || start + count > N) {
    throw new Error(`sliceRows: rows [${start}, ${start + count}) are outside [0, ${N}) of a [${x.shape}] tensor`);
  }
  if (x.dtype !== 'float32' || tf.getBackend() !== 'wasm' || !inferenceOps()) {
    return tf.slice(x, [start, ...x.shape.slice(1).map(() => 0)], [count, ...x.shape.slice(1)]) as T;
  }
  const row = N ? x.size / N : 0;
  return runHeapKernel('HeapSliceRows', { x }, [count, ...x.shape.slice(1)], { start, row, count },
    (_a, H, [xo], o, at) => H.copyWithin(o, xo + at.start * at.row, xo + (at.start + at.count) * at.row)) as T;
}

/** Float offset of a wasm tensor's storage in the heap. */
export function wasmOffset(t: tf.TensorInfo): number {
  const be = tf.backend() as any;
  return (be.dataIdMap.get(t.dataId).memoryOffset as number) / 4;
}

/**
 * A tensor [N, ...] whose rows are made `chunk` at a time by `make(start, count)` (each call's
 * result is owned here). On wasm outside gradients each chunk is copied into the one output as soon
 * as it exists and then freed, so the parts never coexist with the result the way they do around
 * tf.concat(parts) (2x a 167 MB STC activation at VideoLLaMA 2.1's 16 frames, the wasm heap's
 * high-water mark). Elsewhere the parts are concatenated. Needs no addon.
 */
export function assembleRows(N: number, chunk: number, make: (start: number, count: number) => tf.Tensor): tf.Tensor {
  if (!(chunk >= 1) || N < 1) throw new Error(`assembleRows: ${N} rows in chunks of ${chunk}`);
  const inHeap = tf.getBackend() === 'wasm' && inferenceOps();
  const parts: tf.Tensor[] = [];
  let out: tf.Tensor | null = null;
  try {
    for (let s = 0; s < N; s += chunk) {
      const n = Math.min(chunk, N - s);
      const part = make(s, n);
      if (part.shape[0] !== n) { part.dispose(); throw new Error(`assembleRows: a chunk of ${n} rows came back as [${part.shape}]`); }
      if (!inHeap || part.dtype !== 'float32') { parts.push(part); continue; }
      if (!out) {
        // [N, ...] with the first chunk copied in; later chunks are written where they belong
        out = runHeapKernel('HeapAssembleRows', { part }, [N, ...part.shape.slice(1)], { size: part.size }, (_a, H, [po], o, at) => H.copyWithin(o, po, po + at.size));
      } else {
        const po = wasmOffset(part);
        wasmHeap(tf.backend()).copyWithin(wasmOffset(out) + s * (part.size / n), po, po + part.size);
        heapOpStats.HeapAssembleRows = (heapOpStats.HeapAssembleRows ?? 0) + 1;
      }
      part.dispose();
    }
  } catch (e) {
    tf.dispose(parts);
    out?.dispose();
    throw e;
  }
  if (out) return out;
  const all = parts.length === 1 ? parts[0] : tf.concat(parts, 0);
  if (parts.length > 1) tf.dispose(parts);
  return all;
}

/**
 * x[..., start : start + count, ...] along `axis`: `sliceRows` when the axes before it have size 1,
 * else one heap copy per index of those axes (wasm, outside gradients); elsewhere tf.slice.
 */
export function sliceAxis<T extends tf.Tensor>(x: T, axis: number, start: number, count: number): T {
  const N = x.shape[axis], outer = x.shape.slice(0, axis).reduce((a, b) => a * b, 1);
  if (outer === 1) return tf.tidy(() => sliceRows(x.reshape(x.shape.slice(axis)), start, count).reshape([...x.shape.slice(0, axis), count, ...x.shape.slice(axis + 1)])) as T;
  if (!Number.isInteger(start) || !Number.isInteger(count) || start < 0 || count < 0 || start + count > N) {
    throw new Error(`sliceAxis: [${start}, ${start + count}) is outside [0, ${N}) on axis ${axis} of a [${x.shape}] tensor`);
  }
  const shape = [...x.shape.slice(0, axis), count, ...x.shape.slice(axis + 1)];
  if (x.dtype !== 'float32' || tf.getBackend() !== 'wasm' || !inferenceOps()) {
    return tf.slice(x, x.shape.map((_, d) => (d === axis ? start : 0)), shape) as T;
  }
  const inner = x.shape.slice(axis + 1).reduce((a, b) => a * b, 1);
  return runHeapKernel('HeapSliceRows', { x }, shape, { start, count, N, inner, outer }, (_a, H, [xo], o, at) => {
    for (let b = 0; b < at.outer; b++) {
      const from = xo + (b * at.N + at.start) * at.inner;
      H.copyWithin(o + b * at.count * at.inner, from, from + at.count * at.inner);
    }
  }) as T;
}
