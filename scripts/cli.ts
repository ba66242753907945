/**
 * The tiny command framework behind `vlm`: each subcommand is a `Command` (its own file in
 * scripts/), options are parsed with node:util parseArgs (strict: unknown flags are errors), and
 * `vlm --help` / `vlm CMD --help` are generated from the option specs.
 */
import { parseArgs } from 'node:util';

export interface OptionSpec {
  type: 'string' | 'boolean';
  /** Repeatable (`--image a --image b`). */
  multiple?: boolean;
  /** Placeholder shown in --help, e.g. 'DIR'. */
  arg?: string;
  help: string;
  default?: string | boolean;
  short?: string;
}

export interface Command {
  name: string;
  summary: string;
  /** Usage line after `vlm NAME`. */
  usage: string;
  options: Record<string, OptionSpec>;
  /** Needs a tfjs backend (initialised before `run`); false for pure host work (tokenize, preprocess). */
  usesBackend?: boolean;
  run(opts: ParsedOptions, positionals: string[]): Promise<number | void>;
}

export type ParsedOptions = Record<string, string | boolean | string[] | boolean[] | undefined>;

/** An error whose message is printed without a stack trace (bad arguments, bad input files). */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

/**
 * The exit-code scheme of every command: 0 success; 2 bad arguments or unusable input files
 * (missing, unreadable, too large, not a regular file, corrupt image/video/config/checkpoint,
 * refused output target); 1 a runtime failure (out of memory, a write that failed midway,
 * ffmpeg missing or crashing, an internal error).
 */
export function exitCodeFor(e: unknown): 1 | 2 {
  const err = e as { name?: string; code?: string } | null;
  switch (err?.name) {
    case 'UsageError':
    case 'FileInputError':
    case 'ImageLoadError':
    case 'ConfigError':
    case 'TokenizerLoadError':
    case 'ChatTemplateError':
    case 'SafetensorsError':
    case 'WeightLoadError':
      return 2;
    case 'VideoError':
      return ['ffmpeg_missing', 'ffmpeg_failed', 'timeout'].includes(String(err?.code)) ? 1 : 2;
    default:
      return 1;
  }
}

export const COMMON_OPTIONS: Record<string, OptionSpec> = {
  backend: { type: 'string', arg: 'NAME', help: 'tfjs backend: tfjs-node-gpu, tfjs-node, wasm or cpu (default: best available; env VLM_BACKEND)' },
  help: { type: 'boolean', short: 'h', help: 'show this help' },
};

/**
 * `--top-k -3`: node's parseArgs calls a value that starts with '-' ambiguous. A string option
 * followed by a negative number is joined (`--top-k=-3`) so the value reaches our validation.
 */
export function joinNegativeValues(argv: string[], options: Record<string, OptionSpec>): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--') {
      out.push(...argv.slice(i));
      break;
    }
    const name = a.startsWith('--') && !a.includes('=') ? a.slice(2) : undefined;
    const next = argv[i + 1];
    if (name !== undefined && options[name]?.type === 'string' && next !== undefined && /^-(\d|\.\d|inf|nan)/i.test(next)) {
      out.push(`${a}=${next}`);
      i++;
    } else {
      out.push(a);
    }
  }
  return out;
}

export function parseCommand(cmd: Command, argv: string[]): { opts: ParsedOptions; positionals: string[] } {
  const options = { ...COMMON_OPTIONS, ...cmd.options };
  try {
    const { values, positionals } = parseArgs({
      args: joinNegativeValues(argv, options),
      options: Object.fromEntries(Object.entries(options).map(([k, o]) => [k, { type: o.type, multiple: !!o.multiple, ...(o.short ? { short: o.short } : {}) }])),
      allowPositionals: true,
      strict: true,
    });
    for (const [k, o] of Object.entries(options)) {
      if (values[k] === undefined && o.default !== undefined) (values as ParsedOptions)[k] = o.default;
    }
    return { opts: values as ParsedOptions, positionals };
  } catch (e) {
    throw new UsageError(`vlm ${cmd.name}: ${(e as Error).message.replace(/\. To specify a positional.*$/, '')}\nRun 'vlm ${cmd.name} --help' for the options.`);
  }
}

export function commandHelp(cmd: Command): string {
  const lines = [`vlm ${cmd.name} ${cmd.usage}`, '', cmd.summary, '', 'Options:'];
  const options = { ...cmd.options, ...COMMON_OPTIONS };
  for (const [k, o] of Object.entries(options)) {
    const flag = `--${k}${o.arg ? ` ${o.arg}` : ''}${o.short ? `, -${o.short}` : ''}`;
    const def = o.default !== undefined && o.default !== false ? ` (default: ${o.default})` : '';
    lines.push(`  ${flag.padEnd(30)} ${o.help}${o.multiple ? ' (repeatable)' : ''}${def}`);
  }
  return lines.join('\n');
}

// ---------------------------------------------------------------------------------------------
// typed option accessors (each error names the flag)
// ---------------------------------------------------------------------------------------------

export function str(opts: ParsedOptions, name: string): string | undefined {
  const v = opts[name];
  if (Array.isArray(v)) return v[v.length - 1] as string;
  return v as string | undefined;
}

export function requireStr(opts: ParsedOptions, name: string): string {
  const v = str(opts, name);
  if (v === undefined || v === '') throw new UsageError(`--${name} is required`);
  return v;
}

export function strList(opts: ParsedOptions, name: string): string[] {
  const v = opts[name];
  if (v === undefined) return [];
  return (Array.isArray(v) ? v : [v]) as string[];
}

export function num(opts: ParsedOptions, name: string, check: { min?: number; max?: number; int?: boolean; exclusiveMin?: boolean } = {}): number | undefined {
  const s = str(opts, name);
  if (s === undefined) return undefined;
  const v = Number(s);
  const kind = check.int ? 'an integer' : 'a number';
  if (s.trim() === '' || !Number.isFinite(v) || (check.int && !Number.isInteger(v))) throw new UsageError(`--${name}: expected ${kind}, got '${s}'`);
  if (check.min !== undefined && (check.exclusiveMin ? v <= check.min : v < check.min)) {
    throw new UsageError(`--${name}: must be ${check.exclusiveMin ? '>' : '>='} ${check.min}, got ${v}`);
  }
  if (check.max !== undefined && v > check.max) throw new UsageError(`--${name}: must be <= ${check.max}, got ${v}`);
  return v;
}

export function flag(opts: ParsedOptions, name: string): boolean {
  return opts[name] === true;
}
