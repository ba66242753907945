/**
 * MiniCPM-V 2.6 fine-tuning data, as upstream OpenBMB/MiniCPM-V `finetune/dataset.py` (commit
 * 0dbb566) builds it with `llm_type='qwen'` (`finetune_ds.sh` for 2.6) and `batch_vision=True`:
 *
 * Sample: `{"image": "a.png" | {"<image_00>": "a.png", ...}, "conversations": [{"role": "user" |
 * "assistant", "content": "..."}, ...]}`; the first turn is the user's.
 *
 * 1. Images (`preprocess`): each is `slice_image(img, max_slice_nums, scale_resolution,
 *    patch_size)` with the FINETUNE slice config: `model.config.slice_config` with
 *    `max_slice_nums` := the training argument (default 9) and `scale_resolution` from the model
 *    config (MiniCPMVSliceConfig default 448) — not preprocessor_config.json's inference value.
 *    The source image comes first, then the slices row-major; each goes through ToTensor +
 *    Normalize(0.5, 0.5) and `reshape_by_patch` → [3, P, L·P], `tgt_sizes` [h, w].
 * 2. Placeholder: `<image>` + `<unk>`×query_num + `</image>`; only when the image was sliced it is
 *    prefixed with `<image_id>k</image_id>` (k counts sliced images) and followed by the slice
 *    rows (`<slice>` + `<unk>`×Q + `</slice>` per column, rows joined by "\n").
 *    One image: every `<image>` of the first turn becomes the placeholder (none: placeholder +
 *    "\n" + content). Several images: every turn is split at `<image_NN>` and re-joined with "\n"
 *    (upstream's `'\n'.join(parts)`, empty parts included).
 * 3. `conversation_to_ids_qwen2`: the chat template (2.6's adds the default system prompt),
 *    tokenized without special tokens; `context` = 1 except, for each `assistant` token right
 *    after `<|im_start|>`, positions [idx + 2 (+4 for a `<think>` block in the last answer),
 *    first `<|im_end|>` after it] = 0.
 * 4. `conversation_to_ids`: truncate to max_length, refuse a sample with no supervised token, and
 *    build the PRE-SHIFTED targets: target[i−1] = ids[i] where context[i] = 0, and target[i−1] =
 *    eos_id where context switches 0 → 1 at i; everything else −100. `image_bound` pairs each
 *    `<image>`/`<slice>` (+1) with the next `</image>`/`</slice>`; position_ids = arange(S).
 * 5. `data_collator`: pads input_ids / position_ids / attention_mask with 0 and labels with −100.
 */
import { MiniCPMVConfig, MiniCPMVSliceConfig } from './config';
import { MiniCPMVInputs } from './modeling';
import { MINICPMV_PREPROCESSOR_DEFAULTS, MiniCPMVImageProcessor, PixelSlice } from './processing';
import { loadImage } from '../../media/image';
import { RgbImage } from '../../media/types';
import { Tokenizer } from '../../tokenizers';
import { RawSample, conversationsOf, resolveMedia, sampleName } from '../../training/data';
import { IGNORE_INDEX } from '../../training/loss';

/** The special strings of `MiniCPMVTokenizerFast` (tokenization_minicpmv_fast.py). */
export const MINICPMV_TOKENS = {
  imStart: '<image>', imEnd: '</image>', sliceStart: '<slice>', sliceEnd: '</slice>',
  imIdStart: '<image_id>', imIdEnd: '</image_id>', chatStart: '<|im_start|>', chatEnd: '<|im_end|>',
} as const;

/** One preprocessed sample (`SupervisedDataset.__getitem__`). */
export interface MiniCPMVTrainExample {
  inputIds: number[];
  /** Pre-shifted targets: labels[i] is the token after position i, or −100. */
  labels: number[];
  positionIds: number[];
  /** [start, end) of each image's `<unk>` run. */
  imageBound: [number, number][];
  /** Source image then slices, image by image, [3, P, L·P] each. */
  pixelValues: PixelSlice[];
  tgtSizes: [number, number][];
  /** The chat-template text the ids come from (placeholders included). */
  text: string;
}

/** A collated batch: the model inputs plus labels (`data_collator`). */
export interface MiniCPMVTrainBatch {
  inputs: MiniCPMVInputs;
  labels: number[][];
  positionIds: number[][];
  attentionMask: number[][];
}

