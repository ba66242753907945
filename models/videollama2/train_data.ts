/**
 * VideoLLaMA 2 training data, as upstream DAMO-NLP-SG/VideoLLaMA2 `videollama2/train.py`
 * (commit c0bb03a) builds it: `LazySupervisedDataset.__getitem__`, `preprocess_multimodal`,
 * `preprocess` (finetune stage) / `preprocess_plain` (pretraining stage) and
 * `DataCollatorForSupervisedDataset`.
 *
 * Sample: `{"video": "clip.mp4"} | {"image": "a.png"}` (relative to the data folder) and
 * `"conversations": [{"from": "human" | "gpt", "value": "..."}, ...]`.
 *
 * 1. Media: `process_image(path, processor, aspect_ratio)` → [1, 3, S, S], or
 *    `process_video(path, processor, aspect_ratio, num_frames)` → [T, 3, S, S] (uniform sampling,
 *    models/videollama2/frames.ts); `aspect_ratio='pad'` squares each frame with the processor's
 *    mean colour first (`--image_aspect_ratio pad` in upstream's scripts).
 * 2. `preprocess_multimodal`: in every turn that mentions the modal tag (`<image>` / `<video>`),
 *    all tags are removed and one is put in front: `<tag>\n` + text (stripped).
 * 3. `preprocess`: a leading non-human turn is dropped; the turns (human → user, gpt → assistant)
 *    go through the tokenizer's chat template, tokenized with `tokenizer_multimodal_token` (the tag
 *    becomes ONE placeholder id, −200 / −201). Labels = ids, with, for the k-th (human, gpt) pair,
 *    [cur, len(tok(template(msgs[:2k+1], add_generation_prompt=True)))) = −100 where
 *    cur = len(tok(template(msgs[:2k]))) — lengths measured on separately tokenized prefixes.
 *    `preprocess_plain`: exactly one (human, gpt) pair, text = human + " " + gpt, no template, no
 *    BOS/EOS; labels = ids with only the placeholder masked.
 * 4. Collator: pads input_ids with pad_token_id (:= unk when the tokenizer has none) and labels
 *    with −100, truncates to model_max_length; attention_mask = input_ids != pad_token_id.
 *
 * Where upstream silently substitutes another sample (an unreadable media file) or ignores the
 * media (a tag missing from the text, or a tag without media), this throws, naming the sample.
 */
import { loadImage } from '../../media/image';
import { Tokenizer } from '../../tokenizers';
import { VideoLLaMA2Config } from './config';
import { loadVideoLlama2Frames } from './frames';
import { AspectRatio, PixelBatch, TowerImageProcessor, processFrames } from '../clip/image_processing';
import { DEFAULT_IMAGE_TOKEN, DEFAULT_VIDEO_TOKEN, MODAL_INDEX_MAP, tokenizerMultimodalToken } from './tokenization';
import { RawSample, conversationsOf, resolveMedia, sampleName } from '../../training/data';
import { IGNORE_INDEX } from '../../training/loss';

/** One preprocessed sample. */
export interface VideoLLaMA2TrainExample {
  /** Token ids with the media placeholder id (−200 image, −201 video). */
  inputIds: number[];
  /** NOT shifted: the model's loss shifts (HF causal LM). */
  labels: number[];
  /** The processed media, or null for a text-only sample. */
  media: { modal: 'image' | 'video'; pixels: PixelBatch } | null;
  /** The text that was tokenized. */
  text: string;
}

/** A collated batch (`DataCollatorForSupervisedDataset`). */
export interface VideoLLaMA2TrainBatch {
  inputIds: number[][];
  labels: number[][];
  attentionMask: number[][];
  /** Per sample (null: text-only). */
  media: ({ modal: 'image' | 'video'; pixels: PixelBatch } | null)[];
}

export interface VideoLLaMA2DataOptions {
  /** upstream `--data_folder`: relative media paths are joined to it. */
  dataRoot: string;
  /** Frames per video (default: config `num_frames`, which train.py sets from `--num_frames`). */
  numFrames?: number;
  /** 'pad' (default when config.json says so or says nothing) or null. */
  aspectRatio?: AspectRatio;
  /** `model_max_length` (default: config `tokenizer_model_max_length`, else 2048 as upstream's scripts). */
  maxLength?: number;
  /** `preprocess_plain` (pretraining stage, `tune_mm_mlp_adapter`) instead of `preprocess`. */
  plain?: boolean;
}

