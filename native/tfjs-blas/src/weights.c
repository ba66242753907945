/*
 * Native weights for tfjs-vlm: matrices [rows, cols] (torch Linear [out, in]) that live outside the
 * wasm heap, either zero-copy in a read-only mmap of a checkpoint file or in an owned 64-byte
 * aligned buffer, stored as f32, f16, bf16 (as in safetensors) or GGML q8_0 / q4_0 blocks.
 *
 * Kernels (kern.h) come in scalar / AVX2+FMA+F16C / AVX-512(+VNNI) builds, chosen at run time.
 * Work runs on a persistent pthread pool (VLM_THREADS, default all cores), split by output rows.
 *   matmul  M <= mvMax (decode): every thread streams its own row range of W once; q8_0/q4_0 use
 *           int8 dot products against x quantized to 32-blocks (as llama.cpp's vec_dot_q*_q8_0),
 *           f16/bf16/f32 convert in registers and use f32 FMAs.
 *   matmul  M > mvMax (prefill): panels of W rows dequantized to f32 in per-thread scratch, then
 *           sgemm(x, panel^T) with OpenBLAS at 1 thread per worker (or the built-in sgemm);
 *           q4_0 instead repacks panels into groups of 8 rows and runs an int8 GEMM against x
 *           quantized to 32-blocks (kern.h gemm_q4x8; TFJS_BLAS_Q4_PREFILL=f32 for the sgemm path); q8_0
 *           the same GEMM on CPUs with VNNI, x as two terms of q8 blocks (TFJS_BLAS_Q8_PREFILL=f32).
 * The quantizers are scalar ports of GGML's quantize_row_q8_0_ref / quantize_row_q4_0_ref (this
 * file is compiled with -ffp-contract=off so x*id + 8.5f is never fused).
 */
#define _GNU_SOURCE
#define NAPI_VERSION 8
#include <node_api.h>
#include "nw.h"
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif
#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CPU_PAUSE() _mm_pause()
#else
#define CPU_PAUSE() ((void)0)
#endif

/* ------------------------------------------------------------------------------------------- */
/* conversions                                                                                  */
/* ------------------------------------------------------------------------------------------- */

float nw_f16_table[65536];

static float f16_bits_to_f32(uint16_t h) {
  const uint32_t sign = (uint32_t)(h & 0x8000) << 16, e = (h >> 10) & 0x1f, m = h & 0x3ff;
  uint32_t u;
  if (e == 0) {
    if (m == 0) u = sign;
    else { /* subnormal: m * 2^-24 */
      float f = (float)m * (1.0f / 16777216.0f);
      memcpy(&u, &f, 4);
      u |= sign;
    }
  } else if (e == 31) u = sign | 0x7f800000 | (m << 13);
  else u = sign | ((e + 112) << 23) | (m << 13);
  float f; memcpy(&f, &u, 4);
  return f;
}

/* IEEE round-to-nearest-even, identical to F16C vcvtps2ph with imm 0 (GGML_FP32_TO_FP16 on x86). */
uint16_t nw_f32_to_f16(float f) {
  uint32_t x; memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000, ax = x & 0x7fffffff;
  if (ax > 0x7f800000) return (uint16_t)(sign | 0x7e00 | ((ax >> 13) & 0x3ff)); /* NaN stays NaN (quiet) */
  if (ax >= 0x477ff000) return (uint16_t)(sign | 0x7c00);                      /* >= 65520 -> inf */
  if (ax < 0x38800000) {                                                        /* below 2^-14: subnormal */
    const uint32_t e = ax >> 23;
    if (e < 102) return (uint16_t)sign;
    const uint32_t m = (ax & 0x7fffff) | 0x800000, shift = 126 - e;
    uint32_t q = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (q & 1))) q++;
    return (uint16_t)(sign | q);
  }
  const uint32_t r = ax - 0x38000000;
  uint32_t q = r >> 13;
  const uint32_t rem = r & 0x1fff;
  if (rem > 0x1000 || (rem == 0x1000 && (q & 1))) q++;
  return (uint16_t)(sign | q);
}

/* round-to-nearest-even, NaN kept quiet (as torch's float -> bfloat16) */
uint16_t nw_f32_to_bf16(float f) {
  uint32_t x; memcpy(&x, &f, 4);
  if ((x & 0x7fffffff) > 0x7f800000) return (uint16_t)((x >> 16) | 0x40);
  return (uint16_t)((x + 0x7fff + ((x >> 16) & 1)) >> 16);
}


/* GGML quantize_row_q8_0_ref, one row (n % 32 == 0) */
static void quant_row_q8_0(const float *x, uint8_t *y, int64_t n) {
  for (int64_t b = 0; b < n / QK; b++, x += QK, y += Q8_0_BYTES) {
    float amax = 0.0f;
    for (int j = 0; j < QK; j++) amax = NW_MAX(amax, fabsf(x[j]));
    const float d = amax / ((1 << 7) - 1);
    const float id = d ? 1.0f / d : 0.0f;
    const uint16_t h = nw_f32_to_f16(d);
    memcpy(y, &h, 2);
    for (int j = 0; j < QK; j++) {
      const float x0 = x[j] * id;
      y[2 + j] = (uint8_t)(int8_t)roundf(x0);
    }
  }
}

/* GGML quantize_row_q4_0_ref, one row (n % 32 == 0) */
static void quant_row_q4_0(const float *x, uint8_t *y, int64_t n) {
  for (int64_t b = 0; b < n / QK; b++, x += QK, y += Q4_0_BYTES) {
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < QK; j++) {
      const float v = x[j];
      if (amax < fabsf(v)) { amax = fabsf(v); max = v; }
    }
    const float d = max / -8;
    const float id = d ? 1.0f / d : 0.0f;
    const uint16_t h = nw_f32_to_f16(d);
    memcpy(y, &h, 2);
    for (int j = 0; j < QK / 2; j++) {
      const float x0 = x[j] * id;
      const float x1 = x[QK / 2 + j] * id;
      const uint8_t xi0 = (uint8_t)NW_MIN(15, (int8_t)(x0 + 8.5f));
      const uint8_t xi1 = (uint8_t)NW_MIN(15, (int8_t)(x1 + 8.5f));
      y[2 + j] = (uint8_t)(xi0 | (xi1 << 4));
    }
  }
}

/* activations for the int8 dot products (scale kept in f32) */
static void quant_row_xq8(const float *x, xq8_t *y, int64_t n) {
  for (int64_t b = 0; b < n / QK; b++, x += QK) {
    float amax = 0.0f;
    for (int j = 0; j < QK; j++) amax = NW_MAX(amax, fabsf(x[j]));
    const float d = amax / 127.f, id = d ? 1.0f / d : 0.0f;
    y[b].d = d;
    int32_t sum = 0;
    for (int j = 0; j < QK; j++) {
      /* roundf (ties away from zero) without the libm call: v - (int)v is exact for |v| <= 127 */
      const float v = x[j] * id;
      int q = (int)v;
      const float f = v - (float)q;
      q += (f >= 0.5f) - (f <= -0.5f);
      y[b].qs[j] = (int8_t)q;
      sum += q;
    }
    y[b].s = sum;
  }
}

/* xq8 blocks -> the doubled layout of the q4_0 decode kernel (nw.h xq4d_t) */
static void xq4_double(const xq8_t *x, xq4d_t *y, int64_t nb) {
  for (int64_t b = 0; b < nb; b++) {
    memcpy(y[b].lo, x[b].qs, QK / 2);
    memcpy(y[b].lo + QK / 2, x[b].qs, QK / 2);
    memcpy(y[b].hi, x[b].qs + QK / 2, QK / 2);
    memcpy(y[b].hi + QK / 2, x[b].qs + QK / 2, QK / 2);
    y[b].d = x[b].d;
    y[b].s2 = 2 * x[b].s;
  }
}

static void quant_row(int type, const float *x, uint8_t *y, int64_t n) {
  switch (type) {
    case NW_F32: memcpy(y, x, (size_t)n * 4); break;
    case NW_F16: for (int64_t i = 0; i < n; i++) { uint16_t h = nw_f32_to_f16(x[i]); memcpy(y + 2 * i, &h, 2); } break;
    case NW_BF16: for (int64_t i = 0; i < n; i++) { uint16_t h = nw_f32_to_bf16(x[i]); memcpy(y + 2 * i, &h, 2); } break;
    case NW_Q8_0: quant_row_q8_0(x, y, n); break;
    case NW_Q4_0: quant_row_q4_0(x, y, n); break;
  }
}

static const char *TYPE_NAMES[NW_NTYPES] = {"f32", "f16", "bf16", "q8_0", "q4_0"};
static size_t row_bytes(int type, int64_t cols) {
  switch (type) {
    case NW_F32: return (size_t)cols * 4;
    case NW_F16: case NW_BF16: return (size_t)cols * 2;
    case NW_Q8_0: return (size_t)(cols / QK) * Q8_0_BYTES;
    default: return (size_t)(cols / QK) * Q4_0_BYTES;
  }
}

/* ------------------------------------------------------------------------------------------- */
/* ISA dispatch                                                                                 */
/* ------------------------------------------------------------------------------------------- */

static const nw_kernels_t *g_kern = &nw_kernels_scalar;
const nw_kernels_t *nw_kern(void) { return g_kern; }
static struct { int avx2, fma, f16c, avx512f, avx512bw, avx512vl, avx512vnni; } g_cpu;

static char g_selfcheck[160] = "";

