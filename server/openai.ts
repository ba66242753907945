/**
 * OpenAI chat-completions request → `model.chat` messages and options, and the response /
 * stream-chunk objects back.
 *
 * Sampling: no sampling field → the family's upstream chat defaults (what `vlm chat` uses:
 * MiniCPM-V samples with top_p 0.8, top_k 100, temperature 0.7, repetition penalty 1.05;
 * VideoLLaMA 2 is greedy). `temperature: 0` → greedy, one beam, repetition penalty 1 unless
 * `repetition_penalty` is given (= `vlm chat --greedy`). `temperature > 0`, `top_p` or `top_k`
 * → sampling, the family's sampling defaults filling the fields not given. Sampling without
 * `seed` draws a random seed (reported in `x_tfjs_vlm.seed`).
 */
import { randomInt } from 'node:crypto';
import type { ChatMessage, ChatOptions, ChatResult, ContentPart } from '../models/chat';
import { splitSystem } from '../models/chat';
import { ApiError, badRequest } from './errors';
import { MediaLimits, RequestFiles, resolveImage, resolveVideo } from './media';

type Url = { url: string };
export type RequestPart =
  | { type: 'text'; text: string }
  | { type: 'image_url'; image_url: Url }
  | { type: 'video_url'; video_url: Url }
  | { type: 'video'; video: string };

export interface ChatCompletionRequest {
  model?: string;
  messages: { role: 'system' | 'developer' | 'user' | 'assistant'; content: string | RequestPart[]; name?: string }[];
  max_tokens?: number | null;
  max_completion_tokens?: number | null;
  temperature?: number | null;
  top_p?: number | null;
  top_k?: number | null;
  seed?: number | null;
  repetition_penalty?: number | null;
  stop?: string | string[] | null;
  n?: number | null;
  stream?: boolean | null;
  stream_options?: { include_usage?: boolean | null } | null;
}

/** ChatOptions plus the family switches both chats understand (`sampling`, as `vlm chat` passes them). */
export type ServeChatOptions = ChatOptions & { sampling?: boolean; maxVideoFrames?: number };

export interface MappedOptions {
  options: ServeChatOptions;
  stop: string[];
  maxTokens: number;
  seed: number | null;
}

/** Generation fields → chat options (validated ranges come from the schema). */
export function mapOptions(req: ChatCompletionRequest, maxTokensCap: number, samplesByDefault = true): MappedOptions {
  const o: ServeChatOptions = {};
  const given = <T>(v: T | null | undefined): v is T => v !== undefined && v !== null;
  if (given(req.max_tokens) && given(req.max_completion_tokens) && req.max_tokens !== req.max_completion_tokens) {
    throw badRequest('max_tokens and max_completion_tokens differ; give one of them', 'max_tokens');
  }
  const maxTokens = req.max_completion_tokens ?? req.max_tokens ?? maxTokensCap;
  if (maxTokens > maxTokensCap) {
    throw badRequest(`max_tokens is ${maxTokens}; this server allows at most ${maxTokensCap} (--max-tokens)`, given(req.max_completion_tokens) ? 'max_completion_tokens' : 'max_tokens', 'max_tokens_exceeded');
  }
  o.maxNewTokens = maxTokens;
  let seed: number | null = null;
  const topK = given(req.top_k) ? (req.top_k === -1 ? 0 : req.top_k) : undefined;
  if (req.temperature === 0) {
    // greedy, as llama.cpp and vLLM treat temperature 0
    Object.assign(o, { sampling: false, doSample: false, numBeams: 1, repetitionPenalty: req.repetition_penalty ?? 1.0 });
  } else {
    const sampling = given(req.temperature) || given(req.top_p) || topK !== undefined;
    if (sampling) Object.assign(o, { sampling: true, doSample: true });
    if (given(req.temperature)) o.temperature = req.temperature;
    if (given(req.top_p)) o.topP = req.top_p;
    if (topK !== undefined) o.topK = topK;
    if (given(req.repetition_penalty)) o.repetitionPenalty = req.repetition_penalty;
  }
  if (given(req.seed)) seed = req.seed;
  else if (o.sampling === true || (o.sampling === undefined && samplesByDefault)) seed = randomInt(0, 2 ** 31 - 1); // only when it samples (VideoLLaMA 2 defaults to greedy)
  o.seed = seed ?? undefined;
  const stop = !given(req.stop) ? [] : typeof req.stop === 'string' ? [req.stop] : req.stop;
  if (stop.length) o.stopStrings = stop;
  return { options: o, stop, maxTokens, seed };
}

