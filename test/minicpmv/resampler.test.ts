/**
 * layers/resampler.ts on its own: loaded from the `resampler.*` tensors of the tiny checkpoint and
 * fed the golden `vpm.last_hidden_state`, it reproduces every `resampler.*` golden; the 2-D
 * sincos embedding matches upstream's numpy code; the position cache grows past 70 like
 * `_adjust_pos_cache`; an image gives the same output alone as padded in a batch; kv_proj is
 * Identity when kv_dim == embed_dim; bad inputs are refused with messages naming them.
 */
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { randomizeParams } from '../../layers/init';
import { Resampler, TorchMultiheadAttention, sincosHalfTable } from '../../layers/resampler';
import { Checkpoint } from '../../weights/checkpoint';
import { loadWeights } from '../../weights/load';
import { Golden, expectClose, itIf } from '../helpers/golden';
import { modelFixture } from '../helpers/fixtures';
import { expectNoLeak } from '../helpers/memory';
import { pairs } from './tiny_inputs';

const dir = modelFixture('minicpmv26_tiny');

/** The tiny fixture's resampler: query_num 16, embed 256, 256 // 128 = 2 heads, kv_dim 48. */
function tinyResampler(): Resampler {
  const r = new Resampler({ numQueries: 16, embedDim: 256, numHeads: 2, kvDim: 48, normEps: 1e-6 });
  const ck = Checkpoint.open(dir!);
  try {
    // the checkpoint also holds llm.* and vpm.*: those are ignored, resampler.* lose their prefix
    loadWeights(r, [{ checkpoint: ck, keymap: { name: 'resampler', renames: [['resampler.', '']], ignore: [/^(llm|vpm)\./] } }], { what: 'Resampler' });
  } finally {
    ck.close();
  }
  return r;
}

