/** Mistral config (HF v4.40 `MistralConfig` defaults); VideoLLaMA2's config extends it. */
import { DecoderConfig } from '../../layers/decoder';
import { ActName } from '../../layers/mlp';
import { ConfigReader } from '../../io/config';

const ACTS: readonly ActName[] = ['silu', 'gelu', 'gelu_pytorch_tanh', 'gelu_new', 'relu'];

export function parseMistralConfig(c: ConfigReader): DecoderConfig {
  const hiddenSize = c.int('hidden_size', 4096);
  const numAttentionHeads = c.int('num_attention_heads', 32);
  if (hiddenSize % numAttentionHeads !== 0) {
    throw new Error(`${c.file}: hidden_size (${hiddenSize}) must be divisible by num_attention_heads (${numAttentionHeads})`);
  }
  const cfg: DecoderConfig = {
    vocabSize: c.int('vocab_size', 32000),
    hiddenSize,
    intermediateSize: c.int('intermediate_size', 14336),
    numHiddenLayers: c.int('num_hidden_layers', 32),
    numAttentionHeads,
    numKeyValueHeads: c.int('num_key_value_heads', 8),
    headDim: hiddenSize / numAttentionHeads,
    hiddenAct: c.oneOf('hidden_act', ACTS, 'silu'),
    maxPositionEmbeddings: c.int('max_position_embeddings', 4096 * 32),
    rmsNormEps: c.num('rms_norm_eps', 1e-6, { positive: true }),
    ropeTheta: c.num('rope_theta', 10000, { positive: true }),
    tieWordEmbeddings: c.bool('tie_word_embeddings', false),
    slidingWindow: c.intOrNull('sliding_window', 4096),
    qkvBias: false,
  };
  c.known('attention_dropout', 'initializer_range', 'use_cache', 'bos_token_id', 'eos_token_id', 'pad_token_id',
    'torch_dtype', 'transformers_version', 'architectures', 'model_type', '_name_or_path');
  return cfg;
}