/** Request messages → chat messages, resolving media URLs under the limits. */
export async function mapMessages(req: ChatCompletionRequest, limits: MediaLimits, files: RequestFiles, signal?: AbortSignal): Promise<ChatMessage[]> {
  const out: ChatMessage[] = [];
  for (const [i, m] of req.messages.entries()) {
    const role = m.role === 'developer' ? 'system' : m.role;
    if (typeof m.content === 'string') {
      out.push({ role, content: m.content });
      continue;
    }
    const parts: ContentPart[] = [];
    for (const [j, p] of m.content.entries()) {
      const param = `messages[${i}].content[${j}]`;
      if (p.type === 'text') parts.push({ type: 'text', text: p.text });
      else {
        if (role !== 'user') throw badRequest(`only user messages can hold images or videos (message ${i} is ${m.role})`, param);
        if (p.type === 'image_url') parts.push({ type: 'image', image: await resolveImage(p.image_url.url, limits, `${param}.image_url.url`, signal) });
        else if (p.type === 'video_url') parts.push({ type: 'video', video: await resolveVideo(p.video_url.url, limits, files, `${param}.video_url.url`, signal) });
        else parts.push({ type: 'video', video: await resolveVideo(p.video, limits, files, `${param}.video`, signal) });
      }
    }
    out.push({ role, content: parts });
  }
  // the chats' own structural rules (system first, then user; roles), as 400s naming `messages`
  try {
    const merged = mergeSystem(out);
    splitSystem(merged);
    return merged;
  } catch (e) {
    if (e instanceof ApiError) throw e;
    throw badRequest((e as Error).message, 'messages');
  }
}

/** Several leading system/developer messages become one (the chats take one system prompt). */
function mergeSystem(msgs: ChatMessage[]): ChatMessage[] {
  let k = 0;
  while (k < msgs.length && msgs[k].role === 'system') k++;
  if (k <= 1) return msgs;
  const text = msgs.slice(0, k).map((m) => (typeof m.content === 'string' ? m.content : m.content.map((p) => (p.type === 'text' ? p.text : '')).join(''))).join('\n');
  return [{ role: 'system', content: text }, ...msgs.slice(k)];
}

/** OpenAI finish_reason of a chat result ('stop' for eos and stop strings). */
export function finishReason(r: ChatResult['finishReason']): 'stop' | 'length' {
  return r === 'eos' || r === 'stop_string' ? 'stop' : 'length';
}

/** Cuts text at the first stop string (OpenAI leaves the stop sequence out). */
export function cutAtStop(text: string, stop: string[]): string {
  let cut = text.length;
  for (const s of stop) {
    const i = text.indexOf(s);
    if (i >= 0 && i < cut) cut = i;
  }
  return text.slice(0, cut);
}

/**
 * Streaming with stop strings: holds back the tail that could still become a stop string, so no
 * part of a stop sequence is ever sent.
 */
export class StopFilter {
  private text = '';
  private sent = 0;
  private stopped = false;
  private readonly hold: number;
  constructor(private readonly stop: string[]) {
    this.hold = stop.reduce((m, s) => Math.max(m, s.length - 1), 0);
  }
  /** Adds a chunk; returns the text that is safe to send now. */
  push(chunk: string): string {
    if (this.stopped) return '';
    this.text += chunk;
    const cut = cutAtStop(this.text, this.stop);
    if (cut.length < this.text.length) {
      this.stopped = true;
      return this.take(cut.length);
    }
    return this.take(Math.max(this.sent, this.text.length - this.hold));
  }
  /** At the end: whatever was held back (unless a stop string was hit). */
  flush(): string {
    return this.stopped ? '' : this.take(this.text.length);
  }
  private take(upto: number): string {
    // never split a UTF-16 surrogate pair
    if (upto > 0 && upto < this.text.length && /[\uD800-\uDBFF]/.test(this.text[upto - 1])) upto--;
    const s = this.text.slice(this.sent, upto);
    this.sent = Math.max(this.sent, upto);
    return s;
  }
}

export function usage(r: ChatResult): { prompt_tokens: number; completion_tokens: number; total_tokens: number } {
  return { prompt_tokens: r.promptTokens, completion_tokens: r.tokenIds.length, total_tokens: r.promptTokens + r.tokenIds.length };
}

/** The extension field: generated ids (as `vlm chat --json` prints them), timings, seed, queue wait. */
export function extension(r: ChatResult, seed: number | null, queueMs: number): Record<string, unknown> {
  return { token_ids: r.tokenIds, finish_reason: r.finishReason, seed, queue_ms: Math.round(queueMs * 10) / 10, timings: r.timings };
}

export function completionObject(id: string, created: number, model: string, r: ChatResult, text: string, seed: number | null, queueMs: number) {
  return {
    id,
    object: 'chat.completion' as const,
    created,
    model,
    choices: [{ index: 0, message: { role: 'assistant' as const, content: text }, finish_reason: finishReason(r.finishReason), logprobs: null, token_ids: r.tokenIds }],
    usage: usage(r),
    system_fingerprint: null,
    x_tfjs_vlm: extension(r, seed, queueMs),
  };
}

export function chunkObject(id: string, created: number, model: string, delta: Record<string, unknown>, finish: string | null, extra: Record<string, unknown> = {}) {
  return { id, object: 'chat.completion.chunk' as const, created, model, choices: [{ index: 0, delta, finish_reason: finish, logprobs: null }], ...extra };
}
