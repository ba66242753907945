/**
 * Vision-tower configs of HF v4.40 `CLIPVisionConfig` (models/clip/configuration_clip.py) and, by
 * the same reader, `SiglipVisionConfig` (models/siglip/config.ts). `from_pretrained` accepts a
 * vision-only config (`model_type` clip_vision_model / siglip_vision_model) or a full
 * CLIPConfig/SiglipConfig, whose `vision_config` it reads (`if config_dict.get("model_type") ==
 * "clip": config_dict = config_dict["vision_config"]`); absent keys take the class defaults.
 */
import path from 'node:path';
import { ActName } from '../../layers/mlp';
import { ConfigError, ConfigReader, readJson } from '../../io/config';

/** The ViT hyper-parameters shared by CLIP and SigLIP vision towers (config.json meaning, camelCase). */
export interface VisionTowerConfig {
  /** 'clip' or 'siglip'. */
  family: 'clip' | 'siglip';
  hiddenSize: number;
  intermediateSize: number;
  numHiddenLayers: number;
  numAttentionHeads: number;
  numChannels: number;
  imageSize: number;
  patchSize: number;
  hiddenAct: ActName;
  layerNormEps: number;
}

/** `PretrainedConfig` keys every HF config may carry; known, never used by a vision tower. */
export const GENERIC_CONFIG_KEYS = [
  'return_dict', 'output_hidden_states', 'output_attentions', 'torchscript', 'torch_dtype', 'use_bfloat16',
  'tf_legacy_loss', 'pruned_heads', 'tie_word_embeddings', 'chunk_size_feed_forward', 'is_encoder_decoder',
  'is_decoder', 'cross_attention_hidden_size', 'add_cross_attention', 'tie_encoder_decoder', 'max_length',
  'min_length', 'do_sample', 'early_stopping', 'num_beams', 'num_beam_groups', 'diversity_penalty', 'temperature',
  'top_k', 'top_p', 'typical_p', 'repetition_penalty', 'length_penalty', 'no_repeat_ngram_size',
  'encoder_no_repeat_ngram_size', 'bad_words_ids', 'num_return_sequences', 'output_scores',
  'return_dict_in_generate', 'forced_bos_token_id', 'forced_eos_token_id', 'remove_invalid_values',
  'exponential_decay_length_penalty', 'suppress_tokens', 'begin_suppress_tokens', 'architectures',
  'finetuning_task', 'id2label', 'label2id', 'tokenizer_class', 'prefix', 'bos_token_id', 'pad_token_id',
  'eos_token_id', 'sep_token_id', 'decoder_start_token_id', 'task_specific_params', 'problem_type',
  '_name_or_path', 'transformers_version', 'model_type', 'initializer_range', 'initializer_factor',
  'attention_dropout', 'dropout', 'projection_dim',
];

const ACTS: readonly ActName[] = ['quick_gelu', 'gelu', 'gelu_pytorch_tanh', 'gelu_new', 'relu', 'silu'];

/** Class defaults (HF v4.40 CLIPVisionConfig / SiglipVisionConfig `__init__`). */
const DEFAULTS = {
  clip: { hidden: 768, inter: 3072, layers: 12, heads: 12, image: 224, patch: 32, act: 'quick_gelu' as ActName, eps: 1e-5 },
  siglip: { hidden: 768, inter: 3072, layers: 12, heads: 12, image: 224, patch: 16, act: 'gelu_pytorch_tanh' as ActName, eps: 1e-6 },
};

/**
 * Reads a vision-tower config from a parsed config object (vision-only, or full with
 * `vision_config`). `unused` receives keys of the vision part that were not understood.
 */
export function parseVisionTowerConfig(c: ConfigReader, family: 'clip' | 'siglip', unused?: (keys: string[]) => void): VisionTowerConfig {
  const v = c.obj.model_type === family || (c.has('vision_config') && !c.has('hidden_size')) ? c.sub('vision_config') : c;
  const cfg = parseVisionTowerFields(v, family);
  v.known(...GENERIC_CONFIG_KEYS);
  const extra = v.unusedKeys();
  if (extra.length && unused) unused(extra);
  return cfg;
}

/**
 * The one parse of a CLIP/SigLIP vision config object (`v` already points at the vision part; its
 * prefix appears in errors). MiniCPM-V's `vision_config` goes through here too.
 */
export function parseVisionTowerFields(v: ConfigReader, family: 'clip' | 'siglip'): VisionTowerConfig {
  const d = DEFAULTS[family];
  const cfg: VisionTowerConfig = {
    family,
    hiddenSize: v.int('hidden_size', d.hidden),
    intermediateSize: v.int('intermediate_size', d.inter),
    numHiddenLayers: v.int('num_hidden_layers', d.layers),
    numAttentionHeads: v.int('num_attention_heads', d.heads),
    numChannels: v.int('num_channels', 3),
    imageSize: v.int('image_size', d.image),
    patchSize: v.int('patch_size', d.patch),
    hiddenAct: v.oneOf('hidden_act', ACTS, d.act),
    layerNormEps: v.num('layer_norm_eps', d.eps, { positive: true }),
  };
  const key = (k: string) => `'${v.prefix}${k}'`;
  if (cfg.hiddenSize % cfg.numAttentionHeads !== 0) {
    throw new ConfigError(`${v.file}: ${key('hidden_size')} (${cfg.hiddenSize}) must be divisible by ${key('num_attention_heads')} (${cfg.numAttentionHeads})`);
  }
  if (cfg.imageSize < cfg.patchSize) {
    throw new ConfigError(`${v.file}: ${key('image_size')} (${cfg.imageSize}) must be at least ${key('patch_size')} (${cfg.patchSize})`);
  }
  return cfg;
}

/** `CLIPVisionConfig.from_pretrained(dir)`: reads `<dir>/config.json`. */
export function loadClipVisionConfig(dir: string, unused?: (keys: string[]) => void): VisionTowerConfig {
  const file = path.join(dir, 'config.json');
  return parseVisionTowerConfig(new ConfigReader(readJson(file), file), 'clip', unused);
}

/** Patches per side and per image (`num_patches_per_side`, `num_patches`). */
export function patchGrid(cfg: VisionTowerConfig): { side: number; patches: number } {
  const side = Math.floor(cfg.imageSize / cfg.patchSize);
  return { side, patches: side * side };
}
