/**
 * The real MiniCPM-V 2.6 config (test/fixtures/real_configs/minicpmv26, a copy of
 * shared/real_configs): a model built from it, without allocating a single weight, has exactly
 * the 789 tensor names of the released `model.safetensors.index.json` through the key map, with
 * the shapes the config implies; the key map is idempotent and round-trips; config parsing fills
 * upstream's defaults and names the file and key in errors.
 */
import fs from 'node:fs';
import * as tf from '@tensorflow/tfjs';
import { MINICPMV_KEYMAP } from '../../models/minicpmv/keymap';
import { MiniCPMV } from '../../models/minicpmv/modeling';
import { loadMiniCPMVConfig, parseMiniCPMVConfig, visionLayerCount } from '../../models/minicpmv/config';
import { toCheckpointKey, toModuleKey } from '../../weights/keymap';
import { fixture } from '../helpers/golden';

const REAL = fixture('real_configs', 'minicpmv26');
const realJson = () => JSON.parse(fs.readFileSync(`${REAL}/config.json`, 'utf8')) as Record<string, unknown>;
const indexKeys = (): string[] => Object.keys(JSON.parse(fs.readFileSync(`${REAL}/model.safetensors.index.json`, 'utf8')).weight_map);

describe('MiniCPMV built from the real 2.6 config (no weights allocated)', () => {
  let model: MiniCPMV;
  let before: number;
  beforeAll(() => {
    before = tf.memory().numTensors;
    model = new MiniCPMV(loadMiniCPMVConfig(REAL, () => undefined));
  });

  it('allocates nothing: every parameter is empty until loaded', () => {
    expect(tf.memory().numTensors).toBe(before);
    const params = [...model.namedParams()];
    expect(params.every(([, p]) => !p.loaded)).toBe(true);
  });

  it('has exactly the 789 checkpoint keys of model.safetensors.index.json', () => {
    const ours = new Set([...model.namedParams()].filter(([, p]) => !p.tiedTo).map(([k]) => toCheckpointKey(MINICPMV_KEYMAP, k)));
    const theirs = new Set(indexKeys());
    expect(theirs.size).toBe(789);
    const missing = [...theirs].filter((k) => !ours.has(k));
    const extra = [...ours].filter((k) => !theirs.has(k));
    expect({ missing, extra }).toEqual({ missing: [], extra: [] });
    expect(ours.size).toBe(789);
  });

  it('has the shapes the config implies', () => {
    const shapes = new Map([...model.namedParams()].map(([k, p]) => [k, p.shape]));
    // vision_config: hidden 1152, patch 14, image 980 → 70² positions, intermediate 4304, 27 layers (drop_vision_last_layer false)
    // LLM: hidden 3584, 28 layers, 28/4 heads (head 128), intermediate 18944, vocab 151666, untied lm_head
    const expected: Record<string, number[]> = {
      'vpm.embeddings.patch_embedding.weight': [1152, 3, 14, 14],
      'vpm.embeddings.patch_embedding.bias': [1152],
      'vpm.embeddings.position_embedding.weight': [4900, 1152],
      'vpm.encoder.layers.26.self_attn.q_proj.weight': [1152, 1152],
      'vpm.encoder.layers.26.mlp.fc1.weight': [4304, 1152],
      'vpm.encoder.layers.26.mlp.fc2.weight': [1152, 4304],
      'vpm.post_layernorm.weight': [1152],
      'resampler.query': [64, 3584],
      'resampler.kv_proj.weight': [3584, 1152],
      'resampler.attn.in_proj_weight': [3 * 3584, 3584],
      'resampler.attn.in_proj_bias': [3 * 3584],
      'resampler.attn.out_proj.weight': [3584, 3584],
      'resampler.ln_q.weight': [3584],
      'resampler.proj': [3584, 3584],
      'llm.model.embed_tokens.weight': [151666, 3584],
      'llm.lm_head.weight': [151666, 3584],
      'llm.model.layers.27.self_attn.q_proj.weight': [3584, 3584],
      'llm.model.layers.27.self_attn.k_proj.weight': [512, 3584],
      'llm.model.layers.27.self_attn.k_proj.bias': [512],
      'llm.model.layers.27.mlp.gate_proj.weight': [18944, 3584],
      'llm.model.layers.27.mlp.down_proj.weight': [3584, 18944],
      'llm.model.norm.weight': [3584],
    };
    for (const [k, s] of Object.entries(expected)) expect([k, shapes.get(k)]).toEqual([k, s]);
    expect(model.resampler.attn.numHeads).toBe(28); // embed_dim // 128
    expect(model.vpm.encoder.layers.length).toBe(27);
  });

  it('drop_vision_last_layer: true builds one layer fewer (the checkpoint then has no layers.26)', () => {
    const cfg = parseMiniCPMVConfig({ ...realJson(), drop_vision_last_layer: true });
    expect(visionLayerCount(cfg)).toBe(26);
    const m = new MiniCPMV(cfg);
    const keys = [...m.namedParams()].map(([k]) => k);
    expect(keys.some((k) => k.startsWith('vpm.encoder.layers.25.'))).toBe(true);
    expect(keys.some((k) => k.startsWith('vpm.encoder.layers.26.'))).toBe(false);
  });
});

