/*
 * tfjs-blas: OpenBLAS sgemm/sgemv behind one N-API entry point, for the tfjs wasm backend.
 *
 * gemm(A, aOff, B, bOff, C, cOff, transA, transB, M, N, K, batch, batchA, batchB
 *      [, bias, biasOff, biasLen, act, alpha, prelu, preluOff, preluLen])
 *
 * A, B, C are Float32Array views (over an ArrayBuffer or a SharedArrayBuffer, e.g. the wasm heap);
 * offsets are in elements. Batches broadcast like tfjs's BatchMatMul: batch i reads A batch
 * i % batchA and B batch i % batchB. bias/prelu broadcast as `index % len` over the flat output.
 * act: 0 linear, 1 relu, 2 relu6, 3 prelu, 4 leakyrelu, 5 sigmoid, 6 elu.
 * Every offset and length is checked against the views, so a stale or short view throws a
 * RangeError instead of touching memory out of bounds.
 *
 * OpenBLAS is dlopen'ed at load time (openblas_dl.c), not linked: without it gemm runs a built-in
 * (slower) fallback, and the native-weight API (weights.c) keeps working.
 */
#define NAPI_VERSION 8
#include <node_api.h>
#include "nw.h"
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(call)                                                   \
  do {                                                                \
    if ((call) != napi_ok) {                                          \
      napi_throw_error(env, NULL, "tfjs-blas: " #call " failed");     \
      return NULL;                                                    \
    }                                                                 \
  } while (0)

/* Float32Array (or null/undefined -> NULL). Returns 0 for any other type. */
static int get_f32(napi_env env, napi_value v, float **p, size_t *len) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok) return 0;
  if (t == napi_null || t == napi_undefined) { *p = NULL; *len = 0; return 1; }
  napi_typedarray_type tt; size_t n; void *data; napi_value ab; size_t off;
  if (napi_get_typedarray_info(env, v, &tt, &n, &data, &ab, &off) != napi_ok) return 0;
  if (tt != napi_float32_array) return 0;
  *p = (float *)data; *len = n;   /* a detached view has length 0 and fails the bounds checks */
  return 1;
}

static int64_t as_i64(napi_env env, napi_value v) {
  double d = 0; napi_get_value_double(env, v, &d); return (int64_t)d;
}
static double as_f64(napi_env env, napi_value v) {
  double d = 0; napi_get_value_double(env, v, &d); return d;
}

static void apply_act(float *C, int64_t total, int act, float alpha, const float *prelu, int64_t preluLen) {
  switch (act) {
    case 1: for (int64_t i = 0; i < total; i++) if (C[i] < 0) C[i] = 0; break;
    case 2: for (int64_t i = 0; i < total; i++) C[i] = C[i] < 0 ? 0 : (C[i] > 6 ? 6 : C[i]); break;
    case 3: for (int64_t i = 0; i < total; i++) if (C[i] < 0) C[i] *= prelu[i % preluLen]; break;
    case 4: for (int64_t i = 0; i < total; i++) if (C[i] < 0) C[i] *= alpha; break;
    case 5: for (int64_t i = 0; i < total; i++) C[i] = 1.f / (1.f + expf(-C[i])); break;
    case 6: for (int64_t i = 0; i < total; i++) if (C[i] < 0) C[i] = expf(C[i]) - 1.f; break;
    default: break;
  }
}

/* No OpenBLAS: C = op(A) . op(B) + beta*C. The [M,K] x [N,K]^T case (Linear) uses the kernel
   table's blocked sgemm; the other layouts a plain loop (correct, not fast). */
const nw_kernels_t *nw_kern(void);
static void fallback_gemm(int tA, int tB, int64_t M, int64_t N, int64_t K, const float *A, const float *B, float *C,
                          float beta) {
  if (!tA && tB) { nw_kern()->sgemm_nt(M, N, K, A, K, B, K, C, N, beta); return; }
  for (int64_t i = 0; i < M; i++) {
    float *c = C + i * N;
    for (int64_t j = 0; j < N; j++) c[j] = beta == 0.f ? 0.f : beta * c[j];
    for (int64_t k = 0; k < K; k++) {
      const float a = tA ? A[k * M + i] : A[i * K + k];
      if (tB) for (int64_t j = 0; j < N; j++) c[j] += a * B[j * K + k];
      else nw_kern()->axpy(N, a, B + k * N, c);
    }
  }
}

