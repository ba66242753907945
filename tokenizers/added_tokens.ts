/**
 * Splitting text at added tokens, as the slow HF tokenizers do before running the model
 * (transformers 4.40 `PreTrainedTokenizer.tokenize`, src/transformers/tokenization_utils.py):
 * every added token (special or not) found in the text becomes its own piece; `rstrip`/`lstrip`
 * tokens eat the whitespace on their right/left; `single_word` tokens glued to a word are given
 * back to that word.
 *
 * Matching is leftmost-longest, which is what HF `Trie.split` produces for any set of tokens where
 * no token starts inside another one's match (true for all chat/special tokens we load).
 */
import { AddedTokenSpec } from './tokenizer_config';

/** Python `str.isspace()` characters (JS `\s` differs: it has U+FEFF and lacks U+001C..U+001F). */
const PY_WS = '\\t-\\r\\x1c-\\x20\\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000';
const LEADING_WS = new RegExp(`^[${PY_WS}]+`);
const TRAILING_WS = new RegExp(`[${PY_WS}]+$`);
const pyLstrip = (s: string): string => s.replace(LEADING_WS, '');
const pyRstrip = (s: string): string => s.replace(TRAILING_WS, '');

interface TrieNode {
  next: Map<number, TrieNode>;
  token?: AddedTokenSpec;
}

/** A piece of split text: plain text for the model, or an added token. */
export type Piece = string | AddedTokenSpec;

export class AddedTokenSplitter {
  private readonly root: TrieNode = { next: new Map() };
  readonly byContent = new Map<string, AddedTokenSpec>();

  constructor(tokens: readonly AddedTokenSpec[]) {
    for (const t of tokens) {
      this.byContent.set(t.content, t);
      let node = this.root;
      for (let i = 0; i < t.content.length; i++) {
        const c = t.content.charCodeAt(i);
        let n = node.next.get(c);
        if (!n) node.next.set(c, (n = { next: new Map() }));
        node = n;
      }
      node.token = t;
    }
  }

  /** Leftmost-longest split into text and added tokens (no stripping yet). */
  private rawSplit(text: string): Piece[] {
    const out: Piece[] = [];
    if (this.byContent.size === 0) return text ? [text] : [];
    let start = 0;
    let i = 0;
    while (i < text.length) {
      let node: TrieNode | undefined = this.root;
      let match: AddedTokenSpec | undefined;
      for (let j = i; j < text.length; j++) {
        node = node.next.get(text.charCodeAt(j));
        if (!node) break;
        if (node.token) match = node.token;
      }
      if (match) {
        if (i > start) out.push(text.slice(start, i));
        out.push(match);
        i += match.content.length;
        start = i;
      } else {
        i++;
      }
    }
    if (start < text.length) out.push(text.slice(start));
    return out;
  }

  /**
   * Splits `text` into plain-text pieces and added tokens, applying `rstrip`/`lstrip`/`single_word`
   * like HF; empty pieces are dropped.
   */
  split(text: string): Piece[] {
    const parts = this.rawSplit(text);
    for (let i = 0; i < parts.length; i++) {
      const t = parts[i];
      if (typeof t === 'string') continue;
      const left = i > 0 ? parts[i - 1] : undefined;
      const right = i < parts.length - 1 ? parts[i + 1] : undefined;
      // HF compares the neighbours as strings; an added-token neighbour has no whitespace to strip
      if (t.rstrip && typeof right === 'string') parts[i + 1] = pyLstrip(right);
      if (t.lstrip && typeof left === 'string') parts[i - 1] = pyRstrip(left);
      if (t.singleWord) {
        const l = parts[i - 1], r = parts[i + 1];
        if (typeof l === 'string' && l && l[l.length - 1] !== ' ') {
          parts[i - 1] = l + t.content;
          parts[i] = '';
        } else if (typeof r === 'string' && r && r[0] !== ' ') {
          parts[i + 1] = t.content + r;
          parts[i] = '';
        }
      }
    }
    return parts.filter((p) => p !== '');
  }
}
