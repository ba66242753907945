/**
 * Qwen2ForCausalLM (HF v4.40 `models/qwen2/modeling_qwen2.py`): the shared decoder of
 * layers/decoder.ts with q/k/v biases. Checkpoint keys: `model.embed_tokens.weight`,
 * `model.layers.N.{self_attn.{q,k,v}_proj.{weight,bias}, self_attn.o_proj.weight,
 * mlp.{gate,up,down}_proj.weight, input_layernorm.weight, post_attention_layernorm.weight}`,
 * `model.norm.weight`, `lm_head.weight` (absent when tied).
 */
import { CausalLM, DecoderConfig } from '../../layers/decoder';
import { register } from '../../layers/module';

export class Qwen2ForCausalLM extends CausalLM {
  static override className = 'Qwen2ForCausalLM';
  constructor(cfg: DecoderConfig) {
    if (!cfg.qkvBias) throw new Error('Qwen2 has q/k/v biases (qkvBias must be true)');
    super(cfg);
  }
}
register(Qwen2ForCausalLM);
