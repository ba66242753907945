/**
 * Row-chunked float32 parameters (vocab-sized tables are split into ≤ 512 MB chunks): the chunked
 * Embedding gather keeps int32 ids (it crashed with float32 ids before) and equals the unchunked
 * one; a chunked Linear equals the unchunked one. Chunking is forced small here.
 */
import * as tf from '@tensorflow/tfjs';
import { fillParam, noise } from '../../layers/init';
import { Embedding, Linear } from '../../layers/linear';

describe('row-chunked float32 parameters', () => {
  it('Embedding: chunked gather equals the whole-table gather, ids stay int32, nothing leaks', () => {
    const whole = new Embedding(1000, 16), chunked = new Embedding(1000, 16);
    chunked.weight.maxChunkBytes = 64 * 16 * 4; // 64 rows per chunk → 16 chunks
    const values = noise(1000 * 16, 0.02, 3);
    fillParam(whole.weight, () => values);
    fillParam(chunked.weight, (n, [s]) => values.slice(s * 16, s * 16 + n));
    expect(chunked.weight.chunks.length).toBe(16);
    const ids = tf.tensor2d([[0, 63, 64, 999, 500], [128, 1, 998, 640, 65]], [2, 5], 'int32');
    const n0 = tf.memory().numTensors;
    const a = whole.forward(ids), b = chunked.forward(ids);
    expect(b.shape).toEqual([2, 5, 16]);
    expect(Array.from(b.dataSync())).toEqual(Array.from(a.dataSync()));
    tf.dispose([a, b]);
    expect(tf.memory().numTensors).toBe(n0);
    ids.dispose();
    whole.dispose();
    chunked.dispose();
  });

  it('Linear: a chunked weight gives the same output as a whole one', () => {
    const whole = new Linear(32, 300, { chunked: true }), chunked = new Linear(32, 300, { chunked: true });
    chunked.weight.maxChunkBytes = 100 * 32 * 4; // 3 chunks of 100 rows
    const values = noise(300 * 32, 0.02, 5);
    fillParam(whole.weight, () => values);
    fillParam(chunked.weight, (n, [s]) => values.slice(s * 32, s * 32 + n));
    expect(chunked.weight.chunks.length).toBe(3);
    const x = tf.tensor2d(noise(4 * 32, 1, 7), [4, 32]);
    const a = whole.forward(x), b = chunked.forward(x);
    const d = tf.max(tf.abs(tf.sub(a, b))).dataSync()[0];
    expect(d).toBeLessThan(1e-6);
    tf.dispose([x, a, b]);
    whole.dispose();
    chunked.dispose();
  });
});
