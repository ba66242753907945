/**
 * The one parser of decoder-LLM configs (HF v4.40 `Qwen2Config` / `MistralConfig`): each family
 * passes its upstream defaults. Values the decoder does not implement are refused here, naming the
 * file and the key, before any weight is read: a non-null `rope_scaling` (scaled RoPE would run with
 * wrong positions), `use_sliding_window: true` (the decoder masks with `sliding_window` as HF v4.40's
 * eager path does, not with Qwen2's per-layer window), an unknown `hidden_act`.
 */
import { DecoderConfig } from '../layers/decoder';
import { ActName } from '../layers/mlp';
import { ConfigError, ConfigReader } from '../io/config';

export const LLM_ACTS: readonly ActName[] = ['silu', 'gelu', 'gelu_pytorch_tanh', 'gelu_new', 'relu'];

/** Upstream defaults that differ between the LLM families. */
export interface LLMDefaults {
  vocabSize: number;
  intermediateSize: number;
  numKeyValueHeads: number | null; // null: = num_attention_heads
  maxPositionEmbeddings: number;
  qkvBias: boolean;
}

/** Config keys read by nobody that released checkpoints carry (metadata, training settings). */
const METADATA = ['max_window_layers', 'attention_dropout', 'initializer_range', 'use_cache', 'bos_token_id', 'eos_token_id',
  'pad_token_id', 'torch_dtype', 'transformers_version', 'architectures', 'model_type', '_name_or_path', 'pretraining_tp'];

export function parseLLMConfig(c: ConfigReader, d: LLMDefaults): DecoderConfig {
  refuseUnsupported(c);
  const hiddenSize = c.int('hidden_size', 4096);
  const numAttentionHeads = c.int('num_attention_heads', 32);
  if (hiddenSize % numAttentionHeads !== 0) {
    throw new ConfigError(`${c.file}: hidden_size (${hiddenSize}) must be divisible by num_attention_heads (${numAttentionHeads})`);
  }
  const cfg: DecoderConfig = {
    vocabSize: c.int('vocab_size', d.vocabSize),
    hiddenSize,
    intermediateSize: c.int('intermediate_size', d.intermediateSize),
    numHiddenLayers: c.int('num_hidden_layers', 32),
    numAttentionHeads,
    numKeyValueHeads: c.int('num_key_value_heads', d.numKeyValueHeads ?? numAttentionHeads),
    headDim: hiddenSize / numAttentionHeads,
    hiddenAct: c.oneOf('hidden_act', LLM_ACTS, 'silu'),
    maxPositionEmbeddings: c.int('max_position_embeddings', d.maxPositionEmbeddings),
    rmsNormEps: c.num('rms_norm_eps', 1e-6, { positive: true }),
    ropeTheta: c.num('rope_theta', 10000, { positive: true }),
    tieWordEmbeddings: c.bool('tie_word_embeddings', false),
    // HF v4.40 Qwen2Model / MistralModel pass config.sliding_window to the eager mask.
    slidingWindow: c.intOrNull('sliding_window', 4096),
    qkvBias: d.qkvBias,
  };
  c.known(...METADATA);
  return cfg;
}

/** Throws on config values the decoder would silently get wrong. */
function refuseUnsupported(c: ConfigReader): void {
  c.known('rope_scaling', 'use_sliding_window');
  const rs = c.obj.rope_scaling;
  if (rs !== undefined && rs !== null) {
    throw new ConfigError(`${c.file}: 'rope_scaling' = ${JSON.stringify(rs)} is not supported (only plain RoPE is implemented; ` +
      'a scaled checkpoint would run with wrong positions)');
  }
  const sw = c.obj.use_sliding_window;
  if (sw !== undefined && sw !== null && sw !== false) {
    throw new ConfigError(`${c.file}: 'use_sliding_window' = ${JSON.stringify(sw)} is not supported (per-layer sliding-window attention is not implemented)`);
  }
}