const ROLES: Record<string, 'user' | 'assistant'> = { human: 'user', gpt: 'assistant' };

export class VideoLLaMA2TrainData {
  readonly samples: readonly RawSample[];
  readonly numFrames: number;
  readonly aspectRatio: AspectRatio;
  readonly maxLength: number;
  readonly padTokenId: number;

  constructor(samples: readonly RawSample[], readonly tokenizer: Tokenizer, readonly processor: TowerImageProcessor, config: VideoLLaMA2Config, readonly opts: VideoLLaMA2DataOptions) {
    this.samples = samples;
    this.numFrames = opts.numFrames ?? config.num_frames;
    if (!Number.isInteger(this.numFrames) || this.numFrames < 1) throw new Error(`num_frames must be a positive integer, got ${this.numFrames}`);
    this.aspectRatio = opts.aspectRatio !== undefined ? opts.aspectRatio : (config.image_aspect_ratio ?? 'pad') === 'pad' ? 'pad' : null;
    this.maxLength = opts.maxLength ?? 2048;
    if (!Number.isInteger(this.maxLength) || this.maxLength < 2) throw new Error(`max_length must be an integer >= 2, got ${this.maxLength}`);
    // train.py: if tokenizer.pad_token is None: tokenizer.pad_token = tokenizer.unk_token
    const pad = tokenizer.padTokenId ?? tokenizer.unkTokenId;
    if (pad === undefined) throw new Error('the tokenizer has neither a pad nor an unk token (train.py pads with pad_token := unk_token)');
    this.padTokenId = pad;
  }

  get length(): number {
    return this.samples.length;
  }

  /** `LazySupervisedDataset.__getitem__(i)`. */
  async example(i: number): Promise<VideoLLaMA2TrainExample> {
    const s = this.samples[i];
    if (!s) throw new Error(`sample ${i} does not exist (${this.samples.length} samples)`);
    const what = sampleName(s, i);
    let turns = conversationsOf(s, what).map((c, k) => {
      if (typeof c.from !== 'string' || !(c.from in ROLES)) throw new Error(`${what}: conversations[${k}].from must be 'human' or 'gpt', got ${JSON.stringify(c.from)}`);
      if (typeof c.value !== 'string') throw new Error(`${what}: conversations[${k}].value must be a string`);
      return { from: c.from, value: c.value };
    });
    const modal = 'image' in s ? 'image' : 'video' in s ? 'video' : null;
    const token = modal === 'image' ? DEFAULT_IMAGE_TOKEN : modal === 'video' ? DEFAULT_VIDEO_TOKEN : null;
    const mentioned = [DEFAULT_IMAGE_TOKEN, DEFAULT_VIDEO_TOKEN].filter((t) => turns.some((c) => c.value.includes(t)));
    if (!token && mentioned.length) {
      throw new Error(`${what}: the conversation mentions ${mentioned.join(' and ')} but the sample has no 'image' or 'video' file`);
    }
    if (token && !turns.some((c) => c.value.includes(token))) {
      throw new Error(`${what}: the sample has ${modal === 'image' ? "an 'image'" : "a 'video'"} but no turn contains the ${token} tag ` +
        '(upstream would silently train without the media)');
    }
    const other = token === DEFAULT_IMAGE_TOKEN ? DEFAULT_VIDEO_TOKEN : DEFAULT_IMAGE_TOKEN;
    if (token && mentioned.includes(other)) throw new Error(`${what}: the sample has ${modal === 'image' ? "an 'image'" : "a 'video'"} but the conversation mentions ${other}`);

    let media: VideoLLaMA2TrainExample['media'] = null;
    if (modal) {
      const file = resolveMedia(s[modal], this.opts.dataRoot, `${what}, ${modal}`);
      if (modal === 'image') {
        const img = await loadImage(file, { name: file });
        media = { modal, pixels: processFrames([img], this.processor, this.aspectRatio) }; // [1, 3, S, S]
      } else {
        const v = await loadVideoLlama2Frames(file, { numFrames: this.numFrames });
        media = { modal, pixels: processFrames(v.frames, this.processor, this.aspectRatio) }; // [T, 3, S, S]
      }
      turns = preprocessMultimodal(turns, token!);
    }
    const r = this.opts.plain ? this.preprocessPlain(turns, token, what) : this.preprocess(turns, token, what);
    if (!r.labels.some((l) => l !== IGNORE_INDEX)) throw new Error(`${what}: every label is masked (no answer to learn from)`);
    return { ...r, media };
  }

