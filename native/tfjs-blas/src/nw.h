/*
 * Shared definitions for the native-weight part of tfjs-blas: storage types, GGML block layouts,
 * the per-ISA kernel table (filled by kernels_{scalar,avx2,avx512}.c, chosen at run time with
 * __builtin_cpu_supports), and the dlopen'ed OpenBLAS entry points.
 */
#ifndef NW_H
#define NW_H
#include <stddef.h>
#include <stdint.h>
#include <string.h>

enum { NW_F32 = 0, NW_F16 = 1, NW_BF16 = 2, NW_Q8_0 = 3, NW_Q4_0 = 4, NW_NTYPES = 5 };
#define QK 32
#define NW_MAX(a, b) ((a) > (b) ? (a) : (b))
#define NW_MIN(a, b) ((a) < (b) ? (a) : (b))
#define Q8_0_BYTES 34 /* { uint16 d (fp16); int8 qs[32] } */
#define Q4_0_BYTES 18 /* { uint16 d (fp16); uint8 qs[16] }: low nibble = j, high nibble = j+16 */

/* Activations quantized for the int8 dot products (internal format, not GGML's: d kept in f32;
   s = sum of qs, so q4_0 can multiply its unsigned nibbles directly: sum (q-8)x = sum qx - 8s). */
typedef struct { float d; int32_t s; int8_t qs[QK]; } xq8_t;
/* The same activations laid out for the q4_0 decode kernel (dot4q4): each half of the block twice,
   lo = x[0:16] x[0:16], hi = x[16:32] x[16:32], so both 128-bit lanes meet their nibbles without a
   cross-lane shuffle per block; s2 = 2 * sum of qs (each of a row's 4 lanes removes 2s of the offset). */
typedef struct { int8_t lo[QK]; int8_t hi[QK]; float d; int32_t s2; } xq4d_t;
/* One block of 8 q4_0 (or q8_0) rows repacked for the prefill int8 GEMM (kern.h gemm_q4x8): d[r] = row r's
   scale in f32; q[32t + 4r + c] = row r's weight 4t+c unsigned: a q4_0 nibble (0..15, offset 8) or a q8_0
   weight + 128 (0..255, offset 128). */
typedef struct { float d[8]; uint8_t q[256]; } q4x8_t;

extern float nw_f16_table[65536];
static inline float nw_f16_to_f32(uint16_t h) { return nw_f16_table[h]; }
static inline float nw_bf16_to_f32(uint16_t h) { uint32_t u = (uint32_t)h << 16; float f; memcpy(&f, &u, 4); return f; }
static inline uint16_t nw_ld16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }

