// API errors in OpenAI's shape: {"error": {"message", "type", "param", "code"}} with an HTTP status.

export type ApiStatus = 400 | 401 | 404 | 405 | 413 | 414 | 415 | 429 | 500 | 502 | 503;

const TYPES: Record<ApiStatus, string> = {
  400: 'invalid_request_error', 401: 'invalid_request_error', 404: 'invalid_request_error', 405: 'invalid_request_error',
  413: 'invalid_request_error', 414: 'invalid_request_error', 415: 'invalid_request_error', 429: 'rate_limit_error', 500: 'server_error', 502: 'server_error', 503: 'server_error',
};

export interface ApiErrorBody {
  readonly error: { readonly message: string; readonly type: string; readonly param: string | null; readonly code: string | null };
}

export class ApiError extends Error {
  constructor(
    readonly status: ApiStatus,
    message: string,
    readonly param: string | null = null,
    readonly code: string | null = null,
  ) {
    super(message);
  }

  get type(): string {
    return TYPES[this.status];
  }

  body(): ApiErrorBody {
    return { error: { message: this.message, type: this.type, param: this.param, code: this.code } };
  }
}

/** A 400 about one request field. */
export function invalid(param: string, message: string, code = 'invalid_value'): ApiError {
  return new ApiError(400, message, param, code);
}
