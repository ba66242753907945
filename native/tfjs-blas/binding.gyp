{
  "variables": {
    "avx512_ok": "<!(node -e \"const r=require('child_process').spawnSync(process.env.CC||'cc',['-mavx512f','-mavx512bw','-mavx512vl','-mavx512vnni','-x','c','-c','-o','/dev/null','-'],{input:'#include <immintrin.h>\\nint f(void){__m256i z=_mm256_setzero_si256();return _mm256_extract_epi32(_mm256_dpbusd_epi32(z,z,z),0);}'});console.log(r.status===0?1:0)\")"
  },
  "targets": [
    {
      "target_name": "nw_kernels_scalar",
      "type": "static_library",
      "sources": ["src/kernels_scalar.c"],
      "cflags": ["-O3", "-std=c11", "-fPIC"]
    },
    {
      "target_name": "nw_kernels_avx2",
      "type": "static_library",
      "sources": ["src/kernels_avx2.c"],
      "cflags": ["-O3", "-std=c11", "-fPIC", "-mavx2", "-mfma", "-mf16c"]
    },
    {
      "target_name": "nw_kernels_avx512",
      "type": "static_library",
      "conditions": [["avx512_ok==1", { "sources": ["src/kernels_avx512.c"] }, { "sources": ["src/empty.c"] }]],
      "cflags": ["-O3", "-std=c11", "-fPIC", "-mavx2", "-mfma", "-mf16c", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512vnni"]
    },
    {
      "target_name": "tfjs_blas",
      "sources": ["src/blas.c", "src/weights.c", "src/openblas_dl.c"],
      "dependencies": ["nw_kernels_scalar", "nw_kernels_avx2", "nw_kernels_avx512"],
      "cflags": ["-O3", "-std=c11", "-ffp-contract=off", "-pthread"],
      "libraries": ["-ldl", "-lpthread", "-lm"],
      "defines": ["NAPI_VERSION=8"],
      "conditions": [["avx512_ok==1", { "defines": ["NW_HAVE_AVX512"] }]]
    }
  ]
}
