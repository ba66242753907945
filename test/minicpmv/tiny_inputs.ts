/** Inputs of the minicpmv26_tiny golden (what upstream's processor gave `MiniCPMV.forward`). */
import { Golden } from '../helpers/golden';
import { MiniCPMVInputs } from '../../models/minicpmv/modeling';
import { PixelStrip } from '../../models/minicpmv/vision';

export function pairs(flat: number[]): [number, number][] {
  return Array.from({ length: flat.length / 2 }, (_, i) => [flat[2 * i], flat[2 * i + 1]] as [number, number]);
}

/** One sample: input_ids [1, 170], 7 images (source 3×5 patches + 6 slices 4×4), image_bound [7, 2]. */
export function tinyInputs(g: Golden): MiniCPMVInputs & { strips: PixelStrip[]; sizes: [number, number][]; bounds: [number, number][] } {
  const sizes = pairs(g.ints('tgt_sizes'));
  const bounds = pairs(g.ints('image_bound'));
  const strips = sizes.map((_, i) => g.get(`pixel_values.${i}`));
  return { inputIds: [g.ints('input_ids')], pixelValues: [strips], tgtSizes: [sizes], imageBound: [bounds], strips, sizes, bounds };
}
