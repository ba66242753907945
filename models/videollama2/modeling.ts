/**
 * VideoLLaMA 2 / 2.1: DAMO-NLP-SG/VideoLLaMA2 (commit c0bb03ab)
 * `videollama2/model/videollama2_arch.py` (`Videollama2MetaModel`, `encode_images_or_videos`,
 * `temporal_aggregator`, `prepare_inputs_labels_for_multimodal`), `videollama2_mistral.py`,
 * `videollama2_qwen2.py`.
 *
 *   media (image [1, C, S, S] repeated to num_frames, or video [T, C, S, S])
 *     → vision_tower (CLIP/SigLIP, hidden_states[select_layer], CLIP drops CLS)  [B, T, N, E]
 *     → mm_projector (STC connector …)                                           [B, L, H]
 *     → spliced into the token embeddings at the placeholder id (−200 <image>, −201 <video>)
 *     → the Mistral / Qwen2 CausalLM (layers/decoder.ts)
 *
 * Module tree (key map in keymap.ts): `llm` (CausalLM: `llm.model.*`, `llm.lm_head.*`),
 * `vision_tower.vision_tower.vision_model.*`, `mm_projector.*`.
 *
 * Taps carry the golden names: `vision.embeddings`, `vision.pre_layrnorm`, `vision.layer{i}`,
 * `vision_tower.out`, `stc.*`, `llm.inputs_embeds`, `llm.layer0`, `llm.layer_last`, `llm.norm`,
 * `llm.logits`.
 *
 * Shape letters: B media, T frames, C channels, S image side, N tokens per frame, E tower hidden,
 * L connector tokens, H LLM hidden, V vocab.
 */
import * as tf from '@tensorflow/tfjs';
import { CausalLM, Tap } from '../../layers/decoder';
import { assembleRows, sliceRows } from '../../layers/heap_ops';
import { Module, register } from '../../layers/module';
import { FamilyWeights, WeightSource, loadWeights, LoadReport } from '../../weights/load';
import { plannerFor } from '../../weights/native_plan';
import { backendWeightBudget } from '../../layers/memory';
import { Checkpoint } from '../../weights/checkpoint';
import { KeyMap } from '../../weights/keymap';
import { VisionTowerConfig } from '../clip/config';
import { MistralForCausalLM } from '../mistral/modeling';
import { Qwen2ForCausalLM } from '../qwen2/modeling';
import { IMAGE_TOKEN_INDEX, VIDEO_TOKEN_INDEX, AUDIO_TOKEN_INDEX } from './tokenization';
import { VideoLLaMA2Config, loadVideoLLaMA2Config } from './config';
import { Connector, aggregate, buildConnector } from './connector';
import { towerKeyMap, videollama2KeyMap } from './keymap';
import { ResolveTowerOptions, VideoLLaMA2VisionTower, loadTowerConfig, resolveVisionTowerDir } from './vision';

/** `MODAL_INDEX_MAP` values: any of them marks where the next media's features go. */
export const MEDIA_PLACEHOLDER_IDS: readonly number[] = [IMAGE_TOKEN_INDEX, VIDEO_TOKEN_INDEX, AUDIO_TOKEN_INDEX];
/** `IGNORE_INDEX` (constants.py): the label of spliced media positions. */
export const IGNORE_INDEX = -100;

/** One image or video, as the processors return it: pixel_values in NCHW. */
export interface MediaInput {
  /** image: [1, C, S, S] (or [C, S, S]); video: [T, C, S, S]. Not disposed. */
  pixels: tf.Tensor;
  modal: 'image' | 'video';
}

export interface FromPretrainedOptions extends ResolveTowerOptions {
  /**
   * Where the tower weights come from: 'main' (`model.vision_tower.*` in the model checkpoint,
   * VideoLLaMA2 HEAD), 'tower' (`vision_model.*` in `<tower dir>/model.safetensors`, release-era
   * VideoLLaMA2; the main checkpoint's tower tensors are then skipped), or 'auto' (default: 'main'
   * when the model checkpoint has any `model.vision_tower.` tensor, else 'tower'). Loading is
   * strict either way.
   */
  towerWeights?: 'auto' | 'main' | 'tower';
  /** Receives notes (ignored config keys, which tower weights were used). Default: console.warn. */
  log?: (msg: string) => void;
  /** Weight storage (weights/native_plan.ts): f32 | stored | f16 | bf16 | q8_0 | q4_0; default by size. */
  quantize?: string;
  /** Module-key prefixes kept float32 whatever `quantize` says (parts trained fully). */
  keepF32?: readonly string[];
}