/* NULL when table a matches table b on every kernel (random data, 224 columns), else the kernel's name */
static const char *self_check(const nw_kernels_t *a, const nw_kernels_t *b) {
  enum { N = 224, NB = N / QK };
  static uint8_t w[N * 4];
  static float x[4 * N], ra[4], rb[4], rb4[4], da[N], db[N];
  static xq8_t xq[4 * NB];
  uint32_t seed = 12345;
#define RND() (seed = seed * 1664525u + 1013904223u, seed >> 8)
  for (int i = 0; i < N * 4; i++) w[i] = (uint8_t)RND();
  for (int i = 0; i < 4 * N; i++) x[i] = (float)(RND() % 2001) / 1000.f - 1.f;
  for (int i = 0; i < N; i++) { /* sane f16 / bf16 / block-scale halves: small positive exponents */
    w[2 * i + 1] = (uint8_t)(0x30 + (w[2 * i + 1] & 7));
  }
  for (int m = 0; m < 4; m++) quant_row_xq8(x + m * N, xq + m * NB, N);
  const int types[] = {NW_F32, NW_F16, NW_BF16, NW_Q8_0, NW_Q4_0};
  for (int ti = 0; ti < 5; ti++) {
    const int t = types[ti];
    uint8_t wt[N * 4];
    memcpy(wt, w, sizeof wt);
    if (t == NW_BF16) for (int i = 0; i < N; i++) wt[2 * i + 1] = (uint8_t)(0x3e | (wt[2 * i + 1] & 0x81));
    if (t == NW_F32) for (int i = 0; i < N; i++) { float f = (float)(RND() % 2001) / 1000.f - 1.f; memcpy(wt + 4 * i, &f, 4); }
    if (t == NW_Q8_0) for (int bb = 0; bb < NB; bb++) { wt[bb * Q8_0_BYTES] = 0; wt[bb * Q8_0_BYTES + 1] = 0x20; }
    if (t == NW_Q4_0) for (int bb = 0; bb < NB; bb++) { wt[bb * Q4_0_BYTES] = 0; wt[bb * Q4_0_BYTES + 1] = 0x20; }
    float sa, sb;
    switch (t) {
      case NW_F32: sa = a->dot_f32((const float *)wt, x, N); sb = b->dot_f32((const float *)wt, x, N); break;
      case NW_F16: sa = a->dot_f16((const uint16_t *)wt, x, N); sb = b->dot_f16((const uint16_t *)wt, x, N); break;
      case NW_BF16: sa = a->dot_bf16((const uint16_t *)wt, x, N); sb = b->dot_bf16((const uint16_t *)wt, x, N); break;
      case NW_Q8_0: sa = a->dot_q8(wt, xq, NB); sb = b->dot_q8(wt, xq, NB); break;
      default: sa = a->dot_q4(wt, xq, NB); sb = b->dot_q4(wt, xq, NB); break;
    }
    if (!(fabsf(sa - sb) <= 1e-4f * (1.f + fabsf(sb)))) return TYPE_NAMES[t];
    if (t == NW_F32 || t == NW_F16 || t == NW_BF16) { /* four overlapping rows, 40 values long, 8 values apart */
      const size_t es = t == NW_F32 ? 4 : 2;
      a->dot4f(t, wt, 8 * es, x, 40, ra);
      b->dot4f(t, wt, 8 * es, x, 40, rb4);
      for (int m = 0; m < 4; m++) if (!(fabsf(ra[m] - rb4[m]) <= 1e-4f * (1.f + fabsf(rb4[m])))) return "dot4f";
    }
    if (t == NW_Q8_0 || t == NW_Q4_0) { /* four overlapping rows, one block apart */
      const size_t rb = t == NW_Q8_0 ? Q8_0_BYTES : Q4_0_BYTES;
      a->dot4q(t, wt, rb, xq, 2, ra);
      b->dot4q(t, wt, rb, xq, 2, rb4);
      for (int m = 0; m < 4; m++) if (!(fabsf(ra[m] - rb4[m]) <= 1e-4f * (1.f + fabsf(rb4[m])))) return "dot4q";
      if (t == NW_Q4_0) { /* prefill int8 GEMM: 16 rows of 3 blocks, 54 bytes apart, packed and multiplied */
        static q4x8_t pa[6], pb[6];
        static float ga[4 * 16], gb[4 * 16];
        static uint8_t w16[16 * 54];
        memcpy(w16, wt, sizeof w16);
        for (int bb = 0; bb < 16 * 3; bb++) { w16[bb * Q4_0_BYTES] = (uint8_t)RND(); w16[bb * Q4_0_BYTES + 1] = (uint8_t)(0x20 + (RND() & 3)); }
        for (int g = 0; g < 2; g++) { a->pack_q4x8(NW_Q4_0, w16 + g * 8 * 54, 54, 3, pa + 3 * g); b->pack_q4x8(NW_Q4_0, w16 + g * 8 * 54, 54, 3, pb + 3 * g); }
        if (memcmp(pa, pb, sizeof pa) != 0) return "pack_q4x8";
        for (int mm = 1; mm <= 4; mm++)
          for (int accum = 0; accum < 2; accum++) {
            if (!accum) for (int i = 0; i < 64; i++) ga[i] = gb[i] = 0.f;
            a->gemm_q4x8(pa, 2, 3, xq + 1, NB, mm, ga, 16, x + 7, accum, 8, 0);
            b->gemm_q4x8(pb, 2, 3, xq + 1, NB, mm, gb, 16, x + 7, accum, 8, 0);
            for (int i = 0; i < 64; i++) if (!(fabsf(ga[i] - gb[i]) <= 1e-4f * (1.f + fabsf(gb[i])))) return "gemm_q4x8";
          }
        if (a->vnni) { /* q8_0 panels (VNNI tables only), single and two-term x, against the plain-C table */
          const nw_kernels_t *c = &nw_kernels_scalar;
          static uint8_t w8[16 * 3 * Q8_0_BYTES];
          for (size_t i = 0; i < sizeof w8; i++) w8[i] = (uint8_t)RND();
          for (int bb = 0; bb < 16 * 3; bb++) { w8[bb * Q8_0_BYTES] = (uint8_t)RND(); w8[bb * Q8_0_BYTES + 1] = (uint8_t)(0x20 + (RND() & 3)); }
          for (int g = 0; g < 2; g++) {
            a->pack_q4x8(NW_Q8_0, w8 + g * 8 * 3 * Q8_0_BYTES, 3 * Q8_0_BYTES, 3, pa + 3 * g);
            c->pack_q4x8(NW_Q8_0, w8 + g * 8 * 3 * Q8_0_BYTES, 3 * Q8_0_BYTES, 3, pb + 3 * g);
          }
          if (memcmp(pa, pb, sizeof pa) != 0) return "pack_q4x8 (q8_0)";
          for (int pairs = 0; pairs < 2; pairs++)
            for (int mm = 1 + pairs; mm <= 4; mm += 1 + pairs) {
              for (int i = 0; i < 64; i++) ga[i] = gb[i] = 0.f;
              a->gemm_q4x8(pa, 2, 3, xq + 1, NB, mm, ga, 16, x + 7, 0, 128, pairs);
              c->gemm_q4x8(pb, 2, 3, xq + 1, NB, mm, gb, 16, x + 7, 0, 128, pairs);
              for (int i = 0; i < 64; i++) if (!(fabsf(ga[i] - gb[i]) <= 1e-4f * (1.f + fabsf(gb[i])))) return "gemm_q4x8 (q8_0)";
            }
        }
      }
      if (t == NW_Q4_0) { /* the decode kernel agrees with the one-row dot on the same rows */
        static xq4d_t x4[NB];
        xq4_double(xq, x4, 2);
        a->dot4q4(wt, rb, x4, 2, ra);
        b->dot4q4(wt, rb, x4, 2, rb4);
        for (int m = 0; m < 4; m++)
          if (!(fabsf(ra[m] - rb4[m]) <= 1e-4f * (1.f + fabsf(rb4[m]))) ||
              !(fabsf(ra[m] - b->dot_q4(wt + m * rb, xq, 2)) <= 1e-4f * (1.f + fabsf(rb4[m])))) return "dot4q4";
        float r8a[8], r8b[8]; /* eight rows half a block apart (9 bytes: odd addresses too) */
        a->dot8q4(wt, 9, x4, 2, r8a);
        b->dot8q4(wt, 9, x4, 2, r8b);
        for (int m = 0; m < 8; m++)
          if (!(fabsf(r8a[m] - r8b[m]) <= 1e-4f * (1.f + fabsf(r8b[m]))) ||
              !(fabsf(r8a[m] - b->dot_q4(wt + m * 9, xq, 2)) <= 1e-4f * (1.f + fabsf(r8b[m])))) return "dot8q4";
      }
    }
    for (int mm = 1; mm <= 4; mm++) {
      a->dotm(t, wt, x, xq, N, mm, ra);
      b->dotm(t, wt, x, xq, N, mm, rb);
      for (int m = 0; m < mm; m++) if (!(fabsf(ra[m] - rb[m]) <= 1e-4f * (1.f + fabsf(rb[m])))) return "dotm";
    }
    a->dequant_row(t, wt, da, N);
    b->dequant_row(t, wt, db, N);
    if (memcmp(da, db, sizeof da) != 0) return "dequant_row";
  }
  float C1[4 * 5], C2[4 * 5];
  a->sgemm_nt(4, 5, 40, x, N, x + 1, N, C1, 5, 0.f);
  b->sgemm_nt(4, 5, 40, x, N, x + 1, N, C2, 5, 0.f);
  for (int i = 0; i < 20; i++) if (!(fabsf(C1[i] - C2[i]) <= 1e-4f * (1.f + fabsf(C2[i])))) return "sgemm_nt";
  /* row ops: 2 rows of 37 (vector body and tail), x in [-3, 3] */
  static float xs[74], o1[74], o2[74];
  for (int i = 0; i < 74; i++) xs[i] = 3.f * x[i];
#define CLOSE(what) for (int i = 0; i < 74; i++) if (!(fabsf(o1[i] - o2[i]) <= 1e-5f * (1.f + fabsf(o2[i])))) return what;
  a->layernorm(xs, x + 100, x + 200, o1, 2, 37, 1e-6f); b->layernorm(xs, x + 100, x + 200, o2, 2, 37, 1e-6f); CLOSE("layernorm")
  a->softmax(xs, o1, 2, 37, 3.f, 1); b->softmax(xs, o2, 2, 37, 3.f, 1); CLOSE("softmax")
  a->act(NW_ACT_GELU_TANH, xs, o1, 74); b->act(NW_ACT_GELU_TANH, xs, o2, 74); CLOSE("gelu")
  a->act(NW_ACT_QUICK_GELU, xs, o1, 74); b->act(NW_ACT_QUICK_GELU, xs, o2, 74); CLOSE("quick_gelu")
  a->act(NW_ACT_SILU, xs, o1, 74); b->act(NW_ACT_SILU, xs, o2, 74); CLOSE("silu")
#undef CLOSE
#undef RND
  return NULL;
}

static void select_kernels(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  g_cpu.avx2 = __builtin_cpu_supports("avx2");
  g_cpu.fma = __builtin_cpu_supports("fma");
  g_cpu.f16c = 0;
  { /* __builtin_cpu_supports has no "f16c" in older compilers: CPUID.1:ECX bit 29 */
    unsigned a, b, c, d;
    __asm__ volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(1), "c"(0));
    g_cpu.f16c = (c >> 29) & 1;
  }
  g_cpu.avx512f = __builtin_cpu_supports("avx512f");
  g_cpu.avx512bw = __builtin_cpu_supports("avx512bw");
  g_cpu.avx512vl = __builtin_cpu_supports("avx512vl");
  g_cpu.avx512vnni = __builtin_cpu_supports("avx512vnni");
  if (g_cpu.avx2 && g_cpu.fma && g_cpu.f16c) g_kern = &nw_kernels_avx2;
#ifdef NW_HAVE_AVX512
  if (g_kern == &nw_kernels_avx2 && g_cpu.avx512f && g_cpu.avx512bw && g_cpu.avx512vl && g_cpu.avx512vnni)
    g_kern = &nw_kernels_avx512;
#endif
#endif
  /* The AVX-512 table can't be exercised on AVX2-only build/CI machines: before using it, check
     it against the AVX2 table on a small problem and fall back to AVX2 when they disagree. */
  if (g_kern != &nw_kernels_avx2 && g_kern != &nw_kernels_scalar) {
    const char *bad = self_check(g_kern, &nw_kernels_avx2);
    if (bad) {
      snprintf(g_selfcheck, sizeof g_selfcheck, "%s kernels disagree with avx2 (%s); using avx2", g_kern->name, bad);
      g_kern = &nw_kernels_avx2;
    }
  }
  if (getenv("TFJS_BLAS_SELFCHECK") && g_kern != &nw_kernels_scalar && !g_selfcheck[0]) {
    /* test hook: the same check against the plain-C table, for avx2 and (when in use) avx512 */
    const char *bad = self_check(&nw_kernels_scalar, &nw_kernels_avx2);
    int n = snprintf(g_selfcheck, sizeof g_selfcheck, "scalar vs avx2: %s", bad ? bad : "ok");
    if (g_kern != &nw_kernels_avx2) {
      bad = self_check(&nw_kernels_scalar, g_kern);
      snprintf(g_selfcheck + n, sizeof g_selfcheck - n, "; scalar vs %s: %s", g_kern->name, bad ? bad : "ok");
    }
  }
  const char *force = getenv("TFJS_BLAS_ISA"); /* scalar|avx2|avx512: only downgrades */
  if (force && strcmp(force, "scalar") == 0) g_kern = &nw_kernels_scalar;
  if (force && strcmp(force, "avx2") == 0 && g_kern != &nw_kernels_scalar) g_kern = &nw_kernels_avx2;
}

/* ------------------------------------------------------------------------------------------- */
/* persistent thread pool                                                                       */
/* ------------------------------------------------------------------------------------------- */

#define MAXT 256
typedef void (*job_fn)(void *ctx, int tid, int nth);
static struct {
  int n; /* threads including the caller */
  pthread_t th[MAXT];
  pthread_mutex_t mu;
  pthread_cond_t cv_start, cv_done;
  job_fn fn;
  void *ctx;
  unsigned long gen, start_gen;
  int open, entered, quit, started;
  void *scratch[MAXT][4];
  size_t scratch_sz[MAXT][4];
} P = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv_start = PTHREAD_COND_INITIALIZER, .cv_done = PTHREAD_COND_INITIALIZER};
static pthread_mutex_t g_op_mu = PTHREAD_MUTEX_INITIALIZER; /* one API operation at a time */
#define SPIN_ITERS 4000 /* ~0.1 ms of pause before sleeping on the condvar */

/*
 * A job is "open" while the caller works on it. A worker that wakes up after the caller closed it
 * skips it: every job hands out its work dynamically (atomic chunk counters), so whoever runs does
 * the work, and on an oversubscribed machine the caller never waits for a worker that was not
 * scheduled in time. The caller only waits for workers that joined (they may still touch ctx).
 */
static void *pool_worker(void *arg) {
  const int tid = (int)(intptr_t)arg;
  unsigned long my = P.start_gen; /* the generation when the pool started: a job posted before this
                                     thread got scheduled is still seen as new */
  for (;;) {
    for (int i = 0; i < SPIN_ITERS && __atomic_load_n(&P.gen, __ATOMIC_ACQUIRE) == my; i++) CPU_PAUSE();
    pthread_mutex_lock(&P.mu);
    while (P.gen == my && !P.quit) pthread_cond_wait(&P.cv_start, &P.mu);
    if (P.quit) { pthread_mutex_unlock(&P.mu); return NULL; }
    my = P.gen;
    const int join = P.open;
    if (join) P.entered++;
    job_fn fn = P.fn; void *ctx = P.ctx; const int n = P.n;
    pthread_mutex_unlock(&P.mu);
    if (!join) continue;
    fn(ctx, tid, n);
    pthread_mutex_lock(&P.mu);
    if (--P.entered == 0) pthread_cond_signal(&P.cv_done);
    pthread_mutex_unlock(&P.mu);
  }
}

static void pool_stop(void) {
  if (!P.started) return;
  pthread_mutex_lock(&P.mu);
  P.quit = 1;
  pthread_cond_broadcast(&P.cv_start);
  pthread_mutex_unlock(&P.mu);
  for (int i = 1; i < P.n; i++) pthread_join(P.th[i], NULL);
  P.quit = 0;
  P.started = 0;
}

static int pool_start(int n) {
  if (n < 1) n = 1;
  if (n > MAXT) n = MAXT;
  P.n = n;
  P.start_gen = P.gen;
  for (int i = 1; i < n; i++)
    if (pthread_create(&P.th[i], NULL, pool_worker, (void *)(intptr_t)i) != 0) { P.n = i; break; }
  P.started = 1;
  return P.n;
}

static void ensure_pool(void) {
  if (P.started) return;
  const char *e = getenv("VLM_THREADS");
  long n = e ? strtol(e, NULL, 10) : 0;
  if (n < 1) n = sysconf(_SC_NPROCESSORS_ONLN);
  pool_start((int)n);
}

static void pool_run(job_fn fn, void *ctx) {
  ensure_pool();
  if (P.n == 1) { fn(ctx, 0, 1); return; }
  pthread_mutex_lock(&P.mu);
  P.fn = fn; P.ctx = ctx;
  P.open = 1;
  P.entered = 0;
  __atomic_add_fetch(&P.gen, 1, __ATOMIC_ACQ_REL);
  pthread_cond_broadcast(&P.cv_start);
  pthread_mutex_unlock(&P.mu);
  fn(ctx, 0, P.n);
  pthread_mutex_lock(&P.mu);
  P.open = 0; /* late workers skip the job from here on */
  while (P.entered > 0) pthread_cond_wait(&P.cv_done, &P.mu);
  pthread_mutex_unlock(&P.mu);
}

/* per-thread scratch (slot 0: dequantized panel, slot 1: matmulT accumulator or the quantized x of
   a matvec, slot 2 of thread 0: the shared block of the 'block' prefill path, slot 3 of thread 0:
   the doubled x of a q4_0 matvec); NULL on OOM */
static void *scratch(int tid, int slot, size_t bytes) {
  if (P.scratch_sz[tid][slot] < bytes) {
    free(P.scratch[tid][slot]);
    P.scratch[tid][slot] = NULL;
    P.scratch_sz[tid][slot] = 0;
    if (posix_memalign(&P.scratch[tid][slot], 64, bytes) != 0) return NULL;
    P.scratch_sz[tid][slot] = bytes;
  }
  return P.scratch[tid][slot];
}

/* ------------------------------------------------------------------------------------------- */
/* mappings and weights                                                                         */
/* ------------------------------------------------------------------------------------------- */

typedef struct { int refs; uint8_t *base; size_t size; char *path; } nw_map;
typedef struct {
  int type; int64_t rows, cols;
  size_t rbytes, bytes;
  const uint8_t *data;
  void *owned;
  nw_map *map;
  int freed;
  int pinned; /* pin(): the mapped range is mlock'ed until release */
} nw_weight;

static const napi_type_tag TAG_MAP = {0x7466a5b1c2d3e4f5ULL, 0x0a1b2c3d4e5f6071ULL};
static const napi_type_tag TAG_W = {0x7466a5b1c2d3e4f6ULL, 0x1a2b3c4d5e6f7081ULL};

static void map_unref(nw_map *m) {
  if (__atomic_sub_fetch(&m->refs, 1, __ATOMIC_ACQ_REL) == 0) {
    if (m->base) munmap(m->base, m->size);
    free(m->path);
    free(m);
  }
}
static void map_finalize(napi_env env, void *data, void *hint) { (void)env; (void)hint; map_unref((nw_map *)data); }

