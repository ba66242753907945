/**
 * MiniCPM-V 2.6 vision benchmark cases at the real dimensions, with random weights (nothing is
 * downloaded):
 *   siglip.layer.1024  one SigLIP-400M encoder layer (hidden 1152, 16 heads, intermediate 4304,
 *                      gelu_pytorch_tanh) over 1024 patches (a 448×448 slice), no padding mask
 *   resampler.1024     the resampler (64 queries, embed 3584, 28 heads, kv_dim 1152) over one
 *                      32×32-patch image
 * The builders take a config and a parameter filler (default `randomizeParams`: norms 1, biases 0,
 * matrices uniform noise), so other sizes or fills can be benchmarked the same way.
 */
import { minicpmvPreprocessBench } from './processing';
import * as tf from '@tensorflow/tfjs';
import { noise, randomizeParams } from '../../layers/init';
import { Module } from '../../layers/module';
import { Resampler, ResamplerConfig } from '../../layers/resampler';
import { VisionEncoderLayer } from '../../layers/vit';
import { BenchCase, PreparedCase } from '../../bench/runner';
import { SiglipVisionConfig } from './config';
import { siglipLayerConfig } from './vision';

/** Fills every parameter of a freshly built module (e.g. `randomizeParams`, or a loader). */
export type ParamFiller = (m: Module) => void;

const RANDOM: ParamFiller = (m) => randomizeParams(m, 0.02, 1);

/** MiniCPM-V 2.6's vision_config with SiglipVisionConfig defaults filled (real config.json). */
export const SIGLIP_400M_NAVIT: SiglipVisionConfig = {
  hidden_size: 1152, intermediate_size: 4304, num_hidden_layers: 27, num_attention_heads: 16, num_channels: 3,
  image_size: 980, patch_size: 14, hidden_act: 'gelu_pytorch_tanh', layer_norm_eps: 1e-6, attention_dropout: 0,
};

/** MiniCPM-V 2.6's resampler: query_num 64, embed = LLM hidden 3584, 3584 // 128 heads, kv_dim 1152. */
export const MINICPMV26_RESAMPLER: ResamplerConfig = { numQueries: 64, embedDim: 3584, numHeads: 28, kvDim: 1152, normEps: 1e-6 };

/** One SigLIP encoder layer with filled parameters. */
export function buildSiglipLayer(cfg: SiglipVisionConfig = SIGLIP_400M_NAVIT, fill: ParamFiller = RANDOM): VisionEncoderLayer {
  const layer = new VisionEncoderLayer(siglipLayerConfig(cfg));
  fill(layer);
  return layer;
}

/** A resampler with filled parameters. */
export function buildResampler(cfg: ResamplerConfig = MINICPMV26_RESAMPLER, fill: ParamFiller = RANDOM): Resampler {
  const r = new Resampler(cfg);
  fill(r);
  return r;
}

/** FLOPs of one SigLIP layer over N tokens (eager attention computes the full N×N scores). */
export function siglipLayerFlops(cfg: SiglipVisionConfig, N: number): number {
  const E = cfg.hidden_size, I = cfg.intermediate_size;
  return 2 * N * (4 * E * E + 2 * E * I) + 4 * N * N * E;
}

/** FLOPs of the resampler for B images of L keys. */
export function resamplerFlops(cfg: ResamplerConfig, B: number, L: number): number {
  const D = cfg.embedDim, K = cfg.kvDim ?? D, Q = cfg.numQueries;
  const kv = K !== D ? 2 * B * L * K * D : 0; // kv_proj
  // k and v in-projections + q in-projection (once, shared) + q·kᵀ and ·v + out_proj and proj
  return kv + 4 * B * L * D * D + 2 * Q * D * D + 4 * B * Q * L * D + 4 * B * Q * D * D;
}

export function siglipLayerCase(cfg: SiglipVisionConfig = SIGLIP_400M_NAVIT, patches = 1024, fill: ParamFiller = RANDOM): BenchCase {
  return {
    name: `siglip.layer.${patches}`,
    description: `one SigLIP-NaViT encoder layer (hidden ${cfg.hidden_size}, ${cfg.num_attention_heads} heads, intermediate ` +
      `${cfg.intermediate_size}) over ${patches} patches, no padding`,
    prepare(): PreparedCase {
      const layer = buildSiglipLayer(cfg, fill);
      const x = tf.tensor3d(noise(patches * cfg.hidden_size, 1, 7), [1, patches, cfg.hidden_size]);
      return {
        flops: siglipLayerFlops(cfg, patches),
        run: () => layer.forward(x, null),
        dispose: () => {
          layer.dispose();
          x.dispose();
        },
      };
    },
  };
}

export function resamplerCase(cfg: ResamplerConfig = MINICPMV26_RESAMPLER, keys = 1024, fill: ParamFiller = RANDOM): BenchCase {
  const side = Math.round(Math.sqrt(keys));
  const grid: [number, number] = side * side === keys ? [side, side] : [1, keys];
  const K = cfg.kvDim ?? cfg.embedDim;
  return {
    name: `resampler.${keys}`,
    description: `resampler (${cfg.numQueries} queries, embed ${cfg.embedDim}, ${cfg.numHeads} heads, kv_dim ${K}) over one ` +
      `${grid[0]}×${grid[1]}-patch image`,
    prepare(): PreparedCase {
      const r = buildResampler(cfg, fill);
      const x = tf.tensor3d(noise(keys * K, 1, 11), [1, keys, K]);
      return {
        flops: resamplerFlops(cfg, 1, keys),
        run: () => r.forward(x, [grid]),
        dispose: () => {
          r.dispose();
          x.dispose();
        },
      };
    },
  };
}

/** Host-side preprocessing (no tensors). */
function preprocessCase(): BenchCase {
  return {
    name: 'minicpmv.preprocess.1344',
    description: 'MiniCPM-V 2.6 image processor on a 1344×1344 RGB image (real 448/9 config): grid, Pillow bicubic resizes, slices, normalised patch strips',
    prepare() {
      const b = minicpmvPreprocessBench(1344);
      return { run: () => void b.run(), dispose: () => undefined, memory: 'process' as const, notes: 'peak = process max RSS' };
    },
  };
}

/** The tensor cases of this family. */
export const MINICPMV_BENCH_CASES: BenchCase[] = [siglipLayerCase(), resamplerCase()];

/** Host-side cases (no tensors). The family table's `benchCases` lists both. */
export const MINICPMV_PREPROCESS_CASES: BenchCase[] = [preprocessCase()];
