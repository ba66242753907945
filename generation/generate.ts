/**
 * The generation loop (mlx-lm `generate_step`, HF v4.40 `_greedy_search` / `_sample` /
 * `_beam_search`). It works from an `inputs_embeds` prefill (how both VLMs call it) or from token
 * ids, with one KV cache for the whole run:
 *
 *   prefill(prompt) → logits of the last position
 *   loop: processors → pick (argmax | sample | beam step) → stop? → forward(one token)
 *
 * `generateStream` is the core async generator of `{token, logprob}` for greedy and sampling;
 * `generate` wraps it (and beam search) and drives an optional text streamer. Every tensor is
 * disposed by the end, including on errors and early exits.
 */
import * as tf from '@tensorflow/tfjs';
import { CausalLM } from '../layers/decoder';
import { sliceRows } from '../layers/heap_ops';
import { KVCache } from '../layers/kv_cache';
import { BeamSearchScorer } from './beam';
import { GenerationOptions, ResolvedGenerationConfig, resolveGenerationConfig } from './config';
import {
  LogitsProcessorList, MinNewTokensLogitsProcessor, RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper,
  logSoftmax, topK,
} from './logits_process';
import { Rng, sampleFromScores } from './sampling';
import { DecodeFn, TextStreamer } from './streamers';

/** What generation needs from a language model (CausalLM satisfies it through `asGenerationModel`). */
export interface GenerationModel {
  numLayers: number;
  maxPositions: number;
  vocabSize: number;
  /** ids [B, T] int32 → embeddings [B, T, E]. */
  embed(ids: tf.Tensor2D): tf.Tensor3D;
  /**
   * embeddings [B, T, E] → logits of the last position [B, 1, V], appending to `cache`. With a
   * padding mask, `mask` holds the 0/1 rows over all cached + new positions and `positions` the
   * position ids of the new ones ([B][T]).
   */
  forwardLast(embeds: tf.Tensor3D, cache: KVCache, padding?: { mask: number[][]; positions: number[][] }): tf.Tensor3D;
}

/** Prompt positions per prefill forward at most (unpadded prompts; llama.cpp's default ubatch). */
export const PREFILL_CHUNK = 512;

/** Float32 attention-score bytes ([heads, chunk, positions]) a prefill chunk may take. */
export const PREFILL_SCORE_BYTES = 64 * 2 ** 20;

/**
 * Positions per prefill forward for a prompt of T: PREFILL_CHUNK, or fewer (a multiple of 64, at
 * least 64) when the last chunk's scores would pass PREFILL_SCORE_BYTES. A 16-frame VideoLLaMA 2
 * prompt (1662 positions, 32 heads) takes 256: at 512 its ~110 MB score tensors set the wasm
 * heap's high-water mark.
 */
export function prefillChunk(T: number, heads: number): number {
  const fit = Math.floor(PREFILL_SCORE_BYTES / (4 * heads * Math.max(T, 1)) / 64) * 64;
  return Math.max(64, Math.min(PREFILL_CHUNK, fit));
}

