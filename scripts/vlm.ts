/**
 * `vlm` — the command-line entry. Subcommands live one per file in scripts/ and only parse
 * arguments and call the library.
 */
import { Command, UsageError, commandHelp, exitCodeFor, parseCommand, str } from './cli';
export { exitCodeFor } from './cli';
import { COMMANDS } from './commands';
import { describeBackend, initBackend } from '../layers/backend';
import { describeNative } from '../layers/native_weight';

import fs from 'node:fs';
import path from 'node:path';

/** package.json of tfjs-vlm, found upwards from here (works from the sources and from dist/). */
function packageJson(): { version: string } {
  for (let d = __dirname; d !== path.dirname(d); d = path.dirname(d)) {
    const p = path.join(d, 'package.json');
    if (fs.existsSync(p)) {
      const j = JSON.parse(fs.readFileSync(p, 'utf8'));
      if (j.name === 'tfjs-vlm') return j;
    }
  }
  return { version: 'unknown' };
}
const pkg = packageJson();

function mainHelp(): string {
  const lines = [
    `vlm ${pkg.version} — VideoLLaMA 2 and MiniCPM-V 2.6 on TensorFlow.js`,
    '',
    'Usage: vlm <command> [options]      (vlm <command> --help for its options)',
    '',
    'Commands:',
  ];
  for (const c of COMMANDS) {
    lines.push(`  ${c.name.padEnd(11)} ${c.summary}`);
    lines.push(`  ${''.padEnd(11)} vlm ${c.name} ${c.usage}`);
  }
  lines.push('', 'Global options:', '  --version          print the version and the backend that would be used', '  --backend NAME     tfjs-node-gpu | tfjs-node | wasm | cpu (env VLM_BACKEND)');
  return lines.join('\n');
}

/** `vlm ... | head` closes stdout early: that is not an error. */
let epipeInstalled = false;
function quietEpipe(): void {
  if (epipeInstalled) return;
  epipeInstalled = true;
  for (const stream of [process.stdout, process.stderr]) {
    stream.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code === 'EPIPE') process.exit(process.exitCode ?? 0);
      throw e;
    });
  }
}

export async function main(argv: string[]): Promise<number> {
  quietEpipe();
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(mainHelp() + '\n');
    return 0;
  }
  if (name === '--version' || name === '-v' || name === 'version') {
    const bi = rest.indexOf('--backend');
    const info = await initBackend({ backend: bi >= 0 ? rest[bi + 1] : undefined });
    process.stdout.write(`vlm ${pkg.version}\n${describeBackend(info)}\n${describeNative()}\n`);
    for (const n of info.notes) process.stdout.write(`note: ${n}\n`);
    return 0;
  }
  const cmd: Command | undefined = COMMANDS.find((c) => c.name === name);
  if (!cmd) throw new UsageError(`unknown command '${name}'. Commands: ${COMMANDS.map((c) => c.name).join(', ')}`);
  const { opts, positionals } = parseCommand(cmd, rest);
  if (opts.help) {
    process.stdout.write(commandHelp(cmd) + '\n');
    return 0;
  }
  if (cmd.usesBackend !== false || str(opts, 'backend') !== undefined) {
    const info = await initBackend({ backend: str(opts, 'backend') });
    if (process.env.VLM_DEBUG === '1') process.stderr.write(`${describeBackend(info)}\n`);
    // an automatic fallback past a failed wasm start is worth one line
    for (const n of info.notes) if (n.startsWith('wasm failed')) process.stderr.write(`vlm: note: ${n}; using the ${info.backend} backend\n`);
  }
  const rc = await cmd.run(opts, positionals);
  return typeof rc === 'number' ? rc : 0;
}

if (require.main === module) {
  main(process.argv.slice(2)).then(
    (rc) => {
      process.exitCode = rc;
    },
    (e: Error) => {
      const debug = process.env.VLM_DEBUG === '1';
      process.stderr.write(`vlm: error: ${debug ? e.stack : e.message}\n`);
      process.exitCode = exitCodeFor(e);
    },
  );
}
