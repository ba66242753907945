/**
 * Writing a fine-tuned model as a Hugging Face checkpoint directory that `fromPretrained` (and
 * upstream) loads: the source directory's checkpoint files other than weights (config, tokenizer,
 * processor and generation configs, remote code, docs — not media or other stray files; a vision
 * tower directory that lives inside it) are copied, and
 * `model.safetensors` holds exactly the source checkpoint's keys:
 *   - every key the key map sends to a parameter: the parameter's current value, read back in the
 *     checkpoint layout (`readParam` undoes transposes, conv layouts and row chunks), as F32;
 *   - every key the model ignores (buffers such as `resampler.pos_embed`, unused tower layers): the
 *     source tensor, unchanged (same dtype).
 * The directory is assembled under a temporary name next to `outDir` and renamed into place at the
 * end, so a failed export leaves nothing half-written; an existing non-empty `outDir` is refused.
 */
import fs from 'node:fs';
import path from 'node:path';
import { FileInputError, makeTempDirNear, untrackTemp } from '../io/files';
import { Module, Param } from '../layers/module';
import { Checkpoint } from '../weights/checkpoint';
import { KeyMap, toModuleKey } from '../weights/keymap';
import { readParam } from '../weights/load';
import { SafetensorsDtype, WriteTensor, writeSafetensors } from '../weights/safetensors';

/** Files of a checkpoint directory that hold weights (not copied: rewritten). */
const WEIGHT_FILE = /(\.safetensors|\.safetensors\.index\.json|\.bin|\.bin\.index\.json|\.pt|\.pth|\.ckpt|\.gguf)$/;
/** Files that belong to a checkpoint directory besides the weights (configs, tokenizer, remote code, docs). */
const CHECKPOINT_FILE = /(\.(json|txt|model|py|md|jinja|tiktoken|vocab)|^(LICENSE|NOTICE|README)[^/]*)$/;
const copied = (f: string) => CHECKPOINT_FILE.test(f) && !WEIGHT_FILE.test(f);

export interface ExportOptions {
  /** Metadata stored in the safetensors header (`format: pt` is always set). */
  metadata?: Record<string, string>;
  /** Extra files to write into the directory: name → content. */
  extraFiles?: Record<string, string>;
  /** Subdirectories of `sourceDir` to copy whole (e.g. a VideoLLaMA 2 vision tower). */
  copyDirs?: string[];
  /** A tokenizer directory used instead of the source's: its files replace the source's copies. */
  tokenizerDir?: string;
  /** A staging directory made by `prepareExportDir` (default: made here). */
  stagingDir?: string;
}

/**
 * Checks that `outDir` can receive an export (absent, or an empty directory) and is not inside
 * one of `inputDirs` (the model, tokenizer or data directories).
 */
export function checkOutDir(outDir: string, inputDirs: string[] = [], opts: { allowCheckpoints?: boolean } = {}): void {
  const real = (p: string) => {
    try {
      return fs.realpathSync(p);
    } catch {
      return path.resolve(p);
    }
  };
  for (const d of inputDirs) {
    const rel = path.relative(real(d), real(outDir));
    if (rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel))) {
      throw new FileInputError(`--out: ${outDir} lies inside the input directory ${d}; choose a directory outside it`);
    }
  }
  if (!fs.existsSync(outDir)) return;
  if (!fs.statSync(outDir).isDirectory()) throw new FileInputError(`--out: ${outDir} exists and is not a directory`);
  if (fs.readdirSync(outDir).some((f) => !(opts.allowCheckpoints && /^checkpoint-\d+$/.test(f)))) throw new FileInputError(`--out: ${outDir} is not empty; choose a new directory (nothing is overwritten)`);
}

/**
 * Checks `outDir` and creates the staging directory the export is assembled in (next to it,
 * `.<name>.partial-XXXXXX`, tracked: removed on error, SIGINT/SIGTERM and exit). Called before
 * training, so an unusable `--out` fails first, naming the flag. Parents are created.
 */
