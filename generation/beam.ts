/**
 * Beam search bookkeeping with HF v4.40 semantics (`generation/beam_search.py` BeamHypotheses /
 * BeamSearchScorer, batch size 1): finished hypotheses are scored sum_logprobs / len^length_penalty,
 * where len counts generated tokens (the prompt is inputs_embeds or counted out); a beam is done
 * per `early_stopping` (true / false = HF's heuristic / 'never').
 */

export interface Hypothesis {
  score: number;
  tokens: number[];
}

export class BeamHypotheses {
  readonly beams: Hypothesis[] = [];
  worstScore = 1e9;

  constructor(readonly numBeams: number, readonly lengthPenalty: number, readonly earlyStopping: boolean | 'never', readonly maxLength: number) {}

  get length(): number {
    return this.beams.length;
  }

  add(tokens: number[], sumLogprobs: number, generatedLen: number): void {
    const score = sumLogprobs / generatedLen ** this.lengthPenalty;
    if (this.beams.length < this.numBeams || score > this.worstScore) {
      this.beams.push({ score, tokens });
      if (this.beams.length > this.numBeams) {
        // drop the worst (first of the sorted order, stable by insertion like Python's sorted on (score, idx))
        const sorted = this.beams.map((b, i) => [b.score, i] as [number, number]).sort((a, b) => a[0] - b[0] || a[1] - b[1]);
        this.beams.splice(sorted[0][1], 1);
        this.worstScore = sorted[1][0];
      } else {
        this.worstScore = Math.min(score, this.worstScore);
      }
    }
  }

  isDone(bestSumLogprobs: number, curLen: number, promptLen: number): boolean {
    if (this.beams.length < this.numBeams) return false;
    if (this.earlyStopping === true) return true;
    if (this.earlyStopping === false) return this.worstScore >= bestSumLogprobs / (curLen - promptLen) ** this.lengthPenalty;
    // 'never'
    const denom = this.lengthPenalty > 0 ? this.maxLength - promptLen : curLen - promptLen;
    return this.worstScore >= bestSumLogprobs / denom ** this.lengthPenalty;
  }
}

export interface BeamStep {
  /** Scores, tokens, beam indices of the candidates, best first (HF topk of 2·num_beams or more). */
  scores: number[];
  tokens: number[];
  beamIndices: number[];
}

export class BeamSearchScorer {
  readonly hyps: BeamHypotheses;
  done = false;

  constructor(readonly numBeams: number, lengthPenalty: number, earlyStopping: boolean | 'never', readonly maxLength: number) {
    this.hyps = new BeamHypotheses(numBeams, lengthPenalty, earlyStopping, maxLength);
  }

  /**
   * One step. `seqs[b]` are the ids of running beam b (prompt ids + generated). Returns the next
   * running beams: their scores, the token each appends and the beam it continues.
   */
  process(seqs: number[][], step: BeamStep, eosIds: number[], promptLen: number, padTokenId: number | undefined): { scores: number[]; tokens: number[]; beamIndices: number[] } {
    const curLen = seqs[0].length + 1;
    if (this.done) {
      if (padTokenId === undefined) throw new Error('beam search: generated beams >= num_beams; pad_token_id has to be defined');
      return { scores: new Array(this.numBeams).fill(0), tokens: new Array(this.numBeams).fill(padTokenId), beamIndices: new Array(this.numBeams).fill(0) };
    }
    const out = { scores: [] as number[], tokens: [] as number[], beamIndices: [] as number[] };
    for (let rank = 0; rank < step.tokens.length; rank++) {
      const tok = step.tokens[rank], score = step.scores[rank], b = step.beamIndices[rank];
      if (eosIds.includes(tok)) {
        if (rank >= this.numBeams) continue; // eos outside the top num_beams is not a finished hypothesis
        this.hyps.add(seqs[b].slice(), score, curLen - promptLen);
      } else {
        out.scores.push(score);
        out.tokens.push(tok);
        out.beamIndices.push(b);
      }
      if (out.tokens.length === this.numBeams) break;
    }
    if (out.tokens.length < this.numBeams) {
      throw new Error(`beam search: at most ${this.numBeams} of the candidates can be eos tokens`);
    }
    this.done = this.done || this.hyps.isDone(Math.max(...step.scores), curLen, promptLen);
    return out;
  }

  /** Adds the running beams (unless done) and returns the best hypothesis. */
  finalize(seqs: number[][], scores: number[], promptLen: number): Hypothesis {
    if (!this.done) {
      for (let b = 0; b < this.numBeams; b++) this.hyps.add(seqs[b].slice(), scores[b], seqs[b].length - promptLen);
    }
    // HF: sorted(..., key=score).pop() → the highest score; among equal scores the last added.
    let best = this.hyps.beams[0];
    for (const h of this.hyps.beams) if (h.score >= best.score) best = h;
    return best;
  }
}
