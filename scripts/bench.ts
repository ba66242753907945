/**
 * `vlm bench [--case NAME ...] [--repeats N] [--json] [--list] [--torch]`
 * Times the cases of bench/ at real dimensions on the active backend. With --torch, the
 * same cases also run in PyTorch float32 eager (scripts/bench_torch.py, needs python3 + torch) in
 * the same invocation, and the ratios are printed.
 */
import { spawn, spawnSync } from 'node:child_process';
import readline from 'node:readline';
import os from 'node:os';
import path from 'node:path';
import fs from 'node:fs';
import { backendInfo, describeBackend, initBackend } from '../layers/backend';
import { allCases, findCase } from '../bench';
import { BenchCaseResult, runCase } from '../bench/runner';
import { Command, ParsedOptions, UsageError, flag, num, str, strList } from './cli';
import { benchModel, decodeRunner, median, peakRssMb } from '../bench/model';
import { loadChatModel } from '../models/registry';
import { parseQuantize } from '../weights/native_plan';

/** bench/llamacpp/run.mjs, or why it cannot run. */
function llamaCppScript(): { script: string } | { error: string } {
  const dir = [path.join(__dirname, '..', 'bench', 'llamacpp'), path.join(__dirname, '..', '..', 'bench', 'llamacpp')].find((d) => fs.existsSync(path.join(d, 'run.mjs')));
  if (!dir) return { error: 'bench/llamacpp/run.mjs not found' };
  if (!fs.existsSync(path.join(dir, 'node_modules', 'node-llama-cpp'))) return { error: `node-llama-cpp is not installed: run npm --prefix ${dir} install` };
  return { script: path.join(dir, 'run.mjs') };
}

/** llama.cpp on a GGUF, through bench/llamacpp (installed on demand with `npm --prefix bench/llamacpp install`). */
function runLlamaCpp(gguf: string, threads: number): Record<string, unknown> | { error: string } {
  const found = llamaCppScript();
  if ('error' in found) return found;
  const r = spawnSync(process.execPath, [found.script, gguf, '--threads', String(threads)], { encoding: 'utf8', maxBuffer: 1 << 24, timeout: 3600_000 });
  const last = (r.stdout ?? '').trim().split('\n').pop() ?? '';
  try {
    return JSON.parse(last);
  } catch {
    return { error: `llama.cpp run failed (exit ${r.status}): ${(r.stderr || r.stdout || '').trim().split('\n').slice(-3).join(' | ')}` };
  }
}

