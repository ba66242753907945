/**
 * OpenAI-style errors: every 4xx/5xx body is `{"error": {"message", "type", "param", "code"}}`.
 * Messages are written for the client; stacks never leave the server.
 */
export type ErrorType =
  | 'invalid_request_error'
  | 'authentication_error'
  | 'not_found_error'
  | 'rate_limit_error'
  | 'timeout_error'
  | 'server_error'
  | 'service_unavailable_error';

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type: ErrorType = 'invalid_request_error',
    readonly param: string | null = null,
    readonly code: string | null = null,
    /** Extra response headers (Retry-After). */
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = 'ApiError';
  }

  body(): { error: { message: string; type: string; param: string | null; code: string | null } } {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

export const badRequest = (message: string, param: string | null = null, code: string | null = null): ApiError =>
  new ApiError(400, message, 'invalid_request_error', param, code);

/** Ajv instance path + keyword params → the OpenAI `param` (`messages[0].content[1].image_url.url`). */
export function paramFromValidation(instancePath: string, params: Record<string, unknown> = {}): string | null {
  const parts = instancePath.split('/').filter(Boolean);
  const extra = (params.missingProperty ?? params.additionalProperty ?? params.tag) as string | undefined;
  if (extra) parts.push(extra);
  let out = '';
  for (const p of parts) out += /^\d+$/.test(p) ? `[${p}]` : out ? `.${p}` : p;
  return out || null;
}
