/**
 * A Hugging Face checkpoint: one `model.safetensors`, or shards listed by
 * `model.safetensors.index.json` ({"weight_map": {key: shard file}}). Shards are opened lazily and
 * read tensor by tensor.
 */
import fs from 'node:fs';
import path from 'node:path';
import { HostTensor, SafetensorsError, SafetensorsFile, TensorEntry } from './safetensors';

export class Checkpoint {
  /** Directory or file it was opened from (for messages). */
  readonly source: string;
  private readonly keyToShard = new Map<string, string>();
  private readonly shards = new Map<string, SafetensorsFile>();

  private constructor(source: string) {
    this.source = source;
  }

  /**
   * Opens a checkpoint directory (index + shards, or model.safetensors) or a single .safetensors
   * file. Every shard is validated on open; a key listed in the index but absent from its shard is
   * an error naming both.
   */
  static open(p: string): Checkpoint {
    if (!fs.existsSync(p)) throw new SafetensorsError(`${p}: no such file or directory`);
    const ck = new Checkpoint(p);
    if (fs.statSync(p).isFile()) {
      ck.addShard(p);
      return ck;
    }
    const index = path.join(p, 'model.safetensors.index.json');
    if (fs.existsSync(index)) {
      let weightMap: Record<string, string>;
      try {
        weightMap = JSON.parse(fs.readFileSync(index, 'utf8')).weight_map;
      } catch (e) {
        throw new SafetensorsError(`${index}: not valid JSON (${(e as Error).message})`);
      }
      if (!weightMap || typeof weightMap !== 'object') throw new SafetensorsError(`${index}: no "weight_map" object`);
      const files = new Set(Object.values(weightMap));
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
    throw new SafetensorsError(`${p}: no model.safetensors or model.safetensors.index.json in this directory`);
  }

  private addShard(file: string): void {
    const f = SafetensorsFile.open(file);
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
