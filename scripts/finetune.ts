/**
 * `vlm finetune --model DIR --data FILE.json --out DIR [--data-root DIR] [--tune PARTS] [--lr X]
 * [--epochs N | --max-steps N] [--batch-size B] [--grad-accum K] [--seed S] [--json]`
 * Fine-tunes a MiniCPM-V 2.6 or VideoLLaMA 2 checkpoint on upstream-format data and writes a
 * loadable checkpoint directory. One progress line per optimizer step on stderr; with --json one
 * object on stdout at the end.
 */
import { finetune } from '../training/finetune';
import { Command, UsageError, flag, num, requireStr, str, strList } from './cli';

export const command: Command = {
  name: 'finetune',
  summary: 'Fine-tune the LLM, the connector/resampler or the vision encoder on upstream-format data; writes a checkpoint directory.',
  usage: '--model DIR --data FILE.json --out DIR [--data-root DIR] [--tune resampler,llm,...] [--lr X] [--weight-decay W] ' +
    '[--epochs N | --max-steps N] [--batch-size B] [--grad-accum K] [--max-grad-norm G] [--seed S] [--json]',
  options: {
    model: { type: 'string', arg: 'DIR', help: 'checkpoint directory to start from' },
    data: { type: 'string', arg: 'FILE', help: 'training data: JSON list of samples (MiniCPM-V finetune / VideoLLaMA 2 train.py format)' },
    'data-root': { type: 'string', arg: 'DIR', help: "where relative image/video paths are resolved (default: the data file's directory)" },
    out: { type: 'string', arg: 'DIR', help: 'output checkpoint directory (must not exist or be empty)' },
    tune: {
      type: 'string', multiple: true, arg: 'PARTS',
      help: 'comma-separated parts to train, by module or checkpoint prefix: MiniCPM-V llm, vpm, resampler (default all); ' +
        'VideoLLaMA 2 llm, mm_projector (default both)',
    },
    lr: { type: 'string', arg: 'X', help: 'learning rate, constant (default 5e-5)' },
    'weight-decay': { type: 'string', arg: 'W', help: 'AdamW decoupled weight decay (default 0)' },
    epochs: { type: 'string', arg: 'N', help: 'passes over the data (default 3)' },
    'max-steps': { type: 'string', arg: 'N', help: 'stop after N optimizer steps (overrides --epochs)' },
    'batch-size': { type: 'string', arg: 'B', help: 'samples per micro-batch (default 1)' },
    'grad-accum': { type: 'string', arg: 'K', help: 'micro-batches per optimizer step (default 1)' },
    'max-grad-norm': { type: 'string', arg: 'G', help: 'clip the global gradient norm (default: no clipping)' },
    seed: { type: 'string', arg: 'S', help: 'shuffle seed: an integer in [0, 2^53 - 1] (default 42)' },
    'no-shuffle': { type: 'boolean', help: 'keep the data order' },
    tokenizer: { type: 'string', arg: 'DIR', help: 'tokenizer directory (default: --model); copied into --out' },
    'max-length': { type: 'string', arg: 'N', help: 'model_max_length: longer samples are truncated (default 2048)' },
    'max-slice-nums': { type: 'string', arg: 'N', help: 'MiniCPM-V: slices per image (default 9, as finetune.py)' },
    'num-frames': { type: 'string', arg: 'N', help: 'VideoLLaMA 2: frames per video (default: config num_frames)' },
    'vision-tower': { type: 'string', arg: 'DIR', help: 'VideoLLaMA 2: local directory of the vision tower named by mm_vision_tower' },
    plain: { type: 'boolean', help: 'VideoLLaMA 2: pretraining-stage data (preprocess_plain: one pair, no chat template)' },
    json: { type: 'boolean', help: 'print one JSON object {"family", "steps", "losses", "trained", "trainable_scalars", "out", "ms"} at the end' },
  },
  async run(opts) {
    const model = requireStr(opts, 'model');
    const data = requireStr(opts, 'data');
    const out = requireStr(opts, 'out');
    const tune = strList(opts, 'tune').flatMap((t) => t.split(',')).map((t) => t.trim()).filter(Boolean);
    const json = flag(opts, 'json');
    const epochs = num(opts, 'epochs', { min: 0, exclusiveMin: true });
    const maxSteps = num(opts, 'max-steps', { int: true, min: 1 });
    if (epochs !== undefined && maxSteps !== undefined) throw new UsageError('--epochs and --max-steps cannot be combined');
    const r = await finetune({
      model, data, out, tune,
      dataRoot: str(opts, 'data-root'),
      tokenizerDir: str(opts, 'tokenizer'),
      lr: num(opts, 'lr', { min: 0, exclusiveMin: true }),
      weightDecay: num(opts, 'weight-decay', { min: 0 }),
      epochs, maxSteps,
      batchSize: num(opts, 'batch-size', { int: true, min: 1 }),
      gradAccumSteps: num(opts, 'grad-accum', { int: true, min: 1 }),
      maxGradNorm: num(opts, 'max-grad-norm', { min: 0, exclusiveMin: true }),
      seed: num(opts, 'seed', { int: true, min: 0, max: Number.MAX_SAFE_INTEGER }),
      shuffle: !flag(opts, 'no-shuffle'),
      maxLength: num(opts, 'max-length', { int: true, min: 2 }),
      maxSliceNums: num(opts, 'max-slice-nums', { int: true, min: 1 }),
      numFrames: num(opts, 'num-frames', { int: true, min: 1 }),
      visionTowerDir: str(opts, 'vision-tower'),
      plain: flag(opts, 'plain') || undefined,
      warn: process.env.VLM_DEBUG === '1' ? (m) => process.stderr.write(`warning: ${m}\n`) : () => undefined,
      onStep: (s) => process.stderr.write(`step ${s.step} epoch ${s.epoch} loss ${s.loss.toFixed(4)} grad_norm ${s.gradNorm.toFixed(4)} ` +
        `tokens ${s.supervisedTokens} ${Math.round(s.ms)} ms\n`),
    });
    if (json) {
      process.stdout.write(JSON.stringify({
        family: r.family, steps: r.steps, epochs: r.epochs, losses: r.losses, trained: r.trained,
        trainable_scalars: r.trainableScalars, out, ms: Math.round(r.ms),
      }) + '\n');
    } else {
      process.stdout.write(`trained ${r.trained.length} tensors (${r.trainableScalars} scalars) for ${r.steps} steps; ` +
        `loss ${r.losses[0].toFixed(4)} -> ${r.losses[r.losses.length - 1].toFixed(4)}; wrote ${out}\n`);
    }
    return 0;
  },
};
