/**
 * NaViT bucketised position ids, bit-exact with torch. The reference is
 * test/fixtures/minicpmv26_tiny/navit_position_ids.json, produced by torch 1.13.0a0 (the goldens'
 * Debian build) with the script stored in the file: every side 1..100 against the 70×70 grid of
 * the real SigLIP-400M (image_size 980 / patch 14), whole batches for S = 70 and S = 8, by
 * default (8-float vectors) and with ATEN_CPU_CAPABILITY=avx512 (16-float vectors).
 */
import fs from 'node:fs';
import { bucketizeRight, navitBuckets, navitPositionIds, torchArangeF32 } from '../../models/minicpmv/navit_positions';
import { fixture } from '../helpers/golden';

interface Run { vec_width: number; buckets_S70: Record<string, number[]>; position_ids: { S: number; tgt_sizes: [number, number][]; ids: number[][] }[] }
const ref = JSON.parse(fs.readFileSync(fixture('minicpmv26_tiny', 'navit_position_ids.json'), 'utf8')) as { runs: Record<'default' | 'avx512', Run> };

describe('torch.arange / torch.bucketize emulation', () => {
  it('arange lengths and values follow torch (float32 result, double length)', () => {
    // torch.arange(1/8, 1.0, 1/8).tolist() → [0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875]
    expect(Array.from(torchArangeF32(1 / 8, 1.0, 1 / 8))).toEqual([0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875]);
    // n = torch.tensor([3], dtype=torch.int32)[0]; torch.arange(0, 1 - 1e-6, 1 / n).tolist()
    //   → [0.0, 0.3333333432674408, 0.6666666865348816]
    expect(Array.from(torchArangeF32(0, 1 - 1e-6, Math.fround(1 / 3)))).toEqual([0, 0.3333333432674408, 0.6666666865348816]);
    // len(torch.arange(1/70, 1.0, 1/70)) → 69
    expect(torchArangeF32(1 / 70, 1.0, 1 / 70).length).toBe(69);
  });

  it('the vectorised kernel rounds the block base first (side 58: 29/58 is 0.49999997, not 0.5)', () => {
    // n = torch.tensor([58], dtype=torch.int32)[0]; torch.arange(0, 1 - 1e-6, 1 / n)[29].item()
    //   → 0.4999999701976776 (default build); the scalar formula float(29 · float(1/58)) gives 0.5
    expect(torchArangeF32(0, 1 - 1e-6, Math.fround(1 / 58))[29]).toBe(0.4999999701976776);
    expect(torchArangeF32(0, 1 - 1e-6, Math.fround(1 / 58), 16)[29]).toBe(0.5);
  });

  it('bucketize(right=True) counts boundaries <= value', () => {
    const b = Float32Array.from([0.25, 0.5, 0.75]);
    // torch.bucketize(torch.tensor([0., .25, .3, .5, .99]), torch.tensor([.25, .5, .75]), right=True) → [0, 1, 1, 2, 3]
    expect(Array.from(bucketizeRight(Float32Array.from([0, 0.25, 0.3, 0.5, 0.99]), b))).toEqual([0, 1, 1, 2, 3]);
  });

  it('rejects a non-positive step or side', () => {
    expect(() => torchArangeF32(0, 1, 0)).toThrow(/step must be a positive number/);
    expect(() => navitBuckets(0, 70)).toThrow(/positive integer, got 0/);
  });
});

describe.each(['default', 'avx512'] as const)('NaViT buckets vs torch 1.13 (%s build)', (run) => {
  const r = ref.runs[run];

  it(`every side in the reference, S = 70 (vector width ${r.vec_width})`, () => {
    const sides = Object.keys(r.buckets_S70);
    expect(sides.length).toBeGreaterThan(0);
    for (const side of sides) {
      expect([side, Array.from(navitBuckets(Number(side), 70, r.vec_width))]).toEqual([side, r.buckets_S70[side]]);
    }
  });

  it('whole batches of position ids (padded patches keep id 0)', () => {
    for (const c of r.position_ids) {
      const maxP = c.ids[0].length;
      const ours = navitPositionIds(c.tgt_sizes, maxP, c.S, r.vec_width);
      expect(Array.from(ours)).toEqual(c.ids.flat());
    }
  });
});

describe('NaViT position ids: grids where float rounding decides the bucket', () => {
  it('side 58, patch 29: bucket 34 by default, 35 with avx512 (torch reference above)', () => {
    expect(ref.runs.default.buckets_S70['58'][29]).toBe(34);
    expect(ref.runs.avx512.buckets_S70['58'][29]).toBe(35);
    expect(navitBuckets(58, 70)[29]).toBe(34);
    expect(navitBuckets(58, 70, 16)[29]).toBe(35);
  });

  it('side 77, patch 55: exact rational arithmetic says ⌊55·70/77⌋ = 50, torch says 49', () => {
    expect(Math.floor((55 * 70) / 77)).toBe(50);
    expect(ref.runs.default.buckets_S70['77'][55]).toBe(49);
    expect(navitBuckets(77, 70)[55]).toBe(49);
  });

  it('rejects a grid larger than the padded length', () => {
    expect(() => navitPositionIds([[4, 5]], 16, 8)).toThrow(/tgt_sizes\[0\] = \[4, 5\] has 20 patches, more than the 16 positions/);
  });
});
