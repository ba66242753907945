/**
 * Checkpoint → one GGUF file (`vlm convert`, scripts/convert.ts), with no model knowledge: the
 * caller gives the unloaded module tree and the weight sources its load would read.
 *
 * What is converted follows the load's rule exactly (native_plan.ts `nativeTarget`): a parameter
 * that the planner would hold natively in `choice` is written in that type, converted with the
 * native addon's `quantize` (the same routine the load uses, so the bytes are identical); every
 * other tensor (norms, biases, position embeddings, conv kernels, ignored keys, a q-type matrix
 * whose row length is not a multiple of 32) is copied as stored.
 *
 * Streamed: the header is computed first from shapes and types, then each tensor is read from the
 * checkpoint in row chunks (≤ `chunkBytes` of source bytes), converted, written and freed. Every
 * target type converts each row independently (q8_0/q4_0 blocks lie within a row), so chunking
 * by rows gives the same bytes as converting the whole matrix, and memory stays bounded by a few
 * chunks whatever the checkpoint size (no mapping of the whole file, whose resident pages would
 * count against the process).
 *
 * Tensors keep their Hugging Face names. Tensors of a second source (VideoLLaMA 2's tower
 * checkpoint, when the model checkpoint lacks the tower) are renamed to the first source's names
 * (`model.vision_tower.…`), so the converted file holds every weight the model needs.
 */
import fs from 'node:fs';
import { Module, Param } from '../layers/module';
import { NativeType, NativeWeight } from '../layers/native_weight';
import { Checkpoint } from './checkpoint';
import { GGML_OF_DTYPE, GgmlTypeName, GgufValue, GgufWriter, ggmlTensorBytes } from './gguf';
import { WeightSource } from './load';
import { toCheckpointKey, toModuleKey } from './keymap';
import { QuantizeChoice, matrixShape, nativeTarget, underAnyPrefix } from './native_plan';
import { TensorEntry } from './safetensors';

export interface ConvertItem {
  /** Name in the GGUF file. */
  name: string;
  checkpoint: Checkpoint;
  key: string;
  entry: TensorEntry;
  /** GGML type written. */
  type: GgmlTypeName;
  /** Converted with the native addon (else copied as stored). */
  convert: boolean;
  /** The module parameter it loads into (null: ignored by the load). */
  moduleKey: string | null;
}

export class ConvertError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConvertError';
  }
}

const GGML_OF_NATIVE: Record<NativeType, GgmlTypeName> = { f32: 'F32', f16: 'F16', bf16: 'BF16', q8_0: 'Q8_0', q4_0: 'Q4_0' };

/**
 * What each checkpoint tensor becomes under `choice`, checked as strictly as the load checks
 * (every parameter present once with its shape). Tensors the load ignores are kept as stored
 * (those of a second source are dropped, as are ignored tensors of a type GGUF cannot hold).
 */
export function planConversion(module: Module, sources: WeightSource[], choice: QuantizeChoice, mmproj: readonly string[] = []): { items: ConvertItem[]; dropped: string[] } {
  const expected = new Map<string, Param>();
  for (const [k, p] of module.namedParams()) if (!p.tiedTo) expected.set(k, p);
  const items: ConvertItem[] = [];
  const dropped: string[] = [];
  const problems: string[] = [];
  const byName = new Map<string, ConvertItem>();
  const covered = new Set<string>();
  sources.forEach((source, si) => {
    const ck = source.checkpoint;
    for (const key of ck.keys()) {
      const mk = toModuleKey(source.keymap, key);
      if (mk !== null && source.only && !source.only.some((p) => mk.startsWith(p))) continue;
      const entry = ck.entry(key);
      const stored = GGML_OF_DTYPE[entry.dtype];
      if (mk === null && (si > 0 || !stored)) {
        dropped.push(`${key} (${ck.shardOf(key)})`);
        continue;
      }
      if (!stored) {
        problems.push(`  '${key}' in ${ck.shardOf(key)}: dtype ${entry.dtype} cannot be stored in GGUF`);
        continue;
      }
      const param = mk !== null ? expected.get(mk) : undefined;
      if (mk !== null && !param) {
        problems.push(`  unexpected: '${key}' in ${ck.shardOf(key)} (no parameter '${mk}')`);
        continue;
      }
      if (param && (param.shape.length !== entry.shape.length || param.shape.some((d, i) => d !== entry.shape[i]))) {
        problems.push(`  wrong shape: '${key}' in ${ck.shardOf(key)} is [${entry.shape.join(', ')}], '${mk}' expects [${param.shape.join(', ')}]`);
        continue;
      }
      const target = param ? nativeTarget(param, entry.dtype, choice, mk !== null && underAnyPrefix(mk, mmproj)) : null;
      const type = target ? GGML_OF_NATIVE[target] : stored;
      const name = si === 0 || mk === null ? key : toCheckpointKey(sources[0].keymap, mk);
      if (byName.has(name)) {
        problems.push(`  duplicate: '${name}' comes from both ${byName.get(name)!.checkpoint.shardOf(byName.get(name)!.key)} and ${ck.shardOf(key)}`);
        continue;
      }
      const item: ConvertItem = { name, checkpoint: ck, key, entry, type, convert: type !== stored, moduleKey: mk };
      byName.set(name, item);
      items.push(item);
      if (mk !== null) covered.add(mk);
    }
  });
  for (const [k, p] of expected) if (!covered.has(k)) problems.push(`  missing: '${toCheckpointKey(sources[0].keymap, k)}' (shape [${p.shape.join(', ')}])`);
  if (problems.length) {
    const head = problems.slice(0, 40);
    if (problems.length > 40) head.push(`  ... and ${problems.length - 40} more`);
    throw new ConvertError(`cannot convert: the checkpoint does not load into the model (${problems.length} problem(s)):\n${head.join('\n')}`);
  }
  return { items, dropped };
}

