/**
 * Logits processors and warpers with Hugging Face v4.40 semantics
 * (`generation/logits_process.py`), composable like `LogitsProcessorList`. They work on host rows
 * (one Float32Array of vocab size per sequence): decoding handles at most `num_beams` rows per step,
 * so the host is the simplest exact place. Arithmetic is float32 (Math.fround) where torch's is.
 *
 * Order (HF `_get_logits_processor` then `_get_logits_warper`): repetition penalty → temperature →
 * top-k → top-p. Each constructor validates its argument and throws naming it.
 */

/** ids: the token ids the processor may look at for this row (HF `input_ids[row]`). */
export interface LogitsProcessor {
  readonly name: string;
  /** Processes `scores` in place. */
  apply(ids: readonly number[], scores: Float32Array): void;
}

const f = Math.fround;

/**
 * HF RepetitionPenaltyLogitsProcessor: for every token already in `ids`, a negative score is
 * multiplied by the penalty and a positive one divided by it. With an `inputs_embeds` prompt,
 * HF's input_ids hold only the generated tokens, so only those are penalised.
 */
export class RepetitionPenaltyLogitsProcessor implements LogitsProcessor {
  readonly name = 'repetition_penalty';
  constructor(readonly penalty: number) {
    if (!(typeof penalty === 'number' && penalty > 0 && Number.isFinite(penalty))) {
      throw new Error(`repetition_penalty has to be a strictly positive number, got ${penalty}`);
    }
  }
  apply(ids: readonly number[], scores: Float32Array): void {
    // gather → where → scatter: a repeated id is penalised once (values are gathered before scattering).
    const seen = new Set(ids);
    for (const id of seen) {
      const s = scores[id];
      scores[id] = s < 0 ? f(s * this.penalty) : f(s / this.penalty);
    }
  }
}

/**
 * HF MinNewTokensLengthLogitsProcessor: while fewer than `minNewTokens` tokens have been generated,
 * the eos tokens cannot be picked. `promptLength` = how many of the ids are the prompt.
 */
export class MinNewTokensLogitsProcessor implements LogitsProcessor {
  readonly name = 'min_new_tokens';
  constructor(readonly promptLength: number, readonly minNewTokens: number, readonly eosTokenIds: number[]) {
    if (!Number.isInteger(minNewTokens) || minNewTokens < 0) throw new Error(`min_new_tokens has to be a non-negative integer, got ${minNewTokens}`);
  }
  apply(ids: readonly number[], scores: Float32Array): void {
    if (ids.length - this.promptLength < this.minNewTokens) for (const e of this.eosTokenIds) if (e < scores.length) scores[e] = -Infinity;
  }
}

/** HF TemperatureLogitsWarper: scores / temperature. */
export class TemperatureLogitsWarper implements LogitsProcessor {
  readonly name = 'temperature';
  constructor(readonly temperature: number) {
    if (!(typeof temperature === 'number' && temperature > 0 && Number.isFinite(temperature))) {
      throw new Error(`temperature has to be a strictly positive number, got ${temperature}` +
        (temperature === 0 ? ' (for greedy decoding turn sampling off instead)' : ''));
    }
  }
  apply(_ids: readonly number[], scores: Float32Array): void {
    for (let i = 0; i < scores.length; i++) scores[i] = f(scores[i] / this.temperature);
  }
}

/** HF TopKLogitsWarper: keeps scores >= the k-th largest (ties kept), others → −inf. */
export class TopKLogitsWarper implements LogitsProcessor {
  readonly name = 'top_k';
  readonly topK: number;
  constructor(topK: number, minTokensToKeep = 1) {
    if (!Number.isInteger(topK) || topK <= 0) throw new Error(`top_k has to be a strictly positive integer, got ${topK}`);
    this.topK = Math.max(topK, minTokensToKeep);
  }
  apply(_ids: readonly number[], scores: Float32Array): void {
    const k = Math.min(this.topK, scores.length);
    const kth = kthLargest(scores, k);
    for (let i = 0; i < scores.length; i++) if (scores[i] < kth) scores[i] = -Infinity;
  }
}

