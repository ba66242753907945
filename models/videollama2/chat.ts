/**
 * VideoLLaMA 2 / 2.1 chat, as upstream `videollama2.mm_infer` with the processors `model_init`
 * wires up (DAMO-NLP-SG/VideoLLaMA2 `videollama2/__init__.py`, `mm_utils.py`):
 *
 * 1. One image or one video: an image is decoded and processed (`process_image`,
 *    aspect_ratio None); a video (a file, or its decoded frames) is sampled uniformly to
 *    `num_frames` (config, default 8) and each frame processed (`process_video`). The tower repeats an image to `num_frames` frames.
 * 2. The modal token (`<image>` / `<video>`) + "\n" is prepended to the first user message; Mistral
 *    checkpoints get the `<<SYS>>` system message, Qwen2 (2.1) none; the tokenizer's chat template
 *    renders the prompt with the generation prompt.
 * 3. `tokenizer_multimodal_token`: the prompt tokenized in chunks split at the modal token, which
 *    becomes −200 / −201; attention mask = ids != pad (pad := unk when the tokenizer has none).
 * 4. The connector output is spliced in at the placeholder; `generate` runs greedy by default
 *    (do_sample False; with sampling temperature 0.2 and top_p 0.9 unless given), max_new_tokens
 *    2048, stopping on eos; the answer is decoded without special tokens and stripped.
 */
import * as tf from '@tensorflow/tfjs';
import { ChatMessage, TracedTensor, contentParts, since, splitSystem } from '../chat';
import { Embedded, GenerationMode, ModelLoadOptions, PreparedInputs, Tap } from '../contract';
import { ChatPipeline, PipelineChatOptions } from '../pipeline';
import { readJson } from '../../io/config';
import { GenerationOptions } from '../../generation';
import { loadImage } from '../../media/image';
import { Tokenizer, loadTokenizer } from '../../tokenizers';
import { loadVideoLlama2Frames, videoLlama2FrameIndices } from './frames';
import { VideoError, probeVideo } from '../../media/video';
import { TowerImageProcessor, loadTowerImageProcessor, processFrames } from '../clip/image_processing';
import { MediaInput, VideoLLaMA2 } from './modeling';
import { encodeMarked, markUserText, stripMarks } from '../../tokenizers/user_text';
import { DEFAULT_IMAGE_TOKEN, DEFAULT_VIDEO_TOKEN, tokenizerMultimodalToken } from './tokenization';
import { resolveVisionTowerDir } from './vision';
import fs from 'node:fs';
import path from 'node:path';

/** mm_infer's system message for Mistral-based checkpoints (verbatim, including the double space). */
export const MISTRAL_SYSTEM =
  '<<SYS>>\nYou are a helpful, respectful and honest assistant. Always answer as helpfully as possible, while being safe.  ' +
  'Your answers should not include any harmful, unethical, racist, sexist, toxic, dangerous, or illegal content. ' +
  'Please ensure that your responses are socially unbiased and positive in nature.\n' +
  'If a question does not make any sense, or is not factually coherent, explain why instead of answering something not correct. ' +
  "If you don't know the answer to a question, please don't share false information.\n<</SYS>>";

export interface VideoLLaMA2ChatOptions extends PipelineChatOptions {
  /** Frames sampled from a video (default: config `num_frames`). */
  numFrames?: number;
  /** `process_image`/`process_video` aspect ratio: null (mm_infer / model_init) or 'pad'. */
  aspectRatio?: 'pad' | null;
}

export interface VideoLLaMA2Prepared extends PreparedInputs {
  media: MediaInput[];
  modal: 'image' | 'video' | 'text';
}

export class VideoLLaMA2Chat extends ChatPipeline<VideoLLaMA2Prepared, VideoLLaMA2ChatOptions> {
  readonly family = 'videollama2' as const;
  /** mm_infer decodes greedily unless asked to sample. */
  readonly samplesByDefault = false;

  constructor(readonly model: VideoLLaMA2, readonly tokenizer: Tokenizer, readonly processor: TowerImageProcessor, readonly eosIds: number[]) {
    super();
  }

  /** A video is sampled to `num_frames` frames. */
  get videoFrames(): number {
    return this.model.numFrames;
  }

