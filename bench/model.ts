/**
 * Whole-model benchmark (`vlm bench --model DIR [--quantize Q]`): the LLM's prefill of 512 random
 * tokens, 64 decode steps with 1024 tokens cached, and the vision path of one 448×448 image (one
 * slice for MiniCPM-V; VideoLLaMA 2 repeats the tower's features to `num_frames` frames), plus, for a
 * family that samples every video to T frames (VideoLLaMA 2), a video of T distinct 448×448 frames
 * (`vision16x448`), with the process's peak RSS. Model-agnostic: it uses only the chat contract (models/contract.ts).
 */
import * as tf from '@tensorflow/tfjs';
import { KVCache } from '../layers/kv_cache';
import { asGenerationModel } from '../generation';
import type { ChatModel, ContentPart } from '../models/chat';
import type { VisionLanguageModel } from '../models/contract';
import type { RgbImage } from '../media/types';

export interface ModelBenchCase {
  name: 'prefill512' | 'decode64@1024' | string;
  ms: number;
  tokens_per_s: number | null;
  runs: number[];
}

export interface ModelBenchOptions {
  repeats?: number;
  prefill?: number;
  context?: number;
  decode?: number;
  /** Skip the vision case. */
  noVision?: boolean;
  log?: (msg: string) => void;
}

/** The middle value (the upper one of an even count). */
export const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

export { peakRssMb } from '../layers/memory';

function randomIds(n: number, vocab: number, seed: number): number[] {
  let x = seed >>> 0 || 1;
  return Array.from({ length: n }, () => {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    return 100 + (x % Math.max(1, vocab - 300));
  });
}

/**
 * `model.embed` (vision tower, connector, splice) of one user turn with `media`, timed `repeats`
 * times after a warm-up; preparing the media (decode, resize) is not timed.
 */
async function timeEmbed(model: VisionLanguageModel, media: ContentPart[], prepOpts: object, repeats: number,
  log: (run: number, msg: string) => void): Promise<number[]> {
  const messages = [{ role: 'user' as const, content: [...media, { type: 'text' as const, text: 'x' }] }];
  const runs: number[] = [];
  for (let r = 0; r <= repeats; r++) {
    const prep = await model.prepare(messages, prepOpts as never);
    try {
      const t0 = performance.now();
      const e = model.embed(prep);
      await e.inputsEmbeds.data();
      const ms = performance.now() - t0;
      e.inputsEmbeds.dispose();
      if (r > 0) runs.push(ms);
      log(r, `${ms.toFixed(0)} ms${r === 0 ? ' (warm-up)' : ''}`);
    } finally {
      prep.dispose();
    }
  }
  return runs;
}

/** Prefills `ids` into `cache`; returns the last logits (caller disposes). */
function prefillIds(model: VisionLanguageModel, ids: number[], cache: KVCache): tf.Tensor3D {
  const g = asGenerationModel(model.llm);
  const t = tf.tensor2d([ids], [1, ids.length], 'int32');
  const e = g.embed(t);
  t.dispose();
  const logits = g.forwardLast(e, cache);
  e.dispose();
  return logits;
}

/** Decode rounds of `decode` greedy steps from `context` − 1 cached positions, on one kept KV cache. */
export interface DecodeRunner {
  /** Crops the cache back to context − 1 positions (untimed), then times `decode` steps from a token drawn with `seed`; ms. */
  run(seed: number): Promise<number>;
  dispose(): void;
}