/* TFJS_BLAS_F32_MV=openblas keeps float32 matvecs on sgemv/sgemm (for A/B timings) */
static int f32_mv_on(void) {
  static int v = -1;
  if (v < 0) { const char *e = getenv("TFJS_BLAS_F32_MV"); v = !(e && strcmp(e, "openblas") == 0); }
  return v;
}

static napi_value Gemm(napi_env env, napi_callback_info info) {
  size_t argc = 22; napi_value a[22];
  CHECK(napi_get_cb_info(env, info, &argc, a, NULL, NULL));
  if (argc < 14) { napi_throw_error(env, NULL, "tfjs-blas gemm: expected at least 14 arguments"); return NULL; }
  float *A, *B, *C, *bias = NULL, *prelu = NULL;
  size_t la, lb, lc, lbias = 0, lprelu = 0;
  if (!get_f32(env, a[0], &A, &la) || !get_f32(env, a[2], &B, &lb) || !get_f32(env, a[4], &C, &lc) ||
      !A || !B || !C) {
    napi_throw_type_error(env, NULL, "tfjs-blas gemm: A, B and C must be Float32Arrays");
    return NULL;
  }
  const int64_t aOff = as_i64(env, a[1]), bOff = as_i64(env, a[3]), cOff = as_i64(env, a[5]);
  const int tA = (int)as_i64(env, a[6]), tB = (int)as_i64(env, a[7]);
  const int64_t M = as_i64(env, a[8]), N = as_i64(env, a[9]), K = as_i64(env, a[10]);
  const int64_t batch = as_i64(env, a[11]), bA = as_i64(env, a[12]), bB = as_i64(env, a[13]);
  int64_t biasOff = 0, biasLen = 0, preluOff = 0, preluLen = 0; int act = 0; float alpha = 0.f;
  if (argc >= 22) {
    if (!get_f32(env, a[14], &bias, &lbias) || !get_f32(env, a[19], &prelu, &lprelu)) {
      napi_throw_type_error(env, NULL, "tfjs-blas gemm: bias and prelu must be Float32Arrays or null");
      return NULL;
    }
    biasOff = as_i64(env, a[15]); biasLen = as_i64(env, a[16]);
    act = (int)as_i64(env, a[17]); alpha = (float)as_f64(env, a[18]);
    preluOff = as_i64(env, a[20]); preluLen = as_i64(env, a[21]);
  }
  if (M <= 0 || N <= 0 || K <= 0 || batch <= 0 || bA <= 0 || bB <= 0 ||
      M > INT32_MAX || N > INT32_MAX || K > INT32_MAX) {
    napi_throw_range_error(env, NULL, "tfjs-blas gemm: dimensions must be positive and < 2^31");
    return NULL;
  }
  const int64_t sA = M * K, sB = K * N, sC = M * N, total = batch * sC;
  if (aOff < 0 || bOff < 0 || cOff < 0 ||
      aOff + bA * sA > (int64_t)la || bOff + bB * sB > (int64_t)lb || cOff + total > (int64_t)lc ||
      (bias && (biasLen <= 0 || biasOff < 0 || biasOff + biasLen > (int64_t)lbias)) ||
      (act == 3 && (!prelu || preluLen <= 0 || preluOff < 0 || preluOff + preluLen > (int64_t)lprelu))) {
    napi_throw_range_error(env, NULL, "tfjs-blas gemm: offset/shape out of bounds");
    return NULL;
  }
  A += aOff; B += bOff; C += cOff;
  if (bias) bias += biasOff;
  if (prelu) prelu += preluOff;

  /* x·Wᵀ with few rows of x and a large W (decode with float32 weights): the weight pool's
     matvec (weights.c), which adds a per-column bias itself. TFJS_BLAS_F32_MV=openblas: sgemv/sgemm. */
  const int pool_mv = tB && !tA && M <= 8 && bB == 1 && N * K >= 65536 && (!bias || biasLen == N) && f32_mv_on();
  float beta = 0.f;
  if (bias && !pool_mv) { /* prefill C with the broadcast bias, then C = A*B + C */
    if (total % biasLen == 0) /* whole copies (a per-column bias): ~2 ns per element less than the modulo loop */
      for (int64_t i = 0; i < total; i += biasLen) memcpy(C + i, bias, (size_t)biasLen * sizeof(float));
    else
      for (int64_t i = 0; i < total; i++) C[i] = bias[i % biasLen];
    beta = 1.f;
  }
  const int lda = tA ? (int)M : (int)K, ldb = tB ? (int)K : (int)N;
  for (int64_t bi = 0; bi < batch; bi++) {
    const float *Ab = A + (bi % bA) * sA, *Bb = B + (bi % bB) * sB;
    float *Cb = C + bi * sC;
    if (pool_mv) {
      nw_matvec_f32(Bb, N, K, Ab, M, Cb, bias);
    } else if (!nw_ob.sgemm) {
      fallback_gemm(tA, tB, M, N, K, Ab, Bb, Cb, beta);
    } else if (M == 1) {
      /* matvec: sgemv is the memory-bound path (3.5x faster than sgemm with M == 1).
         c[N] = a[K] . B, B stored [K,N] (tB=0) or [N,K] (tB=1). */
      nw_ob.sgemv(CblasRowMajor, tB ? CblasNoTrans : CblasTrans, tB ? (int)N : (int)K,
                  tB ? (int)K : (int)N, 1.f, Bb, ldb, Ab, 1, beta, Cb, 1);
    } else {
      nw_ob.sgemm(CblasRowMajor, tA ? CblasTrans : CblasNoTrans, tB ? CblasTrans : CblasNoTrans,
                  (int)M, (int)N, (int)K, 1.f, Ab, lda, Bb, ldb, beta, Cb, (int)N);
    }
  }
  apply_act(C, total, act, alpha, prelu, preluLen);
  return NULL;
}

