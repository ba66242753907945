/**
 * Fine-tuning end to end on the tiny fixtures: the `finetune` API and `vlm finetune` train for a
 * few steps, the loss goes down, the written directory reloads with `fromPretrained` and holds
 * exactly the trained weights (and the untouched ones unchanged) under the source's HF keys;
 * gradient accumulation and batching are equivalent to their definitions; a step leaks no tensor;
 * bad input fails with a clear message.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { UsageError } from '../../scripts/cli';
import { runCommand } from '../helpers/cli';
import { COMMANDS } from '../../scripts/commands';
import { command as finetuneCmd } from '../../scripts/finetune';
import { MiniCPMV } from '../../models/minicpmv/modeling';
import { VideoLLaMA2 } from '../../models/videollama2/modeling';
import { finetune, loadTrainer } from '../../training/finetune';
import { TrainFamily } from '../../training/family';
import { Trainer } from '../../training/trainer';
import { VideoLLaMA2TrainBatch, VideoLLaMA2TrainExample } from '../../models/videollama2/train_data';
import { Checkpoint } from '../../weights/checkpoint';
import { readParam } from '../../weights/load';
import { expectNoLeak } from '../helpers/memory';
import { trainFixture } from './helpers';

const mc = trainFixture('minicpmv26_tiny');
const vq = trainFixture('videollama2_siglip_qwen2_tiny');
let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vlm-finetune-'));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const runCli = runCommand;

/** Every parameter of `a` equals the same-named parameter of `b` (checkpoint layout), or lists the differing ones. */
function differing(a: VideoLLaMA2 | MiniCPMV, b: VideoLLaMA2 | MiniCPMV): string[] {
  const pb = new Map(b.namedParams());
  const out: string[] = [];
  for (const [name, p] of a.namedParams()) {
    if (p.tiedTo) continue;
    const x = readParam(p).data, y = readParam(pb.get(name)!).data;
    if (x.length !== y.length || x.some((v, i) => v !== y[i])) out.push(name);
  }
  return out;
}

describe('finetune API (VideoLLaMA 2.1 tiny, LLM + connector)', () => {
  it('trains, the loss goes down, and the saved directory reloads with exactly the trained weights', async () => {
    const out = path.join(tmp, 'vq');
    const trainer = await loadTrainer(vq.model, { data: vq.data, dataRoot: vq.dataRoot, lr: 1e-3 });
    try {
      const steps: number[] = [];
      const r = await trainer.train({ maxSteps: 4, onStep: (s) => steps.push(s.step) });
      expect(steps).toEqual([1, 2, 3, 4]);
      expect(r.losses[3]).toBeLessThan(r.losses[0] - 0.5);
      trainer.save(out);
      // the same HF keys as the source checkpoint, and the tower directory travels along
      const src = Checkpoint.open(vq.model), dst = Checkpoint.open(out);
      expect(dst.keys().sort()).toEqual(src.keys().sort());
      src.close();
      dst.close();
      expect(fs.existsSync(path.join(out, 'siglip-tiny-patch14-84', 'model.safetensors'))).toBe(true);
      expect(fs.existsSync(path.join(out, 'input_video.mp4'))).toBe(false);
      const reloaded = await VideoLLaMA2.fromPretrained(out, { log: () => undefined });
      const original = await VideoLLaMA2.fromPretrained(vq.model, { log: () => undefined });
      try {
        expect(differing(trainer.family.model as VideoLLaMA2, reloaded)).toEqual([]);
        const changed = differing(original, reloaded);
        expect(changed.length).toBe(trainer.params.length); // every trained tensor moved ...
        expect(changed.every((n) => n.startsWith('llm.') || n.startsWith('mm_projector.'))).toBe(true); // ... and only those
      } finally {
        reloaded.dispose();
        original.dispose();
      }
    } finally {
      trainer.dispose();
    }
  });

  it('finetune() refuses a non-empty --out before training', async () => {
    fs.mkdirSync(path.join(tmp, 'full'));
    fs.writeFileSync(path.join(tmp, 'full', 'x'), '');
    await expect(finetune({ model: vq.model, data: vq.data, dataRoot: vq.dataRoot, out: path.join(tmp, 'full'), maxSteps: 1 }))
      .rejects.toThrow(/--out: .*full is not empty; choose a new directory/);
  });
});

