/**
 * Prometheus metrics (prom-client, a registry per server): requests and errors by kind, queue
 * length, generation timings as histograms, tokens/s, live tf tensors and the default process
 * metrics (RSS, event-loop lag, …).
 */
import * as tf from '@tensorflow/tfjs';
import client from 'prom-client';

const SECONDS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];

export class Metrics {
  readonly registry = new client.Registry();
  readonly requests = new client.Counter({ name: 'vlm_requests_total', help: 'Chat completion requests by model and HTTP status', labelNames: ['model', 'status', 'stream'], registers: [this.registry] });
  readonly errors = new client.Counter({ name: 'vlm_errors_total', help: 'Failed requests by kind (error code or type)', labelNames: ['kind'], registers: [this.registry] });
  readonly queueLength = new client.Gauge({ name: 'vlm_queue_length', help: 'Requests waiting for the model', labelNames: ['model'], registers: [this.registry] });
  readonly generating = new client.Gauge({ name: 'vlm_generating', help: '1 while the model generates', labelNames: ['model'], registers: [this.registry] });
  readonly promptTokens = new client.Counter({ name: 'vlm_prompt_tokens_total', help: 'Prompt positions (text + image/video features)', labelNames: ['model'], registers: [this.registry] });
  readonly completionTokens = new client.Counter({ name: 'vlm_completion_tokens_total', help: 'Generated tokens', labelNames: ['model'], registers: [this.registry] });
  readonly tokensPerSecond = new client.Histogram({ name: 'vlm_decode_tokens_per_second', help: 'Decode speed per request', labelNames: ['model'], buckets: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000], registers: [this.registry] });
  readonly queueWait = this.hist('vlm_queue_wait_seconds', 'Time waiting in the queue');
  readonly prompt = this.hist('vlm_prompt_seconds', 'Prompt/media preprocessing time (decoding, pixel processing, tokenizing)');
  readonly vision = this.hist('vlm_vision_seconds', 'Vision tower + connector time');
  readonly prefill = this.hist('vlm_prefill_seconds', 'Prompt forward until the first token');
  readonly decode = this.hist('vlm_decode_seconds', 'Decoding time after the first token');
  readonly duration = this.hist('vlm_request_duration_seconds', 'Whole request time, queue included');

  constructor() {
    client.collectDefaultMetrics({ register: this.registry });
    new client.Gauge({
      name: 'vlm_tf_tensors', help: 'Live tf.js tensors (tf.memory().numTensors)', registers: [this.registry],
      collect() {
        this.set(tf.memory().numTensors);
      },
    });
  }

  private hist(name: string, help: string): client.Histogram<'model'> {
    return new client.Histogram({ name, help, labelNames: ['model'], buckets: SECONDS, registers: [this.registry] });
  }
}
