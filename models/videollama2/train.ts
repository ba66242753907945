/**
 * VideoLLaMA 2 / 2.1 as a training family: upstream `videollama2/train.py` with HF Trainer.
 *
 * - Trainable by default (finetune stage): the LLM and the connector (`llm`, `mm_projector`);
 *   `tune_mm_mlp_adapter` (pretraining stage) = `mm_projector` alone, usually with the plain data
 *   format. The vision tower is never trainable: train.py freezes it and its forward runs under
 *   `@torch.no_grad()`, so here it runs outside the gradient tape (`prepare`).
 * - Loss: HF `*ForCausalLM.forward` with labels: logits[..., :−1, :] vs spliced_labels[..., 1:],
 *   CrossEntropyLoss. Each sample is spliced on its own (`prepare_inputs_labels_for_multimodal`),
 *   then the batch is right-padded with zero embeddings, −100 labels and a 0 attention mask
 *   (ones prepended for the media tokens, as upstream).
 */
import * as tf from '@tensorflow/tfjs';
import path from 'node:path';
import { Tokenizer, loadTokenizer } from '../../tokenizers';
import { TowerImageProcessor, loadTowerImageProcessor } from '../clip/image_processing';
import { MediaInput, VideoLLaMA2 } from './modeling';
import { resolveVisionTowerDir } from './vision';
import { RawSample } from '../../training/data';
import { LoraPreset } from '../../training/lora';
import { ExportOptions } from '../../training/export';
import { Prepared, TrainFamily } from '../../training/family';
import { IGNORE_INDEX, crossEntropy } from '../../training/loss';
import { underPrefix } from '../../training/params';
import { VideoLLaMA2TrainBatch, VideoLLaMA2TrainData, VideoLLaMA2TrainExample, collateVideoLLaMA2 } from './train_data';

export interface VideoLLaMA2FamilyOptions {
  samples?: readonly RawSample[];
  /** upstream `--data_folder`. */
  dataRoot?: string;
  /** Directory of the vision tower when `mm_vision_tower` names a hub repo. */
  visionTowerDir?: string;
  numFrames?: number;
  aspectRatio?: 'pad' | null;
  maxLength?: number;
  /** `preprocess_plain` (pretraining-stage data). */
  plain?: boolean;
  /** Tokenizer directory (default: the model directory). */
  tokenizerDir?: string;
  warn?: (msg: string) => void;
  /** Storage of the (frozen) large matrices: weights/native_plan.ts (QLoRA-style with q8_0/q4_0). */
  quantize?: string;
  /** Module prefixes that stay float32 (and trainable) whatever `quantize` says. */
  keepF32?: readonly string[];
}

/** Per sample: the media tensor and its frozen tower features [1, T, N, E] (null: text-only). */
/** Per sample: the media, and the frozen tower's features [1, T, N, E] or, with a frozen connector too, the connector's [1, L, H]. */
class VideoLLaMA2Prepared implements Prepared {
  constructor(readonly media: (MediaInput | null)[], readonly feats: (tf.Tensor4D | null)[], readonly connected: (tf.Tensor3D | null)[] = []) {}
  dispose(): void {
    tf.dispose([...this.media.map((m) => m?.pixels), ...this.feats, ...this.connected].filter((t): t is tf.Tensor => !!t));
  }
}

/**
 * Upstream LoRA recipe (VideoLLaMA 2 scripts/custom/finetune_lora.sh + train.py): `--lora_r 128
 * --lora_alpha 256 --mm_projector_lr 2e-5`, lora_dropout 0.05, targets `find_all_linear_names`
 * (every nn.Linear outside mm_projector/vision_tower/vision_resampler, minus lm_head); the
 * projector trains fully (it is created after get_peft_model).
 */
export const VIDEOLLAMA2_LORA_PRESET: LoraPreset = {
  r: 128, alpha: 256, dropout: 0.05, targetModules: null, tune: ['mm_projector'], connectorLr: 2e-5,
  exclude: /(^|\.)(mm_projector|vision_tower|vision_resampler)(\.|$)/,
};

export class VideoLLaMA2TrainFamily implements TrainFamily<VideoLLaMA2TrainExample, VideoLLaMA2TrainBatch> {
  readonly family = 'videollama2' as const;
  readonly connector = 'mm_projector';
  readonly defaultTune = ['llm', 'mm_projector'] as const;
  readonly parts = ['llm', 'mm_projector'] as const;
  readonly data: VideoLLaMA2TrainData | null;
  readonly padTokenId: number;
  readonly maxLength: number;
  readonly tokenizerDir?: string;
  private readonly dataOpts: ConstructorParameters<typeof VideoLLaMA2TrainData>[4];

  datasetFor(samples: readonly RawSample[]): VideoLLaMA2TrainData {
    return new VideoLLaMA2TrainData(samples, this.tokenizer, this.processor, this.model.config, this.dataOpts);
  }

  constructor(readonly model: VideoLLaMA2, readonly tokenizer: Tokenizer, readonly processor: TowerImageProcessor,
    readonly dir: string, readonly towerDir: string, opts: VideoLLaMA2FamilyOptions = {}) {
    this.maxLength = opts.maxLength ?? 2048;
    this.tokenizerDir = opts.tokenizerDir;
    this.dataOpts = { dataRoot: opts.dataRoot ?? '.', numFrames: opts.numFrames, aspectRatio: opts.aspectRatio, maxLength: this.maxLength, plain: opts.plain };
    this.data = opts.samples ? this.datasetFor(opts.samples) : null;
    const pad = tokenizer.padTokenId ?? tokenizer.unkTokenId;
    if (pad === undefined) throw new Error('the tokenizer has neither a pad nor an unk token (train.py pads with pad_token := unk_token)');
    this.padTokenId = pad;
  }

