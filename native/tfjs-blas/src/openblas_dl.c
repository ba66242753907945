/*
 * OpenBLAS loaded at run time (dlopen), so a prebuilt addon loads on machines without it.
 * TFJS_BLAS_OPENBLAS=<path> picks the library; TFJS_BLAS_NO_OPENBLAS=1 forces the built-in fallback.
 */
#define _GNU_SOURCE
#include "nw.h"
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

nw_openblas_t nw_ob;

void nw_openblas_load(void) {
  if (nw_ob.handle || nw_ob.error[0]) return;
  if (getenv("TFJS_BLAS_NO_OPENBLAS") && strcmp(getenv("TFJS_BLAS_NO_OPENBLAS"), "1") == 0) {
    snprintf(nw_ob.error, sizeof nw_ob.error, "disabled by TFJS_BLAS_NO_OPENBLAS=1");
    return;
  }
  const char *names[] = {getenv("TFJS_BLAS_OPENBLAS"), "libopenblas.so.0", "libopenblas.so", "libopenblasp-r0.3.so"};
  for (size_t i = 0; i < sizeof names / sizeof names[0] && !nw_ob.handle; i++)
    if (names[i] && names[i][0]) {
      nw_ob.handle = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
      if (!nw_ob.handle && i <= 1) snprintf(nw_ob.error, sizeof nw_ob.error, "%s", dlerror());
    }
  if (!nw_ob.handle) return;
  nw_ob.sgemm = (ob_sgemm_t)dlsym(nw_ob.handle, "cblas_sgemm");
  nw_ob.sgemv = (ob_sgemv_t)dlsym(nw_ob.handle, "cblas_sgemv");
  *(void **)&nw_ob.set_num_threads = dlsym(nw_ob.handle, "openblas_set_num_threads");
  *(void **)&nw_ob.get_num_threads = dlsym(nw_ob.handle, "openblas_get_num_threads");
  *(void **)&nw_ob.get_corename = dlsym(nw_ob.handle, "openblas_get_corename");
  *(void **)&nw_ob.get_config = dlsym(nw_ob.handle, "openblas_get_config");
  *(void **)&nw_ob.get_parallel = dlsym(nw_ob.handle, "openblas_get_parallel");
  if (!nw_ob.sgemm || !nw_ob.sgemv) {
    snprintf(nw_ob.error, sizeof nw_ob.error, "OpenBLAS library lacks cblas_sgemm/cblas_sgemv");
    dlclose(nw_ob.handle);
    memset(&nw_ob, 0, sizeof nw_ob - sizeof nw_ob.error);
    return;
  }
  nw_ob.error[0] = 0;
}
