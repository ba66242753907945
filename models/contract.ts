/**
 * The vision-language model contract every family implements (models/<family>/chat.ts), and the
 * one chat pipeline that drives it (models/pipeline.ts):
 *
 *   messages ──prepare──▶ inputs (ids, attention mask, media tensors, bounds)
 *            ──embed────▶ { inputsEmbeds [1, S, D], attentionMask }   (vision tower + connector + splice)
 *            ──generate─▶ ids (llm = the family's CausalLM)           ──decode──▶ text
 *
 * A family supplies only what is truly its own: the prompt template and media recipe (`prepare`),
 * the splice (`embed`), its upstream generation defaults, and its answer decoding quirks.
 */
import type * as tf from '@tensorflow/tfjs';
import type { CausalLM } from '../layers/decoder';
import type { Tap } from '../layers/taps';
import type { GenerationOptions } from '../generation';
import type { Tokenizer } from '../tokenizers';
import type { ChatMessage, ChatOptions, TracedTensor } from './chat';

export type { Tap };

/** Options of `fromPretrained` / `loadChatModel`, the same for every family. */
export interface ModelLoadOptions {
  /** One line per notice (ignored config keys, resolved paths). Default: none. */
  log?: (msg: string) => void;
  /** @deprecated use `log` (kept for callers of the 0.1 API). */
  warn?: (msg: string) => void;
  /** VideoLLaMA 2: directory of the vision tower when `mm_vision_tower` names a hub repo. */
  visionTowerDir?: string;
  /**
   * How large matrices are held: 'f32' (tfjs tensors), 'stored' (as in the checkpoint, outside
   * the wasm heap), or quantized at load: 'f16' | 'bf16' | 'q8_0' | 'q4_0'. Default: 'f32' when the
   * model fits the tfjs backend, else 'stored' where the native addon is built.
   */
  quantize?: string;
  /** A peft LoRA adapter directory (adapter_config.json + adapter_model.safetensors), applied unmerged. */
  adapter?: string;
}

/** What `prepare` returns: the LLM prompt and the media it refers to. */
export interface PreparedInputs {
  prompt: string;
  inputIds: number[];
  attentionMask: number[];
  /** Image/video decoding and pixel processing time. */
  preprocessMs: number;
  /** Frees the media tensors. */
  dispose(): void;
}

/** What `embed` returns: the LLM's input, ready for `generate`. The caller disposes `inputsEmbeds`. */
export interface Embedded {
  inputsEmbeds: tf.Tensor3D;
  attentionMask: number[];
  /** LLM positions of the prompt (cumsum of the mask, as HF generate), when not 0..S−1. */
  positions?: number[];
}

/** The generation mode chosen from the options: upstream sampling or the family's non-sampling default. */
export type GenerationMode = 'sample' | 'default';

export interface VisionLanguageModel<P extends PreparedInputs = PreparedInputs, O extends ChatOptions = ChatOptions> {
  /** The family's key in the family table (models/families.ts). */
  readonly family: string;
  readonly llm: CausalLM;
  readonly tokenizer: Tokenizer;
  /** Builds the prompt ids and media tensors of `messages` (no model compute). */
  prepare(messages: ChatMessage[], opts: O): Promise<P>;
  /** Vision tower, connector and splice: the LLM's inputs embeddings. */
  embed(inputs: P, taps?: Tap | null): Embedded;
  /** One full forward pass over the prepared prompt (positions 0..S−1); logits [1, S, V]. */
  forward(inputs: P, taps: Tap): tf.Tensor;
  /** The prepared inputs under their golden names (input_ids, pixel_values, …). */
  traceInputs(inputs: P): Map<string, TracedTensor>;
  /** Whether upstream samples when nothing says otherwise. */
  readonly samplesByDefault: boolean;
  /**
   * Frames every video is sampled to, where the family fixes it (VideoLLaMA 2: `num_frames`);
   * absent where the count follows the video's length (MiniCPM-V: 1 fps).
   */
  readonly videoFrames?: number;
  /** Upstream's generation settings for a mode (family hook). */
  generationDefaults(mode: GenerationMode): GenerationOptions;
  /** Stop ids and the pad id generation uses. */
  stopIds(opts: O): { eosTokenId: number[]; padTokenId?: number };
  /** The final answer text from the generated ids (upstream's decode quirks). */
  decodeAnswer(ids: number[]): string;
  /** Streamed text of the ids so far. */
  decodeStream(ids: number[]): string;
  dispose(): void;
}
