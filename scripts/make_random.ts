/**
 * `vlm make-random`: a checkpoint with random weights and the released configs, tensor names,
 * shapes, shard layout and tokenizer of a model (no real weights can be downloaded here; tests and
 * benchmarks at real size use these).
 *
 *   vlm make-random --family minicpmv|videollama2|videollama2.1 --out DIR [--llm-layers N]
 *       [--vision-layers M] [--dtype bf16|f16|f32] [--seed S] [--shard-gb G] [--force] [--dry-run]
 *
 * The tensor list comes from the family's module tree (models/<family>/random_checkpoint.ts);
 * weights/random_checkpoint.ts writes it streaming. --dry-run lists the shards and their sizes
 * without writing anything. Progress goes to stderr; stdout gets the shard listing and one
 * summary line.
 */
import { Command, ParsedOptions, UsageError, flag, num, requireStr, str } from './cli';
import { FAMILIES, rowForRandomVariant } from '../models/families';
import { RANDOM_DTYPES, RandomDtype, checkRandomOutput, describePlan, planRandomCheckpoint, writeRandomCheckpoint } from '../weights/random_checkpoint';

const VARIANTS = FAMILIES.flatMap((f) => f.randomVariants);

export const command: Command = {
  name: 'make-random',
  usesBackend: false,
  summary: 'Write a random-weight checkpoint with the released configs, names, shapes and shards of a model',
  usage: `--family ${VARIANTS.join('|')} --out DIR [--llm-layers N] [--vision-layers M] [--dtype bf16|f16|f32] [--seed S] [--shard-gb G] [--force] [--dry-run]`,
  options: {
    family: { type: 'string', arg: 'NAME', help: `released model: ${VARIANTS.join(', ')}` },
    out: { type: 'string', arg: 'DIR', help: 'output directory (written to a temporary directory beside it, then renamed)' },
    'llm-layers': { type: 'string', arg: 'N', help: 'LLM layers (default: the released number)' },
    'vision-layers': { type: 'string', arg: 'M', help: 'vision tower layers (default: the released number)' },
    dtype: { type: 'string', arg: 'DTYPE', help: 'bf16 (default), f16 or f32' },
    seed: { type: 'string', arg: 'S', help: 'random seed (default 0)' },
    'shard-gb': { type: 'string', arg: 'G', help: 'largest shard in GB of 1e9 bytes (default 4.0, as HF "4GB")' },
    force: { type: 'boolean', help: 'replace a non-empty --out' },
    'dry-run': { type: 'boolean', help: 'list the shards and their sizes; write nothing' },
  },
  async run(opts: ParsedOptions) {
    const variant = requireStr(opts, 'family');
    const row = rowForRandomVariant(variant);
    if (!row) throw new UsageError(`--family: '${variant}' is not one of ${VARIANTS.join(', ')}`);
    const dtype = (str(opts, 'dtype') ?? 'bf16') as RandomDtype;
    if (!RANDOM_DTYPES.includes(dtype)) throw new UsageError(`--dtype: '${dtype}' is not one of ${RANDOM_DTYPES.join(', ')}`);
    const llmLayers = num(opts, 'llm-layers', { int: true, min: 1 });
    const visionLayers = num(opts, 'vision-layers', { int: true, min: 1 });
    const seed = num(opts, 'seed', { int: true, min: 0 }) ?? 0;
    const shardGb = num(opts, 'shard-gb', { min: 0, exclusiveMin: true }) ?? 4.0;
    const dryRun = flag(opts, 'dry-run');
    const out = dryRun ? str(opts, 'out') : requireStr(opts, 'out');
    if (out !== undefined && !dryRun) checkRandomOutput(out, flag(opts, 'force'));

    const t0 = Date.now();
    let spec;
    try {
      spec = row.randomSpec({ variant, dtype, llmLayers, visionLayers });
    } catch (e) {
      if ((e as Error).name === 'ConfigError' || /out of range|at least/.test((e as Error).message)) throw new UsageError((e as Error).message);
      throw e;
    }
    const plan = planRandomCheckpoint(spec, { dtype, shardBytes: shardGb * 1e9 });
    for (const n of spec.notes) process.stderr.write(`${n}\n`);
    process.stdout.write(`${spec.title}${llmLayers !== undefined ? `, ${llmLayers} LLM layers` : ''}${visionLayers !== undefined ? `, ${visionLayers} vision layers` : ''} (${dtype}):\n`);
    process.stdout.write(describePlan(plan).join('\n') + '\n');
    if (dryRun) return 0;
    const r = writeRandomCheckpoint(plan, out!, { seed, force: flag(opts, 'force'), log: (m) => process.stderr.write(`${m}\n`) });
    const peakRss = process.resourceUsage().maxRSS * 1024;
    process.stdout.write(`wrote ${out}: ${r.bytes} bytes in ${r.seconds.toFixed(1)} s (${(r.bytes / 1e6 / Math.max(r.seconds, 1e-3)).toFixed(0)} MB/s), ` +
      `${((Date.now() - t0) / 1000).toFixed(1)} s in all, peak rss ${(peakRss / 2 ** 20).toFixed(0)} MiB\n`);
    return 0;
  },
};
