/**
 * What the trainer needs from a model family: the model and its key map, the upstream default
 * trainable parts, a dataset, a collator, and the loss of a batch. `prepare` runs outside the
 * gradient tape (frozen parts: VideoLLaMA 2's vision tower), `loss` inside it.
 */
import * as tf from '@tensorflow/tfjs';
import { Module } from '../layers/module';
import { KeyMap } from '../weights/keymap';
import { RawSample } from './data';
import { ExportOptions } from './export';

/** Work done outside the tape for one batch; disposed after the step. */
export interface Prepared {
  dispose(): void;
}

export interface TrainDataset<E> {
  readonly length: number;
  example(i: number): Promise<E>;
}

export interface TrainFamily<E = unknown, B = unknown> {
  readonly family: string;
  readonly model: Module;
  readonly keymap: KeyMap;
  /** The checkpoint directory the model was loaded from. */
  readonly dir: string;
  /** The connector's module prefix (its own learning rate with `connectorLr`, upstream mm_projector_lr). */
  readonly connector: string;
  /** What upstream trains by default (module prefixes). */
  readonly defaultTune: readonly string[];
  /** The top-level trainable parts, for help and errors. */
  readonly parts: readonly string[];
  /** Throws when a selected prefix cannot be trained (says why). */
  checkTune(prefixes: readonly string[]): void;
  /** The dataset over the training samples, when data was given. */
  readonly data: TrainDataset<E> | null;
  /** A dataset over other samples (e.g. --eval-data), built like `data` (same tokenizer, processor and options). */
  datasetFor(samples: readonly RawSample[]): TrainDataset<E>;
  collate(examples: readonly E[]): B;
  /**
   * Outside the tape: work on frozen parts (a vision tower nobody trains), so the tape does not
   * hold their activations. `trains(modulePath)` says whether anything under a module path (our
   * module tree: `vpm`, `model.vision_tower`) is trained, fully or by LoRA adapters; without it,
   * everything counts as trained.
   */
  prepare(batch: B, trains?: (modulePath: string) => boolean): Prepared;
  /** Inside the tape: the scalar loss of the batch as upstream computes it. */
  loss(batch: B, prepared: Prepared): tf.Scalar;
  /** Number of supervised positions of a batch (for logs). */
  supervisedTokens(batch: B): number;
  /** How the checkpoint directory is written. */
  exportOptions(): ExportOptions;
  dispose(): void;
}
