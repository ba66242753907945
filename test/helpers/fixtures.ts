/**
 * Locating the model fixtures: the bundled copy in test/fixtures/<name> (trimmed goldens) when it
 * exists, else ../shared/fixtures/<name>, else null (tests then report skipped).
 */
import fs from 'node:fs';
import path from 'node:path';
import { FIXTURES, SHARED_FIXTURES } from './golden';
import { CausalLM } from '../../layers/decoder';
import { ConfigReader, readJson } from '../../io/config';
import { parseMistralConfig } from '../../models/mistral/config';
import { parseQwen2Config } from '../../models/qwen2/config';
import { Checkpoint } from '../../weights/checkpoint';
import { loadWeights } from '../../weights/load';

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

/** The LLM fixtures: family and the checkpoint prefix of the LLM keys. */
export const LLM_FIXTURES: Record<string, { family: 'qwen2' | 'mistral'; llmPrefix: string }> = {
  minicpmv26_tiny: { family: 'qwen2', llmPrefix: 'llm.' },
  videollama2_clip_mistral_tiny: { family: 'mistral', llmPrefix: '' },
  videollama2_siglip_qwen2_tiny: { family: 'qwen2', llmPrefix: '' },
};

/** Loads only the LLM of a model fixture (strictly, from its config.json and weights). */
export function loadFixtureLLM(dir: string, name: string): CausalLM {
  const { family, llmPrefix } = LLM_FIXTURES[name];
  const file = path.join(dir, 'config.json');
  const reader = new ConfigReader(readJson(file), file);
  const lm = new CausalLM(family === 'qwen2' ? parseQwen2Config(reader) : parseMistralConfig(reader));
  const ck = Checkpoint.open(dir);
  try {
    loadWeights(lm, [{ checkpoint: ck, keymap: { name: 'llm', renames: llmPrefix ? [[llmPrefix, '']] : [], ignore: [] },
      only: ['model.embed_tokens.', 'model.layers.', 'model.norm.', 'lm_head.'] }]);
  } finally {
    ck.close();
  }
  return lm;
}
