/**
 * MiniCPM-V 2.6 chat, as upstream `MiniCPMV.chat` (modeling_minicpmv.py) with
 * `MiniCPMVProcessor` (processing_minicpmv.py):
 *
 * 1. Each message's content list becomes text: every image is `(<image>./</image>)`, parts are
 *    joined by "\n". A video part is the model card's video recipe: frames sampled at 1 fps, at
 *    most 64, each an image, with `use_image_id` false and `max_slice_nums` 2 for the call.
 * 2. An optional system prompt is prepended; the tokenizer's chat template renders the prompt with
 *    the generation prompt.
 * 3. Each `(<image>./</image>)` is replaced by that image's placeholder (`<image_id>i</image_id>`,
 *    `<image>` + `<unk>`×64 + `</image>`, slice rows), the text is tokenized (no special tokens
 *    for 2.6; a prompt over `max_inp_length` is an error where upstream silently cuts it);
 *    `image_bound` marks each `<unk>` run; the attention
 *    mask is `input_ids != 0` (upstream's padding test, which also masks a literal id-0 token).
 * 4. `get_vllm_embedding` splices the resampler output in; `llm.generate` runs with upstream's
 *    settings: sampling (top_p 0.8, top_k 100, temperature 0.7, repetition penalty 1.05) or,
 *    without sampling, 3 beams with repetition penalty 1.2; eos = `<|im_end|>`, `<|endoftext|>`.
 * 5. The answer is `_decode_text`: ids 0 dropped (sic, upstream), a leading bos and a trailing
 *    terminator removed, decoded, stripped.
 */
import * as tf from '@tensorflow/tfjs';
import { ChatMessage, ContentPart, TracedTensor, VideoInput, contentParts, since, splitSystem } from '../chat';
import { Embedded, GenerationMode, ModelLoadOptions, PreparedInputs, Tap } from '../contract';
import { PipelineChatOptions, ChatPipeline } from '../pipeline';
import { GenerationOptions } from '../../generation';
import { loadImage } from '../../media/image';
import { RgbImage } from '../../media/types';
import { Tokenizer, loadTokenizer } from '../../tokenizers';
import { MINICPMV_KEYMAP } from './keymap';
import { MiniCPMV, MiniCPMVInputs } from './modeling';
import { MiniCPMVImageInputs, MiniCPMVImageProcessor } from './processing';
import { MAX_NUM_FRAMES, decodedVideoFrames, loadMiniCpmvVideoFrames } from './video';
import { encodeMarked, markUserText, stripMarks } from '../../tokenizers/user_text';

export const IMAGE_PATTERN = '(<image>./</image>)';
export const TERMINATORS = ['<|im_end|>', '<|endoftext|>'];

export interface MiniCPMVChatOptions extends PipelineChatOptions {
  /** Slices per image (default from preprocessor_config.json; 2 for video). */
  maxSliceNums?: number;
  /** `<image_id>i</image_id>` before each image (default from the config; false for video). */
  useImageId?: boolean;
  /** Prompt tokens allowed at most (upstream max_inp_length, default 8192; longer prompts are an error). */
  maxInpLength?: number;
  /** Frames of a video at most (default 64). */
  maxVideoFrames?: number;
}

/** The prompt, ready for the model: what upstream's processor returns, plus bookkeeping. */
export interface MiniCPMVPrepared extends PreparedInputs {
  imageBound: [number, number][];
  images: MiniCPMVImageInputs[];
  /** Flattened per-slice pixels and sizes (source first, then slices, image by image). */
  inputs: MiniCPMVInputs;
}

export class MiniCPMVChat extends ChatPipeline<MiniCPMVPrepared, MiniCPMVChatOptions> {
  readonly family = 'minicpmv' as const;
  /** Upstream `chat(sampling=True)` is the default. */
  readonly samplesByDefault = true;
  constructor(readonly model: MiniCPMV, readonly tokenizer: Tokenizer, readonly processor: MiniCPMVImageProcessor) {
    super();
    // upstream chat() asserts these agree between config.json and preprocessor_config.json
    const pc = processor.config, mc = model.config;
    const checks: [string, unknown, unknown][] = [
      ['query_num / image_feature_size', mc.query_num, pc.image_feature_size],
      ['patch_size', mc.vision_config.patch_size, pc.patch_size],
      ['use_image_id', mc.use_image_id, pc.use_image_id],
      ['max_slice_nums', mc.slice_config.max_slice_nums, pc.max_slice_nums],
    ];
    for (const [what, a, b] of checks) {
      if (a !== b) throw new Error(`config.json and preprocessor_config.json disagree on ${what}: ${a} vs ${b}`);
    }
  }

