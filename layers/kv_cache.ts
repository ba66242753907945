/**
 * KV cache with the shape of HF `DynamicCache` / `DynamicLayer`: one layer entry per decoder layer,
 * keys and values [B, Hkv, S, D]; `update` appends the new step and returns the full tensors.
 * The cache owns its tensors (kept out of tf.tidy) and disposes what it replaces.
 */
import * as tf from '@tensorflow/tfjs';
import { cachedAttentionReady, copyBlocksInHeap, firstPositions } from './cached_attention';

/** Positions of spare capacity added when an in-place cache grows. */
const CAPACITY_STEP = 256;
/** A reserved capacity is rounded up to this many positions (not to a whole step: at 7B sizes a step is 34 MB of f32 K/V). */
const RESERVE_ROUND = 16;

export class KVCacheLayer {
  /**
   * Storage [B, Hkv, cap, D]: positions [0, length) are valid. On the composite path cap = length
   * (each update concatenates); with cached attention (wasm + addon) the buffers keep spare
   * capacity and new positions are written in place, so a decode step copies T rows, not the cache.
   */
  private k: tf.Tensor4D | null = null;
  private v: tf.Tensor4D | null = null;
  private length = 0;
  private inPlace = false;
  /** Positions the next buffer growth makes room for at least (`reserve`). */
  private reserved = 0;
  /** [B, Hkv, length, D] copies of the valid positions of in-place buffers (made on demand). */
  private view: [tf.Tensor4D, tf.Tensor4D] | null = null;

  /** Number of cached positions. */
  get seqLength(): number {
    return this.length;
  }

  /** Cached keys [B, Hkv, S, D] (owned by the cache), or null. */
  get keys(): tf.Tensor4D | null {
    return this.full()?.[0] ?? null;
  }

  /** Cached values [B, Hkv, S, D] (owned by the cache), or null. */
  get values(): tf.Tensor4D | null {
    return this.full()?.[1] ?? null;
  }

  /**
   * Makes the next growth of in-place buffers hold at least `positions` (a prompt's length):
   * a chunked prefill then allocates its buffers once instead of growing (and copying) them per
   * chunk, which fragmented the wasm heap at video sizes. A hint; the composite path ignores it.
   */
  reserve(positions: number): void {
    this.reserved = positions;
  }

  /** Replaces the cache with kept tensors k, v [B, Hkv, S, D] (the cache owns them). */
  set(k: tf.Tensor4D, v: tf.Tensor4D): void {
    this.dispose();
    this.k = k;
    this.v = v;
    this.length = k.shape[2];
  }

  /** The in-place buffers (for cached attention) and their valid length, or null on the composite path. */
  buffers(): { k: tf.Tensor4D; v: tf.Tensor4D; length: number } | null {
    return this.inPlace && this.k && this.v ? { k: this.k, v: this.v, length: this.length } : null;
  }

  /**
   * Appends k, v ([B, Hkv, T, D]) and returns the full [B, Hkv, S, D] pair. Call it inside tf.tidy:
   * on the composite path the pair is the cache's own storage; with in-place buffers it is a fresh
   * copy of the valid positions that the tidy disposes (so a prefill does not hold a second cache).
   */
  update(k: tf.Tensor4D, v: tf.Tensor4D): [tf.Tensor4D, tf.Tensor4D] {
    if (this.inPlace || (this.k === null && cachedAttentionReady())) {
      this.append(k, v);
      return this.valid();
    }
    const nk = this.k ? tf.concat([this.k, k], 2) : k.clone();
    const nv = this.v ? tf.concat([this.v, v], 2) : v.clone();
    this.set(tf.keep(nk) as tf.Tensor4D, tf.keep(nv) as tf.Tensor4D);
    return [this.k!, this.v!];
  }

  /**
   * Appends k, v ([B, Hkv, T, D]) in place into buffers with spare capacity (wasm + addon; the
   * composite cache is converted on first use). Read them with `buffers()`.
   */
  append(k: tf.Tensor4D, v: tf.Tensor4D): void {
    const [B, Hkv, T, D] = k.shape;
    const { k: kb, v: vb, past } = this.slots(B, Hkv, T, D);
    const cap = kb.shape[2];
    copyBlocksInHeap(k, T * D, kb, past * D, cap * D, B * Hkv, T * D);
    copyBlocksInHeap(v, T * D, vb, past * D, cap * D, B * Hkv, T * D);
    this.advance(T);
  }

  /**
   * Makes room in place for T more positions of [B, Hkv, ·, D] and returns the buffers
   * [B, Hkv, cap, D] and the first free position; whoever writes them then calls `advance(T)`
   * (`append`, or a native decode layer that writes k and v itself).
   */
  slots(B: number, Hkv: number, T: number, D: number): { k: tf.Tensor4D; v: tf.Tensor4D; past: number } {
    if (this.k && (this.k.shape[0] !== B || this.k.shape[1] !== Hkv || this.k.shape[3] !== D)) {
      throw new Error(`KV cache holds [${this.k.shape[0]}, ${this.k.shape[1]}, ·, ${this.k.shape[3]}] keys; new keys are [${B}, ${Hkv}, ${T}, ${D}]`);
    }
    this.inPlace = true; // a composite cache (cap = length) is copied into new buffers by grow()
    this.dropView();
    const need = this.length + T;
    if (!this.k || this.k.shape[2] < need) {
      // room for what is reserved, else a step more
      const cap = this.reserved >= need ? Math.ceil(this.reserved / RESERVE_ROUND) * RESERVE_ROUND : Math.ceil((need + CAPACITY_STEP) / CAPACITY_STEP) * CAPACITY_STEP;
      this.grow(B, Hkv, D, cap);
    }
    return { k: this.k!, v: this.v!, past: this.length };
  }