/* the pages a weight's bytes span (madvise / mlock work on whole pages) */
static size_t page_span(const nw_weight *w, void **lo) {
  const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
  const uintptr_t a = (uintptr_t)w->data & ~(page - 1), b = (uintptr_t)w->data + w->bytes;
  *lo = (void *)a;
  return (size_t)(b - a);
}
static void weight_release(napi_env env, nw_weight *w) {
  if (w->freed) return;
  w->freed = 1;
  if (w->owned) {
    free(w->owned);
    int64_t dummy;
    if (env) napi_adjust_external_memory(env, -(int64_t)w->bytes, &dummy);
  }
  if (w->map) {
    if (w->pinned) {
      void *lo;
      const size_t len = page_span(w, &lo);
      (void)munlock(lo, len);
      w->pinned = 0;
    }
    map_unref(w->map);
  }
  w->owned = NULL; w->map = NULL; w->data = NULL;
}
static void weight_finalize(napi_env env, void *data, void *hint) {
  (void)hint;
  weight_release(env, (nw_weight *)data);
  free(data);
}

/* ------------------------------------------------------------------------------------------- */
/* N-API helpers                                                                                */
/* ------------------------------------------------------------------------------------------- */

static void throwf(napi_env env, int range, const char *fmt, ...) {
  char buf[1024];
  va_list ap; va_start(ap, fmt); vsnprintf(buf, sizeof buf, fmt, ap); va_end(ap);
  if (range) napi_throw_range_error(env, NULL, buf); else napi_throw_type_error(env, NULL, buf);
}
#define RANGE_ERR(...) do { throwf(env, 1, __VA_ARGS__); return NULL; } while (0)
#define TYPE_ERR(...) do { throwf(env, 0, __VA_ARGS__); return NULL; } while (0)
#define ARGS(n) size_t argc = n; napi_value a[n]; \
  if (napi_get_cb_info(env, info, &argc, a, NULL, NULL) != napi_ok) return NULL; \
  for (size_t i_ = argc; i_ < n; i_++) napi_get_undefined(env, &a[i_]);

static int get_int(napi_env env, napi_value v, const char *fn, const char *name, int64_t *out) {
  napi_valuetype t; double d;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_number || napi_get_value_double(env, v, &d) != napi_ok ||
      d != floor(d) || d < 0 || d > 9007199254740991.0) {
    throwf(env, t == napi_number, "tfjs-blas %s: %s must be a non-negative integer", fn, name);
    return 0;
  }
  *out = (int64_t)d;
  return 1;
}
static int is_nullish(napi_env env, napi_value v) {
  napi_valuetype t; napi_typeof(env, v, &t);
  return t == napi_null || t == napi_undefined;
}
/* typed array of the given kind (or any kind with want < 0): data pointer and element count */
static int get_ta(napi_env env, napi_value v, int want, const char *fn, const char *name, void **p, size_t *len,
                  size_t *bytelen) {
  bool is = false;
  napi_typedarray_type tt; size_t n; void *data; napi_value ab; size_t off;
  if (napi_is_typedarray(env, v, &is) != napi_ok || !is ||
      napi_get_typedarray_info(env, v, &tt, &n, &data, &ab, &off) != napi_ok || (want >= 0 && (int)tt != want)) {
    throwf(env, 0, "tfjs-blas %s: %s must be a%s", fn, name,
           want == napi_float32_array ? " Float32Array" : want == napi_int32_array ? "n Int32Array" : " typed array");
    return 0;
  }
  static const size_t esz[] = {1, 1, 1, 2, 2, 4, 4, 4, 8, 8, 8};
  *p = data; *len = n;
  if (bytelen) *bytelen = n * ((size_t)tt < sizeof esz / sizeof esz[0] ? esz[tt] : 1);
  return 1;
}
static int get_type(napi_env env, napi_value v, const char *fn, int *type) {
  char s[16] = {0}; size_t n = 0;
  if (napi_get_value_string_utf8(env, v, s, sizeof s, &n) == napi_ok)
    for (int t = 0; t < NW_NTYPES; t++) if (strcmp(s, TYPE_NAMES[t]) == 0) { *type = t; return 1; }
  throwf(env, 0, "tfjs-blas %s: type must be one of 'f32', 'f16', 'bf16', 'q8_0', 'q4_0' (got '%s')", fn, s);
  return 0;
}
static nw_weight *get_weight(napi_env env, napi_value v, const char *fn) {
  bool ok = false; void *p = NULL; napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_external || napi_check_object_type_tag(env, v, &TAG_W, &ok) != napi_ok ||
      !ok || napi_get_value_external(env, v, &p) != napi_ok) {
    throwf(env, 0, "tfjs-blas %s: expected a native weight (from weightFromMap/weightFromBuffer/quantize)", fn);
    return NULL;
  }
  nw_weight *w = (nw_weight *)p;
  if (w->freed) { throwf(env, 1, "tfjs-blas %s: the weight [%lld, %lld] %s was freed", fn, (long long)w->rows, (long long)w->cols, TYPE_NAMES[w->type]); return NULL; }
  return w;
}
static int check_shape(napi_env env, const char *fn, int type, int64_t rows, int64_t cols) {
  if (rows < 1 || cols < 1) { throwf(env, 1, "tfjs-blas %s: rows and cols must be >= 1 (got %lld x %lld)", fn, (long long)rows, (long long)cols); return 0; }
  if ((type == NW_Q8_0 || type == NW_Q4_0) && cols % QK != 0) {
    throwf(env, 1, "tfjs-blas %s: %s needs cols to be a multiple of 32 (got %lld)", fn, TYPE_NAMES[type], (long long)cols);
    return 0;
  }
  if (rows > INT32_MAX || cols > INT32_MAX) { throwf(env, 1, "tfjs-blas %s: rows and cols must be < 2^31", fn); return 0; }
  return 1;
}
static napi_value wrap_weight(napi_env env, nw_weight *w) {
  napi_value ext;
  if (napi_create_external(env, w, weight_finalize, NULL, &ext) != napi_ok || napi_type_tag_object(env, ext, &TAG_W) != napi_ok) {
    weight_release(env, w); free(w);
    napi_throw_error(env, NULL, "tfjs-blas: could not create the weight object");
    return NULL;
  }
  return ext;
}
/* Owned weight bytes: 64-byte aligned; from 2 MiB on, 2 MiB aligned and advised as transparent huge
   pages (where THP is in "madvise" mode, the usual default, anonymous memory otherwise gets 4 KiB
   pages, and a decode step that streams GBs of weights pays a TLB miss every 4 KiB). VLM_NO_THP=1
   turns the advice off. */
#define NW_HUGE ((size_t)2 << 20)
static int thp_on(void) {
  static int thp = -1;
  if (thp < 0) { const char *e = getenv("VLM_NO_THP"); thp = !(e && *e && strcmp(e, "0") != 0); }
  return thp;
}
static int alloc_weight_bytes(void **out, size_t bytes) {
  if (bytes >= NW_HUGE) {
    if (posix_memalign(out, NW_HUGE, bytes) != 0) return 0;
#ifdef MADV_HUGEPAGE
    /* only the whole 2 MiB pages: the tail stays in small pages, so no weight grows in RSS */
    if (thp_on()) (void)madvise(*out, bytes & ~(NW_HUGE - 1), MADV_HUGEPAGE);
#endif
    return 1;
  }
  return posix_memalign(out, 64, bytes ? bytes : 64) == 0;
}
static nw_weight *new_owned(napi_env env, int type, int64_t rows, int64_t cols) {
  nw_weight *w = calloc(1, sizeof *w);
  if (!w) return NULL;
  w->type = type; w->rows = rows; w->cols = cols;
  w->rbytes = row_bytes(type, cols); w->bytes = w->rbytes * (size_t)rows;
  if (!alloc_weight_bytes(&w->owned, w->bytes)) { free(w); return NULL; }
  w->data = w->owned;
  int64_t dummy;
  napi_adjust_external_memory(env, (int64_t)w->bytes, &dummy);
  return w;
}

/* ------------------------------------------------------------------------------------------- */
/* jobs                                                                                         */
/* ------------------------------------------------------------------------------------------- */

static int g_mv_max = 8; /* matmul uses the matrix-vector path for M <= g_mv_max (setMvMax / TFJS_BLAS_MV_MAX) */

typedef struct {
  const nw_weight *w;
  const float *x; const xq8_t *xq; const xq4d_t *xq4; int64_t M;
  float *out; const float *bias;
  int64_t panel, npanels; int next; int err;
  int use_ob;
  int64_t kc; /* job_q4gemm: blocks per packed chunk */
} mm_ctx;

static void job_matvec(void *vc, int tid, int nth) {
  (void)tid; (void)nth;
  mm_ctx *c = vc;
  const nw_weight *w = c->w;
  const nw_kernels_t *k = g_kern;
  const int64_t rows = w->rows, cols = w->cols, nb = cols / QK;
  /* dynamic chunks of rows: a thread that gets descheduled (shared cores) doesn't stall the others */
  for (;;) {
    const int64_t p = __atomic_fetch_add(&c->next, 1, __ATOMIC_RELAXED);
    if (p >= c->npanels) break;
    const int64_t r0 = p * c->panel, r1 = NW_MIN(rows, r0 + c->panel);
    int64_t r = r0;
    if (c->M == 1) {
      /* rows r0+i, +q, +2q, ...: S streams an S-th of the chunk apart (adjacent short rows would share pages,
         which the hardware prefetcher follows worse than one sequential stream). q4_0 takes eight: each x
         block is then loaded once per 8 rows (down_proj's x, 18944 columns = 42 KB in the doubled layout, no
         longer fits L1 next to four rows' blocks) */
      const int S = c->xq4 ? 8 : 4;
      const int64_t q = (r1 - r0) / S;
      const int quant = w->type == NW_Q8_0 || w->type == NW_Q4_0;
      for (int64_t i = 0; i < q; i++) {
        float res[8];
        const uint8_t *wr = w->data + (size_t)(r0 + i) * w->rbytes;
        if (c->xq4) k->dot8q4(wr, (size_t)q * w->rbytes, c->xq4, nb, res);
        else if (quant) k->dot4q(w->type, wr, (size_t)q * w->rbytes, c->xq, nb, res);
        else k->dot4f(w->type, wr, (size_t)q * w->rbytes, c->x, cols, res);
        for (int j = 0; j < S; j++) c->out[r0 + i + j * q] = res[j] + (c->bias ? c->bias[r0 + i + j * q] : 0.f);
      }
      r = r0 + S * q;
    }
    for (; r < r1; r++) {
      const uint8_t *wr = w->data + (size_t)r * w->rbytes;
      const float b = c->bias ? c->bias[r] : 0.f;
      if (c->M == 1) {
        float s;
        switch (w->type) {
          case NW_F32: s = k->dot_f32((const float *)wr, c->x, cols); break;
          case NW_F16: s = k->dot_f16((const uint16_t *)wr, c->x, cols); break;
          case NW_BF16: s = k->dot_bf16((const uint16_t *)wr, c->x, cols); break;
          case NW_Q8_0: s = k->dot_q8(wr, c->xq, nb); break;
          default: s = k->dot_q4(wr, c->xq, nb); break;
        }
        c->out[r] = s + b;
        continue;
      }
      for (int64_t m0 = 0; m0 < c->M; m0 += 4) {
        const int MM = (int)NW_MIN(4, c->M - m0);
        float res[4];
        k->dotm(w->type, wr, c->x + m0 * cols, c->xq ? c->xq + m0 * nb : NULL, cols, MM, res);
        for (int m = 0; m < MM; m++) c->out[(m0 + m) * rows + r] = res[m] + b;
      }
    }
  }
}

/* q4_0 prefill (kern.h gemm_q4x8): each panel of rows (a multiple of 8) is repacked, one chunk of
   c->kc blocks at a time so that the packed chunk stays in L2, and multiplied with int8 dot products
   against x quantized to xq8 blocks (c->xq); the first chunk starts from the bias, later ones add. */
static void job_q4gemm(void *vc, int tid, int nth) {
  (void)nth;
  mm_ctx *c = vc;
  const nw_weight *w = c->w;
  const int64_t rows8 = w->rows / 8 * 8, nb = w->cols / QK;
  q4x8_t *buf = scratch(tid, 0, (size_t)(c->panel / 8) * (size_t)c->kc * sizeof(q4x8_t));
  if (!buf) { c->err = 1; return; }
  for (;;) {
    const int64_t p = __atomic_fetch_add(&c->next, 1, __ATOMIC_RELAXED);
    if (p >= c->npanels) break;
    const int64_t r0 = p * c->panel, ng = NW_MIN(c->panel, rows8 - r0) / 8;
    for (int64_t k0 = 0; k0 < nb; k0 += c->kc) {
      const int64_t kn = NW_MIN(c->kc, nb - k0);
      const int q8 = w->type == NW_Q8_0;
      for (int64_t g = 0; g < ng; g++)
        g_kern->pack_q4x8(w->type, w->data + (size_t)(r0 + 8 * g) * w->rbytes + (size_t)k0 * (q8 ? Q8_0_BYTES : Q4_0_BYTES),
                          w->rbytes, kn, buf + g * kn);
      /* q8_0: x comes as two terms per row (hi, residual), 2M rows of blocks */
      g_kern->gemm_q4x8(buf, ng, kn, c->xq + k0, nb, q8 ? 2 * c->M : c->M, c->out + r0, w->rows, c->bias ? c->bias + r0 : NULL,
                        k0 > 0, q8 ? 128 : 8, q8);
    }
  }
}

/* rows of x to xq8 blocks, split over the pool */
typedef struct { const float *x; xq8_t *xq; int64_t M, cols; int two; int next; } xq_ctx;
/* x ~ d1 q1 + d2 q2: q1 as quant_row_xq8, q2 the same quantization of the residual x - d1 q1 (|.| <= d1/2), so the
   activation error is ~1/254 of one term's: the q8_0 int8 GEMM then keeps the float32 path's accuracy (the weights'
   quantization is the only error left) at twice the int8 work */
