/*
 * Kernel bodies, compiled three times (kernels_scalar.c, kernels_avx2.c, kernels_avx512.c) with
 * different ISA flags; SFX(name) gives each copy its own symbol names. Intrinsics are guarded by
 * the compiler's ISA macros, so the scalar copy is plain C. Weight pointers may be unaligned
 * (a mapped safetensors tensor starts wherever the file puts it): only unaligned loads are used.
 */
#include "nw.h"
#include <math.h>
#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

/* block scales: F16C in registers where available (a 256 KB table lookup misses cache while
   weights stream through it), the table otherwise */
/* 1 where the int8 dot products are VNNI's (u8 x s8 summed straight into int32, no int16 step) */
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
#define NW_VNNI 1
#else
#define NW_VNNI 0
#endif

#if defined(__F16C__)
#define NW_H2F(h) _cvtsh_ss(h)
#else
#define NW_H2F(h) nw_f16_to_f32(h)
#endif

#if defined(__AVX2__)
static inline float SFX(hsum8)(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
static inline __m256 SFX(ld_f16x8)(const uint16_t *p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)); }
static inline __m256 SFX(ld_bf16x8)(const uint16_t *p) {
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16));
}
/* 32 q4_0 nibbles -> 32 int8 in [-8, 7], weight order 0..31 */
static inline __m256i SFX(unpack_q4)(const uint8_t *qs) {
  __m128i t = _mm_loadu_si128((const __m128i *)qs);
  __m256i v = _mm256_set_m128i(_mm_srli_epi16(t, 4), t);
  return _mm256_sub_epi8(_mm256_and_si256(v, _mm256_set1_epi8(0x0F)), _mm256_set1_epi8(8));
}
/* 8 int32 partial sums of w (int8) . x (int8) */
static inline __m256i SFX(dot_i8)(__m256i w, __m256i x) {
  const __m256i aw = _mm256_sign_epi8(w, w), sx = _mm256_sign_epi8(x, w);
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
  return _mm256_dpbusd_epi32(_mm256_setzero_si256(), aw, sx);
#else
  return _mm256_madd_epi16(_mm256_maddubs_epi16(aw, sx), _mm256_set1_epi16(1));
#endif
}
#endif

static float SFX(dot_f32)(const float *w, const float *x, int64_t n) {
  int64_t i = 0;
  float s = 0.f;
#if defined(__AVX512F__)
  __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
  for (; i + 32 <= n; i += 32) {
    a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w + i), _mm512_loadu_ps(x + i), a0);
    a1 = _mm512_fmadd_ps(_mm512_loadu_ps(w + i + 16), _mm512_loadu_ps(x + i + 16), a1);
  }
  for (; i + 16 <= n; i += 16) a0 = _mm512_fmadd_ps(_mm512_loadu_ps(w + i), _mm512_loadu_ps(x + i), a0);
  s = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
#elif defined(__AVX2__)
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
  for (; i + 32 <= n; i += 32) {
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(x + i), a0);
    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 8), _mm256_loadu_ps(x + i + 8), a1);
    a2 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 16), _mm256_loadu_ps(x + i + 16), a2);
    a3 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 24), _mm256_loadu_ps(x + i + 24), a3);
  }
  for (; i + 8 <= n; i += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(x + i), a0);
  s = SFX(hsum8)(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
#endif
#if !defined(__AVX2__) && !defined(__AVX512F__)
  { /* 8 independent sums: the compiler can vectorize this (SSE2) without -ffast-math */
    float a[8] = {0};
    for (; i + 8 <= n; i += 8)
      for (int j = 0; j < 8; j++) { float wv; memcpy(&wv, w + i + j, 4); a[j] += wv * x[i + j]; }
    s = ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]));
  }
#endif
  for (; i < n; i++) { float wv; memcpy(&wv, w + i, 4); s += wv * x[i]; }
  return s;
}

static float SFX(dot_f16)(const uint16_t *w, const float *x, int64_t n) {
  int64_t i = 0;
  float s = 0.f;
#if defined(__AVX512F__)
  __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
  for (; i + 32 <= n; i += 32) {
    a0 = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(w + i))), _mm512_loadu_ps(x + i), a0);
    a1 = _mm512_fmadd_ps(_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(w + i + 16))), _mm512_loadu_ps(x + i + 16), a1);
  }
  s = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
#elif defined(__AVX2__)
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
  for (; i + 32 <= n; i += 32) {
    a0 = _mm256_fmadd_ps(SFX(ld_f16x8)(w + i), _mm256_loadu_ps(x + i), a0);
    a1 = _mm256_fmadd_ps(SFX(ld_f16x8)(w + i + 8), _mm256_loadu_ps(x + i + 8), a1);
    a2 = _mm256_fmadd_ps(SFX(ld_f16x8)(w + i + 16), _mm256_loadu_ps(x + i + 16), a2);
    a3 = _mm256_fmadd_ps(SFX(ld_f16x8)(w + i + 24), _mm256_loadu_ps(x + i + 24), a3);
  }
  for (; i + 8 <= n; i += 8) a0 = _mm256_fmadd_ps(SFX(ld_f16x8)(w + i), _mm256_loadu_ps(x + i), a0);
  s = SFX(hsum8)(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
#endif
#if !defined(__AVX2__) && !defined(__AVX512F__)
  {
    float a[8] = {0};
    for (; i + 8 <= n; i += 8)
      for (int j = 0; j < 8; j++) a[j] += nw_f16_to_f32(nw_ld16((const uint8_t *)(w + i + j))) * x[i + j];
    s = ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]));
  }
#endif
  for (; i < n; i++) s += nw_f16_to_f32(nw_ld16((const uint8_t *)(w + i))) * x[i];
  return s;
}

static float SFX(dot_bf16)(const uint16_t *w, const float *x, int64_t n) {
  int64_t i = 0;
  float s = 0.f;
#if defined(__AVX512F__)
  __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
  for (; i + 32 <= n; i += 32) {
    __m512 w0 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(w + i))), 16));
    __m512 w1 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(w + i + 16))), 16));
    a0 = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x + i), a0);
    a1 = _mm512_fmadd_ps(w1, _mm512_loadu_ps(x + i + 16), a1);
  }
  s = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
#elif defined(__AVX2__)
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
  for (; i + 32 <= n; i += 32) {
    a0 = _mm256_fmadd_ps(SFX(ld_bf16x8)(w + i), _mm256_loadu_ps(x + i), a0);
    a1 = _mm256_fmadd_ps(SFX(ld_bf16x8)(w + i + 8), _mm256_loadu_ps(x + i + 8), a1);
    a2 = _mm256_fmadd_ps(SFX(ld_bf16x8)(w + i + 16), _mm256_loadu_ps(x + i + 16), a2);
    a3 = _mm256_fmadd_ps(SFX(ld_bf16x8)(w + i + 24), _mm256_loadu_ps(x + i + 24), a3);
  }
  for (; i + 8 <= n; i += 8) a0 = _mm256_fmadd_ps(SFX(ld_bf16x8)(w + i), _mm256_loadu_ps(x + i), a0);
  s = SFX(hsum8)(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
#endif
#if !defined(__AVX2__) && !defined(__AVX512F__)
  {
    float a[8] = {0};
    for (; i + 8 <= n; i += 8)
      for (int j = 0; j < 8; j++) a[j] += nw_bf16_to_f32(nw_ld16((const uint8_t *)(w + i + j))) * x[i + j];
    s = ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]));
  }
#endif
  for (; i < n; i++) s += nw_bf16_to_f32(nw_ld16((const uint8_t *)(w + i))) * x[i];
  return s;
}

