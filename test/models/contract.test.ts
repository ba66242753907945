/**
 * The model contract (models/contract.ts, pipeline.ts, families.ts): one family table read by the
 * registry, one set of generation defaults, unsupported config values refused before any weight is
 * read, and parameter layouts chosen at load from the backend context.
 */
import fs from 'node:fs';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { backendContext } from '../../layers/backend';
import { fillParam } from '../../layers/init';
import { Linear } from '../../layers/linear';
import { ConfigReader } from '../../io/config';
import { DEFAULT_MAX_NEW_TOKENS } from '../../generation';
import { FAMILIES, rowForModelType } from '../../models/families';
import { loadChatModel } from '../../models/registry';
import { ChatPipeline } from '../../models/pipeline';
import { parseQwen2Config } from '../../models/qwen2/config';
import { parseMistralConfig } from '../../models/mistral/config';
import { parseMiniCPMVConfig } from '../../models/minicpmv/config';
import { parseVideoLLaMA2Config } from '../../models/videollama2/config';
import { modelFixture } from '../helpers/fixtures';

const reader = (o: Record<string, unknown>) => new ConfigReader(o, '/m/config.json');
const FIXTURES = ['minicpmv26_tiny', 'videollama2_clip_mistral_tiny', 'videollama2_siglip_qwen2_tiny'];
const readCfg = (name: string) => JSON.parse(fs.readFileSync(path.join(modelFixture(name)!, 'config.json'), 'utf8'));

describe('unsupported config values are refused, naming the file and the key', () => {
  it('rope_scaling (any non-null value)', () => {
    for (const rs of [{ type: 'linear', factor: 2 }, { type: 'dynamic', factor: 4 }, { rope_type: 'yarn', factor: 4 }]) {
      expect(() => parseQwen2Config(reader({ rope_scaling: rs }))).toThrow(/\/m\/config\.json: 'rope_scaling' = .* is not supported/);
      expect(() => parseMistralConfig(reader({ rope_scaling: rs }))).toThrow(/'rope_scaling'/);
    }
    expect(() => parseQwen2Config(reader({ rope_scaling: null }))).not.toThrow();
  });
  it('use_sliding_window: true', () => {
    expect(() => parseQwen2Config(reader({ use_sliding_window: true }))).toThrow(/\/m\/config\.json: 'use_sliding_window' = true is not supported/);
    expect(() => parseQwen2Config(reader({ use_sliding_window: false }))).not.toThrow();
  });
  it('an unknown hidden_act and mm_projector_type', () => {
    expect(() => parseMistralConfig(reader({ hidden_act: 'swish2' }))).toThrow(/\/m\/config\.json: 'hidden_act' must be one of/);
    const vl = readCfg('videollama2_clip_mistral_tiny');
    expect(() => parseVideoLLaMA2Config({ ...vl, mm_projector_type: 'qformer' }, 'v/config.json')).toThrow(/v\/config\.json: 'mm_projector_type' = "qformer" is not supported/);
    expect(() => parseVideoLLaMA2Config({ ...vl, mm_projector_type: 'mlp2x_gelu' }, 'v/config.json')).not.toThrow();
    expect(() => parseVideoLLaMA2Config({ ...vl, rope_scaling: { type: 'linear', factor: 2 } }, 'v/config.json')).toThrow(/v\/config\.json: 'rope_scaling'/);
  });
  it('in the MiniCPM-V config too (the Qwen2 part and the vision part)', () => {
    const mc = readCfg('minicpmv26_tiny');
    expect(() => parseMiniCPMVConfig({ ...mc, rope_scaling: { type: 'linear', factor: 2 } }, 'c.json')).toThrow(/c\.json: 'rope_scaling'/);
    expect(() => parseMiniCPMVConfig({ ...mc, vision_config: { ...mc.vision_config, hidden_act: 'nope' } }, 'c.json')).toThrow(/c\.json: 'vision_config\.hidden_act' must be one of/);
  });
});

describe('the family table', () => {
  it('maps every model_type to exactly one row', () => {
    const types = FAMILIES.flatMap((f) => f.modelTypes);
    expect(new Set(types).size).toBe(types.length);
    for (const f of FAMILIES) for (const t of f.modelTypes) expect(rowForModelType(t)).toBe(f);
    expect(rowForModelType('llava')).toBeNull();
    for (const f of FAMILIES) for (const p of Object.values(f.parts)) expect(fs.existsSync(path.join(__dirname, '..', '..', p))).toBe(true);
  });

  it.each(FIXTURES)('%s loads through the table into a ChatPipeline with the one generation default', async (name) => {
    const dir = modelFixture(name)!;
    const row = rowForModelType(readCfg(name).model_type)!;
    const chat = await loadChatModel(dir, { log: () => undefined });
    try {
      expect(chat).toBeInstanceOf(ChatPipeline);
      expect(chat.family).toBe(row.name);
      const p = chat as unknown as ChatPipeline<never, never>;
      expect(p.generationOptions({} as never).maxNewTokens).toBe(DEFAULT_MAX_NEW_TOKENS);
      expect(DEFAULT_MAX_NEW_TOKENS).toBe(2048);
      const greedy = p.generationOptions({ greedy: true, temperature: 0.5 } as never);
      expect(greedy).toMatchObject({ doSample: false, numBeams: 1, repetitionPenalty: 1 });
      // `sampling` and `doSample` are one switch
      expect(p.generationOptions({ sampling: true } as never).doSample).toBe(true);
      expect(p.generationOptions({ doSample: true } as never).doSample).toBe(true);
      expect(p.generationOptions({ sampling: false } as never).doSample).toBe(false);
    } finally {
      chat.dispose();
    }
  });

  it('an unknown model_type names the file and the supported types', async () => {
    const d = fs.mkdtempSync(path.join(require('node:os').tmpdir(), 'fam-'));
    fs.writeFileSync(path.join(d, 'config.json'), JSON.stringify({ model_type: 'llava' }));
    await expect(loadChatModel(d)).rejects.toThrow(/config\.json: model_type "llava" is not supported \(supported: minicpmv, videollama2/);
    await expect(loadChatModel(path.join(d, 'nope'))).rejects.toThrow(/model directory .*nope does not exist/);
    fs.rmSync(d, { recursive: true });
  });
});

describe('parameter layouts are chosen at load, from the backend context', () => {
  it('a Linear built before loading has no layout until it is loaded; then the backend decides', () => {
    const l = new Linear(8, 4, { bias: true });
    expect(() => l.weight.layout).toThrow(/chosen from the backend at load/);
    fillParam(l.weight, (n) => new Float32Array(n).fill(0.5));
    fillParam(l.bias!, (n) => new Float32Array(n));
    expect(l.weight.layout).toBe(backendContext().preferOutIn ? 'same' : 'transposed');
    expect(l.weight.storage.dtype).toBe('f32');
    expect(l.weight.storage.bytes).toBe(8 * 4 * 4);
    const y = l.forward(tf.ones([2, 8]));
    expect(Array.from(y.dataSync())).toEqual(new Array(8).fill(4));
    y.dispose();
    l.dispose();
  });
});