  static async load(dir: string, opts: VideoLLaMA2FamilyOptions = {}): Promise<VideoLLaMA2TrainFamily> {
    const tokenizer = loadTokenizer(opts.tokenizerDir ?? dir);
    const model = await VideoLLaMA2.fromPretrained(dir, { visionTowerDir: opts.visionTowerDir, log: opts.warn ?? (() => undefined), quantize: opts.quantize, keepF32: opts.keepF32 });
    try {
      const towerDir = resolveVisionTowerDir(model.config.mm_vision_tower, dir, { visionTowerDir: opts.visionTowerDir });
      const processor = loadTowerImageProcessor(towerDir, undefined, opts.warn);
      return new VideoLLaMA2TrainFamily(model, tokenizer, processor, dir, towerDir, opts);
    } catch (e) {
      model.dispose();
      throw e;
    }
  }

  get keymap() {
    return this.model.keyMap();
  }

  checkTune(prefixes: readonly string[]): void {
    for (const p of prefixes) {
      const hitsTower = ['vision_tower', 'model.vision_tower'].some((t) => underPrefix(t, p) || underPrefix(p, t));
      if (hitsTower) {
        throw new Error(`--tune '${p}' selects the vision tower, which VideoLLaMA 2 never trains (train.py freezes it and runs it under torch.no_grad()); ` +
          `trainable parts: ${this.parts.join(', ')}`);
      }
    }
  }

  collate(examples: readonly VideoLLaMA2TrainExample[]): VideoLLaMA2TrainBatch {
    return collateVideoLLaMA2(examples, this.padTokenId, this.maxLength);
  }

  /**
   * Pixels to tensors and, outside the tape, the frozen tower's features — or, when nothing under
   * `mm_projector` trains either (LoRA on the LLM only), the connector's output.
   */
  prepare(batch: VideoLLaMA2TrainBatch, trains?: (modulePath: string) => boolean): VideoLLaMA2Prepared {
    const media: (MediaInput | null)[] = batch.media.map((m) => (m ? { modal: m.modal, pixels: tf.tensor4d(m.pixels.data, m.pixels.shape) } : null));
    try {
      if (trains && !trains('mm_projector')) {
        const connected = media.map((m) => (m ? tf.tidy(() => this.model.encodeImagesOrVideos([m])) : null));
        return new VideoLLaMA2Prepared(media, media.map(() => null), connected);
      }
      const feats = media.map((m) => (m ? tf.tidy(() => this.model.towerFeatures([m])) : null));
      return new VideoLLaMA2Prepared(media, feats);
    } catch (e) {
      tf.dispose(media.map((m) => m?.pixels).filter((t): t is tf.Tensor4D => !!t));
      throw e;
    }
  }

  loss(batch: VideoLLaMA2TrainBatch, prepared: Prepared): tf.Scalar {
    const prep = prepared as VideoLLaMA2Prepared;
    return tf.tidy(() => {
      const rows = batch.inputIds.map((ids, b) => {
        const m = prep.media[b];
        return this.model.prepareInputsEmbeds(ids, m ? [m] : [], {
          labels: batch.labels[b], attentionMask: batch.attentionMask[b], towerFeatures: prep.feats[b] ?? undefined, connectorFeatures: prep.connected[b] ?? undefined,
        });
      });
      const L = Math.max(...rows.map((r) => r.inputsEmbeds.shape[1]));
      const H = this.model.config.llm.hiddenSize;
      const embeds = rows.map((r) => {
        const n = L - r.inputsEmbeds.shape[1];
        return n ? tf.concat([r.inputsEmbeds, tf.zeros([1, n, H])], 1) : r.inputsEmbeds; // right padding with zeros
      });
      const labels = rows.map((r) => [...r.labels!, ...new Array<number>(L - r.labels!.length).fill(IGNORE_INDEX)]);
      const mask = rows.map((r) => [...r.attentionMask, ...new Array<number>(L - r.attentionMask.length).fill(0)]);
      const x = (embeds.length === 1 ? embeds[0] : tf.concat(embeds, 0)) as tf.Tensor3D; // [B, L, H]
      const padded = mask.some((r) => r.includes(0));
      const logits = this.model.llm.forward(x, { attentionMask: padded ? mask : null });
      return crossEntropy(logits, labels, { shift: true });
    });
  }

  supervisedTokens(batch: VideoLLaMA2TrainBatch): number {
    return batch.labels.reduce((a, r) => a + r.slice(1).filter((l) => l !== IGNORE_INDEX).length, 0);
  }

  exportOptions(): ExportOptions {
    // a tower directory inside the model directory travels with the checkpoint
    const rel = path.relative(path.resolve(this.dir), path.resolve(this.towerDir));
    const inside = rel && !rel.startsWith('..') && !path.isAbsolute(rel);
    return { tokenizerDir: this.tokenizerDir, ...(inside ? { copyDirs: [rel] } : {}) };
  }

  dispose(): void {
    this.model.dispose();
  }
}
