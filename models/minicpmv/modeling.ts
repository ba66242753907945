/**
 * MiniCPM-V 2.6 (upstream `modeling_minicpmv.py` `MiniCPMV`, wusongbai139/AnyCaption
 * `MiniCPM-V-2_6/` = openbmb/MiniCPM-V-2_6 at 0d75254): a Qwen2 LLM (`llm.*`), the SigLIP-NaViT
 * vision tower (`vpm.*`, vision.ts) and the perceiver resampler (`resampler.*`,
 * layers/resampler.ts).
 *
 * `embed` is `get_vllm_embedding`:
 *   1. every image of every sample (source first, then slices row-major, as the processor emits
 *      them) is a [3, P, L·P] strip; they are zero-padded on the right to the longest and run
 *      through `vpm` in batches of `vision_batch_size` (16), with `patch_attention_mask` and
 *      NaViT position ids from `tgt_sizes`;
 *   2. the resampler turns each image into `query_num` vectors of the LLM width;
 *   3. `inputs_embeds = embed_tokens(input_ids)` (× scale_emb when the config has it) with the rows
 *      of each `image_bound` range [start, end) replaced by the matching image's vectors.
 * `forward` then runs the LLM on `inputs_embeds` (positions 0..S−1).
 *
 * Taps carry the golden names: `vpm.*`, `resampler.*`, `llm.*`.
 *
 * Shape letters: B samples, S tokens, N images (all samples), Q = query_num, D LLM hidden,
 * E vision hidden.
 */
import * as tf from '@tensorflow/tfjs';
import { CausalLMForwardOptions, Tap } from '../../layers/decoder';
import { Module, register } from '../../layers/module';
import { Resampler } from '../../layers/resampler';
import { Checkpoint } from '../../weights/checkpoint';
import { FamilyWeights, LoadReport, loadWeights } from '../../weights/load';
import { plannerFor } from '../../weights/native_plan';
import { backendWeightBudget } from '../../layers/memory';
import { Qwen2ForCausalLM } from '../qwen2/modeling';
import { MiniCPMVConfig, loadMiniCPMVConfig, resamplerHeads, visionLayerCount } from './config';
import { MINICPMV_KEYMAP } from './keymap';
import { PixelStrip, SiglipNavitVisionTransformer, TgtSize, checkStrips, packStrips } from './vision';

/** One batch of model inputs, as upstream's `data` dict (per-sample lists). */
export interface MiniCPMVInputs {
  /** Token ids [B][S] (every row the same length). */
  inputIds: readonly (readonly number[] | Int32Array)[];
  /** Per sample: its images in processor order, [3, P, L·P] each. Empty for a text-only sample. */
  pixelValues: readonly (readonly PixelStrip[])[];
  /** Per sample: [h, w] in patches per image. */
  tgtSizes: readonly (readonly TgtSize[])[];
  /** Per sample: [start, end) token range of each image's `<unk>` run, one per image. */
  imageBound: readonly (readonly (readonly [number, number])[])[];
}

export interface MiniCPMVEmbedOptions {
  taps?: Tap | null;
  /** torch's float vector width for the NaViT position ids (navit_positions.ts); default 8. */
  vecWidth?: number;
  /**
   * `vpmStates` of the flat image list, computed beforehand (training runs a frozen vpm outside
   * the gradient tape); the caller keeps ownership.
   */
  vpmStates?: tf.Tensor3D;
}

export interface MiniCPMVForwardOptions extends MiniCPMVEmbedOptions, Omit<CausalLMForwardOptions, 'taps'> {}

/** Collects per-batch taps of a batched stage and replays them concatenated along axis 0. */
class TapCollector {
  private readonly parts = new Map<string, tf.Tensor[]>();
  readonly tap: Tap = (name, t) => {
    const list = this.parts.get(name) ?? [];
    list.push(tf.keep(t.clone()));
    this.parts.set(name, list);
  };
  replay(to: Tap): void {
    for (const [name, list] of this.parts) {
      const whole = list.length === 1 ? list[0] : tf.concat(list, 0);
      to(name, whole);
      if (whole !== list[0]) whole.dispose();
      tf.dispose(list);
    }
    this.parts.clear();
  }
}

/** The SigLIP vpm and the resampler: f16 when the LLM is quantized to q8_0/q4_0 (weights/native_plan.ts). */
export const MINICPMV_MMPROJ = ['vpm', 'resampler'] as const;

export class MiniCPMV extends Module {
  static className = 'MiniCPMV';
  readonly config: MiniCPMVConfig;
  llm: Qwen2ForCausalLM;
  vpm: SiglipNavitVisionTransformer;
  resampler: Resampler;

