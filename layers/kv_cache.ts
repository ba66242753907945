/**
 * KV cache with the shape of HF `DynamicCache` / `DynamicLayer`: one layer entry per decoder layer,
 * keys and values [B, Hkv, S, D]; `update` appends the new step and returns the full tensors.
 * The cache owns its tensors (kept out of tf.tidy) and disposes what it replaces.
 */
import * as tf from '@tensorflow/tfjs';

export class KVCacheLayer {
  keys: tf.Tensor4D | null = null;
  values: tf.Tensor4D | null = null;

  /** Number of cached positions. */
  get seqLength(): number {
    return this.keys ? this.keys.shape[2] : 0;
  }

  /** Appends k, v ([B, Hkv, T, D]) and returns the full [B, Hkv, S, D] pair (owned by the cache). */
  update(k: tf.Tensor4D, v: tf.Tensor4D): [tf.Tensor4D, tf.Tensor4D] {
    const nk = this.keys ? tf.concat([this.keys, k], 2) : k.clone();
    const nv = this.values ? tf.concat([this.values, v], 2) : v.clone();
    this.keys?.dispose();
    this.values?.dispose();
    this.keys = tf.keep(nk);
    this.values = tf.keep(nv);
    return [this.keys, this.values];
  }

  /** Keeps only the first `length` positions. */
  crop(length: number): void {
    if (!this.keys || !this.values || length >= this.seqLength) return;
    const [B, H, , D] = this.keys.shape;
    const k = tf.keep(this.keys.slice([0, 0, 0, 0], [B, H, length, D]));
    const v = tf.keep(this.values.slice([0, 0, 0, 0], [B, H, length, D]));
    this.keys.dispose();
    this.values.dispose();
    this.keys = k;
    this.values = v;
  }

  /** Reorders / selects batch rows (beam search): row i of the result is old row idx[i]. */
  selectBatch(idx: number[]): void {
    if (!this.keys || !this.values) return;
    const ix = tf.tensor1d(idx, 'int32');
    const k = tf.keep(tf.gather(this.keys, ix));
    const v = tf.keep(tf.gather(this.values, ix));
    ix.dispose();
    this.keys.dispose();
    this.values.dispose();
    this.keys = k;
    this.values = v;
  }

  dispose(): void {
    this.keys?.dispose();
    this.values?.dispose();
    this.keys = this.values = null;
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

  selectBatch(idx: number[]): void {
    for (const l of this.layers) l.selectBatch(idx);
  }

  /** Bytes held (for memory reports). */
  bytes(): number {
    let n = 0;
    for (const l of this.layers) n += ((l.keys?.size ?? 0) + (l.values?.size ?? 0)) * 4;
    return n;
  }

  dispose(): void {
    for (const l of this.layers) l.dispose();
  }
}