static float SFX(dot_q8)(const uint8_t *w, const xq8_t *x, int64_t nb) {
  int64_t b = 0;
  float s = 0.f;
#if defined(__AVX2__)
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  for (; b + 2 <= nb; b += 2) {
    const uint8_t *w0 = w + b * Q8_0_BYTES, *w1 = w0 + Q8_0_BYTES;
    __m256i p0 = SFX(dot_i8)(_mm256_loadu_si256((const __m256i *)(w0 + 2)), _mm256_loadu_si256((const __m256i *)x[b].qs));
    __m256i p1 = SFX(dot_i8)(_mm256_loadu_si256((const __m256i *)(w1 + 2)), _mm256_loadu_si256((const __m256i *)x[b + 1].qs));
    a0 = _mm256_fmadd_ps(_mm256_set1_ps(NW_H2F(nw_ld16(w0)) * x[b].d), _mm256_cvtepi32_ps(p0), a0);
    a1 = _mm256_fmadd_ps(_mm256_set1_ps(NW_H2F(nw_ld16(w1)) * x[b + 1].d), _mm256_cvtepi32_ps(p1), a1);
  }
  if (b < nb) { /* an odd last block in registers too: no scalar int8 tail (GCC 12 -mavx512vnni turns it into
                   vpdpbusd, which takes one operand as unsigned: wrong for int8 x int8) */
    const uint8_t *w0 = w + b * Q8_0_BYTES;
    __m256i p0 = SFX(dot_i8)(_mm256_loadu_si256((const __m256i *)(w0 + 2)), _mm256_loadu_si256((const __m256i *)x[b].qs));
    a0 = _mm256_fmadd_ps(_mm256_set1_ps(NW_H2F(nw_ld16(w0)) * x[b].d), _mm256_cvtepi32_ps(p0), a0);
    b++;
  }
  s = SFX(hsum8)(_mm256_add_ps(a0, a1));
#else
  for (; b < nb; b++) {
    const uint8_t *wb = w + b * Q8_0_BYTES;
    int32_t acc = 0;
    for (int j = 0; j < QK; j++) acc += (int32_t)(int8_t)wb[2 + j] * x[b].qs[j];
    s += NW_H2F(nw_ld16(wb)) * x[b].d * (float)acc;
  }
#endif
  return s;
}

static float SFX(dot_q4)(const uint8_t *w, const xq8_t *x, int64_t nb) {
  int64_t b = 0;
  float s = 0.f;
#if defined(__AVX2__)
  /* nibbles stay unsigned (0..15) for maddubs(u8, s8); the -8 offset is removed with the
     precomputed block sum of x: sum (q-8)x = sum qx - 8 sum x (8 lanes: subtract s per lane) */
  const __m256i m4 = _mm256_set1_epi8(0x0F);
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  for (; b + 2 <= nb; b += 2) {
    const uint8_t *w0 = w + b * Q4_0_BYTES, *w1 = w0 + Q4_0_BYTES;
    const __m128i t0 = _mm_loadu_si128((const __m128i *)(w0 + 2)), t1 = _mm_loadu_si128((const __m128i *)(w1 + 2));
    const __m256i q0 = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(t0, 4), t0), m4);
    const __m256i q1 = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(t1, 4), t1), m4);
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
    __m256i p0 = _mm256_dpbusd_epi32(_mm256_set1_epi32(-x[b].s), q0, _mm256_loadu_si256((const __m256i *)x[b].qs));
    __m256i p1 = _mm256_dpbusd_epi32(_mm256_set1_epi32(-x[b + 1].s), q1, _mm256_loadu_si256((const __m256i *)x[b + 1].qs));
#else
    const __m256i one = _mm256_set1_epi16(1);
    __m256i p0 = _mm256_sub_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(q0, _mm256_loadu_si256((const __m256i *)x[b].qs)), one),
                                  _mm256_set1_epi32(x[b].s));
    __m256i p1 = _mm256_sub_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(q1, _mm256_loadu_si256((const __m256i *)x[b + 1].qs)), one),
                                  _mm256_set1_epi32(x[b + 1].s));
#endif
    a0 = _mm256_fmadd_ps(_mm256_set1_ps(NW_H2F(nw_ld16(w0)) * x[b].d), _mm256_cvtepi32_ps(p0), a0);
    a1 = _mm256_fmadd_ps(_mm256_set1_ps(NW_H2F(nw_ld16(w1)) * x[b + 1].d), _mm256_cvtepi32_ps(p1), a1);
  }
  if (b < nb) { /* an odd last block in registers too (see dot_q8) */
    const uint8_t *w0 = w + b * Q4_0_BYTES;
    const __m128i t0 = _mm_loadu_si128((const __m128i *)(w0 + 2));
    const __m256i q0 = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(t0, 4), t0), m4);
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
    __m256i p0 = _mm256_dpbusd_epi32(_mm256_set1_epi32(-x[b].s), q0, _mm256_loadu_si256((const __m256i *)x[b].qs));
#else
    __m256i p0 = _mm256_sub_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(q0, _mm256_loadu_si256((const __m256i *)x[b].qs)),
                                                    _mm256_set1_epi16(1)), _mm256_set1_epi32(x[b].s));
#endif
    a0 = _mm256_fmadd_ps(_mm256_set1_ps(NW_H2F(nw_ld16(w0)) * x[b].d), _mm256_cvtepi32_ps(p0), a0);
    b++;
  }
  s = SFX(hsum8)(_mm256_add_ps(a0, a1));
#else
  for (; b < nb; b++) {
    const uint8_t *wb = w + b * Q4_0_BYTES;
    int32_t acc = 0;
    for (int j = 0; j < QK / 2; j++) {
      acc += ((int32_t)(wb[2 + j] & 0x0F) - 8) * x[b].qs[j];
      acc += ((int32_t)(wb[2 + j] >> 4) - 8) * x[b].qs[j + QK / 2];
    }
    s += NW_H2F(nw_ld16(wb)) * x[b].d * (float)acc;
  }
#endif
  return s;
}

/*
 * Several activation rows at once (decode with 2 <= M <= mvMax): each weight block is loaded and
 * converted once and used for MM <= 4 rows of x, res[m] = dot(w, x_m). x rows are contiguous
 * (stride n floats / nb blocks). The MM-specialised bodies keep the accumulators in registers.
 */
#if defined(__AVX2__)
#define NW_INLINE static inline __attribute__((always_inline))
NW_INLINE __m256 SFX(ldw8)(int type, const uint8_t *w, int64_t i) {
  if (type == NW_F32) return _mm256_loadu_ps((const float *)w + i);
  if (type == NW_F16) return SFX(ld_f16x8)((const uint16_t *)w + i);
  return SFX(ld_bf16x8)((const uint16_t *)w + i);
}
NW_INLINE void SFX(dotm_f_body)(int type, const uint8_t *w, const float *x, int64_t n, const int MM, float *res) {
  __m256 a0[4], a1[4];
  for (int m = 0; m < MM; m++) { a0[m] = _mm256_setzero_ps(); a1[m] = _mm256_setzero_ps(); }
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256 w0 = SFX(ldw8)(type, w, i), w1 = SFX(ldw8)(type, w, i + 8);
    for (int m = 0; m < MM; m++) {
      a0[m] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(x + m * n + i), a0[m]);
      a1[m] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(x + m * n + i + 8), a1[m]);
    }
  }
  for (int m = 0; m < MM; m++) res[m] = SFX(hsum8)(_mm256_add_ps(a0[m], a1[m]));
  for (; i < n; i++) {
    float wv;
    if (type == NW_F32) memcpy(&wv, w + 4 * i, 4);
    else if (type == NW_F16) wv = nw_f16_to_f32(nw_ld16(w + 2 * i));
    else wv = nw_bf16_to_f32(nw_ld16(w + 2 * i));
    for (int m = 0; m < MM; m++) res[m] += wv * x[m * n + i];
  }
}
NW_INLINE void SFX(dotm_q_body)(int type, const uint8_t *w, const xq8_t *x, int64_t nb, const int MM, float *res) {
  __m256 acc[4];
  for (int m = 0; m < MM; m++) acc[m] = _mm256_setzero_ps();
  const __m256i m4 = _mm256_set1_epi8(0x0F);
  const __m256i one = _mm256_set1_epi16(1);
  (void)one;
  for (int64_t b = 0; b < nb; b++) {
    if (type == NW_Q4_0) {
      const uint8_t *wb = w + b * Q4_0_BYTES;
      const __m128i t = _mm_loadu_si128((const __m128i *)(wb + 2));
      const __m256i q = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(t, 4), t), m4);
      const float dw = NW_H2F(nw_ld16(wb));
      for (int m = 0; m < MM; m++) {
        const xq8_t *xb = x + m * nb + b;
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
        const __m256i p = _mm256_dpbusd_epi32(_mm256_set1_epi32(-xb->s), q, _mm256_loadu_si256((const __m256i *)xb->qs));
#else
        const __m256i p = _mm256_sub_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(q, _mm256_loadu_si256((const __m256i *)xb->qs)), one),
                                           _mm256_set1_epi32(xb->s));