static void quant_row_xq8x2(const float *x, xq8_t *y, int64_t n) {
  for (int64_t b = 0; b < n / QK; b++) {
    float r[QK];
    quant_row_xq8(x + b * QK, y + 2 * b, QK);
    for (int j = 0; j < QK; j++) r[j] = x[b * QK + j] - y[2 * b].d * (float)y[2 * b].qs[j];
    quant_row_xq8(r, y + 2 * b + 1, QK);
  }
}
static void job_xq8(void *vc, int tid, int nth) {
  (void)tid; (void)nth;
  xq_ctx *c = vc;
  const int64_t nb = c->cols / QK;
  for (;;) {
    const int64_t m0 = (int64_t)__atomic_fetch_add(&c->next, 1, __ATOMIC_RELAXED) * 16;
    if (m0 >= c->M) break;
    for (int64_t m = m0; m < NW_MIN(c->M, m0 + 16); m++) {
      if (!c->two) { quant_row_xq8(c->x + m * c->cols, c->xq + m * nb, c->cols); continue; }
      /* rows 2m (first terms) and 2m+1 (residuals): de-interleave the per-block pairs */
      xq8_t tmp[2 * 64];
      for (int64_t b0 = 0; b0 < nb; b0 += 64) {
        const int64_t bn = NW_MIN(64, nb - b0);
        quant_row_xq8x2(c->x + m * c->cols + b0 * QK, tmp, bn * QK);
        for (int64_t b = 0; b < bn; b++) { c->xq[2 * m * nb + b0 + b] = tmp[2 * b]; c->xq[(2 * m + 1) * nb + b0 + b] = tmp[2 * b + 1]; }
      }
    }
  }
}

/* panel of rows [r0, r0+n) as f32 rows (cols each): the weight itself for f32, else scratch */
static const float *panel_f32(const nw_weight *w, int tid, int64_t r0, int64_t n) {
  if (w->type == NW_F32) return (const float *)(w->data + (size_t)r0 * w->rbytes);
  float *s = scratch(tid, 0, (size_t)n * (size_t)w->cols * 4);
  if (!s) return NULL;
  for (int64_t i = 0; i < n; i++) g_kern->dequant_row(w->type, w->data + (size_t)(r0 + i) * w->rbytes, s + i * w->cols, w->cols);
  return s;
}

static void job_panels(void *vc, int tid, int nth) {
  (void)nth;
  mm_ctx *c = vc;
  const nw_weight *w = c->w;
  const int64_t rows = w->rows, cols = w->cols;
  for (;;) {
    const int64_t p = __atomic_fetch_add(&c->next, 1, __ATOMIC_RELAXED);
    if (p >= c->npanels) break;
    const int64_t r0 = p * c->panel, n = NW_MIN(c->panel, rows - r0);
    const float *B = panel_f32(w, tid, r0, n);
    if (!B) { c->err = 1; return; }
    float *C = c->out + r0;
    if (c->use_ob)
      nw_ob.sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)c->M, (int)n, (int)cols, 1.f, c->x, (int)cols, B,
                  (int)cols, 0.f, C, (int)rows);
    else
      g_kern->sgemm_nt(c->M, n, cols, c->x, cols, B, cols, C, rows, 0.f);
    if (c->bias)
      for (int64_t m = 0; m < c->M; m++) for (int64_t j = 0; j < n; j++) C[m * rows + j] += c->bias[r0 + j];
  }
}

typedef struct {
  const nw_weight *w;
  const float *dy; int64_t M;
  float *out;
  int64_t panel, npanels; int next; int err; int use_ob;
  float *acc[MAXT];
} mt_ctx;

static void job_matmulT(void *vc, int tid, int nth) {
  (void)nth;
  mt_ctx *c = vc;
  const nw_weight *w = c->w;
  const int64_t rows = w->rows, cols = w->cols, M = c->M;
  float *acc = tid == 0 ? c->out : scratch(tid, 1, (size_t)(M * cols) * 4);
  c->acc[tid] = acc;
  if (!acc) { c->err = 1; return; }
  memset(acc, 0, (size_t)(M * cols) * 4);
  for (;;) {
    const int64_t p = __atomic_fetch_add(&c->next, 1, __ATOMIC_RELAXED);
    if (p >= c->npanels) break;
    const int64_t r0 = p * c->panel, n = NW_MIN(c->panel, rows - r0);
    const float *B = panel_f32(w, tid, r0, n);
    if (!B) { c->err = 1; return; }
    if (c->use_ob)
      nw_ob.sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)M, (int)cols, (int)n, 1.f, c->dy + r0, (int)rows, B,
                  (int)cols, 1.f, acc, (int)cols);
    else
      for (int64_t i = 0; i < n; i++)
        for (int64_t m = 0; m < M; m++) {
          const float g = c->dy[m * rows + r0 + i];
          if (g != 0.f) g_kern->axpy(cols, g, B + i * cols, acc + m * cols);
        }
  }
}

typedef struct { const nw_weight *w; float *out; const int32_t *ids; int64_t n, r0; int64_t next; } rows_ctx;
static void job_rows(void *vc, int tid, int nth) {
  (void)tid; (void)nth;
  rows_ctx *c = vc;
  const int64_t chunk = 16;
  for (;;) {
    const int64_t a = __atomic_fetch_add(&c->next, chunk, __ATOMIC_RELAXED);
    if (a >= c->n) break;
    const int64_t b = NW_MIN(c->n, a + chunk);
    for (int64_t i = a; i < b; i++) {
      const int64_t r = c->ids ? c->ids[i] : c->r0 + i;
      g_kern->dequant_row(c->w->type, c->w->data + (size_t)r * c->w->rbytes, c->out + i * c->w->cols, c->w->cols);
    }
  }
}

typedef struct { const nw_weight *src; const float *srcf; nw_weight *dst; int err; int64_t next; } q_ctx;
static void job_quantize(void *vc, int tid, int nth) {
  (void)nth;
  q_ctx *c = vc;
  nw_weight *d = c->dst;
  float *row = NULL;
  for (;;) {
    const int64_t a = __atomic_fetch_add(&c->next, 8, __ATOMIC_RELAXED);
    if (a >= d->rows) break;
    const int64_t b = NW_MIN(d->rows, a + 8);
    for (int64_t r = a; r < b; r++) {
      const float *x;
      const uint8_t *src = c->srcf ? NULL : c->src->data + (size_t)r * c->src->rbytes;
      if (c->srcf) x = c->srcf + r * d->cols;
      else if (c->src->type == NW_F32 && ((uintptr_t)src & 3) == 0) x = (const float *)src;
      else {
        if (!row && !(row = scratch(tid, 0, (size_t)d->cols * 4))) { c->err = 1; return; }
        g_kern->dequant_row(c->src->type, src, row, d->cols);
        x = row;
      }
      quant_row(d->type, x, (uint8_t *)d->owned + (size_t)r * d->rbytes, d->cols);
    }
  }
}

/* rows [r0, r0+n) of w dequantized into buf (n x cols f32) by the pool, 16-row chunks handed out dynamically */
typedef struct { const nw_weight *w; float *buf; int64_t r0, n; int64_t next; } dq_ctx;
static void job_dequant_block(void *vc, int tid, int nth) {
  (void)tid; (void)nth;
  dq_ctx *c = vc;
  for (;;) {
    const int64_t i = __atomic_fetch_add(&c->next, 16, __ATOMIC_RELAXED);
    if (i >= c->n) break;
    const int64_t e = NW_MIN(c->n, i + 16);
    for (int64_t r = i; r < e; r++)
      g_kern->dequant_row(c->w->type, c->w->data + (size_t)(c->r0 + r) * c->w->rbytes, c->buf + r * c->w->cols, c->w->cols);
  }
}

/* prefill path: 'panels' (default) gives each pool thread its own 256-row panels and single-threaded
   sgemm calls; 'block' (TFJS_BLAS_PREFILL=block, needs OpenBLAS) dequantizes blocks of <= 64 MB of
   rows with the pool, then runs one multi-threaded OpenBLAS sgemm per block. Measured level on the
   2-core AVX2 machine (50-85 GFLOP/s either way, bound by sgemm); kept for machines where one is better. */
static int prefill_block(void) {
  static int v = -1;
  if (v < 0) { const char *e = getenv("TFJS_BLAS_PREFILL"); v = e && strcmp(e, "block") == 0; }
  return v && nw_ob.sgemm != NULL;
}

/* q4_0 prefill: int8 GEMM on repacked panels (default), or 'f32' (TFJS_BLAS_Q4_PREFILL=f32):
   dequantized panels and sgemm like the other types, x not quantized */
static int q4_prefill_int8(void) {
  static int v = -1;
  if (v < 0) { const char *e = getenv("TFJS_BLAS_Q4_PREFILL"); v = !(e && strcmp(e, "f32") == 0); }
  return v;
}

/* q8_0 prefill as the int8 GEMM with two-term activations (quant_row_xq8x2): only with VNNI (u8 x s8 straight
   into int32; maddubs' int16 pairs would overflow on u8 weights up to 255); TFJS_BLAS_Q8_PREFILL=f32: sgemm */
static int q8_prefill_int8(void) {
  static int v = -1;
  if (v < 0) { const char *e = getenv("TFJS_BLAS_Q8_PREFILL"); v = !(e && strcmp(e, "f32") == 0); }
  return v && g_kern->vnni;
}

/* number of panels a multiple of the thread count, panel rows a multiple of 16, at most maxp */
static void plan_panels(int64_t rows, int64_t maxp, int64_t *panel, int64_t *npanels) {
  const int nth = P.n < 1 ? 1 : P.n;
  int64_t np = (rows + maxp - 1) / maxp;
  np = (np + nth - 1) / nth * nth;
  int64_t p = (rows + np - 1) / np;
  p = (p + 15) / 16 * 16;
  *panel = p;
  *npanels = (rows + p - 1) / p;
}

/* OpenBLAS at one thread while our pool runs panels in parallel (no oversubscription) */
static int ob_begin(void) {
  if (!nw_ob.sgemm) return 0;
  int prev = nw_ob.get_num_threads ? nw_ob.get_num_threads() : 1;
  if (P.n > 1 && nw_ob.set_num_threads && prev != 1) nw_ob.set_num_threads(1);
  return prev;
}
static void ob_end(int prev) { if (nw_ob.sgemm && P.n > 1 && nw_ob.set_num_threads && prev != 1) nw_ob.set_num_threads(prev); }

/* ------------------------------------------------------------------------------------------- */
/* API                                                                                          */
/* ------------------------------------------------------------------------------------------- */

static napi_value MapFile(napi_env env, napi_callback_info info) {
  ARGS(1);
  char path[4096]; size_t n = 0;
  if (napi_get_value_string_utf8(env, a[0], path, sizeof path, &n) != napi_ok || n == 0)
    TYPE_ERR("tfjs-blas mapFile: path must be a non-empty string");
  if (n >= sizeof path - 1) RANGE_ERR("tfjs-blas mapFile: path is too long (%zu bytes or more)", n);
  const int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) RANGE_ERR("tfjs-blas mapFile: cannot open '%s': %s", path, strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0) { int e = errno; close(fd); RANGE_ERR("tfjs-blas mapFile: cannot stat '%s': %s", path, strerror(e)); }
  if (!S_ISREG(st.st_mode)) { close(fd); RANGE_ERR("tfjs-blas mapFile: '%s' is not a regular file", path); }
  void *base = NULL;
  if (st.st_size > 0) {
    base = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
    if (base == MAP_FAILED) { int e = errno; close(fd); RANGE_ERR("tfjs-blas mapFile: mmap of '%s' failed: %s", path, strerror(e)); }
#ifdef MADV_HUGEPAGE
    /* page faults then read the file in 2 MiB folios that map as huge pages (ext4/xfs large folios):
       without it, the order of the first accesses (a loader's reads, a prefill's threads) left ~2/3 of
       a mapped q4_0 GGUF in 4 KiB page-table entries, and a decode step streaming it paid TLB misses */
    if (thp_on() && st.st_size >= (off_t)NW_HUGE) (void)madvise(base, (size_t)st.st_size, MADV_HUGEPAGE);
#endif
  }
  close(fd);
  nw_map *m = calloc(1, sizeof *m);
  m->refs = 1; m->base = base; m->size = (size_t)st.st_size; m->path = strdup(path);
  napi_value ext;
  if (napi_create_external(env, m, map_finalize, NULL, &ext) != napi_ok || napi_type_tag_object(env, ext, &TAG_MAP) != napi_ok) {
    map_unref(m);
    napi_throw_error(env, NULL, "tfjs-blas mapFile: could not create the mapping object");
    return NULL;
  }
  return ext;
}

static nw_map *get_map(napi_env env, napi_value v, const char *fn) {
  bool ok = false; void *p = NULL; napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_external || napi_check_object_type_tag(env, v, &TAG_MAP, &ok) != napi_ok ||
      !ok || napi_get_value_external(env, v, &p) != napi_ok) {
    throwf(env, 0, "tfjs-blas %s: expected a mapping from mapFile()", fn);
    return NULL;
  }
  return (nw_map *)p;
}

static napi_value MappingInfo(napi_env env, napi_callback_info info) {
  ARGS(1);
  nw_map *m = get_map(env, a[0], "mappingInfo");
  if (!m) return NULL;
  napi_value o, v;
  napi_create_object(env, &o);
  napi_create_string_utf8(env, m->path, NAPI_AUTO_LENGTH, &v); napi_set_named_property(env, o, "path", v);
  napi_create_double(env, (double)m->size, &v); napi_set_named_property(env, o, "size", v);
  napi_create_int32(env, m->refs - 1, &v); napi_set_named_property(env, o, "weights", v);
  return o;
}

static napi_value WeightFromMap(napi_env env, napi_callback_info info) {
  ARGS(5);
  const char *fn = "weightFromMap";
  nw_map *m = get_map(env, a[0], fn);
  int64_t off, rows, cols; int type;
  if (!m || !get_int(env, a[1], fn, "byteOffset", &off) || !get_type(env, a[2], fn, &type) ||
      !get_int(env, a[3], fn, "rows", &rows) || !get_int(env, a[4], fn, "cols", &cols) || !check_shape(env, fn, type, rows, cols))
    return NULL;
  const size_t rb = row_bytes(type, cols), bytes = rb * (size_t)rows;
  if ((uint64_t)off > m->size || bytes > m->size - (size_t)off)
    RANGE_ERR("tfjs-blas weightFromMap: %s [%lld, %lld] at byte %lld needs %zu bytes, past the end of '%s' (%zu bytes)",
              TYPE_NAMES[type], (long long)rows, (long long)cols, (long long)off, bytes, m->path, m->size);
  nw_weight *w = calloc(1, sizeof *w);
  w->type = type; w->rows = rows; w->cols = cols; w->rbytes = rb; w->bytes = bytes;
  w->data = m->base + off; w->map = m;
  __atomic_add_fetch(&m->refs, 1, __ATOMIC_ACQ_REL);
  return wrap_weight(env, w);
}

