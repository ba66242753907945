/**
 * The decoder-only LLM shared by Qwen2 and Mistral (HF v4.40 `modeling_qwen2.py` /
 * `modeling_mistral.py`; the two differ only in q/k/v biases and the sliding window):
 *
 *   DecoderLayer: h = x + self_attn(input_layernorm(x)); y = h + mlp(post_attention_layernorm(h))
 *   DecoderModel: embed_tokens → layers → norm        (checkpoint prefix `model.`)
 *   CausalLM:     model → lm_head                      (`lm_head.weight`, or tied to embed_tokens)
 *
 * Forward works from token ids or from `inputs_embeds` (how both VLMs call it), with an optional
 * KV cache. `taps` receive the golden-named intermediates (`llm.inputs_embeds`, `llm.layer0`,
 * `llm.layer_last`, `llm.norm`) for `vlm trace` and the parity tests.
 *
 * Shape letters: B batch, T new positions, S cached + new, E hidden, V vocab.
 */
import * as tf from '@tensorflow/tfjs';
import { GQAttention, causalMask } from './attention';
import { checkpointLayer } from './checkpointing';
import { fusedDecodeLayers } from './fused_decode';
import { KVCache } from './kv_cache';
import { Embedding, Linear, assertIdsInRange } from './linear';
import { ActName, GatedMLP } from './mlp';
import { Module, register } from './module';
import { RMSNorm } from './norms';
import { RotaryEmbedding } from './rotary';

/** The LLM hyper-parameters, in config.json names' meaning (camelCase). */
export interface DecoderConfig {
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numHiddenLayers: number;
  numAttentionHeads: number;
  numKeyValueHeads: number;
  headDim: number;
  hiddenAct: ActName;
  maxPositionEmbeddings: number;
  rmsNormEps: number;
  ropeTheta: number;
  tieWordEmbeddings: boolean;
  /** Mask window (HF applies `config.sliding_window` in the eager mask when set). */
  slidingWindow: number | null;
  /** Qwen2: q/k/v projections have biases. */
  qkvBias: boolean;
}

/** Receives named intermediate tensors; must not dispose them (they are disposed by the caller's tidy). */
export type { Tap } from './taps';
import type { Tap } from './taps';

export class DecoderLayer extends Module {
  static className = 'DecoderLayer';
  self_attn: GQAttention;
  mlp: GatedMLP;
  input_layernorm: RMSNorm;
  post_attention_layernorm: RMSNorm;

  constructor(cfg: DecoderConfig) {
    super();
    this.self_attn = new GQAttention({
      hiddenSize: cfg.hiddenSize, numHeads: cfg.numAttentionHeads, numKVHeads: cfg.numKeyValueHeads,
      headDim: cfg.headDim, qkvBias: cfg.qkvBias,
    });
    this.mlp = new GatedMLP(cfg.hiddenSize, cfg.intermediateSize, cfg.hiddenAct);
    this.input_layernorm = new RMSNorm(cfg.hiddenSize, cfg.rmsNormEps);
    this.post_attention_layernorm = new RMSNorm(cfg.hiddenSize, cfg.rmsNormEps);
  }

  forward(x: tf.Tensor3D, cos: tf.Tensor, sin: tf.Tensor, mask: tf.Tensor | null, cache: KVCache | null, layerIdx: number): tf.Tensor3D {
    return tf.tidy(() => {
      const h = tf.add(x, this.self_attn.forward(this.input_layernorm.forward(x) as tf.Tensor3D, cos, sin, mask, cache ? cache.layers[layerIdx] : null));
      return tf.add(h, this.mlp.forward(this.post_attention_layernorm.forward(h))) as tf.Tensor3D;
    });
  }
}
register(DecoderLayer);

export interface DecoderForwardOptions {
  /** Appended to in place; positions continue from `cache.seqLength`. */
  cache?: KVCache | null;
  /** Explicit position ids [T] or [B, T] (default: past .. past+T−1). */
  positionIds?: tf.Tensor | null;
  /** 0/1 padding mask over all S positions, one row per batch entry. */
  attentionMask?: number[][] | null;
  taps?: Tap | null;
}

export class DecoderModel extends Module {
  static className = 'DecoderModel';
  readonly cfg: DecoderConfig;
  embed_tokens: Embedding;
  layers: DecoderLayer[];
  norm: RMSNorm;
  readonly rotary: RotaryEmbedding;

  constructor(cfg: DecoderConfig) {
    super();
    this.cfg = cfg;
    this.embed_tokens = new Embedding(cfg.vocabSize, cfg.hiddenSize);
    this.layers = Array.from({ length: cfg.numHiddenLayers }, () => new DecoderLayer(cfg));
    this.norm = new RMSNorm(cfg.hiddenSize, cfg.rmsNormEps);
    this.rotary = new RotaryEmbedding(cfg.headDim, cfg.ropeTheta);
  }

