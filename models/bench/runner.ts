/**
 * Benchmark runner behind `vlm bench`: each case builds its module at real dimensions with random
 * weights, runs once to warm up, then times `repeats` runs (median), and records the peak tensor
 * memory of one run with `tf.profile` (weights included). Numbers, never assertions.
 */
import * as tf from '@tensorflow/tfjs';

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

/** Runs one case: warm-up, `repeats` timed runs, one profiled run for peak memory. */
export async function runCase(bc: BenchCase, repeats = 5, warmup = 1): Promise<BenchCaseResult> {
  const c = await bc.prepare();
  try {
    for (let i = 0; i < warmup; i++) await runOnce(c);
    const runs: number[] = [];
    for (let i = 0; i < repeats; i++) runs.push(await runOnce(c));
    let peak = 0;
    const info = await tf.profile(async () => {
      const out = await c.run();
      if (out) {
        await out.data();
        out.dispose();
      }
    });
    peak = info.peakBytes;
    const ms = median(runs);
    return {
      name: bc.name,
      ms: Math.round(ms * 100) / 100,
      gflops: c.flops ? Math.round((c.flops / (ms * 1e6)) * 10) / 10 : null,
      peak_mb: Math.round(peak / 2 ** 20),
      runs: runs.map((r) => Math.round(r * 100) / 100),
      notes: c.notes,
    };
  } finally {
    c.dispose();
  }
}
