/**
 * VideoLLaMA2 configuration, key maps, tower-directory resolution, strict loading and the input
 * checks of the multimodal splice: every bad-input path throws a message that names the tensor or
 * key and both numbers. Uses the small SigLIP/Qwen2 fixture (and the CLIP one for the key maps).
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { goldenPixels } from '../helpers/vl2_pixels';
import { parseVideoLLaMA2Config } from '../../models/videollama2/config';
import { towerKeyMap, videollama2KeyMap } from '../../models/videollama2/keymap';
import { IGNORE_INDEX, VideoLLaMA2 } from '../../models/videollama2/modeling';
import { TOWER_PATH_ENV, resolveVisionTowerDir, towerFamily } from '../../models/videollama2/vision';
import { layersForSelect } from '../../models/clip/modeling';
import { Checkpoint } from '../../weights/checkpoint';
import { toCheckpointKey, toModuleKey } from '../../weights/keymap';
import { SafetensorsFile, WriteTensor, writeSafetensors } from '../../weights/safetensors';
import { Golden, itIf, shared } from '../helpers/golden';
import { goldenFile, modelFixture } from '../helpers/fixtures';

const SIGLIP = modelFixture('videollama2_siglip_qwen2_tiny');
const CLIP = modelFixture('videollama2_clip_mistral_tiny');
const TOWERS: Record<string, string> = { videollama2_siglip_qwen2_tiny: 'siglip-tiny-patch14-84', videollama2_clip_mistral_tiny: 'clip-vit-tiny-patch14-84' };
const readCfg = (dir: string) => JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'));

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vl2-test-'));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** A copy of a fixture dir with its config and main checkpoint transformed. */
function variant(src: string, name: string, edit: { config?: (c: any) => void; tensors?: (t: Record<string, WriteTensor>) => void; copyTower?: boolean }): string {
  const out = path.join(tmp, name);
  fs.mkdirSync(out, { recursive: true });
  const cfg = readCfg(src);
  edit.config?.(cfg);
  fs.writeFileSync(path.join(out, 'config.json'), JSON.stringify(cfg));
  const f = SafetensorsFile.open(path.join(src, 'model.safetensors'));
  const t: Record<string, WriteTensor> = {};
  for (const k of f.keys()) t[k] = { dtype: f.entry(k).dtype, shape: f.entry(k).shape, data: f.read(k).data };
  f.close();
  edit.tensors?.(t);
  writeSafetensors(path.join(out, 'model.safetensors'), t);
  const tower = TOWERS[path.basename(src)];
  if (edit.copyTower !== false) fs.cpSync(path.join(src, tower), path.join(out, tower), { recursive: true });
  return out;
}