#endif
        acc[m] = _mm256_fmadd_ps(_mm256_set1_ps(dw * xb->d), _mm256_cvtepi32_ps(p), acc[m]);
      }
    } else {
      const uint8_t *wb = w + b * Q8_0_BYTES;
      const __m256i q = _mm256_loadu_si256((const __m256i *)(wb + 2));
      const __m256i aw = _mm256_sign_epi8(q, q);
      const float dw = NW_H2F(nw_ld16(wb));
      for (int m = 0; m < MM; m++) {
        const xq8_t *xb = x + m * nb + b;
        const __m256i sx = _mm256_sign_epi8(_mm256_loadu_si256((const __m256i *)xb->qs), q);
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
        const __m256i p = _mm256_dpbusd_epi32(_mm256_setzero_si256(), aw, sx);
#else
        const __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(aw, sx), one);
#endif
        acc[m] = _mm256_fmadd_ps(_mm256_set1_ps(dw * xb->d), _mm256_cvtepi32_ps(p), acc[m]);
      }
    }
  }
  for (int m = 0; m < MM; m++) res[m] = SFX(hsum8)(acc[m]);
}
#endif

/* res[m] = dot(row w, x_m) for m < MM (1..4); x: f32 rows (n floats apart) or xq8 rows (n/32 blocks apart) */
static void SFX(dotm)(int type, const uint8_t *w, const float *x, const xq8_t *xq, int64_t n, int MM, float *res) {
#if defined(__AVX2__)
  if (type == NW_Q8_0 || type == NW_Q4_0) {
    switch (MM) {
      case 1: SFX(dotm_q_body)(type, w, xq, n / QK, 1, res); return;
      case 2: SFX(dotm_q_body)(type, w, xq, n / QK, 2, res); return;
      case 3: SFX(dotm_q_body)(type, w, xq, n / QK, 3, res); return;
      default: SFX(dotm_q_body)(type, w, xq, n / QK, 4, res); return;
    }
  }
  switch (MM) {
    case 1: SFX(dotm_f_body)(type, w, x, n, 1, res); return;
    case 2: SFX(dotm_f_body)(type, w, x, n, 2, res); return;
    case 3: SFX(dotm_f_body)(type, w, x, n, 3, res); return;
    default: SFX(dotm_f_body)(type, w, x, n, 4, res); return;
  }
#else
  for (int m = 0; m < MM; m++)
    switch (type) {
      case NW_F32: res[m] = SFX(dot_f32)((const float *)w, x + m * n, n); break;
      case NW_F16: res[m] = SFX(dot_f16)((const uint16_t *)w, x + m * n, n); break;
      case NW_BF16: res[m] = SFX(dot_bf16)((const uint16_t *)w, x + m * n, n); break;
      case NW_Q8_0: res[m] = SFX(dot_q8)(w, xq + m * (n / QK), n / QK); break;
      default: res[m] = SFX(dot_q4)(w, xq + m * (n / QK), n / QK); break;
    }
#endif
}

/*
 * Four q8_0 weight rows against one quantized activation row (decode, M = 1): the x block is loaded
 * once for the four rows, and four independent accumulators hide the FMA latency that bounds a
 * one-row loop. res[r] = dot(row r, x), rows rbytes apart. (q4_0 rows: dot4q4; here one at a time.)
 */
static void SFX(dot4q)(int type, const uint8_t *w, size_t rbytes, const xq8_t *x, int64_t nb, float *res) {
  if (type == NW_Q4_0) {
    for (int r = 0; r < 4; r++) res[r] = SFX(dot_q4)(w + r * rbytes, x, nb);
    return;
  }
#if defined(__AVX2__)
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps(), acc2 = _mm256_setzero_ps(), acc3 = _mm256_setzero_ps();
  const uint8_t *w0 = w, *w1 = w + rbytes, *w2 = w + 2 * rbytes, *w3 = w + 3 * rbytes;
  const __m256i one = _mm256_set1_epi16(1);
  {
#define NW_Q8ROW(wr, acc, lane)                                                                                \
    do {                                                                                                       \
      const __m256i q = _mm256_loadu_si256((const __m256i *)((wr) + o + 2));                                   \
      const __m256i p = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(q, q), _mm256_sign_epi8(xv, q)), one); \
      acc = _mm256_fmadd_ps(_mm256_permutevar8x32_ps(d4, _mm256_set1_epi32(lane)), _mm256_cvtepi32_ps(p), acc); \
    } while (0)
    for (int64_t b = 0; b < nb; b++) {
      const size_t o = (size_t)b * Q8_0_BYTES;
      const __m256i xv = _mm256_loadu_si256((const __m256i *)x[b].qs);
      __m128i h = _mm_cvtsi32_si128(nw_ld16(w0 + o));
      h = _mm_insert_epi16(h, nw_ld16(w1 + o), 1);
      h = _mm_insert_epi16(h, nw_ld16(w2 + o), 2);
      h = _mm_insert_epi16(h, nw_ld16(w3 + o), 3);
      const __m256 d4 = _mm256_castps128_ps256(_mm_mul_ps(_mm_cvtph_ps(h), _mm_set1_ps(x[b].d)));
      NW_Q8ROW(w0, acc0, 0); NW_Q8ROW(w1, acc1, 1); NW_Q8ROW(w2, acc2, 2); NW_Q8ROW(w3, acc3, 3);
    }
#undef NW_Q8ROW
  }
  res[0] = SFX(hsum8)(acc0); res[1] = SFX(hsum8)(acc1); res[2] = SFX(hsum8)(acc2); res[3] = SFX(hsum8)(acc3);
#else
  for (int r = 0; r < 4; r++) res[r] = SFX(dot_q8)(w + r * rbytes, x, nb);
#endif
}

/*
 * Four q4_0 rows against one activation row in the doubled layout (decode, M = 1), rows rbytes apart.
 * Two rows per register: row a's 16 nibble bytes in the low 128-bit lane, row b's in the high one.
 * The low nibbles (weights 0..15) meet x.lo and the high ones (16..31) x.hi, which hold their half of
 * the block in both lanes, so no cross-lane shuffle is needed per block. The four block scales are
 * gathered into one register and spread to [a a a a b b b b] with an in-lane byte shuffle before the
 * f16 conversion (on Zen 3 this ran 21 % faster per block than permuting converted scales and x).
 * Nibbles stay unsigned for maddubs(u8, s8); each of a row's 4 lanes removes 2s of the -8 offset.
 */
#if defined(__AVX2__)
NW_INLINE void SFX(dotq4_body)(const int NR, const uint8_t *w, size_t rbytes, const xq4d_t *x, int64_t nb, float *res) {
  __m256 acc[4];
  const uint8_t *wr[8];
  for (int p = 0; p < NR / 2; p++) acc[p] = _mm256_setzero_ps();
  for (int r = 0; r < NR; r++) wr[r] = w + r * rbytes;
  const __m256i m4 = _mm256_set1_epi8(0x0F);
#if !(defined(__AVX512VNNI__) && defined(__AVX512VL__))
  const __m256i one = _mm256_set1_epi16(1);
#endif
  const __m128i s01 = _mm_setr_epi8(0, 1, 0, 1, 0, 1, 0, 1, 2, 3, 2, 3, 2, 3, 2, 3);
  const __m128i s23 = _mm_setr_epi8(4, 5, 4, 5, 4, 5, 4, 5, 6, 7, 6, 7, 6, 7, 6, 7);
  for (int64_t b = 0; b < nb; b++) {
    const size_t o = (size_t)b * Q4_0_BYTES;
    const __m256i xlo = _mm256_loadu_si256((const __m256i *)x[b].lo), xhi = _mm256_loadu_si256((const __m256i *)x[b].hi);
    const __m256 xd = _mm256_set1_ps(x[b].d);
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
    const __m256i nxs = _mm256_set1_epi32(-x[b].s2);
#else
    const __m256i xs = _mm256_set1_epi32(x[b].s2);
#endif
    for (int q = 0; q < NR / 4; q++) { /* rows 4q .. 4q+3: their four block scales in one register */
      const uint8_t *const *wq = wr + 4 * q;
      __m128i h = _mm_cvtsi32_si128(nw_ld16(wq[0] + o));
      h = _mm_insert_epi16(h, nw_ld16(wq[1] + o), 1);
      h = _mm_insert_epi16(h, nw_ld16(wq[2] + o), 2);
      h = _mm_insert_epi16(h, nw_ld16(wq[3] + o), 3);
      for (int pr = 0; pr < 2; pr++) { /* rows (4q + 2pr, 4q + 2pr + 1): one in each 128-bit lane */
        const __m256 d = _mm256_mul_ps(_mm256_cvtph_ps(_mm_shuffle_epi8(h, pr ? s23 : s01)), xd);
        const __m256i v = _mm256_loadu2_m128i((const __m128i *)(wq[2 * pr + 1] + o + 2), (const __m128i *)(wq[2 * pr] + o + 2));
        const __m256i lo = _mm256_and_si256(v, m4), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
        /* VNNI: both nibble halves accumulate straight into int32 lanes that start at -2s */
        const __m256i s32 = _mm256_dpbusd_epi32(_mm256_dpbusd_epi32(nxs, lo, xlo), hi, xhi);
#else
        const __m256i s32 = _mm256_sub_epi32(
            _mm256_madd_epi16(_mm256_add_epi16(_mm256_maddubs_epi16(lo, xlo), _mm256_maddubs_epi16(hi, xhi)), one), xs);
#endif
        acc[2 * q + pr] = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(s32), acc[2 * q + pr]);
      }
    }
  }
  for (int q = 0; q < NR / 4; q++) {
    const __m256 a0 = acc[2 * q], a1 = acc[2 * q + 1];
    _mm_storeu_ps(res + 4 * q, _mm_hadd_ps(_mm_hadd_ps(_mm256_castps256_ps128(a0), _mm256_extractf128_ps(a0, 1)),
                                           _mm_hadd_ps(_mm256_castps256_ps128(a1), _mm256_extractf128_ps(a1, 1))));
  }
}
#endif