export function prepareExportDir(outDir: string, inputDirs: string[] = [], opts: { allowCheckpoints?: boolean } = {}): string {
  checkOutDir(outDir, inputDirs, opts);
  const parent = path.dirname(path.resolve(outDir));
  try {
    fs.mkdirSync(parent, { recursive: true });
    return makeTempDirNear(outDir);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? (e as Error).message;
    throw new FileInputError(`--out: cannot create ${outDir}: directory ${parent} is not writable or cannot be created (${code})`);
  }
}

/** The tensors of `model.safetensors` for `model` in the layout and keys of `source`. */
export function checkpointTensors(model: Module, keymap: KeyMap, source: Checkpoint): Record<string, WriteTensor> {
  const params = new Map<string, Param>();
  for (const [name, p] of model.namedParams()) params.set(name, p);
  const out: Record<string, WriteTensor> = {};
  for (const key of source.keys()) {
    const mk = toModuleKey(keymap, key);
    const p = mk === null ? undefined : params.get(mk);
    if (p && p.loaded) {
      const { data, shape } = readParam(p);
      out[key] = { dtype: 'F32', shape, data };
      continue;
    }
    // not a parameter (ignored buffer, unbuilt layer): the source tensor as it was
    const e = source.entry(key);
    const t = source.read(key);
    out[key] = { dtype: e.dtype as SafetensorsDtype, shape: t.shape, data: t.data as ArrayLike<number> };
  }
  return out;
}

/**
 * Writes `model` to `outDir` as a checkpoint directory shaped like `sourceDir` (see the header).
 * Returns the path of the weights file.
 */
export function exportCheckpoint(model: Module, keymap: KeyMap, sourceDir: string, outDir: string, opts: ExportOptions = {}): string {
  const tmp = opts.stagingDir ?? prepareExportDir(outDir, [], { allowCheckpoints: true });
  try {
    checkOutDir(outDir, [], { allowCheckpoints: true });
    for (const f of fs.readdirSync(sourceDir)) {
      const src = path.join(sourceDir, f);
      if (fs.statSync(src).isFile() && copied(f)) fs.copyFileSync(src, path.join(tmp, f));
    }
    if (opts.tokenizerDir) {
      for (const f of fs.readdirSync(opts.tokenizerDir)) {
        const src = path.join(opts.tokenizerDir, f);
        if (fs.statSync(src).isFile() && copied(f)) fs.copyFileSync(src, path.join(tmp, f));
      }
    }
    for (const d of opts.copyDirs ?? []) fs.cpSync(path.join(sourceDir, d), path.join(tmp, d), { recursive: true });
    for (const [name, text] of Object.entries(opts.extraFiles ?? {})) fs.writeFileSync(path.join(tmp, name), text);
    const source = Checkpoint.open(sourceDir);
    let tensors: Record<string, WriteTensor>;
    try {
      tensors = checkpointTensors(model, keymap, source);
    } finally {
      source.close();
    }
    writeSafetensors(path.join(tmp, 'model.safetensors'), tensors, { format: 'pt', ...opts.metadata });
    if (fs.existsSync(outDir) && fs.readdirSync(outDir).length) {
      // only checkpoint-N directories there (checked above): the files go beside them
      for (const f of fs.readdirSync(tmp)) fs.renameSync(path.join(tmp, f), path.join(outDir, f));
      fs.rmdirSync(tmp);
    } else {
      if (fs.existsSync(outDir)) {
        // an existing empty directory: keep its permissions (the staging one has the umask's)
        fs.chmodSync(tmp, fs.statSync(outDir).mode & 0o7777);
        fs.rmdirSync(outDir);
      }
      fs.renameSync(tmp, outDir);
    }
    untrackTemp(tmp);
  } catch (e) {
    fs.rmSync(tmp, { recursive: true, force: true });
    untrackTemp(tmp);
    throw e;
  }
  return path.join(outDir, 'model.safetensors');
}
