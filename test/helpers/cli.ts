/** Runs a `vlm` subcommand in-process, capturing what it writes to stdout and stderr. */
import { Command, parseCommand } from '../../scripts/cli';

export async function runCommand(cmd: Command, args: string[]): Promise<{ out: string; err: string }> {
  const out: string[] = [], err: string[] = [];
  const so = jest.spyOn(process.stdout, 'write').mockImplementation((s: string | Uint8Array) => { out.push(String(s)); return true; });
  const se = jest.spyOn(process.stderr, 'write').mockImplementation((s: string | Uint8Array) => { err.push(String(s)); return true; });
  try {
    const { opts, positionals } = parseCommand(cmd, args);
    await cmd.run(opts, positionals);
  } finally {
    so.mockRestore();
    se.mockRestore();
  }
  return { out: out.join(''), err: err.join('') };
}

/** stdout of a `vlm` subcommand run in-process. */
export async function runStdout(cmd: Command, args: string[]): Promise<string> {
  return (await runCommand(cmd, args)).out;
}
