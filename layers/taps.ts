/**
 * A tap sees an intermediate tensor under its golden name (`vpm.layer0`, `stc.s1`, `llm.norm`, …)
 * while a forward pass runs; `vlm trace` and the parity tests collect them. The tensor is only
 * valid during the call: keep a copy. Models expose taps through the contract (models/contract.ts).
 */
import type * as tf from '@tensorflow/tfjs';

export type Tap = (name: string, t: tf.Tensor) => void;
