import * as tf from '@tensorflow/tfjs';
import { MiniCPMV } from '../../models/minicpmv/modeling';
import { VideoLLaMA2 } from '../../models/videollama2/modeling';
import { modelFixture } from '../helpers/fixtures';
import { expectNoLeak } from '../helpers/memory';

// expectNoLeak runs once to warm up: rotate_half's [D, D] permutation matrix is a process-wide
// constant (layers/rotary.ts), created on first use.
describe('dispose frees everything a model allocated (weights, rotary tables, caches)', () => {
  it('MiniCPMV: load, run, dispose', async () => {
    await expectNoLeak('MiniCPMV load+forward+dispose', () => {
      const m = MiniCPMV.fromPretrained(modelFixture('minicpmv26_tiny')!, { warn: () => undefined });
      const z = tf.zeros([1, 3, m.config.llm.hiddenSize]) as tf.Tensor3D;
      tf.dispose([m.llm.forward(z), z]);
      m.dispose();
    });
  });
  it('VideoLLaMA2: load, run, dispose', async () => {
    await expectNoLeak('VideoLLaMA2 load+forward+dispose', async () => {
      const m = await VideoLLaMA2.fromPretrained(modelFixture('videollama2_siglip_qwen2_tiny')!, { log: () => undefined });
      const z = tf.zeros([1, 3, m.config.llm.hiddenSize]) as tf.Tensor3D;
      tf.dispose([m.llm.forward(z), z]);
      m.dispose();
    });
  });
});
