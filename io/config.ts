/**
 * Typed reading of config.json-style objects. Every accessor names the file and the key in its
 * error ("config.json: 'hidden_size' must be a positive integer, got "abc""); unknown keys are
 * collected so loaders can log them instead of dropping them silently. The caller's object is
 * never mutated.
 */
import { readBoundedText } from '../io/files';

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

/** Reads and parses a JSON file, with errors naming it. */
export function readJson(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = readBoundedText(file, 'config');
  } catch (e) {
    throw new ConfigError(`${file}: cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  let j: unknown;
  try {
    j = JSON.parse(text);
  } catch (e) {
    throw new ConfigError(`${file}: not valid JSON (${(e as Error).message})`);
  }
  if (typeof j !== 'object' || j === null || Array.isArray(j)) throw new ConfigError(`${file}: expected a JSON object`);
  return j as Record<string, unknown>;
}

/** Accessors over one config object; `file` (and `prefix` for nested objects) appear in errors. */
export class ConfigReader {
  private readonly used = new Set<string>();
  constructor(readonly obj: Record<string, unknown>, readonly file: string, readonly prefix = '') {}

  private where(key: string): string {
    return `${this.file}: '${this.prefix}${key}'`;
  }

  has(key: string): boolean {
    return this.obj[key] !== undefined && this.obj[key] !== null;
  }

  private get(key: string): unknown {
    this.used.add(key);
    return this.obj[key];
  }

  int(key: string, def?: number, check: { min?: number } = { min: 1 }): number {
    const v = this.get(key);
    if (v === undefined || v === null) {
      if (def === undefined) throw new ConfigError(`${this.where(key)} is missing (an integer is required)`);
      return def;
    }
    if (typeof v !== 'number' || !Number.isInteger(v) || (check.min !== undefined && v < check.min)) {
      throw new ConfigError(`${this.where(key)} must be an integer${check.min !== undefined ? ` >= ${check.min}` : ''}, got ${JSON.stringify(v)}`);
    }
    return v;
  }

  num(key: string, def?: number, check: { positive?: boolean } = {}): number {
    const v = this.get(key);
    if (v === undefined || v === null) {
      if (def === undefined) throw new ConfigError(`${this.where(key)} is missing (a number is required)`);
      return def;
    }
    if (typeof v !== 'number' || !Number.isFinite(v) || (check.positive && v <= 0)) {
      throw new ConfigError(`${this.where(key)} must be a ${check.positive ? 'positive ' : ''}number, got ${JSON.stringify(v)}`);
    }
    return v;
  }

  bool(key: string, def?: boolean): boolean {
    const v = this.get(key);
    if (v === undefined || v === null) {
      if (def === undefined) throw new ConfigError(`${this.where(key)} is missing (true/false is required)`);
      return def;
    }
    if (typeof v !== 'boolean') throw new ConfigError(`${this.where(key)} must be true or false, got ${JSON.stringify(v)}`);
    return v;
  }

  str(key: string, def?: string): string {
    const v = this.get(key);
    if (v === undefined || v === null) {
      if (def === undefined) throw new ConfigError(`${this.where(key)} is missing (a string is required)`);
      return def;
    }
    if (typeof v !== 'string') throw new ConfigError(`${this.where(key)} must be a string, got ${JSON.stringify(v)}`);
    return v;
  }

  /** A value from a fixed set. */
  oneOf<T extends string>(key: string, values: readonly T[], def?: T): T {
    const v = this.str(key, def);
    if (!values.includes(v as T)) throw new ConfigError(`${this.where(key)} must be one of ${values.join(', ')}, got ${JSON.stringify(v)}`);
    return v as T;
  }

  /** Integer or null (e.g. `sliding_window`). */
  intOrNull(key: string, def: number | null): number | null {
    const v = this.get(key);
    if (v === undefined) return def;
    if (v === null) return null;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) {
      throw new ConfigError(`${this.where(key)} must be a positive integer or null, got ${JSON.stringify(v)}`);
    }
    return v;
  }

  /** Nested object (e.g. `vision_config`); `{}` when absent and optional. */
  sub(key: string, optional = false): ConfigReader {
    const v = this.get(key);
    if (v === undefined || v === null) {
      if (optional) return new ConfigReader({}, this.file, `${this.prefix}${key}.`);
      throw new ConfigError(`${this.where(key)} is missing (an object is required)`);
    }
    if (typeof v !== 'object' || Array.isArray(v)) throw new ConfigError(`${this.where(key)} must be an object, got ${JSON.stringify(v)}`);
    return new ConfigReader(v as Record<string, unknown>, this.file, `${this.prefix}${key}.`);
  }

  /** Marks keys as known without reading them (metadata like `architectures`). */
  known(...keys: string[]): void {
    for (const k of keys) this.used.add(k);
  }

  /** Keys present but never read (for a log line). */
  unusedKeys(): string[] {
    return Object.keys(this.obj).filter((k) => !this.used.has(k)).map((k) => this.prefix + k);
  }
}
