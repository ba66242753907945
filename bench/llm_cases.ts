/**
 * LLM benchmark cases at the real 7B dimensions (random weights made in place):
 *   <family>.layer.prefill512   one decoder layer, 512 new tokens, empty cache
 *   <family>.layer.decode@1024  one decoder layer, 1 new token after 1024 cached
 *   <family>.lm_head.decode     the LM head for one token (row-chunked like the model's)
 * Qwen2-7B: hidden 3584, 28/4 heads, intermediate 18944, vocab 151666 (MiniCPM-V 2.6's).
 * Mistral-7B: hidden 4096, 32/8 heads, intermediate 14336, vocab 32000.
 */
import * as tf from '@tensorflow/tfjs';
import { DecoderConfig, DecoderLayer } from '../layers/decoder';
import { causalMask } from '../layers/attention';
import { randomizeParams, noise } from '../layers/init';
import { KVCache } from '../layers/kv_cache';
import { Linear } from '../layers/linear';
import { RotaryEmbedding } from '../layers/rotary';
import { BenchCase, PreparedCase } from './runner';

export const QWEN2_7B: DecoderConfig = {
  vocabSize: 151666, hiddenSize: 3584, intermediateSize: 18944, numHiddenLayers: 28, numAttentionHeads: 28,
  numKeyValueHeads: 4, headDim: 128, hiddenAct: 'silu', maxPositionEmbeddings: 32768, rmsNormEps: 1e-6,
  ropeTheta: 1e6, tieWordEmbeddings: false, slidingWindow: 131072, qkvBias: true,
};

export const MISTRAL_7B: DecoderConfig = {
  vocabSize: 32000, hiddenSize: 4096, intermediateSize: 14336, numHiddenLayers: 32, numAttentionHeads: 32,
  numKeyValueHeads: 8, headDim: 128, hiddenAct: 'silu', maxPositionEmbeddings: 32768, rmsNormEps: 1e-5,
  ropeTheta: 1e6, tieWordEmbeddings: false, slidingWindow: null, qkvBias: false,
};

/** FLOPs of one layer for T new tokens attending to S positions (HF eager computes the full T×S scores). */
export function layerFlops(c: DecoderConfig, T: number, S: number): number {
  const E = c.hiddenSize, D = c.headDim, kv = c.numKeyValueHeads * D;
  const proj = 2 * E * E + 2 * E * kv + 3 * E * c.intermediateSize;
  const attn = 2 * 2 * c.numAttentionHeads * T * S * D;
  return 2 * T * proj + attn;
}

function layerCase(family: string, cfg: DecoderConfig, mode: 'prefill' | 'decode', T: number, past: number): BenchCase {
  return {
    name: mode === 'prefill' ? `${family}.layer.prefill${T}` : `${family}.layer.decode@${past}`,
    description: `one ${family} decoder layer (hidden ${cfg.hiddenSize}, ${cfg.numAttentionHeads}/${cfg.numKeyValueHeads} heads, ` +
      `intermediate ${cfg.intermediateSize}): ${T} new token(s) after ${past} cached`,
    prepare(): PreparedCase {
      const layer = new DecoderLayer(cfg);
      randomizeParams(layer);
      const rotary = new RotaryEmbedding(cfg.headDim, cfg.ropeTheta);
      const x = tf.tensor3d(noise(T * cfg.hiddenSize, 1, 7), [1, T, cfg.hiddenSize]);
      // past K/V made once. A decode run works as a generation step does: the cache keeps its
      // buffers (with spare capacity after the first run) and each run crops it back to `past`
      // positions, so no run copies the cache (PyTorch's side concatenates, as HF's cache does).
      let decodeCache: KVCache | null = null;
      if (past > 0) {
        const shape: [number, number, number, number] = [1, cfg.numKeyValueHeads, past, cfg.headDim];
        const n = shape.reduce((a, b) => a * b, 1);
        decodeCache = new KVCache(1);
        decodeCache.layers[0].set(tf.keep(tf.tensor4d(noise(n, 1, 3), shape)), tf.keep(tf.tensor4d(noise(n, 1, 4), shape)));
      }
      return {
        flops: layerFlops(cfg, T, past + T),
        run: () => {
          const cache = decodeCache ?? new KVCache(1);
          decodeCache?.crop(past);
          const out = tf.tidy(() => {
            const [cos, sin] = rotary.cosSinRange(past, T);
            const mask = causalMask({ pastLength: past, T, slidingWindow: cfg.slidingWindow });
            return layer.forward(x, cos, sin, mask, cache, 0);
          });
          if (!decodeCache) cache.dispose();
          return out;
        },
        dispose: () => {
          layer.dispose();
          rotary.dispose();
          decodeCache?.dispose();
          x.dispose();
        },
      };
    },
  };
}

function headCase(family: string, cfg: DecoderConfig): BenchCase {
  return {
    name: `${family}.lm_head.decode`,
    description: `${family} LM head for one token: ${cfg.hiddenSize} → ${cfg.vocabSize} ` +
      `(${((cfg.hiddenSize * cfg.vocabSize * 4) / 1e9).toFixed(2)} GB float32, row-chunked as in the model)`,
    prepare(): PreparedCase {
      const head = new Linear(cfg.hiddenSize, cfg.vocabSize, { chunked: true });
      randomizeParams(head);
      const x = tf.tensor3d(noise(cfg.hiddenSize, 1, 9), [1, 1, cfg.hiddenSize]);
      return {
        flops: 2 * cfg.hiddenSize * cfg.vocabSize,
        notes: `${head.weight.chunks.length} weight chunk(s)`,
        run: () => head.forward(x),
        dispose: () => {
          head.dispose();
          x.dispose();
        },
      };
    },
  };
}

export const LLM_CASES: BenchCase[] = [
  layerCase('qwen2', QWEN2_7B, 'prefill', 512, 0),
  layerCase('qwen2', QWEN2_7B, 'decode', 1, 1024),
  headCase('qwen2', QWEN2_7B),
  layerCase('mistral', MISTRAL_7B, 'prefill', 512, 0),
  layerCase('mistral', MISTRAL_7B, 'decode', 1, 1024),
  headCase('mistral', MISTRAL_7B),
];