  /** Counts T positions written after `slots` as valid. */
  advance(T: number): void {
    if (!this.inPlace || !this.k || this.length + T > this.k.shape[2]) throw new Error(`KV cache: advance(${T}) past the room made by slots()`);
    this.length += T;
  }

  /** New buffers with `cap` positions holding the valid ones. */
  private grow(B: number, Hkv: number, D: number, cap: number): void {
    // tf.fill runs the backend's Fill kernel (on wasm: allocated and set in the heap); tf.zeros
    // builds a JS array of zeros and copies it into the heap (~2 ms per 8 MB buffer)
    const nk = tf.keep(tf.fill([B, Hkv, cap, D], 0, 'float32')) as tf.Tensor4D;
    const nv = tf.keep(tf.fill([B, Hkv, cap, D], 0, 'float32')) as tf.Tensor4D;
    if (this.k && this.v && this.length > 0) {
      const old = this.k.shape[2];
      copyBlocksInHeap(this.k, old * D, nk, 0, cap * D, B * Hkv, this.length * D);
      copyBlocksInHeap(this.v, old * D, nv, 0, cap * D, B * Hkv, this.length * D);
    }
    this.k?.dispose();
    this.v?.dispose();
    this.k = nk;
    this.v = nv;
  }

  /** [keys, values] of the valid positions (the storage itself when it has no spare capacity). */
  private full(): [tf.Tensor4D, tf.Tensor4D] | null {
    if (!this.k || !this.v) return null;
    if (this.k.shape[2] === this.length) return [this.k, this.v];
    if (!this.view) this.view = this.valid().map((t) => tf.keep(t)) as [tf.Tensor4D, tf.Tensor4D];
    return this.view;
  }

  /** New [B, Hkv, length, D] copies of the first `length` positions of the storage. */
  private valid(length = this.length): [tf.Tensor4D, tf.Tensor4D] {
    if (this.inPlace) return [firstPositions(this.k!, length), firstPositions(this.v!, length)]; // wasm: heap to heap
    const [B, H, , D] = this.k!.shape;
    return [this.k!.slice([0, 0, 0, 0], [B, H, length, D]), this.v!.slice([0, 0, 0, 0], [B, H, length, D])];
  }

  private dropView(): void {
    this.view?.[0].dispose();
    this.view?.[1].dispose();
    this.view = null;
  }

  /** Keeps only the first `length` positions. */
  crop(length: number): void {
    if (!this.k || !this.v || length >= this.length) return;
    this.dropView();
    if (this.inPlace) { // the buffers stay; positions past `length` are overwritten by the next append
      this.length = length;
      return;
    }
    const [k, v] = this.valid(length);
    this.set(tf.keep(k), tf.keep(v));
  }

  /** Reorders / selects batch rows (beam search): row i of the result is old row idx[i]. */
  selectBatch(idx: number[]): void {
    if (!this.k || !this.v) return;
    this.dropView();
    const ix = tf.tensor1d(idx, 'int32');
    const k = tf.keep(tf.gather(this.k, ix));
    const v = tf.keep(tf.gather(this.v, ix));
    ix.dispose();
    this.k.dispose();
    this.v.dispose();
    this.k = k;
    this.v = v;
  }

  /** Bytes held (storage and views). */
  bytes(): number {
    return ((this.k?.size ?? 0) + (this.v?.size ?? 0) + (this.view ? this.view[0].size * 2 : 0)) * 4;
  }

  dispose(): void {
    this.dropView();
    this.k?.dispose();
    this.v?.dispose();
    this.k = this.v = null;
    this.length = 0;
    this.inPlace = false;
  }
}

export class KVCache {
  readonly layers: KVCacheLayer[];

  constructor(numLayers: number) {
    this.layers = Array.from({ length: numLayers }, () => new KVCacheLayer());
  }

  /** Cached positions (drives rotary positions). */
  get seqLength(): number {
    return this.layers[0]?.seqLength ?? 0;
  }

  crop(length: number): void {
    for (const l of this.layers) l.crop(length);
  }

  /** See KVCacheLayer.reserve. */
  reserve(positions: number): void {
    for (const l of this.layers) l.reserve(positions);
  }

  selectBatch(idx: number[]): void {
    for (const l of this.layers) l.selectBatch(idx);
  }

  /** Bytes held (for memory reports). */
  bytes(): number {
    let n = 0;
    for (const l of this.layers) n += l.bytes();
    return n;
  }

  dispose(): void {
    for (const l of this.layers) l.dispose();
  }
}
