/**
 * `vlm preprocess`: run the MiniCPM-V 2.6 image processor on one image file and save what the
 * model consumes.
 *
 *   vlm preprocess --model DIR --image FILE [--max-slice-nums N] --out FILE.safetensors [--json]
 *
 * DIR only needs `preprocessor_config.json`. The output holds `pixel_values.<i>` (float32
 * `[3, 14, L·14]`, the source image first, then the slices row-major) and `tgt_sizes` (int64
 * `[n, 2]`, patches `[h, w]`), written atomically (nothing is left behind on failure). `--json`
 * prints exactly one JSON object on stdout:
 *   {"sliced_grid": [cols, rows] | null, "tgt_sizes": [[h, w], ...], "placeholder": "..."}
 * (the placeholder of image index 0, with `<image_id>0</image_id>` when the config uses ids).
 */
import path from 'node:path';

import { checkOutputTarget } from '../io/files';

import { Command, ParsedOptions, UsageError, flag, num, requireStr } from './cli';
import { loadImage } from '../media/image';
import { MiniCPMVImageInputs, MiniCPMVImageProcessor } from '../models/minicpmv/processing';
import { WriteTensor, writeSafetensors } from '../weights/safetensors';

/** The tensors `vlm preprocess` writes, in order. */
export function preprocessTensors(inputs: MiniCPMVImageInputs): Record<string, WriteTensor> {
  const tensors: Record<string, WriteTensor> = {};
  inputs.pixelValues.forEach((p, i) => {
    tensors[`pixel_values.${i}`] = { dtype: 'F32', shape: [...p.shape], data: p.data };
  });
  tensors.tgt_sizes = { dtype: 'I64', shape: [inputs.tgtSizes.length, 2], data: inputs.tgtSizes.flat() };
  return tensors;
}

/** The `--json` summary object (key names are a contract for scripts). */
export function preprocessSummary(inputs: MiniCPMVImageInputs): { sliced_grid: [number, number] | null; tgt_sizes: [number, number][]; placeholder: string } {
  return { sliced_grid: inputs.slicedGrid, tgt_sizes: inputs.tgtSizes, placeholder: inputs.placeholder(0) };
}

/** Turns a library error about an input file into a UsageError (message only, exit code 2). */
function asUsage(e: unknown): never {
  throw e instanceof UsageError ? e : new UsageError((e as Error).message);
}

export const command: Command = {
  name: 'preprocess',
  usesBackend: false,
  summary: 'Run the MiniCPM-V 2.6 image processor on an image and save pixel_values / tgt_sizes',
  usage: '--model DIR --image FILE [--max-slice-nums N] --out FILE.safetensors [--json]',
  options: {
    model: { type: 'string', arg: 'DIR', help: 'directory with preprocessor_config.json (a MiniCPM-V 2.6 checkpoint)' },
    image: { type: 'string', arg: 'FILE', help: 'image file (png, jpeg, webp, gif, tiff)' },
    'max-slice-nums': { type: 'string', arg: 'N', help: 'max slices besides the source image (default: max_slice_nums of the config)' },
    out: { type: 'string', arg: 'FILE', help: 'output .safetensors (pixel_values.<i>, tgt_sizes)' },
    json: { type: 'boolean', help: 'print {"sliced_grid", "tgt_sizes", "placeholder"} as one JSON object on stdout' },
  },
  async run(opts: ParsedOptions) {
    const modelDir = requireStr(opts, 'model');
    const imageFile = requireStr(opts, 'image');
    const out = requireStr(opts, 'out');
    const maxSliceNums = num(opts, 'max-slice-nums', { int: true, min: 1 });
    // Before any work: never write over an input or into the model directory, never replace a device.
    checkOutputTarget(out, { inputs: [imageFile, path.join(modelDir, 'preprocessor_config.json')], inputDirs: [modelDir] });

    let processor: MiniCPMVImageProcessor;
    try {
      processor = MiniCPMVImageProcessor.fromDir(modelDir, (m) => process.stderr.write(`warning: ${m}\n`));
    } catch (e) {
      asUsage(e);
    }
    const image = await loadImage(imageFile).catch(asUsage);
    const inputs = processor.preprocess(image, { maxSliceNums });
    writeSafetensors(out, preprocessTensors(inputs), { producer: 'tfjs-vlm preprocess', image: path.basename(imageFile) }, { flag: '--out' });

    if (flag(opts, 'json')) {
      process.stdout.write(JSON.stringify(preprocessSummary(inputs)) + '\n');
    } else {
      const grid = inputs.slicedGrid ? `${inputs.slicedGrid[0]}x${inputs.slicedGrid[1]} grid` : 'not sliced';
      process.stdout.write(`${imageFile}: ${image.width}x${image.height}, ${grid}, ${inputs.pixelValues.length} image(s) ` +
        `(tgt_sizes ${JSON.stringify(inputs.tgtSizes)}) -> ${out}\n`);
    }
  },
};
