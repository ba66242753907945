/**
 * The one chat pipeline: messages → prepare → embed → generate → decode, with timings, streaming,
 * cancellation and trace, for any `VisionLanguageModel` (models/contract.ts). Family chat classes
 * extend it and implement the contract's hooks.
 */
import * as tf from '@tensorflow/tfjs';
import { CausalLM } from '../layers/decoder';
import { DEFAULT_MAX_NEW_TOKENS, FinishReason, GenerationOptions, asGenerationModel, generate } from '../generation';
import { Tokenizer } from '../tokenizers';
import { ChatMessage, ChatModel, ChatOptions, ChatResult, ChatStream, GenerationClock, TracedTensor, since, streamFromChat } from './chat';
import { Embedded, GenerationMode, PreparedInputs, Tap, VisionLanguageModel } from './contract';

/** The generation options every family accepts explicitly (they override the family's defaults). */
const EXPLICIT_KEYS = ['maxNewTokens', 'minNewTokens', 'temperature', 'topK', 'topP', 'repetitionPenalty', 'numBeams',
  'lengthPenalty', 'earlyStopping', 'stopStrings', 'seed', 'signal'] as const;

/** Options of the pipeline beyond generation: the mode switches. */
export interface PipelineChatOptions extends ChatOptions {
  /** Greedy decoding: 1 beam, no sampling, no repetition penalty (overrides the others). */
  greedy?: boolean;
  /** Upstream's `sampling` switch (default: the family's upstream default). `doSample` is read the same way. */
  sampling?: boolean;
}

export abstract class ChatPipeline<P extends PreparedInputs, O extends PipelineChatOptions>
implements ChatModel, VisionLanguageModel<P, O> {
  abstract readonly family: string;
  abstract readonly llm: CausalLM;
  abstract readonly tokenizer: Tokenizer;
  abstract readonly samplesByDefault: boolean;
  abstract prepare(messages: ChatMessage[], opts: O): Promise<P>;
  abstract embed(inputs: P, taps?: Tap | null): Embedded;
  abstract forward(inputs: P, taps: Tap): tf.Tensor;
  abstract traceInputs(inputs: P): Map<string, TracedTensor>;
  abstract generationDefaults(mode: GenerationMode): GenerationOptions;
  abstract stopIds(opts: O): { eosTokenId: number[]; padTokenId?: number };
  abstract decodeAnswer(ids: number[]): string;
  abstract decodeStream(ids: number[]): string;
  abstract dispose(): void;

  /**
   * The generation options of a call: `maxNewTokens` DEFAULT_MAX_NEW_TOKENS (2048, upstream's chat
   * default), then the family's upstream settings for the mode (sampling when `sampling ??
   * doSample ?? samplesByDefault`), then every explicit option; `greedy` wins over all.
   */
  generationOptions(opts: O): GenerationOptions {
    const sample = !opts.greedy && (opts.sampling ?? opts.doSample ?? this.samplesByDefault);
    const base = this.generationDefaults(sample ? 'sample' : 'default');
    const explicit: GenerationOptions = {};
    for (const k of EXPLICIT_KEYS) if (opts[k] !== undefined) (explicit as Record<string, unknown>)[k] = opts[k];
    if (opts.greedy) Object.assign(explicit, { doSample: false, numBeams: 1, repetitionPenalty: 1.0 });
    const stop = this.stopIds(opts);
    return { maxNewTokens: DEFAULT_MAX_NEW_TOKENS, ...base, ...explicit, eosTokenId: opts.eosTokenId ?? stop.eosTokenId, padTokenId: stop.padTokenId };
  }

  async chat(messages: ChatMessage[], opts: O = {} as O): Promise<ChatResult> {
    const tStart = performance.now();
    const prep = await this.prepare(messages, opts);
    try {
      const gen = this.generationOptions(opts);
      const t1 = performance.now();
      const e = this.embed(prep);
      try {
        await e.inputsEmbeds.data();
        const visionMs = since(t1);
        const clock = new GenerationClock();
        clock.begin();
        const r = await generate(asGenerationModel(this.llm), { inputsEmbeds: e.inputsEmbeds, attentionMask: e.attentionMask }, gen, {
          decode: (ids) => this.decodeStream(ids),
          onText: opts.onText,
          onStep: () => clock.token(),
        });
        return {
          text: this.decodeAnswer(r.tokens),
          tokenIds: r.tokens,
          promptTokens: e.inputsEmbeds.shape[1],
          finishReason: r.finishReason as FinishReason,
          timings: { preprocess_ms: prep.preprocessMs, vision_ms: visionMs, ...clock.timings(), total_ms: since(tStart) },
        };
      } finally {
        e.inputsEmbeds.dispose();
      }
    } finally {
      prep.dispose();
    }
  }

  chatStream(messages: ChatMessage[], opts: O = {} as O): ChatStream {
    return streamFromChat((onText) => this.chat(messages, { ...opts, onText }));
  }

  /** One forward pass over the chat prompt (positions 0..S−1, like the goldens); every intermediate under its golden name. */
  async trace(messages: ChatMessage[], opts: O = {} as O): Promise<Map<string, TracedTensor>> {
    const prep = await this.prepare(messages, opts);
    try {
      const out = this.traceInputs(prep);
      const logits = this.forward(prep, (name, t) => out.set(name, { data: Float32Array.from(t.dataSync()), shape: t.shape, dtype: 'float32' }));
      if (!out.has('llm.logits')) out.set('llm.logits', { data: logits.dataSync() as Float32Array, shape: logits.shape, dtype: 'float32' });
      logits.dispose();
      return out;
    } finally {
      prep.dispose();
    }
  }
}
