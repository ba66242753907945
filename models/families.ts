/**
 * The family table: one row per model family, keyed by config.json's `model_type` (like mlx-vlm's
 * per-model folders + its remapping table). A row names where everything of the family lives:
 * its config parser, model class, processor, key map, chat pipeline, training adapter, bench cases
 * and CLI extras. The registry, training, bench and the CLI read this table; nothing else switches
 * on family names. Adding a family = one folder under models/ + one row here
 * (docs/ADDING_A_MODEL.md).
 *
 * Rows load their folder lazily (`require` inside the functions), so using one family never
 * imports the others.
 */
import type { ChatModel } from './chat';
import type { ModelLoadOptions } from './contract';
import type { TrainFamily } from '../training/family';
import type { LoraPreset } from '../training/lora';
import type { BenchCase } from '../bench/runner';
import type { RandomCheckpointSpec, RandomSpecOptions } from '../weights/random_checkpoint';
import type { FamilyWeights } from '../weights/load';
export type { FamilyWeights };


/** Options every training adapter accepts (family-specific ones are validated by `trainOptions`). */
export interface TrainAdapterOptions {
  samples?: readonly unknown[];
  dataRoot: string;
  maxLength?: number;
  tokenizerDir?: string;
  warn?: (msg: string) => void;
  /** Family-specific options (maxSliceNums, numFrames, visionTowerDir, plain, …). */
  [k: string]: unknown;
}

/** A CLI flag only some families read, with the option it sets. */
export interface FamilyFlag {
  flag: string;
  option: string;
  help: string;
}

export interface FamilyRow {
  /** The family key (`ChatModel.family`). */
  name: string;
  /** Human name for messages. */
  title: string;
  /** `model_type` values of config.json that this family loads. */
  modelTypes: readonly string[];
  /** Where the parts live (for docs and errors): config parser, model class, processor, key map. */
  parts: { config: string; model: string; processor: string; keymap: string; chat: string; train: string; bench: string };
  /** The chat pipeline (model + tokenizer + processors) of a checkpoint directory. */
  loadChat(dir: string, opts: ModelLoadOptions): Promise<ChatModel>;
  /** The training adapter (model, data, loss) of a checkpoint directory. */
  loadTrainer(dir: string, opts: TrainAdapterOptions): Promise<TrainFamily>;
  /** Training options only this family reads (others are refused for it). */
  trainOptions: readonly string[];
  /** Block benchmarks at real dimensions. */
  benchCases(): BenchCase[];
  /** Chat/trace/finetune flags only this family reads. */
  flags: readonly FamilyFlag[];
  /** Released checkpoints `vlm make-random --family` can write with random weights (variant names). */
  randomVariants: readonly string[];
  /** The tensors and files of a random-weight checkpoint of one variant (weights/random_checkpoint.ts). */
  randomSpec(opts: RandomSpecOptions): RandomCheckpointSpec;
  /** The key the family's training dataset files a plain-string `image` under (labels of missing-media errors). */
  dataImageKey: string | null;
  /** Upstream's LoRA recipe (`--lora-preset NAME`) and the modules LoRA never adapts. */
  loraPreset(): LoraPreset;
  /** The module tree and weight sources of a checkpoint directory (options: visionTowerDir, log). */
  weights(dir: string, opts: { visionTowerDir?: string; log?: (msg: string) => void }): FamilyWeights;
}

