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
// A local build (npm install compiled it) wins; else the prebuilt binary shipped for this
// platform (prebuilds/<platform>-<arch>/, the prebuildify / node-gyp-build convention). Both pick
// their CPU kernels at run time and load OpenBLAS with dlopen only if it is installed.
const fs = require('fs');
const candidates = [
  path.join(__dirname, 'build', 'Release', 'tfjs_blas.node'),
  path.join(__dirname, 'prebuilds', `${process.platform}-${process.arch}`, 'tfjs_blas.node'),
];
try {
  const file = candidates.find((f) => fs.existsSync(f));
  if (!file) throw new Error(`tfjs-blas: no build and no prebuilt binary for ${process.platform}-${process.arch} (looked for ${candidates.join(', ')})`);
  module.exports = require(file);
  module.exports.binary = file;
} finally {
  Object.assign(process.env, saved);
  if (setTimeoutVar) delete process.env.OPENBLAS_THREAD_TIMEOUT;
}
