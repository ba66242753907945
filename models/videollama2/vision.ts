/**
 * VideoLLaMA2's vision tower wrapper: DAMO-NLP-SG/VideoLLaMA2 (commit c0bb03ab)
 * `videollama2/model/encoder.py` `CLIPVisionTower` / `SiglipVisionTower` / `build_vision_tower`.
 *
 *   features = vision_tower(frames, output_hidden_states=True).hidden_states[select_layer]
 *   CLIP, select_feature 'patch': features[:, 1:] (drop CLS); 'cls_patch': all.
 *   SigLIP: 'patch' keeps everything (no CLS); anything else is an error.
 *
 * The wrapped HF model sits in the field `vision_tower`, so with the VideoLLaMA2 model's own
 * `vision_tower` field the parameter paths are `vision_tower.vision_tower.vision_model.*`, as in
 * the checkpoint (`model.vision_tower.vision_tower.vision_model.*`). Only the layers up to
 * `select_layer` are built (see models/clip/modeling.ts).
 *
 * The tower directory (`mm_vision_tower`: config.json, preprocessor_config.json and, for
 * release-era checkpoints, the tower weights) is found by `resolveVisionTowerDir`.
 *
 * Shape letters: F frames, C channels, S image side, N patches, E tower hidden.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { readBoundedText } from '../../io/files';
import { Tap } from '../../layers/decoder';
import { Module, register } from '../../layers/module';
import { VisionTowerConfig, parseVisionTowerConfig } from '../clip/config';
import { CLIPVisionModel, layersForSelect } from '../clip/modeling';
import { ConfigReader, readJson } from '../../io/config';
import { SiglipVisionModel } from '../siglip/modeling';

/**
 * `build_vision_tower`: 'clip' in the name → CLIP, else 'siglip' in the name → SigLIP (upstream
 * order). Names with neither (local directories) fall back to the tower config's `model_type`.
 */
export function towerFamily(name: string, towerConfig?: Record<string, unknown>): 'clip' | 'siglip' {
  if (name.includes('clip')) return 'clip';
  if (name.includes('siglip')) return 'siglip';
  const mt = String(towerConfig?.model_type ?? '');
  if (mt.startsWith('clip')) return 'clip';
  if (mt.startsWith('siglip')) return 'siglip';
  throw new Error(`Unknown vision tower: '${name}' (the name contains neither 'clip' nor 'siglip', and its config.json model_type is '${mt || 'absent'}')`);
}

/** Environment variable: directories (path-separated) searched for a tower named like a Hugging Face repo. */
export const TOWER_PATH_ENV = 'VLM_VISION_TOWER_PATH';

export interface ResolveTowerOptions {
  /** Use this directory for the tower, whatever `mm_vision_tower` says. */
  visionTowerDir?: string;
  /**
   * Roots searched for a repo name `org/name`: `<root>/org/name`, `<root>/name`, and the Hugging
   * Face cache layout `<root>/models--org--name/snapshots/<revision>`. Default: $VLM_VISION_TOWER_PATH,
   * then $HF_HUB_CACHE, $HF_HOME/hub and ~/.cache/huggingface/hub.
   */
  towerSearchPaths?: string[];
}

const isDir = (p: string) => fs.existsSync(p) && fs.statSync(p).isDirectory();

/** The snapshot directory of an HF cache entry (refs/main, else the only snapshot). */
function hfCacheSnapshot(root: string, repo: string): string | null {
  const base = path.join(root, `models--${repo.replace(/\//g, '--')}`);
  if (!isDir(base)) return null;
  const ref = path.join(base, 'refs', 'main');
  if (fs.existsSync(ref)) {
    const p = path.join(base, 'snapshots', readBoundedText(ref, 'config').trim());
    if (isDir(p)) return p;
  }
  const snaps = isDir(path.join(base, 'snapshots')) ? fs.readdirSync(path.join(base, 'snapshots')) : [];
  return snaps.length === 1 ? path.join(base, 'snapshots', snaps[0]) : null;
}

/**
 * Finds the tower directory for `mm_vision_tower`: `opts.visionTowerDir`; an absolute path; a
 * path relative to the model directory; then a repo name under the search roots. Throws saying
 * where it looked and how to point at it.
 */
