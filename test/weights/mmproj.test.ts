/**
 * llama.cpp's practice for multimodal models: `--quantize q8_0|q4_0` quantizes the LLM, while the
 * vision encoder and the connector (its `mmproj` file) stay f16 — at load and in `vlm convert`.
 */
import { loadNativeAddon } from '../../layers/native_weight';
import { Module } from '../../layers/module';
import { MiniCPMV } from '../../models/minicpmv/modeling';
import { VideoLLaMA2 } from '../../models/videollama2/modeling';
import { planConversion } from '../../weights/convert';
import { modelFixture } from '../helpers/fixtures';

const { addon } = loadNativeAddon();
const itIf = addon ? it : it.skip;

/** Native dtype of every natively held parameter, by module key. */
function dtypes(m: Module): Map<string, string> {
  const out = new Map<string, string>();
  for (const [k, p] of m.namedParams()) if (p.storage.dtype !== 'f32') out.set(k, p.storage.dtype);
  return out;
}

describe('vision encoder and connector stay f16 under q8_0 / q4_0', () => {
  itIf('MiniCPM-V at load: vpm and resampler f16, the LLM q8_0', () => {
    const m = MiniCPMV.fromPretrained(modelFixture('minicpmv26_tiny')!, { quantize: 'q8_0', warn: () => undefined });
    try {
      const d = dtypes(m);
      const vision = [...d].filter(([k]) => k.startsWith('vpm.') || k.startsWith('resampler.'));
      const llm = [...d].filter(([k]) => k.startsWith('llm.'));
      expect(vision.length).toBeGreaterThan(0);
      for (const [k, t] of vision) expect([k, t]).toEqual([k, 'f16']);
      expect(llm.some(([, t]) => t === 'q8_0')).toBe(true);
      expect(llm.some(([, t]) => t === 'f16')).toBe(false);
    } finally {
      m.dispose();
    }
  });

  it('VideoLLaMA 2 in vlm convert: vision_tower and mm_projector F16, the LLM Q4_0', () => {
    const fw = VideoLLaMA2.unloaded(modelFixture('videollama2_siglip_qwen2_tiny')!);
    try {
      const { items } = planConversion(fw.module, fw.sources, 'q4_0', fw.mmproj);
      const vision = items.filter((it) => it.moduleKey && /^(vision_tower|mm_projector)\./.test(it.moduleKey) && it.convert);
      const llm = items.filter((it) => it.moduleKey?.startsWith('llm.') && it.convert);
      expect(vision.length).toBeGreaterThan(0);
      for (const it of vision) expect([it.name, it.type]).toEqual([it.name, 'F16']);
      expect(llm.some((it) => it.type === 'Q4_0')).toBe(true);
      expect(llm.some((it) => it.type === 'F16')).toBe(false);
    } finally {
      for (const s of fw.sources) s.checkpoint.close();
      fw.module.dispose();
    }
  });
});
