/**
 * Text streaming (HF `TextStreamer` / `TextIteratorStreamer`, transformers.js `streamers.js`):
 * tokens go in as they are generated, text comes out as soon as it is stable. Text is stable when
 * the decoded continuation does not end in U+FFFD (an incomplete UTF-8 sequence of byte tokens),
 * so a multi-byte character is never split across two chunks.
 */

export type DecodeFn = (ids: number[]) => string;

export class TextStreamer {
  private readonly ids: number[] = [];
  private printed = 0;
  private lastText = '';

  /** `onText` receives each new stable chunk; `onEnd` once after the last. */
  constructor(private readonly decode: DecodeFn, private readonly onText: (text: string) => void, private readonly onEnd?: () => void) {}

  /** Adds generated tokens and emits whatever became stable. */
  put(tokens: number | number[]): void {
    for (const t of Array.isArray(tokens) ? tokens : [tokens]) this.ids.push(t);
    const text = this.decode(this.ids);
    this.lastText = text;
    if (text.endsWith('\uFFFD')) return; // wait for the rest of the character
    this.emitUpTo(text);
  }

  /** Flushes what is left (even a dangling U+FFFD) and signals the end. */
  end(): void {
    this.emitUpTo(this.lastText);
    this.onEnd?.();
  }

  /** All text emitted so far. */
  get text(): string {
    return this.lastText.slice(0, this.printed);
  }

  private emitUpTo(text: string): void {
    if (text.length > this.printed) {
      this.onText(text.slice(this.printed));
      this.printed = text.length;
    }
  }
}

/** A TextStreamer you iterate with `for await (const chunk of streamer)`. */
export class TextIteratorStreamer implements AsyncIterable<string> {
  private readonly queue: string[] = [];
  private done = false;
  private wake: (() => void) | null = null;
  readonly streamer: TextStreamer;

  constructor(decode: DecodeFn) {
    this.streamer = new TextStreamer(decode, (t) => this.push(t), () => this.finish());
  }

  put(tokens: number | number[]): void {
    this.streamer.put(tokens);
  }

  end(): void {
    this.streamer.end();
  }

  private push(t: string): void {
    this.queue.push(t);
    this.wake?.();
  }

  private finish(): void {
    this.done = true;
    this.wake?.();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<string> {
    for (;;) {
      if (this.queue.length) {
        yield this.queue.shift()!;
        continue;
      }
      if (this.done) return;
      await new Promise<void>((r) => (this.wake = r));
      this.wake = null;
    }
  }
}
