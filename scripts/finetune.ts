/**
 * `vlm finetune --model DIR --data FILE.json --out DIR [--data-root DIR] [--tune PARTS] [--lr X]
 * [--epochs N | --max-steps N] [--batch-size B] [--grad-accum K] [--seed S] [--json]`
 * Fine-tunes a MiniCPM-V 2.6 or VideoLLaMA 2 checkpoint on upstream-format data and writes a
 * loadable checkpoint directory. One progress line per optimizer step on stderr; with --json one
 * object on stdout at the end.
 */
import fs from 'node:fs';
import { finetune } from '../training/finetune';
import { LoraOptions, parseTargetModules } from '../training/lora';
import { LR_SCHEDULES, LrScheduleKind } from '../training/schedule';
import { StepInfo } from '../training/trainer';
import { FAMILIES } from '../models/families';
import { peakRssMb, wasmHeapBytes } from '../layers/memory';
import { Command, ParsedOptions, UsageError, flag, num, requireStr, str, strList } from './cli';

/** LoRA flags → options (null: no LoRA). peft defaults r 8, alpha 8, dropout 0 when not given. */
function loraFlags(opts: ParsedOptions): { preset?: string; over: Partial<LoraOptions> } | null {
  const preset = str(opts, 'lora-preset');
  if (preset !== undefined && !FAMILIES.some((f) => f.name === preset)) throw new UsageError(`--lora-preset must be ${FAMILIES.map((f) => f.name).join(' or ')}, got '${preset}'`);
  const r = num(opts, 'lora-r', { int: true });
  if (r !== undefined && r <= 0) throw new UsageError(`--lora-r must be an integer > 0, got ${r}`);
  const over: Partial<LoraOptions> = {};
  if (r !== undefined) over.r = r;
  const alpha = num(opts, 'lora-alpha', { min: 0, exclusiveMin: true });
  if (alpha !== undefined) over.alpha = alpha;
  const dropout = num(opts, 'lora-dropout', { min: 0, max: 0.999999 });
  if (dropout !== undefined) over.dropout = dropout;
  const target = str(opts, 'lora-target');
  if (target !== undefined) over.targetModules = parseTargetModules(target);
  if (flag(opts, 'use-rslora')) over.useRslora = true;
  if (!preset && !Object.keys(over).length) return null;
  if (!preset && over.targetModules === undefined) throw new UsageError('--lora-target is required without --lora-preset (a regex, or module names such as q_proj,v_proj)');
  return { preset, over };
}

function fmtTime(s: number): string {
  if (!Number.isFinite(s)) return '?';
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), x = Math.floor(s % 60);
  return `${h ? `${h}:` : ''}${String(m).padStart(h ? 2 : 1, '0')}:${String(x).padStart(2, '0')}`;
}

/** One progress line: a bar on a TTY (rewritten in place), else a plain line per step. */
export function progressLine(s: StepInfo, elapsedMs: number, startStep: number, tty: boolean): string {
  const done = s.step - startStep;
  const eta = done > 0 ? (elapsedMs / done) * (s.totalSteps - s.step) / 1000 : NaN;
  const tps = s.ms > 0 ? (s.supervisedTokens / s.ms) * 1000 : 0;
  const stats = `loss ${s.loss.toFixed(4)} lr ${s.lr.toExponential(2)} grad_norm ${s.gradNorm.toFixed(4)} ${tps.toFixed(1)} tok/s ETA ${fmtTime(eta)}`;
  if (!tty) return `step ${s.step}/${s.totalSteps} epoch ${s.epoch} ${stats} (${Math.round(s.ms)} ms)\n`;
  const W = 24, fill = Math.round((W * s.step) / s.totalSteps);
  return `\r[${'#'.repeat(fill)}${'-'.repeat(W - fill)}] ${s.step}/${s.totalSteps} ${stats}\x1b[K${s.step === s.totalSteps ? '\n' : ''}`;
}

/** Peak RSS and the wasm heap's size (its high-water mark) so far, for logs. */
function memoryFields(): { peak_rss_mb: number; wasm_heap_mb?: number } {
  const heap = wasmHeapBytes();
  return { peak_rss_mb: peakRssMb(), ...(heap !== null ? { wasm_heap_mb: Math.round(heap / 2 ** 20) } : {}) };
}