export interface SpliceOptions {
  /** 0/1 over input_ids (default all ones). */
  attentionMask?: ArrayLike<number>;
  /** Training labels over input_ids; spliced media positions get IGNORE_INDEX. */
  labels?: ArrayLike<number>;
  taps?: Tap | null;
  /**
   * `towerFeatures(media)` computed beforehand ([B, T, N, E], not disposed): only the connector
   * runs here (training keeps the frozen tower out of the gradient tape).
   */
  towerFeatures?: tf.Tensor4D;
  /**
   * `encodeImagesOrVideos(media)` computed beforehand ([B, L, H], not disposed): neither the tower
   * nor the connector runs here (training with a frozen connector keeps it out of the tape too).
   */
  connectorFeatures?: tf.Tensor3D;
}

export interface Spliced {
  /** [1, S_text − P + Σ L_i, H]; the caller owns it. */
  inputsEmbeds: tf.Tensor3D;
  /** The attention mask after the splice (upstream: ones prepended, see `prepareInputsEmbeds`). */
  attentionMask: number[];
  labels?: number[];
}

/** VideoLLaMA2 (Mistral LLM) and VideoLLaMA2.1 (Qwen2 LLM) for batch-1 inference. */
/** The vision tower and the connector: f16 when the LLM is quantized to q8_0/q4_0 (weights/native_plan.ts). */
export const VIDEOLLAMA2_MMPROJ = ['vision_tower', 'mm_projector'] as const;

/** Video frames per vision-tower pass at inference (the tower sees each frame on its own). */
const TOWER_FRAMES_PER_PASS = 2;

export class VideoLLaMA2 extends Module {
  static className = 'VideoLLaMA2';
  readonly config: VideoLLaMA2Config;
  readonly towerConfig: VisionTowerConfig;
  llm: CausalLM;
  vision_tower: VideoLLaMA2VisionTower;
  mm_projector: Connector;

  /** Builds the (unloaded) model; `fromPretrained` builds and loads. */
  constructor(config: VideoLLaMA2Config, towerConfig: VisionTowerConfig) {
    super();
    if (config.mm_hidden_size !== towerConfig.hiddenSize) {
      throw new Error(`${config.file}: mm_hidden_size (${config.mm_hidden_size}) differs from the vision tower's hidden_size (${towerConfig.hiddenSize})`);
    }
    this.config = config;
    this.towerConfig = towerConfig;
    // Videollama2MistralForCausalLM / Videollama2Qwen2ForCausalLM: the LLM class of the config's family
    this.llm = config.llmFamily === 'mistral' ? new MistralForCausalLM(config.llm) : new Qwen2ForCausalLM(config.llm);
    this.vision_tower = new VideoLLaMA2VisionTower(towerConfig, { selectLayer: config.mm_vision_select_layer, selectFeature: config.mm_vision_select_feature });
    this.mm_projector = buildConnector(config.mm_projector_type, config.mm_hidden_size, config.llm.hiddenSize);
  }

  /**
   * Loads a VideoLLaMA2 model directory: `config.json` (model_type `videollama2_mistral` or
   * `videollama2_qwen2`) and `model.safetensors` (or a sharded index), plus the vision tower
   * directory named by `mm_vision_tower` (config.json; and its `model.safetensors` when the tower
   * weights are not in the main checkpoint). `mm_vision_tower` may be an absolute path, a path
   * relative to `dir`, or a Hugging Face repo name found under `opts.towerSearchPaths` /
   * $VLM_VISION_TOWER_PATH / the HF cache; `opts.visionTowerDir` overrides it. Every tensor is
   * loaded strictly (missing, unexpected and wrong-shape keys are all reported). The returned
   * model owns its weights: call `dispose()`.
   */
  static async fromPretrained(dir: string, opts: FromPretrainedOptions = {}): Promise<VideoLLaMA2> {
    const log = opts.log ?? ((m: string) => console.warn(m));
    const config = loadVideoLLaMA2Config(dir, log);
    const towerDir = resolveVisionTowerDir(config.mm_vision_tower, dir, opts);
    const towerConfig = loadTowerConfig(towerDir, config.mm_vision_tower, log);
    const model = new VideoLLaMA2(config, towerConfig);
    try {
      model.loadFrom(dir, towerDir, opts.towerWeights ?? 'auto', log, opts.quantize, opts.keepF32);
    } catch (e) {
      model.dispose();
      throw e;
    }
    return model;
  }

