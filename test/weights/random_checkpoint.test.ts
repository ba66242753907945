/**
 * Random-weight checkpoints (weights/random_checkpoint.ts, models/<family>/random_checkpoint.ts,
 * `vlm make-random`):
 * - MiniCPM-V 2.6 unmodified, planned only: exactly the 789 names of the released index, its shard
 *   assignment, and total bytes = its total_size (16.2 GB) — nothing written;
 * - each family (minicpmv, videollama2, videollama2.1) written at small widths (configOverrides:
 *   the real vocabularies, image sizes and tokenizers stay), then loaded STRICTLY by the family's
 *   loader (loadChatModel) and run for a 1-token chat with an image;
 * - the byte layout: headers from the shapes, sharding by size with an HF index, bf16 values
 *   (norms 1, biases 0, noise of std ≈ 0.02), deterministic per seed, nothing left on failure.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { rowForRandomVariant } from '../../models/families';
import { loadChatModel } from '../../models/registry';
import { RandomSpecOptions, planRandomCheckpoint, writeRandomCheckpoint } from '../../weights/random_checkpoint';
import { SafetensorsFile } from '../../weights/safetensors';
import { parseCommand } from '../../scripts/cli';
import { command } from '../../scripts/make_random';
import { fixture } from '../helpers/golden';

const IMAGE = fixture('videollama2_clip_mistral_tiny', 'input_image.png');
const spec = (opts: RandomSpecOptions) => rowForRandomVariant(opts.variant)!.randomSpec(opts);

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vlm-random-'));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('MiniCPM-V 2.6 at full size (planned, not written)', () => {
  it('has exactly the 789 names, the shard assignment and the total_size of the released index', () => {
    const index = JSON.parse(fs.readFileSync(fixture('real_configs', 'minicpmv26', 'model.safetensors.index.json'), 'utf8'));
    const plan = planRandomCheckpoint(spec({ variant: 'minicpmv', dtype: 'bf16' }), { dtype: 'bf16', shardBytes: 4e9 });
    const names = plan.spec.tensors.map((t) => t.name).sort();
    expect(names.length).toBe(789);
    expect(names).toEqual(Object.keys(index.weight_map).sort());
    expect(plan.totalSize).toBe(index.metadata.total_size);
    expect(plan.totalSize).toBe(16198350304);
    expect(plan.index!.weight_map).toEqual(index.weight_map);
    expect(plan.shards.map((s) => s.file)).toEqual(['model-00001-of-00004.safetensors', 'model-00002-of-00004.safetensors', 'model-00003-of-00004.safetensors', 'model-00004-of-00004.safetensors']);
  });

  it('full-size VideoLLaMA 2 / 2.1 plans: shards of at most 4 GB, an index, about 16–17 GB', () => {
    for (const variant of ['videollama2', 'videollama2.1']) {
      const plan = planRandomCheckpoint(spec({ variant, dtype: 'bf16' }), { shardBytes: 4e9 });
      expect(plan.shards.length).toBe(5);
      for (const s of plan.shards) expect(s.dataBytes).toBeLessThanOrEqual(4e9);
      expect(plan.totalSize).toBeGreaterThan(15.5e9);
      expect(plan.totalSize).toBeLessThan(17.5e9);
      expect(Object.keys(plan.index!.weight_map).length).toBe(plan.spec.tensors.length);
    }
  });
});

/** Small widths: every dimension that is not a vocabulary, an image size or a layer count of the release. */
const SMALL: Record<string, RandomSpecOptions> = {
  minicpmv: {
    variant: 'minicpmv', dtype: 'bf16', llmLayers: 1, visionLayers: 1,
    configOverrides: { config: { hidden_size: 128, intermediate_size: 64, num_attention_heads: 2, num_key_value_heads: 1 }, vision: { hidden_size: 32, intermediate_size: 64, num_attention_heads: 2 } },
  },
  videollama2: {
    variant: 'videollama2', dtype: 'bf16', llmLayers: 1, visionLayers: 2,
    configOverrides: { config: { hidden_size: 64, intermediate_size: 64, num_attention_heads: 2, num_key_value_heads: 1 }, vision: { hidden_size: 32, intermediate_size: 64, num_attention_heads: 2 } },
  },
  'videollama2.1': {
    variant: 'videollama2.1', dtype: 'bf16', llmLayers: 1, visionLayers: 2,
    configOverrides: { config: { hidden_size: 32, intermediate_size: 64, num_attention_heads: 2, num_key_value_heads: 1 }, vision: { hidden_size: 32, intermediate_size: 64, num_attention_heads: 2 } },
  },
};

describe.each(Object.keys(SMALL))('%s at small widths: written, loaded strictly, one chat token', (variant) => {
  it('loads with the strict loader and answers', async () => {
    const out = path.join(tmp, variant);
    const plan = planRandomCheckpoint(spec(SMALL[variant]), { shardBytes: 5e6 });
    expect(plan.totalSize).toBeLessThan(80e6);
    writeRandomCheckpoint(plan, out, { seed: 1 });
    // sharded with an index (5 MB shards), files beside
    const index = JSON.parse(fs.readFileSync(path.join(out, 'model.safetensors.index.json'), 'utf8'));
    expect(index.metadata.total_size).toBe(plan.totalSize);
    expect(Object.keys(index.weight_map).length).toBe(plan.spec.tensors.length);
    expect(fs.readdirSync(out).filter((f) => f.endsWith('.safetensors')).length).toBe(plan.shards.length);
    expect(fs.readdirSync(tmp).filter((f) => f.includes('.partial-'))).toEqual([]);

    const chat = await loadChatModel(out, { quantize: 'f32', log: () => undefined });
    try {
      const r = await chat.chat([{ role: 'user', content: [{ type: 'image', image: IMAGE }, { type: 'text', text: 'What is this?' }] }], { maxNewTokens: 1 });
      expect(r.tokenIds.length).toBe(1);
    } finally {
      chat.dispose();
    }
    fs.rmSync(out, { recursive: true, force: true });
  });
});