  /** Builds the module tree; every parameter is empty until `load` (nothing is allocated). */
  constructor(config: MiniCPMVConfig) {
    super();
    this.config = config;
    this.llm = new Qwen2ForCausalLM(config.llm);
    this.vpm = new SiglipNavitVisionTransformer(config.vision_config, visionLayerCount(config));
    this.resampler = new Resampler({
      numQueries: config.query_num,
      embedDim: config.llm.hiddenSize,
      numHeads: resamplerHeads(config),
      kvDim: config.vision_config.hidden_size,
      normEps: 1e-6, // resampler.py: norm_layer=partial(nn.LayerNorm, eps=1e-6)
    });
  }

  /**
   * Loads `<dir>/config.json` and the checkpoint in `dir` (`model.safetensors` or sharded with
   * `model.safetensors.index.json`), strictly: a missing, unexpected or wrong-shape tensor throws
   * a WeightLoadError listing all of them. `warn` gets config keys nobody reads.
   */
  static fromPretrained(dir: string, opts: { warn?: (msg: string) => void; log?: (msg: string) => void; quantize?: string; keepF32?: readonly string[] } = {}): MiniCPMV {
    const model = new MiniCPMV(loadMiniCPMVConfig(dir, opts.warn ?? opts.log));
    try {
      model.load(dir, { quantize: opts.quantize, log: opts.log ?? opts.warn, keepF32: opts.keepF32 });
    } catch (e) {
      model.dispose();
      throw e;
    }
    return model;
  }

  /** The unloaded module tree and the weight sources a load of `dir` reads (`vlm convert`). */
  static unloaded(dir: string, opts: { log?: (msg: string) => void } = {}): FamilyWeights {
    const module = new MiniCPMV(loadMiniCPMVConfig(dir, opts.log ?? (() => {})));
    try {
      return { module, sources: [{ checkpoint: Checkpoint.open(dir), keymap: MINICPMV_KEYMAP }], modelType: 'minicpmv', mmproj: MINICPMV_MMPROJ };
    } catch (e) {
      module.dispose();
      throw e;
    }
  }

  /** Strictly loads every parameter from a checkpoint directory or file (MINICPMV_KEYMAP). */
  load(dirOrFile: string, opts: { quantize?: string; log?: (msg: string) => void; keepF32?: readonly string[] } = {}): LoadReport {
    const ck = Checkpoint.open(dirOrFile);
    try {
      const storage = plannerFor(this, opts.quantize, ck, { log: opts.log, backendBudget: backendWeightBudget(), keepF32: opts.keepF32, mmproj: MINICPMV_MMPROJ });
      return loadWeights(this, [{ checkpoint: ck, keymap: MINICPMV_KEYMAP }], { what: 'MiniCPMV', storage });
    } finally {
      ck.close();
    }
  }

  /**
   * `vpm` over a flat list of images in batches of `vision_batch_size`: last hidden states
   * [N, maxL, E] (padded patches included; the resampler masks them).
   */
  vpmStates(pixelValues: readonly PixelStrip[], tgtSizes: readonly TgtSize[], opts: MiniCPMVEmbedOptions = {}): tf.Tensor3D {
    const vc = this.config.vision_config;
    const pixels = packStrips(pixelValues, tgtSizes, vc.num_channels, vc.patch_size); // [N, C, P, maxL·P]
    try {
      return tf.tidy(() => {
        const tap = opts.taps ?? null;
        tap?.('vpm.pixel_values_padded', pixels);
        const N = pixelValues.length, bs = this.config.vision_batch_size;
        if (N <= bs) return this.vpm.forward(pixels, tgtSizes, { taps: tap, vecWidth: opts.vecWidth });
        const collect = tap ? new TapCollector() : null;
        const parts: tf.Tensor3D[] = [];
        for (let s = 0; s < N; s += bs) {
          const n = Math.min(bs, N - s);
          const chunk = pixels.slice([s, 0, 0, 0], [n, -1, -1, -1]) as tf.Tensor4D;
          parts.push(this.vpm.forward(chunk, tgtSizes.slice(s, s + n), { taps: collect?.tap, vecWidth: opts.vecWidth }));
          chunk.dispose();
        }
        if (tap) collect!.replay(tap);
        return tf.concat(parts, 0) as tf.Tensor3D; // [N, maxL, E]
      });
    } finally {
      pixels.dispose();
    }
  }

  /**
   * Vision features of a flat list of images: `vpm` (or the given `vpmStates`), then the
   * resampler. Returns [N, Q, D].
   */
  visionFeatures(pixelValues: readonly PixelStrip[], tgtSizes: readonly TgtSize[], opts: MiniCPMVEmbedOptions = {}): tf.Tensor3D {
    const given = opts.vpmStates;
    if (given && given.shape[0] !== pixelValues.length) {
      throw new Error(`vpmStates has ${given.shape[0]} image(s), pixel_values has ${pixelValues.length}`);
    }
    return tf.tidy(() => {
      const hs = given ?? this.vpmStates(pixelValues, tgtSizes, opts);
      return this.resampler.forward(hs, tgtSizes, { taps: opts.taps ?? null });
    });
  }