  /** The unloaded module tree and the weight sources a load of `dir` reads (`vlm convert`). */
  static unloaded(dir: string, opts: { visionTowerDir?: string; log?: (msg: string) => void } = {}): FamilyWeights {
    const log = opts.log ?? (() => {});
    const config = loadVideoLLaMA2Config(dir, log);
    const towerDir = resolveVisionTowerDir(config.mm_vision_tower, dir, { visionTowerDir: opts.visionTowerDir });
    const module = new VideoLLaMA2(config, loadTowerConfig(towerDir, config.mm_vision_tower, log));
    try {
      return { module, sources: module.weightSources(dir, towerDir, 'auto', log), modelType: config.model_type, mmproj: VIDEOLLAMA2_MMPROJ };
    } catch (e) {
      module.dispose();
      throw e;
    }
  }

  /** Key map of the main checkpoint. */
  keyMap(): KeyMap {
    return videollama2KeyMap({ numHiddenLayers: this.towerConfig.numHiddenLayers, numLayersBuilt: this.vision_tower.numLayers });
  }

  /** Key map of a release-era tower checkpoint (`vision_model.*`). */
  towerKeyMap(): KeyMap {
    return towerKeyMap({ numHiddenLayers: this.towerConfig.numHiddenLayers, numLayersBuilt: this.vision_tower.numLayers });
  }