  /**
   * Loads the model, tokenizer and the tower's image processor from a VideoLLaMA2 checkpoint
   * directory. `visionTowerDir` overrides where `mm_vision_tower` is looked up.
   */
  static async fromPretrained(dir: string, opts: ModelLoadOptions = {}): Promise<VideoLLaMA2Chat> {
    const log = opts.log ?? opts.warn ?? (() => undefined);
    const tokenizer = loadTokenizer(dir);
    const model = await VideoLLaMA2.fromPretrained(dir, { ...opts, log });
    try {
      const towerDir = resolveVisionTowerDir(model.config.mm_vision_tower, dir, { visionTowerDir: opts.visionTowerDir });
      const processor = loadTowerImageProcessor(towerDir, undefined, log);
      return new VideoLLaMA2Chat(model, tokenizer, processor, eosIds(dir, tokenizer));
    } catch (e) {
      model.dispose();
      throw e;
    }
  }

  get isMistral(): boolean {
    return ['videollama2', 'videollama2_mistral', 'videollama2_mixtral'].includes(this.model.config.model_type);
  }

  /** model_init: pad_token := unk_token when the tokenizer has no pad token. */
  get padTokenId(): number | undefined {
    return this.tokenizer.padTokenId ?? this.tokenizer.unkTokenId;
  }

  async prepare(messages: ChatMessage[], opts: VideoLLaMA2ChatOptions = {}): Promise<VideoLLaMA2Prepared> {
    const t0 = performance.now();
    const { system, messages: msgs } = splitSystem(messages, opts.system);
    const media: MediaInput[] = [];
    let modal: 'image' | 'video' | 'text' = 'text';
    const rendered: { role: string; content: string }[] = [];
    const mark = (t: string) => (opts.parseSpecial ? t : markUserText(t));
    try {
      for (const [i, m] of msgs.entries()) {
          const texts: string[] = [];
        for (const part of contentParts(m.content)) {
          if (part.type === 'text') {
            if (part.text.includes(DEFAULT_IMAGE_TOKEN) || part.text.includes(DEFAULT_VIDEO_TOKEN)) {
              throw new Error(`message ${i}: the text contains a reserved modal token (${DEFAULT_IMAGE_TOKEN} / ${DEFAULT_VIDEO_TOKEN}); pass media as image/video parts`);
            }
            texts.push(mark(part.text));
            continue;
          }
          if (media.length) throw new Error('VideoLLaMA 2 answers about one image or one video per conversation (upstream mm_infer takes one); got more');
          if (part.type === 'image') {
            modal = 'image';
            const img = await loadImage(part.image, { name: typeof part.image === 'string' ? part.image : `message ${i} image` });
            media.push({ modal: 'image', pixels: this.pixels([img], opts) });
          } else {
            modal = 'video';
            const numFrames = opts.numFrames ?? this.model.numFrames;
            const video = part.video;
            const name = typeof video === 'string' ? video : `message ${i} video`;
            const info = typeof video === 'string' ? await probeVideo(video) : undefined;
            const frameCount = info ? info.frameCount : video.length;
            // Upstream would repeat frames (uniform sampling with rounding) or pad with black
            // frames (gif); we refuse rather than answer about frames that are not there.
            if (frameCount < numFrames) {
              throw new VideoError('too_few_frames', name, `${name}: the video has ${frameCount} frame(s), fewer than the ` +
                `${numFrames} requested (num_frames${opts.numFrames ? '' : ' from config.json'}); pass --num-frames ${frameCount} or fewer`);
            }
            // decoded frames are sampled as a file of that many frames would be (uniform, no window)
            const frames = typeof video === 'string'
              ? (await loadVideoLlama2Frames(video, { numFrames, info })).frames
              : await Promise.all(videoLlama2FrameIndices(frameCount, NaN, { numFrames }).map((f) => loadImage(video[f], { name: `${name} frame ${f}` })));
            media.push({ modal: 'video', pixels: this.pixels(frames, opts) });
          }
        }
        rendered.push({ role: m.role, content: texts.join('\n') });
      }
      // mm_infer: modal token + '\n' + the first message's text
      const token = modal === 'image' ? DEFAULT_IMAGE_TOKEN : modal === 'video' ? DEFAULT_VIDEO_TOKEN : '';
      if (token) rendered[0].content = `${token}\n${rendered[0].content}`;
      const sys = system !== undefined ? (this.isMistral ? wrapSys(mark(system)) : mark(system)) : this.isMistral ? MISTRAL_SYSTEM : undefined;
      if (sys !== undefined) rendered.unshift({ role: 'system', content: sys });
      const marked = this.tokenizer.applyChatTemplate(rendered, { addGenerationPrompt: true });
      const parseSpecial = opts.parseSpecial;
      const inputIds = token
        ? tokenizerMultimodalToken(marked, this.tokenizer, token, (c) => encodeMarked(this.tokenizer, c, { addSpecialTokens: false, parseSpecial }))
        : encodeMarked(this.tokenizer, marked, { addSpecialTokens: true, parseSpecial });
      const prompt = stripMarks(marked);
      const pad = this.padTokenId;
      const attentionMask = inputIds.map((t) => (pad !== undefined && t === pad ? 0 : 1));
      const budget = this.model.config.llm.maxPositionEmbeddings;
      const llmLen = inputIds.length - (token ? 1 : 0) + (media.length ? this.model.connectorTokens(modal === 'video' ? media[0].pixels.shape[0] : this.model.numFrames) : 0);
      if (llmLen >= budget) throw new Error(`prompt of ${llmLen} positions (text + ${modal} tokens) exceeds max_position_embeddings = ${budget}`);
      return { prompt, inputIds, attentionMask, media, modal, preprocessMs: since(t0), dispose: () => tf.dispose(media.map((m) => m.pixels)) };
    } catch (e) {
      tf.dispose(media.map((m) => m.pixels));
      throw e;
    }
  }