export interface MiniCPMVDataOptions {
  /** Resolves relative `image` paths. */
  dataRoot: string;
  /** Training argument `max_slice_nums` (default 9, finetune.py). */
  maxSliceNums?: number;
  /** `model_max_length` (default 2048). */
  maxLength?: number;
  /** Only 'qwen' (MiniCPM-V 2.6) is supported. */
  llmType?: string;
}

/** finetune.py: `model.config.slice_config` with max_slice_nums := the training argument. */
export function finetuneSliceConfig(cfg: MiniCPMVConfig, maxSliceNums = 9): MiniCPMVSliceConfig {
  return { ...cfg.slice_config, max_slice_nums: maxSliceNums };
}

/** The finetune dataset over a list of raw samples; `example(i)` preprocesses sample i. */
export class MiniCPMVFinetuneData {
  readonly samples: readonly RawSample[];
  readonly maxLength: number;
  readonly queryNum: number;
  readonly processor: MiniCPMVImageProcessor;
  private readonly ids: { imStart: number; imEnd: number; sliceStart: number; sliceEnd: number; chatStart: number; chatEnd: number; assistant: number; eos: number };
  private readonly unk: string;

  constructor(samples: readonly RawSample[], readonly tokenizer: Tokenizer, readonly config: MiniCPMVConfig, readonly opts: MiniCPMVDataOptions) {
    const llmType = opts.llmType ?? 'qwen';
    if (llmType !== 'qwen') throw new Error(`llm_type '${llmType}' is not supported: only 'qwen' (MiniCPM-V 2.6, conversation_to_ids_qwen2)`);
    const maxSlices = opts.maxSliceNums ?? 9;
    if (!Number.isInteger(maxSlices) || maxSlices < 1) throw new Error(`max_slice_nums must be an integer >= 1, got ${maxSlices}`);
    this.maxLength = opts.maxLength ?? 2048;
    if (!Number.isInteger(this.maxLength) || this.maxLength < 2) throw new Error(`max_length must be an integer >= 2, got ${this.maxLength}`);
    const sc = finetuneSliceConfig(config, maxSlices);
    if (sc.patch_size !== config.vision_config.patch_size) {
      throw new Error(`slice_config.patch_size (${sc.patch_size}) differs from the vision patch_size (${config.vision_config.patch_size}); not supported`);
    }
    this.samples = samples;
    this.queryNum = config.query_num;
    // finetune.build_transform(): ToTensor + Normalize(0.5, 0.5); slicing with the finetune config
    this.processor = new MiniCPMVImageProcessor({
      ...structuredClone(MINICPMV_PREPROCESSOR_DEFAULTS), max_slice_nums: sc.max_slice_nums, scale_resolution: sc.scale_resolution,
      patch_size: sc.patch_size, norm_mean: [0.5, 0.5, 0.5], norm_std: [0.5, 0.5, 0.5], slice_mode: true, image_feature_size: config.query_num,
    });
    const id = (t: string, why: string) => {
      const v = tokenizer.tokenToId(t);
      if (v === undefined) throw new Error(`the tokenizer has no '${t}' token (${why})`);
      return v;
    };
    const T = MINICPMV_TOKENS;
    this.ids = {
      imStart: id(T.imStart, 'image start'), imEnd: id(T.imEnd, 'image end'), sliceStart: id(T.sliceStart, 'slice start'), sliceEnd: id(T.sliceEnd, 'slice end'),
      chatStart: id(T.chatStart, 'turn start'), chatEnd: id(T.chatEnd, 'turn end'),
      // conversation_to_ids_qwen2 finds assistant turns with convert_tokens_to_ids('assistant'): one token in Qwen2's vocabulary
      assistant: id('assistant', "conversation_to_ids_qwen2 finds the assistant turns by the single token 'assistant'"),
      eos: tokenizer.eosTokenId ?? id(T.chatEnd, 'eos'),
    };
    if (tokenizer.unkTokenId === undefined) throw new Error("the tokenizer has no unk token (the image placeholder is made of '<unk>')");
    this.unk = tokenizer.idToToken(tokenizer.unkTokenId)!;
  }

  get length(): number {
    return this.samples.length;
  }

