/**
 * The tiny fixtures with their weights in native storage (issue "real checkpoints" 5c): as stored
 * (F32, memory-mapped, native kernels) every golden still holds within 1e-4 and the greedy ids are
 * the upstream ones; `--quantize f16 / q8_0 / q4_0` errors against the goldens are reported (the
 * README quotes them), with loose bounds that catch a broken kernel, not a tolerance of parity.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { runStdout } from '../helpers/cli';
import { command as chat } from '../../scripts/chat';
import { command as trace } from '../../scripts/trace';
import { loadNativeAddon } from '../../layers/native_weight';
import { Golden, compare, expectClose, fixture, readAll } from '../helpers/golden';
import { modelFixture } from '../helpers/fixtures';

const { addon, reason } = loadNativeAddon();
if (!addon) console.log(`skipped: ${reason}`);
const describeIf = addon ? describe : describe.skip;

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vlm-native-fix-'));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const run = runStdout;

const FLOATS = ['vpm.last_hidden_state', 'resampler.out', 'vision_tower.out', 'stc.readout', 'llm.inputs_embeds', 'llm.layer0', 'llm.layer_last', 'llm.norm', 'llm.logits'];

interface Case { name: string; args: string[]; prefix: string; greedy: number[] }
function cases(): Case[] {
  const out: Case[] = [];
  const mc = modelFixture('minicpmv26_tiny');
  if (mc) {
    out.push({ name: 'minicpmv26_tiny', prefix: '', greedy: [860, 759, 225, 796, 82, 759, 225, 796],
      args: ['--model', mc, '--image', fixture('preprocess', 'minicpmv26_tiny', 'input_image.png'), '--prompt', 'What is in the image?'] });
  }
  for (const name of ['videollama2_clip_mistral_tiny', 'videollama2_siglip_qwen2_tiny']) {
    const m = modelFixture(name);
    if (!m) continue;
    const meta = require(path.join(m, 'golden.json'));
    out.push({ name, prefix: 'image.', greedy: meta.image.greedy_ids, args: ['--model', m, '--image', path.join(m, 'input_image.png'), '--prompt', meta.image.question] });
  }
  return out;
}

/** Worst relative error over the traced float tensors that the golden has. */
function traceErrors(file: string, model: string, prefix: string, tol: number | null): Record<string, number> {
  const t = readAll(file);
  const g = new Golden(path.join(model, 'golden.safetensors'));
  const errs: Record<string, number> = {};
  try {
    for (const name of FLOATS) {
      if (!t[name] || !g.has(prefix + name)) continue;
      const ref = g.get(prefix + name);
      if (tol !== null) expectClose(prefix + name, t[name], ref, tol);
      errs[name] = compare(name, t[name].data, t[name].shape, ref.data, ref.shape).maxRelErr;
    }
  } finally {
    g.close();
  }
  return errs;
}

describeIf('tiny fixtures with native weight storage', () => {
  it.each(cases().map((c) => [c.name, c] as const))('%s as stored: every golden within 1e-4, greedy ids exact', async (_n, c) => {
    const out = path.join(tmp, `${c.name}-stored.safetensors`);
    await run(trace, [...c.args, '--quantize', 'stored', '--out', out]);
    const errs = traceErrors(out, c.args[1], c.prefix, 1e-4);
    expect(Object.keys(errs).length).toBeGreaterThanOrEqual(5);
    const j = JSON.parse(await run(chat, [...c.args, '--quantize', 'stored', '--greedy', '--max-new-tokens', '8', '--json']));
    expect(j.token_ids).toEqual(c.greedy.slice(0, 8));
  });

  it.each(cases().map((c) => [c.name, c] as const))('%s quantized at load: errors reported', async (_n, c) => {
    const report: Record<string, Record<string, number>> = {};
    for (const q of ['f16', 'q8_0', 'q4_0']) {
      const out = path.join(tmp, `${c.name}-${q}.safetensors`);
      await run(trace, [...c.args, '--quantize', q, '--out', out]);
      report[q] = traceErrors(out, c.args[1], c.prefix, null);
    }
    console.log(`${c.name}: max relative error vs upstream goldens\n${Object.entries(report).map(([q, e]) =>
      `  ${q.padEnd(5)} ${Object.entries(e).map(([k, v]) => `${k} ${v.toExponential(1)}`).join(', ')}`).join('\n')}`);
    // loose bounds: a wrong kernel or block layout gives errors of order 1
    for (const v of Object.values(report.f16)) expect(v).toBeLessThan(5e-3);
    for (const v of Object.values(report.q8_0)) expect(v).toBeLessThan(8e-2);
    for (const v of Object.values(report.q4_0)) expect(v).toBeLessThan(1);
  });
});