describe('MiniCPM-V key map', () => {
  const keys = indexKeys();

  it('round-trips every checkpoint key: checkpoint → module → checkpoint', () => {
    for (const k of keys) {
      const m = toModuleKey(MINICPMV_KEYMAP, k);
      expect(m).not.toBeNull();
      expect(toCheckpointKey(MINICPMV_KEYMAP, m!)).toBe(k);
    }
  });

  it('is idempotent (mapping a mapped key changes nothing, both directions)', () => {
    for (const k of keys) {
      const m = toModuleKey(MINICPMV_KEYMAP, k)!;
      expect(toModuleKey(MINICPMV_KEYMAP, m)).toBe(m);
      const c = toCheckpointKey(MINICPMV_KEYMAP, m);
      expect(toCheckpointKey(MINICPMV_KEYMAP, c)).toBe(c);
    }
  });

  it('ignores the non-persistent resampler.pos_embed buffer', () => {
    expect(toModuleKey(MINICPMV_KEYMAP, 'resampler.pos_embed')).toBeNull();
  });
});

describe('MiniCPM-V config parsing', () => {
  it('reads the real config with upstream defaults for absent keys', () => {
    const warnings: string[] = [];
    const cfg = loadMiniCPMVConfig(REAL, (m) => warnings.push(m));
    expect(cfg.query_num).toBe(64);
    expect(cfg.drop_vision_last_layer).toBe(false);
    expect(cfg.batch_vision_input).toBe(true);
    expect(cfg.vision_batch_size).toBe(16); // absent in config.json: MiniCPMVConfig default
    expect(cfg.use_image_id).toBe(true); // absent: default True
    expect(cfg.slice_config).toEqual({ patch_size: 14, max_slice_nums: 9, scale_resolution: 448 }); // scale_resolution absent → 448
    // vision_config present but partial → SiglipVisionConfig defaults for the rest
    expect(cfg.vision_config).toEqual({
      hidden_size: 1152, intermediate_size: 4304, num_hidden_layers: 27, num_attention_heads: 16, num_channels: 3,
      image_size: 980, patch_size: 14, hidden_act: 'gelu_pytorch_tanh', layer_norm_eps: 1e-6, attention_dropout: 0,
    });
    expect(cfg.llm.hiddenSize).toBe(3584);
    expect(cfg.llm.vocabSize).toBe(151666);
    expect(cfg.scale_emb).toBeNull();
    expect(warnings).toEqual([]);
  });

  it('falls back to default_vision_config and MiniCPMVSliceConfig(max_slice_nums=1) when absent', () => {
    const j = realJson();
    delete j.vision_config;
    delete j.slice_config;
    delete j.drop_vision_last_layer;
    const cfg = parseMiniCPMVConfig(j);
    expect(cfg.vision_config.hidden_size).toBe(1152);
    expect(cfg.vision_config.image_size).toBe(980);
    expect(cfg.vision_config.num_hidden_layers).toBe(27);
    expect(cfg.slice_config.max_slice_nums).toBe(1);
    expect(cfg.drop_vision_last_layer).toBe(true);
  });

  it('collects unknown keys for a warning and never mutates the input', () => {
    const j = { ...realJson(), some_new_key: 1 };
    const copy = JSON.stringify(j);
    const cfg = parseMiniCPMVConfig(j, 'x/config.json');
    expect(cfg.ignored_keys).toEqual(['some_new_key']);
    expect(JSON.stringify(j)).toBe(copy);
  });

  it('errors name the file and the key', () => {
    const j = realJson();
    expect(() => parseMiniCPMVConfig({ ...j, model_type: 'llava' }, 'm/config.json')).toThrow('m/config.json: \'model_type\' is "llava", expected "minicpmv"');
    expect(() => parseMiniCPMVConfig({ ...j, vision_config: { ...(j.vision_config as object), num_attention_heads: 5 } }, 'm/config.json'))
      .toThrow("m/config.json: 'vision_config.hidden_size' (1152) must be divisible by 'vision_config.num_attention_heads' (5)");
    expect(() => parseMiniCPMVConfig({ ...j, query_num: 'many' }, 'm/config.json')).toThrow("m/config.json: 'query_num' must be an integer >= 1, got \"many\"");
    expect(() => parseMiniCPMVConfig({ ...j, vision_batch_size: 0 }, 'm/config.json')).toThrow("'vision_batch_size' must be an integer >= 1, got 0");
    expect(() => parseMiniCPMVConfig({ ...j, slice_config: { max_slice_nums: -1 } }, 'm/config.json')).toThrow("'slice_config.max_slice_nums' must be an integer >= 1");
  });
});
