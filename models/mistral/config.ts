/** Mistral config (HF v4.40 `MistralConfig` defaults); VideoLLaMA2's config extends it. */
import { DecoderConfig } from '../../layers/decoder';
import { ConfigReader } from '../../io/config';
import { parseLLMConfig } from '../llm_config';

export function parseMistralConfig(c: ConfigReader): DecoderConfig {
  return parseLLMConfig(c, { vocabSize: 32000, intermediateSize: 14336, numKeyValueHeads: 8, maxPositionEmbeddings: 4096 * 32, qkvBias: false });
}
