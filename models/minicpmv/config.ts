/**
 * MiniCPM-V 2.6 config (upstream `configuration_minicpm.py` `MiniCPMVConfig`, a Qwen2Config with
 * extra keys, and `modeling_navit_siglip.py` `SiglipVisionConfig`). Key names are config.json's.
 *
 * Upstream defaults worth knowing:
 * - `vision_config` absent → `MiniCPMVConfig.default_vision_config` (SigLIP-400M: 1152 hidden, 27
 *   layers, 980 px, patch 14). Present → every missing key takes `SiglipVisionConfig`'s default
 *   (768 hidden, 12 layers, 224 px, patch 16, gelu_pytorch_tanh, eps 1e-6, 3 channels); the real
 *   2.6 config relies on the last three.
 * - `slice_config` absent → `MiniCPMVSliceConfig(max_slice_nums=1)`; present → its keys over
 *   patch_size 14, max_slice_nums 9, scale_resolution 448.
 * - `drop_vision_last_layer` defaults to true (the 2.6 config sets false), `query_num` 64,
 *   `vision_batch_size` 16, `use_image_id` true, `batch_vision_input` true.
 * - The top-level `patch_size` in config.json overrides `vision_config.patch_size` as an attribute
 *   (PretrainedConfig sets kwargs after `__init__` assigned it); upstream reads it only for the
 *   training-time dummy image, and so do we (nowhere).
 */
import path from 'node:path';
import { DecoderConfig } from '../../layers/decoder';
import { ActName } from '../../layers/mlp';
import { ConfigError, ConfigReader, readJson } from '../../io/config';
import { parseVisionTowerFields } from '../clip/config';
import { parseQwen2Config } from '../qwen2/config';


/** `vision_config` (SiglipVisionConfig), all keys filled. */
export interface SiglipVisionConfig {
  hidden_size: number;
  intermediate_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  num_channels: number;
  image_size: number;
  patch_size: number;
  hidden_act: ActName;
  layer_norm_eps: number;
  attention_dropout: number;
}

/** `slice_config` (MiniCPMVSliceConfig). */
export interface MiniCPMVSliceConfig {
  patch_size: number;
  max_slice_nums: number;
  scale_resolution: number;
}

export interface MiniCPMVConfig {
  /** The Qwen2 LLM (`llm.*`), parsed from the top-level keys by `parseQwen2Config`. */
  llm: DecoderConfig;
  vision_config: SiglipVisionConfig;
  slice_config: MiniCPMVSliceConfig;
  /** Resampler queries per image (= `<unk>` slots per image). */
  query_num: number;
  /** Upstream `MiniCPMVConfig.image_size` (448; the LLM-side size, not the vision tower's). */
  image_size: number;
  /** Build the vision encoder with `num_hidden_layers - 1` layers. */
  drop_vision_last_layer: boolean;
  batch_vision_input: boolean;
  use_image_id: boolean;
  /** Images per vision-encoder call in `get_vllm_embedding`. */
  vision_batch_size: number;
  /** Upstream multiplies `embed_tokens(ids)` by this when the config has it (2.6 does not). */
  scale_emb: number | null;
  /** config.json keys nobody reads (for a log line). */
  ignored_keys: string[];
}

/** SiglipVisionConfig from a reader over the `vision_config` object: the shared tower parser, in config.json names. */
export function parseSiglipVisionConfig(c: ConfigReader): SiglipVisionConfig {
  const t = parseVisionTowerFields(c, 'siglip');
  c.known('model_type', '_attn_implementation');
  return {
    hidden_size: t.hiddenSize, intermediate_size: t.intermediateSize, num_hidden_layers: t.numHiddenLayers,
    num_attention_heads: t.numAttentionHeads, num_channels: t.numChannels, image_size: t.imageSize, patch_size: t.patchSize,
    hidden_act: t.hiddenAct, layer_norm_eps: t.layerNormEps, attention_dropout: c.num('attention_dropout', 0),
  };
}