  /** Loads the model, tokenizer and image processor from a MiniCPM-V checkpoint directory. */
  static async fromPretrained(dir: string, opts: ModelLoadOptions = {}): Promise<MiniCPMVChat> {
    const log = opts.log ?? opts.warn;
    const tokenizer = loadTokenizer(dir);
    const processor = MiniCPMVImageProcessor.fromDir(dir, log);
    const model = MiniCPMV.fromPretrained(dir, { ...opts, warn: log });
    try {
      return new MiniCPMVChat(model, tokenizer, processor);
    } catch (e) {
      model.dispose();
      throw e;
    }
  }

  /** Builds input ids, image bounds and pixels for `messages` (no model compute). */
  async prepare(messages: ChatMessage[], opts: MiniCPMVChatOptions = {}): Promise<MiniCPMVPrepared> {
    const t0 = performance.now();
    const { system, messages: msgs } = splitSystem(messages, opts.system);
    const images: RgbImage[] = [];
    let hasVideo = false;
    const rendered: { role: string; content: string }[] = [];
    for (const [i, m] of msgs.entries()) {
      const texts: string[] = [];
      for (const part of contentParts(m.content)) {
        if (part.type === 'text') {
          if (part.text.includes(IMAGE_PATTERN)) throw new Error(`message ${i}: the text contains the reserved image tag ${IMAGE_PATTERN}; pass images as image parts`);
          texts.push(opts.parseSpecial ? part.text : markUserText(part.text));
        } else if (part.type === 'image') {
          images.push(await loadImage(part.image, { name: typeof part.image === 'string' ? part.image : `message ${i} image` }));
          texts.push(IMAGE_PATTERN);
        } else {
          hasVideo = true;
          const frames = typeof part.video === 'string'
            ? (await loadMiniCpmvVideoFrames(part.video, { maxNumFrames: opts.maxVideoFrames })).frames
            : await decodedVideoFrames(part.video, opts.maxVideoFrames ?? MAX_NUM_FRAMES, `message ${i} video`);
          for (const f of frames) {
            images.push(f);
            texts.push(IMAGE_PATTERN);
          }
        }
      }
      rendered.push({ role: m.role, content: texts.join('\n') });
    }
    if (system) rendered.unshift({ role: 'system', content: opts.parseSpecial ? system : markUserText(system) });
    const prompt = this.tokenizer.applyChatTemplate(rendered, { addGenerationPrompt: true });

    // The video recipe of the model card: use_image_id false, max_slice_nums 2.
    const ppOpts = {
      maxSliceNums: opts.maxSliceNums ?? (hasVideo ? 2 : undefined),
      useImageId: opts.useImageId ?? (hasVideo ? false : undefined),
    };
    const processed = images.map((img) => this.processor.preprocess(img, ppOpts));
    const chunks = prompt.split(IMAGE_PATTERN);
    if (chunks.length - 1 !== processed.length) {
      throw new Error(`the prompt has ${chunks.length - 1} image slot(s) but ${processed.length} image(s) were given`);
    }
    let text = chunks[0];
    processed.forEach((p, i) => {
      text += p.placeholder(i) + chunks[i + 1];
    });
    const maxLen = opts.maxInpLength ?? 8192;
    // 2.6: tokenizer.encode(input_str), no bos prepended; user text as plain text unless parseSpecial
    const ids = encodeMarked(this.tokenizer, text, { addSpecialTokens: true, parseSpecial: opts.parseSpecial });
    text = stripMarks(text);
    // Upstream silently cuts the prompt to max_inp_length (possibly through an image or the
    // question); we refuse instead of answering a different prompt.
    if (ids.length > maxLen) {
      throw new Error(`prompt of ${ids.length} tokens is longer than max_inp_length = ${maxLen} ` +
        `(${processed.length} image(s) with ${processed.reduce((a, p) => a + p.pixelValues.length, 0)} slice(s) at ${this.model.config.query_num} tokens each); ` +
        'shorten the conversation, use fewer images or a smaller max_slice_nums, or raise maxInpLength');
    }
    const imageBound = this.imageBounds(ids);
    const nSlices = processed.reduce((a, p) => a + p.pixelValues.length, 0);
    if (imageBound.length !== nSlices) {
      throw new Error(`the prompt has ${imageBound.length} image slot(s) for ${nSlices} image slice(s)`);
    }
    const llmMax = this.model.config.llm.maxPositionEmbeddings;
    if (ids.length >= llmMax) throw new Error(`prompt of ${ids.length} tokens exceeds max_position_embeddings = ${llmMax}`);
    const inputs: MiniCPMVInputs = {
      inputIds: [ids],
      pixelValues: [processed.flatMap((p) => p.pixelValues)],
      tgtSizes: [processed.flatMap((p) => p.tgtSizes)],
      imageBound: [imageBound],
    };
    return { prompt: text, inputIds: ids, attentionMask: ids.map((t) => (t !== 0 ? 1 : 0)), imageBound, images: processed, inputs, preprocessMs: since(t0), dispose: () => undefined };
  }