describe('the bytes', () => {
  const small = () => spec(SMALL['videollama2.1']);

  it('headers from shapes; bf16 values: norms 1, biases 0, noise of std about 0.02; same seed → same bytes', () => {
    const plan = planRandomCheckpoint(small(), { shardBytes: 1e12 });
    expect(plan.index).toBeNull();
    const a = path.join(tmp, 'a'), b = path.join(tmp, 'b'), c = path.join(tmp, 'c');
    writeRandomCheckpoint(plan, a, { seed: 3 });
    writeRandomCheckpoint(plan, b, { seed: 3 });
    writeRandomCheckpoint(plan, c, { seed: 4 });
    const fa = path.join(a, 'model.safetensors');
    expect(fs.statSync(fa).size).toBe(plan.fileBytes);
    expect(fs.readFileSync(fa).equals(fs.readFileSync(path.join(b, 'model.safetensors')))).toBe(true);
    expect(fs.readFileSync(fa).equals(fs.readFileSync(path.join(c, 'model.safetensors')))).toBe(false);
    const st = SafetensorsFile.open(fa);
    try {
      expect(st.keys().sort()).toEqual(plan.spec.tensors.map((t) => t.name).sort());
      const norm = st.read('model.norm.weight');
      expect(st.entry('model.norm.weight').dtype).toBe('BF16');
      expect([...norm.data].every((x) => x === 1)).toBe(true);
      const bias = st.read('model.layers.0.self_attn.q_proj.bias');
      expect([...bias.data].every((x) => x === 0)).toBe(true);
      const w = st.read('model.embed_tokens.weight').data as Float32Array;
      let s = 0, s2 = 0;
      for (let i = 0; i < w.length; i++) {
        s += w[i];
        s2 += w[i] * w[i];
      }
      const mean = s / w.length, sd = Math.sqrt(s2 / w.length - mean * mean);
      expect(Math.abs(mean)).toBeLessThan(1e-3);
      expect(sd).toBeGreaterThan(0.019);
      expect(sd).toBeLessThan(0.021);
    } finally {
      st.close();
    }
    for (const d of [a, b, c]) fs.rmSync(d, { recursive: true, force: true });
  });

  it('refuses a non-empty --out without force; with force replaces it; an error leaves no partial directory', () => {
    const plan = planRandomCheckpoint(small(), { dtype: 'f32', shardBytes: 1e12 });
    const out = path.join(tmp, 'existing');
    fs.mkdirSync(out);
    fs.writeFileSync(path.join(out, 'old.txt'), 'x');
    expect(() => writeRandomCheckpoint(plan, out)).toThrow(/not empty/);
    writeRandomCheckpoint(plan, out, { force: true });
    expect(fs.existsSync(path.join(out, 'old.txt'))).toBe(false);
    expect(SafetensorsFile.open(path.join(out, 'model.safetensors')).entry('lm_head.weight').dtype).toBe('F32');
    const bad = { ...plan, spec: { ...plan.spec, files: { 'a/b/../../../escape/x': 'y' } } };
    expect(() => writeRandomCheckpoint(bad, path.join(tmp, 'broken'))).toThrow(/outside the checkpoint directory/);
    expect(fs.existsSync(path.join(tmp, 'escape'))).toBe(false);
    expect(fs.existsSync(path.join(tmp, 'broken'))).toBe(false);
    expect(fs.readdirSync(tmp).filter((f) => f.includes('.partial-'))).toEqual([]);
    fs.rmSync(out, { recursive: true, force: true });
  });
});

describe('vlm make-random', () => {
  const run = async (args: string[]): Promise<string> => {
    const { opts, positionals } = parseCommand(command, args);
    const out: string[] = [];
    const spy = jest.spyOn(process.stdout, 'write').mockImplementation((s: string | Uint8Array) => (out.push(String(s)), true));
    const err = jest.spyOn(process.stderr, 'write').mockImplementation(() => true);
    try {
      await command.run(opts, positionals);
    } finally {
      spy.mockRestore();
      err.mockRestore();
    }
    return out.join('');
  };

  it('--dry-run lists the shards and the total without writing', async () => {
    const text = await run(['--family', 'minicpmv', '--dry-run', '--out', path.join(tmp, 'never')]);
    expect(text).toMatch(/model-00004-of-00004\.safetensors {2}451 tensors/);
    expect(text).toMatch(/total: 789 tensors, 16198350304 bytes of bf16/);
    expect(fs.existsSync(path.join(tmp, 'never'))).toBe(false);
    const vl = await run(['--family', 'videollama2', '--llm-layers', '2', '--vision-layers', '2', '--shard-gb', '0.5', '--dry-run']);
    expect(vl).toMatch(/VideoLLaMA2-7B-16F, 2 LLM layers, 2 vision layers \(bf16\)/);
    expect(vl).toMatch(/model-00001-of-0000\d\.safetensors/);
  });

  it('bad arguments are usage errors', async () => {
    await expect(run(['--family', 'llava', '--dry-run'])).rejects.toThrow(/not one of minicpmv, videollama2, videollama2.1/);
    await expect(run(['--family', 'minicpmv', '--dtype', 'q4', '--dry-run'])).rejects.toThrow(/--dtype/);
    await expect(run(['--family', 'minicpmv'])).rejects.toThrow(/--out/);
    await expect(run(['--family', 'minicpmv', '--llm-layers', '0', '--dry-run'])).rejects.toThrow(/--llm-layers/);
  });
});