/** Prefills context − 1 random tokens once; each `run` is then one timed decode round (what `decode64@1024` medians). */
export function decodeRunner(chat: ChatModel, opts: { context?: number; decode?: number } = {}): DecodeRunner {
  const model = chat as unknown as VisionLanguageModel;
  const g = asGenerationModel(model.llm);
  const C = opts.context ?? 1024, D = opts.decode ?? 64;
  const cache = new KVCache(g.numLayers);
  try {
    prefillIds(model, randomIds(C - 1, g.vocabSize, 7), cache).dispose();
  } catch (e) {
    cache.dispose();
    throw e;
  }
  return {
    async run(seed: number): Promise<number> {
      cache.crop(C - 1);
      let token = randomIds(1, g.vocabSize, seed)[0];
      const t0 = performance.now();
      for (let i = 0; i < D; i++) {
        const ids = tf.tensor2d([[token]], [1, 1], 'int32');
        const e = g.embed(ids);
        ids.dispose();
        const logits = g.forwardLast(e, cache);
        e.dispose();
        const am = tf.tidy(() => tf.argMax(logits.reshape([-1])));
        token = (await am.data())[0];
        am.dispose();
        logits.dispose();
      }
      return performance.now() - t0;
    },
    dispose: () => cache.dispose(),
  };
}

export async function benchModel(chat: ChatModel, opts: ModelBenchOptions = {}): Promise<ModelBenchCase[]> {
  const model = chat as unknown as VisionLanguageModel;
  const g = asGenerationModel(model.llm);
  const repeats = opts.repeats ?? 3, P = opts.prefill ?? 512, C = opts.context ?? 1024, D = opts.decode ?? 64;
  const log = opts.log ?? (() => undefined);
  const cases: ModelBenchCase[] = [];
  let tensors0 = -1; // counted after the warm-up (modules build their rotary/position tables on first use)

  // prefill: P tokens into an empty cache, logits of the last one (as before the first generated token)
  const pre: number[] = [];
  for (let r = 0; r <= repeats; r++) {
    const cache = new KVCache(g.numLayers);
    const ids = randomIds(P, g.vocabSize, 1000 + r);
    const t0 = performance.now();
    const logits = prefillIds(model, ids, cache);
    await logits.data();
    const ms = performance.now() - t0;
    logits.dispose();
    cache.dispose();
    if (r > 0) pre.push(ms); // run 0 warms up (page-in of mapped weights)
    else tensors0 = tf.memory().numTensors;
    log(`prefill${P} run ${r}: ${ms.toFixed(0)} ms${r === 0 ? ' (warm-up)' : ''}`);
  }
  cases.push({ name: `prefill${P}`, ms: median(pre), tokens_per_s: (P * 1000) / median(pre), runs: pre });

  // decode: C−1 cached positions, then D single-token greedy steps (argmax fed back)
  const dec: number[] = [];
  {
    const runner = decodeRunner(chat, { context: C, decode: D });
    try {
      for (let r = 0; r < repeats; r++) {
        const ms = await runner.run(99 + r);
        dec.push(ms);
        log(`decode${D}@${C} run ${r}: ${ms.toFixed(0)} ms (${((D * 1000) / ms).toFixed(2)} tok/s)`);
      }
    } finally {
      runner.dispose();
    }
  }
  cases.push({ name: `decode${D}@${C}`, ms: median(dec), tokens_per_s: (D * 1000) / median(dec), runs: dec });

  if (!opts.noVision) {
    const image = (seed: number) => ({ width: 448, height: 448, data: new Uint8Array(448 * 448 * 3).map((_, i) => ((i + 7919 * seed) * 2654435761) >>> 24) }) as RgbImage;
    const vis = await timeEmbed(model, [{ type: 'image', image: image(0) }], { maxSliceNums: 1 }, repeats, (r, ms) => log(`vision run ${r}: ${ms}`));
    cases.push({ name: 'vision448', ms: median(vis), tokens_per_s: null, runs: vis });
    // a family that samples every video to T frames (VideoLLaMA 2): T distinct 448×448 frames, each
    // through the tower (an image runs the tower once and repeats its features)
    const T = model.videoFrames;
    if (T) {
      const video = Array.from({ length: T }, (_, f) => image(f));
      const vid = await timeEmbed(model, [{ type: 'video', video }], {}, repeats, (r, ms) => log(`vision ${T} frames run ${r}: ${ms}`));
      cases.push({ name: `vision${T}x448`, ms: median(vid), tokens_per_s: null, runs: vid });
    }
  }
  const leaked = tf.memory().numTensors - tensors0;
  if (leaked !== 0) log(`warning: ${leaked} tensors left after the benchmark`);
  return cases;
}
