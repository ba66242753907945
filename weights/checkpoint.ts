/**
 * A Hugging Face checkpoint: one `model.safetensors`, or shards listed by
 * `model.safetensors.index.json` ({"weight_map": {key: shard file}}), or a `model.gguf` written by
 * `vlm convert` (weights/gguf.ts; the same Hugging Face tensor names, possibly q8_0/q4_0). Shards
 * are read tensor by tensor.
 */
import fs from 'node:fs';
import path from 'node:path';
import { readBoundedText } from '../io/files';
import { GgufFile } from './gguf';
import { HostTensor, SafetensorsError, SafetensorsFile, TensorEntry } from './safetensors';

/** What a checkpoint reads a shard through (a safetensors or a GGUF file). */
interface Shard {
  keys(): string[];
  has(key: string): boolean;
  entry(key: string): TensorEntry;
  readBytes(key: string, from?: number, to?: number): Buffer;
  read(key: string): HostTensor;
  readRows(key: string, start: number, end: number): HostTensor;
  close(): void;
}

/** The GGUF file name of a converted model directory. */
export const GGUF_MODEL_FILE = 'model.gguf';

/**
 * A shard named by an index must be a plain file name inside the checkpoint directory: no path
 * separator, no `.`/`..`, and no symlink resolving outside the directory (except into the
 * `blobs/` of a Hugging Face cache entry, where snapshot files are symlinks by design).
 */
function checkShardName(index: string, dir: string, f: unknown): void {
  if (typeof f !== 'string' || f === '' || f === '.' || f === '..' || /[\\/\0]/.test(f)) {
    throw new SafetensorsError(`${index}: shard name ${JSON.stringify(f)} is not a plain file name inside the checkpoint directory; refusing to load it`);
  }
  const full = path.join(dir, f);
  if (!fs.existsSync(full)) return; // reported by the caller
  const realDir = fs.realpathSync(dir);
  const roots = [realDir];
  if (path.basename(path.dirname(realDir)) === 'snapshots') roots.push(path.resolve(realDir, '..', '..', 'blobs'));
  const real = fs.realpathSync(full);
  if (!roots.some((r) => {
    const rel = path.relative(r, real);
    return rel !== '' && !rel.startsWith('..') && !path.isAbsolute(rel);
  })) {
    throw new SafetensorsError(`${index}: shard '${f}' resolves to ${real}, outside the checkpoint directory; refusing to load it`);
  }
}

export class Checkpoint {
  /** Directory or file it was opened from (for messages). */
  readonly source: string;
  private readonly keyToShard = new Map<string, string>();
  private readonly shards = new Map<string, Shard>();
  /** The GGUF file when the checkpoint is a converted `model.gguf` (null for safetensors). */
  gguf: GgufFile | null = null;

  private constructor(source: string) {
    this.source = source;
  }

  /**
   * Opens a checkpoint directory (index + shards, or model.safetensors) or a single .safetensors
   * file. Every shard is validated on open; a key listed in the index but absent from its shard is
   * an error naming both. A directory with neither but a `model.gguf` (or a `.gguf` file) opens
   * that GGUF file.
   */
  static open(p: string): Checkpoint {
    if (!fs.existsSync(p)) throw new SafetensorsError(`${p}: no such file or directory`);
    const ck = new Checkpoint(p);
    if (fs.statSync(p).isFile()) {
      if (p.endsWith('.gguf')) ck.addGguf(p);
      else ck.addShard(p);
      return ck;
    }
    const index = path.join(p, 'model.safetensors.index.json');
    if (fs.existsSync(index)) {
      let weightMap: Record<string, string>;
      try {
        weightMap = JSON.parse(readBoundedText(index, 'config')).weight_map;
      } catch (e) {
        throw new SafetensorsError(`${index}: not valid JSON (${(e as Error).message})`);
      }
      if (!weightMap || typeof weightMap !== 'object') throw new SafetensorsError(`${index}: no "weight_map" object`);
      const files = new Set(Object.values(weightMap));
      for (const f of files) checkShardName(index, p, f);
      for (const f of files) {
        const full = path.join(p, f);
        if (!fs.existsSync(full)) throw new SafetensorsError(`${index}: shard '${f}' is listed but ${full} does not exist`);
        ck.addShard(full);
      }
      for (const [key, f] of Object.entries(weightMap)) {
        const full = path.join(p, f);
        if (!ck.shards.get(full)!.has(key)) {
          throw new SafetensorsError(`${index}: tensor '${key}' is mapped to ${f}, which does not contain it`);
        }
        ck.keyToShard.set(key, full);
      }
      return ck;
    }
    const single = path.join(p, 'model.safetensors');
    if (fs.existsSync(single)) {
      ck.addShard(single);
      return ck;
    }
    const gguf = path.join(p, GGUF_MODEL_FILE);
    if (fs.existsSync(gguf)) {
      ck.addGguf(gguf);
      return ck;
    }
    throw new SafetensorsError(`${p}: no model.safetensors or model.safetensors.index.json (or a converted ${GGUF_MODEL_FILE}) in this directory`);
  }

  private addGguf(file: string): void {
    this.gguf = GgufFile.open(file);
    this.addShard(file, this.gguf);
  }

  private addShard(file: string, shard?: Shard): void {
    const f = shard ?? SafetensorsFile.open(file);
    this.shards.set(file, f);
    for (const k of f.keys()) {
      const prev = this.keyToShard.get(k);
      if (prev && prev !== file) throw new SafetensorsError(`tensor '${k}' is in both ${prev} and ${file}`);
      this.keyToShard.set(k, file);
    }
  }

  keys(): string[] {
    return [...this.keyToShard.keys()];
  }

  has(key: string): boolean {
    return this.keyToShard.has(key);
  }

  /** Shard file holding `key`. */
  shardOf(key: string): string {
    const s = this.keyToShard.get(key);
    if (!s) throw new SafetensorsError(`${this.source}: no tensor named '${key}'`);
    return s;
  }

  entry(key: string): TensorEntry {
    return this.shards.get(this.shardOf(key))!.entry(key);
  }

  /** Raw bytes [from, to) of one tensor, as stored. */
  readBytes(key: string, from?: number, to?: number): Buffer {
    return this.shards.get(this.shardOf(key))!.readBytes(key, from, to);
  }

  read(key: string): HostTensor {
    return this.shards.get(this.shardOf(key))!.read(key);
  }

  readRows(key: string, start: number, end: number): HostTensor {
    return this.shards.get(this.shardOf(key))!.readRows(key, start, end);
  }

  close(): void {
    for (const f of this.shards.values()) f.close();
    this.shards.clear();
  }
}

/** Copies HF_DIR minus weights (recursively, following symlinks as HF cache snapshots use them). */
export function copyNonWeights(src: string, dst: string): string[] {
  const copied: string[] = [];
  const walk = (from: string, to: string, rel: string) => {
    for (const name of fs.readdirSync(from).sort()) {
      if (name.endsWith('.safetensors') || name === 'model.safetensors.index.json' || name === GGUF_MODEL_FILE) continue;
      const s = path.join(from, name);
      const st = fs.statSync(s);
      if (st.isDirectory()) {
        fs.mkdirSync(path.join(to, name));
        walk(s, path.join(to, name), path.join(rel, name));
      } else if (st.isFile()) {
        fs.copyFileSync(s, path.join(to, name));
        copied.push(path.join(rel, name));
      }
    }
  };
  walk(src, dst, '');
  return copied;
}