/** Adapts a CausalLM (Qwen2, Mistral) to the generation loop. */
export function asGenerationModel(lm: CausalLM, opts: { prefillChunk?: number } = {}): GenerationModel {
  return {
    numLayers: lm.cfg.numHiddenLayers,
    maxPositions: lm.cfg.maxPositionEmbeddings,
    vocabSize: lm.cfg.vocabSize,
    embed: (ids) => lm.model.embed(ids),
    forwardLast: (embeds, cache, padding) => {
      if (!padding) {
        // long prompts in chunks of positions (llama.cpp's ubatch): the attention scores are
        // [H, chunk, S] instead of [H, S, S], which keeps a 16-frame video's prefill (1.7k
        // positions) inside a few hundred MB of heap; the result is the same up to round-off
        const T = embeds.shape[1];
        const chunk = opts.prefillChunk ?? prefillChunk(T, lm.cfg.numAttentionHeads);
        const [B, , E] = embeds.shape;
        const positions = (s: number, n: number) => (B === 1 ? sliceRows(embeds.reshape([T, E]), s, n).reshape([1, n, E]) : embeds.slice([0, s, 0], [-1, n, -1])) as tf.Tensor3D;
        for (let s = 0; s + chunk < T; s += chunk) {
          tf.tidy(() => { lm.model.forward(positions(s, chunk), { cache }); });
        }
        const last = Math.floor((T - 1) / chunk) * chunk;
        if (last === 0) return lm.forward(embeds, { cache, logits: 'last' });
        return tf.tidy(() => lm.forward(positions(last, T - last), { cache, logits: 'last' }));
      }
      const pos = tf.tensor2d(padding.positions, undefined, 'int32');
      try {
        return lm.forward(embeds, { cache, logits: 'last', attentionMask: padding.mask, positionIds: pos });
      } finally {
        pos.dispose();
      }
    },
  };
}

/** The prompt: embeddings (VLMs) or token ids (text only). Embeddings are not disposed. */
export interface GenerationInput {
  inputsEmbeds?: tf.Tensor3D;
  inputIds?: number[];
  /**
   * 0/1 over the prompt positions (HF attention_mask). Zeros are masked out as keys and positions
   * follow HF `prepare_inputs_for_generation`: cumsum(mask) − 1, 1 where masked.
   */
  attentionMask?: number[];
}

/** HF position ids for a padding mask: cumsum − 1, and 1 at masked positions. */
export function positionsFromMask(mask: number[]): number[] {
  let c = 0;
  return mask.map((m) => {
    c += m ? 1 : 0;
    return m ? c - 1 : 1;
  });
}

/** Tracks the growing padding mask of one sequence (null when nothing is masked). */
class PaddingState {
  mask: number[];
  constructor(prompt: number[]) {
    this.mask = [...prompt];
  }
  static from(input: GenerationInput, promptLen: number): PaddingState | null {
    const m = input.attentionMask;
    if (!m) return null;
    if (m.length !== promptLen) throw new Error(`attention mask has ${m.length} entries, the prompt has ${promptLen} positions`);
    if (m.every((v) => v === 1)) return null;
    if (!m.some((v) => v === 1)) throw new Error('attention mask masks every prompt position');
    return new PaddingState(m);
  }
  /** Mask/positions for the prompt forward (rows repeated `rows` times). */
  prompt(rows = 1): { mask: number[][]; positions: number[][] } {
    const pos = positionsFromMask(this.mask);
    return { mask: Array.from({ length: rows }, () => this.mask), positions: Array.from({ length: rows }, () => pos) };
  }
  /** Appends one generated position and returns the mask/positions for its forward. */
  step(rows = 1): { mask: number[][]; positions: number[][] } {
    this.mask.push(1);
    const p = positionsFromMask(this.mask);
    const last = p[p.length - 1];
    return { mask: Array.from({ length: rows }, () => this.mask), positions: Array.from({ length: rows }, () => [last]) };
  }
}

export type FinishReason = 'eos' | 'length' | 'stop_string' | 'max_positions' | 'abort';

export interface GenerationResult {
  /** Generated ids (HF `generate` output minus the prompt; includes the eos token when it stopped on one). */
  tokens: number[];
  finishReason: FinishReason;
  /** Prompt positions (embeddings rows or ids). */
  promptTokens: number;
  /** Text when a decode function was given. */
  text?: string;
  /** Beam search: the final hypothesis score. */
  score?: number;
}

export interface StreamStep {
  token: number;
  /** log-probability of the token under the processed distribution (greedy/sampling). */
  logprob: number;
}

