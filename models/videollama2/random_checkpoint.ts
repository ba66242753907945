/**
 * The random-weight VideoLLaMA 2 / 2.1 checkpoints of `vlm make-random --family videollama2 |
 * videollama2.1` (weights/random_checkpoint.ts writes them).
 *
 * Facts and where they come from:
 * - The config key sets are those of the bundled fixtures test/fixtures/videollama2_clip_mistral_tiny
 *   and videollama2_siglip_qwen2_tiny (made by upstream's code from the released configs, see their
 *   READMEs); the dimensions are the released models' as given in the issue ("real checkpoints"):
 *   VideoLLaMA2-7B-16F = Mistral-7B-Instruct-v0.2 (hidden 4096, intermediate 14336, 32 layers, 32
 *   heads, 8 kv heads, vocab 32000, rope_theta 1e6, max_position_embeddings 32768, sliding_window
 *   null, rms_norm_eps 1e-5) + openai/clip-vit-large-patch14-336 (hidden 1024, intermediate 4096, 24
 *   layers, 16 heads, image 336, patch 14, quick_gelu, eps 1e-5, projection_dim 768), stc_connector,
 *   select layer -2, 16 frames. VideoLLaMA2.1-7B-16F = Qwen2-7B-Instruct (hidden 3584, intermediate
 *   18944, 28 layers, 28 heads, 4 kv heads, vocab 152064, rope_theta 1e6, max_position_embeddings
 *   32768, rms_norm_eps 1e-6, sliding_window 131072 with use_sliding_window false, bos 151643, eos
 *   151645) + google/siglip-so400m-patch14-384 (hidden 1152, intermediate 4304, 27 layers, 16 heads,
 *   image 384, patch 14, gelu_pytorch_tanh, eps 1e-6), stc_connector_v35. The model card of
 *   VideoLLaMA2-7B-16F confirms the tower and LLM names; the numbers themselves were not checked
 *   against the released config.json files (not reachable here).
 * - The tower is written as a directory inside the model (`clip-vit-large-patch14-336/`,
 *   `siglip-so400m-patch14-384/`: a vision-only config.json and the CLIP / SigLIP
 *   preprocessor_config.json) named by `mm_vision_tower`, and its weights are in the main checkpoint
 *   as `model.vision_tower.vision_tower.vision_model.*`, as VideoLLaMA2 HEAD saves them
 *   (keymap.ts). Like a real `state_dict()` the checkpoint holds the whole HF vision model: also the
 *   encoder layers after `mm_vision_select_layer`, `post_layernorm` and SigLIP's pooling `head`,
 *   which our loader ignores (never built).
 * - Tokenizers: VideoLLaMA 2 = the Mistral v1 `tokenizer.model`, tokenizer_config.json and
 *   special_tokens_map.json of videollama2_clip_mistral_tiny (the real Mistral files). VideoLLaMA 2.1 =
 *   the real Qwen2 BPE (vocab.json + merges.txt of the MiniCPM-V 2.6 tokenizer, 151 643 entries, the
 *   same BPE as Qwen2) with the tokenizer_config.json / special_tokens_map.json / added_tokens.json
 *   of videollama2_siglip_qwen2_tiny, its three added tokens moved from 1021–1023 to Qwen2's
 *   151643–151645 (<|endoftext|>, <|im_start|>, <|im_end|>). Both fit the embedding rows (32000,
 *   152064).
 * - Tensor names and shapes: `new VideoLLaMA2(config, towerConfig)` walked with `namedParams()` and
 *   mapped with its key map; the ignored upstream-only tower tensors come from a tower built with
 *   every layer plus the HF `post_layernorm` / `head` shapes.
 */
