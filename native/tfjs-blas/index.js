// Loads the built addon. OpenBLAS reads OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE once, when the
// library is dlopened; a stale OPENBLAS_CORETYPE (e.g. Haswell on an AVX-512 machine) halves
// sgemm speed, so they are unset around the require and restored afterwards
// (TFJS_BLAS_KEEP_ENV=1 honours them). OPENBLAS_THREAD_TIMEOUT is lowered so idle BLAS threads
// stop spinning quickly when wasm threads run between matmuls (shared/NATIVE_KERNELS.md §4).
'use strict';
const path = require('path');
const saved = {};
const keep = process.env.TFJS_BLAS_KEEP_ENV === '1';
for (const k of ['OPENBLAS_CORETYPE', 'OPENBLAS_L2_SIZE']) {
  if (!keep && k in process.env) { saved[k] = process.env[k]; delete process.env[k]; }
}
const setTimeoutVar = !('OPENBLAS_THREAD_TIMEOUT' in process.env);
if (setTimeoutVar) process.env.OPENBLAS_THREAD_TIMEOUT = '4';
try {
  module.exports = require(path.join(__dirname, 'build', 'Release', 'tfjs_blas.node'));
} finally {
  Object.assign(process.env, saved);
  if (setTimeoutVar) delete process.env.OPENBLAS_THREAD_TIMEOUT;
}