  private tok(text: string, token: string | null): number[] {
    return tokenizerMultimodalToken(text, this.tokenizer, token ?? '');
  }

  /** `preprocess` (finetune stage): chat template, per-turn instruction masking. */
  preprocess(turns: { from: string; value: string }[], token: string | null, what = 'sample'): { inputIds: number[]; labels: number[]; text: string } {
    const source = ROLES[turns[0].from] !== 'user' ? turns.slice(1) : turns; // skip the first one if it is not from human
    const messages = source.map((t) => ({ role: ROLES[t.from], content: t.value }));
    const text = this.tokenizer.applyChatTemplate(messages, { addGenerationPrompt: false });
    const inputIds = this.tok(text, token);
    const labels = inputIds.slice();
    if (source.length % 2 !== 0) throw new Error(`${what}: invalid conversation length ${source.length} (after dropping a leading gpt turn): expected (human, gpt) pairs`);
    let cur = 0;
    for (let idx = 1; idx < source.length; idx += 2) {
      const prefix = messages.slice(0, idx - 1);
      if (messages[idx - 1].role !== 'user' || messages[idx].role !== 'assistant') {
        throw new Error(`${what}: turns ${idx - 1} and ${idx} must be a (human, gpt) pair, got (${source[idx - 1].from}, ${source[idx].from})`);
      }
      const instruction = this.tokenizer.applyChatTemplate([...prefix, messages[idx - 1]], { addGenerationPrompt: true });
      const conversation = this.tokenizer.applyChatTemplate([...prefix, messages[idx - 1], messages[idx]], { addGenerationPrompt: false });
      const instructionLen = this.tok(instruction, token).length;
      const conversationLen = this.tok(conversation, token).length;
      for (let k = cur; k < Math.min(instructionLen, labels.length); k++) labels[k] = IGNORE_INDEX; // targets[cur:instruction_len] = IGNORE_INDEX
      cur = conversationLen;
    }
    return { inputIds, labels, text };
  }

  /** `preprocess_plain` (pretraining stage): one pair, "human gpt", only the placeholder masked. */
  preprocessPlain(turns: { from: string; value: string }[], token: string | null, what = 'sample'): { inputIds: number[]; labels: number[]; text: string } {
    if (turns.length !== 2) throw new Error(`${what}: the plain (pretraining) format takes exactly one (human, gpt) pair, got ${turns.length} turns`);
    if (!token || !turns[0].value.includes(token)) throw new Error(`${what}: the plain (pretraining) format needs the media tag in the human turn`);
    const text = turns.map((t) => t.value).join(' ');
    const inputIds = this.tok(text, token);
    const ph = MODAL_INDEX_MAP[token];
    return { inputIds, labels: inputIds.map((t) => (t === ph ? IGNORE_INDEX : t)), text };
  }
}

/** `preprocess_multimodal` for one conversation: the tag moved to the front of each turn that has it. */
export function preprocessMultimodal<T extends { value: string }>(turns: readonly T[], token: string): T[] {
  return turns.map((t) => {
    if (!t.value.includes(token)) return t;
    const rest = t.value.split(token).join('').trim();
    return { ...t, value: `${token}\n${rest}`.trim() };
  });
}

/** `DataCollatorForSupervisedDataset`: right padding, truncation to `maxLength`, mask = ids != pad. */
export function collateVideoLLaMA2(examples: readonly VideoLLaMA2TrainExample[], padTokenId: number, maxLength = 2048): VideoLLaMA2TrainBatch {
  if (!examples.length) throw new Error('collate: no examples');
  const S = Math.min(Math.max(...examples.map((e) => e.inputIds.length)), maxLength);
  const pad = (a: readonly number[], v: number) => a.concat(new Array<number>(Math.max(0, S - a.length)).fill(v)).slice(0, S);
  const inputIds = examples.map((e) => pad(e.inputIds, padTokenId));
  return {
    inputIds,
    labels: examples.map((e) => pad(e.labels, IGNORE_INDEX)),
    attentionMask: inputIds.map((r) => r.map((t) => (t !== padTokenId ? 1 : 0))),
    media: examples.map((e) => e.media),
  };
}