/* prefetch(w): asks the kernel to read a mapped weight's pages ahead (MADV_WILLNEED), so that sparse
   reads (an embedding lookup per decoded token) find them in the page cache instead of waiting on
   the disk. Page-cache pages are not resident in the process until touched.
   pin(w): locks a mapped weight's pages in memory (mlock; unlocked when the weight is released).
   For tables read a row at a time at random: page-cache reclaim (memory pressure, or a host's
   proactive reclaim of cold pages) would otherwise put a disk read in front of a token's lookup.
   Both return the bytes advised / locked: 0 for an owned weight or when the kernel refuses (mlock
   past RLIMIT_MEMLOCK without CAP_IPC_LOCK): they are only optimisations. */
static napi_value map_pages(napi_env env, napi_callback_info info, const char *fn, int lock) {
  ARGS(1);
  nw_weight *w = get_weight(env, a[0], fn);
  if (!w) return NULL;
  double done = 0;
  if (w->map && w->bytes > 0) {
    void *lo;
    const size_t len = page_span(w, &lo);
    if (!lock) { if (madvise(lo, len, MADV_WILLNEED) == 0) done = (double)w->bytes; }
    else if (w->pinned || mlock(lo, len) == 0) { w->pinned = 1; done = (double)w->bytes; }
  }
  napi_value v;
  napi_create_double(env, done, &v);
  return v;
}
static napi_value Prefetch(napi_env env, napi_callback_info info) { return map_pages(env, info, "prefetch", 0); }
static napi_value Pin(napi_env env, napi_callback_info info) { return map_pages(env, info, "pin", 1); }

/* Returns the allocator's free memory to the OS (glibc malloc_trim): after a load that converted
   weights chunk by chunk, freed scratch stays in the arenas and counts in the resident set until
   reused. Returns true when something was released; false elsewhere (not glibc) or when nothing was. */
static napi_value Trim(napi_env env, napi_callback_info info) {
  (void)info;
  int released = 0;
#if defined(__GLIBC__)
  released = malloc_trim(0);
#endif
  napi_value v;
  napi_get_boolean(env, released != 0, &v);
  return v;
}

static napi_value WeightFromBuffer(napi_env env, napi_callback_info info) {
  ARGS(4);
  const char *fn = "weightFromBuffer";
  int type; int64_t rows, cols; void *p; size_t len, blen;
  if (!get_type(env, a[0], fn, &type) || !get_int(env, a[1], fn, "rows", &rows) || !get_int(env, a[2], fn, "cols", &cols) ||
      !check_shape(env, fn, type, rows, cols) || !get_ta(env, a[3], -1, fn, "data", &p, &len, &blen))
    return NULL;
  const size_t need = row_bytes(type, cols) * (size_t)rows;
  if (blen != need)
    RANGE_ERR("tfjs-blas weightFromBuffer: %s [%lld, %lld] needs exactly %zu bytes, the buffer has %zu", TYPE_NAMES[type],
              (long long)rows, (long long)cols, need, blen);
  nw_weight *w = new_owned(env, type, rows, cols);
  if (!w) RANGE_ERR("tfjs-blas weightFromBuffer: out of memory allocating %zu bytes", need);
  memcpy(w->owned, p, need);
  return wrap_weight(env, w);
}

/* weightAlloc(type, rows, cols): an owned weight whose rows writeRows fills (a conversion assembled chunk by chunk) */
static napi_value WeightAlloc(napi_env env, napi_callback_info info) {
  ARGS(3);
  const char *fn = "weightAlloc";
  int type; int64_t rows, cols;
  if (!get_type(env, a[0], fn, &type) || !get_int(env, a[1], fn, "rows", &rows) || !get_int(env, a[2], fn, "cols", &cols) ||
      !check_shape(env, fn, type, rows, cols))
    return NULL;
  nw_weight *w = new_owned(env, type, rows, cols);
  if (!w) RANGE_ERR("tfjs-blas weightAlloc: out of memory allocating %zu bytes", row_bytes(type, cols) * (size_t)rows);
  return wrap_weight(env, w);
}

/* writeRows(dst, row0, src): src's rows (same type and columns) into the owned weight dst from row row0 */
static napi_value WriteRows(napi_env env, napi_callback_info info) {
  ARGS(3);
  const char *fn = "writeRows";
  nw_weight *d = get_weight(env, a[0], fn);
  int64_t row0;
  if (!d || !get_int(env, a[1], fn, "row0", &row0)) return NULL;
  nw_weight *s = get_weight(env, a[2], fn);
  if (!s) return NULL;
  if (!d->owned) RANGE_ERR("tfjs-blas writeRows: the destination is a read-only mapping");
  if (s->type != d->type || s->cols != d->cols)
    RANGE_ERR("tfjs-blas writeRows: source %s [%lld, %lld] does not match the destination %s [·, %lld]", TYPE_NAMES[s->type],
              (long long)s->rows, (long long)s->cols, TYPE_NAMES[d->type], (long long)d->cols);
  if (row0 < 0 || row0 + s->rows > d->rows)
    RANGE_ERR("tfjs-blas writeRows: rows [%lld, %lld) are outside the destination's %lld", (long long)row0, (long long)(row0 + s->rows),
              (long long)d->rows);
  memcpy((uint8_t *)d->owned + (size_t)row0 * d->rbytes, s->data, (size_t)s->rows * s->rbytes);
  return NULL;
}

static napi_value Quantize(napi_env env, napi_callback_info info) {
  ARGS(4);
  const char *fn = "quantize";
  int type;
  q_ctx c = {0};
  int64_t rows, cols;
  bool is_ta = false;
  napi_is_typedarray(env, a[0], &is_ta);
  if (is_ta) {
    void *p; size_t len;
    if (!get_ta(env, a[0], napi_float32_array, fn, "src", &p, &len, NULL) || !get_type(env, a[1], fn, &type) ||
        !get_int(env, a[2], fn, "rows (needed for a Float32Array source)", &rows) ||
        !get_int(env, a[3], fn, "cols (needed for a Float32Array source)", &cols) || !check_shape(env, fn, type, rows, cols))
      return NULL;
    if ((uint64_t)rows * (uint64_t)cols != len)
      RANGE_ERR("tfjs-blas quantize: a [%lld, %lld] source needs %lld floats, the Float32Array has %zu", (long long)rows,
                (long long)cols, (long long)(rows * cols), len);
    c.srcf = p;
  } else {
    c.src = get_weight(env, a[0], fn);
    if (!c.src || !get_type(env, a[1], fn, &type)) return NULL;
    rows = c.src->rows; cols = c.src->cols;
    if (!check_shape(env, fn, type, rows, cols)) return NULL;
  }
  c.dst = new_owned(env, type, rows, cols);
  if (!c.dst) RANGE_ERR("tfjs-blas quantize: out of memory allocating %zu bytes", row_bytes(type, cols) * (size_t)rows);
  pthread_mutex_lock(&g_op_mu);
  pool_run(job_quantize, &c);
  pthread_mutex_unlock(&g_op_mu);
  if (c.err) { weight_release(env, c.dst); free(c.dst); RANGE_ERR("tfjs-blas quantize: out of memory (scratch)"); }
  return wrap_weight(env, c.dst);
}

/*
 * y[M, rows] = x[M, cols] · Wᵀ (+ bias) for M <= g_mv_max (decode): x is quantized to q8 blocks
 * once for q8_0/q4_0 weights, rows are split over the pool in ~256 KB chunks. Call with g_op_mu
 * held and the pool started. 0 when scratch memory could not be had.
 */
static int matvec_run(nw_weight *w, const float *x, int64_t M, float *out, const float *bias) {
  mm_ctx c = {.w = w, .x = x, .M = M, .out = out, .bias = bias};
  if (w->type == NW_Q8_0 || w->type == NW_Q4_0) {
    const int64_t nb = w->cols / QK;
    xq8_t *xq = scratch(0, 1, (size_t)(M * nb) * sizeof(xq8_t));
    if (!xq) return 0;
    for (int64_t m = 0; m < M; m++) quant_row_xq8(x + m * w->cols, xq + m * nb, w->cols);
    if (M == 1 && w->type == NW_Q4_0) {
      xq4d_t *x4 = scratch(0, 3, (size_t)nb * sizeof(xq4d_t));
      if (!x4) return 0;
      xq4_double(xq, x4, nb);
      c.xq4 = x4;
    }
    c.xq = xq;
  }
  /* chunks of ~256 KB of weights (at least 16 rows), at least 4 per thread */
  int64_t chunk = NW_MAX(16, (int64_t)(262144 / (w->rbytes ? w->rbytes : 1)));
  chunk = NW_MIN(chunk, NW_MAX(16, w->rows / (4 * P.n)));
  c.panel = chunk;
  c.npanels = (w->rows + chunk - 1) / chunk;
  pool_run(job_matvec, &c);
  return 1;
}

/*
 * For blas.c's gemm (the wasm BatchMatMul kernels): out[M, rows] = x[M, cols] · Wᵀ (+ bias) with a
 * float32 W [rows, cols] in the caller's memory and a few rows of x (gemm sends M <= 8): the pool's
 * matvec streams W once per call, at 1.15-1.6x the throughput of OpenBLAS sgemv on the 7B models'
 * shapes (Zen 4, 2 threads). The f32 path needs no scratch, so it cannot fail.
 */
void nw_matvec_f32(const float *W, int64_t rows, int64_t cols, const float *x, int64_t M, float *out, const float *bias) {
  nw_weight w = {.type = NW_F32, .rows = rows, .cols = cols, .rbytes = (size_t)cols * 4,
                 .bytes = (size_t)rows * (size_t)cols * 4, .data = (const uint8_t *)W};
  pthread_mutex_lock(&g_op_mu);
  ensure_pool();
  matvec_run(&w, x, M, out, bias);
  pthread_mutex_unlock(&g_op_mu);
}

static napi_value Matmul(napi_env env, napi_callback_info info) {
  ARGS(8);
  const char *fn = "matmul";
  nw_weight *w = get_weight(env, a[0], fn);
  float *x, *out, *bias = NULL; size_t lx, lo, lb = 0;
  int64_t xOff, M, outOff, biasOff = 0;
  if (!w || !get_ta(env, a[1], napi_float32_array, fn, "x", (void **)&x, &lx, NULL) || !get_int(env, a[2], fn, "xOff", &xOff) ||
      !get_int(env, a[3], fn, "M", &M) || !get_ta(env, a[4], napi_float32_array, fn, "out", (void **)&out, &lo, NULL) ||
      !get_int(env, a[5], fn, "outOff", &outOff))
    return NULL;
  if (!is_nullish(env, a[6])) {
    if (!get_ta(env, a[6], napi_float32_array, fn, "bias", (void **)&bias, &lb, NULL) ||
        (!is_nullish(env, a[7]) && !get_int(env, a[7], fn, "biasOff", &biasOff)))
      return NULL;
    if ((uint64_t)biasOff + (uint64_t)w->rows > lb)
      RANGE_ERR("tfjs-blas matmul: bias needs %lld floats from offset %lld, the array has %zu", (long long)w->rows, (long long)biasOff, lb);
    bias += biasOff;
  }
  if ((uint64_t)xOff + (uint64_t)M * (uint64_t)w->cols > lx)
    RANGE_ERR("tfjs-blas matmul: x needs M*cols = %lld*%lld floats from offset %lld, the array has %zu", (long long)M,
              (long long)w->cols, (long long)xOff, lx);
  if ((uint64_t)outOff + (uint64_t)M * (uint64_t)w->rows > lo)
    RANGE_ERR("tfjs-blas matmul: out needs M*rows = %lld*%lld floats from offset %lld, the array has %zu", (long long)M,
              (long long)w->rows, (long long)outOff, lo);
  if (M == 0) return NULL;
  if (M > INT32_MAX) RANGE_ERR("tfjs-blas matmul: M must be < 2^31");
  mm_ctx c = {.w = w, .x = x + xOff, .M = M, .out = out + outOff, .bias = bias};
  pthread_mutex_lock(&g_op_mu);
  ensure_pool();
  if (M <= g_mv_max) {
    if (!matvec_run(w, c.x, M, c.out, c.bias)) { pthread_mutex_unlock(&g_op_mu); RANGE_ERR("tfjs-blas matmul: out of memory"); }
  } else if ((w->type == NW_Q4_0 && q4_prefill_int8()) || (w->type == NW_Q8_0 && q8_prefill_int8())) {
    const int64_t nb = w->cols / QK, rows8 = w->rows / 8 * 8;
    const int two = w->type == NW_Q8_0; /* 2M rows of blocks: (first term, residual) per row of x */
    xq8_t *xq = scratch(0, 1, (size_t)((two ? 2 : 1) * M * nb) * sizeof(xq8_t));
    if (!xq) { pthread_mutex_unlock(&g_op_mu); RANGE_ERR("tfjs-blas matmul: out of memory"); }
    xq_ctx q = {.x = c.x, .xq = xq, .M = M, .cols = w->cols, .two = two};
    pool_run(job_xq8, &q);
    c.xq = xq;
    if (rows8 > 0) {
      plan_panels(rows8, 64, &c.panel, &c.npanels);
      /* packed chunk (panel rows x kc blocks x 36 bytes) within ~384 KB, chunks of even size */
      const int64_t kmax = NW_MAX(1, (int64_t)(393216 / ((size_t)c.panel * (sizeof(q4x8_t) / 8))));
      const int64_t nch = (nb + kmax - 1) / kmax;
      c.kc = (nb + nch - 1) / nch;
      pool_run(job_q4gemm, &c);
    }
    for (int64_t r = rows8; r < w->rows; r++) /* the last rows % 8 rows: the several-rows dot kernel */
      for (int64_t m0 = 0; m0 < M; m0 += two ? 2 : 4) {
        const int MM = (int)NW_MIN(two ? 2 : 4, M - m0);
        float res[4];
        g_kern->dotm(w->type, w->data + (size_t)r * w->rbytes, NULL, xq + (two ? 2 : 1) * m0 * nb, w->cols, two ? 2 * MM : MM, res);
        for (int m = 0; m < MM; m++)
          c.out[(m0 + m) * w->rows + r] = (two ? res[2 * m] + res[2 * m + 1] : res[m]) + (bias ? bias[r] : 0.f);
      }
  } else if (w->type == NW_F32 && nw_ob.sgemm) {
    /* f32: one multi-threaded OpenBLAS call, no panels needed */
    const int prev = nw_ob.get_num_threads ? nw_ob.get_num_threads() : 0;
    if (nw_ob.set_num_threads && prev != P.n) nw_ob.set_num_threads(P.n);
    float *C = c.out;
    if (bias) for (int64_t m = 0; m < M; m++) memcpy(C + m * w->rows, bias, (size_t)w->rows * 4);
    nw_ob.sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)M, (int)w->rows, (int)w->cols, 1.f, c.x, (int)w->cols,
                (const float *)w->data, (int)w->cols, bias ? 1.f : 0.f, C, (int)w->rows);
    if (nw_ob.set_num_threads && prev > 0 && prev != P.n) nw_ob.set_num_threads(prev);
  } else if (prefill_block()) {
    const int64_t per = NW_MAX(16, (int64_t)((64u << 20) / ((size_t)w->cols * 4)));
    float *buf = scratch(0, 2, (size_t)NW_MIN(per, w->rows) * (size_t)w->cols * 4);
    if (!buf) c.err = 1;
    const int prev = nw_ob.get_num_threads ? nw_ob.get_num_threads() : 0;
    for (int64_t r0 = 0; buf && r0 < w->rows; r0 += per) {
      const int64_t n = NW_MIN(per, w->rows - r0);
      dq_ctx d = {.w = w, .buf = buf, .r0 = r0, .n = n, .next = 0};
      pool_run(job_dequant_block, &d);
      if (nw_ob.set_num_threads && nw_ob.get_num_threads && nw_ob.get_num_threads() != P.n) nw_ob.set_num_threads(P.n);
      float *C = c.out + r0;
      if (bias) for (int64_t m = 0; m < M; m++) memcpy(C + m * w->rows, bias + r0, (size_t)n * 4);
      nw_ob.sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)M, (int)n, (int)w->cols, 1.f, c.x, (int)w->cols,
                  buf, (int)w->cols, bias ? 1.f : 0.f, C, (int)w->rows);
    }
    if (nw_ob.set_num_threads && prev > 0 && prev != P.n) nw_ob.set_num_threads(prev);
  } else {
    plan_panels(w->rows, 256, &c.panel, &c.npanels);
    c.use_ob = nw_ob.sgemm != NULL;
    const int prev = ob_begin();
    pool_run(job_panels, &c);
    ob_end(prev);
  }
  pthread_mutex_unlock(&g_op_mu);
  if (c.err) RANGE_ERR("tfjs-blas matmul: out of memory (scratch)");
  return NULL;
}

