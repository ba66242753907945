import {
  LogitsProcessorList, RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper, logSoftmax, topK,
} from '../../generation/logits_process';
import { resolveGenerationConfig } from '../../generation/config';
import { Rng, sampleFromScores } from '../../generation/sampling';
import { TextIteratorStreamer, TextStreamer } from '../../generation/streamers';
import { BeamHypotheses } from '../../generation/beam';

const S = () => new Float32Array([2.0, -1.0, 0.5, 3.0, -2.0]);

describe('logits processors (HF v4.40 semantics)', () => {
  it('repetition penalty divides positive and multiplies negative scores of seen ids, once per id', () => {
    // Reference (numpy): s=[2,-1,.5,3,-2]; for i in {0,1}: s[i] = s[i]*1.5 if s[i]<0 else s[i]/1.5
    const s = S();
    new RepetitionPenaltyLogitsProcessor(1.5).apply([0, 1, 1], s);
    expect(Array.from(s)).toEqual([1.3333333730697632, -1.5, 0.5, 3.0, -2.0]);
  });

  it('temperature divides in float32', () => {
    // Reference (numpy float32): s / np.float32(0.7)
    const s = S();
    new TemperatureLogitsWarper(0.7).apply([], s);
    expect(Array.from(s)).toEqual([2.857142925262451, -1.4285714626312256, 0.7142857313156128, 4.285714149475098, -2.857142925262451]);
  });

  it('top-k keeps the k largest (ties included)', () => {
    const s = new Float32Array([1, 3, 3, 0, 2]);
    new TopKLogitsWarper(2).apply([], s);
    expect(Array.from(s)).toEqual([-Infinity, 3, 3, -Infinity, -Infinity]);
    const t = new Float32Array([1, 2]);
    new TopKLogitsWarper(5).apply([], t); // k larger than the vocabulary keeps everything
    expect(Array.from(t)).toEqual([1, 2]);
  });

  it('top-p removes the tail whose cumulative probability is <= 1 - top_p', () => {
    // Reference (numpy): sorted ascending cumsum of softmax = [.0046, .0170, .0726, .3220, 1.0];
    // remove cum <= 0.2 → the three smallest.
    const s = S();
    new TopPLogitsWarper(0.8).apply([], s);
    expect(Array.from(s)).toEqual([2.0, -Infinity, -Infinity, 3.0, -Infinity]);
    const u = S();
    new TopPLogitsWarper(0.0, 2).apply([], u); // min_tokens_to_keep keeps the 2 best
    expect(Array.from(u).filter((x) => x > -Infinity)).toEqual([2.0, 3.0]);
  });

  it('constructors validate and name their argument', () => {
    expect(() => new RepetitionPenaltyLogitsProcessor(0)).toThrow(/repetition_penalty/);
    expect(() => new TemperatureLogitsWarper(0)).toThrow(/temperature.*greedy/);
    expect(() => new TopKLogitsWarper(0)).toThrow(/top_k/);
    expect(() => new TopPLogitsWarper(1.5)).toThrow(/top_p/);
  });

  it('list runs processors in order', () => {
    const s = S();
    new LogitsProcessorList([new TemperatureLogitsWarper(2), new TopKLogitsWarper(1)]).apply([], s);
    expect(Array.from(s)).toEqual([-Infinity, -Infinity, -Infinity, 1.5, -Infinity]);
  });

  it('logSoftmax and topK', () => {
    const l = logSoftmax(new Float32Array([0, Math.log(3)]));
    expect(l[0]).toBeCloseTo(Math.log(0.25), 6);
    expect(l[1]).toBeCloseTo(Math.log(0.75), 6);
    expect(topK(new Float32Array([1, 5, 5, 2]), 3)).toEqual({ indices: [1, 2, 3], values: [5, 5, 2] });
  });
});

describe('generation config', () => {
  it('rejects bad values naming the option', () => {
    expect(() => resolveGenerationConfig({ maxNewTokens: 0 })).toThrow(/max_new_tokens/);
    expect(() => resolveGenerationConfig({ maxNewTokens: -3 })).toThrow(/max_new_tokens/);
    expect(() => resolveGenerationConfig({ numBeams: 0 })).toThrow(/num_beams/);
    expect(() => resolveGenerationConfig({ topP: 0 })).toThrow(/top_p/);
    expect(() => resolveGenerationConfig({ temperature: -1 })).toThrow(/temperature/);
    expect(() => resolveGenerationConfig({ doSample: true, numBeams: 2 })).toThrow(/beam sampling/);
  });
  it('fills HF defaults', () => {
    const c = resolveGenerationConfig({});
    expect(c).toMatchObject({ topK: 50, topP: 1, temperature: 1, numBeams: 1, repetitionPenalty: 1, doSample: false });
  });
});

describe('sampling', () => {
  it('same seed, same draws; never picks a -inf token', () => {
    const s = new Float32Array([0, 1, -Infinity, 2]);
    const a = new Rng(42), b = new Rng(42), c = new Rng(43);
    const da = Array.from({ length: 50 }, () => sampleFromScores(s, a));
    const db = Array.from({ length: 50 }, () => sampleFromScores(s, b));
    const dc = Array.from({ length: 50 }, () => sampleFromScores(s, c));
    expect(da).toEqual(db);
    expect(da).not.toEqual(dc);
    expect(da.includes(2)).toBe(false);
  });
  it('follows the distribution', () => {
    const s = new Float32Array([0, Math.log(3)]); // p = [0.25, 0.75]
    const r = new Rng(7);
    let ones = 0;
    for (let i = 0; i < 4000; i++) ones += sampleFromScores(s, r);
    expect(ones / 4000).toBeGreaterThan(0.72);
    expect(ones / 4000).toBeLessThan(0.78);
  });
});

describe('beam hypotheses (HF BeamHypotheses)', () => {
  it('keeps the num_beams best by sum_logprobs / len^length_penalty', () => {
    const h = new BeamHypotheses(2, 1.0, false, 10);
    h.add([1], -1, 1); // -1
    h.add([2, 2], -4, 2); // -2
    h.add([3, 3], -1, 2); // -0.5 → evicts -2
    expect(h.beams.map((b) => b.score).sort((a, b) => a - b)).toEqual([-1, -0.5]);
    expect(h.worstScore).toBe(-1);
    expect(h.isDone(-3, 3, 0)).toBe(true); // best attainable -1 <= worst -1
    expect(h.isDone(-1, 3, 0)).toBe(false);
  });
});

describe('text streamers', () => {
  // A decode over byte tokens: id = byte value.
  const decode = (ids: number[]) => Buffer.from(ids).toString('utf8');

  it('never splits a UTF-8 character', () => {
    const chunks: string[] = [];
    const st = new TextStreamer(decode, (t) => chunks.push(t));
    for (const b of Buffer.from('a€b😀')) st.put(b);
    st.end();
    expect(chunks.join('')).toBe('a€b😀');
    expect(chunks.every((c) => !c.includes('\uFFFD'))).toBe(true);
    expect(chunks).toEqual(['a', '€', 'b', '😀']);
  });

  it('async iterator yields the same text', async () => {
    const st = new TextIteratorStreamer(decode);
    setTimeout(() => {
      for (const b of Buffer.from('héllo')) st.put(b);
      st.end();
    }, 0);
    let out = '';
    for await (const c of st) out += c;
    expect(out).toBe('héllo');
  });
});
