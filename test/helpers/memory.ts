import * as tf from '@tensorflow/tfjs';

/**
 * Runs `fn` once to warm up (caches, lazily built tables), then again, and asserts the second run
 * leaves `tf.memory().numTensors` where it was.
 */
export async function expectNoLeak(what: string, fn: () => unknown | Promise<unknown>): Promise<void> {
  await fn();
  const before = tf.memory().numTensors;
  await fn();
  const after = tf.memory().numTensors;
  if (after !== before) throw new Error(`${what}: tf.memory().numTensors went from ${before} to ${after} (leaked ${after - before})`);
}
