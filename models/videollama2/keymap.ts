/**
 * VideoLLaMA2 key maps (import and export), as data.
 *
 * Main checkpoint (`state_dict()` of `Videollama2{Mistral,Qwen2}ForCausalLM`) → our module tree
 * (models/videollama2/modeling.ts: `llm` = CausalLM, `vision_tower`, `mm_projector`):
 *   model.vision_tower.*   → vision_tower.*      (→ .vision_tower.vision_model.* : HF CLIP/SigLIP vision model)
 *   model.mm_projector.*   → mm_projector.*
 *   model.*                → llm.model.*         (embed_tokens, layers, norm)
 *   lm_head.*              → llm.lm_head.*
 * Release-era tower checkpoint (`<mm_vision_tower>/model.safetensors`, HF CLIPVisionModel /
 * SiglipVisionModel — or a full CLIPModel / SiglipModel, whose text half `from_pretrained` of the
 * vision model ignores):
 *   vision_model.*         → vision_tower.vision_tower.vision_model.*
 *
 * Ignored (read by nobody): the tower's `post_layernorm.*`, SigLIP's pooling `head.*`, encoder
 * layers after `mm_vision_select_layer` (never run, not built), and the buffers older
 * transformers versions saved (`embeddings.position_ids`, `rotary_emb.inv_freq`); in a tower
 * checkpoint also the text model and projections.
 */
import { KeyMap } from '../../weights/keymap';

export interface TowerLayers {
  /** `num_hidden_layers` of the tower config. */
  numHiddenLayers: number;
  /** Layers built (the rest are ignored). */
  numLayersBuilt: number;
}

const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** Ignore patterns for a tower whose HF `vision_model.` prefix is `prefix`. */
function towerIgnores(prefix: string, t: TowerLayers): RegExp[] {
  const p = esc(prefix);
  const out = [
    new RegExp(`^${p}(post_layernorm|head)\\.`),
    new RegExp(`^${p}embeddings\\.position_ids$`),
  ];
  const unused = Array.from({ length: t.numHiddenLayers - t.numLayersBuilt }, (_, i) => t.numLayersBuilt + i);
  if (unused.length) out.push(new RegExp(`^${p}encoder\\.layers\\.(${unused.join('|')})\\.`));
  return out;
}

/** Main checkpoint ↔ VideoLLaMA2 module keys. */
export function videollama2KeyMap(tower: TowerLayers): KeyMap {
  return {
    name: 'videollama2',
    renames: [
      ['model.vision_tower.', 'vision_tower.'],
      ['model.mm_projector.', 'mm_projector.'],
      ['model.', 'llm.model.'],
      ['lm_head.', 'llm.lm_head.'],
    ],
    ignore: [
      ...towerIgnores('model.vision_tower.vision_tower.vision_model.', tower),
      /^model\.layers\.\d+\.self_attn\.rotary_emb\.inv_freq$/,
    ],
  };
}

/** Tower directory checkpoint (`vision_model.*`) ↔ VideoLLaMA2 module keys. */
export function towerKeyMap(tower: TowerLayers): KeyMap {
  return {
    name: 'videollama2 vision tower',
    renames: [['vision_model.', 'vision_tower.vision_tower.vision_model.']],
    ignore: [
      ...towerIgnores('vision_model.', tower),
      /^text_model\./, /^(visual_projection|text_projection)\./, /^logit_(scale|bias)$/,
    ],
  };
}