describe('trainer invariants (VideoLLaMA 2.1 tiny, connector)', () => {
  let a: Trainer, b: Trainer;
  beforeAll(async () => {
    const o = { data: vq.data, dataRoot: vq.dataRoot, tune: ['mm_projector'], lr: 1e-3, weightDecay: 0.01 };
    a = await loadTrainer(vq.model, o);
    b = await loadTrainer(vq.model, { ...o, gradAccumSteps: 2 });
  });
  afterAll(() => {
    a?.dispose();
    b?.dispose();
  });

  it('gradient accumulation: two identical micro-batches make the same step as one', async () => {
    const batch = a.family.collate([await a.family.data!.example(0)]);
    const la = a.step([batch]).loss, lb = b.step([batch, batch]).loss;
    expect(lb).toBeCloseTo(la, 5);
    a.params.forEach((p, i) => {
      const x = readParam(p.param).data, y = readParam(b.params[i].param).data;
      x.forEach((v, k) => expect(Math.abs(v - y[k])).toBeLessThan(2e-6));
    });
  });

  it('a batch of two (image + text-only, right padding) has the token-weighted mean loss of the two', async () => {
    const fam = a.family as unknown as TrainFamily<VideoLLaMA2TrainExample, VideoLLaMA2TrainBatch>;
    const ex0 = await fam.data!.example(0);
    // the same conversation without its image: shorter than ex0's spliced sequence, so it is padded
    const textOnly = { ...ex0, media: null, inputIds: ex0.inputIds.filter((t) => t >= 0), labels: ex0.labels.filter((_, i) => ex0.inputIds[i] >= 0) };
    const loss = (exs: VideoLLaMA2TrainExample[]) => {
      const batch = fam.collate(exs);
      const prep = fam.prepare(batch);
      try {
        return tf.tidy(() => fam.loss(batch, prep).dataSync()[0]);
      } finally {
        prep.dispose();
      }
    };
    const n0 = fam.supervisedTokens(fam.collate([ex0])), n1 = fam.supervisedTokens(fam.collate([textOnly]));
    const both = loss([ex0, textOnly]);
    expect(both).toBeCloseTo((loss([ex0]) * n0 + loss([textOnly]) * n1) / (n0 + n1), 4);
  });

  it('a training step (with accumulation and clipping) leaves tf.memory().numTensors unchanged', async () => {
    const c = await loadTrainer(vq.model, { data: vq.data, dataRoot: vq.dataRoot, gradAccumSteps: 2, maxGradNorm: 0.5 });
    try {
      const batch = c.family.collate([await c.family.data!.example(0)]);
      await expectNoLeak('Trainer.step', () => c.step([batch, batch]));
      const r = c.step([batch]);
      expect(r.gradNorm).toBeGreaterThan(0.5); // clipping was active
    } finally {
      c.dispose();
    }
  });
});

