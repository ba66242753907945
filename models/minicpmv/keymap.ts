/**
 * MiniCPM-V 2.6 key map: checkpoint key ↔ `MiniCPMV` parameter name.
 *
 * The module tree mirrors upstream's `MiniCPMV.state_dict()` (`llm.*` = Qwen2ForCausalLM,
 * `vpm.*` = SiglipVisionTransformer, `resampler.*`), so no key is renamed. The resampler's packed
 * `attn.in_proj_weight`/`in_proj_bias` stay packed (mlx-vlm splits them in `sanitize`; we slice
 * at run time, which keeps export and training on the checkpoint's own tensors). Layouts (Linear
 * [out, in] → [in, out] on stock wasm, the patch Conv2d OIHW → HWIO, `resampler.proj`) are
 * declared on the parameters and undone on export.
 *
 * Ignored: `resampler.pos_embed`, a non-persistent buffer (`register_buffer(..., persistent=False)`)
 * that some re-saved checkpoints carry; we rebuild it (layers/resampler.ts).
 */
import { KeyMap } from '../../weights/keymap';

export const MINICPMV_KEYMAP: KeyMap = {
  name: 'MiniCPM-V 2.6',
  renames: [],
  ignore: [/^resampler\.pos_embed$/],
};
