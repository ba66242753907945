/**
 * VideoLLaMA2 config: a Mistral (`videollama2_mistral`, `Videollama2MistralConfig`) or Qwen2
 * (`videollama2_qwen2`, `Videollama2Qwen2Config`) LLM config plus the multimodal keys read by
 * DAMO-NLP-SG/VideoLLaMA2 (commit c0bb03ab) `videollama2/model/videollama2_arch.py`,
 * `encoder.py` and `projector.py`:
 *   mm_vision_tower           tower name or path; the class is picked by substring ('clip' / 'siglip')
 *   mm_vision_select_layer    index into hidden_states (default -1 as in LLaVA's model args; releases use -2)
 *   mm_vision_select_feature  'patch' (CLIP drops CLS) or 'cls_patch'
 *   mm_projector_type         'linear' default (`getattr(config, 'mm_projector_type', 'linear')`)
 *   mm_hidden_size            tower hidden size
 *   num_frames                frames per video / image repeat count; NUM_FRAMES = 8 when absent
 *   image_aspect_ratio        'pad' / null: read by the preprocessing, not by the model
 *                             (`model_init` / `mm_infer` pass aspect_ratio=None anyway)
 */
import path from 'node:path';
import { DecoderConfig } from '../../layers/decoder';
import { ConfigError, ConfigReader, readJson } from '../../io/config';
import { parseMistralConfig } from '../mistral/config';
import { parseQwen2Config } from '../qwen2/config';

export const MODEL_TYPES = ['videollama2_mistral', 'videollama2_qwen2'] as const;
export type VideoLLaMA2ModelType = (typeof MODEL_TYPES)[number];

/** `videollama2/constants.py` NUM_FRAMES: used when the config has no `num_frames`. */
export const DEFAULT_NUM_FRAMES = 8;

/** The parsed config: the LLM part in DecoderConfig form, the multimodal keys under their config.json names. */
export interface VideoLLaMA2Config {
  model_type: VideoLLaMA2ModelType;
  llmFamily: 'mistral' | 'qwen2';
  llm: DecoderConfig;
  mm_vision_tower: string;
  mm_vision_select_layer: number;
  mm_vision_select_feature: 'patch' | 'cls_patch';
  mm_projector_type: string;
  mm_hidden_size: number;
  num_frames: number;
  image_aspect_ratio: string | null;
  /** The config file (for messages). */
  file: string;
}

/** Projector types `build_vision_projector` + `temporal_aggregator` accept (identity is rejected by the aggregator). */
export const PROJECTOR_TYPES = ['stc_connector', 'stc_connector_v35', 'stp_connector', 'spatial_conv', 'spatial_pool', 'linear', 'mlp{N}x_gelu'] as const;

/** `mm_projector_type`, refused here (before any weight is read) when the connector cannot build it. */
function projectorType(c: ConfigReader): string {
  const t = c.str('mm_projector_type', 'linear');
  if (!/^mlp\d+x_gelu$/.test(t) && !(PROJECTOR_TYPES as readonly string[]).includes(t)) {
    throw new ConfigError(`${c.file}: 'mm_projector_type' = ${JSON.stringify(t)} is not supported; expected one of ${PROJECTOR_TYPES.join(', ')}`);
  }
  return t;
}

/** Keys of released configs that the model does not read (training flags, tokenizer settings). */
const KNOWN_UNUSED = [
  'freeze_mm_mlp_adapter', 'mm_projector_lr', 'mm_use_im_patch_token', 'mm_use_im_start_end', 'tune_mm_mlp_adapter',
  'use_mm_proj', 'tokenizer_model_max_length', 'tokenizer_padding_side', 'pretraining_tp',
  'mm_vision_tower_lr', 'tune_mm_vision_tower',
];

/**
 * Parses a VideoLLaMA2 config object. `log` receives one line listing keys that were not
 * understood (never dropped silently). The object is not modified.
 */
export function parseVideoLLaMA2Config(obj: Record<string, unknown>, file: string, log?: (msg: string) => void): VideoLLaMA2Config {
  const c = new ConfigReader(obj, file);
  const model_type = c.oneOf('model_type', MODEL_TYPES);
  const llmFamily = model_type === 'videollama2_mistral' ? 'mistral' : 'qwen2';
  const llm = llmFamily === 'mistral' ? parseMistralConfig(c) : parseQwen2Config(c);
  // getattr(cfg, 'mm_vision_tower', getattr(cfg, 'vision_tower', None))
  const mm_vision_tower = c.has('vision_tower') && !c.has('mm_vision_tower') ? c.str('vision_tower') : c.str('mm_vision_tower');
  const selectLayerRaw = c.obj.mm_vision_select_layer;
  if (selectLayerRaw !== undefined && (typeof selectLayerRaw !== 'number' || !Number.isInteger(selectLayerRaw))) {
    throw new ConfigError(`${file}: 'mm_vision_select_layer' must be an integer, got ${JSON.stringify(selectLayerRaw)}`);
  }
  c.known('mm_vision_select_layer');
  const cfg: VideoLLaMA2Config = {
    model_type,
    llmFamily,
    llm,
    mm_vision_tower,
    mm_vision_select_layer: (selectLayerRaw as number | undefined) ?? -1,
    mm_vision_select_feature: c.oneOf('mm_vision_select_feature', ['patch', 'cls_patch'] as const, 'patch'),
    mm_projector_type: projectorType(c),
    mm_hidden_size: c.int('mm_hidden_size'),
    num_frames: c.int('num_frames', DEFAULT_NUM_FRAMES),
    image_aspect_ratio: c.has('image_aspect_ratio') ? c.str('image_aspect_ratio') : null,
    file,
  };
  c.known('image_aspect_ratio', 'vision_tower', ...KNOWN_UNUSED);
  const extra = c.unusedKeys();
  if (extra.length) log?.(`${file}: ignoring unknown config keys: ${extra.join(', ')}`);
  return cfg;
}

/** Reads `<dir>/config.json`. */
export function loadVideoLLaMA2Config(dir: string, log?: (msg: string) => void): VideoLLaMA2Config {
  const file = path.join(dir, 'config.json');
  return parseVideoLLaMA2Config(readJson(file), file, log);
}