  override disposeBuffers(): void {
    this.rotary.dispose();
  }

  /** Token ids [B, T] (int32) → embeddings [B, T, E]; ids are range-checked on the host first. */
  embed(ids: tf.Tensor): tf.Tensor3D {
    assertIdsInRange(ids.dataSync(), this.cfg.vocabSize);
    return this.embed_tokens.forward(ids) as tf.Tensor3D;
  }

  /** inputs_embeds [B, T, E] → last hidden state after `norm` [B, T, E]. */
  forward(inputsEmbeds: tf.Tensor3D, opts: DecoderForwardOptions = {}): tf.Tensor3D {
    const [B, T, E] = inputsEmbeds.shape;
    if (E !== this.cfg.hiddenSize) throw new Error(`inputs_embeds has hidden size ${E}, the model expects ${this.cfg.hiddenSize}`);
    const cache = opts.cache ?? null;
    const past = cache ? cache.seqLength : 0;
    if (past + T > this.cfg.maxPositionEmbeddings) {
      throw new Error(`sequence of ${past + T} positions (${past} cached + ${T} new) exceeds max_position_embeddings = ${this.cfg.maxPositionEmbeddings}`);
    }
    if (opts.attentionMask && (opts.attentionMask.length !== B || opts.attentionMask.some((r) => r.length !== past + T))) {
      throw new Error(`attention mask must be [${B}, ${past + T}] (batch, cached + new positions)`);
    }
    return tf.tidy(() => {
      const [cos, sin] = opts.positionIds ? this.rotary.cosSin(opts.positionIds) : this.rotary.cosSinRange(past, T);
      const mask = causalMask({ pastLength: past, T, padding: opts.attentionMask, slidingWindow: this.cfg.slidingWindow });
      const tap = opts.taps ?? null;
      tap?.('llm.inputs_embeds', inputsEmbeds);
      let h = inputsEmbeds;
      const L = this.layers.length;
      // decode with native weights: every layer in one native call (layers/fused_decode.ts), same result
      const fused = tap ? null : fusedDecodeLayers(this.layers, h, cos, sin, mask, cache);
      for (let i = 0; i < (fused ? 0 : L); i++) {
        const layer = this.layers[i];
        const next = checkpointLayer(layer, (t: tf.Tensor3D, [c, sn, mk]) => layer.forward(t, c!, sn!, mk, cache, i), h, [cos, sin, mask]);
        if (h !== inputsEmbeds && !tap) h.dispose(); // keep peak memory at ~2 activations
        h = next;
        if (tap && i === 0) tap('llm.layer0', h);
        if (tap && i === L - 1) tap('llm.layer_last', h);
      }
      if (fused) h = fused;
      const out = this.norm.forward(h) as tf.Tensor3D;
      tap?.('llm.norm', out);
      return out;
    });
  }
}
register(DecoderModel);

export interface CausalLMForwardOptions extends DecoderForwardOptions {
  /** 'all' positions (trace, training) or only the 'last' (generation). Default 'all'. */
  logits?: 'all' | 'last';
}

export class CausalLM extends Module {
  static className = 'CausalLM';
  readonly cfg: DecoderConfig;
  model: DecoderModel;
  lm_head: Linear;

  constructor(cfg: DecoderConfig) {
    super();
    this.cfg = cfg;
    this.model = new DecoderModel(cfg);
    this.lm_head = new Linear(cfg.hiddenSize, cfg.vocabSize, { chunked: true, layout: cfg.tieWordEmbeddings ? 'same' : undefined });
    if (cfg.tieWordEmbeddings) this.lm_head.weight.tie(this.model.embed_tokens.weight);
  }

  /** inputs_embeds [B, T, E] → logits [B, T, V] (or [B, 1, V] with logits: 'last'). */
  forward(inputsEmbeds: tf.Tensor3D, opts: CausalLMForwardOptions = {}): tf.Tensor3D {
    return tf.tidy(() => {
      let h = this.model.forward(inputsEmbeds, opts);
      if (opts.logits === 'last') {
        const [B, T, E] = h.shape;
        h = h.slice([0, T - 1, 0], [B, 1, E]);
      }
      const logits = this.lm_head.forward(h) as tf.Tensor3D;
      opts.taps?.('llm.logits', logits);
      return logits;
    });
  }

  /** Convenience: token ids [B, T] → logits. */
  forwardIds(ids: tf.Tensor2D, opts: CausalLMForwardOptions = {}): tf.Tensor3D {
    return tf.tidy(() => this.forward(this.model.embed(ids), opts));
  }
}
register(CausalLM);
