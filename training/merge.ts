/**
 * `vlm merge` without loading the model: the base checkpoint is streamed shard by shard, tensor by
 * tensor, and written back in its own format (same shard files, index, keys, dtypes, shapes and
 * byte layout), so a 16 GB bf16 base merges in bounded memory.
 *
 *   adapted weight  W' = W + s·(B·A), s = alpha/r (alpha/√r with use_rslora), computed in float32
 *                   over row chunks (B rows × A on the backend's matmul) and rounded once to W's
 *                   dtype (bf16/f16 round to nearest even) — peft `merge_and_unload`;
 *   modules_to_save the adapter's tensor, in the base tensor's dtype;
 *   everything else the base's bytes, copied.
 *
 * The adapter is checked against the model first (its module names against the Linear layers its
 * target_modules select, shapes against the checkpoint), with errors that list a few names.
 */
import fs from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { FileInputError, discardTemp, makeTempDirNear, untrackTemp } from '../io/files';
import { AlignedWriter } from '../io/aligned_writer';
import { Module } from '../layers/module';
import { Checkpoint, copyNonWeights } from '../weights/checkpoint';
import { KeyMap } from '../weights/keymap';
import { SafetensorsFile, encodeValues } from '../weights/safetensors';
import { LoraExclude, linearSites, matchesTarget } from './lora';
import { ADAPTER_WEIGHTS, PEFT_PREFIX as PREFIX, adapterModules, checkAdapterModules, readAdapterConfig } from './peft_format';
import { checkOutDir } from './export';

/** Source bytes per streamed chunk. */
const CHUNK_BYTES = 64 << 20;

export interface MergeInputs {
  /** The base checkpoint directory (Hugging Face safetensors). */
  baseDir: string;
  adapterDir: string;
  outDir: string;
  /** The unloaded module tree of the base (for the Linear layers the adapter may target). */
  module: Module;
  keymap: KeyMap;
  /** Modules LoRA never adapts in this family (peft exclusions). */
  exclude: LoraExclude;
  metadata?: Record<string, string>;
}

interface Adapted { A: tf.Tensor2D; B: Float32Array; r: number }

const list = (xs: string[]) => `${xs.slice(0, 4).join(', ')}${xs.length > 4 ? `, … (${xs.length} in all)` : ''}`; // a few names for errors

/** Merges the adapter into the base and writes `outDir` (staged beside it, renamed when complete); returns the weights file. */
export function mergeStreaming(m: MergeInputs): string {
  const { baseDir, adapterDir, outDir } = m;
  checkOutDir(outDir, [baseDir, adapterDir]);
  const cfg = readAdapterConfig(adapterDir);
  const scale = cfg.useRslora ? cfg.alpha / Math.sqrt(cfg.r) : cfg.alpha / cfg.r;
  const adapterFile = path.join(adapterDir, ADAPTER_WEIGHTS);
  if (!fs.existsSync(adapterFile)) throw new FileInputError(`--adapter: ${adapterDir} has no ${ADAPTER_WEIGHTS}`);
  const ad = SafetensorsFile.open(adapterFile);
  const base = Checkpoint.open(baseDir);
  const adapted = new Map<string, Adapted>(); // checkpoint key of the weight → adapter
  try {
    if (base.gguf) throw new FileInputError(`--model: ${baseDir} is a converted ${path.basename(base.source)} checkpoint; merge into the original Hugging Face checkpoint (then convert)`);
    // the adapter against the model
    const keys = ad.keys();
    const modules = adapterModules(keys);
    const selected = linearSites(m.module, m.keymap, m.exclude).map((x) => x.name).filter((n) => matchesTarget(n, cfg.targetModules));
    checkAdapterModules(adapterDir, keys, selected, cfg);
    for (const name of modules) {
      const key = `${name}.weight`;
      if (!base.has(key)) throw new FileInputError(`--adapter ${adapterDir}: ${name} adapts '${key}', which ${baseDir} does not hold`);
      const [out, inn] = base.entry(key).shape;
      const a = ad.read(`${PREFIX}${name}.lora_A.weight`), b = ad.read(`${PREFIX}${name}.lora_B.weight`);
      if (a.shape.length !== 2 || b.shape.length !== 2 || a.shape[0] !== cfg.r || b.shape[1] !== cfg.r || a.shape[1] !== inn || b.shape[0] !== out) {
        throw new FileInputError(`--adapter ${adapterDir}: ${name}.lora_A is [${a.shape}] and lora_B [${b.shape}]; ` +
          `this base's ${key} [${out}, ${inn}] with r ${cfg.r} needs [${cfg.r}, ${inn}] and [${out}, ${cfg.r}] (another base model or rank?)`);
      }
      adapted.set(key, { A: tf.tensor2d(Float32Array.from(a.data as ArrayLike<number>), [cfg.r, inn]), B: Float32Array.from(b.data as ArrayLike<number>), r: cfg.r });
    }
    const saved = new Map<string, string>(); // checkpoint key → adapter key
    const bad: string[] = [];
    for (const k of keys.filter((x) => !/\.lora_[AB]\.weight$/.test(x))) {
      const ckKey = k.startsWith(PREFIX) ? k.slice(PREFIX.length) : k;
      if (!base.has(ckKey)) { bad.push(k); continue; }
      const want = base.entry(ckKey).shape, got = ad.entry(k).shape;
      if (want.length !== got.length || want.some((d, i) => d !== got[i])) throw new FileInputError(`--adapter ${adapterDir}: ${k} is [${got}], the base's ${ckKey} is [${want}]`);
      saved.set(ckKey, k);
    }
    if (bad.length) throw new FileInputError(`--adapter ${adapterDir}: tensors that name no tensor of ${baseDir}: ${list(bad)}`);

    // the merged checkpoint, shard by shard
    const tmp = makeTempDirNear(path.resolve(outDir));
    try {
      copyNonWeights(baseDir, tmp);
      const index = path.join(baseDir, 'model.safetensors.index.json');
      if (fs.existsSync(index)) fs.copyFileSync(index, path.join(tmp, 'model.safetensors.index.json'));
      const shards = [...new Set(base.keys().map((k) => base.shardOf(k)))].sort();
      for (const shard of shards) writeShard(shard, path.join(tmp, path.basename(shard)), base, ad, adapted, saved, scale, m.metadata ?? {});
      if (fs.existsSync(outDir)) fs.rmdirSync(outDir); // an empty directory (checkOutDir)
      fs.renameSync(tmp, outDir);
      untrackTemp(tmp);
    } catch (e) {
      discardTemp(tmp);
      throw e;
    }
    return path.join(outDir, fs.existsSync(path.join(outDir, 'model.safetensors')) ? 'model.safetensors' : 'model.safetensors.index.json');
  } finally {
    for (const a of adapted.values()) a.A.dispose();
    base.close();
    ad.close();
  }
}

