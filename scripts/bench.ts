/**
 * `vlm bench [--case NAME ...] [--repeats N] [--json] [--list] [--torch]`
 * Times the cases of bench/ at real dimensions on the active backend. With --torch, the
 * same cases also run in PyTorch float32 eager (scripts/bench_torch.py, needs python3 + torch) in
 * the same invocation, and the ratios are printed.
 */
import { spawnSync } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import fs from 'node:fs';
import { backendInfo, describeBackend, initBackend } from '../layers/backend';
import { allCases, findCase } from '../bench';
import { BenchCaseResult, runCase } from '../bench/runner';
import { Command, UsageError, flag, num, strList } from './cli';

interface TorchResult { name: string; ms: number }

function runTorch(names: string[], repeats: number): { results: TorchResult[]; info: string } | { error: string } {
  const script = [path.join(__dirname, 'bench_torch.py'), path.join(__dirname, '..', '..', 'scripts', 'bench_torch.py')].find((p) => fs.existsSync(p));
  if (!script) return { error: 'scripts/bench_torch.py not found' };
  const python = process.env.VLM_PYTHON ?? (fs.existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3');
  const r = spawnSync(python, [script, '--repeats', String(repeats), ...names], { encoding: 'utf8', maxBuffer: 1 << 24, timeout: 3600_000 });
  if (r.status !== 0) return { error: `${python} ${path.basename(script)} failed: ${(r.stderr || r.error?.message || '').trim().split('\n').slice(-3).join(' | ')}` };
  try {
    const j = JSON.parse(r.stdout.trim().split('\n').pop()!);
    return { results: j.cases, info: j.info };
  } catch {
    return { error: `could not parse the torch benchmark output: ${r.stdout.slice(-200)}` };
  }
}

/** Runs one case in a fresh process of this same CLI (isolates memory: peak_mb is per case). */
function runChild(name: string, repeats: number, backend: string): BenchCaseResult {
  const args = [...process.execArgv, process.argv[1], 'bench', '--case', name, '--repeats', String(repeats), '--json'];
  const r = spawnSync(process.execPath, args, { encoding: 'utf8', maxBuffer: 1 << 24, env: { ...process.env, VLM_BACKEND: backend } });
  const last = (r.stdout ?? '').trim().split('\n').pop() ?? '';
  try {
    return (JSON.parse(last) as { cases: BenchCaseResult[] }).cases[0];
  } catch {
    throw new Error(`bench case ${name} failed in its child process (exit ${r.status}): ${(r.stderr || r.stdout || '').trim().split('\n').slice(-3).join(' | ')}`);
  }
}

export const command: Command = {
  name: 'bench',
  summary: 'Time layers, heads and preprocessing at real model dimensions (random weights).',
  usage: '[--case NAME ...] [--repeats N] [--json] [--list] [--torch]',
  options: {
    case: { type: 'string', multiple: true, arg: 'NAME', help: 'run only this case' },
    repeats: { type: 'string', arg: 'N', help: 'timed runs per case (median reported)', default: '5' },
    json: { type: 'boolean', help: 'print one JSON object {"backend", "cases": [{"name", "ms", "gflops", "peak_mb"}]}' },
    list: { type: 'boolean', help: 'list the cases and exit' },
    torch: { type: 'boolean', help: 'also run the cases in PyTorch float32 eager (python3 + torch) and print the ratios' },
    'in-process': { type: 'boolean', help: 'run every case in this process (default: one fresh process per case, so peak_mb is per case)' },
  },
  async run(opts) {
    if (flag(opts, 'list')) {
      for (const c of allCases()) process.stdout.write(`${c.name.padEnd(28)} ${c.description}\n`);
      return 0;
    }
    const repeats = num(opts, 'repeats', { int: true, min: 1 })!;
    const names = strList(opts, 'case');
    const cases = names.length ? names.map((n) => {
      try { return findCase(n); } catch (e) { throw new UsageError((e as Error).message); }
    }) : allCases();
    const info = backendInfo() ?? (await initBackend());
    const json = flag(opts, 'json');
    const log = (s: string) => { if (!json) process.stdout.write(s); };
    log(`${describeBackend(info)}\nmachine: ${os.cpus()[0]?.model ?? 'unknown'} × ${os.cpus().length}, node ${process.version}\n\n`);
    log(`${'case'.padEnd(28)} ${'ms'.padStart(10)} ${'GFLOP/s'.padStart(9)} ${'peak MB'.padStart(8)}\n`);
    const results: BenchCaseResult[] = [];
    const inProcess = flag(opts, 'in-process') || cases.length === 1;
    for (const c of cases) {
      let r: BenchCaseResult;
      try {
        r = inProcess ? await runCase(c, repeats) : runChild(c.name, repeats, info.backend);
      } catch (e) {
        if (inProcess && cases.length === 1) throw e;
        log(`${c.name.padEnd(28)} failed: ${(e as Error).message}\n`);
        results.push({ name: c.name, ms: NaN, gflops: null, peak_mb: NaN, runs: [], notes: `failed: ${(e as Error).message}` });
        continue;
      }
      results.push(r);
      log(`${r.name.padEnd(28)} ${r.ms.toFixed(2).padStart(10)} ${(r.gflops === null ? '-' : r.gflops.toFixed(1)).padStart(9)} ${String(r.peak_mb).padStart(8)}${r.notes ? `  (${r.notes})` : ''}\n`);
    }
    let torch: ReturnType<typeof runTorch> | null = null;
    if (flag(opts, 'torch')) {
      torch = runTorch(results.map((r) => r.name), repeats);
      if ('error' in torch) log(`\ntorch: ${torch.error}\n`);
      else {
        log(`\nPyTorch float32 eager (${torch.info}):\n${'case'.padEnd(28)} ${'torch ms'.padStart(10)} ${'ours/torch'.padStart(11)}\n`);
        for (const t of torch.results) {
          const ours = results.find((r) => r.name === t.name);
          if (ours && t.ms > 0) log(`${t.name.padEnd(28)} ${t.ms.toFixed(2).padStart(10)} ${(ours.ms / t.ms).toFixed(2).padStart(11)}\n`);
        }
      }
    }
    if (json) {
      const out: Record<string, unknown> = { backend: info.backend, kernels: info.kernels, threads: info.threads, blas: info.blas, cases: results };
      if (torch && !('error' in torch)) out.torch = torch.results;
      process.stdout.write(JSON.stringify(out) + '\n');
    }
    return 0;
  },
};