static napi_value MatmulT(napi_env env, napi_callback_info info) {
  ARGS(6);
  const char *fn = "matmulT";
  nw_weight *w = get_weight(env, a[0], fn);
  float *dy, *out; size_t ld, lo;
  int64_t dyOff, M, outOff;
  if (!w || !get_ta(env, a[1], napi_float32_array, fn, "dy", (void **)&dy, &ld, NULL) || !get_int(env, a[2], fn, "dyOff", &dyOff) ||
      !get_int(env, a[3], fn, "M", &M) || !get_ta(env, a[4], napi_float32_array, fn, "out", (void **)&out, &lo, NULL) ||
      !get_int(env, a[5], fn, "outOff", &outOff))
    return NULL;
  if ((uint64_t)dyOff + (uint64_t)M * (uint64_t)w->rows > ld)
    RANGE_ERR("tfjs-blas matmulT: dy needs M*rows = %lld*%lld floats from offset %lld, the array has %zu", (long long)M,
              (long long)w->rows, (long long)dyOff, ld);
  if ((uint64_t)outOff + (uint64_t)M * (uint64_t)w->cols > lo)
    RANGE_ERR("tfjs-blas matmulT: out needs M*cols = %lld*%lld floats from offset %lld, the array has %zu", (long long)M,
              (long long)w->cols, (long long)outOff, lo);
  if (M == 0) return NULL;
  if (M > INT32_MAX) RANGE_ERR("tfjs-blas matmulT: M must be < 2^31");
  mt_ctx c = {.w = w, .dy = dy + dyOff, .M = M, .out = out + outOff};
  pthread_mutex_lock(&g_op_mu);
  ensure_pool();
  plan_panels(w->rows, M > g_mv_max ? 256 : 64, &c.panel, &c.npanels);
  c.use_ob = nw_ob.sgemm != NULL && M > g_mv_max;
  const int prev = ob_begin();
  pool_run(job_matmulT, &c);
  ob_end(prev);
  if (!c.err)
    for (int t = 1; t < P.n; t++)
      if (c.acc[t]) g_kern->axpy(M * w->cols, 1.f, c.acc[t], c.out);
  pthread_mutex_unlock(&g_op_mu);
  if (c.err) RANGE_ERR("tfjs-blas matmulT: out of memory (scratch)");
  return NULL;
}

static napi_value Gather(napi_env env, napi_callback_info info) {
  ARGS(4);
  const char *fn = "gather";
  nw_weight *w = get_weight(env, a[0], fn);
  int32_t *ids; float *out; size_t nid, lo; int64_t outOff;
  if (!w || !get_ta(env, a[1], napi_int32_array, fn, "ids", (void **)&ids, &nid, NULL) ||
      !get_ta(env, a[2], napi_float32_array, fn, "out", (void **)&out, &lo, NULL) || !get_int(env, a[3], fn, "outOff", &outOff))
    return NULL;
  for (size_t i = 0; i < nid; i++)
    if (ids[i] < 0 || ids[i] >= w->rows)
      RANGE_ERR("tfjs-blas gather: ids[%zu] = %d is out of range [0, %lld)", i, ids[i], (long long)w->rows);
  if ((uint64_t)outOff + (uint64_t)nid * (uint64_t)w->cols > lo)
    RANGE_ERR("tfjs-blas gather: out needs %zu*%lld floats from offset %lld, the array has %zu", nid, (long long)w->cols,
              (long long)outOff, lo);
  rows_ctx c = {.w = w, .out = out + outOff, .ids = ids, .n = (int64_t)nid};
  pthread_mutex_lock(&g_op_mu);
  pool_run(job_rows, &c);
  pthread_mutex_unlock(&g_op_mu);
  return NULL;
}

static napi_value Dequantize(napi_env env, napi_callback_info info) {
  ARGS(5);
  const char *fn = "dequantize";
  nw_weight *w = get_weight(env, a[0], fn);
  int64_t r0, n, outOff = 0; float *out; size_t lo;
  if (!w || !get_int(env, a[1], fn, "rowStart", &r0) || !get_int(env, a[2], fn, "rowCount", &n) ||
      !get_ta(env, a[3], napi_float32_array, fn, "out", (void **)&out, &lo, NULL))
    return NULL;
  if (!is_nullish(env, a[4]) && !get_int(env, a[4], fn, "outOff", &outOff)) return NULL;
  if (r0 + n > w->rows) RANGE_ERR("tfjs-blas dequantize: rows [%lld, %lld) are out of range [0, %lld)", (long long)r0, (long long)(r0 + n), (long long)w->rows);
  if ((uint64_t)outOff + (uint64_t)n * (uint64_t)w->cols > lo)
    RANGE_ERR("tfjs-blas dequantize: out needs %lld*%lld floats from offset %lld, the array has %zu", (long long)n,
              (long long)w->cols, (long long)outOff, lo);
  rows_ctx c = {.w = w, .out = out + outOff, .n = n, .r0 = r0};
  pthread_mutex_lock(&g_op_mu);
  pool_run(job_rows, &c);
  pthread_mutex_unlock(&g_op_mu);
  return NULL;
}

static napi_value WeightInfo(napi_env env, napi_callback_info info) {
  ARGS(1);
  bool ok = false; void *p = NULL;
  napi_valuetype t;
  if (napi_typeof(env, a[0], &t) != napi_ok || t != napi_external || napi_check_object_type_tag(env, a[0], &TAG_W, &ok) != napi_ok || !ok)
    TYPE_ERR("tfjs-blas weightInfo: expected a native weight");
  napi_get_value_external(env, a[0], &p);
  nw_weight *w = p;
  napi_value o, v;
  napi_create_object(env, &o);
  napi_create_string_utf8(env, TYPE_NAMES[w->type], NAPI_AUTO_LENGTH, &v); napi_set_named_property(env, o, "type", v);
  napi_create_double(env, (double)w->rows, &v); napi_set_named_property(env, o, "rows", v);
  napi_create_double(env, (double)w->cols, &v); napi_set_named_property(env, o, "cols", v);
  napi_create_double(env, (double)w->bytes, &v); napi_set_named_property(env, o, "bytes", v);
  napi_get_boolean(env, w->map != NULL, &v); napi_set_named_property(env, o, "mapped", v);
  napi_get_boolean(env, w->freed != 0, &v); napi_set_named_property(env, o, "freed", v);
  if (w->map) { napi_create_string_utf8(env, w->map->path, NAPI_AUTO_LENGTH, &v); napi_set_named_property(env, o, "path", v); }
  return o;
}

static napi_value Free(napi_env env, napi_callback_info info) {
  ARGS(1);
  bool ok = false; void *p = NULL;
  napi_valuetype t;
  if (napi_typeof(env, a[0], &t) != napi_ok || t != napi_external || napi_check_object_type_tag(env, a[0], &TAG_W, &ok) != napi_ok || !ok)
    TYPE_ERR("tfjs-blas free: expected a native weight");
  napi_get_value_external(env, a[0], &p);
  pthread_mutex_lock(&g_op_mu);
  weight_release(env, (nw_weight *)p);
  pthread_mutex_unlock(&g_op_mu);
  return NULL;
}

static napi_value CpuFeatures(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value o, v;
  napi_create_object(env, &o);
#define B(name) napi_get_boolean(env, g_cpu.name != 0, &v); napi_set_named_property(env, o, #name, v);
  B(avx2) B(fma) B(f16c) B(avx512f) B(avx512bw) B(avx512vl) B(avx512vnni)
#undef B
  napi_create_string_utf8(env, g_kern->name, NAPI_AUTO_LENGTH, &v); napi_set_named_property(env, o, "kernels", v);
#ifdef NW_HAVE_AVX512
  napi_get_boolean(env, true, &v);
#else
  napi_get_boolean(env, false, &v);
#endif
  napi_set_named_property(env, o, "avx512Built", v);
  napi_create_string_utf8(env, g_selfcheck, NAPI_AUTO_LENGTH, &v); napi_set_named_property(env, o, "selfCheck", v);
  napi_get_boolean(env, nw_ob.sgemm != NULL, &v); napi_set_named_property(env, o, "openblas", v);
  napi_create_int32(env, P.started ? P.n : 0, &v); napi_set_named_property(env, o, "threads", v);
  napi_create_int32(env, g_mv_max, &v); napi_set_named_property(env, o, "mvMax", v);
  napi_create_string_utf8(env, q4_prefill_int8() ? "int8" : "f32", NAPI_AUTO_LENGTH, &v);
  napi_set_named_property(env, o, "q4Prefill", v);
  napi_create_string_utf8(env, q8_prefill_int8() ? "int8x2" : "f32", NAPI_AUTO_LENGTH, &v);
  napi_set_named_property(env, o, "q8Prefill", v);
  return o;
}

static napi_value SetThreads(napi_env env, napi_callback_info info) {
  ARGS(1);
  int64_t n;
  if (!get_int(env, a[0], "setThreads", "n", &n)) return NULL;
  if (n < 1 || n > MAXT) RANGE_ERR("tfjs-blas setThreads: n must be in [1, %d]", MAXT);
  pthread_mutex_lock(&g_op_mu);
  pool_stop();
  pool_start((int)n);
  pthread_mutex_unlock(&g_op_mu);
  return NULL;
}

static napi_value SetMvMax(napi_env env, napi_callback_info info) {
  ARGS(1);
  int64_t n;
  if (!get_int(env, a[0], "setMvMax", "n", &n)) return NULL;
  g_mv_max = (int)NW_MIN(n, 1 << 20);
  return NULL;
}

/* raw storage bytes (e.g. to save a quantized checkpoint, or to test the quantizers) */
static napi_value ReadBytes(napi_env env, napi_callback_info info) {
  ARGS(3);
  nw_weight *w = get_weight(env, a[0], "readBytes");
  int64_t off; void *p; size_t len;
  if (!w || !get_int(env, a[1], "readBytes", "byteOffset", &off) || !get_ta(env, a[2], napi_uint8_array, "readBytes", "out", &p, &len, NULL))
    return NULL;
  if ((uint64_t)off > w->bytes || len > w->bytes - (size_t)off)
    RANGE_ERR("tfjs-blas readBytes: %zu bytes from byte %lld are past the end of the weight (%zu bytes)", len, (long long)off, w->bytes);
  memcpy(p, w->data + off, len);
  return NULL;
}

/* test hook: GGML-reference f32 -> fp16 on a Float32Array, into a Uint16Array */
static napi_value ToF16(napi_env env, napi_callback_info info) {
  ARGS(2);
  float *x; uint16_t *y; size_t lx, ly;
  if (!get_ta(env, a[0], napi_float32_array, "toF16", "src", (void **)&x, &lx, NULL) ||
      !get_ta(env, a[1], napi_uint16_array, "toF16", "dst", (void **)&y, &ly, NULL))
    return NULL;
  if (ly < lx) RANGE_ERR("tfjs-blas toF16: dst is shorter than src");
  for (size_t i = 0; i < lx; i++) y[i] = nw_f32_to_f16(x[i]);
  return NULL;
}

/*
 * attention(heap, qOff, kOff, vOff, outOff, B, Hkv, R, T, D, S, cap, past, div, window): decode
 * attention straight on a KV cache kept with spare capacity (offsets in floats into one Float32Array,
 * the wasm heap). q, out [B, Hkv, R, D] with R = G*T rows per KV head (row g*T + t is query head g of
 * the group at new position t); K, V [B, Hkv, cap, D] with S <= cap valid positions. Row t sees keys
 * j <= past + t, and j >= past + t - window when window >= 0.
 */
typedef struct {
  const float *q, *K, *V; float *out;
  int64_t B, Hkv, R, T, D, S, cap, past, window; float div;
  int next, err;
} attn_ctx;

static void job_attention(void *vc, int tid, int nth) {
  (void)nth;
  attn_ctx *c = vc;
  const int64_t groups = (c->R + 7) / 8, items = c->B * c->Hkv * groups;
  float *sc = scratch(tid, 0, (size_t)8 * (size_t)c->S * sizeof(float));
  if (!sc) { c->err = 1; return; }
  for (;;) {
    const int64_t it = __atomic_fetch_add(&c->next, 1, __ATOMIC_RELAXED);
    if (it >= items) break;
    const int64_t bh = it / groups, r0 = (it % groups) * 8, RR = NW_MIN(8, c->R - r0);
    int64_t lo[8], hi[8];
    for (int64_t r = 0; r < RR; r++) {
      const int64_t qpos = c->past + (r0 + r) % c->T;
      hi[r] = NW_MIN(c->S - 1, qpos);
      lo[r] = c->window >= 0 ? NW_MAX(0, qpos - c->window) : 0;
      if (lo[r] > hi[r]) lo[r] = hi[r];
    }
    g_kern->attn_rows((int)RR, c->q + (bh * c->R + r0) * c->D, c->K + bh * c->cap * c->D, c->V + bh * c->cap * c->D, c->D, lo, hi,
                      c->div, sc, c->out + (bh * c->R + r0) * c->D);
  }
}