/** One output shard with the source shard's header (plus merge metadata) and layout. */
function writeShard(src: string, dst: string, base: Checkpoint, ad: SafetensorsFile, adapted: Map<string, Adapted>,
  saved: Map<string, string>, scale: number, metadata: Record<string, string>): void {
  const f = SafetensorsFile.open(src);
  const fd = fs.openSync(dst, 'w');
  const out = new AlignedWriter(fd); // whole 2 MiB folios in the page cache: the merged weights map in huge pages
  try {
    const entries = f.keys().map((k) => f.entry(k)).sort((a, b) => a.begin - b.begin);
    const data0 = entries.length ? entries[0].begin : f.fileSize;
    const header: Record<string, unknown> = { __metadata__: { ...f.metadata, ...metadata } };
    for (const e of entries) header[e.name] = { dtype: e.dtype, shape: e.shape, data_offsets: [e.begin - data0, e.end - data0] };
    let json = Buffer.from(JSON.stringify(header), 'utf8');
    const pad = (8 - ((8 + json.length) % 8)) % 8;
    if (pad) json = Buffer.concat([json, Buffer.alloc(pad, 0x20)]);
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(json.length));
    out.write(len);
    out.write(json);
    for (const e of entries) {
      const bytes = e.end - e.begin;
      const ad1 = adapted.get(e.name);
      const sv = saved.get(e.name);
      if (sv) {
        out.write(encodeValues(e.dtype, ad.read(sv).data as Float32Array, e.name));
      } else if (ad1) {
        const rows = e.shape[0];
        const step = Math.max(1, Math.floor(CHUNK_BYTES / Math.max(1, bytes / rows)));
        for (let r0 = 0; r0 < rows; r0 += step) {
          const r1 = Math.min(rows, r0 + step);
          const w = base.readRows(e.name, r0, r1).data as Float32Array; // [r1−r0, cols]
          const delta = tf.tidy(() => tf.matMul(tf.tensor2d(ad1.B.subarray(r0 * ad1.r, r1 * ad1.r), [r1 - r0, ad1.r]), ad1.A).dataSync() as Float32Array);
          for (let i = 0; i < w.length; i++) w[i] += Math.fround(delta[i] * scale); // float32 add, rounded once below
          out.write(encodeValues(e.dtype, w, e.name));
        }
      } else {
        for (let o = 0; o < bytes; o += CHUNK_BYTES) out.write(f.readBytes(e.name, o, Math.min(bytes, o + CHUNK_BYTES)));
      }
    }
    out.end();
  } finally {
    fs.closeSync(fd);
    f.close();
  }
}
