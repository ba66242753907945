/**
 * Benchmark runner behind `vlm bench`: each case builds its module at real dimensions with random
 * weights, runs once to warm up, then times `repeats` runs (median), and reports the peak memory
 * (`peakBytes`). Numbers, never assertions.
 */
import * as tf from '@tensorflow/tfjs';
import { wasmHeapBytes } from '../layers/memory';

export interface BenchCaseResult {
  name: string;
  ms: number;
  gflops: number | null;
  peak_mb: number;
  /** all timed runs, ms */
  runs: number[];
  notes?: string;
}

export interface PreparedCase {
  /** One timed unit of work; must dispose what it creates (the runner syncs on `out`). */
  run(): tf.Tensor | void | Promise<tf.Tensor | void>;
  /** FLOPs of one run (for GFLOP/s), when meaningful. */
  flops?: number;
  dispose(): void;
  notes?: string;
  /** 'process' for host-side work (peak = max RSS); default 'backend' (wasm heap / RSS). */
  memory?: 'backend' | 'process';
}

export interface BenchCase {
  name: string;
  /** What it measures, for --list. */
  description: string;
  prepare(): Promise<PreparedCase> | PreparedCase;
}

async function runOnce(c: PreparedCase): Promise<number> {
  const t0 = performance.now();
  const out = await c.run();
  if (out) {
    await out.data(); // wait for the backend to finish
    out.dispose();
  }
  return performance.now() - t0;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/**
 * Peak memory of this process so far, in bytes: on wasm the heap size (it only grows, and malloc
 * reuses freed blocks, so it is the high-water mark of live tensors plus fragmentation and
 * XNNPACK's packed weights); elsewhere the process's max resident set. Meaningful per case when
 * each case runs in a fresh process (`vlm bench` does that by default).
 */
export function peakBytes(kind: 'backend' | 'process' = 'backend'): number {
  if (kind === 'process') return process.resourceUsage().maxRSS * 1024;
  return wasmHeapBytes() ?? process.resourceUsage().maxRSS * 1024;
}

/** Runs one case: warm-up, then `repeats` timed runs (median); peak memory after them. */
export async function runCase(bc: BenchCase, repeats = 5, warmup = 1): Promise<BenchCaseResult> {
  const c = await bc.prepare();
  try {
    for (let i = 0; i < warmup; i++) await runOnce(c);
    const runs: number[] = [];
    for (let i = 0; i < repeats; i++) runs.push(await runOnce(c));
    const ms = median(runs);
    return {
      name: bc.name,
      ms: Math.round(ms * 100) / 100,
      gflops: c.flops ? Math.round((c.flops / (ms * 1e6)) * 10) / 10 : null,
      peak_mb: Math.round(peakBytes(c.memory) / 2 ** 20),
      runs: runs.map((r) => Math.round(r * 100) / 100),
      notes: c.notes,
    };
  } finally {
    c.dispose();
  }
}