  /** `SupervisedDataset.__getitem__(i)`. Errors name the sample. */
  async example(i: number): Promise<MiniCPMVTrainExample> {
    const s = this.samples[i];
    if (!s) throw new Error(`sample ${i} does not exist (${this.samples.length} samples)`);
    const what = sampleName(s, i);
    const convs = conversationsOf(s, what).map((c, k) => {
      if (c.role !== 'user' && c.role !== 'assistant') throw new Error(`${what}: conversations[${k}].role must be 'user' or 'assistant', got ${JSON.stringify(c.role)}`);
      if (typeof c.content !== 'string') throw new Error(`${what}: conversations[${k}].content must be a string`);
      return { role: c.role, content: c.content };
    });
    // preprocess(): asserts
    if (convs.length < 2) throw new Error(`${what}: conversations must have at least 2 turns, got ${convs.length}`);
    if (convs[0].role !== 'user') throw new Error(`${what}: the first turn must be the user's, got '${convs[0].role}'`);
    if (!convs.some((c) => c.role === 'assistant')) throw new Error(`${what}: no assistant turn (nothing to learn)`);

    // images_dict: name -> path (insertion order)
    if (s.image === undefined) throw new Error(`${what}: no 'image' (MiniCPM-V fine-tuning samples carry an image path, or a {"<image_NN>": path} map)`);
    const entries: [string, unknown][] = typeof s.image === 'string' ? [['<image>', s.image]]
      : s.image !== null && typeof s.image === 'object' && !Array.isArray(s.image) ? Object.entries(s.image as Record<string, unknown>) : [];
    if (!entries.length) throw new Error(`${what}: 'image' must be a path or a non-empty {"<image_NN>": path} map, got ${JSON.stringify(s.image)}`);

    const pixelValues: PixelSlice[] = [];
    const tgtSizes: [number, number][] = [];
    const placeholders = new Map<string, string>();
    let imageIdCnt = 0;
    for (const [name, p] of entries) {
      const file = resolveMedia(p, this.opts.dataRoot, `${what}, image '${name}'`);
      const img = await loadImage(file, { name: file });
      placeholders.set(name, this.placeholder(img, pixelValues, tgtSizes, () => imageIdCnt++));
    }

    if (entries.length === 1 && placeholders.has('<image>')) {
      const ph = placeholders.get('<image>')!;
      const c0 = convs[0].content;
      convs[0] = { ...convs[0], content: c0.includes('<image>') ? c0.split('<image>').join(ph) : `${ph}\n${c0}` };
    } else {
      const pattern = /(<image_\d+>)/;
      for (let k = 0; k < convs.length; k++) {
        const parts = convs[k].content.split(pattern); // re.split with a capture group
        for (let j = 0; j < parts.length; j++) {
          if (!parts[j].trim()) continue;
          if (/^<image_\d+>/.test(parts[j])) {
            const ph = placeholders.get(parts[j]);
            if (ph === undefined) throw new Error(`${what}: conversations[${k}] mentions ${parts[j]}, which is not a key of 'image' (${[...placeholders.keys()].join(', ')})`);
            parts[j] = ph;
          }
        }
        convs[k] = { ...convs[k], content: parts.join('\n') };
      }
    }

    const { ids, context, text } = this.conversationToIdsQwen2(convs);
    const out = this.buildTargets(ids, context, what);
    const nBounds = out.imageBound.length;
    if (nBounds !== pixelValues.length) {
      throw new Error(`${what}: the text has ${nBounds} image slot(s) (<image>/<slice> ... </image>/</slice>) for ${pixelValues.length} image(s) and slices ` +
        `(an '<image>' tag written more than once, or truncated by max_length ${this.maxLength}?)`);
    }
    return { ...out, pixelValues, tgtSizes, text };
  }

  /** Slices one image (appending its pixels) and returns its placeholder text. */
  private placeholder(img: RgbImage, pixels: PixelSlice[], sizes: [number, number][], nextId: () => number): string {
    const { images, grid } = this.processor.sliceImage(img);
    for (const im of images) {
      const { pixels: px, tgtSize } = this.processor.toPatches(im);
      pixels.push(px);
      sizes.push(tgtSize);
    }
    const T = MINICPMV_TOKENS, unks = this.unk.repeat(this.queryNum);
    let ph = T.imStart + unks + T.imEnd;
    if (grid) {
      // use_image_id (qwen) only for sliced images; get_grid_placeholder(new_schema=True)
      ph = `${T.imIdStart}${nextId()}${T.imIdEnd}` + ph;
      const row = (T.sliceStart + unks + T.sliceEnd).repeat(grid[0]);
      ph += Array.from({ length: grid[1] }, () => row).join('\n');
    }
    return ph;
  }

