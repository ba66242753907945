/**
 * All benchmark cases, by name: the LLM blocks here, and each family's cases from its row of the
 * family table (they live next to the models they measure and load lazily, so
 * `vlm bench --case qwen2...` stays light).
 */
import { BenchCase } from './runner';
import { LLM_CASES } from './llm_cases';
import { FAMILIES } from '../models/families';

/** Case groups: name → loader (lazy, so unused model code is not imported). */
const GROUPS: (() => BenchCase[])[] = [
  () => LLM_CASES,
  ...FAMILIES.map((f) => () => f.benchCases()),
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
