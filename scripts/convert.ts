/**
 * `vlm convert --model HF_DIR --out DIR --quantize f16|bf16|q8_0|q4_0|stored [--vision-tower DIR] [--force] [--quiet]`
 *
 * Writes a self-contained model directory that `--model` loads directly: every file of HF_DIR
 * except the safetensors weights and their index (config, tokenizer, processor and generation
 * files; subdirectories such as a VideoLLaMA 2 tower directory likewise) and the weights in one
 * GGUF file, `model.gguf` (weights/gguf.ts, weights/convert.ts). The large matrices are converted
 * exactly as `--quantize` at load would convert them; the load maps them zero-copy.
 *
 * The directory is built in a temporary directory next to --out and renamed into place only when
 * complete; SIGINT/SIGTERM or an error leaves nothing behind (io/files.ts temp registry).
 */
import fs from 'node:fs';
import path from 'node:path';
import { FileInputError, makeTempDirNear, readBoundedText, trackTemp, untrackTemp, discardTemp } from '../io/files';
import { FAMILIES, rowForModelType } from '../models/families';
import { GGUF_MODEL_FILE, copyNonWeights } from '../weights/checkpoint';
import { bytesByType, planConversion, writeConvertedGguf } from '../weights/convert';
import { GGUF_FILE_TYPE, GgufValue } from '../weights/gguf';
import { QuantizeChoice } from '../weights/native_plan';
import { Command, UsageError, flag, requireStr, str } from './cli';

export const CONVERT_CHOICES = ['f16', 'bf16', 'q8_0', 'q4_0', 'stored'] as const;

function isInside(child: string, dir: string): boolean {
  const rel = path.relative(dir, child);
  return rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel));
}

function real(p: string): string {
  try {
    return fs.realpathSync(p);
  } catch {
    return path.resolve(p);
  }
}

/** A one-line progress bar on stderr (TTY only). */
function progressBar(enabled: boolean): { update(done: number, total: number, what: string): void; end(): void } {
  if (!enabled) return { update() {}, end() {} };
  let last = 0;
  return {
    update(done, total, what) {
      const now = Date.now();
      if (now - last < 100 && done < total) return;
      last = now;
      const w = 30, f = total ? Math.round((done / total) * w) : w;
      const cols = process.stderr.columns || 100;
      const line = `[${'#'.repeat(f)}${'-'.repeat(w - f)}] ${((100 * done) / (total || 1)).toFixed(0).padStart(3)}% ${(done / 1e9).toFixed(2)}/${(total / 1e9).toFixed(2)} GB ${what}`;
      process.stderr.write(`\r${line.slice(0, cols - 1).padEnd(Math.min(cols - 1, line.length))}\x1b[K`);
    },
    end() {
      process.stderr.write('\n');
    },
  };
}

export const command: Command = {
  name: 'convert',
  summary: 'Convert a Hugging Face checkpoint directory into a self-contained directory with one GGUF file (f16, bf16, q8_0, q4_0).',
  usage: '--model HF_DIR --out DIR --quantize f16|bf16|q8_0|q4_0|stored [--vision-tower DIR] [--force] [--quiet]',
  usesBackend: false,
  options: {
    model: { type: 'string', arg: 'HF_DIR', help: 'Hugging Face checkpoint directory (config.json + safetensors)' },
    out: { type: 'string', arg: 'DIR', help: 'output directory (created; must not exist or be empty unless --force)' },
    quantize: { type: 'string', arg: 'Q', help: 'type of the large matrices: f16 | bf16 | q8_0 | q4_0 | stored (as in the checkpoint); the rest is kept as stored' },
    'vision-tower': { type: 'string', arg: 'DIR', help: 'VideoLLaMA 2: local directory of the vision tower named by mm_vision_tower' },
    force: { type: 'boolean', help: 'replace an existing --out directory' },
    quiet: { type: 'boolean', help: 'no progress bar and no summary' },
  },
  async run(opts) {
    const q = requireStr(opts, 'quantize');
    if (!(CONVERT_CHOICES as readonly string[]).includes(q)) throw new UsageError(`--quantize: '${q}' is not one of ${CONVERT_CHOICES.join(', ')}`);
    await convertCheckpoint({
      model: requireStr(opts, 'model'), out: requireStr(opts, 'out'), quantize: q as QuantizeChoice,
      force: flag(opts, 'force'), quiet: flag(opts, 'quiet'), visionTowerDir: str(opts, 'vision-tower'),
    });
    return 0;
  },
};

export interface ConvertOptions {
  /** Hugging Face checkpoint directory. */
  model: string;
  out: string;
  quantize: QuantizeChoice;
  visionTowerDir?: string;
  /** Replace an existing `out`. */
  force?: boolean;
  /** No progress bar and no summary on stdout. */
  quiet?: boolean;
}

