/**
 * Reading a training data file: the JSON list of samples both upstreams load with `json.load`
 * (MiniCPM-V `finetune.py` `make_supervised_data_module`, VideoLLaMA 2 `train.py`
 * `LazySupervisedDataset`), and resolving the media files a sample names.
 *
 * Upstream opens media paths as written (MiniCPM-V: relative to the working directory) or joined
 * to `--data_folder` (VideoLLaMA 2). Here a relative path is resolved against `dataRoot`, which
 * defaults to the data file's directory; absolute paths are used as they are.
 */
import fs from 'node:fs';
import path from 'node:path';
import { readBoundedText } from '../io/files';

/** One sample as read from the file: an object; the family's dataset checks the keys. */
export type RawSample = Record<string, unknown>;

/**
 * Reads a JSON data file: a list of sample objects (a single object is taken as a list of one).
 * Errors name the file and, for a bad entry, its index.
 */
export function readDataFile(file: string): RawSample[] {
  let text: string;
  try {
    text = readBoundedText(file, 'data');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new Error(`training data file ${file}: cannot read it (${code ?? (e as Error).message})`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new Error(`training data file ${file}: invalid JSON (${(e as Error).message})`);
  }
  const list = Array.isArray(json) ? json : [json];
  if (!list.length) throw new Error(`training data file ${file}: the list of samples is empty`);
  list.forEach((s, i) => {
    if (s === null || typeof s !== 'object' || Array.isArray(s)) {
      throw new Error(`training data file ${file}: sample ${i} is ${Array.isArray(s) ? 'an array' : JSON.stringify(s)}, expected an object`);
    }
  });
  return list as RawSample[];
}

/** A short name for a sample in messages: its `id` when it has one, else its index. */
export function sampleName(s: RawSample, i: number): string {
  return typeof s.id === 'string' || typeof s.id === 'number' ? `sample ${i} (id ${JSON.stringify(s.id)})` : `sample ${i}`;
}

/** Resolves a media path of a sample against `dataRoot` and checks it is a readable file. */
export function resolveMedia(p: unknown, dataRoot: string, what: string): string {
  if (typeof p !== 'string' || !p) throw new Error(`${what}: expected a file path (string), got ${JSON.stringify(p)}`);
  const full = path.isAbsolute(p) ? p : path.join(dataRoot, p);
  let st: fs.Stats;
  try {
    st = fs.statSync(full);
  } catch {
    throw new Error(`${what}: media file '${p}' not found (looked for ${full}; relative paths are resolved against the data root ${dataRoot})`);
  }
  if (!st.isFile()) throw new Error(`${what}: '${full}' is not a file`);
  return full;
}

/** `conversations` of a sample, checked to be a non-empty list of objects. */
export function conversationsOf(s: RawSample, what: string): Record<string, unknown>[] {
  const c = s.conversations;
  if (!Array.isArray(c) || !c.length) throw new Error(`${what}: 'conversations' must be a non-empty list, got ${JSON.stringify(c)?.slice(0, 80)}`);
  c.forEach((t, k) => {
    if (t === null || typeof t !== 'object' || Array.isArray(t)) throw new Error(`${what}: conversations[${k}] must be an object, got ${JSON.stringify(t)}`);
  });
  return c as Record<string, unknown>[];
}
