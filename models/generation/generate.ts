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
import { CausalLM } from '../../layers/decoder';
import { KVCache } from '../../layers/kv_cache';
import { BeamSearchScorer } from './beam';
import { GenerationOptions, ResolvedGenerationConfig, resolveGenerationConfig } from './config';
import {
  LogitsProcessorList, RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper,
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
  /** embeddings [B, T, E] → logits of the last position [B, 1, V], appending to `cache`. */
  forwardLast(embeds: tf.Tensor3D, cache: KVCache): tf.Tensor3D;
}

/** Adapts a CausalLM (Qwen2, Mistral) to the generation loop. */
export function asGenerationModel(lm: CausalLM): GenerationModel {
  return {
    numLayers: lm.cfg.numHiddenLayers,
    maxPositions: lm.cfg.maxPositionEmbeddings,
    vocabSize: lm.cfg.vocabSize,
    embed: (ids) => lm.model.embed(ids),
    forwardLast: (embeds, cache) => lm.forward(embeds, { cache, logits: 'last' }),
  };
}

/** The prompt: embeddings (VLMs) or token ids (text only). Embeddings are not disposed. */
export interface GenerationInput {
  inputsEmbeds?: tf.Tensor3D;
  inputIds?: number[];
}

export type FinishReason = 'eos' | 'length' | 'stop_string' | 'max_positions';

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
  /** Receives each token as produced. */
  onToken?: (step: StreamStep) => void;
}

/** Builds the HF processor list (repetition penalty) and warpers (temperature → top-k → top-p). */
export function buildProcessors(c: ResolvedGenerationConfig): { processors: LogitsProcessorList; warpers: LogitsProcessorList } {
  const processors = new LogitsProcessorList();
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
  const { processors, warpers } = buildProcessors(c);
  const rng = new Rng(c.seed);
  const prompt = promptEmbeds(model, input);
  const promptLen = prompt.embeds.shape[1];
  checkLength(model, promptLen);
  const cache = new KVCache(model.numLayers);
  const seq = prompt.ids; // HF input_ids: the prompt ids (none for inputs_embeds) + generated
  const generated: number[] = [];
  try {
    let logits = model.forwardLast(prompt.embeds, cache);
    if (prompt.owned) prompt.embeds.dispose();
    for (;;) {
      const scores = lastRow(logits);
      logits.dispose();
      processors.apply(seq, scores);
      let token: number;
      let logprob: number;
      if (c.doSample) {
        warpers.apply(seq, scores);
        token = sampleFromScores(scores, rng);
      } else {
        token = topK(scores, 1).indices[0];
      }
      logprob = logSoftmax(scores)[token];
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
      const ids = tf.tensor2d([token], [1, 1], 'int32');
      const emb = model.embed(ids);
      ids.dispose();
      logits = model.forwardLast(emb, cache);
      emb.dispose();
    }
  } finally {
    if (prompt.owned && !prompt.embeds.isDisposed) prompt.embeds.dispose();
    cache.dispose();
  }
}

/** Beam search (HF v4.40 `_beam_search`, batch 1). Returns the best hypothesis' generated ids. */
export async function beamSearch(model: GenerationModel, input: GenerationInput, options: GenerationOptions = {}): Promise<GenerationResult> {
  const c = resolveGenerationConfig(options);
  const K = c.numBeams;
  const { processors } = buildProcessors(c);
  const prompt = promptEmbeds(model, input);
  const promptLen = prompt.embeds.shape[1];
  checkLength(model, promptLen);
  const promptIds = prompt.ids;
  const maxLength = promptIds.length + c.maxNewTokens; // HF max_length over input_ids
  const scorer = new BeamSearchScorer(K, c.lengthPenalty, c.earlyStopping, maxLength);
  const cache = new KVCache(model.numLayers);
  let seqs: number[][] = Array.from({ length: K }, () => [...promptIds]);
  let beamScores = new Float32Array(K).fill(-1e9);
  beamScores[0] = 0;
  let finish: FinishReason = 'length';
  try {
    let logits = model.forwardLast(prompt.embeds, cache); // [1, 1, V]: every beam starts from the same state
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
      seqs = next.beamIndices.map((b, i) => [...seqs[b], next.tokens[i]]);
      beamScores = Float32Array.from(next.scores);
      const generatedLen = seqs[0].length - promptIds.length;
      if (scorer.done || seqs[0].length >= maxLength) break;
      if (promptLen + generatedLen >= model.maxPositions) { finish = 'max_positions'; break; }
      cache.selectBatch(next.beamIndices);
      const ids = tf.tensor2d(next.tokens, [K, 1], 'int32');
      const emb = model.embed(ids);
      ids.dispose();
      logits = model.forwardLast(emb, cache); // [K, 1, V]
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
    const r = await beamSearch(model, input, options);
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
    callbacks.onToken?.(r.value);
    streamer?.put(r.value.token);
  }
  streamer?.end();
  const promptTokens = input.inputsEmbeds ? input.inputsEmbeds.shape[1] : (input.inputIds?.length ?? 0);
  const result: GenerationResult = { tokens, finishReason, promptTokens };
  if (callbacks.decode) result.text = callbacks.decode(tokens);
  return result;
}
