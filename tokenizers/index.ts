/**
 * Tokenizers and chat templates. `loadTokenizer(dir)` picks the kind from the files present;
 * everything returns the `Tokenizer` interface of types.ts.
 */
export { loadTokenizer, TOKENIZER_FILES } from './load';
export type { Tokenizer, TokenizerKind, ChatMessage, EncodeOptions, DecodeOptions, ChatTemplateOptions } from './types';
export { TokenizerLoadError } from './types';
export { ChatTemplateError, renderChatTemplate } from './chat_template';
export { HfJsTokenizer } from './hf_tokenizer';
export { LlamaTokenizer } from './llama';
export { SentencePieceBpe, SPIECE_UNDERLINE } from './sentencepiece_bpe';
export { parseSentencePieceModel } from './sentencepiece_model';
