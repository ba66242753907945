/**
 * NaViT bucketised position ids of the SigLIP-NaViT vision tower (MiniCPM-V 2.6
 * `modeling_navit_siglip.py` `SiglipVisionEmbeddings.forward`):
 *
 *   boundaries   = torch.arange(1 / S, 1.0, 1 / S)                 S = image_size // patch_size
 *   fractional_h = torch.arange(0, 1 - 1e-6, 1 / nb_patches_h)      nb_patches_h an int32 0-d tensor
 *   bucket_h     = torch.bucketize(fractional_h, boundaries, right=True)      (same for w)
 *   ids[b, :h·w] = (bucket_h[:, None] * S + bucket_w).flatten(); padded patches keep 0
 *
 * Whether a fractional coordinate lands on the left or right of a boundary depends on float32
 * rounding inside `torch.arange`, so both aranges are reproduced bit for bit (torch 1.13
 * `aten/src/ATen/native/RangeFactories.cpp` + `native/cpu/RangeFactoriesKernel.cpp`):
 *
 * - the length is ceil((end − start) / step) in double;
 * - the CPU kernel runs `cpu_serial_kernel_vec`: blocks of 2·V elements come from
 *   `Vectorized<float>::arange(base, step)` with base = float(start + step·i) rounded once to
 *   float32 and element k = float(base + k·step) (double arithmetic); the tail (< 2·V elements)
 *   is the scalar float(start + step·i). V = 8 floats for the DEFAULT and AVX2 builds, 16 for
 *   AVX512, which torch ≥ 1.12 only uses when ATEN_CPU_CAPABILITY=avx512 (pytorch#80253). The
 *   grids where this matters (e.g. S = 70 and a side of 49, 58 or 77 patches) are in the tests.
 * - `1 / nb_patches_h` is `Tensor.__rtruediv__` = reciprocal in float32, so the step is
 *   float32(1/nb), widened to double when it becomes an arange Scalar.
 *
 * Checked against torch 1.13.0a0 for S ∈ {8, 16, 27, 32, 64, 70} and every side 1..300 with
 * V = 8 (default, AVX2) and V = 16 (avx512): identical bucket ids in all 3 × 1800 cases.
 */

/** Vector width (floats) of torch's CPU kernels: 8 by default (DEFAULT/AVX2), 16 with avx512. */
export const TORCH_CPU_VEC_FLOATS = 8;

/**
 * `torch.arange(start, end, step)` with a float32 result on the CPU (torch 1.13), as a
 * Float32Array. `vecWidth` is `Vectorized<float>::size()` of the build (see the header).
 */
export function torchArangeF32(start: number, end: number, step: number, vecWidth = TORCH_CPU_VEC_FLOATS): Float32Array {
  if (!(step > 0) || !Number.isFinite(step)) throw new Error(`torchArangeF32: step must be a positive number, got ${step}`);
  const n = Math.max(0, Math.ceil((end - start) / step)); // RangeFactories.cpp: size_d in double
  const out = new Float32Array(n);
  const vecEnd = Math.floor(n / (2 * vecWidth)) * 2 * vecWidth; // vectorized_loop: i <= n - 2·V
  for (let i = 0; i < vecEnd; i += vecWidth) {
    const base = Math.fround(start + step * i); // Vectorized<float>::arange(float base, double step)
    for (let k = 0; k < vecWidth; k++) out[i + k] = Math.fround(base + k * step);
  }
  for (let i = vecEnd; i < n; i++) out[i] = Math.fround(start + step * i); // basic_loop tail
  return out;
}

/** `torch.bucketize(values, boundaries, right=True)`: the number of boundaries ≤ each value. */
export function bucketizeRight(values: Float32Array, boundaries: Float32Array): Int32Array {
  const out = new Int32Array(values.length);
  for (let i = 0; i < values.length; i++) {
    // boundaries are sorted: binary search for the first boundary > value
    let lo = 0, hi = boundaries.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (boundaries[mid] <= values[i]) lo = mid + 1;
      else hi = mid;
    }
    out[i] = lo;
  }
  return out;
}

/** Bucket of each of `nb` patches along one side, for a position grid of S × S. */
export function navitBuckets(nb: number, S: number, vecWidth = TORCH_CPU_VEC_FLOATS): Int32Array {
  if (!Number.isInteger(nb) || nb < 1) throw new Error(`navitBuckets: the number of patches must be a positive integer, got ${nb}`);
  const boundaries = torchArangeF32(1 / S, 1.0, 1 / S, vecWidth);
  const step = Math.fround(1 / nb); // int32 tensor reciprocal → float32
  const frac = torchArangeF32(0, 1 - 1e-6, step, vecWidth);
  if (frac.length !== nb) throw new Error(`navitBuckets: arange produced ${frac.length} coordinates for ${nb} patches`);
  return bucketizeRight(frac, boundaries);
}

/**
 * Position ids [B, maxPatches] (row-major per image) for patch grids `tgtSizes` = [h, w] per
 * image; positions past h·w stay 0 like upstream's `torch.full(..., 0)`.
 */
export function navitPositionIds(tgtSizes: readonly (readonly [number, number])[], maxPatches: number, S: number, vecWidth = TORCH_CPU_VEC_FLOATS): Int32Array {
  const ids = new Int32Array(tgtSizes.length * maxPatches);
  const cache = new Map<number, Int32Array>();
  const buckets = (n: number) => {
    let b = cache.get(n);
    if (!b) cache.set(n, (b = navitBuckets(n, S, vecWidth)));
    return b;
  };
  tgtSizes.forEach(([h, w], b) => {
    if (h * w > maxPatches) throw new Error(`tgt_sizes[${b}] = [${h}, ${w}] has ${h * w} patches, more than the ${maxPatches} positions`);
    const bh = buckets(h), bw = buckets(w);
    for (let r = 0; r < h; r++) for (let c = 0; c < w; c++) ids[b * maxPatches + r * w + c] = bh[r] * S + bw[c];
  });
  return ids;
}
