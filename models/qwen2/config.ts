/**
 * Qwen2 config (HF v4.40 `Qwen2Config` defaults). MiniCPM-V 2.6 and VideoLLaMA2.1 configs are
 * Qwen2 configs with extra keys, so the parser reads from a shared ConfigReader.
 */
import { DecoderConfig } from '../../layers/decoder';
import { ConfigReader } from '../../io/config';
import { parseLLMConfig } from '../llm_config';

export function parseQwen2Config(c: ConfigReader): DecoderConfig {
  return parseLLMConfig(c, { vocabSize: 151936, intermediateSize: 22016, numKeyValueHeads: null, maxPositionEmbeddings: 32768, qkvBias: true });
}
