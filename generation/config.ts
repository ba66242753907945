/**
 * Generation options (HF `GenerationConfig` names in camelCase) and their validation. Defaults
 * follow HF v4.40: top_k 50, top_p 1.0, temperature 1.0, num_beams 1, length_penalty 1.0,
 * early_stopping false, repetition_penalty 1.0.
 */

export interface GenerationOptions {
  /** Tokens to generate at most (>= 1; default DEFAULT_MAX_NEW_TOKENS = 2048, upstream's chat default). */
  maxNewTokens?: number;
  /** Eos cannot be generated before this many new tokens (HF min_new_tokens). */
  minNewTokens?: number;
  doSample?: boolean;
  temperature?: number;
  topK?: number;
  topP?: number;
  repetitionPenalty?: number;
  numBeams?: number;
  lengthPenalty?: number;
  /** HF early_stopping: true, false or 'never'. */
  earlyStopping?: boolean | 'never';
  /** Stop on any of these token ids. */
  eosTokenId?: number | number[];
  /** Used to fill finished beams (HF pad_token_id). */
  padTokenId?: number;
  /** Stop when the decoded continuation contains one of these strings. */
  stopStrings?: string[];
  /** RNG seed for sampling (default 0). */
  seed?: number;
  /**
   * Cancels generation: checked once per token (the loop yields to the event loop first so an
   * abort can arrive); generation then stops with finishReason 'abort' and frees its tensors.
   */
  signal?: AbortSignal;
}

export interface ResolvedGenerationConfig {
  maxNewTokens: number;
  minNewTokens: number;
  doSample: boolean;
  temperature: number;
  topK: number;
  topP: number;
  repetitionPenalty: number;
  numBeams: number;
  lengthPenalty: number;
  earlyStopping: boolean | 'never';
  eosTokenIds: number[];
  padTokenId: number | undefined;
  stopStrings: string[];
  seed: number;
}

/**
 * The one default of max_new_tokens: 2048, upstream's chat default for both families
 * (MiniCPM-V `MiniCPMV.chat(max_new_tokens=2048)`, VideoLLaMA 2 `mm_infer(max_new_tokens=2048)`).
 */
export const DEFAULT_MAX_NEW_TOKENS = 2048;

/** Fills defaults and validates; each error names the option. Never mutates `opts`. */
export function resolveGenerationConfig(opts: GenerationOptions = {}): ResolvedGenerationConfig {
  const c: ResolvedGenerationConfig = {
    maxNewTokens: opts.maxNewTokens ?? DEFAULT_MAX_NEW_TOKENS,
    minNewTokens: opts.minNewTokens ?? 0,
    doSample: opts.doSample ?? false,
    temperature: opts.temperature ?? 1.0,
    topK: opts.topK ?? 50,
    topP: opts.topP ?? 1.0,
    repetitionPenalty: opts.repetitionPenalty ?? 1.0,
    numBeams: opts.numBeams ?? 1,
    lengthPenalty: opts.lengthPenalty ?? 1.0,
    earlyStopping: opts.earlyStopping ?? false,
    eosTokenIds: opts.eosTokenId === undefined ? [] : Array.isArray(opts.eosTokenId) ? [...opts.eosTokenId] : [opts.eosTokenId],
    padTokenId: opts.padTokenId,
    stopStrings: opts.stopStrings ? [...opts.stopStrings] : [],
    seed: opts.seed ?? 0,
  };
  const bad = (name: string, why: string, v: unknown) => new Error(`${name}: ${why}, got ${JSON.stringify(v)}`);
  if (!Number.isInteger(c.maxNewTokens) || c.maxNewTokens < 1) throw bad('max_new_tokens', 'must be an integer >= 1', c.maxNewTokens);
  if (!Number.isInteger(c.minNewTokens) || c.minNewTokens < 0) throw bad('min_new_tokens', 'must be an integer >= 0', c.minNewTokens);
  if (!Number.isInteger(c.numBeams) || c.numBeams < 1) throw bad('num_beams', 'must be an integer >= 1', c.numBeams);
  if (!(c.temperature > 0) || !Number.isFinite(c.temperature)) throw bad('temperature', 'must be > 0 (use greedy decoding instead of 0)', c.temperature);
  if (!Number.isInteger(c.topK) || c.topK < 0) throw bad('top_k', 'must be an integer >= 0 (0 disables it)', c.topK);
  if (!(c.topP > 0 && c.topP <= 1)) throw bad('top_p', 'must be in (0, 1]', c.topP);
  if (!(c.repetitionPenalty > 0) || !Number.isFinite(c.repetitionPenalty)) throw bad('repetition_penalty', 'must be > 0', c.repetitionPenalty);
  if (!Number.isFinite(c.lengthPenalty)) throw bad('length_penalty', 'must be a finite number', c.lengthPenalty);
  if (!Number.isSafeInteger(c.seed) || c.seed < 0) throw bad('seed', 'must be an integer in [0, 2^53 - 1]', c.seed);
  for (const id of c.eosTokenIds) if (!Number.isInteger(id) || id < 0) throw bad('eos_token_id', 'must be non-negative integers', c.eosTokenIds);
  if (c.doSample && c.numBeams > 1) throw new Error('beam sampling (do_sample with num_beams > 1) is not supported; use one of them');
  if (c.stopStrings.some((s) => typeof s !== 'string' || s.length === 0)) throw bad('stop_strings', 'must be non-empty strings', c.stopStrings);
  return c;
}