describe('vlm finetune (MiniCPM-V 2.6 tiny)', () => {
  it('is a registered command', () => {
    expect(COMMANDS.map((c) => c.name)).toContain('finetune');
  });

  it('trains resampler + LLM, prints the JSON contract, writes a checkpoint that reloads; vpm untouched', async () => {
    const out = path.join(tmp, 'mc');
    const { out: stdout, err } = await runCli(finetuneCmd, [
      '--model', mc.model, '--data', mc.data, '--data-root', mc.dataRoot, '--tokenizer', mc.tokenizerDir, '--out', out,
      '--tune', 'resampler,llm', '--lr', '1e-3', '--max-steps', '3', '--json',
    ]);
    const j = JSON.parse(stdout);
    // the contract's keys, plus the memory report added later (peak_rss_mb; wasm_heap_mb on wasm)
    expect(Object.keys(j).filter((k) => !['peak_rss_mb', 'wasm_heap_mb'].includes(k)).sort()).toEqual(['epochs', 'family', 'losses', 'ms', 'out', 'steps', 'trainable_scalars', 'trained']);
    expect(j.peak_rss_mb).toBeGreaterThan(0);
    expect(j.family).toBe('minicpmv');
    expect(j.steps).toBe(3);
    expect(j.losses[2]).toBeLessThan(j.losses[0] - 0.5);
    expect(j.trained.some((k: string) => k.startsWith('vpm.'))).toBe(false);
    expect(err.trim().split('\n').filter((l) => l.startsWith('step '))).toHaveLength(3);
    for (const f of ['config.json', 'preprocessor_config.json', 'generation_config.json', 'tokenizer_config.json', 'vocab.json', 'merges.txt', 'finetune_log.json', 'model.safetensors']) {
      expect(fs.existsSync(path.join(out, f))).toBe(true);
    }
    expect(JSON.parse(fs.readFileSync(path.join(out, 'added_tokens.json'), 'utf8')).assistant).toBe(188); // --tokenizer's files
    const reloaded = MiniCPMV.fromPretrained(out, { warn: () => undefined });
    const original = MiniCPMV.fromPretrained(mc.model, { warn: () => undefined });
    try {
      const changed = differing(original, reloaded);
      expect(changed.length).toBe(j.trained.length);
      expect(changed.every((n) => n.startsWith('llm.') || n.startsWith('resampler.'))).toBe(true);
    } finally {
      reloaded.dispose();
      original.dispose();
    }
  });

  it('bad input: clear errors', async () => {
    const base = ['--model', mc.model, '--data', mc.data, '--data-root', mc.dataRoot, '--tokenizer', mc.tokenizerDir, '--max-steps', '1'];
    const run = (extra: string[]) => runCli(finetuneCmd, [...base, '--out', path.join(tmp, `e${Math.random()}`), ...extra]);
    await expect(run(['--tune', 'resampler,visual'])).rejects.toThrow(/unknown trainable prefix 'visual'.*module parts: llm, vpm, resampler/);
    await expect(runCli(finetuneCmd, ['--model', mc.model, '--data', path.join(tmp, 'none.json'), '--out', path.join(tmp, 'x1')])).rejects.toThrow(/none.json: cannot read it \(ENOENT\)/);
    await expect(run(['--epochs', '2'])).rejects.toThrow(UsageError);
    await expect(run(['--num-frames', '4'])).rejects.toThrow(/VideoLLaMA 2 options; this is a MiniCPM-V checkpoint/);
    await expect(run(['--lr', '0'])).rejects.toThrow(/--lr: must be > 0/);
    await expect(runCli(finetuneCmd, ['--model', mc.model, '--data', mc.data])).rejects.toThrow('--out is required');
    // a sample without its image, and one whose labels are all masked
    const bad = path.join(tmp, 'bad.json');
    fs.writeFileSync(bad, JSON.stringify([{ id: 'no-img', image: 'gone.png', conversations: [{ role: 'user', content: '<image>hi' }, { role: 'assistant', content: 'yo' }] }]));
    await expect(runCli(finetuneCmd, ['--model', mc.model, '--data', bad, '--tokenizer', mc.tokenizerDir, '--out', path.join(tmp, 'x2'), '--max-steps', '1']))
      .rejects.toThrow(/sample 0 \(id "no-img"\), image '<image>': media file 'gone.png' not found/);
    const masked = path.join(tmp, 'masked.json');
    fs.writeFileSync(masked, JSON.stringify([{ image: path.join(mc.dataRoot, 'input_image.png'), conversations: [{ role: 'user', content: '<image>hi' }, { role: 'assistant', content: '' }] }]));
    await expect(runCli(finetuneCmd, ['--model', mc.model, '--data', masked, '--tokenizer', mc.tokenizerDir, '--out', path.join(tmp, 'x3'), '--max-steps', '1']))
      .rejects.toThrow(/no tokens available to compute loss/);
  });

  it('VideoLLaMA 2: the vision tower cannot be tuned', async () => {
    await expect(runCli(finetuneCmd, ['--model', vq.model, '--data', vq.data, '--data-root', vq.dataRoot, '--out', path.join(tmp, 'x4'), '--tune', 'vision_tower']))
      .rejects.toThrow(/selects the vision tower, which VideoLLaMA 2 never trains/);
  });
});
