#!/usr/bin/env node
// Benchmark of the native-weight kernels (Qwen2-7B shapes). Prints ms, weight GB/s (decode) and
// GFLOP/s (prefill) per storage type and thread count.
//   node bench.js [--head | --shapes up,down,head] [--threads 1,2] [--types f32,f16,bf16,q8_0,q4_0]
//                 [--crossover] [--no-prefill]
'use strict';
const b = require('./index.js');
const argv = process.argv.slice(2);
const opt = (k, d) => { const i = argv.indexOf(k); return i >= 0 ? argv[i + 1] : d; };
const threads = opt('--threads', '1,2').split(',').map(Number);
const types = opt('--types', 'f32,f16,bf16,q8_0,q4_0').split(',');
const allShapes = { up: [18944, 3584, 'up/gate 3584->18944'], down: [3584, 18944, 'down 18944->3584'], head: [152064, 3584, 'lm_head 3584->152064'] };
const shapes = opt('--shapes', argv.includes('--head') ? 'up,down,head' : 'up,down').split(',').map((k) => allShapes[k]);

function rnd(n) { const a = new Float32Array(n); for (let i = 0; i < n; i++) a[i] = (Math.random() - 0.5) * 0.1; return a; }
// median wall ms per call; lastCpu = process CPU ms per call (all threads, incl. spin-waits): on a
// shared, oversubscribed machine wall time mostly measures the other tenants, CPU time does not.
let lastCpu = 0;
function time(fn, minMs = 600, minIt = 3) {
  fn(); // warm
  const ts = [];
  const t0 = performance.now(), c0 = process.cpuUsage();
  while (ts.length < minIt || performance.now() - t0 < minMs) { const s = performance.now(); fn(); ts.push(performance.now() - s); if (ts.length > 200) break; }
  const u = process.cpuUsage(c0);
  lastCpu = (u.user + u.system) / 1e3 / ts.length;
  ts.sort((a, c) => a - c);
  return ts[Math.floor(ts.length / 2)];
}
console.log('cpu', JSON.stringify(b.cpuFeatures()), 'openblas', b.info().core);
for (const [rows, cols, name] of shapes) {
  let f32 = b.quantize(rnd(rows * cols), 'f32', rows, cols);
  const x1 = rnd(cols), out1 = new Float32Array(rows);
  for (const t of types) {
    const w = t === 'f32' ? f32 : b.quantize(f32, t);
    const GB = b.weightInfo(w).bytes / 1e9;
    const line = [];
    for (const th of threads) {
      b.setThreads(th);
      const ms = time(() => b.matmul(w, x1, 0, 1, out1, 0, null, 0));
      line.push(`${th} thr ${ms.toFixed(2)} ms ${(GB / ms * 1e3).toFixed(1)} GB/s (cpu ${lastCpu.toFixed(2)} ms)`);
    }
    console.log(`matvec ${name.padEnd(22)} ${t.padEnd(5)} ${(GB * 1e3).toFixed(0).padStart(5)} MB | ${line.join(' | ')}`);
    if (argv.includes('--crossover') && rows === 18944) {
      b.setThreads(threads[threads.length - 1]);
      const mv = b.cpuFeatures().mvMax, r = [];
      for (const M of [1, 2, 4, 8, 16, 32]) {
        const x = rnd(M * cols), o = new Float32Array(M * rows);
        b.setMvMax(1 << 20); const a = time(() => b.matmul(w, x, 0, M, o, 0, null, 0), 300, 2);
        b.setMvMax(0); const p = time(() => b.matmul(w, x, 0, M, o, 0, null, 0), 300, 2);
        r.push(`M=${M} mv ${a.toFixed(1)} / panel ${p.toFixed(1)} ms`);
      }
      b.setMvMax(mv);
      console.log(`  crossover ${t}: ${r.join(', ')}`);
    }
    if (t !== 'f32') b.free(w);
  }
  if (rows === 18944 && !argv.includes('--no-prefill')) {
    const M = 512, x = rnd(M * cols), out = new Float32Array(M * rows), gf = 2 * M * rows * cols / 1e9;
    for (const t of types) {
      const w = t === 'f32' ? f32 : b.quantize(f32, t);
      const line = [];
      for (const th of threads) {
        b.setThreads(th);
        const ms = time(() => b.matmul(w, x, 0, M, out, 0, null, 0), 1000, 2);
        line.push(`${th} thr ${ms.toFixed(0)} ms ${(gf / ms * 1e3).toFixed(0)} GFLOP/s (cpu ${lastCpu.toFixed(0)} ms)`);
      }
      console.log(`prefill 512x3584 . (18944x3584)^T ${t.padEnd(5)} | ${line.join(' | ')}`);
      if (t !== 'f32') b.free(w);
    }
  }
  b.free(f32); f32 = null;
}
