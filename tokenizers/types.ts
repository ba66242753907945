/**
 * The public tokenizer interface shared by every tokenizer kind (byte-level BPE from
 * vocab.json + merges.txt or tokenizer.json, SentencePiece from tokenizer.model).
 *
 * Semantics follow transformers 4.40 (`PreTrainedTokenizer.encode` / `decode` /
 * `apply_chat_template`); where the slow and fast HF tokenizers differ, each implementation says
 * which one it follows.
 */

/** One chat turn as the chat templates see it (`message['role']`, `message['content']`). */
export interface ChatMessage {
  role: string;
  content: string;
  /** Templates may read more keys (e.g. `name`); they are passed through untouched. */
  [key: string]: unknown;
}

export interface EncodeOptions {
  /**
   * Add the model's special tokens around the text as HF `tokenizer.encode(text)` does
   * (Llama/Mistral: BOS per `add_bos_token`, EOS per `add_eos_token`; Qwen2: nothing).
   * Default true.
   */
  addSpecialTokens?: boolean;
  /**
   * HF `split_special_tokens=True`: added/special tokens written in the text are not matched;
   * the text is tokenized as plain characters. Default false.
   */
  splitSpecialTokens?: boolean;
}

export interface DecodeOptions {
  /** Drop special tokens (bos/eos/unk/pad/additional special tokens and added tokens flagged special). Default false. */
  skipSpecialTokens?: boolean;
}

export interface ChatTemplateOptions {
  /** Append the assistant header (`add_generation_prompt` in the template). Default false. */
  addGenerationPrompt?: boolean;
  /** Extra template variables; they override the special tokens (`bos_token`, ...) like HF kwargs do. */
  extra?: Record<string, unknown>;
}

/** Which files a tokenizer was built from (see `loadTokenizer`). */
export type TokenizerKind = 'tokenizer.json' | 'bpe' | 'sentencepiece';

export interface Tokenizer {
  readonly kind: TokenizerKind;
  /**
   * Token ids of `text`, as HF `tokenizer.encode(text, add_special_tokens=...)`: added and special
   * tokens written in the text (`<|im_start|>`, `<s>`, `<unk>`) are matched first, the rest is split
   * by the model.
   */
  encode(text: string, opts?: EncodeOptions): number[];
  /**
   * Text of `ids`, as HF `tokenizer.decode(ids, skip_special_tokens=...)`. Throws on a negative or
   * non-integer id; ids that have no token (above the vocabulary) are skipped, as the HF fast
   * tokenizers do.
   */
  decode(ids: ArrayLike<number>, opts?: DecodeOptions): string;
  /** Contents of the added tokens (special or not) that `encode` matches in text. */
  addedTokenContents(): readonly string[];
  /** Id of a token string (added tokens first, then the model vocabulary), or undefined. */
  tokenToId(token: string): number | undefined;
  /** Token string of an id (added tokens first, then the model vocabulary), or undefined. */
  idToToken(id: number): string | undefined;
  readonly bosTokenId?: number;
  readonly eosTokenId?: number;
  readonly padTokenId?: number;
  readonly unkTokenId?: number;
  /** Ids decode() drops with `skipSpecialTokens`, ascending. */
  readonly specialIds: readonly number[];
  /** Size of the id space: base vocabulary and added tokens, i.e. the highest id + 1. */
  readonly vocabSize: number;
  /** `chat_template` of tokenizer_config.json, if any. */
  readonly chatTemplate?: string;
  /**
   * Renders `chatTemplate` with `messages`, `add_generation_prompt` and the special tokens
   * (`bos_token`, `eos_token`, ... as strings), as HF `apply_chat_template(tokenize=False)`.
   * `raise_exception(msg)` in a template throws a `ChatTemplateError`.
   */
  applyChatTemplate(messages: ChatMessage[], opts?: ChatTemplateOptions): string;
}

/** A tokenizer directory is missing a file, or one of its files is corrupt. */
export class TokenizerLoadError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'TokenizerLoadError';
  }
}