static void SFX(dot4q4)(const uint8_t *w, size_t rbytes, const xq4d_t *x, int64_t nb, float *res) {
#if defined(__AVX2__)
  SFX(dotq4_body)(4, w, rbytes, x, nb, res);
#else
  for (int r = 0; r < 4; r++) {
    const uint8_t *wr = w + r * rbytes;
    float s = 0.f;
    for (int64_t b = 0; b < nb; b++) {
      const uint8_t *wb = wr + b * Q4_0_BYTES;
      int32_t acc = 0;
      for (int j = 0; j < QK / 2; j++) acc += (wb[2 + j] & 15) * x[b].lo[j] + (wb[2 + j] >> 4) * x[b].hi[j];
      s += NW_H2F(nw_ld16(wb)) * x[b].d * (float)(acc - 4 * x[b].s2);
    }
    res[r] = s;
  }
#endif
}

/* eight rows (rbytes apart) against one x: each x block is loaded once for twice the weights */
static void SFX(dot8q4)(const uint8_t *w, size_t rbytes, const xq4d_t *x, int64_t nb, float *res) {
#if defined(__AVX2__)
  SFX(dotq4_body)(8, w, rbytes, x, nb, res);
#else
  SFX(dot4q4)(w, rbytes, x, nb, res);
  SFX(dot4q4)(w + 4 * rbytes, rbytes, x, nb, res + 4);
#endif
}

/*
 * Four f32 / f16 / bf16 weight rows against one f32 activation row (decode, M = 1), rows rbytes
 * apart: the x loads are shared by the four rows and eight accumulators hide the FMA latency.
 */
#if defined(__AVX2__)
NW_INLINE void SFX(dot4f_body)(const int type, const uint8_t *w, size_t rbytes, const float *x, int64_t n, float *res) {
  __m256 a[4][2];
  for (int r = 0; r < 4; r++) { a[r][0] = _mm256_setzero_ps(); a[r][1] = _mm256_setzero_ps(); }
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256 x0 = _mm256_loadu_ps(x + i), x1 = _mm256_loadu_ps(x + i + 8);
    for (int r = 0; r < 4; r++) {
      const uint8_t *wr = w + r * rbytes;
      a[r][0] = _mm256_fmadd_ps(SFX(ldw8)(type, wr, i), x0, a[r][0]);
      a[r][1] = _mm256_fmadd_ps(SFX(ldw8)(type, wr, i + 8), x1, a[r][1]);
    }
  }
  for (int r = 0; r < 4; r++) res[r] = SFX(hsum8)(_mm256_add_ps(a[r][0], a[r][1]));
  for (; i < n; i++)
    for (int r = 0; r < 4; r++) {
      const uint8_t *wr = w + r * rbytes;
      float wv;
      if (type == NW_F32) memcpy(&wv, wr + 4 * i, 4);
      else if (type == NW_F16) wv = nw_f16_to_f32(nw_ld16(wr + 2 * i));
      else wv = nw_bf16_to_f32(nw_ld16(wr + 2 * i));
      res[r] += wv * x[i];
    }
}
#endif
/*
 * Four f32 / f16 / bf16 weight rows against one f32 activation row (decode, M = 1), rows rbytes
 * apart: the x loads are shared by the four rows and eight accumulators hide the FMA latency.
 */
static void SFX(dot4f)(int type, const uint8_t *w, size_t rbytes, const float *x, int64_t n, float *res) {
#if defined(__AVX2__)
  switch (type) {
    case NW_F32: SFX(dot4f_body)(NW_F32, w, rbytes, x, n, res); return;
    case NW_F16: SFX(dot4f_body)(NW_F16, w, rbytes, x, n, res); return;
    default: SFX(dot4f_body)(NW_BF16, w, rbytes, x, n, res); return;
  }
#else
  for (int r = 0; r < 4; r++) {
    const uint8_t *wr = w + r * rbytes;
    res[r] = type == NW_F32 ? SFX(dot_f32)((const float *)wr, x, n) : type == NW_F16 ? SFX(dot_f16)((const uint16_t *)wr, x, n)
                                                                         : SFX(dot_bf16)((const uint16_t *)wr, x, n);
  }
#endif
}

static void SFX(dequant_row)(int type, const uint8_t *src, float *dst, int64_t n) {
  int64_t i = 0;
  switch (type) {
    case NW_F32: memcpy(dst, src, (size_t)n * 4); return;
    case NW_F16:
#if defined(__AVX2__)
      for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, SFX(ld_f16x8)((const uint16_t *)src + i));
#endif
      for (; i < n; i++) dst[i] = nw_f16_to_f32(nw_ld16(src + 2 * i));
      return;
    case NW_BF16:
#if defined(__AVX2__)
      for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, SFX(ld_bf16x8)((const uint16_t *)src + i));
#endif
      for (; i < n; i++) dst[i] = nw_bf16_to_f32(nw_ld16(src + 2 * i));
      return;
    case NW_Q8_0:
      for (int64_t b = 0; b < n / QK; b++) {
        const uint8_t *wb = src + b * Q8_0_BYTES;
        const float d = NW_H2F(nw_ld16(wb));
        float *o = dst + b * QK;
#if defined(__AVX2__)
        const __m256 vd = _mm256_set1_ps(d);
        for (int j = 0; j < QK; j += 8) {
          __m256i q = _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(wb + 2 + j)));
          _mm256_storeu_ps(o + j, _mm256_mul_ps(vd, _mm256_cvtepi32_ps(q)));
        }
#else
        for (int j = 0; j < QK; j++) o[j] = (float)(int8_t)wb[2 + j] * d;
#endif
      }
      return;
    case NW_Q4_0:
      for (int64_t b = 0; b < n / QK; b++) {
        const uint8_t *wb = src + b * Q4_0_BYTES;
        const float d = NW_H2F(nw_ld16(wb));
        float *o = dst + b * QK;
#if defined(__AVX2__)
        const __m256 vd = _mm256_set1_ps(d);
        __m256i q = SFX(unpack_q4)(wb + 2);
        __m128i lo = _mm256_castsi256_si128(q), hi = _mm256_extracti128_si256(q, 1);
        _mm256_storeu_ps(o + 0, _mm256_mul_ps(vd, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo))));
        _mm256_storeu_ps(o + 8, _mm256_mul_ps(vd, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8)))));
        _mm256_storeu_ps(o + 16, _mm256_mul_ps(vd, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi))));
        _mm256_storeu_ps(o + 24, _mm256_mul_ps(vd, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8)))));
#else
        for (int j = 0; j < QK / 2; j++) {
          o[j] = (float)((int)(wb[2 + j] & 0x0F) - 8) * d;
          o[j + QK / 2] = (float)((int)(wb[2 + j] >> 4) - 8) * d;
        }
#endif
      }
      return;
  }
}

