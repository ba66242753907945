/**
 * Key maps: checkpoint key ↔ module parameter name, as data (mlx-vlm `sanitize`, HF
 * `_checkpoint_conversion_mapping`). Module trees mirror checkpoint paths, so a map is mostly
 * prefix renames plus the checkpoint keys we deliberately drop (buffers, unused heads). Layout
 * transforms live on the parameters themselves (module.ts `ParamLayout`) and are undone on export.
 */

export interface KeyMap {
  /** Ordered [checkpoint prefix, module prefix] pairs; the first matching pair wins in each direction. */
  renames: [string, string][];
  /** Checkpoint keys that are read by nobody (e.g. SigLIP's pooling head); matched by regex. */
  ignore: RegExp[];
  /** What the map is for, for messages. */
  name: string;
}


/** Checkpoint key → module key, or null when the key is ignored. Unmatched keys map to themselves. */
export function toModuleKey(map: KeyMap, ckptKey: string): string | null {
  if (map.ignore.some((r) => r.test(ckptKey))) return null;
  for (const [c, m] of map.renames) if (ckptKey.startsWith(c)) return m + ckptKey.slice(c.length);
  return ckptKey;
}

/** Module key → checkpoint key (the inverse of `toModuleKey` for every key the model has). */
export function toCheckpointKey(map: KeyMap, moduleKey: string): string {
  for (const [c, m] of map.renames) if (moduleKey.startsWith(m)) return c + moduleKey.slice(m.length);
  return moduleKey;
}
