/**
 * Sequential writing of a weights file in whole, aligned 4 MiB blocks.
 *
 * Linux keeps a freshly written file in the page cache in the folio sizes its writes produced: a write
 * that starts or ends off a 2 MiB boundary leaves small folios around that point. A read-only mapping of
 * the file (weights used as stored, a GGUF copy) can only use a 2 MiB page-table entry where the cache
 * holds a 2 MiB folio, so the rest is mapped in 4 KiB pages, and a decode step streaming those weights
 * pays the TLB misses and the hardware prefetcher's stops at every 4 KiB page. Measured on kernel 6.18 /
 * ext4: a 512 MiB file written as a 4000-byte header then 4 MiB chunks (so every chunk straddles a
 * boundary) mapped 50 % in huge pages, the same bytes written through this class 100 %; a 14-layer bf16
 * checkpoint written the first way decoded at 0.93× llama.cpp's rate on a GGUF written in large writes.
 * Files that other tools wrote stay as they are in the cache until it drops them.
 */
import fs from 'node:fs';

const BLOCK = 4 * 2 ** 20;

export class AlignedWriter {
  private readonly buf = Buffer.allocUnsafe(BLOCK);
  private fill = 0;
  /** Bytes already handed to the file. */
  private flushed = 0;

  constructor(private readonly fd: number) {}

  /** Bytes accepted so far (the file offset the next write lands at). */
  get position(): number {
    return this.flushed + this.fill;
  }

  write(b: Uint8Array): void {
    let i = 0;
    while (i < b.length) {
      if (this.fill === 0 && b.length - i >= BLOCK) {
        // whole blocks straight from the caller's buffer: still at an aligned offset
        const n = b.length - i - ((b.length - i) % BLOCK);
        this.put(b.subarray(i, i + n));
        i += n;
        continue;
      }
      const n = Math.min(b.length - i, BLOCK - this.fill);
      this.buf.set(b.subarray(i, i + n), this.fill);
      this.fill += n;
      i += n;
      if (this.fill === BLOCK) {
        this.put(this.buf);
        this.fill = 0;
      }
    }
  }

  /** Writes what is buffered (the file's tail); call once, at the end. */
  end(): void {
    if (this.fill) this.put(this.buf.subarray(0, this.fill));
    this.fill = 0;
  }

  private put(b: Uint8Array): void {
    let done = 0;
    while (done < b.length) done += fs.writeSync(this.fd, b, done, b.length - done, this.flushed + done);
    this.flushed += b.length;
  }
}