describe('Resampler (tiny checkpoint) against the resampler.* goldens', () => {
  let r: Resampler;
  let g: Golden;
  beforeAll(() => {
    if (!dir) return;
    r = tinyResampler();
    g = new Golden(path.join(dir, 'golden.safetensors'));
  });
  afterAll(() => {
    r?.dispose();
    g?.close();
  });

  itIf(dir)('from the golden vpm.last_hidden_state, every stage is within 1e-4', () => {
    const x = g.tensor('vpm.last_hidden_state') as tf.Tensor3D;
    const taps = new Map<string, { data: Float32Array; shape: number[] }>();
    const y = r.forward(x, pairs(g.ints('tgt_sizes')), { taps: (n, t) => taps.set(n, { data: t.dataSync() as Float32Array, shape: t.shape }) });
    for (const name of ['resampler.kv_proj', 'resampler.ln_kv', 'resampler.ln_q', 'resampler.attn_out_QBD', 'resampler.ln_post']) {
      expectClose(`${name} (standalone)`, taps.get(name)!, g.get(name), 1e-4);
    }
    expectClose('resampler.out (standalone)', y, g.get('resampler.out'), 1e-4);
    tf.dispose([x, y]);
  });

  itIf(dir)('inference moves the k/v projections onto the queries (absorbed): the same output as the projected path', () => {
    const x = g.tensor('vpm.last_hidden_state') as tf.Tensor3D;
    const tgt = pairs(g.ints('tgt_sizes'));
    const spy = jest.spyOn(TorchMultiheadAttention.prototype as unknown as { forwardAbsorbed: () => tf.Tensor }, 'forwardAbsorbed');
    const before = tf.memory().numTensors;
    const a = r.forward(x, tgt);
    const absorbed = spy.mock.calls.length;
    process.env.VLM_RESAMPLER_ABSORB = '0';
    let p: tf.Tensor3D;
    try {
      p = r.forward(x, tgt);
    } finally {
      delete process.env.VLM_RESAMPLER_ABSORB;
    }
    expect(spy.mock.calls.length).toBe(absorbed); // VLM_RESAMPLER_ABSORB=0: the projected path
    spy.mockRestore();
    // weights [out, in] (the native matmul kernels' layout) take the absorbed path
    if (r.attn.in_proj_weight.tensors.layout === 'same') expect(absorbed).toBe(1);
    expectClose('resampler.out (absorbed vs projected)', a, { data: p.dataSync() as Float32Array, shape: p.shape }, 1e-5);
    expectClose('resampler.out (absorbed)', a, g.get('resampler.out'), 1e-4);
    tf.dispose([a, p]);
    expect(tf.memory().numTensors).toBe(before);
    x.dispose();
  });

  itIf(dir)('in_proj_weight is one checkpoint tensor held as q, k, v row chunks', () => {
    const p = r.attn.in_proj_weight;
    expect(p.shape).toEqual([768, 256]);
    expect(p.chunks.length).toBe(3);
    expect(p.chunkStarts).toEqual([0, 256, 512]);
  });

  itIf(dir)('an image alone equals the same image padded in a batch (key padding mask)', () => {
    const x = g.tensor('vpm.last_hidden_state') as tf.Tensor3D; // [7, 16, 48]; image 0 is 3×5 = 15 patches
    const sizes = pairs(g.ints('tgt_sizes'));
    const batch = r.forward(x, sizes);
    const alone = r.forward(x.slice([0, 0, 0], [1, 15, 48]) as tf.Tensor3D, [sizes[0]]);
    const row0 = batch.slice([0, 0, 0], [1, 16, 256]);
    expectClose('image 0 alone vs in the batch', alone, { data: row0.dataSync(), shape: row0.shape }, 1e-5);
    tf.dispose([x, batch, alone, row0]);
  });

  itIf(dir)('forward leaves tf.memory().numTensors unchanged', async () => {
    const x = g.tensor('vpm.last_hidden_state') as tf.Tensor3D;
    const sizes = pairs(g.ints('tgt_sizes'));
    await expectNoLeak('Resampler.forward', () => r.forward(x, sizes).dispose());
    x.dispose();
  });

  itIf(dir)('bad inputs name the argument and both numbers', () => {
    const x = tf.zeros([2, 16, 48]) as tf.Tensor3D;
    expect(() => r.forward(x, [[4, 4]])).toThrow('Resampler: 2 images in x but 1 tgt_sizes');
    expect(() => r.forward(x, [[4, 4], [3, 3]].map((s) => s as [number, number]))).not.toThrow();
    expect(() => r.forward(x, [[3, 5], [3, 3]])).toThrow('Resampler: x has 16 patches per image, but the largest tgt_sizes entry has 15 (h·w)');
    expect(() => r.forward(x, [[4, 4], [0, 3]])).toThrow('Resampler: tgt_sizes[1] = [0, 3] must be positive integers');
    const y = tf.zeros([2, 16, 40]) as tf.Tensor3D;
    expect(() => r.forward(y, [[4, 4], [4, 4]])).toThrow('Resampler: x has 40 features, kv_dim is 48');
    tf.dispose([x, y]);
  });
});