/**
 * HF TopPLogitsWarper: sort ascending, cumulative softmax; drop tokens whose cumulative probability
 * is <= 1 − top_p, always keeping the `minTokensToKeep` most likely.
 */
export class TopPLogitsWarper implements LogitsProcessor {
  readonly name = 'top_p';
  constructor(readonly topP: number, readonly minTokensToKeep = 1) {
    if (!(typeof topP === 'number' && topP >= 0 && topP <= 1)) throw new Error(`top_p has to be a number in [0, 1], got ${topP}`);
    if (!Number.isInteger(minTokensToKeep) || minTokensToKeep < 1) throw new Error(`min_tokens_to_keep has to be a positive integer, got ${minTokensToKeep}`);
  }
  apply(_ids: readonly number[], scores: Float32Array): void {
    const n = scores.length;
    const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => scores[a] - scores[b] || a - b); // ascending
    const probs = softmax(Float32Array.from(order, (i) => scores[i]));
    let cum = 0;
    const limit = f(1 - this.topP);
    for (let r = 0; r < n - this.minTokensToKeep; r++) {
      cum = f(cum + probs[r]);
      if (cum <= limit) scores[order[r]] = -Infinity;
    }
  }
}

/** Runs processors in order (HF LogitsProcessorList). */
export class LogitsProcessorList implements LogitsProcessor {
  readonly name = 'list';
  constructor(readonly processors: LogitsProcessor[] = []) {}
  push(p: LogitsProcessor): this {
    this.processors.push(p);
    return this;
  }
  apply(ids: readonly number[], scores: Float32Array): void {
    for (const p of this.processors) p.apply(ids, scores);
  }
  get length(): number {
    return this.processors.length;
  }
}

// ---------------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------------

/** float32 softmax of a row (max-subtracted; the sum accumulated in double). */
export function softmax(x: Float32Array): Float32Array {
  let m = -Infinity;
  for (let i = 0; i < x.length; i++) if (x[i] > m) m = x[i];
  const out = new Float32Array(x.length);
  if (m === -Infinity) return out.fill(NaN);
  let s = 0;
  for (let i = 0; i < x.length; i++) {
    const e = Math.exp(x[i] - m);
    out[i] = e;
    s += e;
  }
  for (let i = 0; i < x.length; i++) out[i] = f(out[i] / s);
  return out;
}

/** float32 log-softmax of a row, in place into a new array. */
export function logSoftmax(x: Float32Array): Float32Array {
  let m = -Infinity;
  for (let i = 0; i < x.length; i++) if (x[i] > m) m = x[i];
  let s = 0;
  for (let i = 0; i < x.length; i++) s += Math.exp(x[i] - m);
  const lse = f(Math.log(s));
  const out = new Float32Array(x.length);
  for (let i = 0; i < x.length; i++) out[i] = f(f(x[i] - m) - lse);
  return out;
}

/** The k-th largest value (1-based k). */
export function kthLargest(x: Float32Array, k: number): number {
  if (k >= x.length) {
    let m = Infinity;
    for (let i = 0; i < x.length; i++) if (x[i] < m) m = x[i];
    return m;
  }
  // Keep a small sorted buffer of the top k (k is small in practice: beams, top_k ≤ a few hundred).
  return topK(x, k).values[k - 1];
}

/**
 * Indices and values of the k largest entries, sorted descending; ties broken by lower index first
 * (as torch.topk on CPU returns them in practice for sorted=True).
 */
export function topK(x: Float32Array, k: number): { indices: number[]; values: number[] } {
  const n = x.length;
  k = Math.min(k, n);
  const idx: number[] = [];
  const val: number[] = [];
  for (let i = 0; i < n; i++) {
    const v = x[i];
    if (idx.length === k && !(v > val[k - 1])) continue;
    // insertion position: after equal values (stable: lower index first)
    let lo = 0, hi = idx.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (val[mid] >= v) lo = mid + 1;
      else hi = mid;
    }
    idx.splice(lo, 0, i);
    val.splice(lo, 0, v);
    if (idx.length > k) {
      idx.pop();
      val.pop();
    }
  }
  return { indices: idx, values: val };
}