export function resolveVisionTowerDir(name: string, modelDir: string, opts: ResolveTowerOptions = {}): string {
  if (opts.visionTowerDir) {
    if (!isDir(opts.visionTowerDir)) throw new Error(`visionTowerDir '${opts.visionTowerDir}' is not a directory`);
    return opts.visionTowerDir;
  }
  // A config file must not make us read files outside the model directory: an absolute path or
  // a relative one that climbs out of it (`..`, or a symlink that resolves outside) is only
  // taken from an explicit --vision-tower DIR / visionTowerDir. Repo names (`org/name`) are still
  // looked up under the search roots the user configured ($VLM_VISION_TOWER_PATH, the HF cache).
  const outside = () => new Error(`mm_vision_tower '${name}' points outside the model directory ${modelDir}; ` +
    'refusing to follow it from config.json. Pass the tower directory explicitly with --vision-tower DIR (API: { visionTowerDir })');
  if (path.isAbsolute(name)) throw outside();
  const segments = name.split(/[\\/]/);
  if (segments.includes('..')) throw outside();
  const tried: string[] = [];
  const candidates: string[] = [];
  const local = path.join(modelDir, name);
  if (isDir(local)) {
    let realModel = path.resolve(modelDir), realLocal = path.resolve(local);
    try {
      realModel = fs.realpathSync(modelDir);
      realLocal = fs.realpathSync(local);
    } catch {
      /* checked by isDir */
    }
    const rel = path.relative(realModel, realLocal);
    if (rel.startsWith('..') || path.isAbsolute(rel)) throw outside();
  }
  candidates.push(local);
  const envRoots = (process.env[TOWER_PATH_ENV] ?? '').split(path.delimiter).filter(Boolean);
  const hfRoots = [process.env.HF_HUB_CACHE, process.env.HF_HOME && path.join(process.env.HF_HOME, 'hub'), path.join(os.homedir(), '.cache', 'huggingface', 'hub')]
    .filter((x): x is string => !!x);
  const roots = opts.towerSearchPaths ?? [...envRoots, ...hfRoots];
  for (const r of roots) {
    candidates.push(path.join(r, name), path.join(r, path.basename(name)));
    const snap = hfCacheSnapshot(r, name);
    if (snap) candidates.push(snap);
    else tried.push(path.join(r, `models--${name.replace(/\//g, '--')}`));
  }
  for (const c of candidates) {
    if (isDir(c) && fs.existsSync(path.join(c, 'config.json'))) return c;
    tried.push(c);
  }
  throw new Error(`mm_vision_tower '${name}': no tower directory with a config.json found (tried ${[...new Set(tried)].join(', ')}). ` +
    `Download the tower (e.g. huggingface-cli download ${name}) and pass { visionTowerDir } (CLI: --vision-tower DIR) or set ${TOWER_PATH_ENV} to the directory that contains it.`);
}

/** Reads the tower's config.json (vision-only or full CLIP/SigLIP config) for the family picked by name. */
export function loadTowerConfig(towerDir: string, name: string, log?: (msg: string) => void): VisionTowerConfig {
  const file = path.join(towerDir, 'config.json');
  const obj = readJson(file);
  const family = towerFamily(name, obj);
  return parseVisionTowerConfig(new ConfigReader(obj, file), family, (keys) => log?.(`${file}: ignoring unknown vision config keys: ${keys.join(', ')}`));
}

export interface TowerSelect {
  /** `mm_vision_select_layer` (negative counts from the end of hidden_states). */
  selectLayer: number;
  /** `mm_vision_select_feature`. */
  selectFeature: 'patch' | 'cls_patch';
}

/** `CLIPVisionTower` / `SiglipVisionTower`: the HF vision model plus feature selection. */
export class VideoLLaMA2VisionTower extends Module {
  static className = 'VideoLLaMA2VisionTower';
  readonly cfg: VisionTowerConfig;
  readonly select: TowerSelect;
  vision_tower: CLIPVisionModel | SiglipVisionModel;

  constructor(cfg: VisionTowerConfig, select: TowerSelect) {
    super();
    if (cfg.family === 'siglip' && select.selectFeature !== 'patch') {
      throw new Error(`Unexpected select feature: ${select.selectFeature} (the SigLIP tower only supports 'patch')`);
    }
    this.cfg = cfg;
    this.select = select;
    const n = layersForSelect(cfg.numHiddenLayers, select.selectLayer);
    this.vision_tower = cfg.family === 'clip' ? new CLIPVisionModel(cfg, n) : new SiglipVisionModel(cfg, n);
  }

  /** Encoder layers built and run (= the hidden_states index selected). */
  get numLayers(): number {
    return this.vision_tower.numLayers;
  }

  /** Tokens per frame after feature selection. */
  get tokensPerFrame(): number {
    const n = Math.floor(this.cfg.imageSize / this.cfg.patchSize) ** 2;
    return this.cfg.family === 'clip' && this.select.selectFeature === 'cls_patch' ? n + 1 : n;
  }

  /**
   * frames [F, C, S, S] → features [F, N, E] (`feature_select(hidden_states[select_layer])`).
   * Taps `vision.*` (see the tower classes) and `vision_tower.out`.
   */
  forward(frames: tf.Tensor4D, taps?: Tap | null): tf.Tensor3D {
    return tf.tidy(() => {
      const h = this.vision_tower.forward(frames, { taps });
      const [F, T, E] = h.shape;
      const out = this.cfg.family === 'clip' && this.select.selectFeature === 'patch' ? h.slice([0, 1, 0], [F, T - 1, E]) : h; // [:, 1:]
      taps?.('vision_tower.out', out);
      return out;
    });
  }
}
register(VideoLLaMA2VisionTower);