/*
 * q4_0 prefill as int8 GEMM (M > mvMax): activations quantized to xq8 blocks, weights repacked per
 * panel into groups of 8 rows (nw.h q4x8_t) so that one 256-bit register holds 4 consecutive
 * nibbles of each of the 8 rows. One broadcast 4-byte piece of an x block then meets all 8 rows in
 * a single maddubs (or VNNI dpbusd): the lanes are output rows, so a block ends in one conversion
 * and one FMA per 8 outputs, not per output as in a row-by-row dot product. (The layout is
 * llama.cpp's idea for its repacked q4_0 CPU kernels; the code and the format are our own.)
 */
/* 8 q4_0 rows (rbytes apart), nb blocks -> nb q4x8_t: nibbles unsigned (0..15), scales in f32 */
static void SFX(pack_q4x8)(int type, const uint8_t *w, size_t rbytes, int64_t nb, q4x8_t *dst) {
  const int q8 = type == NW_Q8_0;
  const size_t bb = q8 ? Q8_0_BYTES : Q4_0_BYTES;
  for (int64_t b = 0; b < nb; b++) {
    const uint8_t *blk = w + (size_t)b * bb;
    q4x8_t *p = dst + b;
#if defined(__AVX2__)
    const __m256i m4 = _mm256_set1_epi8(0x0F), flip = _mm256_set1_epi8((char)0x80);
    __m256i v[8];
    uint16_t h[8];
    for (int r = 0; r < 8; r++) { /* row r: dword t = weights 4t..4t+3 */
      if (q8) { /* int8 w -> unsigned w + 128 */
        v[r] = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(blk + r * rbytes + 2)), flip);
      } else {
        const __m128i t = _mm_loadu_si128((const __m128i *)(blk + r * rbytes + 2));
        v[r] = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(t, 4), t), m4);
      }
      h[r] = nw_ld16(blk + r * rbytes);
    }
    _mm256_storeu_ps(p->d, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)h)));
    /* 8x8 transpose of dwords: out[t] = (v[0].t, v[1].t, ..., v[7].t) */
    const __m256i a0 = _mm256_unpacklo_epi32(v[0], v[1]), a1 = _mm256_unpackhi_epi32(v[0], v[1]);
    const __m256i a2 = _mm256_unpacklo_epi32(v[2], v[3]), a3 = _mm256_unpackhi_epi32(v[2], v[3]);
    const __m256i a4 = _mm256_unpacklo_epi32(v[4], v[5]), a5 = _mm256_unpackhi_epi32(v[4], v[5]);
    const __m256i a6 = _mm256_unpacklo_epi32(v[6], v[7]), a7 = _mm256_unpackhi_epi32(v[6], v[7]);
    const __m256i b0 = _mm256_unpacklo_epi64(a0, a2), b1 = _mm256_unpackhi_epi64(a0, a2);
    const __m256i b2 = _mm256_unpacklo_epi64(a1, a3), b3 = _mm256_unpackhi_epi64(a1, a3);
    const __m256i b4 = _mm256_unpacklo_epi64(a4, a6), b5 = _mm256_unpackhi_epi64(a4, a6);
    const __m256i b6 = _mm256_unpacklo_epi64(a5, a7), b7 = _mm256_unpackhi_epi64(a5, a7);
    /* b0 = rows 0-3 of dwords {0 | 4}, b4 = rows 4-7 of {0 | 4}, b1/b5 {1 | 5}, b2/b6 {2 | 6}, b3/b7 {3 | 7} */
    __m256i *q = (__m256i *)p->q;
    _mm256_storeu_si256(q + 0, _mm256_permute2x128_si256(b0, b4, 0x20));
    _mm256_storeu_si256(q + 4, _mm256_permute2x128_si256(b0, b4, 0x31));
    _mm256_storeu_si256(q + 1, _mm256_permute2x128_si256(b1, b5, 0x20));
    _mm256_storeu_si256(q + 5, _mm256_permute2x128_si256(b1, b5, 0x31));
    _mm256_storeu_si256(q + 2, _mm256_permute2x128_si256(b2, b6, 0x20));
    _mm256_storeu_si256(q + 6, _mm256_permute2x128_si256(b2, b6, 0x31));
    _mm256_storeu_si256(q + 3, _mm256_permute2x128_si256(b3, b7, 0x20));
    _mm256_storeu_si256(q + 7, _mm256_permute2x128_si256(b3, b7, 0x31));
#else
    for (int r = 0; r < 8; r++) {
      const uint8_t *br = blk + r * rbytes;
      p->d[r] = NW_H2F(nw_ld16(br));
      for (int k = 0; k < QK; k++)
        p->q[(k >> 2) * 32 + 4 * r + (k & 3)] = q8 ? (uint8_t)(br[2 + k] ^ 0x80)
                                                   : k < QK / 2 ? (br[2 + k] & 0x0F) : (br[2 + k - QK / 2] >> 4);
    }
#endif
  }
}

#if defined(__AVX2__)
/* MM (<= 4) rows of x (xs blocks apart) against one packed group of 8 rows: o[m * ldo + r], r < 8 */
NW_INLINE void SFX(gemm_q4x8_body)(const q4x8_t *pw, int64_t nb, const xq8_t *x, int64_t xs, const int MM, float *o,
                                    int64_t ldo, const float *bias, int accum, int off, int pairs) {
  __m256 acc[4];
  for (int m = 0; m < MM; m++) acc[m] = _mm256_setzero_ps();
#if !(defined(__AVX512VNNI__) && defined(__AVX512VL__))
  const __m256i one = _mm256_set1_epi16(1);
#endif
  for (int64_t b = 0; b < nb; b++) {
    const q4x8_t *p = pw + b;
    __m256i s[4];
#if defined(__AVX512VNNI__) && defined(__AVX512VL__)
    /* u8 nibbles x s8 activations accumulate in int32 from -8 * sum(x): sum (q-8)x */
    /* two chains per row of x (even / odd t): dpbusd's latency, not its throughput, bounded one chain */
    __m256i s2[4];
    for (int m = 0; m < MM; m++) { s[m] = _mm256_set1_epi32(-off * x[m * xs + b].s); s2[m] = _mm256_setzero_si256(); }
    for (int t = 0; t < 8; t += 2) {
      const __m256i wv = _mm256_loadu_si256((const __m256i *)(p->q + 32 * t));
      const __m256i wv2 = _mm256_loadu_si256((const __m256i *)(p->q + 32 * t + 32));
      for (int m = 0; m < MM; m++) {
        int32_t xv, xv2;
        memcpy(&xv, x[m * xs + b].qs + 4 * t, 4);
        memcpy(&xv2, x[m * xs + b].qs + 4 * t + 4, 4);
        s[m] = _mm256_dpbusd_epi32(s[m], wv, _mm256_set1_epi32(xv));
        s2[m] = _mm256_dpbusd_epi32(s2[m], wv2, _mm256_set1_epi32(xv2));
      }
    }
    for (int m = 0; m < MM; m++) s[m] = _mm256_add_epi32(s[m], s2[m]);
#else
    /* maddubs pairs (|q x + q x| <= 2*15*127) summed in int16 over the block: 8*3810 < 32768 */
    for (int t = 0; t < 8; t++) {
      const __m256i wv = _mm256_loadu_si256((const __m256i *)(p->q + 32 * t));
      for (int m = 0; m < MM; m++) {
        int32_t xv;
        memcpy(&xv, x[m * xs + b].qs + 4 * t, 4);
        const __m256i pr = _mm256_maddubs_epi16(wv, _mm256_set1_epi32(xv));
        s[m] = t ? _mm256_add_epi16(s[m], pr) : pr;
      }
    }
    (void)off; /* q4_0 only here (off 8): q8_0's u8 weights would overflow maddubs' int16 pairs */
    for (int m = 0; m < MM; m++) s[m] = _mm256_sub_epi32(_mm256_madd_epi16(s[m], one), _mm256_set1_epi32(8 * x[m * xs + b].s));
#endif
    const __m256 dw = _mm256_loadu_ps(p->d);
    for (int m = 0; m < MM; m++)
      acc[m] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s[m]), _mm256_mul_ps(dw, _mm256_set1_ps(x[m * xs + b].d)), acc[m]);
  }
  if (pairs) /* rows 2i and 2i+1 of x are the two terms of one activation row: their sums add */
    for (int m = 0; m < MM / 2; m++) acc[m] = _mm256_add_ps(acc[2 * m], acc[2 * m + 1]);
  for (int m = 0; m < (pairs ? MM / 2 : MM); m++) {
    float *om = o + m * ldo;
    __m256 v = acc[m];
    if (accum) v = _mm256_add_ps(v, _mm256_loadu_ps(om));
    else if (bias) v = _mm256_add_ps(v, _mm256_loadu_ps(bias));
    _mm256_storeu_ps(om, v);
  }
}
#endif

