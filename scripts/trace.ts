/**
 * `vlm trace --model DIR (--image FILE | --video FILE) --prompt TEXT [--num-frames N] --out FILE.safetensors`
 * One forward pass over the chat prompt; writes the intermediates under the golden names
 * (float32; ids as int64) atomically.
 */
import { writeSafetensors, WriteTensor } from '../weights/safetensors';
import { checkOutputTarget } from '../io/files';
import { userTurnParts } from './chat_cli';
import { Command, flag, requireStr, str, strList } from './cli';
import { MODEL_OPTIONS, generationFlags, modelFromFlags } from './chat';

export const command: Command = {
  name: 'trace',
  summary: 'Run one forward pass over the chat prompt and save every intermediate tensor under its golden name.',
  usage: '--model DIR (--image FILE | --video FILE) --prompt TEXT [--num-frames N] [--max-slice-nums N] --out FILE.safetensors [--json]',
  options: {
    ...MODEL_OPTIONS,
    out: { type: 'string', arg: 'FILE', help: 'output .safetensors file' },
    json: { type: 'boolean', help: 'print {"out", "tensors": {name: shape}} after writing' },
  },
  async run(opts) {
    const out = requireStr(opts, 'out');
    const prompt = requireStr(opts, 'prompt');
    const gen = generationFlags(opts);
    // Before any work: never write over an input or into the model directory, never replace a device.
    const tower = str(opts, 'vision-tower');
    checkOutputTarget(out, {
      inputs: [...strList(opts, 'image'), ...strList(opts, 'video')],
      inputDirs: [requireStr(opts, 'model'), ...(tower ? [tower] : [])],
    });
    const model = await modelFromFlags(opts);
    try {
      const traced = await model.trace(userTurnParts(prompt, strList(opts, 'image'), strList(opts, 'video')), { ...gen, system: str(opts, 'system') });
      const tensors: Record<string, WriteTensor> = {};
      for (const [name, t] of traced) tensors[name] = { dtype: t.dtype === 'int32' ? 'I64' : 'F32', shape: t.shape, data: t.data };
      writeSafetensors(out, tensors, { producer: 'tfjs-vlm trace', family: model.family }, { flag: '--out' });
      if (flag(opts, 'json')) {
        process.stdout.write(JSON.stringify({ out, tensors: Object.fromEntries([...traced].map(([k, t]) => [k, t.shape])) }) + '\n');
      } else {
        process.stdout.write(`wrote ${traced.size} tensors to ${out}\n`);
      }
    } finally {
      model.dispose();
    }
    return 0;
  },
};
