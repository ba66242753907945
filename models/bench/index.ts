/**
 * All benchmark cases, by name. Model families add theirs here (vision cases live next to the
 * models they measure and are imported lazily so `vlm bench --case qwen2...` stays light).
 */
import { BenchCase } from './runner';
import { LLM_CASES } from './llm_cases';

/** Case groups: name → loader (lazy, so unused model code is not imported). */
const GROUPS: (() => BenchCase[])[] = [
  () => LLM_CASES,
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