/* out[m * ldo + 8g + r] (+)= sum over nb blocks for M rows of x (xs blocks apart) and ng packed groups
   (nb q4x8_t each); accum adds to out, else bias (or 0) starts it */
static void SFX(gemm_q4x8)(const q4x8_t *pw, int64_t ng, int64_t nb, const xq8_t *x, int64_t xs, int64_t M, float *out,
                           int64_t ldo, const float *bias, int accum, int off, int pairs) {
  for (int64_t m0 = 0; m0 < M; m0 += 4) {
    const int MM = (int)NW_MIN(4, M - m0);
    for (int64_t g = 0; g < ng; g++) {
      const q4x8_t *p = pw + g * nb;
      const xq8_t *xm = x + m0 * xs;
      float *o = out + (pairs ? m0 / 2 : m0) * ldo + 8 * g;
      const float *bg = bias ? bias + 8 * g : NULL;
#if defined(__AVX2__)
      switch (MM) {
        case 4: SFX(gemm_q4x8_body)(p, nb, xm, xs, 4, o, ldo, bg, accum, off, pairs); break;
        case 3: SFX(gemm_q4x8_body)(p, nb, xm, xs, 3, o, ldo, bg, accum, off, pairs); break;
        case 2: SFX(gemm_q4x8_body)(p, nb, xm, xs, 2, o, ldo, bg, accum, off, pairs); break;
        default: SFX(gemm_q4x8_body)(p, nb, xm, xs, 1, o, ldo, bg, accum, off, pairs); break;
      }
#else
      for (int m = 0; m < MM; m += pairs ? 2 : 1)
        for (int r = 0; r < 8; r++) {
          float s = 0.f, s2 = 0.f;
          for (int t = 0; t <= pairs; t++)
            for (int64_t b = 0; b < nb; b++) {
              const xq8_t *xb = xm + (m + t) * xs + b;
              int32_t a = 0;
              for (int k = 0; k < QK; k++) a += (int32_t)p[b].q[(k >> 2) * 32 + 4 * r + (k & 3)] * xb->qs[k];
              *(t ? &s2 : &s) += (float)(a - off * xb->s) * (p[b].d[r] * xb->d);
            }
          s += s2;
          float *od = o + (pairs ? m / 2 : m) * ldo + r;
          *od = accum ? *od + s : s + (bg ? bg[r] : 0.f);
        }
#endif
    }
  }
}

static void SFX(axpy)(int64_t n, float a, const float *x, float *y) {
  int64_t i = 0;
#if defined(__AVX2__)
  const __m256 va = _mm256_set1_ps(a);
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
#endif
  for (; i < n; i++) y[i] += a * x[i];
}

/* Fallback panel GEMM (no OpenBLAS): C = A . B^T + beta*C, 4x2 register tiles of dot products. */
static void SFX(sgemm_nt)(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *B, int64_t ldb,
                          float *C, int64_t ldc, float beta) {
  const int64_t KB = 512; /* K blocking keeps 4 A rows + 2 B rows of a block in L1 */
  for (int64_t i = 0; i < M; i++)
    for (int64_t j = 0; j < N; j++) C[i * ldc + j] = beta == 0.f ? 0.f : beta * C[i * ldc + j];
  for (int64_t k0 = 0; k0 < K; k0 += KB) {
    const int64_t kn = K - k0 < KB ? K - k0 : KB;
    int64_t i = 0;
#if defined(__AVX2__)
    for (; i + 4 <= M; i += 4) {
      int64_t j = 0;
      for (; j + 2 <= N; j += 2) {
        const float *a0 = A + i * lda + k0, *b0 = B + j * ldb + k0, *b1 = b0 + ldb;
        __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps(), c10 = _mm256_setzero_ps(), c11 = _mm256_setzero_ps();
        __m256 c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps(), c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps();
        int64_t k = 0;
        for (; k + 8 <= kn; k += 8) {
          __m256 vb0 = _mm256_loadu_ps(b0 + k), vb1 = _mm256_loadu_ps(b1 + k), va;
          va = _mm256_loadu_ps(a0 + k); c00 = _mm256_fmadd_ps(va, vb0, c00); c01 = _mm256_fmadd_ps(va, vb1, c01);
          va = _mm256_loadu_ps(a0 + lda + k); c10 = _mm256_fmadd_ps(va, vb0, c10); c11 = _mm256_fmadd_ps(va, vb1, c11);
          va = _mm256_loadu_ps(a0 + 2 * lda + k); c20 = _mm256_fmadd_ps(va, vb0, c20); c21 = _mm256_fmadd_ps(va, vb1, c21);
          va = _mm256_loadu_ps(a0 + 3 * lda + k); c30 = _mm256_fmadd_ps(va, vb0, c30); c31 = _mm256_fmadd_ps(va, vb1, c31);
        }
        float s[8] = {SFX(hsum8)(c00), SFX(hsum8)(c01), SFX(hsum8)(c10), SFX(hsum8)(c11),
                      SFX(hsum8)(c20), SFX(hsum8)(c21), SFX(hsum8)(c30), SFX(hsum8)(c31)};
        for (; k < kn; k++)
          for (int r = 0; r < 4; r++) { s[2 * r] += a0[r * lda + k] * b0[k]; s[2 * r + 1] += a0[r * lda + k] * b1[k]; }
        for (int r = 0; r < 4; r++) { C[(i + r) * ldc + j] += s[2 * r]; C[(i + r) * ldc + j + 1] += s[2 * r + 1]; }
      }
      for (; j < N; j++)
        for (int r = 0; r < 4; r++) C[(i + r) * ldc + j] += SFX(dot_f32)(B + j * ldb + k0, A + (i + r) * lda + k0, kn);
    }
#endif
    for (; i < M; i++)
      for (int64_t j = 0; j < N; j++) C[i * ldc + j] += SFX(dot_f32)(B + j * ldb + k0, A + i * lda + k0, kn);
  }
}

/*
 * Attention of R <= 8 query rows that share one K/V head (decode, or a few new positions):
 *   out_r = softmax_j(q_r . k_j / div) . V over keys j in [lo_r, hi_r] (causal / sliding window),
 * in f32 like the composite path (scores divided, max-subtracted exp, normalised, then weighted).
 * q rows and out rows are D floats apart, K and V rows D floats apart. sc: 8 * J floats of scratch,
 * J = max(hi_r) + 1 keys are scored (a row gives weight 0 to keys it may not see). Scores are kept
 * key-major (sc[8 j + r]): the 8 row dots of a key reduce into one vector, and the weights of a key
 * are adjacent for the weighted sum of V, which runs over tiles of 64 keys (a tile of V stays in L1
 * while every 16-float column block of the rows is accumulated).
 */
