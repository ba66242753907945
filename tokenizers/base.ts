/**
 * What every tokenizer kind shares: the special tokens and their ids, `specialIds`, the chat
 * template, and the id checks of decode(). Subclasses implement encode/decode and the
 * token <-> id maps.
 */
import { renderChatTemplate } from './chat_template';
import { AddedTokenSpec, SpecialTokens, TokenizerSettings, allSpecialTokens } from './tokenizer_config';
import { ChatMessage, ChatTemplateOptions, DecodeOptions, EncodeOptions, Tokenizer, TokenizerKind } from './types';

export abstract class BaseTokenizer implements Tokenizer {
  abstract readonly kind: TokenizerKind;
  readonly special: SpecialTokens;
  readonly chatTemplate?: string;
  /** The directory the tokenizer was loaded from (named in errors). */
  readonly dir: string;
  private specialIdsCache?: number[];

  protected constructor(settings: TokenizerSettings, protected readonly added: readonly AddedTokenSpec[]) {
    this.special = settings.special;
    this.chatTemplate = settings.chatTemplate;
    this.dir = settings.dir;
  }

  abstract encode(text: string, opts?: EncodeOptions): number[];

  addedTokenContents(): readonly string[] {
    return this.added.map((t) => t.content);
  }
  abstract decode(ids: ArrayLike<number>, opts?: DecodeOptions): string;
  abstract tokenToId(token: string): number | undefined;
  abstract idToToken(id: number): string | undefined;
  abstract readonly vocabSize: number;

  private idOf(token: string | undefined): number | undefined {
    return token === undefined ? undefined : this.tokenToId(token);
  }
  get bosTokenId(): number | undefined {
    return this.idOf(this.special.bos_token);
  }
  get eosTokenId(): number | undefined {
    return this.idOf(this.special.eos_token);
  }
  get padTokenId(): number | undefined {
    return this.idOf(this.special.pad_token);
  }
  get unkTokenId(): number | undefined {
    return this.idOf(this.special.unk_token);
  }

  /**
   * HF slow `all_special_ids` (ids of bos/eos/unk/sep/pad/cls/mask/additional special tokens)
   * plus the added tokens flagged `special` (what the fast tokenizers skip); for the checkpoints
   * we load the two sets are equal.
   */
  get specialIds(): readonly number[] {
    if (!this.specialIdsCache) {
      const ids = new Set<number>();
      for (const t of allSpecialTokens(this.special)) {
        const id = this.tokenToId(t);
        if (id !== undefined) ids.add(id);
      }
      for (const t of this.added) if (t.special) ids.add(t.id);
      this.specialIdsCache = [...ids].sort((a, b) => a - b);
    }
    return this.specialIdsCache;
  }

  applyChatTemplate(messages: ChatMessage[], opts?: ChatTemplateOptions): string {
    return renderChatTemplate(this.chatTemplate, messages, this.special, opts, this.dir);
  }

  /** Checks decode() input: integer ids >= 0 (an image placeholder like -200 is a caller bug). */
  protected checkIds(ids: ArrayLike<number>): void {
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      if (!Number.isInteger(id) || id < 0) {
        throw new RangeError(`decode: ids[${i}] = ${id} is not a token id (expected an integer >= 0; multimodal placeholders such as -200/-201 must be removed first)`);
      }
    }
  }
}