export interface GenerateCallbacks {
  /** Tokenizer decode; needed for stop strings and text output. */
  decode?: DecodeFn;
  /** Receives stable text chunks as they are produced (greedy/sampling; beams emit at the end). */
  onText?: (chunk: string) => void;
  /** Receives each token as produced (beam search: the final tokens, after the search). */
  onToken?: (step: StreamStep) => void;
  /** Called once per decoding step (also during beam search), e.g. for timing. */
  onStep?: () => void;
}

/** Builds the HF processor list (repetition penalty) and warpers (temperature → top-k → top-p). */
export function buildProcessors(c: ResolvedGenerationConfig, promptIdsLength = 0): { processors: LogitsProcessorList; warpers: LogitsProcessorList } {
  const processors = new LogitsProcessorList();
  if (c.minNewTokens > 0 && c.eosTokenIds.length) processors.push(new MinNewTokensLogitsProcessor(promptIdsLength, c.minNewTokens, c.eosTokenIds));
  if (c.repetitionPenalty !== 1.0) processors.push(new RepetitionPenaltyLogitsProcessor(c.repetitionPenalty));
  const warpers = new LogitsProcessorList();
  if (c.doSample) {
    const minKeep = c.numBeams > 1 ? 2 : 1;
    if (c.temperature !== 1.0) warpers.push(new TemperatureLogitsWarper(c.temperature));
    if (c.topK !== 0) warpers.push(new TopKLogitsWarper(c.topK, minKeep));
    if (c.topP < 1.0) warpers.push(new TopPLogitsWarper(c.topP, minKeep));
  }
  return { processors, warpers };
}

function promptEmbeds(model: GenerationModel, input: GenerationInput): { embeds: tf.Tensor3D; owned: boolean; ids: number[] } {
  if (input.inputsEmbeds) {
    const [B, T] = input.inputsEmbeds.shape;
    if (B !== 1) throw new Error(`generation takes one prompt at a time (inputs_embeds batch ${B})`);
    if (T === 0) throw new Error('empty prompt: inputs_embeds has no positions');
    return { embeds: input.inputsEmbeds, owned: false, ids: [] };
  }
  const ids = input.inputIds ?? [];
  if (ids.length === 0) throw new Error('empty prompt: no input ids and no inputs_embeds');
  const t = tf.tensor2d(ids, [1, ids.length], 'int32');
  try {
    return { embeds: model.embed(t), owned: true, ids: [...ids] };
  } finally {
    t.dispose();
  }
}

function checkLength(model: GenerationModel, promptLen: number): void {
  if (promptLen >= model.maxPositions) {
    throw new Error(`prompt of ${promptLen} positions is too long: the model supports max_position_embeddings = ${model.maxPositions} ` +
      '(including generated tokens)');
  }
}

/** With a signal: lets pending I/O (an abort) run, then says whether generation was cancelled. */
async function aborted(signal: AbortSignal | undefined): Promise<boolean> {
  if (!signal) return false;
  if (signal.aborted) return true;
  await new Promise<void>((r) => setImmediate(r));
  return signal.aborted;
}

function lastRow(logits: tf.Tensor3D, row = 0): Float32Array {
  const V = logits.shape[2];
  const all = logits.dataSync() as Float32Array;
  return all.slice(row * V, (row + 1) * V);
}

/**
 * Greedy or sampled decoding as an async generator of tokens. Stops on eos (the eos token is
 * yielded), on max_new_tokens, on a stop string (needs `decode`) or at max_position_embeddings.
 * The return value of the generator says why it stopped.
 */