  /** upstream `_convert`: [index after <image>/<slice>, index of </image>/</slice>) per image. */
  private imageBounds(ids: number[]): [number, number][] {
    const id = (t: string) => {
      const v = this.tokenizer.tokenToId(t);
      if (v === undefined) throw new Error(`the tokenizer has no '${t}' token`);
      return v;
    };
    const pc = this.processor.config;
    const starts = new Set([id(pc.im_start), id(pc.slice_start)]);
    const ends = new Set([id(pc.im_end), id(pc.slice_end)]);
    const s: number[] = [], e: number[] = [];
    ids.forEach((t, i) => {
      if (starts.has(t)) s.push(i + 1);
      if (ends.has(t)) e.push(i);
    });
    if (s.length !== e.length) {
      throw new Error(`unbalanced image tags in the prompt: ${s.length} opening and ${e.length} closing (prompt truncated inside an image?)`);
    }
    return s.map((v, k) => [v, e[k]]);
  }

  /** upstream chat(): sampling (top_p 0.8, top_k 100, temperature 0.7, repetition penalty 1.05), else 3 beams with penalty 1.2. */
  generationDefaults(mode: GenerationMode): GenerationOptions {
    return mode === 'sample'
      ? { doSample: true, topP: 0.8, topK: 100, temperature: 0.7, repetitionPenalty: 1.05 }
      : { doSample: false, numBeams: 3, repetitionPenalty: 1.2 };
  }

  /** eos = `<|im_end|>`, `<|endoftext|>`; pad 0. */
  stopIds(): { eosTokenId: number[]; padTokenId: number } {
    return { eosTokenId: TERMINATORS.map((t) => this.tokenizer.tokenToId(t)).filter((v): v is number => v !== undefined), padTokenId: 0 };
  }

  /** The checkpoint key map (adapters, export). */
  get keymap() {
    return MINICPMV_KEYMAP;
  }

  get llm() {
    return this.model.llm;
  }

  /** `get_vllm_embedding`. */
  embed(prep: MiniCPMVPrepared, taps?: Tap | null): Embedded {
    return { inputsEmbeds: this.model.embed(prep.inputs, { taps }) as tf.Tensor3D, attentionMask: prep.attentionMask };
  }

  forward(prep: MiniCPMVPrepared, taps: Tap): tf.Tensor {
    const keep = new Set(['vpm.last_hidden_state', 'resampler.out', 'llm.inputs_embeds', 'llm.layer0', 'llm.layer_last', 'llm.norm', 'llm.logits']);
    return this.model.forward(prep.inputs, { taps: (name, t) => keep.has(name) && taps(name, t) });
  }

  traceInputs(prep: MiniCPMVPrepared): Map<string, TracedTensor> {
    const out = new Map<string, TracedTensor>();
    out.set('input_ids', { data: Int32Array.from(prep.inputIds), shape: [1, prep.inputIds.length], dtype: 'int32' });
    out.set('image_bound', { data: Int32Array.from(prep.imageBound.flat()), shape: [prep.imageBound.length, 2], dtype: 'int32' });
    const sizes = prep.inputs.tgtSizes[0];
    out.set('tgt_sizes', { data: Int32Array.from(sizes.flat()), shape: [sizes.length, 2], dtype: 'int32' });
    prep.inputs.pixelValues[0].forEach((p, i) => out.set(`pixel_values.${i}`, { data: Float32Array.from(p.data), shape: [...p.shape], dtype: 'float32' }));
    return out;
  }

  /** Streamed text: decoded with the terminators removed, as upstream's stream mode. */
  decodeStream(ids: number[]): string {
    return TERMINATORS.reduce((s, t) => s.split(t).join(''), this.tokenizer.decode(ids));
  }

  /** upstream `_decode_text`. */
  decodeAnswer(ids: number[]): string {
    const terminators = new Set(TERMINATORS.map((t) => this.tokenizer.tokenToId(t)));
    let r = ids.filter((t) => t !== 0);
    if (r.length && r[0] === this.tokenizer.bosTokenId) r = r.slice(1);
    if (r.length && terminators.has(r[r.length - 1])) r = r.slice(0, -1);
    return this.tokenizer.decode(r).trim();
  }

  dispose(): void {
    this.model.dispose();
  }
}

/** Convenience: messages for one user turn with images/video and a question. */
export function userTurn(prompt: string, media: { images?: (string | Uint8Array | RgbImage)[]; video?: VideoInput } = {}): ChatMessage[] {
  const parts: ContentPart[] = [];
  for (const image of media.images ?? []) parts.push({ type: 'image', image });
  if (media.video) parts.push({ type: 'video', video: media.video });
  parts.push({ type: 'text', text: prompt });
  return [{ role: 'user', content: parts }];
}

