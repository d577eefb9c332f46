// Multipart uploads (POST /v1/files, RAG documents): @fastify/multipart's and busboy's refusals of a body as
// OpenAI-shaped errors that say what to send, instead of a 500 'internal error' or a bare 'reach files limit'.

import { ApiError, invalid } from './errors.js';

/**
 * The error to answer for `err`, thrown while reading a multipart body's parts. `what` names the upload ('file',
 * 'document'); `tooLarge` is the 413 for a file past the size limit. Errors of the route's own (ApiError, disk
 * errors with a code) pass through unchanged.
 */
export function multipartError(err: unknown, what: string, tooLarge: () => ApiError): unknown {
  if (err instanceof ApiError || !(err instanceof Error)) return err;
  const code = (err as { code?: unknown }).code;
  if (code === 'FST_FILES_LIMIT') return invalid('file', `send one ${what} per request: the multipart body has more than one file part`);
  if (code === 'FST_REQ_FILE_TOO_LARGE') return tooLarge();
  // busboy's errors carry no code: a body cut short ('Unexpected end of form'), no boundary, a malformed part header
  if (code === undefined && (err as { statusCode?: unknown }).statusCode === undefined) {
    return new ApiError(400, `the multipart/form-data body is malformed (${err.message}); send the ${what} as the part 'file' of a well-formed body`, null, 'invalid_multipart');
  }
  return err;
}
