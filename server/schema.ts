/**
 * JSON schema of `POST /v1/chat/completions` (validated by fastify/Ajv before the handler runs;
 * the error names the offending field in `param`). Unknown top-level fields are ignored, as
 * OpenAI-compatible servers do; unsupported values of known ones (n > 1, logprobs) are refused.
 */
const nullable = (t: string) => ({ type: [t, 'null'] });

const textPart = {
  type: 'object',
  required: ['type', 'text'],
  properties: { type: { const: 'text' }, text: { type: 'string' } },
};
const urlObject = {
  type: 'object',
  required: ['url'],
  properties: { url: { type: 'string', minLength: 1 }, detail: { type: 'string' } },
};
const imagePart = { type: 'object', required: ['type', 'image_url'], properties: { type: { const: 'image_url' }, image_url: urlObject } };
const videoUrlPart = { type: 'object', required: ['type', 'video_url'], properties: { type: { const: 'video_url' }, video_url: urlObject } };
const videoPart = { type: 'object', required: ['type', 'video'], properties: { type: { const: 'video' }, video: { type: 'string', minLength: 1 } } };

export const MAX_MESSAGES = 256;
export const MAX_PARTS = 64;

export const chatCompletionSchema = {
  type: 'object',
  required: ['messages'],
  properties: {
    model: { type: 'string' },
    messages: {
      type: 'array',
      minItems: 1,
      maxItems: MAX_MESSAGES,
      items: {
        type: 'object',
        required: ['role', 'content'],
        properties: {
          role: { enum: ['system', 'developer', 'user', 'assistant'] },
          name: { type: 'string' },
          content: {
            type: ['string', 'array'],
            minItems: 1,
            maxItems: MAX_PARTS,
            items: {
              type: 'object',
              required: ['type'],
              discriminator: { propertyName: 'type' },
              oneOf: [textPart, imagePart, videoUrlPart, videoPart],
            },
          },
        },
      },
    },
    max_tokens: { type: ['integer', 'null'], minimum: 1 },
    max_completion_tokens: { type: ['integer', 'null'], minimum: 1 },
    temperature: { type: ['number', 'null'], minimum: 0, maximum: 2 },
    top_p: { type: ['number', 'null'], exclusiveMinimum: 0, maximum: 1 },
    top_k: { type: ['integer', 'null'], minimum: -1 },
    seed: { type: ['integer', 'null'], minimum: 0, maximum: 4294967295 },
    repetition_penalty: { type: ['number', 'null'], exclusiveMinimum: 0, maximum: 10 },
    stop: {
      anyOf: [
        { type: 'string', minLength: 1 },
        { type: 'array', maxItems: 4, items: { type: 'string', minLength: 1 } },
        { type: 'null' },
      ],
    },
    n: { type: ['integer', 'null'], enum: [1, null] },
    logprobs: { type: ['boolean', 'null'], enum: [false, null] },
    stream: nullable('boolean'),
    stream_options: {
      type: ['object', 'null'],
      properties: { include_usage: nullable('boolean') },
    },
  },
} as const;
