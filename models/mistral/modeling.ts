/**
 * MistralForCausalLM (HF v4.40 `models/mistral/modeling_mistral.py`): the shared decoder of
 * layers/decoder.ts without biases, with `sliding_window` in the mask when set. Checkpoint keys as
 * Qwen2's minus the q/k/v biases.
 */
import { CausalLM, DecoderConfig } from '../../layers/decoder';
import { register } from '../../layers/module';

export class MistralForCausalLM extends CausalLM {
  static override className = 'MistralForCausalLM';
  constructor(cfg: DecoderConfig) {
    if (cfg.qkvBias) throw new Error('Mistral has no q/k/v biases (qkvBias must be false)');
    super(cfg);
  }
}
register(MistralForCausalLM);