static napi_value Attention(napi_env env, napi_callback_info info) {
  ARGS(15);
  const char *fn = "attention";
  float *h; size_t lh;
  int64_t v[13];
  static const char *names[13] = {"qOff", "kOff", "vOff", "outOff", "B", "Hkv", "R", "T", "D", "S", "cap", "past", "div"};
  if (!get_ta(env, a[0], napi_float32_array, fn, "heap", (void **)&h, &lh, NULL)) return NULL;
  for (int i = 0; i < 12; i++) if (!get_int(env, a[1 + i], fn, names[i], &v[i])) return NULL;
  double divd, wind;
  if (napi_get_value_double(env, a[13], &divd) != napi_ok || napi_get_value_double(env, a[14], &wind) != napi_ok)
    RANGE_ERR("tfjs-blas attention: div and window must be numbers");
  const int64_t qOff = v[0], kOff = v[1], vOff = v[2], oOff = v[3], B = v[4], Hkv = v[5], R = v[6], T = v[7], D = v[8],
                S = v[9], cap = v[10], past = v[11];
  if (B < 1 || Hkv < 1 || R < 1 || T < 1 || D < 1 || S < 1 || R % T != 0 || S > cap || past < 0 || past + T > S)
    RANGE_ERR("tfjs-blas attention: bad shape B=%lld Hkv=%lld R=%lld T=%lld D=%lld S=%lld cap=%lld past=%lld", (long long)B,
              (long long)Hkv, (long long)R, (long long)T, (long long)D, (long long)S, (long long)cap, (long long)past);
  const uint64_t nq = (uint64_t)B * Hkv * R * D, nk = (uint64_t)B * Hkv * cap * D;
  if (qOff < 0 || kOff < 0 || vOff < 0 || oOff < 0 || qOff + nq > lh || oOff + nq > lh || kOff + nk > lh || vOff + nk > lh)
    RANGE_ERR("tfjs-blas attention: q/out (%llu floats) or K/V (%llu floats) run past the heap (%zu floats)", (unsigned long long)nq,
              (unsigned long long)nk, lh);
  attn_ctx c = {.q = h + qOff, .K = h + kOff, .V = h + vOff, .out = h + oOff, .B = B, .Hkv = Hkv, .R = R, .T = T, .D = D,
                .S = S, .cap = cap, .past = past, .window = wind < 0 ? -1 : (int64_t)wind, .div = (float)divd};
  pthread_mutex_lock(&g_op_mu);
  ensure_pool();
  pool_run(job_attention, &c);
  pthread_mutex_unlock(&g_op_mu);
  if (c.err) RANGE_ERR("tfjs-blas attention: out of memory (scratch)");
  return NULL;
}

/*
 * Row ops over the pool: rows (or, for element-wise ops, blocks of HR_BLOCK elements) are taken in
 * chunks by whichever thread is free; small calls (decode sizes) run inline, where waking the pool
 * costs more than the work.
 */
enum { HR_RMSNORM, HR_LAYERNORM, HR_SOFTMAX, HR_ACT, HR_SILU };
#define HR_BLOCK 8192
typedef struct { int kind, sub; const float *x, *w, *b; float *out; int64_t rows, n; float p; int64_t next; } hr_ctx;
static int hr_elementwise(const hr_ctx *c) { return c->kind == HR_ACT || c->kind == HR_SILU; }
static void hr_do(const hr_ctx *c, int64_t r0, int64_t r1) {
  const int64_t e0 = r0 * HR_BLOCK, e1 = NW_MIN(c->n, r1 * HR_BLOCK), o = r0 * c->n;
  switch (c->kind) {
    case HR_RMSNORM: g_kern->rmsnorm(c->x + o, c->w, c->out + o, r1 - r0, c->n, c->p); break;
    case HR_LAYERNORM: g_kern->layernorm(c->x + o, c->w, c->b, c->out + o, r1 - r0, c->n, c->p); break;
    case HR_SOFTMAX: g_kern->softmax(c->x + o, c->out + o, r1 - r0, c->n, c->p, c->sub); break;
    case HR_ACT: g_kern->act(c->sub, c->x + e0, c->out + e0, e1 - e0); break;
    default: g_kern->silu_mul(c->x + e0, c->w + e0, c->out + e0, e1 - e0); break;
  }
}
static void job_heap_rows(void *vc, int tid, int nth) {
  (void)tid; (void)nth;
  hr_ctx *c = vc;
  const int64_t units = hr_elementwise(c) ? (c->n + HR_BLOCK - 1) / HR_BLOCK : c->rows;
  const int64_t chunk = hr_elementwise(c) ? 1 : NW_MAX(1, HR_BLOCK / NW_MAX(1, c->n));
  for (;;) {
    const int64_t a = __atomic_fetch_add(&c->next, chunk, __ATOMIC_RELAXED);
    if (a >= units) break;
    hr_do(c, a, NW_MIN(units, a + chunk));
  }
}
/* small calls (decode sizes) run inline, where waking the pool costs more than the work */
static int hr_small(const hr_ctx *c) { return (hr_elementwise(c) ? c->n : c->rows * c->n) < 65536; }
static void hr_inline(hr_ctx *c) { hr_do(c, 0, hr_elementwise(c) ? (c->n + HR_BLOCK - 1) / HR_BLOCK : c->rows); }
static void run_heap_rows(hr_ctx *c) {
  if (hr_small(c)) { hr_inline(c); return; }
  pthread_mutex_lock(&g_op_mu);
  ensure_pool();
  pool_run(job_heap_rows, c);
  pthread_mutex_unlock(&g_op_mu);
}
/* run_heap_rows with g_op_mu already held and the pool started */
static void rows_locked(hr_ctx *c) {
  if (hr_small(c)) hr_inline(c);
  else pool_run(job_heap_rows, c);
}

/*
 * Fused inference ops on float32 data in one Float32Array (the wasm heap), offsets in floats:
 *   rmsnorm(heap, xOff, wOff, outOff, rows, n, eps)
 *   rotary(heap, xOff, cosOff, sinOff, outOff, rows, T, D)     x [rows, D], cos/sin [T, D], t = row % T
 *   siluMul(heap, gOff, uOff, outOff, n)
 *   layerNorm(heap, xOff, wOff, bOff, outOff, rows, n, eps)
 *   softmax(heap, xOff, outOff, rows, n, scale, div)       s = x / scale if div, else x * scale
 *   act(heap, kind, xOff, outOff, n)                       kind 0 gelu (tanh form), 1 quick_gelu, 2 silu
 * Prefill-sized calls run over the thread pool (run_heap_rows), decode-sized ones inline.
 */
static int heap_args(napi_env env, napi_callback_info info, const char *fn, int nint, const char **names, float **h,
                     int64_t *v, double *extra, int nextra) {
  size_t argc = 12; napi_value a[12];
  if (napi_get_cb_info(env, info, &argc, a, NULL, NULL) != napi_ok || argc < (size_t)(1 + nint + nextra)) {
    throwf(env, 0, "tfjs-blas %s: expected %d arguments", fn, 1 + nint + nextra);
    return 0;
  }
  size_t lh;
  if (!get_ta(env, a[0], napi_float32_array, fn, "heap", (void **)h, &lh, NULL)) return 0;
  for (int i = 0; i < nint; i++) {
    if (!get_int(env, a[1 + i], fn, names[i], &v[i])) return 0;
    if (v[i] < 0) { throwf(env, 1, "tfjs-blas %s: %s must be >= 0", fn, names[i]); return 0; }
  }
  for (int i = 0; i < nextra; i++)
    if (napi_get_value_double(env, a[1 + nint + i], &extra[i]) != napi_ok) { throwf(env, 0, "tfjs-blas %s: expected a number", fn); return 0; }
  v[nint] = (int64_t)lh;
  return 1;
}
#define HEAP_SPAN(off, len, what)                                                                                     \
  if ((uint64_t)(off) + (uint64_t)(len) > (uint64_t)v[NV])                                                            \
    RANGE_ERR("tfjs-blas %s: %s (%lld floats at %lld) runs past the heap (%lld floats)", fn, what, (long long)(len),  \
              (long long)(off), (long long)v[NV]);

static napi_value RmsNorm(napi_env env, napi_callback_info info) {
  const char *fn = "rmsnorm";
  static const char *names[] = {"xOff", "wOff", "outOff", "rows", "n"};
  enum { NV = 5 };
  float *h; int64_t v[NV + 1]; double eps;
  if (!heap_args(env, info, fn, NV, names, &h, v, &eps, 1)) return NULL;
  HEAP_SPAN(v[0], v[3] * v[4], "x") HEAP_SPAN(v[1], v[4], "w") HEAP_SPAN(v[2], v[3] * v[4], "out")
  hr_ctx c = {.kind = HR_RMSNORM, .x = h + v[0], .w = h + v[1], .out = h + v[2], .rows = v[3], .n = v[4], .p = (float)eps};
  run_heap_rows(&c);
  return NULL;
}

static napi_value Rotary(napi_env env, napi_callback_info info) {
  const char *fn = "rotary";
  static const char *names[] = {"xOff", "cosOff", "sinOff", "outOff", "rows", "T", "D"};
  enum { NV = 7 };
  float *h; int64_t v[NV + 1];
  if (!heap_args(env, info, fn, NV, names, &h, v, NULL, 0)) return NULL;
  if (v[5] < 1 || v[6] % 2 != 0) RANGE_ERR("tfjs-blas rotary: T must be >= 1 and D even (T=%lld D=%lld)", (long long)v[5], (long long)v[6]);
  HEAP_SPAN(v[0], v[4] * v[6], "x") HEAP_SPAN(v[1], v[5] * v[6], "cos") HEAP_SPAN(v[2], v[5] * v[6], "sin")
  HEAP_SPAN(v[3], v[4] * v[6], "out")
  g_kern->rotary(h + v[0], h + v[1], h + v[2], h + v[3], v[4], v[5], v[6]);
  return NULL;
}

static napi_value SiluMul(napi_env env, napi_callback_info info) {
  const char *fn = "siluMul";
  static const char *names[] = {"gOff", "uOff", "outOff", "n"};
  enum { NV = 4 };
  float *h; int64_t v[NV + 1];
  if (!heap_args(env, info, fn, NV, names, &h, v, NULL, 0)) return NULL;
  HEAP_SPAN(v[0], v[3], "g") HEAP_SPAN(v[1], v[3], "u") HEAP_SPAN(v[2], v[3], "out")
  hr_ctx c = {.kind = HR_SILU, .x = h + v[0], .w = h + v[1], .out = h + v[2], .n = v[3]};
  run_heap_rows(&c);
  return NULL;
}

static napi_value LayerNorm(napi_env env, napi_callback_info info) {
  const char *fn = "layerNorm";
  static const char *names[] = {"xOff", "wOff", "bOff", "outOff", "rows", "n"};
  enum { NV = 6 };
  float *h; int64_t v[NV + 1]; double eps;
  if (!heap_args(env, info, fn, NV, names, &h, v, &eps, 1)) return NULL;
  HEAP_SPAN(v[0], v[4] * v[5], "x") HEAP_SPAN(v[1], v[5], "w") HEAP_SPAN(v[2], v[5], "b") HEAP_SPAN(v[3], v[4] * v[5], "out")
  hr_ctx c = {.kind = HR_LAYERNORM, .x = h + v[0], .w = h + v[1], .b = h + v[2], .out = h + v[3], .rows = v[4], .n = v[5], .p = (float)eps};
  run_heap_rows(&c);
  return NULL;
}

static napi_value Softmax(napi_env env, napi_callback_info info) {
  const char *fn = "softmax";
  static const char *names[] = {"xOff", "outOff", "rows", "n"};
  enum { NV = 4 };
  float *h; int64_t v[NV + 1]; double ex[2];
  if (!heap_args(env, info, fn, NV, names, &h, v, ex, 2)) return NULL;
  if (v[3] < 1) RANGE_ERR("tfjs-blas softmax: n must be >= 1");
  HEAP_SPAN(v[0], v[2] * v[3], "x") HEAP_SPAN(v[1], v[2] * v[3], "out")
  hr_ctx c = {.kind = HR_SOFTMAX, .sub = ex[1] != 0, .x = h + v[0], .out = h + v[1], .rows = v[2], .n = v[3], .p = (float)ex[0]};
  run_heap_rows(&c);
  return NULL;
}

static napi_value Act(napi_env env, napi_callback_info info) {
  const char *fn = "act";
  static const char *names[] = {"kind", "xOff", "outOff", "n"};
  enum { NV = 4 };
  float *h; int64_t v[NV + 1];
  if (!heap_args(env, info, fn, NV, names, &h, v, NULL, 0)) return NULL;
  if (v[0] != NW_ACT_GELU_TANH && v[0] != NW_ACT_QUICK_GELU && v[0] != NW_ACT_SILU) RANGE_ERR("tfjs-blas act: unknown kind %lld", (long long)v[0]);
  HEAP_SPAN(v[1], v[3], "x") HEAP_SPAN(v[2], v[3], "out")
  hr_ctx c = {.kind = HR_ACT, .sub = (int)v[0], .x = h + v[1], .out = h + v[2], .n = v[3]};
  run_heap_rows(&c);
  return NULL;
}
#undef HEAP_SPAN

/*
 * decodeLayers(heap, weights, offs, layerOffs, eps): L Qwen2 / Mistral decoder layers
 * (layers/decoder.ts DecoderLayer) for one new position per sequence, every projection in native
 * storage, the KV caches in the wasm heap: one call per decode step instead of ~20 kernels per
 * layer and the JavaScript between them (layers/fused_decode.ts). weights: 7·L handles, per layer
 * q, k, v, o, gate, up, down. offs = [xOff, outOff, cosOff, sinOff, B, H, Hkv, D, window];
 * layerOffs: 9·L numbers, per layer [ln1Off, ln2Off, bqOff, bkOff, bvOff, kOff, vOff, cap, past].
 * Offsets are in floats into heap; -1 marks an absent bias or no window. Each layer runs the
 * composite path's steps with the same kernels in the same order, so the result equals it bit for
 * bit:
 *   xn = rmsnorm(x, ln1); q/k/v = xn·Wᵀ (+ b); rotary(q), rotary(k) at cos/sin [1, D];
 *   K/V[:, :, past] = k, v; ctx = attention(q, K, V, S = past + 1); h = x + ctx·Woᵀ;
 *   hn = rmsnorm(h, ln2); y = h + (silu(hn·Wgᵀ) · hn·Wuᵀ)·Wdᵀ     (y is the next layer's x)
 * x, out [B, E]; q [B, H·D] = [B, Hkv, G, D]; K, V [B, Hkv, cap, D].
 */
