/**
 * MiniCPM-V 2.6 as a training family: upstream `finetune/finetune.py` + `trainer.py`.
 *
 * - Trainable by default: everything (`tune_vision` and `tune_llm` default True; the resampler
 *   always trains). `--tune_vision false` ↔ leave out `vpm`, `--tune_llm false` ↔ leave out `llm`.
 * - Loss: `CPMTrainer.compute_loss` = CrossEntropyLoss over logits.view(−1, V) vs the
 *   pre-shifted labels (no shift); the model runs `MiniCPMV.forward` (plain causal attention,
 *   positions 0..S−1: the collator's attention_mask is not passed to the LLM upstream).
 */
import * as tf from '@tensorflow/tfjs';
import { MiniCPMV } from './modeling';
import { MINICPMV_KEYMAP } from './keymap';
import { Tokenizer, loadTokenizer } from '../../tokenizers';
import { RawSample } from '../../training/data';
import { LoraPreset } from '../../training/lora';
import { ExportOptions } from '../../training/export';
import { Prepared, TrainFamily } from '../../training/family';
import { crossEntropy, IGNORE_INDEX } from '../../training/loss';
import { MiniCPMVFinetuneData, MiniCPMVTrainBatch, MiniCPMVTrainExample, collateMiniCPMV } from './train_data';

export interface MiniCPMVFamilyOptions {
  /** Training samples and where their images are. */
  samples?: readonly RawSample[];
  dataRoot?: string;
  /** Tokenizer directory (default: the model directory). */
  tokenizerDir?: string;
  maxSliceNums?: number;
  maxLength?: number;
  warn?: (msg: string) => void;
  /** Storage of the (frozen) large matrices: weights/native_plan.ts (QLoRA-style with q8_0/q4_0). */
  quantize?: string;
  /** Module prefixes that stay float32 (and trainable) whatever `quantize` says. */
  keepF32?: readonly string[];
}

/**
 * Upstream LoRA recipe (MiniCPM-V finetune.py LoraArguments + finetune_lora.sh): r 64, alpha 64,
 * dropout 0.05, target `llm\..*layers\.\d+\.self_attn\.(q_proj|k_proj|v_proj)`; `--tune_vision true`
 * and the resampler is never frozen, so vpm + resampler train fully (finetune.py also re-enables
 * `llm.model.embed_tokens`; we leave it frozen: say --tune to add it).
 */
export const MINICPMV_LORA_PRESET: LoraPreset = {
  r: 64, alpha: 64, dropout: 0.05, targetModules: 'llm\\..*layers\\.\\d+\\.self_attn\\.(q_proj|k_proj|v_proj)', tune: ['vpm', 'resampler'], exclude: null,
};

const NOTHING: Prepared = { dispose: () => undefined };

/** The frozen vpm's last hidden states of a batch's images. */
interface VpmPrepared extends Prepared {
  vpmStates?: tf.Tensor3D;
}

export class MiniCPMVTrainFamily implements TrainFamily<MiniCPMVTrainExample, MiniCPMVTrainBatch> {
  readonly family = 'minicpmv' as const;
  readonly keymap = MINICPMV_KEYMAP;
  readonly connector = 'resampler';
  readonly defaultTune = ['llm', 'vpm', 'resampler'] as const;
  readonly parts = ['llm', 'vpm', 'resampler'] as const;
  readonly data: MiniCPMVFinetuneData | null;
  readonly maxLength: number;
  readonly tokenizerDir?: string;

  private readonly dataOpts: ConstructorParameters<typeof MiniCPMVFinetuneData>[3];

  constructor(readonly model: MiniCPMV, readonly tokenizer: Tokenizer, readonly dir: string, opts: MiniCPMVFamilyOptions = {}) {
    this.maxLength = opts.maxLength ?? 2048;
    this.tokenizerDir = opts.tokenizerDir;
    this.dataOpts = { dataRoot: opts.dataRoot ?? '.', maxSliceNums: opts.maxSliceNums, maxLength: this.maxLength };
    this.data = opts.samples ? this.datasetFor(opts.samples) : null;
  }

  datasetFor(samples: readonly RawSample[]): MiniCPMVFinetuneData {
    return new MiniCPMVFinetuneData(samples, this.tokenizer, this.model.config, this.dataOpts);
  }

  static load(dir: string, opts: MiniCPMVFamilyOptions = {}): MiniCPMVTrainFamily {
    const tokenizer = loadTokenizer(opts.tokenizerDir ?? dir);
    const model = MiniCPMV.fromPretrained(dir, { warn: opts.warn, quantize: opts.quantize, keepF32: opts.keepF32 });
    try {
      return new MiniCPMVTrainFamily(model, tokenizer, dir, opts);
    } catch (e) {
      model.dispose();
      throw e;
    }
  }

  checkTune(): void {
    // every part of MiniCPM-V is trainable upstream
  }

  collate(examples: readonly MiniCPMVTrainExample[]): MiniCPMVTrainBatch {
    return collateMiniCPMV(examples, this.maxLength);
  }

  /** A frozen vpm (nothing under `vpm` trained) runs here, outside the tape: its activations are not kept for backward. */
  prepare(batch: MiniCPMVTrainBatch, trains?: (modulePath: string) => boolean): Prepared {
    const pixels = batch.inputs.pixelValues.flat();
    if (!pixels.length || !trains || trains('vpm')) return NOTHING;
    const states = this.model.vpmStates(pixels, batch.inputs.tgtSizes.flat());
    return { vpmStates: states, dispose: () => states.dispose() } as VpmPrepared;
  }

  loss(batch: MiniCPMVTrainBatch, prepared: Prepared): tf.Scalar {
    const vpmStates = (prepared as VpmPrepared).vpmStates;
    return tf.tidy(() => crossEntropy(this.model.forward(batch.inputs, { vpmStates }), batch.labels));
  }

  supervisedTokens(batch: MiniCPMVTrainBatch): number {
    return batch.labels.reduce((a, r) => a + r.filter((l) => l !== IGNORE_INDEX).length, 0);
  }

  exportOptions(): ExportOptions {
    return { tokenizerDir: this.tokenizerDir };
  }

  dispose(): void {
    this.model.dispose();
  }
}