describe('2-D sincos position embedding', () => {
  it('equals upstream get_2d_sincos_pos_embed (column half first)', () => {
    // Reference (resampler.py, numpy 1.24.2):
    //   get_2d_sincos_pos_embed(8, (70, 70))[:2, :3].reshape(6, 8).tolist()
    const REF = [
      [0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0],
      [0.8414710164070129, 0.009999833069741726, 0.5403022766113281, 0.9999499917030334, 0.0, 0.0, 1.0, 1.0],
      [0.9092974066734314, 0.019998665899038315, -0.41614681482315063, 0.9998000264167786, 0.0, 0.0, 1.0, 1.0],
      [0.0, 0.0, 1.0, 1.0, 0.8414710164070129, 0.009999833069741726, 0.5403022766113281, 0.9999499917030334],
      [0.8414710164070129, 0.009999833069741726, 0.5403022766113281, 0.9999499917030334, 0.8414710164070129, 0.009999833069741726, 0.5403022766113281, 0.9999499917030334],
      [0.9092974066734314, 0.019998665899038315, -0.41614681482315063, 0.9998000264167786, 0.8414710164070129, 0.009999833069741726, 0.5403022766113281, 0.9999499917030334],
    ];
    const r = new Resampler({ numQueries: 1, embedDim: 8, numHeads: 1, kvDim: null, normEps: 1e-6 });
    r.adjustPosCache([[2, 3]]);
    const pe = r.posEmbed([[2, 3]], 6); // patches row-major: (0,0) (0,1) (0,2) (1,0) (1,1) (1,2)
    expectClose('pos_embed[:2, :3]', pe, { data: REF.flat(), shape: [1, 6, 8] }, 1e-6);
    pe.dispose();
    expect(() => sincosHalfTable(3, 6)).toThrow(/multiple of 4/);
  });

  it('grows the cache past 70 like _adjust_pos_cache, never shrinks it, and pads with zero rows', () => {
    const r = new Resampler({ numQueries: 1, embedDim: 16, numHeads: 1, kvDim: null, normEps: 1e-6 });
    expect(r.maxSize).toEqual([70, 70]);
    r.adjustPosCache([[2, 75]]);
    expect(r.maxSize).toEqual([70, 75]);
    r.adjustPosCache([[3, 3]]);
    expect(r.maxSize).toEqual([70, 75]);
    const table = sincosHalfTable(75, 16); // [75, 8]
    const pe = r.posEmbed([[1, 75], [1, 2]], 75); // [2, 75, 16]
    const d = pe.dataSync();
    // image 0, patch 74 = row 0, column 74: [sincos(74), sincos(0)]
    expect(Array.from(d.slice(74 * 16, 74 * 16 + 8))).toEqual(Array.from(table.slice(74 * 8, 75 * 8)));
    expect(Array.from(d.slice(74 * 16 + 8, 75 * 16))).toEqual(Array.from(table.slice(0, 8)));
    // image 1 has 2 patches: rows 2.. are the pad_sequence zeros
    expect(d.slice((75 + 2) * 16, 2 * 75 * 16).every((v) => v === 0)).toBe(true);
    pe.dispose();
  });
});

describe('Resampler construction', () => {
  it('kv_proj is Identity (no parameter) when kv_dim equals embed_dim, a Linear without bias otherwise', () => {
    const same = new Resampler({ numQueries: 4, embedDim: 32, numHeads: 2, kvDim: 32, normEps: 1e-6 });
    const keys = [...same.namedParams()].map(([k]) => k);
    expect(keys).not.toContain('kv_proj.weight');
    expect(keys.sort()).toEqual(['attn.in_proj_bias', 'attn.in_proj_weight', 'attn.out_proj.bias', 'attn.out_proj.weight',
      'ln_kv.bias', 'ln_kv.weight', 'ln_post.bias', 'ln_post.weight', 'ln_q.bias', 'ln_q.weight', 'proj', 'query']);
    randomizeParams(same);
    const y = same.forward(tf.ones([1, 4, 32]) as tf.Tensor3D, [[2, 2]]);
    expect(y.shape).toEqual([1, 4, 32]);
    y.dispose();
    same.dispose();
    const other = new Resampler({ numQueries: 4, embedDim: 32, numHeads: 2, kvDim: 8, normEps: 1e-6 });
    const kv = new Map(other.namedParams()).get('kv_proj.weight')!;
    expect(kv.shape).toEqual([32, 8]);
    expect(other.kv_proj!.bias).toBeNull();
  });

  it('MultiheadAttention refuses heads that do not divide embed_dim', () => {
    expect(() => new TorchMultiheadAttention(30, 4)).toThrow('MultiheadAttention: embed_dim 30 is not divisible by num_heads 4');
  });
});