static float *g_dl_buf; static size_t g_dl_len;
typedef struct { nw_weight *W[7]; const float *ln1, *ln2, *bias[3]; float *K, *V; int64_t cap, past; } dl_layer;
typedef struct { int64_t B, H, Hkv, D, E, I, window; float eps; const float *cs, *sn; float *buf; } dl_shape;
/* one layer, x -> y (both [B, E], may not alias); 0 when scratch memory could not be had */
static int decode_one(const dl_shape *s, const dl_layer *l, const float *x, float *y) {
  const int64_t B = s->B, E = s->E, I = s->I, D = s->D, QD = s->H * D, KD = s->Hkv * D;
  float *xn = s->buf, *hn = xn + B * E, *ao = hn + B * E, *hh = ao + B * E, *q = hh + B * E, *qr = q + B * QD, *ctx = qr + B * QD,
        *k = ctx + B * QD, *kr = k + B * KD, *vv = kr + B * KD, *g = vv + B * KD, *u = g + B * I;
  hr_ctx n1 = {.kind = HR_RMSNORM, .x = x, .w = l->ln1, .out = xn, .rows = B, .n = E, .p = s->eps};
  rows_locked(&n1);
  if (!matvec_run(l->W[0], xn, B, q, l->bias[0]) || !matvec_run(l->W[1], xn, B, k, l->bias[1]) || !matvec_run(l->W[2], xn, B, vv, l->bias[2]))
    return 0;
  g_kern->rotary(q, s->cs, s->sn, qr, B * s->H, 1, D);
  g_kern->rotary(k, s->cs, s->sn, kr, B * s->Hkv, 1, D);
  for (int64_t i = 0; i < B * s->Hkv; i++) { /* row (b, kv head) -> position past of the cache */
    memcpy(l->K + (i * l->cap + l->past) * D, kr + i * D, (size_t)D * sizeof(float));
    memcpy(l->V + (i * l->cap + l->past) * D, vv + i * D, (size_t)D * sizeof(float));
  }
  attn_ctx ac = {.q = qr, .K = l->K, .V = l->V, .out = ctx, .B = B, .Hkv = s->Hkv, .R = s->H / s->Hkv, .T = 1, .D = D, .S = l->past + 1,
                 .cap = l->cap, .past = l->past, .window = s->window, .div = (float)sqrt((double)D)};
  pool_run(job_attention, &ac);
  if (ac.err || !matvec_run(l->W[3], ctx, B, ao, NULL)) return 0;
  for (int64_t i = 0; i < B * E; i++) hh[i] = x[i] + ao[i];
  hr_ctx n2 = {.kind = HR_RMSNORM, .x = hh, .w = l->ln2, .out = hn, .rows = B, .n = E, .p = s->eps};
  rows_locked(&n2);
  if (!matvec_run(l->W[4], hn, B, g, NULL) || !matvec_run(l->W[5], hn, B, u, NULL)) return 0;
  hr_ctx sm = {.kind = HR_SILU, .x = g, .w = u, .out = g, .n = B * I};
  rows_locked(&sm);
  if (!matvec_run(l->W[6], g, B, ao, NULL)) return 0;
  for (int64_t i = 0; i < B * E; i++) y[i] = hh[i] + ao[i];
  return 1;
}
/* numbers of a JS array into v (integers >= -1; -1 allowed where neg[i]) */
static int int_array(napi_env env, napi_value arr, const char *fn, const char *what, uint32_t n, int64_t *v) {
  bool isarr = false; uint32_t len = 0;
  if (napi_is_array(env, arr, &isarr) != napi_ok || !isarr || napi_get_array_length(env, arr, &len) != napi_ok || len != n) {
    throwf(env, 0, "tfjs-blas %s: %s must be an array of %u numbers", fn, what, n);
    return 0;
  }
  for (uint32_t i = 0; i < n; i++) {
    napi_value e; double d = 0;
    if (napi_get_element(env, arr, i, &e) != napi_ok || napi_get_value_double(env, e, &d) != napi_ok || d != floor(d) || d < -1 ||
        d > 9007199254740991.0) {
      throwf(env, 1, "tfjs-blas %s: %s[%u] must be an integer >= -1", fn, what, i);
      return 0;
    }
    v[i] = (int64_t)d;
  }
  return 1;
}
static napi_value DecodeLayers(napi_env env, napi_callback_info info) {
  ARGS(5);
  const char *fn = "decodeLayers";
  static const char *wn[7] = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"};
  static const char *on[9] = {"xOff", "outOff", "cosOff", "sinOff", "B", "H", "Hkv", "D", "window"};
  static const char *ln[9] = {"ln1Off", "ln2Off", "bqOff", "bkOff", "bvOff", "kOff", "vOff", "cap", "past"};
  float *h; size_t lh;
  if (!get_ta(env, a[0], napi_float32_array, fn, "heap", (void **)&h, &lh, NULL)) return NULL;
  bool isarr = false; uint32_t nw = 0;
  if (napi_is_array(env, a[1], &isarr) != napi_ok || !isarr || napi_get_array_length(env, a[1], &nw) != napi_ok || nw == 0 || nw % 7 != 0)
    TYPE_ERR("tfjs-blas decodeLayers: weights must be an array of 7 handles per layer (q, k, v, o, gate, up, down)");
  const uint32_t L = nw / 7;
  int64_t o[9];
  if (!int_array(env, a[2], fn, "offs", 9, o)) return NULL;
  for (int i = 0; i < 8; i++) if (o[i] < 0) RANGE_ERR("tfjs-blas decodeLayers: %s must be >= 0", on[i]);
  double epsd;
  if (napi_get_value_double(env, a[4], &epsd) != napi_ok) TYPE_ERR("tfjs-blas decodeLayers: eps must be a number");
  const int64_t B = o[4], H = o[5], Hkv = o[6], D = o[7];
  if (B < 1 || Hkv < 1 || H < Hkv || H % Hkv != 0 || D < 2 || D % 2 != 0)
    RANGE_ERR("tfjs-blas decodeLayers: bad shape B=%lld H=%lld Hkv=%lld D=%lld", (long long)B, (long long)H, (long long)Hkv, (long long)D);
  dl_layer *ls = calloc(L, sizeof(dl_layer));
  int64_t *lo = malloc(sizeof(int64_t) * 9 * L);
  if (!ls || !lo) { free(ls); free(lo); RANGE_ERR("tfjs-blas decodeLayers: out of memory"); }
#define DL_FAIL(...) do { throwf(env, 1, __VA_ARGS__); free(ls); free(lo); return NULL; } while (0)
  if (!int_array(env, a[3], fn, "layerOffs", 9 * L, lo)) { free(ls); free(lo); return NULL; }
  int64_t E = -1, I = -1;
  for (uint32_t l = 0; l < L; l++) {
    for (int i = 0; i < 7; i++) {
      napi_value e;
      if (napi_get_element(env, a[1], 7 * l + i, &e) != napi_ok || !(ls[l].W[i] = get_weight(env, e, fn))) { free(ls); free(lo); return NULL; }
    }
    if (l == 0) { E = ls[0].W[0]->cols; I = ls[0].W[4]->rows; }
    const int64_t QD = H * D, KD = Hkv * D;
    const int64_t want[7][2] = {{QD, E}, {KD, E}, {KD, E}, {E, QD}, {I, E}, {I, E}, {E, I}};
    for (int i = 0; i < 7; i++)
      if (ls[l].W[i]->rows != want[i][0] || ls[l].W[i]->cols != want[i][1])
        DL_FAIL("tfjs-blas decodeLayers: layer %u %s is [%lld, %lld], expected [%lld, %lld] (H=%lld Hkv=%lld D=%lld)", l, wn[i],
                (long long)ls[l].W[i]->rows, (long long)ls[l].W[i]->cols, (long long)want[i][0], (long long)want[i][1], (long long)H,
                (long long)Hkv, (long long)D);
    const int64_t *v = lo + 9 * l, cap = v[7], past = v[8];
    if (past < 0 || cap < 1 || past + 1 > cap) DL_FAIL("tfjs-blas decodeLayers: layer %u: past=%lld with cap=%lld", l, (long long)past, (long long)cap);
    const int64_t span[7] = {E, E, QD, KD, KD, B * Hkv * cap * D, B * Hkv * cap * D};
    for (int i = 0; i < 7; i++) {
      if (v[i] < 0 && i >= 2 && i <= 4) continue; /* no bias */
      if (v[i] < 0 || (uint64_t)v[i] + (uint64_t)span[i] > lh)
        DL_FAIL("tfjs-blas decodeLayers: layer %u %s (%lld floats at %lld) runs past the heap (%zu floats)", l, ln[i], (long long)span[i],
                (long long)v[i], lh);
    }
    ls[l] = (dl_layer){.W = {ls[l].W[0], ls[l].W[1], ls[l].W[2], ls[l].W[3], ls[l].W[4], ls[l].W[5], ls[l].W[6]}, .ln1 = h + v[0], .ln2 = h + v[1],
                       .bias = {v[2] >= 0 ? h + v[2] : NULL, v[3] >= 0 ? h + v[3] : NULL, v[4] >= 0 ? h + v[4] : NULL},
                       .K = h + v[5], .V = h + v[6], .cap = cap, .past = past};
  }
  const int64_t span[4] = {B * E, B * E, D, D};
  for (int i = 0; i < 4; i++)
    if ((uint64_t)o[i] + (uint64_t)span[i] > lh)
      DL_FAIL("tfjs-blas decodeLayers: %s (%lld floats at %lld) runs past the heap (%zu floats)", on[i], (long long)span[i], (long long)o[i], lh);
  /* scratch: xn, hn, ao, hh [B, E]; q, qr, ctx [B, H·D]; k, kr, vv [B, Hkv·D]; g, u [B, I]; then two [B, E] for the layers' x / y */
  const size_t need = (size_t)B * (size_t)(6 * E + 3 * H * D + 3 * Hkv * D + 2 * I);
  pthread_mutex_lock(&g_op_mu);
  if (need > g_dl_len) {
    free(g_dl_buf);
    g_dl_len = 0;
    if (posix_memalign((void **)&g_dl_buf, 64, need * sizeof(float)) != 0) g_dl_buf = NULL;
    else g_dl_len = need;
  }
  int ok = g_dl_buf != NULL;
  if (ok) {
    ensure_pool();
    dl_shape s = {.B = B, .H = H, .Hkv = Hkv, .D = D, .E = E, .I = I, .window = o[8], .eps = (float)epsd, .cs = h + o[2], .sn = h + o[3],
                  .buf = g_dl_buf};
    float *pp[2] = {g_dl_buf + need - 2 * B * E, g_dl_buf + need - B * E};
    const float *x = h + o[0];
    for (uint32_t l = 0; ok && l < L; l++) {
      float *y = l + 1 == L ? h + o[1] : pp[l % 2];
      ok = decode_one(&s, &ls[l], x, y);
      x = y;
    }
  }
  pthread_mutex_unlock(&g_op_mu);
  free(ls); free(lo);
#undef DL_FAIL
  if (!ok) RANGE_ERR("tfjs-blas decodeLayers: out of memory (scratch)");
  return NULL;
}

static void cleanup_hook(void *arg) { (void)arg; }

napi_status nw_register(napi_env env, napi_value exports) {
  static int inited = 0;
  if (!inited) {
    for (uint32_t i = 0; i < 65536; i++) nw_f16_table[i] = f16_bits_to_f32((uint16_t)i);
    select_kernels();
    const char *mv = getenv("TFJS_BLAS_MV_MAX");
    if (mv) g_mv_max = atoi(mv);
    inited = 1;
  }
  napi_add_env_cleanup_hook(env, cleanup_hook, NULL);
  napi_property_descriptor d[] = {
    {"mapFile", 0, MapFile, 0, 0, 0, napi_default, 0},
    {"mappingInfo", 0, MappingInfo, 0, 0, 0, napi_default, 0},
    {"weightFromMap", 0, WeightFromMap, 0, 0, 0, napi_default, 0},
    {"weightFromBuffer", 0, WeightFromBuffer, 0, 0, 0, napi_default, 0},
    {"weightAlloc", 0, WeightAlloc, 0, 0, 0, napi_default, 0},
    {"writeRows", 0, WriteRows, 0, 0, 0, napi_default, 0},
    {"quantize", 0, Quantize, 0, 0, 0, napi_default, 0},
    {"matmul", 0, Matmul, 0, 0, 0, napi_default, 0},
    {"matmulT", 0, MatmulT, 0, 0, 0, napi_default, 0},
    {"gather", 0, Gather, 0, 0, 0, napi_default, 0},
    {"prefetch", 0, Prefetch, 0, 0, 0, napi_default, 0},
    {"pin", 0, Pin, 0, 0, 0, napi_default, 0},
    {"trim", 0, Trim, 0, 0, 0, napi_default, 0},
    {"dequantize", 0, Dequantize, 0, 0, 0, napi_default, 0},
    {"weightInfo", 0, WeightInfo, 0, 0, 0, napi_default, 0},
    {"free", 0, Free, 0, 0, 0, napi_default, 0},
    {"cpuFeatures", 0, CpuFeatures, 0, 0, 0, napi_default, 0},
    {"setThreads", 0, SetThreads, 0, 0, 0, napi_default, 0},
    {"setMvMax", 0, SetMvMax, 0, 0, 0, napi_default, 0},
    {"readBytes", 0, ReadBytes, 0, 0, 0, napi_default, 0},
    {"toF16", 0, ToF16, 0, 0, 0, napi_default, 0},
    {"decodeLayers", 0, DecodeLayers, 0, 0, 0, napi_default, 0},
    {"attention", 0, Attention, 0, 0, 0, napi_default, 0},
    {"rmsnorm", 0, RmsNorm, 0, 0, 0, napi_default, 0},
    {"rotary", 0, Rotary, 0, 0, 0, napi_default, 0},
    {"siluMul", 0, SiluMul, 0, 0, 0, napi_default, 0},
    {"layerNorm", 0, LayerNorm, 0, 0, 0, napi_default, 0},
    {"softmax", 0, Softmax, 0, 0, 0, napi_default, 0},
    {"act", 0, Act, 0, 0, 0, napi_default, 0},
  };
  return napi_define_properties(env, exports, sizeof d / sizeof d[0], d);
}
