import { ConfigError, ConfigReader } from '../../io/config';
import { parseMistralConfig } from '../../models/mistral/config';
import { parseQwen2Config } from '../../models/qwen2/config';

const reader = (o: Record<string, unknown>) => new ConfigReader(o, '/m/config.json');

describe('LLM configs', () => {
  it('fill HF v4.40 defaults and derive head_dim / kv heads', () => {
    const q = parseQwen2Config(reader({ hidden_size: 64, num_attention_heads: 4 }));
    expect(q).toMatchObject({ headDim: 16, numKeyValueHeads: 4, ropeTheta: 10000, rmsNormEps: 1e-6, qkvBias: true, vocabSize: 151936 });
    const m = parseMistralConfig(reader({ hidden_size: 64, num_attention_heads: 4, sliding_window: null }));
    expect(m).toMatchObject({ headDim: 16, numKeyValueHeads: 8, slidingWindow: null, qkvBias: false });
  });
  it('name the file and the key on a wrong or missing field', () => {
    expect(() => parseQwen2Config(reader({ hidden_size: 'big' }))).toThrow(/\/m\/config\.json: 'hidden_size' must be an integer >= 1, got "big"/);
    expect(() => parseMistralConfig(reader({ rms_norm_eps: -1 }))).toThrow(/'rms_norm_eps' must be a positive number, got -1/);
    expect(() => parseQwen2Config(reader({ hidden_act: 'tanhshrink' }))).toThrow(/'hidden_act' must be one of silu/);
    expect(() => parseQwen2Config(reader({ hidden_size: 30, num_attention_heads: 4 }))).toThrow(/hidden_size \(30\) must be divisible by num_attention_heads \(4\)/);
    expect(() => reader({}).int('num_frames')).toThrow(ConfigError);
    expect(() => reader({}).int('num_frames')).toThrow(/'num_frames' is missing/);
  });
});
