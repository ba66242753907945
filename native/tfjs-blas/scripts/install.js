// Uses the prebuilt binary when it loads; otherwise builds the addon with the node-gyp that npm bundles, against the headers of the running node
// (no download). A non-zero exit makes npm drop this optional dependency; tfjs-vlm then keeps the
// stock tfjs kernels. Set TFJS_BLAS_SKIP_BUILD=1 to skip the build on purpose.
'use strict';
const { spawnSync } = require('child_process');
const fs = require('fs');
const path = require('path');

if (process.env.TFJS_BLAS_SKIP_BUILD === '1') {
  console.error('tfjs-blas: TFJS_BLAS_SKIP_BUILD=1, not building');
  process.exit(1);
}
if (process.platform !== 'linux') {
  console.error('tfjs-blas: only Linux is supported; skipping');
  process.exit(1);
}
// A prebuilt binary that loads here needs no compiler: use it unless a source build is asked for.
const prebuilt = path.join(__dirname, '..', 'prebuilds', `${process.platform}-${process.arch}`, 'tfjs_blas.node');
if (process.env.TFJS_BLAS_BUILD_FROM_SOURCE !== '1' && fs.existsSync(prebuilt)) {
  const probe = spawnSync(process.execPath, ['-e', `require(${JSON.stringify(prebuilt)})`], { stdio: 'pipe' });
  if (probe.status === 0) {
    console.error(`tfjs-blas: using the prebuilt ${path.relative(path.join(__dirname, '..'), prebuilt)} (TFJS_BLAS_BUILD_FROM_SOURCE=1 builds from source)`);
    process.exit(0);
  }
  console.error(`tfjs-blas: the prebuilt binary does not load here (${String(probe.stderr).trim().split('\n')[0]}); building from source`);
}
const env = { ...process.env };
const prefix = path.resolve(path.dirname(process.execPath), '..'); // the node install prefix
if (!env.npm_config_nodedir && fs.existsSync(path.join(prefix, 'include', 'node', 'node_api.h'))) {
  env.npm_config_nodedir = prefix;
}
const candidates = [
  env.npm_config_node_gyp,
  path.join(prefix, 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
];
try { candidates.push(require.resolve('node-gyp/bin/node-gyp.js')); } catch { /* not installed */ }
const gyp = candidates.find((p) => p && fs.existsSync(p));
if (!gyp) {
  console.error('tfjs-blas: node-gyp not found; skipping the native build');
  process.exit(1);
}
const r = spawnSync(process.execPath, [gyp, 'rebuild'], { cwd: path.join(__dirname, '..'), stdio: 'inherit', env });
process.exit(r.status === null ? 1 : r.status);