describe('config', () => {
  itIf(SIGLIP)('parses both fixture configs; unknown keys are logged, not dropped', () => {
    const logs: string[] = [];
    const c = parseVideoLLaMA2Config({ ...readCfg(SIGLIP!), my_new_key: 1 }, 'config.json', (m) => logs.push(m));
    expect(c.llmFamily).toBe('qwen2');
    expect(c.mm_projector_type).toBe('stc_connector_v35');
    expect(c.num_frames).toBe(16);
    expect(c.mm_vision_select_layer).toBe(-2);
    expect(c.image_aspect_ratio).toBe('pad');
    expect(logs).toEqual(['config.json: ignoring unknown config keys: my_new_key']);
    const m = parseVideoLLaMA2Config(readCfg(CLIP!), 'config.json');
    expect([m.llmFamily, m.llm.qkvBias, m.mm_projector_type]).toEqual(['mistral', false, 'stc_connector']);
  });

  itIf(SIGLIP)('defaults: num_frames = NUM_FRAMES (8), mm_projector_type linear', () => {
    const cfg = readCfg(SIGLIP!);
    delete cfg.num_frames;
    delete cfg.mm_projector_type;
    const c = parseVideoLLaMA2Config(cfg, 'x.json');
    expect([c.num_frames, c.mm_projector_type]).toEqual([8, 'linear']);
  });

  itIf(SIGLIP)('bad values name the file and the key', () => {
    expect(() => parseVideoLLaMA2Config({ ...readCfg(SIGLIP!), model_type: 'llava' }, 'c.json')).toThrow(/c\.json: 'model_type' must be one of videollama2_mistral, videollama2_qwen2, got "llava"/);
    const noHidden = readCfg(SIGLIP!);
    delete noHidden.mm_hidden_size;
    expect(() => parseVideoLLaMA2Config(noHidden, 'c.json')).toThrow(/c\.json: 'mm_hidden_size' is missing/);
    const noTower = readCfg(SIGLIP!);
    delete noTower.mm_vision_tower;
    expect(() => parseVideoLLaMA2Config(noTower, 'c.json')).toThrow(/'mm_vision_tower' is missing/);
    expect(() => parseVideoLLaMA2Config({ ...readCfg(SIGLIP!), mm_vision_select_layer: 'last' }, 'c.json')).toThrow(/'mm_vision_select_layer' must be an integer/);
    expect(() => parseVideoLLaMA2Config({ ...readCfg(SIGLIP!), mm_vision_select_feature: 'cls' }, 'c.json')).toThrow(/'mm_vision_select_feature' must be one of patch, cls_patch/);
  });

  it('select layer → layers run: hidden_states has L + 1 entries', () => {
    expect(layersForSelect(24, -2)).toBe(23); // CLIP ViT-L: the last layer never runs
    expect(layersForSelect(3, -1)).toBe(3);
    expect(layersForSelect(3, 0)).toBe(0);
    expect(() => layersForSelect(3, -5)).toThrow(/mm_vision_select_layer = -5 is out of range for a tower with 3 layers \(hidden_states has 4 entries: valid -4 … 3\)/);
  });

  it('tower class by name as build_vision_tower does, then by config model_type', () => {
    expect(towerFamily('openai/clip-vit-large-patch14-336')).toBe('clip');
    expect(towerFamily('google/siglip-so400m-patch14-384')).toBe('siglip');
    expect(towerFamily('/models/tower', { model_type: 'siglip_vision_model' })).toBe('siglip');
    expect(() => towerFamily('/models/tower', {})).toThrow(/Unknown vision tower: '\/models\/tower'/);
  });

  itIf(SIGLIP)('mm_hidden_size must equal the tower hidden size; SigLIP has no cls_patch', async () => {
    const d1 = variant(SIGLIP!, 'bad_mm_hidden', { config: (c) => { c.mm_hidden_size = 32; } });
    await expect(VideoLLaMA2.fromPretrained(d1, { log: () => {} })).rejects.toThrow(/mm_hidden_size \(32\) differs from the vision tower's hidden_size \(48\)/);
    const d2 = variant(SIGLIP!, 'bad_select', { config: (c) => { c.mm_vision_select_feature = 'cls_patch'; } });
    await expect(VideoLLaMA2.fromPretrained(d2, { log: () => {} })).rejects.toThrow(/Unexpected select feature: cls_patch/);
  });
});

describe('vision tower directory', () => {
  itIf(SIGLIP)('absolute, relative to the model dir, repo name under search roots (plain and HF cache layout), override', () => {
    const rel = resolveVisionTowerDir('siglip-tiny-patch14-84', SIGLIP!);
    expect(rel).toBe(path.join(SIGLIP!, 'siglip-tiny-patch14-84'));
    // an absolute mm_vision_tower is only followed through an explicit visionTowerDir (reliability item 10)
    expect(() => resolveVisionTowerDir(rel, '/nonexistent')).toThrow(/outside the model directory.*--vision-tower DIR/);
    const root = path.join(tmp, 'towers');
    fs.mkdirSync(path.join(root, 'google'), { recursive: true });
    fs.cpSync(rel, path.join(root, 'google', 'siglip-tiny'), { recursive: true });
    expect(resolveVisionTowerDir('google/siglip-tiny', '/nonexistent', { towerSearchPaths: [root] })).toBe(path.join(root, 'google', 'siglip-tiny'));
    const hub = path.join(tmp, 'hub');
    const snap = path.join(hub, 'models--google--siglip-hub', 'snapshots', 'abc123');
    fs.mkdirSync(path.join(hub, 'models--google--siglip-hub', 'refs'), { recursive: true });
    fs.writeFileSync(path.join(hub, 'models--google--siglip-hub', 'refs', 'main'), 'abc123\n');
    fs.cpSync(rel, snap, { recursive: true });
    expect(resolveVisionTowerDir('google/siglip-hub', '/nonexistent', { towerSearchPaths: [hub] })).toBe(snap);
    const old = process.env[TOWER_PATH_ENV];
    process.env[TOWER_PATH_ENV] = root;
    try {
      expect(resolveVisionTowerDir('google/siglip-tiny', '/nonexistent')).toBe(path.join(root, 'google', 'siglip-tiny'));
    } finally {
      if (old === undefined) delete process.env[TOWER_PATH_ENV];
      else process.env[TOWER_PATH_ENV] = old;
    }
    expect(resolveVisionTowerDir('anything', '/nonexistent', { visionTowerDir: rel })).toBe(rel);
  });

  it('a tower that cannot be found says where it looked and how to fix it', () => {
    expect(() => resolveVisionTowerDir('google/siglip-so400m-patch14-384', '/nonexistent', { towerSearchPaths: [] }))
      .toThrow(/mm_vision_tower 'google\/siglip-so400m-patch14-384': no tower directory with a config\.json found \(tried \/nonexistent\/google\/siglip-so400m-patch14-384\).*pass \{ visionTowerDir \} \(CLI: --vision-tower DIR\) or set VLM_VISION_TOWER_PATH/);
  });
});

describe('key maps', () => {
  for (const dir of [CLIP, SIGLIP]) {
    const fx = dir ? path.basename(dir) : 'fixture';
    itIf(dir)(`${fx}: idempotent, round-trip, and every model parameter has a checkpoint key`, async () => {
      const model = await VideoLLaMA2.fromPretrained(dir!, { log: () => {} });
      try {
        const maps = [
          { map: model.keyMap(), file: path.join(dir!, 'model.safetensors'), towerOnly: false },
          { map: model.towerKeyMap(), file: path.join(dir!, TOWERS[fx], 'model.safetensors'), towerOnly: true },
        ];
        for (const { map, file, towerOnly } of maps) {
          const ck = Checkpoint.open(file);
          const keys = ck.keys();
          ck.close();
          const mapped = new Set<string>();
          const ignored: string[] = [];
          for (const k of keys) {
            const m = toModuleKey(map, k);
            if (m === null) {
              ignored.push(k);
              continue;
            }
            expect(toModuleKey(map, m)).toBe(m); // idempotent: a module key maps to itself
            expect(toCheckpointKey(map, m)).toBe(k); // round trip
            mapped.add(m);
          }
          for (const [name] of model.namedParams()) {
            if (towerOnly && !name.startsWith('vision_tower.')) continue;
            expect(toModuleKey(map, toCheckpointKey(map, name))).toBe(name);
            expect(mapped.has(name)).toBe(true);
          }
          // Ignored: post_layernorm, SigLIP's head, and the last tower layer (select_layer -2 never runs it).
          expect(ignored.every((k) => /(post_layernorm|head)\.|encoder\.layers\.2\./.test(k))).toBe(true);
          expect(ignored.some((k) => /encoder\.layers\.2\./.test(k))).toBe(true);
        }
      } finally {
        model.dispose();
      }
    });
  }

  it('maps the LLM, projector and tower prefixes both ways and drops old buffers', () => {
    const map = videollama2KeyMap({ numHiddenLayers: 24, numLayersBuilt: 23 });
    expect(toModuleKey(map, 'model.layers.3.mlp.up_proj.weight')).toBe('llm.model.layers.3.mlp.up_proj.weight');
    expect(toModuleKey(map, 'lm_head.weight')).toBe('llm.lm_head.weight');
    expect(toModuleKey(map, 'model.mm_projector.s1.b1.conv1.conv.weight')).toBe('mm_projector.s1.b1.conv1.conv.weight');
    expect(toModuleKey(map, 'model.vision_tower.vision_tower.vision_model.encoder.layers.22.mlp.fc1.weight')).toBe('vision_tower.vision_tower.vision_model.encoder.layers.22.mlp.fc1.weight');
    expect(toModuleKey(map, 'model.vision_tower.vision_tower.vision_model.encoder.layers.23.mlp.fc1.weight')).toBeNull();
    expect(toModuleKey(map, 'model.vision_tower.vision_tower.vision_model.embeddings.position_ids')).toBeNull();
    expect(toModuleKey(map, 'model.layers.0.self_attn.rotary_emb.inv_freq')).toBeNull();
    const tmap = towerKeyMap({ numHiddenLayers: 24, numLayersBuilt: 23 });
    expect(toModuleKey(tmap, 'vision_model.pre_layrnorm.weight')).toBe('vision_tower.vision_tower.vision_model.pre_layrnorm.weight');
    expect(toModuleKey(tmap, 'text_model.encoder.layers.0.mlp.fc1.weight')).toBeNull(); // full CLIPModel checkpoints
    expect(toModuleKey(tmap, 'logit_scale')).toBeNull();
  });
});

describe('strict loading', () => {
  itIf(SIGLIP)('missing, unexpected and wrong-shape tensors are all reported with the shard and shapes', async () => {
    const dir = variant(SIGLIP!, 'broken', {
      tensors: (t) => {
        delete t['model.mm_projector.s1.b2.se.fc1.bias'];
        t['model.mm_projector.extra.weight'] = { dtype: 'F32', shape: [2], data: new Float32Array(2) };
        const w = t['model.mm_projector.sampler.0.weight'];
        t['model.mm_projector.sampler.0.weight'] = { ...w, shape: [64, 64, 2, 2, 1], data: (w.data as Float32Array).slice(0, 64 * 64 * 4) };
      },
    });
    const p = VideoLLaMA2.fromPretrained(dir, { log: () => {} });
    await expect(p).rejects.toThrow(/1 missing, 1 unexpected, 1 wrong-shape/);
    await expect(VideoLLaMA2.fromPretrained(dir, { log: () => {} })).rejects.toThrow(/missing: 'model\.mm_projector\.s1\.b2\.se\.fc1\.bias' in .*broken \(shape \[16\]\)/);
    await expect(VideoLLaMA2.fromPretrained(dir, { log: () => {} })).rejects.toThrow(/wrong shape: 'model\.mm_projector\.sampler\.0\.weight' in .*model\.safetensors is \[64, 64, 2, 2, 1\], .* expects \[64, 64, 2, 2, 2\]/);
  });

  itIf(SIGLIP)('no tower tensors in the main checkpoint and none in the tower dir: says what to do', async () => {
    const dir = variant(SIGLIP!, 'no_tower_weights', {
      tensors: (t) => { for (const k of Object.keys(t)) if (k.startsWith('model.vision_tower.')) delete t[k]; },
    });
    fs.rmSync(path.join(dir, 'siglip-tiny-patch14-84', 'model.safetensors'));
    await expect(VideoLLaMA2.fromPretrained(dir, { log: () => {} })).rejects.toThrow(/has no model\.vision_tower\.\* tensors, and the tower directory cannot be read as a checkpoint.*Put the tower's model\.safetensors in/);
    // towerWeights: 'main' insists on the main checkpoint: strict missing-key report
    await expect(VideoLLaMA2.fromPretrained(dir, { towerWeights: 'main', log: () => {} })).rejects.toThrow(/missing: 'model\.vision_tower\.vision_tower\.vision_model\.embeddings\.patch_embedding\.weight'/);
  });

  itIf(SIGLIP)('auto: the tower dir is used when the main checkpoint has no tower tensors', async () => {
    const dir = variant(SIGLIP!, 'tower_only', {
      tensors: (t) => { for (const k of Object.keys(t)) if (k.startsWith('model.vision_tower.')) delete t[k]; },
    });
    const logs: string[] = [];
    const m = await VideoLLaMA2.fromPretrained(dir, { log: (s) => logs.push(s) });
    expect(logs.join('\n')).toMatch(/vision tower weights from .*siglip-tiny-patch14-84/);
    m.dispose();
  });
});

describe('multimodal splice: inputs', () => {
  let model: VideoLLaMA2;
  let g: Golden;
  let video: tf.Tensor;
  let image: tf.Tensor;
  beforeAll(async () => {
    if (!SIGLIP) return;
    model = await VideoLLaMA2.fromPretrained(SIGLIP, { log: () => {} });
    g = new Golden(goldenFile(SIGLIP));
    video = await goldenPixels(g, SIGLIP, 'video');
    image = g.tensor('image.pixel_values');
  });
  afterAll(() => {
    model?.dispose();
    g?.close();
    tf.dispose([video, image]);
  });

  itIf(SIGLIP)('a video goes through the tower a few frames per pass: the same features as all frames at once, no leak', () => {
    expect(video.shape[0]).toBeGreaterThan(4); // more frames than one pass takes
    const n0 = tf.memory().numTensors;
    const chunked = model.towerFeatures([{ pixels: video, modal: 'video' }]);
    const whole = model.towerFeatures([{ pixels: video, modal: 'video' }], () => {}); // taps: one pass
    expect(chunked.shape).toEqual(whole.shape);
    const a = chunked.dataSync(), b = whole.dataSync();
    let d = 0, m = 0;
    for (let i = 0; i < b.length; i++) { d = Math.max(d, Math.abs(a[i] - b[i])); m = Math.max(m, Math.abs(b[i])); }
    expect(d / m).toBeLessThan(1e-6);
    tf.dispose([chunked, whole]);
    expect(tf.memory().numTensors).toBe(n0);
  });

  itIf(SIGLIP)('no placeholder with media, or placeholders ≠ media: clear errors', () => {
    const ids = g.ints('video.input_ids');
    const textOnly = ids.filter((v) => v >= 0);
    expect(() => model.prepareInputsEmbeds(textOnly, [{ pixels: video, modal: 'video' }]))
      .toThrow(/input_ids has no media placeholder \(-200 <image> \/ -201 <video>\) but 1 media tensor\(s\) were given/);
    const two = [...ids.slice(0, 5), -201, ...ids.slice(5)];
    expect(() => model.prepareInputsEmbeds(two, [{ pixels: video, modal: 'video' }]))
      .toThrow(/input_ids has 2 media placeholder\(s\) \(at positions 5, 24\) but 1 media tensor\(s\) were given/);
    expect(() => model.prepareInputsEmbeds(ids, [])).toThrow(/has 1 media placeholder\(s\) \(at position 23\) but 0 media/);
    expect(() => model.prepareInputsEmbeds(ids, [{ pixels: video, modal: 'video' }], { attentionMask: [1, 1] })).toThrow(/attention_mask has 2 entries, input_ids has 46/);
    expect(() => model.prepareInputsEmbeds([...ids.slice(0, 23), 5000, ...ids.slice(24)], [])).toThrow(/input_ids\[23\] = 5000 is outside the vocabulary \[0, 1024\)/);
  });

  itIf(SIGLIP)('wrong pixel tensor shapes name the tensor and both shapes', () => {
    const ids = g.ints('video.input_ids');
    const bad = tf.zeros([16, 3, 80, 80]);
    const twoImages = tf.zeros([2, 3, 84, 84]);
    try {
      expect(() => model.prepareInputsEmbeds(ids, [{ pixels: bad, modal: 'video' }])).toThrow(/pixel_values for a video has shape \[16, 3, 80, 80\], expected \[T, 3, 84, 84\]/);
      expect(() => model.prepareInputsEmbeds(ids, [{ pixels: twoImages, modal: 'image' }])).toThrow(/pixel_values for an image has shape \[2, 3, 84, 84\], expected \[1, 3, 84, 84\]/);
      expect(() => model.vision_tower.forward(bad as tf.Tensor4D)).toThrow(/pixel_values has shape \[16, 3, 80, 80\], the siglip tower expects \[B, 3, 84, 84\]/);
      const short = video.slice([0, 0, 0, 0], [8, 3, 84, 84]);
      const two = [...ids.slice(0, 5), -200, ...ids.slice(5)];
      expect(() => model.prepareInputsEmbeds(two, [{ pixels: image, modal: 'image' }, { pixels: short, modal: 'video' }])).toThrow(/media have different frame counts \(16, 8\)/);
      short.dispose();
    } finally {
      tf.dispose([bad, twoImages]);
    }
  });

  itIf(SIGLIP)('text only (no media, no placeholder) embeds the ids; a bare [C, S, S] image is accepted like expand() does', () => {
    const ids = g.ints('video.input_ids').filter((v) => v >= 0);
    const sp = model.prepareInputsEmbeds(ids, []);
    expect(sp.inputsEmbeds.shape).toEqual([1, ids.length, 64]);
    expect(sp.attentionMask).toEqual(new Array(ids.length).fill(1));
    sp.inputsEmbeds.dispose();
    const img3 = image.reshape([3, 84, 84]);
    const a = model.prepareInputsEmbeds(g.ints('image.input_ids'), [{ pixels: img3, modal: 'image' }]);
    expect(a.inputsEmbeds.shape).toEqual([1, 117, 64]);
    tf.dispose([a.inputsEmbeds, img3]);
  });

  itIf(SIGLIP)('two media in one sequence: each placeholder takes the next media; labels get IGNORE_INDEX', () => {
    const ids = g.ints('video.input_ids');
    const p = ids.indexOf(-201);
    const two = [...ids.slice(0, 3), -200, ...ids.slice(3)];
    const labels = two.map((v, i) => (v < 0 ? IGNORE_INDEX : i));
    const sp = model.prepareInputsEmbeds(two, [{ pixels: image, modal: 'image' }, { pixels: video, modal: 'video' }], { labels });
    const L = model.connectorTokens(); // 8·3·3 = 72
    expect(L).toBe(72);
    expect(sp.inputsEmbeds.shape).toEqual([1, two.length - 2 + 2 * L, 64]);
    expect(sp.labels!.length).toBe(sp.inputsEmbeds.shape[1]);
    expect(sp.labels!.slice(0, 3)).toEqual([0, 1, 2]);
    expect(sp.labels!.slice(3, 3 + L).every((v) => v === IGNORE_INDEX)).toBe(true);
    expect(sp.labels![3 + L]).toBe(4);
    // The video rows equal those of the single-media golden splice at the same offset.
    const vidStart = 3 + L + (p + 1 - 4);
    const rows = sp.inputsEmbeds.slice([0, vidStart, 0], [1, L, 64]);
    const ref = g.get('video.llm.inputs_embeds');
    const refRows = Array.from(ref.data.subarray(p * 64, (p + L) * 64));
    const got = Array.from(rows.dataSync());
    expect(Math.max(...got.map((v, i) => Math.abs(v - refRows[i])))).toBeLessThan(1e-4);
    tf.dispose([sp.inputsEmbeds, rows]);
  });

  const train = shared('fixtures', 'videollama2_siglip_qwen2_tiny', 'train', 'train_golden.safetensors');
  itIf(SIGLIP && train)('training batch (../shared): spliced labels and attention mask equal upstream', () => {
    const t = new Golden(train!);
    try {
      const px = t.tensor('pixel_values');
      const modal = px.shape[0] === 1 ? 'image' : 'video';
      const sp = model.prepareInputsEmbeds(t.ints('input_ids'), [{ pixels: px, modal }], { labels: t.ints('labels'), attentionMask: t.ints('attention_mask') });
      expect(sp.labels).toEqual(t.ints('spliced.labels'));
      expect(sp.attentionMask).toEqual(t.ints('spliced.attention_mask'));
      tf.dispose([px, sp.inputsEmbeds]);
    } finally {
      t.close();
    }
  });
});
