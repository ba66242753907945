/**
 * LoRA end to end on the VideoLLaMA 2.1 (SigLIP + Qwen2) tiny fixture, through `vlm finetune`,
 * `vlm merge` and the chat loader: peft's adapter files, reload = same logits, merge = same
 * logits, `--save-steps` + `--resume` bit-identical to a straight run, `--trace-grads`, the LR
 * schedules against HF's formulas, parameter groups, gradient checkpointing (same gradients, less
 * memory) and the bad-input errors.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { runCommand } from '../helpers/cli';
import { command as finetuneCmd, progressLine } from '../../scripts/finetune';
import { command as mergeCmd } from '../../scripts/merge';
import { Linear } from '../../layers/linear';
import { loadChatModel } from '../../models/registry';
import { loadTrainer } from '../../training/finetune';
import { loadAdapter, saveAdapter } from '../../training/peft_format';
import { makeSchedule, warmupStepsOf } from '../../training/schedule';
import { Trainer } from '../../training/trainer';
import { Checkpoint } from '../../weights/checkpoint';
import { SafetensorsFile, writeSafetensors } from '../../weights/safetensors';
import { expectNoLeak } from '../helpers/memory';
import { trainFixture } from './helpers';
import { VIDEOLLAMA2_LORA_PRESET } from '../../models/videollama2/train';

const vq = trainFixture('videollama2_siglip_qwen2_tiny');
const mc = trainFixture('minicpmv26_tiny');
const vm = trainFixture('videollama2_clip_mistral_tiny');
let tmp: string;
let data3: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vlm-lora-'));
  // three samples (the fixture's, with other ids) so that the shuffled order matters
  const s = JSON.parse(fs.readFileSync(vq.data, 'utf8'))[0];
  data3 = path.join(tmp, 'data3.json');
  fs.writeFileSync(data3, JSON.stringify([0, 1, 2].map((i) => ({ ...s, id: `s${i}`, image: path.join(vq.dataRoot, s.image) }))));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const runCli = runCommand;

/** Logits of sample 0 under `trainer`'s current model (lm_head output). */
function logitsOf(trainer: Trainer, batch: unknown): Float32Array {
  const head = (trainer.family.model as unknown as { llm: { lm_head: Linear } }).llm.lm_head;
  const orig = head.forward;
  let last: Float32Array | null = null;
  head.forward = (x: tf.Tensor) => { const y = orig.call(head, x); last = y.dataSync().slice() as Float32Array; return y; };
  try {
    const prep = trainer.family.prepare(batch);
    tf.tidy(() => { trainer.family.loss(batch, prep); });
    prep.dispose();
  } finally {
    head.forward = orig;
  }
  return last!;
}
const maxAbs = (a: ArrayLike<number>) => { let m = 0; for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i])); return m; };
const maxDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => { let m = 0; for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i])); return m; };
const base = () => ['--model', vq.model, '--data', data3, '--lr', '1e-2', '--lora-r', '4', '--lora-alpha', '8', '--lora-target', 'q_proj,v_proj,down_proj'];

