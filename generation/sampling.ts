/**
 * Seeded sampling. The RNG is explicit (xoshiro128**, seeded through splitmix32), so the same
 * seed gives the same tokens on every backend and run. It does not reproduce torch.multinomial's
 * stream — no JS port can — only its distribution.
 */
import { softmax } from './logits_process';

export class Rng {
  private s: Uint32Array;
  constructor(seed: number) {
    if (!Number.isInteger(seed)) throw new Error(`seed has to be an integer, got ${seed}`);
    // splitmix32 to spread the seed over the 128-bit state
    let x = seed >>> 0;
    const next = () => {
      x = (x + 0x9e3779b9) >>> 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.s = new Uint32Array([next(), next(), next(), next()]);
  }

  /** Uniform 32-bit integer. */
  nextU32(): number {
    const s = this.s;
    const result = Math.imul(rotl(Math.imul(s[1], 5) >>> 0, 7), 9) >>> 0;
    const t = (s[1] << 9) >>> 0;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 11);
    return result;
  }

  /** Uniform in [0, 1) with 53 random bits. */
  random(): number {
    const hi = this.nextU32() >>> 5, lo = this.nextU32() >>> 6;
    return (hi * 67108864 + lo) / 9007199254740992;
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

/** Draws one index from softmax(scores) (−inf scores have probability 0). */
export function sampleFromScores(scores: Float32Array, rng: Rng): number {
  const probs = softmax(scores);
  let total = 0;
  for (let i = 0; i < probs.length; i++) total += probs[i];
  if (!(total > 0)) throw new Error('sampling: every token has probability 0 (all scores are -inf or NaN)');
  let u = rng.random() * total;
  let last = -1;
  for (let i = 0; i < probs.length; i++) {
    if (probs[i] <= 0) continue;
    last = i;
    u -= probs[i];
    if (u < 0) return i;
  }
  return last;
}