export async function* generateStream(model: GenerationModel, input: GenerationInput, options: GenerationOptions = {}, decode?: DecodeFn): AsyncGenerator<StreamStep, FinishReason> {
  const c = resolveGenerationConfig(options);
  if (c.numBeams > 1) throw new Error('generateStream: beam search does not stream; use generate()');
  if (c.stopStrings.length && !decode) throw new Error('stop_strings need a decode function (tokenizer)');
  const rng = new Rng(c.seed);
  const prompt = promptEmbeds(model, input);
  const promptLen = prompt.embeds.shape[1];
  checkLength(model, promptLen);
  const { processors, warpers } = buildProcessors(c, prompt.ids.length);
  const padding = PaddingState.from(input, promptLen);
  const cache = new KVCache(model.numLayers);
  cache.reserve(promptLen + Math.min(c.maxNewTokens, 256)); // one buffer allocation for the prefill
  const seq = prompt.ids; // HF input_ids: the prompt ids (none for inputs_embeds) + generated
  const generated: number[] = [];
  try {
    if (await aborted(options.signal)) return 'abort';
    let logits = model.forwardLast(prompt.embeds, cache, padding?.prompt());
    if (prompt.owned) prompt.embeds.dispose();
    for (;;) {
      const scores = lastRow(logits);
      logits.dispose();
      processors.apply(seq, scores);
      let token: number;
      if (c.doSample) {
        warpers.apply(seq, scores);
        token = sampleFromScores(scores, rng);
      } else {
        token = topK(scores, 1).indices[0];
      }
      const logprob = logSoftmax(scores)[token];
      seq.push(token);
      generated.push(token);
      yield { token, logprob };
      if (c.eosTokenIds.includes(token)) return 'eos';
      if (c.stopStrings.length) {
        const text = decode!(generated);
        if (c.stopStrings.some((s) => text.includes(s))) return 'stop_string';
      }
      if (generated.length >= c.maxNewTokens) return 'length';
      if (promptLen + generated.length >= model.maxPositions) return 'max_positions';
      if (await aborted(options.signal)) return 'abort';
      const ids = tf.tensor2d([token], [1, 1], 'int32');
      const emb = model.embed(ids);
      ids.dispose();
      logits = model.forwardLast(emb, cache, padding?.step());
      emb.dispose();
    }
  } finally {
    if (prompt.owned && !prompt.embeds.isDisposed) prompt.embeds.dispose();
    cache.dispose();
  }
}