  /** `conversation_to_ids_qwen2`: ids of the templated chat and the context mask (0 = answer). */
  conversationToIdsQwen2(convs: { role: string; content: string }[]): { ids: number[]; context: Uint8Array; text: string } {
    const last = convs[convs.length - 1].content;
    const enableThinking = last.includes('<think>') && last.includes('</think>');
    const text = this.tokenizer.applyChatTemplate(convs, { addGenerationPrompt: false, extra: { enable_thinking: enableThinking } });
    const ids = this.tokenizer.encode(text, { addSpecialTokens: false });
    const offset = text.includes('<think>\n\n</think>\n\n') ? 4 : 0;
    const { chatStart, assistant, chatEnd } = this.ids;
    const starts = new Set<number>(), assistants: number[] = [], ends: number[] = [];
    ids.forEach((t, i) => {
      if (t === chatStart) starts.add(i);
      if (t === assistant) assistants.push(i);
      if (t === chatEnd) ends.push(i);
    });
    const context = new Uint8Array(ids.length).fill(1);
    assistants.forEach((a, k) => {
      if (!starts.has(a - 1)) return;
      const st = a + 2 + (k === assistants.length - 1 ? offset : 0);
      const end = ends.find((e) => e > st);
      if (end !== undefined) context.fill(0, st, end + 1); // context[st: end_idx + 1] = 0
    });
    return { ids, context, text };
  }

  /** `conversation_to_ids` after the ids: truncation, pre-shifted targets, image_bound, position ids. */
  buildTargets(allIds: number[], allContext: Uint8Array, what = 'sample'): Omit<MiniCPMVTrainExample, 'pixelValues' | 'tgtSizes' | 'text'> {
    const ids = allIds.slice(0, this.maxLength);
    const context = allContext.subarray(0, this.maxLength);
    if (context.every((c) => c === 1)) {
      throw new Error(`${what}: no tokens available to compute loss (every label is masked: no assistant answer ` +
        `${allIds.length > this.maxLength ? `within max_length ${this.maxLength}` : "found after '<|im_start|>assistant'"})`);
    }
    const labels = new Array<number>(ids.length).fill(IGNORE_INDEX);
    for (let i = 1; i < ids.length; i++) {
      if (context[i] === 0) labels[i - 1] = ids[i];
      if (context[i] === 1 && context[i - 1] === 0) labels[i - 1] = this.ids.eos;
    }
    const { imStart, sliceStart, imEnd, sliceEnd } = this.ids;
    const starts: number[] = [], ends: number[] = [];
    ids.forEach((t, i) => {
      if (t === imStart || t === sliceStart) starts.push(i + 1);
      if (t === imEnd || t === sliceEnd) ends.push(i);
    });
    if (starts.length !== ends.length) throw new Error(`${what}: image start tokens (${starts.length}) != image end tokens (${ends.length})`);
    return { inputIds: ids, labels, positionIds: ids.map((_, i) => i), imageBound: starts.map((s, k) => [s, ends[k]] as [number, number]) };
  }
}

/** `data_collator`: pads to the longest sample (ids/positions/mask with 0, labels with −100). */
export function collateMiniCPMV(examples: readonly MiniCPMVTrainExample[], maxLength = 2048): MiniCPMVTrainBatch {
  if (!examples.length) throw new Error('collate: no examples');
  const S = Math.max(...examples.map((e) => Math.min(e.inputIds.length, maxLength)));
  const pad = (a: readonly number[], v: number) => {
    const t = a.slice(0, maxLength);
    return t.concat(new Array<number>(S - t.length).fill(v));
  };
  return {
    inputs: {
      inputIds: examples.map((e) => pad(e.inputIds, 0)),
      pixelValues: examples.map((e) => e.pixelValues),
      tgtSizes: examples.map((e) => e.tgtSizes),
      imageBound: examples.map((e) => e.imageBound),
    },
    labels: examples.map((e) => pad(e.labels, IGNORE_INDEX)),
    positionIds: examples.map((e) => pad(e.positionIds, 0)),
    attentionMask: examples.map((e) => pad(e.inputIds.map(() => 1), 0)),
  };
}