#if defined(__AVX2__)
/* e^x, Cephes expf (|rel. err| about 1 ulp): x is clamped to [-87.3, 88.4], e^88.4 rounds to inf */
static inline __m256 SFX(exp8)(__m256 x) {
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.33654475f)), _mm256_set1_ps(88.3762626647949f));
  __m256 fx = _mm256_floor_ps(_mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f)));
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
  __m256 y = _mm256_set1_ps(1.9875691500E-4f);
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507E-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073E-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894E-2f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459E-1f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201E-1f));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.f)));
  const __m256i n = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvttps_epi32(fx), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(n));
}
/* lane r of the result = sum of the 8 lanes of a[r] (r < 8) */
static inline __m256 SFX(hsum8x8)(const __m256 *a) {
  const __m256 h01 = _mm256_hadd_ps(a[0], a[1]), h23 = _mm256_hadd_ps(a[2], a[3]);
  const __m256 h45 = _mm256_hadd_ps(a[4], a[5]), h67 = _mm256_hadd_ps(a[6], a[7]);
  const __m256 q0 = _mm256_hadd_ps(h01, h23), q1 = _mm256_hadd_ps(h45, h67); /* [r0..r3 low | r0..r3 high] and r4..r7 */
  return _mm256_add_ps(_mm256_permute2f128_ps(q0, q1, 0x20), _mm256_permute2f128_ps(q0, q1, 0x31));
}
/* sc8[r] = (q_r . k) / div for the R query rows (lanes r >= R: 0), one key k of D floats */
NW_INLINE void SFX(attn_score)(const int R, const float *q, const float *k, int64_t D, __m256 vdiv, float *sc8) {
  __m256 a[8];
  for (int r = 0; r < 8; r++) a[r] = _mm256_setzero_ps();
  for (int64_t c = 0; c < D; c += 8) {
    const __m256 kc = _mm256_loadu_ps(k + c);
    for (int r = 0; r < R; r++) a[r] = _mm256_fmadd_ps(_mm256_loadu_ps(q + r * D + c), kc, a[r]);
  }
  _mm256_storeu_ps(sc8, _mm256_div_ps(SFX(hsum8x8)(a), vdiv));
}
NW_INLINE void SFX(attn_body)(const int R, const float *q, const float *K, const float *V, int64_t D, int64_t J,
                              const int64_t *lo, const int64_t *hi, float div, float *sc, float *out) {
  const __m256 vdiv = _mm256_set1_ps(div);
  /* Scores of keys i, i + J/4, i + J/2, i + 3J/4 side by side: the unrolled group of four keeps
     loads of four sequential streams through K in flight at once (cold cache, Zen 4, 1024 keys,
     R = 7, medians of two sets of 8 alternating harness runs: -8 % and -20 % per layer on 2 threads,
     -19 % and -21 % on 1; 2 or 8 streams did worse than 4). Each key's dot is computed as before. */
  const int64_t J4 = J / 4;
  for (int64_t i = 0; i < J4; i++)
    for (int s4 = 0; s4 < 4; s4++) SFX(attn_score)(R, q, K + (i + s4 * J4) * D, D, vdiv, sc + 8 * (i + s4 * J4));
  for (int64_t j = 4 * J4; j < J; j++) SFX(attn_score)(R, q, K + j * D, D, vdiv, sc + 8 * j);
  /* softmax of the 8 rows at once (lanes r >= R see no key and are never read) */
  int32_t lo8[8], hi8[8];
  for (int r = 0; r < 8; r++) { lo8[r] = r < R ? (int32_t)lo[r] : 1; hi8[r] = r < R ? (int32_t)hi[r] : 0; }
  const __m256i vlo = _mm256_loadu_si256((const __m256i *)lo8), vhi = _mm256_loadu_si256((const __m256i *)hi8);
  const __m256 ninf = _mm256_set1_ps(-INFINITY);
  __m256 mx = ninf, sum = _mm256_setzero_ps();
  for (int64_t j = 0; j < J; j++) {
    const __m256i vj = _mm256_set1_epi32((int32_t)j);
    /* seen: lo <= j <= hi, i.e. not (lo > j) and not (j > hi) */
    const __m256 seen = _mm256_castsi256_ps(_mm256_andnot_si256(_mm256_or_si256(_mm256_cmpgt_epi32(vlo, vj), _mm256_cmpgt_epi32(vj, vhi)), _mm256_set1_epi32(-1)));
    mx = _mm256_max_ps(mx, _mm256_blendv_ps(ninf, _mm256_loadu_ps(sc + 8 * j), seen));
  }
  for (int64_t j = 0; j < J; j++) {
    const __m256i vj = _mm256_set1_epi32((int32_t)j);
    const __m256 seen = _mm256_castsi256_ps(_mm256_andnot_si256(_mm256_or_si256(_mm256_cmpgt_epi32(vlo, vj), _mm256_cmpgt_epi32(vj, vhi)), _mm256_set1_epi32(-1)));
    const __m256 e = _mm256_and_ps(SFX(exp8)(_mm256_sub_ps(_mm256_loadu_ps(sc + 8 * j), mx)), seen);
    _mm256_storeu_ps(sc + 8 * j, e);
    sum = _mm256_add_ps(sum, e);
  }
  for (int64_t j = 0; j < J; j++) _mm256_storeu_ps(sc + 8 * j, _mm256_div_ps(_mm256_loadu_ps(sc + 8 * j), sum));
  for (int r = 0; r < R; r++) memset(out + r * D, 0, (size_t)D * sizeof(float));
  /* V read row by row, one sequential stream, into the R output rows (L1); each element takes the
     keys' terms in key order. At decode the cache comes from memory: this ran ~20 % faster (1 and 2
     threads, Zen 4) than blocks of 64 keys walked column chunk by column chunk, which is faster only
     when V is in cache. */
  for (int64_t j = 0; j < J; j++) {
    const float *vj = V + j * D;
    __m256 p[8];
    for (int r = 0; r < R; r++) p[r] = _mm256_broadcast_ss(sc + 8 * j + r);
    for (int64_t c = 0; c < D; c += 16) {
      const __m256 v0 = _mm256_loadu_ps(vj + c), v1 = _mm256_loadu_ps(vj + c + 8);
      for (int r = 0; r < R; r++) {
        _mm256_storeu_ps(out + r * D + c, _mm256_fmadd_ps(p[r], v0, _mm256_loadu_ps(out + r * D + c)));
        _mm256_storeu_ps(out + r * D + c + 8, _mm256_fmadd_ps(p[r], v1, _mm256_loadu_ps(out + r * D + c + 8)));
      }
    }
  }
}
#endif
static void SFX(attn_rows)(int R, const float *q, const float *K, const float *V, int64_t D, const int64_t *lo,
                           const int64_t *hi, float div, float *sc, float *out) {
  int64_t J = 0;
  for (int r = 0; r < R; r++) J = hi[r] + 1 > J ? hi[r] + 1 : J;
#if defined(__AVX2__)
  if (D % 16 == 0) {
    switch (R) {
      case 1: SFX(attn_body)(1, q, K, V, D, J, lo, hi, div, sc, out); return;
      case 2: SFX(attn_body)(2, q, K, V, D, J, lo, hi, div, sc, out); return;
      case 3: SFX(attn_body)(3, q, K, V, D, J, lo, hi, div, sc, out); return;
      case 4: SFX(attn_body)(4, q, K, V, D, J, lo, hi, div, sc, out); return;
      case 5: SFX(attn_body)(5, q, K, V, D, J, lo, hi, div, sc, out); return;
      case 6: SFX(attn_body)(6, q, K, V, D, J, lo, hi, div, sc, out); return;
      case 7: SFX(attn_body)(7, q, K, V, D, J, lo, hi, div, sc, out); return;
      default: SFX(attn_body)(8, q, K, V, D, J, lo, hi, div, sc, out); return;
    }
  }
#endif
  for (int r = 0; r < R; r++) {
    float *s = sc + r * J, mx = -INFINITY, sum = 0.f;
    for (int64_t j = lo[r]; j <= hi[r]; j++) {
      float d = 0.f;
      for (int64_t c = 0; c < D; c++) d += q[r * D + c] * K[j * D + c];
      s[j] = d / div;
      mx = s[j] > mx ? s[j] : mx;
    }
    for (int64_t j = lo[r]; j <= hi[r]; j++) { s[j] = expf(s[j] - mx); sum += s[j]; }
    for (int64_t c = 0; c < D; c++) out[r * D + c] = 0.f;
    for (int64_t j = lo[r]; j <= hi[r]; j++) {
      const float p = s[j] / sum;
      for (int64_t c = 0; c < D; c++) out[r * D + c] += p * V[j * D + c];
    }
  }
}

/*
 * Fused element-wise ops for inference (layers/heap_ops.ts), each the composite path's float32
 * operations in the same order (no FMA contraction: this file is C11, and the intrinsics spell out
 * every rounding):
 *   rmsnorm:  out = w * (x * (1 / sqrt(mean(x^2) + eps))) per row of n
 *   rotary:   out = x * cos_t + rotate_half(x) * sin_t, rotate_half(x) = [-x2, x1], t = row % T
 *   silu_mul: out = (g * (1 / (1 + e^-g))) * u
 */
static void SFX(rmsnorm)(const float *x, const float *w, float *out, int64_t rows, int64_t n, float eps) {
  for (int64_t r = 0; r < rows; r++) {
    const float *xr = x + r * n;
    float *o = out + r * n;
    int64_t i = 0;
    float ss = 0.f;
#if defined(__AVX2__)
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    for (; i + 16 <= n; i += 16) {
      const __m256 v0 = _mm256_loadu_ps(xr + i), v1 = _mm256_loadu_ps(xr + i + 8);
      a0 = _mm256_add_ps(a0, _mm256_mul_ps(v0, v0));
      a1 = _mm256_add_ps(a1, _mm256_mul_ps(v1, v1));
    }
    ss = SFX(hsum8)(_mm256_add_ps(a0, a1));
#endif
    for (; i < n; i++) ss += xr[i] * xr[i];
    const float rs = 1.f / sqrtf(ss / (float)n + eps);
    i = 0;
#if defined(__AVX2__)
    const __m256 vr = _mm256_set1_ps(rs);
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(o + i, _mm256_mul_ps(_mm256_loadu_ps(w + i), _mm256_mul_ps(_mm256_loadu_ps(xr + i), vr)));
#endif
    for (; i < n; i++) o[i] = w[i] * (xr[i] * rs);
  }
}

