/**
 * The chat API shared by both model families: messages with roles and content lists that mix
 * text, images and video; generation options; a result with text, ids and timings; streaming
 * through a callback or an async iterator. Each family (models/minicpmv/chat.ts,
 * models/videollama2/chat.ts) turns messages into its upstream prompt format.
 */
import type { RgbImage } from '../media/types';
import type { GenerationOptions, FinishReason } from '../generation';

/** An image: a file path, encoded bytes (PNG/JPEG/WebP…), or decoded RGB. */
export type ImageInput = string | Uint8Array | RgbImage;

/**
 * A video: a file path, or its frames already decoded, in order (RGB). Frames go through the
 * family's own sampling as a file's frames would (VideoLLaMA 2: `num_frames` uniformly; MiniCPM-V:
 * taken as sampled at 1 fps, at most `maxVideoFrames`).
 */
export type VideoInput = string | RgbImage[];

export type ContentPart =
  | { type: 'text'; text: string }
  | { type: 'image'; image: ImageInput }
  | { type: 'video'; video: VideoInput };

export interface ChatMessage {
  role: 'system' | 'user' | 'assistant';
  /** Plain text, or parts in order (text, images, video). */
  content: string | ContentPart[];
}

export interface ChatOptions extends GenerationOptions {
  /** System prompt (overrides a leading system message). */
  system?: string;
  /**
   * Parse chat-control tokens (`<|im_start|>`, `</s>`, `<unk>`, ...) written in user, system and
   * message text as control ids, as upstream does. Default false: user-supplied text is plain
   * text and only the template's own tokens are special (no template injection).
   */
  parseSpecial?: boolean;
  /** Streamed answer text, chunk by chunk, as it is generated (beam search: once at the end). */
  onText?: (chunk: string) => void;
}

export interface ChatTimings {
  /** Image/video decoding and pixel processing. */
  preprocess_ms: number;
  /** Vision tower + connector/resampler + embedding splice. */
  vision_ms: number;
  /** Prompt forward until the first generated token. */
  prefill_ms: number;
  /** All later tokens. */
  decode_ms: number;
  total_ms: number;
  /** Generated tokens per second over the decode phase. */
  tokens_per_s: number;
}

export interface ChatResult {
  /** The answer, post-processed like the upstream chat function. */
  text: string;
  /** Generated ids as HF `generate` returns them (with the final eos when it stopped on one). */
  tokenIds: number[];
  /** Positions of the LLM prompt (text tokens plus image/video features). */
  promptTokens: number;
  finishReason: FinishReason;
  timings: ChatTimings;
}

/** One traced tensor (host copy). */
export interface TracedTensor {
  data: Float32Array | Int32Array;
  shape: number[];
  dtype: 'float32' | 'int32';
}

/** A loaded multimodal chat model. */
export interface ChatModel {
  /** The family's key in the family table (models/families.ts). */
  readonly family: string;
  /** Whether the family samples when no option says otherwise (upstream's chat default). */
  readonly samplesByDefault: boolean;
  chat(messages: ChatMessage[], opts?: ChatOptions): Promise<ChatResult>;
  /** Streams text chunks; `result` resolves when generation ends. */
  chatStream(messages: ChatMessage[], opts?: ChatOptions): ChatStream;
  /** One forward pass over the chat prompt; intermediates under their golden names. */
  trace(messages: ChatMessage[], opts?: ChatOptions): Promise<Map<string, TracedTensor>>;
  dispose(): void;
}

export interface ChatStream extends AsyncIterable<string> {
  result: Promise<ChatResult>;
}

/** Normalises content to parts. */
export function contentParts(content: string | ContentPart[]): ContentPart[] {
  if (typeof content === 'string') return [{ type: 'text', text: content }];
  if (!Array.isArray(content)) throw new Error(`message content must be a string or a list of parts, got ${typeof content}`);
  for (const [i, p] of content.entries()) {
    const ok = p && ((p.type === 'text' && typeof p.text === 'string') || (p.type === 'image' && p.image != null) || (p.type === 'video' && (typeof p.video === 'string' || (Array.isArray(p.video) && p.video.length > 0))));
    if (!ok) throw new Error(`message content part ${i}: expected {type: 'text', text} | {type: 'image', image} | {type: 'video', video: path | frames[]}, got ${JSON.stringify(p)?.slice(0, 80)}`);
  }
  return content;
}

/**
 * Splits off a leading system message (its text joins `system` unless `system` is given) and
 * checks that the conversation then starts with the user. Returns the rest of the messages.
 */
export function splitSystem(messages: ChatMessage[], system?: string): { system?: string; messages: ChatMessage[] } {
  if (!messages.length) throw new Error('messages is empty');
  let msgs = messages;
  if (msgs[0].role === 'system') {
    const s = contentParts(msgs[0].content);
    if (s.some((p) => p.type !== 'text')) throw new Error('a system message can only hold text');
    system ??= s.map((p) => (p as { text: string }).text).join('\n');
    msgs = msgs.slice(1);
  }
  if (!msgs.length || msgs[0].role !== 'user') throw new Error('the first message (after an optional system message) must be from the user');
  msgs.forEach((m, i) => {
    if (m.role !== 'user' && m.role !== 'assistant') throw new Error(`message ${i}: role must be user or assistant, got '${m.role}'`);
  });
  return { system, messages: msgs };
}

/** Wraps `chat` with an onText callback into an async iterator + result promise. */
export function streamFromChat(run: (onText: (chunk: string) => void) => Promise<ChatResult>): ChatStream {
  const queue: string[] = [];
  let done = false;
  let failure: unknown = null;
  let wake: (() => void) | null = null;
  const result = run((c) => {
    queue.push(c);
    wake?.();
  }).then(
    (r) => {
      done = true;
      wake?.();
      return r;
    },
    (e) => {
      failure = e;
      done = true;
      wake?.();
      throw e;
    },
  );
  result.catch(() => undefined); // surfaced through the iterator and to whoever awaits `result`
  return {
    result,
    async *[Symbol.asyncIterator]() {
      for (;;) {
        if (queue.length) {
          yield queue.shift()!;
          continue;
        }
        if (done) {
          if (failure) throw failure;
          return;
        }
        await new Promise<void>((r) => (wake = r));
        wake = null;
      }
    },
  };
}

/** Milliseconds since `t0`, rounded to 0.1. */
export function since(t0: number): number {
  return Math.round((performance.now() - t0) * 10) / 10;
}

/** Generation timing split from per-token callbacks. */
export class GenerationClock {
  private start = 0;
  private first = 0;
  private last = 0;
  private n = 0;
  begin(): void {
    this.start = performance.now();
  }
  token(): void {
    const t = performance.now();
    if (this.n === 0) this.first = t;
    this.last = t;
    this.n++;
  }
  timings(): { prefill_ms: number; decode_ms: number; tokens_per_s: number } {
    const prefill = this.n ? this.first - this.start : 0;
    const decode = this.n > 1 ? this.last - this.first : 0;
    return {
      prefill_ms: Math.round(prefill * 10) / 10,
      decode_ms: Math.round(decode * 10) / 10,
      tokens_per_s: decode > 0 ? Math.round(((this.n - 1) / (decode / 1000)) * 100) / 100 : 0,
    };
  }
}
