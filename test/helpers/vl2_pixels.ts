/**
 * `video.pixel_values` of the VideoLLaMA 2 fixtures. The bundled goldens leave the 1.35 MB tensor
 * out: it is recomputed from the bundled `input_video.mp4` (ffmpeg decode + the tower processor,
 * both exact against upstream: test/media, test/videollama2/image_processing) and checked against
 * the sha256 of upstream's float32 bytes recorded in the fixture's golden.json.
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { loadVideoLlama2Frames } from '../../models/videollama2/frames';
import { loadTowerImageProcessor, processFrames } from '../../models/clip/image_processing';
import { Golden } from './golden';

const cache = new Map<string, { data: Float32Array; shape: number[] }>();

export function sha256F32(x: Float32Array): string {
  return crypto.createHash('sha256').update(Buffer.from(x.buffer, x.byteOffset, x.byteLength)).digest('hex');
}

/** Loads (or recomputes and verifies) `<modal>.pixel_values` as a tensor. */
export async function goldenPixels(g: Golden, dir: string, modal: 'image' | 'video'): Promise<tf.Tensor> {
  const name = `${modal}.pixel_values`;
  if (g.has(name)) return g.tensor(name);
  let host = cache.get(dir + name);
  if (!host) {
    const meta = JSON.parse(fs.readFileSync(path.join(dir, 'golden.json'), 'utf8'));
    const cfg = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'));
    const want: string | undefined = meta[modal]?.pixel_values_sha256;
    if (!want) throw new Error(`${dir}: golden has no ${name} and golden.json no ${modal}.pixel_values_sha256`);
    const v = await loadVideoLlama2Frames(path.join(dir, meta[modal].file), { numFrames: cfg.num_frames });
    const b = processFrames(v.frames, loadTowerImageProcessor(path.join(dir, cfg.mm_vision_tower), undefined, () => undefined), null);
    const got = sha256F32(b.data);
    if (got !== want) throw new Error(`${dir}: ${name} recomputed from ${meta[modal].file} has sha256 ${got}, upstream's is ${want}`);
    host = { data: b.data, shape: b.shape };
    cache.set(dir + name, host);
  }
  return tf.tensor(host.data, host.shape);
}
