/**
 * VideoLLaMA2 benchmark cases at the real dimensions, with random weights made in place:
 *   clip.layer.577x16   one CLIP ViT-L/14-336 encoder layer (hidden 1024, 16 heads, intermediate
 *                       4096, quick_gelu) on 16 frames × 577 tokens (576 patches + CLS)
 *   stc.16x24x24        the STC connector of VideoLLaMA2-7B-16F (`stc_connector`, mm_hidden_size
 *                       1024 → hidden 4096) on 16 frames × 24×24 patches
 * The builders are exported so other code (scripts, tests) can make the same modules:
 * `buildClipLayer`, `buildStcConnector`, then `randomizeParams` (layers/init.ts) or `Param.set`.
 */
import * as tf from '@tensorflow/tfjs';
import { noise, randomizeParams } from '../../layers/init';
import { VisionEncoderLayer } from '../../layers/vit';
import { BenchCase, PreparedCase } from '../../bench/runner';
import { VisionTowerConfig } from '../clip/config';
import { visionLayerConfig } from '../clip/modeling';
import { STCConnector, buildConnector } from './connector';

/** openai/clip-vit-large-patch14-336 vision_config (VideoLLaMA2-7B(-16F)'s tower). */
export const CLIP_VIT_L_336: VisionTowerConfig = {
  family: 'clip', hiddenSize: 1024, intermediateSize: 4096, numHiddenLayers: 24, numAttentionHeads: 16,
  numChannels: 3, imageSize: 336, patchSize: 14, hiddenAct: 'quick_gelu', layerNormEps: 1e-5,
};

/** VideoLLaMA2-7B-16F connector dims: `stc_connector`, mm_hidden_size 1024, hidden_size 4096, 16 frames of 24×24. */
export const VIDEOLLAMA2_7B_STC = { type: 'stc_connector', mmHiddenSize: 1024, hiddenSize: 4096, frames: 16, grid: 24 } as const;

/** One ViT encoder layer of a tower config (random weights when `randomize`). */
export function buildClipLayer(cfg: VisionTowerConfig = CLIP_VIT_L_336, randomize = true): VisionEncoderLayer {
  const layer = new VisionEncoderLayer(visionLayerConfig(cfg));
  if (randomize) randomizeParams(layer);
  return layer;
}

/** The STC connector (`stc_connector` / `stc_connector_v35` / …) with random weights when `randomize`. */
export function buildStcConnector(type = 'stc_connector', mmHiddenSize = 1024, hiddenSize = 4096, randomize = true): STCConnector {
  const c = buildConnector(type, mmHiddenSize, hiddenSize);
  if (!(c instanceof STCConnector)) throw new Error(`buildStcConnector: '${type}' is not an STC-family connector`);
  if (randomize) randomizeParams(c);
  return c;
}

/** FLOPs of one ViT layer on B images of N tokens (eager attention over all N×N scores). */
export function vitLayerFlops(cfg: VisionTowerConfig, B: number, N: number): number {
  const E = cfg.hiddenSize, I = cfg.intermediateSize;
  return 2 * B * N * (4 * E * E + 2 * E * I) + 2 * 2 * B * N * N * E;
}

/** FLOPs of an STC connector (`stc_connector`, padding 1) on T frames of g×g: convs, SE and readout matmuls. */
export function stcFlops(D: number, H: number, T: number, g: number, padding = 1): number {
  const block = (cin: number, cout: number, P: number) => {
    const se = Math.round(cin * 0.25);
    return 2 * P * (cin * cout + 9 * cout + cout * cout + (cin !== cout ? cin * cout : 0)) + 2 * 2 * cout * se;
  };
  const stage = (cin: number, P: number) => block(cin, H, P) + 3 * block(H, H, P);
  const P1 = T * g * g;
  const To = Math.floor((T + 2 * padding - 2) / 2) + 1, go = Math.floor((g + 2 * padding - 2) / 2) + 1;
  const P2 = To * go * go;
  return stage(D, P1) + 2 * P2 * 8 * H * H + stage(H, P2) + 2 * P2 * 2 * H * H;
}

function clipLayerCase(): BenchCase {
  const cfg = CLIP_VIT_L_336, B = 16, N = 577;
  return {
    name: 'clip.layer.577x16',
    description: `one CLIP ViT-L/14-336 encoder layer (hidden ${cfg.hiddenSize}, ${cfg.numAttentionHeads} heads, intermediate ${cfg.intermediateSize}) on ${B} frames × ${N} tokens`,
    prepare(): PreparedCase {
      const layer = buildClipLayer(cfg);
      const x = tf.tensor3d(noise(B * N * cfg.hiddenSize, 1, 7), [B, N, cfg.hiddenSize]);
      return {
        flops: vitLayerFlops(cfg, B, N),
        run: () => layer.forward(x),
        dispose: () => {
          layer.dispose();
          x.dispose();
        },
      };
    },
  };
}

function stcCase(): BenchCase {
  const s = VIDEOLLAMA2_7B_STC;
  return {
    name: `stc.${s.frames}x${s.grid}x${s.grid}`,
    description: `VideoLLaMA2-7B-16F STC connector (${s.type}, ${s.mmHiddenSize} → ${s.hiddenSize}) on ${s.frames} frames × ${s.grid}×${s.grid} patches`,
    prepare(): PreparedCase {
      const conn = buildStcConnector(s.type, s.mmHiddenSize, s.hiddenSize);
      const x = tf.tensor4d(noise(s.frames * s.grid * s.grid * s.mmHiddenSize, 1, 9), [1, s.frames, s.grid * s.grid, s.mmHiddenSize]);
      return {
        flops: stcFlops(s.mmHiddenSize, s.hiddenSize, s.frames, s.grid),
        notes: `${(conn.numParams() / 1e6).toFixed(0)}M params`,
        run: () => conn.forward(x),
        dispose: () => {
          conn.dispose();
          x.dispose();
        },
      };
    },
  };
}

export const VIDEOLLAMA2_CASES: BenchCase[] = [clipLayerCase(), stcCase()];