/** `vlm convert` as a function (also `vlm merge --quantize`). */
export async function convertCheckpoint(o: ConvertOptions): Promise<void> {
  const { model, out, force = false, quiet = false } = o;
  const choice = o.quantize;
  const tower = o.visionTowerDir;
  // Inputs.
  if (!fs.existsSync(model) || !fs.statSync(model).isDirectory()) throw new FileInputError(`--model: ${model} is not a directory`);
  const cfgFile = path.join(model, 'config.json');
  if (!fs.existsSync(cfgFile)) throw new FileInputError(`--model: ${model} has no config.json (expected a Hugging Face checkpoint directory)`);
  const configText = readBoundedText(cfgFile, 'config', '--model');
  let cfg: Record<string, unknown>;
  try {
    cfg = JSON.parse(configText);
  } catch (e) {
    throw new FileInputError(`${cfgFile}: not valid JSON (${(e as Error).message})`);
  }
  const row = rowForModelType(cfg.model_type);
  if (!row) throw new FileInputError(`${cfgFile}: model_type ${JSON.stringify(cfg.model_type)} is not supported (supported: ${FAMILIES.flatMap((f) => f.modelTypes).join(', ')})`);
  if (fs.existsSync(path.join(model, GGUF_MODEL_FILE)) && !fs.existsSync(path.join(model, 'model.safetensors')) && !fs.existsSync(path.join(model, 'model.safetensors.index.json'))) {
    throw new FileInputError(`--model: ${model} is already converted (${GGUF_MODEL_FILE}); convert the original Hugging Face checkpoint instead`);
  }

  // The output: never the input, inside it or around it; an existing non-empty directory only with --force.
  const outAbs = path.resolve(out);
  for (const inp of [model, ...(tower ? [tower] : [])]) {
    if (isInside(real(outAbs), real(inp)) || isInside(outAbs, path.resolve(inp))) {
      throw new FileInputError(`--out: ${out} is or lies inside the input directory ${inp}; choose a path outside it`);
    }
    if (isInside(real(inp), real(outAbs)) || isInside(path.resolve(inp), outAbs)) {
      throw new FileInputError(`--out: ${out} contains the input directory ${inp}; refusing to replace it`);
    }
  }
  let exists = false;
  try {
    const st = fs.lstatSync(outAbs);
    exists = true;
    if (!force && (!st.isDirectory() || fs.readdirSync(outAbs).length > 0)) {
      throw new FileInputError(`--out: ${out} already exists${st.isDirectory() ? ' and is not empty' : ' and is not a directory'}; pass --force to replace it`);
    }
  } catch (e) {
    if (e instanceof FileInputError) throw e;
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw new FileInputError(`--out: ${out}: cannot access (${(e as NodeJS.ErrnoException).code})`);
  }
  const parent = path.dirname(outAbs);
  if (!fs.existsSync(parent) || !fs.statSync(parent).isDirectory()) throw new FileInputError(`--out: directory ${parent} does not exist`);
  try {
    fs.accessSync(parent, fs.constants.W_OK | fs.constants.X_OK);
  } catch {
    throw new FileInputError(`--out: directory ${parent} is not writable`);
  }

  // The model tree and its weight sources, checked as the load checks them.
  const notes: string[] = [];
  const fw = row.weights(model, { visionTowerDir: tower, log: (m) => notes.push(m) });
  const t0 = Date.now();
  const tmp = makeTempDirNear(outAbs);
  try {
    const { items, dropped } = planConversion(fw.module, fw.sources, choice, fw.mmproj);
    const copied = copyNonWeights(model, tmp);
    const quantized = items.some((it) => it.type === 'Q8_0' || it.type === 'Q4_0');
    // general.file_type: the --quantize type; for 'stored', the type holding the most bytes
    const byType = Object.entries(bytesByType(items)).sort((a, b) => b[1].bytes - a[1].bytes);
    const fileType = choice === 'stored' ? GGUF_FILE_TYPE[(byType[0]?.[0] ?? 'F32').toLowerCase()] ?? 0 : GGUF_FILE_TYPE[choice];
    const metadata: Record<string, GgufValue> = {
      'general.architecture': { type: 'string', value: fw.modelType },
      'general.name': { type: 'string', value: typeof cfg._name_or_path === 'string' && cfg._name_or_path ? cfg._name_or_path : path.basename(path.resolve(model)) },
      'general.file_type': { type: 'uint32', value: fileType },
      ...(quantized ? { 'general.quantization_version': { type: 'uint32', value: 2 } as GgufValue } : {}),
      'tfjs_vlm.quantize': { type: 'string', value: choice },
      'tfjs_vlm.config_json': { type: 'string', value: configText },
    };
    const bar = progressBar(!quiet && process.stderr.isTTY === true);
    const size = await writeConvertedGguf(path.join(tmp, GGUF_MODEL_FILE), items, { metadata, onProgress: (d, t, n) => bar.update(d, t, n) });
    bar.end();
    // Into place: an existing --out (allowed above) is moved aside first, then removed.
    let old: string | null = null;
    if (exists) {
      old = `${tmp}.old`;
      trackTemp(old);
      fs.renameSync(outAbs, old);
    }
    try {
      fs.renameSync(tmp, outAbs);
    } catch (e) {
      if (old) fs.renameSync(old, outAbs);
      throw e;
    }
    untrackTemp(tmp);
    if (old) discardTemp(old);
    if (!quiet) {
      const s = (Date.now() - t0) / 1000;
      const types = Object.entries(bytesByType(items)).map(([k, v]) => `${v.tensors} ${k} (${(v.bytes / 1e6).toFixed(1)} MB)`).join(', ');
      process.stdout.write(`wrote ${out}: ${GGUF_MODEL_FILE} ${(size / 1e6).toFixed(1)} MB, ${items.length} tensors: ${types}; ` +
        `${copied.length} other files copied${dropped.length ? `; ${dropped.length} ignored tensor(s) dropped` : ''} in ${s.toFixed(1)} s\n`);
      for (const n of notes) process.stdout.write(`note: ${n}\n`);
    }
  } catch (e) {
    discardTemp(tmp);
    throw e;
  } finally {
    for (const s of fw.sources) s.checkpoint.close();
    fw.module.dispose();
  }
}