  /** `get_vllm_embedding`: inputs_embeds [B, S, D] with every image's features spliced in. */
  embed(inputs: MiniCPMVInputs, opts: MiniCPMVEmbedOptions = {}): tf.Tensor3D {
    const B = inputs.inputIds.length;
    if (B === 0) throw new Error('input_ids is empty');
    const S = inputs.inputIds[0].length;
    inputs.inputIds.forEach((r, b) => {
      if (r.length !== S) throw new Error(`input_ids[${b}] has ${r.length} tokens, input_ids[0] has ${S} (pad the batch)`);
    });
    for (const [name, list] of [['pixel_values', inputs.pixelValues], ['tgt_sizes', inputs.tgtSizes], ['image_bound', inputs.imageBound]] as const) {
      if (list.length !== B) throw new Error(`${name} has ${list.length} sample(s), input_ids has ${B}`);
    }
    // host checks first: nothing is computed on bad input
    inputs.pixelValues.forEach((p, b) => {
      if (p.length !== inputs.tgtSizes[b].length) throw new Error(`sample ${b}: ${p.length} image(s) in pixel_values but ${inputs.tgtSizes[b].length} tgt_sizes`);
    });
    const flatPixels = inputs.pixelValues.flat();
    const flatSizes = inputs.tgtSizes.flat();
    const vc = this.config.vision_config;
    checkStrips(flatPixels, flatSizes, vc.num_channels, vc.patch_size);
    const Q = this.config.query_num;
    const rowOf = this.spliceRows(inputs, S, Q);
    return tf.tidy(() => {
      const ids = tf.tensor2d(Int32Array.from(inputs.inputIds.flatMap((r) => Array.from(r))), [B, S], 'int32');
      let text = this.llm.model.embed(ids); // [B, S, D]
      if (this.config.scale_emb !== null) text = tf.mul(text, this.config.scale_emb);
      if (!flatPixels.length) return text;
      const D = this.config.llm.hiddenSize;
      const feats = this.visionFeatures(flatPixels, flatSizes, opts); // [N, Q, D]
      // one gather over [text rows; feature rows]: row s of sample b is text row b·S+s or a feature row
      const all = tf.concat([text.reshape([B * S, D]), feats.reshape([-1, D])], 0);
      return tf.gather(all, tf.tensor1d(rowOf, 'int32')).reshape([B, S, D]) as tf.Tensor3D;
    });
  }

  /**
   * Source row for every token: b·S + s (its own embedding) or B·S + feature row. Throws when
   * the `<unk>` slots of `image_bound` and the image features do not match, naming the sample
   * and the image.
   */
  private spliceRows(inputs: MiniCPMVInputs, S: number, Q: number): Int32Array {
    const B = inputs.inputIds.length;
    const rowOf = Int32Array.from({ length: B * S }, (_, i) => i);
    let imageBase = 0;
    for (let b = 0; b < B; b++) {
      const bounds = inputs.imageBound[b];
      const nImages = inputs.pixelValues[b].length;
      const tokens = bounds.reduce((a, [s, e]) => a + (e - s), 0);
      if (bounds.length !== nImages) {
        throw new Error(`sample ${b}: image tokens: ${tokens} in ${bounds.length} image_bound range(s), image features: ${nImages * Q} ` +
          `from ${nImages} image(s) × query_num ${Q}; every image (source and each slice) needs one range of ${Q} <unk> tokens`);
      }
      const taken = new Uint8Array(S);
      bounds.forEach(([start, end], k) => {
        if (!Number.isInteger(start) || !Number.isInteger(end) || start < 0 || end > S || start >= end) {
          throw new Error(`sample ${b}: image_bound[${k}] = [${start}, ${end}) is not a range inside the ${S} tokens`);
        }
        if (end - start !== Q) {
          throw new Error(`sample ${b}, image ${k}${k === 0 ? ' (source)' : ` (slice ${k})`}: image tokens: ${end - start} ` +
            `(image_bound[${k}] = [${start}, ${end})), image features: ${Q}`);
        }
        for (let s = start; s < end; s++) {
          if (taken[s]) throw new Error(`sample ${b}: image_bound[${k}] = [${start}, ${end}) overlaps an earlier range at token ${s}`);
          taken[s] = 1;
          rowOf[b * S + s] = B * S + (imageBase + k) * Q + (s - start);
        }
      });
      imageBase += nImages;
    }
    return rowOf;
  }

  /** `MiniCPMV.forward`: logits [B, S, V] (or [B, 1, V] with logits: 'last'). */
  forward(inputs: MiniCPMVInputs, opts: MiniCPMVForwardOptions = {}): tf.Tensor3D {
    return tf.tidy(() => {
      const x = this.embed(inputs, opts);
      return this.llm.forward(x, { ...opts, taps: opts.taps ?? null });
    });
  }

  override call(): tf.Tensor {
    throw new Error('MiniCPMV: call forward(inputs) or embed(inputs)');
  }

  override dispose(): ReturnType<tf.layers.Layer['dispose']> {
    this.resampler.disposeCache();
    return super.dispose();
  }
}
register(MiniCPMV);
