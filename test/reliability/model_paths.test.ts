/**
 * Reliability item 10: an index's shard names are plain file names inside the model directory,
 * and a vision tower outside the model directory is only taken from an explicit
 * --vision-tower DIR / visionTowerDir.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { Checkpoint } from '../../weights/checkpoint';
import { SafetensorsError, writeSafetensors } from '../../weights/safetensors';
import { resolveVisionTowerDir } from '../../models/videollama2/vision';
import { loadChatModel } from '../../models/registry';
import { modelFixture } from '../helpers/fixtures';

const VQ = modelFixture('videollama2_siglip_qwen2_tiny')!;
let tmp: string;
beforeEach(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vlm-rel-paths-'));
});
afterEach(() => fs.rmSync(tmp, { recursive: true, force: true }));

function sharded(shardName: string, where: string): string {
  const dir = path.join(tmp, 'model');
  fs.mkdirSync(dir, { recursive: true });
  fs.mkdirSync(path.dirname(where), { recursive: true });
  writeSafetensors(where, { w: { dtype: 'F32', shape: [2], data: [1, 2] } });
  fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { w: shardName } }));
  return dir;
}

describe('index weight_map shard names', () => {
  it.each([
    ['../outside/secret.safetensors'],
    ['sub/inner.safetensors'],
    ['/abs/secret.safetensors'],
    ['..'],
  ])('%s is refused, naming the index', (name) => {
    const dir = sharded(name, path.join(tmp, 'outside', 'secret.safetensors'));
    expect(() => Checkpoint.open(dir)).toThrow(SafetensorsError);
    expect(() => Checkpoint.open(dir)).toThrow(/model\.safetensors\.index\.json: shard name .* is not a plain file name/);
  });

  it('a symlinked shard that resolves outside the directory is refused; a plain shard loads', () => {
    const dir = sharded('model-00001.safetensors', path.join(tmp, 'outside', 'secret.safetensors'));
    fs.symlinkSync(path.join(tmp, 'outside', 'secret.safetensors'), path.join(dir, 'model-00001.safetensors'));
    expect(() => Checkpoint.open(dir)).toThrow(/resolves to .*outside the checkpoint directory/);
    fs.rmSync(path.join(dir, 'model-00001.safetensors'));
    fs.copyFileSync(path.join(tmp, 'outside', 'secret.safetensors'), path.join(dir, 'model-00001.safetensors'));
    const ck = Checkpoint.open(dir);
    expect(Array.from(ck.read('w').data)).toEqual([1, 2]);
    ck.close();
  });

  it('an HF cache snapshot whose files link into ../../blobs loads', () => {
    const repo = path.join(tmp, 'models--org--m');
    const snap = path.join(repo, 'snapshots', 'abc');
    fs.mkdirSync(snap, { recursive: true });
    fs.mkdirSync(path.join(repo, 'blobs'));
    writeSafetensors(path.join(repo, 'blobs', 'deadbeef'), { w: { dtype: 'F32', shape: [1], data: [3] } });
    fs.symlinkSync('../../blobs/deadbeef', path.join(snap, 'model-1.safetensors'));
    fs.writeFileSync(path.join(snap, 'model.safetensors.index.json'), JSON.stringify({ weight_map: { w: 'model-1.safetensors' } }));
    const ck = Checkpoint.open(snap);
    expect(Array.from(ck.read('w').data)).toEqual([3]);
    ck.close();
  });
});

describe('mm_vision_tower outside the model directory', () => {
  const tower = path.join(VQ, 'siglip-tiny-patch14-84');
  it('an absolute path or ../ is refused with a message naming --vision-tower; explicit visionTowerDir works', async () => {
    const model = path.join(tmp, 'm');
    fs.mkdirSync(model);
    fs.cpSync(tower, path.join(tmp, 'tower'), { recursive: true });
    expect(() => resolveVisionTowerDir(path.join(tmp, 'tower'), model)).toThrow(/points outside the model directory.*--vision-tower DIR \(API: \{ visionTowerDir \}\)/);
    expect(() => resolveVisionTowerDir('../tower', model)).toThrow(/points outside the model directory/);
    fs.symlinkSync(path.join(tmp, 'tower'), path.join(model, 'linked'));
    expect(() => resolveVisionTowerDir('linked', model)).toThrow(/points outside the model directory/);
    expect(resolveVisionTowerDir('anything', model, { visionTowerDir: path.join(tmp, 'tower') })).toBe(path.join(tmp, 'tower'));
  });

  it('loading a checkpoint whose config points at ../x fails unless --vision-tower is given', async () => {
    const model = path.join(tmp, 'vq');
    fs.cpSync(VQ, model, { recursive: true });
    fs.renameSync(path.join(model, 'siglip-tiny-patch14-84'), path.join(tmp, 'siglip-tiny-patch14-84'));
    const cfg = JSON.parse(fs.readFileSync(path.join(model, 'config.json'), 'utf8'));
    cfg.mm_vision_tower = '../siglip-tiny-patch14-84';
    fs.writeFileSync(path.join(model, 'config.json'), JSON.stringify(cfg));
    await expect(loadChatModel(model)).rejects.toThrow(/points outside the model directory/);
    const m = await loadChatModel(model, { visionTowerDir: path.join(tmp, 'siglip-tiny-patch14-84') });
    m.dispose();
  });
});