typedef struct {
  const char *name;
  /* dot of one weight row with an f32 vector (n elements) */
  float (*dot_f32)(const float *w, const float *x, int64_t n);
  float (*dot_f16)(const uint16_t *w, const float *x, int64_t n);
  float (*dot_bf16)(const uint16_t *w, const float *x, int64_t n);
  /* dot of one quantized row (nb blocks) with activations quantized to xq8_t */
  float (*dot_q8)(const uint8_t *w, const xq8_t *x, int64_t nb);
  float (*dot_q4)(const uint8_t *w, const xq8_t *x, int64_t nb);
  /* res[r] = dot(row r, x) for four q8_0 / q4_0 rows rbytes apart (decode with M = 1) */
  void (*dot4q)(int type, const uint8_t *w, size_t rbytes, const xq8_t *x, int64_t nb, float *res);
  /* res[r] = dot(row r, x) for four q4_0 rows rbytes apart, x in the doubled layout (decode with M = 1) */
  void (*dot4q4)(const uint8_t *w, size_t rbytes, const xq4d_t *x, int64_t nb, float *res);
  /* the same for eight rows (res[8]): each x block loaded once for twice the weight bytes */
  void (*dot8q4)(const uint8_t *w, size_t rbytes, const xq4d_t *x, int64_t nb, float *res);
  /* res[r] = dot(row r, x) for four f32 / f16 / bf16 rows rbytes apart (decode with M = 1) */
  void (*dot4f)(int type, const uint8_t *w, size_t rbytes, const float *x, int64_t n, float *res);
  /* res[m] = dot(row, x_m) for m < MM <= 4, the row converted once (decode with M > 1) */
  void (*dotm)(int type, const uint8_t *w, const float *x, const xq8_t *xq, int64_t n, int MM, float *res);
  /* one row of any storage type to f32 */
  void (*dequant_row)(int type, const uint8_t *src, float *dst, int64_t n);
  /* 8 q4_0 / q8_0 rows (rbytes apart) of nb blocks -> nb q4x8_t (q8_0: q = w + 128, unsigned) */
  void (*pack_q4x8)(int type, const uint8_t *w, size_t rbytes, int64_t nb, q4x8_t *dst);
  /* out[m*ldo + 8g + r] (+)= dot(packed row 8g+r, x_m) over nb blocks, M rows of x xs blocks apart,
     ng groups nb q4x8_t apart; accum: add to out, else start from bias (or 0); off: the weights' unsigned
     offset (q4_0 8, q8_0 128); pairs: x rows 2i, 2i+1 are two terms of one row, summed into out row i */
  void (*gemm_q4x8)(const q4x8_t *pw, int64_t ng, int64_t nb, const xq8_t *x, int64_t xs, int64_t M, float *out,
                    int64_t ldo, const float *bias, int accum, int off, int pairs);
  /* 1: gemm_q4x8 also takes q8_0 panels (off 128); without VNNI their u8 x s8 pairs would overflow int16 */
  int vnni;
  /* C[M,N] = A[M,K] . B[N,K]^T + beta*C (row-major; the no-OpenBLAS panel path) */
  void (*sgemm_nt)(int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *B, int64_t ldb,
                   float *C, int64_t ldc, float beta);
  /* y[0:n] += a * x[0:n] */
  void (*axpy)(int64_t n, float a, const float *x, float *y);
  /* softmax(q_r . K^T / div) . V for R <= 8 rows of one K/V head, keys [lo_r, hi_r]; sc: 8 * (max hi + 1) floats */
  void (*attn_rows)(int R, const float *q, const float *K, const float *V, int64_t D, const int64_t *lo, const int64_t *hi,
                    float div, float *sc, float *out);
  /* fused inference ops (kern.h): RMSNorm rows, rotary rows (t = row % T), silu(g) * u */
  void (*rmsnorm)(const float *x, const float *w, float *out, int64_t rows, int64_t n, float eps);
  void (*rotary)(const float *x, const float *cs, const float *sn, float *out, int64_t rows, int64_t T, int64_t D);
  void (*silu_mul)(const float *g, const float *u, float *out, int64_t n);
  /* row ops of prefill and vision (kern.h): LayerNorm rows, scaled softmax rows, activations */
  void (*layernorm)(const float *x, const float *w, const float *b, float *out, int64_t rows, int64_t n, float eps);
  void (*softmax)(const float *x, float *out, int64_t rows, int64_t n, float scale, int div);
  void (*act)(int kind, const float *x, float *out, int64_t n);
} nw_kernels_t;
enum { NW_ACT_GELU_TANH = 0, NW_ACT_QUICK_GELU = 1, NW_ACT_SILU = 2 };

extern const nw_kernels_t nw_kernels_scalar;
extern const nw_kernels_t nw_kernels_avx2;
#ifdef NW_HAVE_AVX512
extern const nw_kernels_t nw_kernels_avx512;
#endif

/* OpenBLAS, dlopen'ed at load time (NULL pointers when absent). */
typedef void (*ob_sgemm_t)(int, int, int, int, int, int, float, const float *, int, const float *, int, float, float *, int);
typedef void (*ob_sgemv_t)(int, int, int, int, float, const float *, int, const float *, int, float, float *, int);
typedef struct {
  void *handle;
  ob_sgemm_t sgemm;
  ob_sgemv_t sgemv;
  void (*set_num_threads)(int);
  int (*get_num_threads)(void);
  char *(*get_corename)(void);
  char *(*get_config)(void);
  int (*get_parallel)(void);
  char error[256];
} nw_openblas_t;
extern nw_openblas_t nw_ob;
void nw_openblas_load(void);
enum { CblasRowMajor = 101, CblasNoTrans = 111, CblasTrans = 112 };

/* out[M, rows] = x[M, cols] · Wᵀ (+ bias) on the weight pool, for a few rows of x (weights.c) */
void nw_matvec_f32(const float *W, int64_t rows, int64_t cols, const float *x, int64_t M, float *out, const float *bias);

/* reference (scalar, bit-exact) conversions, weights.c */
uint16_t nw_f32_to_f16(float f);
uint16_t nw_f32_to_bf16(float f);

#endif