import fs from 'node:fs';
import path from 'node:path';
import { ConfigReader } from '../../io/config';
import { RandomCheckpointSpec, RandomSpecOptions, RandomTensor, TORCH_DTYPE, findProjectDir, moduleTensors, tokenizerFiles } from '../../weights/random_checkpoint';
import { initKind } from '../../layers/init';
import { toCheckpointKey } from '../../weights/keymap';
import { parseVisionTowerConfig } from '../clip/config';
import { parseVideoLLaMA2Config } from './config';
import { VideoLLaMA2 } from './modeling';
import { VideoLLaMA2VisionTower } from './vision';

export const VIDEOLLAMA2_VARIANTS = ['videollama2', 'videollama2.1'] as const;

const COMMON = {
  attention_dropout: 0.0, freeze_mm_mlp_adapter: false, hidden_act: 'silu', image_aspect_ratio: 'pad', initializer_range: 0.02,
  max_position_embeddings: 32768, mm_projector_lr: null, mm_use_im_patch_token: false, mm_use_im_start_end: false,
  mm_vision_select_feature: 'patch', mm_vision_select_layer: -2, num_frames: 16, rope_theta: 1000000.0, tie_word_embeddings: false,
  tokenizer_model_max_length: 2048, tokenizer_padding_side: 'right', transformers_version: '4.40.0', tune_mm_mlp_adapter: false,
  use_cache: true, use_mm_proj: true,
};

const CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073];
const CLIP_STD = [0.26862954, 0.26130258, 0.27577711];

interface Variant {
  title: string;
  config: Record<string, unknown>;
  towerDir: string;
  tower: Record<string, unknown>;
  preprocessor: Record<string, unknown>;
}

const VARIANTS: Record<(typeof VIDEOLLAMA2_VARIANTS)[number], Variant> = {
  videollama2: {
    title: 'VideoLLaMA2-7B-16F',
    config: {
      _name_or_path: 'DAMO-NLP-SG/VideoLLaMA2-7B-16F', architectures: ['Videollama2MistralForCausalLM'], ...COMMON,
      bos_token_id: 1, eos_token_id: 2, hidden_size: 4096, intermediate_size: 14336, mm_hidden_size: 1024,
      mm_projector_type: 'stc_connector', mm_vision_tower: 'clip-vit-large-patch14-336', model_type: 'videollama2_mistral',
      num_attention_heads: 32, num_hidden_layers: 32, num_key_value_heads: 8, rms_norm_eps: 1e-5, sliding_window: null, vocab_size: 32000,
    },
    towerDir: 'clip-vit-large-patch14-336',
    tower: {
      attention_dropout: 0.0, hidden_act: 'quick_gelu', hidden_size: 1024, image_size: 336, initializer_factor: 1.0, initializer_range: 0.02,
      intermediate_size: 4096, layer_norm_eps: 1e-5, model_type: 'clip_vision_model', num_attention_heads: 16, num_channels: 3,
      num_hidden_layers: 24, patch_size: 14, projection_dim: 768, transformers_version: '4.40.0',
    },
    preprocessor: {
      crop_size: 336, do_center_crop: true, do_normalize: true, do_resize: true, feature_extractor_type: 'CLIPFeatureExtractor',
      image_mean: CLIP_MEAN, image_std: CLIP_STD, resample: 3, size: 336,
    },
  },
  'videollama2.1': {
    title: 'VideoLLaMA2.1-7B-16F',
    config: {
      _name_or_path: 'DAMO-NLP-SG/VideoLLaMA2.1-7B-16F', architectures: ['Videollama2Qwen2ForCausalLM'], ...COMMON,
      bos_token_id: 151643, eos_token_id: 151645, hidden_size: 3584, intermediate_size: 18944, max_window_layers: 28, mm_hidden_size: 1152,
      mm_projector_type: 'stc_connector_v35', mm_vision_tower: 'siglip-so400m-patch14-384', model_type: 'videollama2_qwen2',
      num_attention_heads: 28, num_hidden_layers: 28, num_key_value_heads: 4, rms_norm_eps: 1e-6, sliding_window: 131072,
      use_sliding_window: false, vocab_size: 152064,
    },
    towerDir: 'siglip-so400m-patch14-384',
    tower: {
      attention_dropout: 0.0, hidden_act: 'gelu_pytorch_tanh', hidden_size: 1152, image_size: 384, intermediate_size: 4304,
      layer_norm_eps: 1e-6, model_type: 'siglip_vision_model', num_attention_heads: 16, num_channels: 3, num_hidden_layers: 27,
      patch_size: 14, transformers_version: '4.40.0',
    },
    preprocessor: {
      do_normalize: true, do_rescale: true, do_resize: true, image_mean: [0.5, 0.5, 0.5], image_processor_type: 'SiglipImageProcessor',
      image_std: [0.5, 0.5, 0.5], processor_class: 'SiglipProcessor', resample: 3, rescale_factor: 1 / 255, size: { height: 384, width: 384 },
    },
  },
};