export interface WriteGgufOptions {
  metadata: Record<string, GgufValue>;
  /** Source bytes read per step (default 64 MiB). */
  chunkBytes?: number;
  /** Called after each chunk: bytes of the output written so far, and the total. */
  onProgress?: (written: number, total: number, tensor: string) => void;
}

/**
 * Writes the planned tensors to `file` (created; the caller owns its removal on failure). Returns
 * the file size. Yields to the event loop after every chunk, so SIGINT/SIGTERM handlers (the temp
 * registry of io/files.ts) run promptly during a long conversion.
 */
export async function writeConvertedGguf(file: string, items: readonly ConvertItem[], opts: WriteGgufOptions): Promise<number> {
  const chunk = opts.chunkBytes ?? 64 * 2 ** 20;
  const fd = fs.openSync(file, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o666);
  try {
    const w = new GgufWriter(fd, items.map((it) => ({ name: it.name, type: it.type, shape: it.entry.shape })), opts.metadata);
    const total = w.layout.fileBytes;
    let written = w.layout.header.length;
    for (let i = 0; i < items.length; i++) {
      const it = items[i];
      const { entry } = it;
      const srcBytes = entry.end - entry.begin;
      const rows = entry.shape.length ? entry.shape[0] : 1;
      const rowBytes = rows ? srcBytes / rows : 0;
      const step = Math.max(1, Math.floor(chunk / Math.max(rowBytes, 1)));
      for (let r = 0; r < rows || (r === 0 && rows === 0); r += step) {
        const r1 = Math.min(rows, r + step);
        const src = it.checkpoint.readBytes(it.key, r * rowBytes, r1 * rowBytes);
        if (!it.convert) w.write(src);
        else {
          const [, cols] = matrixShape(entry.shape);
          const from = NativeWeight.fromBuffer(nativeOf(entry.dtype, it.name), r1 - r, cols, new Uint8Array(src.buffer, src.byteOffset, src.length));
          try {
            const to = NativeWeight.quantize(from, nativeOf(it.type, it.name));
            try {
              w.write(to.readBytes(new Uint8Array(to.bytes)));
            } finally {
              to.dispose();
            }
          } finally {
            from.dispose();
          }
        }
        await new Promise<void>((r) => setImmediate(r));
        if (rows === 0) break;
      }
      w.next();
      written = w.layout.header.length + w.layout.tensors[i].offset + w.layout.tensors[i].bytes;
      opts.onProgress?.(written, total, it.name);
    }
    w.close();
    fs.fsyncSync(fd);
    return total;
  } finally {
    fs.closeSync(fd);
  }
}

function nativeOf(t: string, name: string): NativeType {
  const n = ({ F32: 'f32', F16: 'f16', BF16: 'bf16', Q8_0: 'q8_0', Q4_0: 'q4_0' } as Record<string, NativeType>)[t];
  if (!n) throw new ConvertError(`tensor '${name}': ${t} cannot be converted natively`);
  return n;
}

/** Sizes for the report: bytes by written GGML type. */
export function bytesByType(items: readonly ConvertItem[]): Record<string, { tensors: number; bytes: number }> {
  const out: Record<string, { tensors: number; bytes: number }> = {};
  for (const it of items) {
    const e = (out[it.type] ??= { tensors: 0, bytes: 0 });
    e.tensors++;
    e.bytes += ggmlTensorBytes(it.type, it.entry.shape);
  }
  return out;
}
