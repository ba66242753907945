/**
 * Seeded sampling. The RNG is explicit (xoshiro128**, seeded through splitmix32), so the same
 * seed gives the same tokens on every backend and run. It does not reproduce torch.multinomial's
 * stream — no JS port can — only its distribution.
 */
import { softmax } from './logits_process';

export class Rng {
  private s: Uint32Array;
  constructor(seed: number) {
    checkSeed(seed);
    // splitmix32 to spread the seed over the 128-bit state: the low 32 bits as before; the high
    // 21 bits (seeds up to 2^53 - 1) are mixed in so distinct seeds give distinct streams
    let x = seed >>> 0;
    const next = () => {
      x = (x + 0x9e3779b9) >>> 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.s = new Uint32Array([next(), next(), next(), next()]);
    const hi = Math.floor(seed / 4294967296);
    if (hi) {
      const m = mixHigh(hi);
      for (let i = 0; i < 4; i++) this.s[i] ^= m[i];
      if (!(this.s[0] | this.s[1] | this.s[2] | this.s[3])) this.s[0] = 1;
    }
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

/** Largest accepted seed: 2^53 - 1 (every integer up to it is exact in a JS number). */
export const MAX_SEED = Number.MAX_SAFE_INTEGER;

/** Seeds are integers in [0, 2^53 - 1]; anything else is an error (never wrapped or defaulted). */
export function checkSeed(seed: unknown): asserts seed is number {
  if (typeof seed !== 'number' || !Number.isSafeInteger(seed) || seed < 0) {
    throw new Error(`seed must be an integer in [0, ${MAX_SEED}] (2^53 - 1), got ${JSON.stringify(seed) ?? String(seed)}`);
  }
}

/** Four words derived from the high part of a seed (a second splitmix32 stream). */
export function mixHigh(hi: number): Uint32Array {
  let x = (hi ^ 0x6a09e667) >>> 0;
  const out = new Uint32Array(4);
  for (let i = 0; i < 4; i++) {
    x = (x + 0x9e3779b9) >>> 0;
    let z = x;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    out[i] = (z ^ (z >>> 16)) >>> 0;
  }
  return out;
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