const sortKeys = (o: Record<string, unknown>) => Object.fromEntries(Object.entries(o).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
const jsonText = (o: unknown) => JSON.stringify(o, null, 1) + '\n';

/** The HF vision-model tensors no VideoLLaMA2 code reads (post_layernorm, SigLIP's pooling head). */
function unusedTowerTensors(prefix: string, family: 'clip' | 'siglip', H: number, I: number): RandomTensor[] {
  const shapes: [string, number[]][] = [['post_layernorm.weight', [H]], ['post_layernorm.bias', [H]]];
  if (family === 'siglip') {
    shapes.push(
      ['head.probe', [1, 1, H]], ['head.attention.in_proj_weight', [3 * H, H]], ['head.attention.in_proj_bias', [3 * H]],
      ['head.attention.out_proj.weight', [H, H]], ['head.attention.out_proj.bias', [H]],
      ['head.layernorm.weight', [H]], ['head.layernorm.bias', [H]],
      ['head.mlp.fc1.weight', [I, H]], ['head.mlp.fc1.bias', [I]], ['head.mlp.fc2.weight', [H, I]], ['head.mlp.fc2.bias', [H]],
    );
  }
  return shapes.map(([k, shape]) => ({ name: prefix + k, shape, init: initKind(prefix + k, shape) }));
}

/** Qwen2 tokenizer files: the real BPE with the tiny fixture's settings, added tokens at Qwen2's ids. */
function qwen2TokenizerFiles(): Record<string, Uint8Array | string> {
  const bpe = tokenizerFiles(findProjectDir(['test/fixtures/tokenizers/minicpmv26', '../shared/tokenizers/minicpmv26'], 'Qwen2 BPE (MiniCPM-V 2.6 tokenizer)'));
  const tiny = findProjectDir(['test/fixtures/videollama2_siglip_qwen2_tiny', '../shared/fixtures/videollama2_siglip_qwen2_tiny'], 'VideoLLaMA 2.1 tokenizer settings');
  const read = (f: string) => JSON.parse(fs.readFileSync(path.join(tiny, f), 'utf8'));
  const shift = 151643 - 1021;
  const added = read('added_tokens.json') as Record<string, number>;
  const cfg = read('tokenizer_config.json') as Record<string, unknown>;
  const dec = cfg.added_tokens_decoder as Record<string, unknown>;
  cfg.added_tokens_decoder = Object.fromEntries(Object.entries(dec).map(([id, v]) => [String(Number(id) + shift), v]));
  return {
    'vocab.json': bpe['vocab.json'],
    'merges.txt': bpe['merges.txt'],
    'added_tokens.json': JSON.stringify(Object.fromEntries(Object.entries(added).map(([k, v]) => [k, v + shift])), null, 2) + '\n',
    'tokenizer_config.json': JSON.stringify(cfg, null, 2) + '\n',
    'special_tokens_map.json': fs.readFileSync(path.join(tiny, 'special_tokens_map.json')),
  };
}

function mistralTokenizerFiles(): Record<string, Uint8Array> {
  const d = findProjectDir(['test/fixtures/videollama2_clip_mistral_tiny', '../shared/fixtures/videollama2_clip_mistral_tiny'], 'Mistral v1 tokenizer');
  return Object.fromEntries(['tokenizer.model', 'tokenizer_config.json', 'special_tokens_map.json'].map((f) => [f, fs.readFileSync(path.join(d, f))]));
}

export function videollama2RandomSpec(opts: RandomSpecOptions): RandomCheckpointSpec {
  const v = VARIANTS[opts.variant as keyof typeof VARIANTS];
  if (!v) throw new Error(`unknown VideoLLaMA 2 variant '${opts.variant}' (known: ${VIDEOLLAMA2_VARIANTS.join(', ')})`);
  const tower: Record<string, unknown> = { ...v.tower };
  if (opts.visionLayers !== undefined) tower.num_hidden_layers = opts.visionLayers;
  Object.assign(tower, opts.configOverrides?.vision ?? {});
  const config: Record<string, unknown> = { ...v.config, mm_hidden_size: tower.hidden_size, torch_dtype: TORCH_DTYPE[opts.dtype] };
  if (opts.llmLayers !== undefined) config.num_hidden_layers = opts.llmLayers;
  Object.assign(config, opts.configOverrides?.config ?? {});

  const cfg = parseVideoLLaMA2Config(config, 'config.json');
  const family = String(tower.model_type).startsWith('clip') ? 'clip' : 'siglip';
  const towerCfg = parseVisionTowerConfig(new ConfigReader(tower, `${v.towerDir}/config.json`), family);
  const model = new VideoLLaMA2(cfg, towerCfg);
  const km = model.keyMap();
  const toCk = (k: string) => toCheckpointKey(km, k);
  const built = moduleTensors(model, toCk);
  // the whole HF vision model, in its own order, as state_dict() saves it
  const fullTower = new VideoLLaMA2VisionTower(towerCfg, { selectLayer: -1, selectFeature: cfg.mm_vision_select_feature });
  const towerPrefix = toCk('vision_tower.vision_tower.vision_model.');
  const towerTensors = [
    ...moduleTensors(fullTower, toCk, 'vision_tower.'),
    ...unusedTowerTensors(towerPrefix, family, towerCfg.hiddenSize, towerCfg.intermediateSize),
  ];
  model.dispose();
  fullTower.dispose();
  const inTower = new Set(towerTensors.map((t) => t.name));
  const lost = built.filter((t) => t.name.startsWith('model.vision_tower.') && !inTower.has(t.name));
  if (lost.length) throw new Error(`${v.title}: tower tensors ${lost.map((t) => t.name).join(', ')} are not in the full tower`);
  // Videollama2*ForCausalLM.state_dict() order: model.{embed_tokens, layers, norm, vision_tower, mm_projector}, lm_head
  const llm = built.filter((t) => !t.name.startsWith('model.vision_tower.') && !t.name.startsWith('model.mm_projector.') && !t.name.startsWith('lm_head.'));
  const tensors = [...llm, ...towerTensors, ...built.filter((t) => t.name.startsWith('model.mm_projector.')), ...built.filter((t) => t.name.startsWith('lm_head.'))];

  const files: Record<string, string | Uint8Array> = {
    'config.json': jsonText(sortKeys(config)),
    [`${v.towerDir}/config.json`]: jsonText(tower),
    [`${v.towerDir}/preprocessor_config.json`]: jsonText(v.preprocessor),
    ...(cfg.llmFamily === 'mistral' ? mistralTokenizerFiles() : qwen2TokenizerFiles()),
  };
  const notes = [
    `${v.title}: ${cfg.llmFamily} LLM, ${family} tower in ${v.towerDir}/ (weights in the main checkpoint as model.vision_tower.*)`,
    `${towerTensors.length - built.filter((t) => t.name.startsWith('model.vision_tower.')).length} tower tensors are upstream-only (ignored by the loader)`,
  ];
  return { title: v.title, tensors, files, notes };
}