/** `MiniCPMVConfig.default_vision_config`, used when config.json has no `vision_config`. */
const DEFAULT_VISION_CONFIG = {
  hidden_size: 1152, image_size: 980, intermediate_size: 4304, model_type: 'siglip',
  num_attention_heads: 16, num_hidden_layers: 27, patch_size: 14,
};

/** Parses a MiniCPM-V config object; `file` names it in errors. Never mutates `json`. */
export function parseMiniCPMVConfig(json: Record<string, unknown>, file = 'config.json'): MiniCPMVConfig {
  const c = new ConfigReader(json, file);
  const modelType = c.str('model_type', 'minicpmv');
  if (modelType !== 'minicpmv') throw new ConfigError(`${file}: 'model_type' is ${JSON.stringify(modelType)}, expected "minicpmv" (MiniCPM-V 2.6)`);
  const llm = parseQwen2Config(c);
  const vc = c.has('vision_config') ? c.sub('vision_config') : new ConfigReader(DEFAULT_VISION_CONFIG, file, 'vision_config(default).');
  const vision_config = parseSiglipVisionConfig(vc);
  let slice_config: MiniCPMVSliceConfig;
  if (c.has('slice_config')) {
    const s = c.sub('slice_config');
    slice_config = { patch_size: s.int('patch_size', 14), max_slice_nums: s.int('max_slice_nums', 9), scale_resolution: s.int('scale_resolution', 448) };
    s.known('model_type');
    c.known('slice_config');
  } else {
    slice_config = { patch_size: 14, max_slice_nums: 1, scale_resolution: 448 };
  }
  const cfg: MiniCPMVConfig = {
    llm,
    vision_config,
    slice_config,
    query_num: c.int('query_num', 64),
    image_size: c.int('image_size', 448),
    drop_vision_last_layer: c.bool('drop_vision_last_layer', true),
    batch_vision_input: c.bool('batch_vision_input', true),
    use_image_id: c.bool('use_image_id', true),
    vision_batch_size: c.int('vision_batch_size', 16),
    scale_emb: c.has('scale_emb') ? c.num('scale_emb') : null,
    ignored_keys: [],
  };
  c.int('patch_size', vision_config.patch_size); // read (validated) but unused, see the header
  if (cfg.drop_vision_last_layer && vision_config.num_hidden_layers < 2) {
    throw new ConfigError(`${file}: drop_vision_last_layer is true but 'vision_config.num_hidden_layers' is ${vision_config.num_hidden_layers}; at least 2 are needed`);
  }
  const heads = Math.floor(llm.hiddenSize / 128); // init_resampler: num_heads = embed_dim // 128
  if (heads < 1 || llm.hiddenSize % heads !== 0) {
    throw new ConfigError(`${file}: 'hidden_size' (${llm.hiddenSize}) must be at least 128 and divisible by hidden_size // 128 = ${heads} (the resampler's heads)`);
  }
  c.known('version', 'auto_map', 'slice_mode', 'pad_token_id', 'vision_config');
  cfg.ignored_keys = [...c.unusedKeys(), ...vc.unusedKeys()];
  return cfg;
}

/** Reads `<dir>/config.json` (or a config.json path). Ignored keys go to `warn` (default: console.warn). */
export function loadMiniCPMVConfig(dirOrFile: string, warn: (msg: string) => void = console.warn): MiniCPMVConfig {
  const file = dirOrFile.endsWith('.json') ? dirOrFile : path.join(dirOrFile, 'config.json');
  const cfg = parseMiniCPMVConfig(readJson(file), file);
  if (cfg.ignored_keys.length) warn(`${file}: ignoring unknown key(s) ${cfg.ignored_keys.join(', ')}`);
  return cfg;
}

/** Number of vision encoder layers actually built (upstream slices off the last when asked). */
export function visionLayerCount(cfg: MiniCPMVConfig): number {
  return cfg.vision_config.num_hidden_layers - (cfg.drop_vision_last_layer ? 1 : 0);
}

/** Resampler heads: `embed_dim // 128` (modeling_minicpmv.py `init_resampler`). */
export function resamplerHeads(cfg: MiniCPMVConfig): number {
  return Math.floor(cfg.llm.hiddenSize / 128);
}
