/**
 * User text is plain text: chat-control tokens typed into a prompt, a system text or a message
 * (`<|im_start|>`, `<|im_end|>`, `<|endoftext|>`, `<image_id>`, `<unk>`, Mistral's `</s><s>`)
 * must not become control ids (template injection). The chats render their template with each
 * user text wrapped in two Unicode noncharacters (U+FDD0 … U+FDD1, never valid in interchange
 * text and never in a template); `encodeMarked` then tokenizes:
 *
 * - when no user text contains an added token (the normal case, every golden prompt): the
 *   unmarked prompt in one piece, exactly as before;
 * - otherwise: template pieces as usual (their special tokens stay special) and user pieces with
 *   `splitSpecialTokens` (HF `split_special_tokens=True`: added tokens are not matched, the text
 *   goes through the model as characters).
 *
 * `parseSpecial: true` restores upstream's behaviour (special tokens parsed everywhere).
 */
import { Tokenizer } from './types';

export const USER_OPEN = '\uFDD0';
export const USER_CLOSE = '\uFDD1';

/** Wraps the non-whitespace core of `text` in the user-text markers (whitespace stays outside, so template `trim`s act as before). */
export function markUserText(text: string): string {
  if (text.includes(USER_OPEN) || text.includes(USER_CLOSE)) {
    throw new Error('the text contains the Unicode noncharacters U+FDD0/U+FDD1, which are reserved');
  }
  const m = /^(\s*)([\s\S]*?)(\s*)$/.exec(text)!;
  if (m[2] === '') return text;
  return `${m[1]}${USER_OPEN}${m[2]}${USER_CLOSE}${m[3]}`;
}

/** Removes the markers. */
export function stripMarks(text: string): string {
  return text.replaceAll(USER_OPEN, '').replaceAll(USER_CLOSE, '');
}

/** Splits marked text into template and user segments (in order). */
export function markedSegments(text: string): { user: boolean; text: string }[] {
  const out: { user: boolean; text: string }[] = [];
  let inside = false;
  let cur = '';
  for (const ch of text) {
    if (ch === USER_OPEN || ch === USER_CLOSE) {
      if ((ch === USER_OPEN) === inside) throw new Error('the chat template split or reordered a user text (unbalanced user-text markers)');
      if (cur) out.push({ user: inside, text: cur });
      cur = '';
      inside = !inside;
      continue;
    }
    cur += ch;
  }
  if (inside) throw new Error('the chat template cut a user text short (unbalanced user-text markers)');
  if (cur) out.push({ user: false, text: cur });
  return out;
}

/** Token ids of marked text (see the file header). */
export function encodeMarked(tok: Tokenizer, text: string, opts: { addSpecialTokens?: boolean; parseSpecial?: boolean } = {}): number[] {
  const addSpecialTokens = opts.addSpecialTokens ?? true;
  const segments = markedSegments(text);
  const added = tok.addedTokenContents();
  const injected = segments.some((s) => s.user && added.some((a) => s.text.includes(a)));
  if (opts.parseSpecial || !injected) return tok.encode(stripMarks(text), { addSpecialTokens });
  const ids: number[] = [];
  for (const s of segments) ids.push(...tok.encode(s.text, { addSpecialTokens: false, splitSpecialTokens: s.user }));
  if (addSpecialTokens) {
    const wrap = tok.encode('', { addSpecialTokens: true });
    const bos = wrap.length && wrap[0] === tok.bosTokenId ? [wrap[0]] : [];
    return [...bos, ...ids, ...wrap.slice(bos.length)];
  }
  return ids;
}