/** Beam search (HF v4.40 `_beam_search`, batch 1). Returns the best hypothesis' generated ids. */
export async function beamSearch(model: GenerationModel, input: GenerationInput, options: GenerationOptions = {}, onStep?: () => void): Promise<GenerationResult> {
  const c = resolveGenerationConfig(options);
  const K = c.numBeams;
  const prompt = promptEmbeds(model, input);
  const promptLen = prompt.embeds.shape[1];
  checkLength(model, promptLen);
  const promptIds = prompt.ids;
  const { processors } = buildProcessors(c, promptIds.length);
  const padding = PaddingState.from(input, promptLen);
  const maxLength = promptIds.length + c.maxNewTokens; // HF max_length over input_ids
  const scorer = new BeamSearchScorer(K, c.lengthPenalty, c.earlyStopping, maxLength);
  const cache = new KVCache(model.numLayers);
  cache.reserve(promptLen + Math.min(c.maxNewTokens, 256));
  let seqs: number[][] = Array.from({ length: K }, () => [...promptIds]);
  let beamScores = new Float32Array(K).fill(-1e9);
  beamScores[0] = 0;
  let finish: FinishReason = 'length';
  try {
    if (await aborted(options.signal)) return { tokens: [], finishReason: 'abort', promptTokens: promptLen };
    let logits = model.forwardLast(prompt.embeds, cache, padding?.prompt()); // [1, 1, V]: every beam starts from the same state
    if (prompt.owned) prompt.embeds.dispose();
    cache.selectBatch(new Array(K).fill(0));
    let rows: Float32Array[] = Array.from({ length: K }, () => lastRow(logits, 0));
    logits.dispose();
    const V = rows[0].length;
    const nCand = Math.max(2, 1 + c.eosTokenIds.length) * K;
    for (;;) {
      // log_softmax → processors → + beam score, flattened over [K·V]
      const flat = new Float32Array(K * V);
      for (let b = 0; b < K; b++) {
        const s = logSoftmax(rows[b]);
        processors.apply(seqs[b], s); // HF: all of input_ids (prompt ids + generated)
        for (let v = 0; v < V; v++) flat[b * V + v] = Math.fround(s[v] + beamScores[b]);
      }
      const top = topK(flat, nCand);
      const step = {
        scores: top.values,
        tokens: top.indices.map((i) => i % V),
        beamIndices: top.indices.map((i) => Math.floor(i / V)),
      };
      const next = scorer.process(seqs, step, c.eosTokenIds, promptIds.length, c.padTokenId);
      onStep?.();
      seqs = next.beamIndices.map((b, i) => [...seqs[b], next.tokens[i]]);
      beamScores = Float32Array.from(next.scores);
      const generatedLen = seqs[0].length - promptIds.length;
      if (scorer.done || seqs[0].length >= maxLength) break;
      if (promptLen + generatedLen >= model.maxPositions) { finish = 'max_positions'; break; }
      if (await aborted(options.signal)) return { tokens: seqs[0].slice(promptIds.length), finishReason: 'abort', promptTokens: promptLen };
      cache.selectBatch(next.beamIndices);
      const ids = tf.tensor2d(next.tokens, [K, 1], 'int32');
      const emb = model.embed(ids);
      ids.dispose();
      logits = model.forwardLast(emb, cache, padding?.step(K)); // [K, 1, V]
      emb.dispose();
      rows = Array.from({ length: K }, (_, b) => lastRow(logits, b));
      logits.dispose();
    }
    const best = scorer.finalize(seqs, Array.from(beamScores), promptIds.length);
    const tokens = best.tokens.slice(promptIds.length);
    // HF finalize appends eos_token_id[0] to a hypothesis shorter than the longest allowed.
    if (best.tokens.length < maxLength && c.eosTokenIds.length) tokens.push(c.eosTokenIds[0]);
    const endedOnEos = tokens.length > 0 && c.eosTokenIds.includes(tokens[tokens.length - 1]);
    return { tokens, finishReason: endedOnEos ? 'eos' : finish, promptTokens: promptLen, score: best.score };
  } finally {
    if (prompt.owned && !prompt.embeds.isDisposed) prompt.embeds.dispose();
    cache.dispose();
  }
}

/**
 * Generates a continuation: greedy, sampling or beam search per `options`. With `callbacks.decode`
 * the result carries `text` (special tokens kept; callers strip what their chat format needs) and
 * `onText` streams it.
 */
export async function generate(model: GenerationModel, input: GenerationInput, options: GenerationOptions = {}, callbacks: GenerateCallbacks = {}): Promise<GenerationResult> {
  const c = resolveGenerationConfig(options);
  const streamer = callbacks.decode && callbacks.onText ? new TextStreamer(callbacks.decode, callbacks.onText) : null;
  if (c.numBeams > 1) {
    const r = await beamSearch(model, input, options, callbacks.onStep);
    for (const t of r.tokens) callbacks.onToken?.({ token: t, logprob: NaN });
    streamer?.put(r.tokens);
    streamer?.end();
    if (callbacks.decode) r.text = callbacks.decode(r.tokens);
    return r;
  }
  const tokens: number[] = [];
  const it = generateStream(model, input, options, callbacks.decode);
  let finishReason: FinishReason = 'length';
  for (;;) {
    const r = await it.next();
    if (r.done) {
      finishReason = r.value;
      break;
    }
    tokens.push(r.value.token);
    callbacks.onStep?.();
    callbacks.onToken?.(r.value);
    streamer?.put(r.value.token);
  }
  streamer?.end();
  const promptTokens = input.inputsEmbeds ? input.inputsEmbeds.shape[1] : (input.inputIds?.length ?? 0);
  const result: GenerationResult = { tokens, finishReason, promptTokens };
  if (callbacks.decode) result.text = callbacks.decode(tokens);
  return result;
}