  private pixels(frames: Parameters<typeof processFrames>[0], opts: VideoLLaMA2ChatOptions): tf.Tensor4D {
    const b = processFrames(frames, this.processor, opts.aspectRatio ?? null);
    return tf.tensor4d(b.data, b.shape);
  }

  /** mm_infer: greedy, or sampling with temperature 0.2 and top_p 0.9 unless given. */
  generationDefaults(mode: GenerationMode): GenerationOptions {
    return mode === 'sample' ? { doSample: true, temperature: 0.2, topP: 0.9, topK: 0 } : { doSample: false };
  }

  /** HF generate's eos plus the tokenizer's; pad = eos. */
  stopIds(): { eosTokenId: number[]; padTokenId?: number } {
    return { eosTokenId: this.eosIds, padTokenId: this.tokenizer.eosTokenId };
  }

  /** The checkpoint key map (adapters, export). */
  get keymap() {
    return this.model.keyMap();
  }

  get llm() {
    return this.model.llm;
  }

  /** The connector output spliced in at the placeholder (`prepare_inputs_labels_for_multimodal`). */
  embed(prep: VideoLLaMA2Prepared, taps?: Tap | null): Embedded {
    const sp = this.model.prepareInputsEmbeds(prep.inputIds, prep.media, { attentionMask: prep.attentionMask, taps });
    return { inputsEmbeds: sp.inputsEmbeds, attentionMask: sp.attentionMask };
  }

  forward(prep: VideoLLaMA2Prepared, taps: Tap): tf.Tensor {
    return this.model.forward(prep.inputIds, prep.media, { attentionMask: prep.attentionMask, taps });
  }

  traceInputs(prep: VideoLLaMA2Prepared): Map<string, TracedTensor> {
    const out = new Map<string, TracedTensor>();
    out.set('input_ids', { data: Int32Array.from(prep.inputIds), shape: [1, prep.inputIds.length], dtype: 'int32' });
    if (prep.media.length) {
      const px = prep.media[0].pixels;
      const shape = prep.modal === 'image' ? [1, ...px.shape.slice(-3)] : px.shape;
      out.set('pixel_values', { data: Float32Array.from(px.dataSync()), shape, dtype: 'float32' });
    }
    return out;
  }

  /** Decoded without special tokens, stripped (mm_infer). */
  decodeAnswer(ids: number[]): string {
    return this.tokenizer.decode(ids, { skipSpecialTokens: true }).trim();
  }

  decodeStream(ids: number[]): string {
    return this.tokenizer.decode(ids, { skipSpecialTokens: true });
  }

  dispose(): void {
    this.model.dispose();
  }
}

/** A user system prompt in the `<<SYS>>` wrapping mm_infer uses for Mistral. */
function wrapSys(s: string): string {
  return s.startsWith('<<SYS>>') ? s : `<<SYS>>\n${s}\n<</SYS>>`;
}

/**
 * Stop ids: HF generate's eos (generation_config.json, else config.json `eos_token_id`) plus the
 * tokenizer's eos, which mm_infer's KeywordsStoppingCriteria stops on.
 */
function eosIds(dir: string, tokenizer: Tokenizer): number[] {
  const ids = new Set<number>();
  const add = (v: unknown) => {
    for (const x of Array.isArray(v) ? v : [v]) if (Number.isInteger(x)) ids.add(x as number);
  };
  const gc = path.join(dir, 'generation_config.json');
  if (fs.existsSync(gc)) add(readJson(gc).eos_token_id);
  else add(readJson(path.join(dir, 'config.json')).eos_token_id);
  if (tokenizer.eosTokenId !== undefined) ids.add(tokenizer.eosTokenId);
  return [...ids];
}