static napi_value SetThreads(napi_env env, napi_callback_info info) {
  size_t argc = 1; napi_value v;
  CHECK(napi_get_cb_info(env, info, &argc, &v, NULL, NULL));
  int n = (int)as_i64(env, v);
  if (n < 1) n = 1;
  if (!nw_ob.sgemm) {
    /* Without OpenBLAS, gemm runs a plain built-in fallback that is slower than the stock wasm
       (XNNPACK) kernels: throwing here makes wasm_kernels.ts' loadBlas() keep the stock kernels,
       as before, when the addon failed to load without libopenblas. The weight API is unaffected. */
    char msg[400];
    snprintf(msg, sizeof msg, "tfjs-blas: OpenBLAS is not available (%s); gemm would use the slow built-in fallback",
             nw_ob.error[0] ? nw_ob.error : "libopenblas.so.0 not found");
    napi_throw_error(env, NULL, msg);
    return NULL;
  }
  if (nw_ob.set_num_threads) nw_ob.set_num_threads(n);
  return NULL;
}

static napi_value Info(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value o, s;
  CHECK(napi_create_object(env, &o));
  napi_create_string_utf8(env, nw_ob.get_corename ? nw_ob.get_corename() : "none", NAPI_AUTO_LENGTH, &s);
  napi_set_named_property(env, o, "core", s);
  napi_create_string_utf8(env, nw_ob.get_config ? nw_ob.get_config() : "no OpenBLAS (built-in fallback)", NAPI_AUTO_LENGTH, &s);
  napi_set_named_property(env, o, "config", s);
  napi_create_int32(env, nw_ob.get_num_threads ? nw_ob.get_num_threads() : 1, &s);
  napi_set_named_property(env, o, "threads", s);
  napi_get_boolean(env, nw_ob.sgemm != NULL, &s);
  napi_set_named_property(env, o, "openblas", s);
  napi_create_string_utf8(env, nw_ob.error, NAPI_AUTO_LENGTH, &s);
  napi_set_named_property(env, o, "openblasError", s);
  napi_create_string_utf8(env, nw_kern()->name, NAPI_AUTO_LENGTH, &s);
  napi_set_named_property(env, o, "kernels", s);
  return o;
}

napi_status nw_register(napi_env env, napi_value exports); /* weights.c */

NAPI_MODULE_INIT() {
  nw_openblas_load();
  if (nw_register(env, exports) != napi_ok) return NULL;
  napi_property_descriptor d[] = {
    {"gemm", 0, Gemm, 0, 0, 0, napi_default, 0},
    {"setNumThreads", 0, SetThreads, 0, 0, 0, napi_default, 0},
    {"info", 0, Info, 0, 0, 0, napi_default, 0},
  };
  napi_define_properties(env, exports, sizeof(d) / sizeof(d[0]), d);
  return exports;
}