  /**
   * The weight sources a load reads: the model checkpoint and, for tower weights, the main one or
   * the tower dir's (see `towerWeights`). Close the returned checkpoints when done.
   */
  weightSources(dir: string, towerDir: string, towerWeights: 'auto' | 'main' | 'tower' = 'auto', log: (msg: string) => void = () => {}): WeightSource[] {
    const main = Checkpoint.open(dir);
    try {
      const mainHasTower = main.keys().some((k) => k.startsWith('model.vision_tower.'));
      const fromTower = towerWeights === 'tower' || (towerWeights === 'auto' && !mainHasTower);
      const sources: WeightSource[] = [{ checkpoint: main, keymap: this.keyMap(), only: fromTower ? ['llm.', 'mm_projector.'] : undefined }];
      if (fromTower) {
        let tower: Checkpoint;
        try {
          tower = Checkpoint.open(towerDir);
        } catch (e) {
          throw new Error(`vision tower weights: ${mainHasTower ? '' : `${dir} has no model.vision_tower.* tensors, and `}the tower directory ` +
            `cannot be read as a checkpoint (${(e as Error).message}). Put the tower's model.safetensors in ${towerDir} or use a checkpoint that contains the tower.`);
        }
        sources.push({ checkpoint: tower, keymap: this.towerKeyMap(), only: ['vision_tower.'] });
        log(`vision tower weights from ${tower.source}${mainHasTower ? ` (the model checkpoint's model.vision_tower.* tensors are not used)` : ''}`);
      }
      return sources;
    } catch (e) {
      main.close();
      throw e;
    }
  }

  /** Strict load from the model checkpoint and, for tower weights, the main one or the tower dir's. */
  loadFrom(dir: string, towerDir: string, towerWeights: 'auto' | 'main' | 'tower' = 'auto', log: (msg: string) => void = () => {}, quantize?: string, keepF32?: readonly string[]): LoadReport {
    const sources = this.weightSources(dir, towerDir, towerWeights, log);
    try {
      const storage = plannerFor(this, quantize, sources.map((s) => s.checkpoint), { log, backendBudget: backendWeightBudget(), keepF32, mmproj: VIDEOLLAMA2_MMPROJ });
      return loadWeights(this, sources, { what: `VideoLLaMA2 (${this.config.model_type})`, storage });
    } finally {
      for (const s of sources) s.checkpoint.close();
    }
  }

  /** `num_frames` (config, else NUM_FRAMES = 8). */
  get numFrames(): number {
    return this.config.num_frames;
  }

  /**
   * `encode_images_or_videos` + `temporal_aggregator`: media → connector tokens [B, L, H].
   * Upstream repeats an image to num_frames frames before the tower (`data.expand(num_frames, …)`);
   * the tower works frame by frame, so the image goes through it once and its features are
   * repeated (the `vision.*` taps are repeated too, so they have upstream's shapes). All media
   * must have the same frame count (`torch.stack`).
   */
  encodeImagesOrVideos(media: MediaInput[], taps?: Tap | null): tf.Tensor3D {
    return tf.tidy(() => aggregate(this.mm_projector, this.towerFeatures(media, taps), taps));
  }

  /**
   * The vision tower half of `encodeImagesOrVideos`: media → frame features [B, T, N, E] (an
   * image's features repeated to num_frames). Training runs it outside the gradient tape: the
   * tower is frozen upstream and its forward runs under `@torch.no_grad()`.
   */
  towerFeatures(media: MediaInput[], taps?: Tap | null): tf.Tensor4D {
    if (!media.length) throw new Error('encodeImagesOrVideos: no media given');
    const S = this.towerConfig.imageSize, C = this.towerConfig.numChannels;
    const frames = media.map((m, i) => {
      const s = m.pixels.shape;
      const what = media.length === 1 ? 'pixel_values' : `pixel_values (media ${i})`;
      if (m.modal === 'image') {
        const ok = (s.length === 4 && s[0] === 1) || s.length === 3;
        if (!ok || s[s.length - 3] !== C || s[s.length - 2] !== S || s[s.length - 1] !== S) {
          throw new Error(`${what} for an image has shape [${s.join(', ')}], expected [1, ${C}, ${S}, ${S}]`);
        }
        return 1;
      }
      if (m.modal !== 'video') throw new Error(`${what}: unsupported modal '${m.modal}' (expected 'image' or 'video')`);
      if (s.length !== 4 || s[1] !== C || s[2] !== S || s[3] !== S) {
        throw new Error(`${what} for a video has shape [${s.join(', ')}], expected [T, ${C}, ${S}, ${S}]`);
      }
      return s[0];
    });
    const T = media.map((m, i) => (m.modal === 'image' ? this.numFrames : frames[i]));
    if (T.some((t) => t !== T[0])) throw new Error(`media have different frame counts (${T.join(', ')}); they cannot be stacked into one batch`);
    return tf.tidy(() => {
      const feats = media.map((m) => {
        const px = (m.modal === 'image' ? m.pixels.reshape([1, C, S, S]) : m.pixels) as tf.Tensor4D;
        if (m.modal === 'video') {
          if (taps || px.shape[0] <= TOWER_FRAMES_PER_PASS) return this.vision_tower.forward(px, taps); // [T, N, E]
          // frames are independent in the tower: a few per pass keeps the wasm heap's high-water mark
          // (it never shrinks) at a few frames' attention scores instead of all 16 frames'
          return assembleRows(px.shape[0], TOWER_FRAMES_PER_PASS, (t0, n) => tf.tidy(() => this.vision_tower.forward(sliceRows(px, t0, n), null))); // [T, N, E]
        }
        const rep = this.numFrames;
        const tileTap: Tap | null = taps ? (name, t) => taps(name, t.shape[0] === 1 ? tf.tile(t, [rep, ...t.shape.slice(1).map(() => 1)]) : t) : null;
        const f = this.vision_tower.forward(px, tileTap); // [1, N, E]
        return tf.tile(f, [rep, 1, 1]); // data.expand(num_frames, …)
      });
      return tf.stack(feats) as tf.Tensor4D; // [B, T, N, E]
    });
  }

  /**
   * `prepare_inputs_labels_for_multimodal` for one sequence: every placeholder id (−200/−201/−202)
   * in `inputIds` is removed and the next media's connector tokens are inserted there; the other
   * ids are embedded with `embed_tokens`. S_llm = S_text − P + Σ L_i. The attention mask is
   * upstream's: `cat([ones(S_llm − S_text), attention_mask])` — ones prepended, not placed at the
   * media position. With no media, the ids are just embedded.
   */
  prepareInputsEmbeds(inputIds: ArrayLike<number>, media: MediaInput[], opts: SpliceOptions = {}): Spliced {
    const ids = Array.from(inputIds);
    const S = ids.length;
    if (!S) throw new Error('input_ids is empty');
    if (opts.attentionMask && opts.attentionMask.length !== S) throw new Error(`attention_mask has ${opts.attentionMask.length} entries, input_ids has ${S}`);
    if (opts.labels && opts.labels.length !== S) throw new Error(`labels has ${opts.labels.length} entries, input_ids has ${S}`);
    const slots = ids.flatMap((v, i) => (MEDIA_PLACEHOLDER_IDS.includes(v) ? [i] : []));
    if (media.length && !slots.length) {
      throw new Error(`input_ids has no media placeholder (${IMAGE_TOKEN_INDEX} <image> / ${VIDEO_TOKEN_INDEX} <video>) but ${media.length} media ` +
        `tensor(s) were given; tokenize the prompt with tokenizer_multimodal_token so '<image>'/'<video>' becomes the placeholder id`);
    }
    if (slots.length !== media.length) {
      throw new Error(`input_ids has ${slots.length} media placeholder(s) (at position${slots.length === 1 ? '' : 's'} ${slots.join(', ')}) ` +
        `but ${media.length} media tensor(s) were given; each placeholder takes one image or video`);
    }
    let L = 0; // connector tokens per media
    const inputsEmbeds = tf.tidy(() => {
      const feats = !media.length ? null
        : opts.connectorFeatures ?? (opts.towerFeatures ? aggregate(this.mm_projector, opts.towerFeatures, opts.taps) : this.encodeImagesOrVideos(media, opts.taps)); // [B, L, H]
      const parts: tf.Tensor[] = [];
      let start = 0;
      const text = (a: number, b: number) => {
        if (b > a) parts.push(this.llm.model.embed(tf.tensor2d(ids.slice(a, b), [1, b - a], 'int32'))); // [1, n, H]
      };
      slots.forEach((pos, j) => {
        text(start, pos);
        L = feats!.shape[1];
        parts.push(feats!.slice([j, 0, 0], [1, L, feats!.shape[2]])); // cur_mm_features
        start = pos + 1;
      });
      text(start, S);
      return (parts.length === 1 ? parts[0] : tf.concat(parts, 1)) as tf.Tensor3D;
    });
    const added = inputsEmbeds.shape[1] - S; // = Σ L − P
    const mask = opts.attentionMask ? Array.from(opts.attentionMask) : new Array<number>(S).fill(1);
    const out: Spliced = { inputsEmbeds, attentionMask: [...new Array<number>(added).fill(1), ...mask] };
    if (opts.labels) {
      const lab = Array.from(opts.labels);
      const spliced: number[] = [];
      let start = 0;
      for (const pos of slots) {
        spliced.push(...lab.slice(start, pos), ...new Array<number>(L).fill(IGNORE_INDEX));
        start = pos + 1;
      }
      spliced.push(...lab.slice(start));
      out.labels = spliced;
    }
    return out;
  }

  /** Connector output length L for num_frames frames (T' · h' · w' for STC, N for linear / mlp). */
  connectorTokens(frames = this.numFrames): number {
    const n = Math.floor(this.towerConfig.imageSize / this.towerConfig.patchSize);
    const proj = this.mm_projector;
    if (!('sampler' in proj)) return this.vision_tower.tokensPerFrame;
    const sampler = proj.sampler;
    if ('kernel' in sampler) return Math.floor(frames / sampler.kernel[0]) * Math.floor(n / sampler.kernel[1]) ** 2;
    const conv = sampler['0'];
    return conv.outSize(frames, 0) * conv.outSize(n, 1) * conv.outSize(n, 2);
  }

  /**
   * Full forward (`Videollama2*ForCausalLM.forward` with images): splice, then the LLM.
   * Returns logits [1, S_llm, V] (or [1, 1, V] with logits: 'last').
   */
  forward(inputIds: ArrayLike<number>, media: MediaInput[], opts: SpliceOptions & { logits?: 'all' | 'last' } = {}): tf.Tensor3D {
    const sp = this.prepareInputsEmbeds(inputIds, media, opts);
    try {
      const padded = sp.attentionMask.some((v) => v === 0);
      return this.llm.forward(sp.inputsEmbeds, { taps: opts.taps, logits: opts.logits, attentionMask: padded ? [sp.attentionMask] : null });
    } finally {
      sp.inputsEmbeds.dispose();
    }
  }
}
register(VideoLLaMA2);
