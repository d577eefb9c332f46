// The console's client for the floe HTTP API: the key from localStorage, JSON calls, SSE streams, honest errors.

import { createParser } from 'eventsource-parser';

const KEY = 'floe.apiKey';

export const apiKey = () => localStorage.getItem(KEY) ?? '';
export const setApiKey = (k) => (k ? localStorage.setItem(KEY, k) : localStorage.removeItem(KEY));

/** A failed API call, carrying what the server returned: HTTP status and error.message. */
export class ApiError extends Error {
  constructor(status, message, body = null) {
    super(status ? `${status}: ${message}` : message);
    this.status = status;
    this.body = body;
  }
}

const headers = (json) => ({
  ...(json ? { 'content-type': 'application/json' } : {}),
  ...(apiKey() ? { authorization: `Bearer ${apiKey()}` } : {}),
});

async function failure(r) {
  const text = await r.text();
  let msg = text || r.statusText;
  let body = null;
  try {
    body = JSON.parse(text);
    msg = body?.error?.message ?? msg;
  } catch { /* not JSON: show the text as is */ }
  return new ApiError(r.status, msg, body);
}

/** GET or POST a JSON route; throws ApiError with the server's status and message. */
export async function call(path, body, signal) {
  let r;
  try {
    r = await fetch(path, { method: body === undefined ? 'GET' : 'POST', headers: headers(body !== undefined), body: body === undefined ? undefined : JSON.stringify(body), signal });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, `cannot reach the server: ${e.message}`);
  }
  if (!r.ok) throw await failure(r);
  return r.json();
}

/** POST with stream: true; calls onChunk(obj) per `data:` event until [DONE]; an error event throws ApiError. */
export async function stream(path, body, onChunk, signal) {
  let r;
  try {
    r = await fetch(path, { method: 'POST', headers: headers(true), body: JSON.stringify(body), signal });
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, `cannot reach the server: ${e.message}`);
  }
  if (!r.ok) throw await failure(r);
  let err = null;
  let done = false;
  const parser = createParser({
    onEvent(ev) {
      if (ev.data === '[DONE]') done = true;
      if (done || err) return;
      const obj = JSON.parse(ev.data);
      // Errors after the headers arrive as an event (the status was already 200).
      if (obj.error) err = new ApiError(0, `error during the stream (${obj.error.code ?? obj.error.type}): ${obj.error.message}`, obj);
      else onChunk(obj);
    },
  });
  const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
  for (;;) {
    let chunk;
    try {
      chunk = await reader.read();
    } catch (e) {
      if (e.name === 'AbortError') throw e;
      // The browser's own words ('network error') do not say what happened: the server went away mid-answer.
      throw new ApiError(0, `the connection to the server broke off during the answer (${e.message})`);
    }
    if (chunk.done) break;
    parser.feed(chunk.value);
    if (err) {
      void reader.cancel();
      throw err;
    }
  }
  // Every floe stream ends with [DONE]; a stream closed before it was cut off, not finished.
  if (!done) throw new ApiError(0, 'the server closed the stream before the answer finished ([DONE] never came)');
}

/** The server's own address, for snippets the user can paste. */
export const origin = () => location.origin;
