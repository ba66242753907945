/**
 * All benchmark cases, by name. Model families add theirs here (vision cases live next to the
 * models they measure and are imported lazily so `vlm bench --case qwen2...` stays light).
 */
import { BenchCase } from './runner';
import { LLM_CASES } from './llm_cases';
import { MINICPMV_BENCH_CASES } from '../models/minicpmv/bench_cases';
import { minicpmvPreprocessBench } from '../models/minicpmv/processing';
import { VIDEOLLAMA2_CASES } from '../models/videollama2/bench_cases';

/** Host-side preprocessing cases (no tensors). */
const PREPROCESS_CASES: BenchCase[] = [
  {
    name: 'minicpmv.preprocess.1344',
    description: 'MiniCPM-V 2.6 image processor on a 1344×1344 RGB image (real 448/9 config): grid, Pillow bicubic resizes, slices, normalised patch strips',
    prepare() {
      const b = minicpmvPreprocessBench(1344);
      return { run: () => void b.run(), dispose: () => undefined, memory: 'process' as const, notes: 'peak = process max RSS' };
    },
  },
];

/** Case groups: name → loader (lazy, so unused model code is not imported). */
const GROUPS: (() => BenchCase[])[] = [
  () => LLM_CASES,
  () => MINICPMV_BENCH_CASES,
  () => VIDEOLLAMA2_CASES,
  () => PREPROCESS_CASES,
];

export function allCases(): BenchCase[] {
  return GROUPS.flatMap((g) => g());
}

export function findCase(name: string): BenchCase {
  const cases = allCases();
  const c = cases.find((x) => x.name === name);
  if (!c) throw new Error(`--case: unknown benchmark case '${name}'; cases: ${cases.map((x) => x.name).join(', ')}`);
  return c;
}
