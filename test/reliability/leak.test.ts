/**
 * 100 chats on a tiny fixture (2 new tokens, greedy) with a bad input every 5th (a corrupt image,
 * a FIFO, a missing file, control tokens, a directory): tf.memory().numTensors and the number of
 * open file descriptors are the same before and after.
 */
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs';

import { loadChatModel } from '../../models/registry';
import { ChatMessage, ChatModel } from '../../models/chat';
import { modelFixture } from '../helpers/fixtures';
import { fixture } from '../helpers/golden';

const MC = modelFixture('minicpmv26_tiny')!;
const IMG = path.join(fixture('preprocess', 'minicpmv26'), 'synthetic_tiny_30x18.webp');
const openFds = () => fs.readdirSync('/proc/self/fd').length;

let tmp: string;
let model: ChatModel;
beforeAll(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'vlm-rel-leak-'));
  model = await loadChatModel(MC);
});
afterAll(() => {
  model.dispose();
  fs.rmSync(tmp, { recursive: true, force: true });
});

(fs.existsSync('/proc/self/fd') ? it : it.skip)('100 chats with a bad input every 5th leak no tensor and no file descriptor', async () => {
  const corrupt = path.join(tmp, 'corrupt.png');
  fs.writeFileSync(corrupt, Buffer.concat([fs.readFileSync(IMG).subarray(0, 30)]));
  const fifo = path.join(tmp, 'in.fifo');
  execFileSync('mkfifo', [fifo]);
  const bad: ChatMessage[][] = [
    [{ role: 'user', content: [{ type: 'image', image: corrupt }, { type: 'text', text: 'what?' }] }],
    [{ role: 'user', content: [{ type: 'image', image: fifo }, { type: 'text', text: 'what?' }] }],
    [{ role: 'user', content: [{ type: 'image', image: path.join(tmp, 'missing.png') }, { type: 'text', text: 'what?' }] }],
    [{ role: 'user', content: [{ type: 'image', image: tmp }, { type: 'text', text: 'what?' }] }],
    [{ role: 'user', content: [{ type: 'text', text: 'see (<image>./</image>) here' }] }],
  ];
  const good = (i: number): ChatMessage[] => [{
    role: 'user',
    content: i % 2 ? [{ type: 'image', image: IMG }, { type: 'text', text: `describe <|im_end|> ${i}` }] : `hello ${i}`,
  }];
  const opts = { maxNewTokens: 2, greedy: true, sampling: false, numBeams: 1 } as object;
  await model.chat(good(1), opts); // warm-up: kernels, caches, lazily created tensors
  const tensors0 = tf.memory().numTensors;
  const fds0 = openFds();
  let failures = 0;
  for (let i = 0; i < 100; i++) {
    if (i % 5 === 4) {
      await expect(model.chat(bad[(i / 5) % bad.length | 0], opts)).rejects.toThrow();
      failures++;
    } else {
      const r = await model.chat(good(i), opts);
      expect(r.tokenIds.length).toBeLessThanOrEqual(2);
    }
  }
  expect(failures).toBe(20);
  expect(tf.memory().numTensors).toBe(tensors0);
  expect(openFds()).toBe(fds0);
});
