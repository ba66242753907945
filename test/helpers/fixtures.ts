/**
 * Locating the model fixtures: the bundled copy in test/fixtures/<name> (trimmed goldens) when it
 * exists, else ../shared/fixtures/<name>, else null (tests then report skipped).
 */
import fs from 'node:fs';
import path from 'node:path';
import { FIXTURES, SHARED_FIXTURES } from './golden';

export const MODEL_FIXTURES = ['minicpmv26_tiny', 'videollama2_clip_mistral_tiny', 'videollama2_siglip_qwen2_tiny'] as const;

/** Directory of a model fixture (bundled first), or null. */
export function modelFixture(name: string): string | null {
  for (const root of [FIXTURES, SHARED_FIXTURES]) {
    const d = path.join(root, name);
    if (fs.existsSync(path.join(d, 'config.json'))) return d;
  }
  return null;
}

/** Golden file of a model fixture: `golden.safetensors` in the chosen directory. */
export function goldenFile(dir: string): string {
  return path.join(dir, 'golden.safetensors');
}