export const FAMILIES: readonly FamilyRow[] = [
  {
    name: 'minicpmv',
    title: 'MiniCPM-V',
    modelTypes: ['minicpmv'],
    parts: {
      config: 'models/minicpmv/config.ts', model: 'models/minicpmv/modeling.ts', processor: 'models/minicpmv/processing.ts',
      keymap: 'models/minicpmv/keymap.ts', chat: 'models/minicpmv/chat.ts', train: 'models/minicpmv/train.ts', bench: 'models/minicpmv/bench_cases.ts',
    },
    loadChat: (dir, opts) => (require('./minicpmv/chat') as typeof import('./minicpmv/chat')).MiniCPMVChat.fromPretrained(dir, opts),
    loadTrainer: async (dir, opts) => (require('./minicpmv/train') as typeof import('./minicpmv/train')).MiniCPMVTrainFamily.load(dir, opts as never) as TrainFamily,
    trainOptions: ['maxSliceNums'],
    benchCases: () => {
      const m = require('./minicpmv/bench_cases') as typeof import('./minicpmv/bench_cases');
      return [...m.MINICPMV_BENCH_CASES, ...m.MINICPMV_PREPROCESS_CASES];
    },
    flags: [{ flag: 'max-slice-nums', option: 'maxSliceNums', help: 'MiniCPM-V: slices per image' }],
    randomVariants: ['minicpmv'],
    randomSpec: (opts) => (require('./minicpmv/random_checkpoint') as typeof import('./minicpmv/random_checkpoint')).minicpmvRandomSpec(opts),
    dataImageKey: '<image>',
    loraPreset: () => (require('./minicpmv/train') as typeof import('./minicpmv/train')).MINICPMV_LORA_PRESET,
    weights: (dir, opts) => (require('./minicpmv/modeling') as typeof import('./minicpmv/modeling')).MiniCPMV.unloaded(dir, opts),
  },
  {
    name: 'videollama2',
    title: 'VideoLLaMA 2',
    modelTypes: ['videollama2', 'videollama2_mistral', 'videollama2_qwen2', 'videollama2_mixtral'],
    parts: {
      config: 'models/videollama2/config.ts', model: 'models/videollama2/modeling.ts', processor: 'models/clip/image_processing.ts',
      keymap: 'models/videollama2/keymap.ts', chat: 'models/videollama2/chat.ts', train: 'models/videollama2/train.ts', bench: 'models/videollama2/bench_cases.ts',
    },
    loadChat: (dir, opts) => (require('./videollama2/chat') as typeof import('./videollama2/chat')).VideoLLaMA2Chat.fromPretrained(dir, opts),
    loadTrainer: async (dir, opts) => (await (require('./videollama2/train') as typeof import('./videollama2/train')).VideoLLaMA2TrainFamily.load(dir, opts as never)) as TrainFamily,
    trainOptions: ['numFrames', 'visionTowerDir', 'plain'],
    benchCases: () => (require('./videollama2/bench_cases') as typeof import('./videollama2/bench_cases')).VIDEOLLAMA2_CASES,
    flags: [
      { flag: 'num-frames', option: 'numFrames', help: 'VideoLLaMA 2: frames sampled from a video' },
      { flag: 'vision-tower', option: 'visionTowerDir', help: 'VideoLLaMA 2: local directory of the vision tower' },
    ],
    randomVariants: ['videollama2', 'videollama2.1'],
    randomSpec: (opts) => (require('./videollama2/random_checkpoint') as typeof import('./videollama2/random_checkpoint')).videollama2RandomSpec(opts),
    dataImageKey: null,
    loraPreset: () => (require('./videollama2/train') as typeof import('./videollama2/train')).VIDEOLLAMA2_LORA_PRESET,
    weights: (dir, opts) => (require('./videollama2/modeling') as typeof import('./videollama2/modeling')).VideoLLaMA2.unloaded(dir, opts),
  },
];

/** The row of a family key. */
export function familyRow(name: string): FamilyRow {
  const r = FAMILIES.find((f) => f.name === name);
  if (!r) throw new Error(`unknown model family '${name}' (known: ${FAMILIES.map((f) => f.name).join(', ')})`);
  return r;
}

/** The row that writes random checkpoints of `variant` (`vlm make-random --family`), or null. */
export function rowForRandomVariant(variant: string): FamilyRow | null {
  return FAMILIES.find((f) => f.randomVariants.includes(variant)) ?? null;
}

/** The row whose `modelTypes` contain `modelType`, or null. */
export function rowForModelType(modelType: unknown): FamilyRow | null {
  return typeof modelType === 'string' ? FAMILIES.find((f) => f.modelTypes.includes(modelType)) ?? null : null;
}