/** llama.cpp's run.mjs --serve as a child: one JSON line per command. */
function llamaCppServer(gguf: string, threads: number) {
  const found = llamaCppScript();
  if ('error' in found) throw new UsageError(`--interleave: ${found.error}`);
  const child = spawn(process.execPath, [found.script, gguf, '--threads', String(threads), '--serve'], { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => { stderr = (stderr + String(d)).slice(-2000); });
  // a child that died (bad GGUF, killed) closes its stdin: the next read reports it with its stderr
  child.stdin.on('error', () => undefined);
  const lines = readline.createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  const next = async (): Promise<Record<string, unknown>> => {
    for (;;) {
      const r = await lines.next();
      if (r.done) {
        const errLines = stderr.split('\n').filter((l) => /error/i.test(l));
        throw new Error(`llama.cpp (${gguf}) exited: ${(errLines.length ? errLines.slice(-2) : stderr.trim().split('\n').slice(-3)).join(' | ').trim() || 'no output'}`);
      }
      try {
        const j = JSON.parse(r.value);
        if (j && typeof j === 'object') return j;
      } catch { /* a log line: skip */ }
    }
  };
  return {
    ready: next,
    async decode(): Promise<{ ms: number; tokPerS: number }> {
      child.stdin.write('decode\n');
      const j = await next();
      if (typeof j.ms !== 'number') throw new Error(`llama.cpp decode failed: ${JSON.stringify(j)}`);
      return j as { ms: number; tokPerS: number };
    },
    async close(): Promise<Record<string, unknown> | null> {
      child.stdin.end('quit\n');
      const last = await next().catch(() => null);
      child.kill();
      return last;
    },
  };
}

/**
 * `vlm bench --model DIR --llamacpp FILE.gguf --interleave N`: decode64@1024 only, in N rounds that
 * alternate ours and llama.cpp's (both models loaded, the order swapped every round), so that both
 * sides see the same minutes of a host whose memory bandwidth drifts. Reports each round and the
 * median of the per-round ratios.
 */
async function benchInterleaved(chat: Parameters<typeof decodeRunner>[0], gguf: string, rounds: number, threads: number, log: (s: string) => void) {
  const D = 64, C = 1024;
  const runner = decodeRunner(chat, { context: C, decode: D });
  const peer = llamaCppServer(gguf, threads);
  const per: { ours_tokens_per_s: number; llamacpp_tokens_per_s: number; ratio: number }[] = [];
  let info: Record<string, unknown> | null = null;
  try {
    const ready = await peer.ready();
    info = { llamaCpp: ready.llamaCpp, threads: ready.threads, file: ready.file };
    await runner.run(98); // warm-up: pages in our weights after llama.cpp's prompt
    await peer.decode();
    for (let r = 0; r < rounds; r++) {
      let ours = 0, theirs = 0;
      for (const side of r % 2 ? ['llama', 'ours'] : ['ours', 'llama']) {
        if (side === 'ours') ours = (D * 1000) / (await runner.run(99 + r));
        else theirs = (await peer.decode()).tokPerS;
      }
      per.push({ ours_tokens_per_s: ours, llamacpp_tokens_per_s: theirs, ratio: ours / theirs });
      log(`  round ${r}${r % 2 ? ' (llama.cpp first)' : ''}: ours ${ours.toFixed(2)} tok/s, llama.cpp ${theirs.toFixed(2)} tok/s, ${(ours / theirs).toFixed(2)}×\n`);
    }
  } finally {
    runner.dispose();
    const last = await peer.close();
    if (info && last?.mem) info.peak_rss_mb = Math.round((last.mem as Record<string, number>).VmHWM);
  }
  const ours = median(per.map((p) => p.ours_tokens_per_s)), theirs = median(per.map((p) => p.llamacpp_tokens_per_s)), ratio = median(per.map((p) => p.ratio));
  log(`decode${D}@${C}, ${rounds} alternating rounds: ours ${ours.toFixed(2)} tok/s, llama.cpp ${theirs.toFixed(2)} tok/s (medians); ` +
    `ours / llama.cpp per round: median ${ratio.toFixed(2)}×, ${Math.min(...per.map((p) => p.ratio)).toFixed(2)}–${Math.max(...per.map((p) => p.ratio)).toFixed(2)}\n`);
  return { case: { name: `decode${D}@${C}`, ms: Math.round(((D * 1000) / ours) * 10) / 10, tokens_per_s: Math.round(ours * 100) / 100 }, interleaved: { rounds: per, ratio_median: ratio, llamacpp: info } };
}

/** `vlm bench --model DIR`: the whole model, optionally side by side with llama.cpp. */
async function benchWholeModel(dir: string, opts: ParsedOptions): Promise<number> {
  const json = flag(opts, 'json');
  const log = (s: string) => { if (!json) process.stdout.write(s); };
  const quantize = str(opts, 'quantize');
  if (quantize !== undefined) {
    try { parseQuantize(quantize); } catch (e) { throw new UsageError((e as Error).message); }
  }
  const repeats = num(opts, 'repeats', { int: true, min: 1 }) ?? 3;
  const gguf = str(opts, 'llamacpp');
  const rounds = num(opts, 'interleave', { int: true, min: 1 });
  if (rounds !== undefined && !gguf) throw new UsageError('--interleave needs --llamacpp FILE.gguf (it alternates our decode rounds with llama.cpp\'s)');
  if (gguf && !fs.existsSync(gguf)) throw new UsageError(`--llamacpp: ${gguf} does not exist`);
  const info = backendInfo() ?? (await initBackend());
  const threads = Number(process.env.VLM_THREADS ?? os.cpus().length);
  log(`${describeBackend(info)}\nmachine: ${os.cpus()[0]?.model ?? 'unknown'} × ${os.cpus().length}, node ${process.version}, native threads ${threads}\n`);
  const t0 = performance.now();
  const chat = await loadChatModel(dir, { quantize, visionTowerDir: str(opts, 'vision-tower'), log: json ? undefined : (m) => log(`${m}\n`) });
  const loadMs = performance.now() - t0;
  let cases;
  let interleaved: Awaited<ReturnType<typeof benchInterleaved>> | undefined;
  try {
    if (rounds !== undefined) {
      interleaved = await benchInterleaved(chat, gguf!, rounds, threads, json ? () => undefined : log);
      cases = [{ ...interleaved.case, runs: [] }];
    } else cases = await benchModel(chat, { repeats, log: json ? undefined : (m) => log(`  ${m}\n`) });
  } finally {
    chat.dispose();
  }
  const out: Record<string, unknown> = {
    model: path.resolve(dir), storage: quantize ?? 'default', threads, backend: info.backend, load_ms: Math.round(loadMs),
    peak_rss_mb: peakRssMb(), cases: cases.map((c) => ({ name: c.name, ms: Math.round(c.ms * 10) / 10, tokens_per_s: c.tokens_per_s === null ? null : Math.round(c.tokens_per_s * 100) / 100 })),
  };
  log(`\n${'case'.padEnd(16)} ${'ms'.padStart(10)} ${'tokens/s'.padStart(10)}\n`);
  for (const c of out.cases as { name: string; ms: number; tokens_per_s: number | null }[]) log(`${c.name.padEnd(16)} ${c.ms.toFixed(1).padStart(10)} ${(c.tokens_per_s === null ? '-' : c.tokens_per_s.toFixed(2)).padStart(10)}\n`);
  log(`peak RSS ${out.peak_rss_mb} MB, load ${out.load_ms} ms\n`);
  if (interleaved) out.interleaved = interleaved.interleaved;
  else if (gguf) {
    const l = runLlamaCpp(gguf, threads);
    out.llamacpp = l;
    if ('error' in l) log(`\nllama.cpp: ${l.error}\n`);
    else {
      const ours = (n: string) => (out.cases as { name: string; tokens_per_s: number | null }[]).find((c) => c.name === n)?.tokens_per_s ?? NaN;
      const rel = l.llamaCpp && typeof l.llamaCpp === 'object' ? (l.llamaCpp as { release?: string }).release : l.llamaCpp; // node-llama-cpp gives { repo, release }
      log(`\nllama.cpp ${rel ?? '?'} (${path.basename(gguf)}), ${l.threads} threads: prefill512 ${(l.prefillTokPerS as number).toFixed(2)} tok/s, decode64@1024 ${(l.decodeTokPerS as number).toFixed(2)} tok/s, peak RSS ${Math.round((l.mem as Record<string, number>).VmHWM)} MB\n`);
      log(`ours / llama.cpp: prefill ${(ours('prefill512') / (l.prefillTokPerS as number)).toFixed(2)}×, decode ${(ours('decode64@1024') / (l.decodeTokPerS as number)).toFixed(2)}×\n`);
    }
  }
  if (json) process.stdout.write(JSON.stringify(out) + '\n');
  return 0;
}

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
  usage: '[--case NAME ...] [--repeats N] [--json] [--list] [--torch] | --model DIR [--quantize Q] [--llamacpp FILE.gguf [--interleave N]] [--json]',
  options: {
    case: { type: 'string', multiple: true, arg: 'NAME', help: 'run only this case' },
    repeats: { type: 'string', arg: 'N', help: 'timed runs per case (median reported)', default: '5' },
    json: { type: 'boolean', help: 'print one JSON object {"backend", "cases": [{"name", "ms", "gflops", "peak_mb"}]}' },
    list: { type: 'boolean', help: 'list the cases and exit' },
    torch: { type: 'boolean', help: 'also run the cases in PyTorch float32 eager (python3 + torch) and print the ratios' },
    'in-process': { type: 'boolean', help: 'run every case in this process (default: one fresh process per case, so peak_mb is per case)' },
    model: { type: 'string', arg: 'DIR', help: 'benchmark a whole model: prefill512, decode64@1024, vision448 (VideoLLaMA 2 also vision16x448: 16 distinct frames; see bench/model.ts)' },
    quantize: { type: 'string', arg: 'Q', help: 'with --model: weight storage f32 | stored | f16 | bf16 | q8_0 | q4_0' },
    'vision-tower': { type: 'string', arg: 'DIR', help: 'with --model: VideoLLaMA 2 vision tower directory' },
    llamacpp: { type: 'string', arg: 'FILE.gguf', help: 'with --model: also time llama.cpp (bench/llamacpp, node-llama-cpp 3.21.1) on this GGUF in the same run, same threads' },
    interleave: { type: 'string', arg: 'N', help: 'with --model and --llamacpp: decode64@1024 only, N rounds alternating ours and llama.cpp (both loaded), median of the per-round ratios' },
  },
  async run(opts) {
    const modelDir = str(opts, 'model');
    if (modelDir !== undefined) return benchWholeModel(modelDir, opts);
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