static void SFX(rotary)(const float *x, const float *cs, const float *sn, float *out, int64_t rows, int64_t T, int64_t D) {
  const int64_t h = D / 2;
  for (int64_t r = 0; r < rows; r++) {
    const float *xr = x + r * D, *c = cs + (r % T) * D, *s = sn + (r % T) * D;
    float *o = out + r * D;
    for (int64_t i = 0; i < h; i++) {
      const float a = xr[i] * c[i], b = -xr[i + h] * s[i];
      o[i] = a + b;
    }
    for (int64_t i = h; i < D; i++) {
      const float a = xr[i] * c[i], b = xr[i - h] * s[i];
      o[i] = a + b;
    }
  }
}

static void SFX(silu_mul)(const float *g, const float *u, float *out, int64_t n) {
  int64_t i = 0;
#if defined(__AVX2__)
  const __m256 one = _mm256_set1_ps(1.f), zero = _mm256_setzero_ps();
  for (; i + 8 <= n; i += 8) {
    const __m256 x = _mm256_loadu_ps(g + i);
    const __m256 sg = _mm256_div_ps(one, _mm256_add_ps(one, SFX(exp8)(_mm256_sub_ps(zero, x))));
    _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_mul_ps(x, sg), _mm256_loadu_ps(u + i)));
  }
#endif
  for (; i < n; i++) out[i] = (g[i] * (1.f / (1.f + expf(-g[i])))) * u[i];
}

/*
 * Row ops of prefill and vision (layers/heap_ops.ts), float32 in the composite paths' order:
 *   layernorm: out = ((x - mean) * (1 / sqrt(var + eps))) * w + b per row of n (mean, var over the row)
 *   softmax:   s = x / scale (div) or x * scale; out = e^(s - max s) / sum per row of n
 *   act:       NW_ACT_GELU_TANH  x / (1 + e^(-2 c (x + 0.044715 x^3))), c = sqrt(2/pi)
 *                                (= 0.5 x (1 + tanh(c (...))) without the cancellation of 1 + tanh)
 *              NW_ACT_QUICK_GELU x / (1 + e^(-1.702 x))
 *              NW_ACT_SILU       x / (1 + e^(-x))
 */
static void SFX(layernorm)(const float *x, const float *w, const float *b, float *out, int64_t rows, int64_t n, float eps) {
  for (int64_t r = 0; r < rows; r++) {
    const float *xr = x + r * n;
    float *o = out + r * n;
    int64_t i = 0;
    float s = 0.f;
#if defined(__AVX2__)
    __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
    for (; i + 16 <= n; i += 16) { a0 = _mm256_add_ps(a0, _mm256_loadu_ps(xr + i)); a1 = _mm256_add_ps(a1, _mm256_loadu_ps(xr + i + 8)); }
    s = SFX(hsum8)(_mm256_add_ps(a0, a1));
#endif
    for (; i < n; i++) s += xr[i];
    const float mean = s / (float)n;
    float ss = 0.f;
    i = 0;
#if defined(__AVX2__)
    const __m256 vm = _mm256_set1_ps(mean);
    a0 = _mm256_setzero_ps(); a1 = _mm256_setzero_ps();
    for (; i + 16 <= n; i += 16) {
      const __m256 d0 = _mm256_sub_ps(_mm256_loadu_ps(xr + i), vm), d1 = _mm256_sub_ps(_mm256_loadu_ps(xr + i + 8), vm);
      a0 = _mm256_add_ps(a0, _mm256_mul_ps(d0, d0));
      a1 = _mm256_add_ps(a1, _mm256_mul_ps(d1, d1));
    }
    ss = SFX(hsum8)(_mm256_add_ps(a0, a1));
#endif
    for (; i < n; i++) { const float d = xr[i] - mean; ss += d * d; }
    const float rs = 1.f / sqrtf(ss / (float)n + eps);
    i = 0;
#if defined(__AVX2__)
    const __m256 vr = _mm256_set1_ps(rs);
    for (; i + 8 <= n; i += 8) {
      const __m256 t = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(xr + i), vm), vr);
      _mm256_storeu_ps(o + i, _mm256_add_ps(_mm256_mul_ps(t, _mm256_loadu_ps(w + i)), _mm256_loadu_ps(b + i)));
    }
#endif
    for (; i < n; i++) o[i] = ((xr[i] - mean) * rs) * w[i] + b[i];
  }
}

static void SFX(softmax)(const float *x, float *out, int64_t rows, int64_t n, float scale, int div) {
  for (int64_t r = 0; r < rows; r++) {
    const float *xr = x + r * n;
    float *o = out + r * n;
    int64_t i = 0;
    float mx = -INFINITY, sum = 0.f;
#if defined(__AVX2__)
    const __m256 vs = _mm256_set1_ps(scale);
    __m256 vmx = _mm256_set1_ps(-INFINITY);
    for (; i + 8 <= n; i += 8) {
      const __m256 v = div ? _mm256_div_ps(_mm256_loadu_ps(xr + i), vs) : _mm256_mul_ps(_mm256_loadu_ps(xr + i), vs);
      _mm256_storeu_ps(o + i, v);
      vmx = _mm256_max_ps(vmx, v);
    }
    float m8[8];
    _mm256_storeu_ps(m8, vmx);
    for (int k = 0; k < 8; k++) mx = m8[k] > mx ? m8[k] : mx;
#endif
    for (; i < n; i++) { o[i] = div ? xr[i] / scale : xr[i] * scale; mx = o[i] > mx ? o[i] : mx; }
    i = 0;
#if defined(__AVX2__)
    const __m256 vmax = _mm256_set1_ps(mx);
    __m256 vsum = _mm256_setzero_ps();
    for (; i + 8 <= n; i += 8) {
      const __m256 e = SFX(exp8)(_mm256_sub_ps(_mm256_loadu_ps(o + i), vmax));
      _mm256_storeu_ps(o + i, e);
      vsum = _mm256_add_ps(vsum, e);
    }
    sum = SFX(hsum8)(vsum);
#endif
    for (; i < n; i++) { o[i] = expf(o[i] - mx); sum += o[i]; }
    i = 0;
#if defined(__AVX2__)
    const __m256 vt = _mm256_set1_ps(sum);
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(o + i, _mm256_div_ps(_mm256_loadu_ps(o + i), vt));
#endif
    for (; i < n; i++) o[i] = o[i] / sum;
  }
}

static void SFX(act)(int kind, const float *x, float *out, int64_t n) {
  const float c = kind == NW_ACT_GELU_TANH ? -2.f * 0.7978845608028654f : kind == NW_ACT_QUICK_GELU ? -1.702f : -1.f;
  int64_t i = 0;
#if defined(__AVX2__)
  const __m256 one = _mm256_set1_ps(1.f), vc = _mm256_set1_ps(c), k3 = _mm256_set1_ps(0.044715f);
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    const __m256 t = kind == NW_ACT_GELU_TANH ? _mm256_add_ps(v, _mm256_mul_ps(k3, _mm256_mul_ps(_mm256_mul_ps(v, v), v))) : v;
    _mm256_storeu_ps(out + i, _mm256_div_ps(v, _mm256_add_ps(one, SFX(exp8)(_mm256_mul_ps(vc, t)))));
  }
#endif
  for (; i < n; i++) {
    const float v = x[i], t = kind == NW_ACT_GELU_TANH ? v + 0.044715f * ((v * v) * v) : v;
    out[i] = v / (1.f + expf(c * t));
  }
}

const nw_kernels_t SFX(nw_kernels) = {
  SFX_NAME, SFX(dot_f32), SFX(dot_f16), SFX(dot_bf16), SFX(dot_q8), SFX(dot_q4), SFX(dot4q), SFX(dot4q4), SFX(dot8q4), SFX(dot4f), SFX(dotm), SFX(dequant_row), SFX(pack_q4x8), SFX(gemm_q4x8), NW_VNNI, SFX(sgemm_nt), SFX(axpy), SFX(attn_rows), SFX(rmsnorm), SFX(rotary), SFX(silu_mul),
  SFX(layernorm), SFX(softmax), SFX(act),
};