export const command: Command = {
  name: 'finetune',
  summary: 'Fine-tune the LLM, the connector/resampler or the vision encoder on upstream-format data; writes a checkpoint directory.',
  usage: '--model DIR --data FILE.json --out DIR [--data-root DIR] [--tune resampler,llm,...] [--lr X] [--weight-decay W] ' +
    '[--epochs N | --max-steps N] [--batch-size B] [--grad-accum K] [--max-grad-norm G] [--seed S] [--json] ' +
    '[--lora-preset minicpmv|videollama2] [--lora-r R --lora-alpha A --lora-dropout P --lora-target NAMES|REGEX [--use-rslora]] ' +
    '[--lr-schedule constant|linear|cosine] [--warmup-ratio X | --warmup-steps N] [--connector-lr X] [--hf-no-decay] [--gradient-checkpointing] ' +
    '[--save-steps N] [--resume OUT/checkpoint-N] [--eval-data FILE --eval-steps N] [--log FILE.jsonl] [--trace-grads FILE.safetensors] [--skip-missing-media]',
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
    quantize: { type: 'string', arg: 'Q', help: 'storage of the frozen large matrices: f32 | stored | f16 | bf16 | q8_0 | q4_0 (with --lora-*: QLoRA-style); default f32 when the model fits' },
    'max-slice-nums': { type: 'string', arg: 'N', help: 'MiniCPM-V: slices per image (default 9, as finetune.py)' },
    'num-frames': { type: 'string', arg: 'N', help: 'VideoLLaMA 2: frames per video (default: config num_frames)' },
    'vision-tower': { type: 'string', arg: 'DIR', help: 'VideoLLaMA 2: local directory of the vision tower named by mm_vision_tower' },
    plain: { type: 'boolean', help: 'VideoLLaMA 2: pretraining-stage data (preprocess_plain: one pair, no chat template)' },
    json: { type: 'boolean', help: 'print one JSON object {"family", "steps", "losses", "trained", "trainable_scalars", "out", "ms", "peak_rss_mb", "wasm_heap_mb"} at the end' },
    'lora-r': { type: 'string', arg: 'R', help: 'LoRA rank (turns LoRA on; peft default 8)' },
    'lora-alpha': { type: 'string', arg: 'A', help: 'LoRA alpha (scaling alpha/r; peft default 8)' },
    'lora-dropout': { type: 'string', arg: 'P', help: 'dropout on the adapter input (peft default 0)' },
    'lora-target': { type: 'string', arg: 'NAMES|REGEX', help: 'peft target_modules: comma-separated names (q_proj,v_proj: equal or "."-suffix) or a full-match regex' },
    'use-rslora': { type: 'boolean', help: 'rank-stabilised scaling alpha/sqrt(r)' },
    'lora-preset': { type: 'string', arg: 'minicpmv|videollama2', help: "upstream's LoRA script values (r, alpha, dropout, targets, fully trained parts, connector lr); explicit flags override" },
    'lr-schedule': { type: 'string', arg: 'constant|linear|cosine', help: 'HF learning-rate schedule (default constant)' },
    'warmup-ratio': { type: 'string', arg: 'X', help: 'warmup steps = ceil(X * total steps)' },
    'warmup-steps': { type: 'string', arg: 'N', help: 'linear warmup over N steps' },
    'connector-lr': { type: 'string', arg: 'X', help: 'learning rate of mm_projector (VideoLLaMA 2) / resampler (MiniCPM-V): upstream --mm_projector_lr' },
    'hf-no-decay': { type: 'boolean', help: "HF Trainer's rule (transformers 4.40): no weight decay on biases and LayerNorm weights (default: decay on every tensor)" },
    'gradient-checkpointing': { type: 'boolean', help: 'recompute each decoder / vision layer in the backward pass (less memory, same gradients)' },
    'save-steps': { type: 'string', arg: 'N', help: 'write OUT/checkpoint-N every N steps (trainable weights, optimizer moments, step, data order)' },
    resume: { type: 'string', arg: 'DIR', help: 'continue from OUT/checkpoint-N (same flags; bit-identical to an uninterrupted run)' },
    'eval-data': { type: 'string', arg: 'FILE', help: 'evaluation data (same format): eval loss every --eval-steps' },
    'eval-steps': { type: 'string', arg: 'N', help: 'evaluate every N steps (default: at the end only)' },
    log: { type: 'string', arg: 'FILE', help: 'append JSON lines (one per step and per evaluation) to FILE' },
    'trace-grads': { type: 'string', arg: 'FILE.safetensors', help: "write the first step's loss and gradients (grad.<key>) and exit without updating" },
    'skip-missing-media': { type: 'boolean', help: 'skip samples whose image/video file is missing (default: fail, as upstream)' },
  },
  async run(opts) {
    const model = requireStr(opts, 'model');
    const data = requireStr(opts, 'data');
    const traceFile = str(opts, 'trace-grads');
    const out = traceFile ? str(opts, 'out') : requireStr(opts, 'out');
    const lora = loraFlags(opts);
    const schedule = str(opts, 'lr-schedule');
    if (schedule !== undefined && !LR_SCHEDULES.includes(schedule as LrScheduleKind)) throw new UsageError(`--lr-schedule must be one of ${LR_SCHEDULES.join(', ')}, got '${schedule}'`);
    const logFile = str(opts, 'log');
    const evalFile = str(opts, 'eval-data');
    const evalStepsOpt = num(opts, 'eval-steps', { int: true, min: 1 });
    if (evalStepsOpt !== undefined && !evalFile) throw new UsageError('--eval-steps needs --eval-data');
    const tty = !!process.stderr.isTTY;
    const log = (o: Record<string, unknown>) => { if (logFile) fs.appendFileSync(logFile, JSON.stringify(o) + '\n'); };
    const t0 = performance.now();
    let startStep = -1;
    const tune = strList(opts, 'tune').flatMap((t) => t.split(',')).map((t) => t.trim()).filter(Boolean);
    const json = flag(opts, 'json');
    const epochs = num(opts, 'epochs', { min: 0, exclusiveMin: true });
    const maxSteps = num(opts, 'max-steps', { int: true, min: 1 });
    if (epochs !== undefined && maxSteps !== undefined) throw new UsageError('--epochs and --max-steps cannot be combined');
    const r = await finetune({
      model, data, out, tune,
      ...(lora ? { loraPreset: lora.preset ?? false, loraOverrides: lora.over, ...(lora.preset ? {} : { lora: { r: 8, alpha: 8, dropout: 0, ...lora.over } as LoraOptions }) } : {}),
      lrSchedule: schedule as LrScheduleKind | undefined,
      warmupRatio: num(opts, 'warmup-ratio', { min: 0, max: 1 }),
      warmupSteps: num(opts, 'warmup-steps', { int: true, min: 0 }),
      connectorLr: num(opts, 'connector-lr', { min: 0, exclusiveMin: true }),
      hfNoDecay: flag(opts, 'hf-no-decay') || undefined,
      gradientCheckpointing: flag(opts, 'gradient-checkpointing') || undefined,
      saveSteps: num(opts, 'save-steps', { int: true, min: 1 }),
      resume: str(opts, 'resume'),
      evalDataFile: evalFile,
      evalSteps: evalFile ? evalStepsOpt ?? Number.MAX_SAFE_INTEGER : undefined,
      traceGradsFile: traceFile,
      skipMissingMedia: flag(opts, 'skip-missing-media') || undefined,
      onEval: (step, loss) => {
        log({ step, eval_loss: loss });
        process.stderr.write(`${tty ? '\n' : ''}eval step ${step}: eval_loss ${loss.toFixed(4)}\n`);
      },
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
      quantize: str(opts, 'quantize'),
      maxSliceNums: num(opts, 'max-slice-nums', { int: true, min: 1 }),
      numFrames: num(opts, 'num-frames', { int: true, min: 1 }),
      visionTowerDir: str(opts, 'vision-tower'),
      plain: flag(opts, 'plain') || undefined,
      warn: process.env.VLM_DEBUG === '1' ? (m) => process.stderr.write(`warning: ${m}\n`) : () => undefined,
      onStep: (s) => {
        if (startStep < 0) startStep = s.step - 1;
        log({ step: s.step, epoch: s.epoch, loss: s.loss, lr: s.lr, grad_norm: s.gradNorm, tokens: s.supervisedTokens, samples: s.samples, ms: Math.round(s.ms), ...memoryFields() });
        process.stderr.write(progressLine(s, performance.now() - t0, startStep, tty));
      },
    });
    if (traceFile) {
      process.stdout.write(json ? JSON.stringify({ family: r.family, loss: r.losses[0], grads: r.trained, out: traceFile }) + '\n'
        : `loss ${r.losses[0].toFixed(6)}; wrote the gradients of ${r.trained.length} tensors to ${traceFile}\n`);
      return 0;
    }
    if (json) {
      process.stdout.write(JSON.stringify({
        family: r.family, steps: r.steps, epochs: r.epochs, losses: r.losses, trained: r.trained,
        trainable_scalars: r.trainableScalars, out, ms: Math.round(r.ms), ...memoryFields(),
      }) + '\n');
    } else {
      process.stdout.write(`trained ${r.trained.length} tensors (${r.trainableScalars} scalars) for ${r.steps} steps; ` +
        `loss ${r.losses[0]?.toFixed(4)} -> ${r.losses[r.losses.length - 1]?.toFixed(4)}; wrote ${out}\n`);
    }
    return 0;
  },
};