describe('vlm finetune with LoRA (VideoLLaMA 2.1 tiny)', () => {
  it('writes peft adapter files; reloading the adapter and merging it reproduce the logits', async () => {
    const out = path.join(tmp, 'a');
    const log = path.join(tmp, 'a.jsonl');
    const { err } = await runCli(finetuneCmd, [...base(), '--tune', 'mm_projector', '--connector-lr', '2e-3', '--max-steps', '2', '--out', out, '--log', log, '--eval-data', data3, '--eval-steps', '1']);
    expect(err).toMatch(/step 2\/2 .*loss .* lr 1\.00e-2 .* tok\/s ETA/);
    expect(err).toMatch(/eval step 1: eval_loss \d+\.\d+\n[^]*eval step 2: eval_loss/);
    const cfg = JSON.parse(fs.readFileSync(path.join(out, 'adapter_config.json'), 'utf8'));
    expect(cfg).toMatchObject({
      peft_type: 'LORA', r: 4, lora_alpha: 8, lora_dropout: 0, target_modules: ['q_proj', 'v_proj', 'down_proj'], use_rslora: false, bias: 'none',
      modules_to_save: ['model.mm_projector'], base_model_name_or_path: path.resolve(vq.model), task_type: 'CAUSAL_LM', fan_in_fan_out: false, init_lora_weights: true,
    });
    const f = SafetensorsFile.open(path.join(out, 'adapter_model.safetensors'));
    const keys = f.keys();
    expect(keys).toContain('base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight');
    expect(keys).toContain('base_model.model.model.layers.1.mlp.down_proj.lora_B.weight');
    expect(keys.some((k) => k.startsWith('base_model.model.model.mm_projector.'))).toBe(true);
    expect(keys.some((k) => /vision_tower|k_proj|lm_head/.test(k))).toBe(false);
    const lines = fs.readFileSync(log, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(lines.map((l) => l.step)).toEqual([1, 1, 2, 2]);
    expect(lines[0]).toHaveProperty('lr', 1e-2);
    expect(lines[1].eval_loss).toBeLessThan(lines[0].loss); // trained on the same samples

    // reload: a fresh base + the adapter gives the logits of the trained model; merge gives them too
    const t0 = await loadTrainer(vq.model, { data: data3 });
    const batch = t0.family.collate([await t0.family.data!.example(0)]);
    const baseLogits = logitsOf(t0, batch);
    const lora = loadAdapter(out, t0.family.model, t0.family.keymap, VIDEOLLAMA2_LORA_PRESET.exclude);
    const adapted = logitsOf(t0, batch);
    expect(maxDiff(adapted, baseLogits)).toBeGreaterThan(1e-3); // it trained
    lora.dispose();
    t0.dispose();
    const merged = path.join(tmp, 'merged');
    await expect(runCli(mergeCmd, ['--model', vq.model, '--adapter', out, '--out', path.join(tmp, 'q'), '--quantize', 'q5_k'])).rejects.toThrow(/--quantize: 'q5_k' is not one of/);
    await runCli(mergeCmd, ['--model', vq.model, '--adapter', out, '--out', merged]);
    const src = Checkpoint.open(vq.model), dst = Checkpoint.open(merged);
    expect(dst.keys().sort()).toEqual(src.keys().sort());
    src.close();
    dst.close();
    const tm = await loadTrainer(merged, { data: data3 });
    const mergedLogits = logitsOf(tm, tm.family.collate([await tm.family.data!.example(0)]));
    tm.dispose();
    expect(maxDiff(mergedLogits, adapted) / maxAbs(adapted)).toBeLessThan(1e-5);

    // --quantize: the merge converted as vlm convert does (one GGUF); 'stored' keeps the merged float32 exactly
    const mergedGguf = path.join(tmp, 'merged_gguf');
    await runCli(mergeCmd, ['--model', vq.model, '--adapter', out, '--out', mergedGguf, '--quantize', 'stored']);
    expect(fs.readdirSync(mergedGguf)).toContain('model.gguf');
    expect(fs.readdirSync(mergedGguf).some((n) => n.endsWith('.safetensors'))).toBe(false);
    expect(fs.readdirSync(tmp).filter((n) => n.includes('.partial-'))).toEqual([]);
    const tg = await loadTrainer(mergedGguf, { data: data3, quantize: 'f32' });
    expect(maxDiff(logitsOf(tg, tg.family.collate([await tg.family.data!.example(0)])), mergedLogits)).toBe(0);
    tg.dispose();
  });

  it('API: saveAdapter → loadAdapter gives bit-identical logits', async () => {
    const t = await loadTrainer(vq.model, { data: data3, lr: 1e-2, lora: { r: 2, alpha: 4, targetModules: 'model\\.layers\\.\\d+\\.mlp\\.(up|gate)_proj', useRslora: true } });
    await t.train({ maxSteps: 1 });
    expect(t.lora!.scaling).toBeCloseTo(4 / Math.sqrt(2), 12);
    const batch = t.family.collate([await t.family.data!.example(1)]);
    const want = logitsOf(t, batch);
    const dir = path.join(tmp, 'api');
    saveAdapter(dir, t.lora!, [], { baseModel: vq.model, keymap: t.family.keymap, tune: [] });
    t.dispose();
    expect(JSON.parse(fs.readFileSync(path.join(dir, 'adapter_config.json'), 'utf8'))).toMatchObject({ use_rslora: true, target_modules: 'model\\.layers\\.\\d+\\.mlp\\.(up|gate)_proj', modules_to_save: null });
    const t2 = await loadTrainer(vq.model, { data: data3 });
    loadAdapter(dir, t2.family.model, t2.family.keymap, VIDEOLLAMA2_LORA_PRESET.exclude);
    expect(maxDiff(logitsOf(t2, batch), want)).toBe(0);
    t2.dispose();
  });

  it('--save-steps 2 then --resume checkpoint-2 is byte-identical to 4 straight steps (dropout, cosine warmup, clipping)', async () => {
    const common = [...base(), '--lora-dropout', '0.1', '--lr-schedule', 'cosine', '--warmup-steps', '1', '--max-grad-norm', '1', '--tune', 'mm_projector'];
    const straight = path.join(tmp, 'straight'), split = path.join(tmp, 'split');
    await runCli(finetuneCmd, [...common, '--max-steps', '4', '--out', straight]);
    await runCli(finetuneCmd, [...common, '--max-steps', '2', '--save-steps', '2', '--out', path.join(tmp, 'split_tmp')]);
    const ck = path.join(tmp, 'split_tmp', 'checkpoint-2');
    for (const f of ['adapter_config.json', 'adapter_model.safetensors', 'trainer_state.json', 'trainer_state.safetensors']) expect(fs.existsSync(path.join(ck, f))).toBe(true);
    await runCli(finetuneCmd, [...common, '--max-steps', '4', '--resume', ck, '--out', split]);
    const a = SafetensorsFile.open(path.join(straight, 'adapter_model.safetensors')), b = SafetensorsFile.open(path.join(split, 'adapter_model.safetensors'));
    expect(b.keys().sort()).toEqual(a.keys().sort());
    for (const k of a.keys()) expect(Buffer.from((b.read(k).data as Float32Array).buffer).equals(Buffer.from((a.read(k).data as Float32Array).buffer))).toBe(true);
    const la = JSON.parse(fs.readFileSync(path.join(straight, 'finetune_log.json'), 'utf8')).losses;
    const lb = JSON.parse(fs.readFileSync(path.join(split, 'finetune_log.json'), 'utf8')).losses;
    expect(lb).toEqual(la.slice(2));
    // another model cannot resume it
    await expect(runCli(finetuneCmd, ['--model', mc.model, '--data', mc.data, '--data-root', mc.dataRoot, '--tokenizer', mc.tokenizerDir, '--lora-r', '4', '--lora-alpha', '8', '--lora-target', 'q_proj',
      '--max-steps', '4', '--resume', ck, '--out', path.join(tmp, 'other_model')])).rejects.toThrow(/another model or training configuration: family: checkpoint "videollama2", now "minicpmv"/);
    // another configuration cannot resume it
    await expect(runCli(finetuneCmd, [...common.map((x) => (x === '4' ? '2' : x)), '--max-steps', '4', '--resume', ck, '--out', path.join(tmp, 'other')]))
      .rejects.toThrow(/another model or training configuration: lora\.r: checkpoint 4, now 2/);
  });

  it('--trace-grads writes loss and grad.<peft key> for every trainable tensor and updates nothing', async () => {
    const file = path.join(tmp, 'trace.safetensors');
    const { out } = await runCli(finetuneCmd, [...base(), '--tune', 'mm_projector', '--trace-grads', file, '--json']);
    expect(JSON.parse(out).out).toBe(file);
    const f = SafetensorsFile.open(file);
    expect(f.keys()).toContain('loss');
    expect(f.keys()).toContain('grad.base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight');
    expect(f.keys().some((k) => k.startsWith('grad.model.mm_projector.'))).toBe(true);
    expect(maxAbs(f.read('grad.base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight').data as Float32Array)).toBe(0); // B = 0 at init
    expect(maxAbs(f.read('grad.base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight').data as Float32Array)).toBeGreaterThan(0);
  });

  it('bad input: clear errors', async () => {
    const out = () => path.join(tmp, `e${Math.random()}`);
    await expect(runCli(finetuneCmd, [...base().map((x) => (x === '4' ? '0' : x)), '--out', out()])).rejects.toThrow(/--lora-r must be an integer > 0/);
    await expect(runCli(finetuneCmd, [...base().slice(0, -1), 'nothing_proj', '--out', out()])).rejects.toThrow(/match no Linear module.*model\.layers\.0\.self_attn\.q_proj/);
    await expect(runCli(finetuneCmd, ['--model', vq.model, '--data', data3, '--lora-preset', 'minicpmv', '--out', out()])).rejects.toThrow(/this is a videollama2 checkpoint/);
    // missing media: fail by default, skip with a warning
    const s = JSON.parse(fs.readFileSync(data3, 'utf8'));
    const bad = path.join(tmp, 'bad.json');
    fs.writeFileSync(bad, JSON.stringify([...s, { ...s[0], id: 'gone', image: 'nope.png' }]));
    await expect(runCli(finetuneCmd, ['--model', vq.model, '--data', bad, '--lora-r', '2', '--lora-target', 'q_proj', '--max-steps', '1', '--out', out()]))
      .rejects.toThrow(/sample 3 \(id "gone"\), image: media file 'nope.png' not found.*--skip-missing-media/);
    const { err } = await runCli(finetuneCmd, ['--model', vq.model, '--data', bad, '--lora-r', '2', '--lora-target', 'q_proj', '--max-steps', '1', '--skip-missing-media', '--out', out()]);
    expect(err).toMatch(/warning: sample 3 \(id "gone"\), image: media file 'nope.png' not found.*skipping the sample/);
    // an adapter whose module names do not match the base
    const ad = path.join(tmp, 'mismatch');
    const t = await loadTrainer(vq.model, { lora: { r: 2, alpha: 2, targetModules: ['q_proj'] } });
    saveAdapter(ad, t.lora!, [], { baseModel: 'x', keymap: t.family.keymap, tune: [] });
    t.dispose();
    const st = path.join(ad, 'adapter_model.safetensors');
    const f = SafetensorsFile.open(st);
    const renamed: Record<string, { dtype: 'F32'; shape: number[]; data: Float32Array }> = {};
    for (const k of f.keys()) renamed[k.replace('layers.0.', 'layers.7.')] = { dtype: 'F32', shape: f.read(k).shape, data: f.read(k).data as Float32Array };
    writeSafetensors(st, renamed);
    const t2 = await loadTrainer(vq.model);
    expect(() => loadAdapter(ad, t2.family.model, t2.family.keymap, VIDEOLLAMA2_LORA_PRESET.exclude)).toThrow(/does not match this base model's module names; adapter modules not in the model: model\.layers\.7\.self_attn\.q_proj.*lacks: model\.layers\.0\.self_attn\.q_proj/);
    t2.dispose();
    // NaN loss: stops naming the step and the samples
    const t3 = await loadTrainer(vq.model, { data: data3, lora: { r: 2, alpha: 2, targetModules: ['q_proj'] } });
    t3.lora!.entries[0].B.value.assign(tf.fill(t3.lora!.entries[0].B.shape, NaN));
    await expect(t3.train({ maxSteps: 1 })).rejects.toThrow(/step 1 \(epoch 0, sample \d \(id "s\d"\)\): the loss is NaN/);
    t3.dispose();
  });
});

describe('presets and chat --adapter', () => {
  it("--lora-preset minicpmv / videollama2: upstream's r, alpha, dropout, targets, fully trained parts, connector lr", async () => {
    const m = await loadTrainer(mc.model, { data: mc.data, dataRoot: mc.dataRoot, tokenizerDir: mc.tokenizerDir, loraPreset: 'minicpmv' });
    try {
      expect(m.lora!.config).toMatchObject({ r: 64, alpha: 64, dropout: 0.05 });
      expect(m.lora!.entries.length).toBeGreaterThan(0);
      expect(m.lora!.entries.every((e) => /^llm\.model\.layers\.\d+\.self_attn\.(q|k|v)_proj$/.test(e.name))).toBe(true);
      expect(m.tune).toEqual(['vpm', 'resampler']);
      expect(m.params.some((p) => p.name.startsWith('llm.') && !p.key.includes('lora_'))).toBe(false); // base LLM frozen
    } finally {
      m.dispose();
    }
    const v = await loadTrainer(vq.model, { data: data3, loraPreset: 'videollama2', loraOverrides: { r: 2 } });
    try {
      expect(v.lora!.config).toMatchObject({ r: 2, alpha: 256, dropout: 0.05, targetModules: ['down_proj', 'gate_proj', 'k_proj', 'o_proj', 'q_proj', 'up_proj', 'v_proj'] });
      expect(v.lora!.entries.some((e) => /vision_tower|mm_projector|lm_head/.test(e.name))).toBe(false);
      expect(v.groups.find((g) => g.name === 'connector')!.baseLr).toBe(2e-5);
      expect(v.tune).toEqual(['mm_projector']);
    } finally {
      v.dispose();
    }
  });

  it('vlm chat --adapter: the chat model runs with the adapter unmerged; a bad adapter is a clear error', async () => {
    const ad = path.join(tmp, 'chat_ad');
    const t = await loadTrainer(vq.model, { lora: { r: 2, alpha: 2, targetModules: ['o_proj'] } });
    saveAdapter(ad, t.lora!, [], { baseModel: vq.model, keymap: t.family.keymap, tune: [] });
    t.dispose();
    const chat = await loadChatModel(vq.model, { adapter: ad, warn: () => undefined });
    const model = (chat as unknown as { model: { namedModules(): Iterable<[string, unknown]> } }).model;
    const adapted = [...model.namedModules()].filter(([, m]) => m instanceof Linear && (m as Linear).lora);
    expect(adapted.map(([n]) => n).every((n) => n.endsWith('o_proj'))).toBe(true);
    expect(adapted.length).toBeGreaterThan(0);
    chat.dispose();
    await expect(loadChatModel(mc.model, { adapter: ad, warn: () => undefined })).rejects.toThrow(/does not match this base model.s module names; adapter modules not in the model: model\.layers\.0\.self_attn\.o_proj/);
  });
});

describe('trainer features', () => {
  it('LR schedules equal HF get_{constant,linear,cosine}_schedule_with_warmup', () => {
    expect(warmupStepsOf(100, { warmupRatio: 0.03 })).toBe(3);
    expect(warmupStepsOf(10, { warmupRatio: 0.01 })).toBe(1);
    const hf = (kind: string, T: number, W: number, s: number) => {
      if (s < W) return s / Math.max(1, W);
      if (kind === 'constant') return 1;
      const p = (s - W) / Math.max(1, T - W);
      return kind === 'linear' ? Math.max(0, (T - s) / Math.max(1, T - W)) : Math.max(0, 0.5 * (1 + Math.cos(Math.PI * 0.5 * 2 * p)));
    };
    for (const kind of ['constant', 'linear', 'cosine'] as const) {
      const f = makeSchedule(kind, 10, { warmupSteps: 2 });
      for (let s = 0; s <= 10; s++) expect(f(s)).toBeCloseTo(hf(kind, 10, 2, s), 14);
    }
    const cos = makeSchedule('cosine', 10, {});
    expect(cos(0)).toBe(1);
    expect(cos(5)).toBeCloseTo(0.5, 14);
    expect(makeSchedule('linear', 10, {})(5)).toBe(0.5);
    expect(makeSchedule('linear', 10, { warmupSteps: 4 })(0)).toBe(0); // HF: the first step of a warmup has lr 0
    expect(() => makeSchedule('cosine', 10, { warmupSteps: 2, warmupRatio: 0.1 })).toThrow(/either/);
  });

  it('parameter groups: --connector-lr and the HF no-decay rule (biases and LayerNorms)', async () => {
    const t = await loadTrainer(vq.model, { lr: 1e-4, weightDecay: 0.1, connectorLr: 2e-5, hfNoDecay: true });
    try {
      const g = Object.fromEntries(t.groups.map((x) => [x.name, x]));
      expect(Object.keys(g)).toEqual(['main', 'main.no_decay', 'connector', 'connector.no_decay']);
      expect(g.connector.baseLr).toBe(2e-5);
      expect(g['main.no_decay'].optimizer.weightDecay).toBe(0);
      expect(g.main.optimizer.weightDecay).toBe(0.1);
      const names = (x: typeof g.main) => x.vars.map((i) => t.params.find((p) => p.variables.includes(t.variables[i]))!.name);
      expect(names(g['main.no_decay']).every((n) => n.endsWith('.bias'))).toBe(true); // no nn.LayerNorm in the LLM or the projector
      expect(names(g['main.no_decay'])).toContain('llm.model.layers.0.self_attn.q_proj.bias');
      expect(names(g.main)).toContain('llm.model.norm.weight'); // Qwen2RMSNorm is not in transformers 4.40's ALL_LAYERNORM_LAYERS
      expect(names(g.connector).every((n) => n.startsWith('mm_projector.'))).toBe(true);
    } finally {
      t.dispose();
    }
    const m = await loadTrainer(mc.model, { tune: ['resampler'], weightDecay: 0.1, hfNoDecay: true });
    try {
      const nd = m.groups.find((x) => x.name === 'main.no_decay')!.vars.map((i) => m.params.find((p) => p.variables.includes(m.variables[i]))!.name);
      expect(nd).toEqual(expect.arrayContaining(['resampler.ln_q.weight', 'resampler.ln_q.bias', 'resampler.ln_post.weight']));
      expect(nd).not.toContain('resampler.query');
    } finally {
      m.dispose();
    }
  });

  it('progress: a bar with loss, lr, tokens/s and ETA on a TTY, plain lines otherwise', () => {
    const s = { step: 3, epoch: 0, loss: 1.5, gradNorm: 2, ms: 500, samples: 1, supervisedTokens: 50, lr: 1e-4, totalSteps: 10 };
    expect(progressLine(s, 1500, 0, true)).toMatch(/^\r\[#{7}-{17}\] 3\/10 loss 1\.5000 lr 1\.00e-4 grad_norm 2\.0000 100\.0 tok\/s ETA 0:03/);
    expect(progressLine(s, 1500, 0, false)).toMatch(/^step 3\/10 epoch 0 loss 1\.5000 .*\n$/);
  });

  it('gradient checkpointing replays the LoRA dropout masks: the same gradients with dropout on', async () => {
    const t = await loadTrainer(vq.model, { data: data3, lora: { r: 2, alpha: 4, dropout: 0.3, targetModules: ['q_proj', 'down_proj'] } });
    try {
      t.lora!.entries.forEach((e, i) => e.B.value.assign(tf.fill(e.B.shape, 0.01 * (i + 1))));
      const batch = t.family.collate([await t.family.data!.example(0)]);
      const set = (on: boolean) => { (t as unknown as { gradientCheckpointing: boolean }).gradientCheckpointing = on; };
      set(false);
      const a = t.lossAndGrads(batch);
      set(true);
      const b = t.lossAndGrads(batch);
      expect(b.loss).toBe(a.loss);
      for (const [k, g] of a.grads) expect(maxDiff(g.dataSync(), b.grads.get(k)!.dataSync())).toBeLessThanOrEqual(1e-6 * Math.max(maxAbs(g.dataSync()), 1e-6));
      // dropout is really on: another step index draws other masks
      t.stepCount = 1;
      const c = t.lossAndGrads(batch);
      expect(c.loss).not.toBe(a.loss);
      tf.dispose([...a.grads.values(), ...b.grads.values(), ...c.grads.values()]);
      // a checkpointed LoRA step (accumulation, clipping) leaks no tensor
      await expectNoLeak('Trainer.step with LoRA + gradient checkpointing', () => t.step([batch, batch]));
      expect(() => t.save(path.join(tmp, 'nope'))).toThrow(/LoRA/);
    } finally {
      t.dispose();
    }
  });

  it.each([
    ['MiniCPM-V tiny, llm+vpm+resampler', () => loadTrainer(mc.model, { data: mc.data, dataRoot: mc.dataRoot, tokenizerDir: mc.tokenizerDir, tune: ['llm', 'vpm', 'resampler'] })],
    ['VideoLLaMA 2 tiny, STC connector (RegStage blocks)', () => loadTrainer(vm.model, { data: vm.data, dataRoot: vm.dataRoot, tune: ['mm_projector'] })],
  ] as const)('gradient checkpointing: the same gradients, less peak memory (%s)', async (what, load) => {
    const t = await load();
    try {
      const batch = t.family.collate([await t.family.data!.example(0)]);
      const run = (on: boolean) => {
        (t as unknown as { gradientCheckpointing: boolean }).gradientCheckpointing = on;
        // peak of tf.memory().numBytes during the step, sampled at every tensor allocation
        const eng = tf.engine() as unknown as { trackTensor: (...a: unknown[]) => unknown; state: { numBytes: number } };
        const orig = eng.trackTensor;
        const before = eng.state.numBytes;
        let peak = before;
        eng.trackTensor = function (this: typeof eng, ...a: unknown[]) { const x = orig.apply(this, a); peak = Math.max(peak, this.state.numBytes); return x; };
        try {
          const r = t.lossAndGrads(batch);
          return { ...r, peak: peak - before };
        } finally {
          eng.trackTensor = orig;
        }
      };
      const plain = run(false);
      const ckpt = run(true);
      expect(ckpt.loss).toBe(plain.loss);
      let worst = 0;
      for (const [k, g] of plain.grads) {
        const a = g.dataSync(), b = ckpt.grads.get(k)!.dataSync();
        const rel = maxDiff(a, b) / Math.max(maxAbs(a), 1e-12);
        if (rel > worst) worst = rel;
      }
      expect(worst).toBeLessThan(1e-5);
      const [p0, p1] = [plain.peak, ckpt.peak];
      console.log(`gradient checkpointing (${what}): peak ${(p0 / 2 ** 20).toFixed(2)} MiB -> ${(p1 / 2 ** 20).toFixed(2)} MiB; max rel grad diff ${worst.toExponential(2)}`);
      expect(p1).toBeLessThan(p0);
      tf.dispose([...plain.grads.values(), ...ckpt.grads.values()]);
    } finally {
      t.dispose();
    }
  });
});
