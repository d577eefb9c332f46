// Cross-origin requests (CORS), opt-in as vLLM's --allowed-origins: browser apps on the listed origins may call the API.

import cors from '@fastify/cors';
import type { FastifyInstance, FastifyReply } from 'fastify';
import type { OutgoingHttpHeaders } from 'node:http';

// an Origin header as a browser sends it: lowercase scheme and host, a port, no path (RFC 6454 serialization)
const ORIGIN = /^[a-z][a-z0-9+.-]*:\/\/(\[[0-9a-f:.]+\]|[a-z0-9_~.-]+)(:[0-9]{1,5})?$/;

/** What is wrong with one --allowed-origins entry, or null: '*' or scheme://host[:port]. */
export function originProblem(origin: string): string | null {
  if (origin === '') return 'an empty entry (two commas, or a comma at an end)';
  if (origin === '*') return null;
  if (ORIGIN.test(origin)) return null;
  const trimmed = origin.replace(/\/+$/, '');
  const hint = trimmed !== origin && ORIGIN.test(trimmed) ? `; a browser's Origin has no path: '${trimmed}'`
    : ORIGIN.test(origin.toLowerCase()) ? `; a browser sends it in lowercase: '${origin.toLowerCase()}'` : '';
  return `'${origin}' is not an origin: expected scheme://host[:port] as a browser sends it in its Origin header (e.g. http://localhost:3000), or *${hint}`;
}

/** The allowed origins, checked; throws a TypeError naming the first bad entry. */
export function checkAllowedOrigins(origins: readonly string[], what: string): void {
  for (const o of origins) {
    const p = typeof o === 'string' ? originProblem(o) : `${typeof o} is not an origin`;
    if (p) throw new TypeError(`${what}: ${p}`);
  }
  if (origins.includes('*') && origins.length > 1) throw new TypeError(`${what}: '*' allows every origin; give it alone, not with ${origins.filter((o) => o !== '*').join(', ')}`);
}

/**
 * Answer CORS preflights (OPTIONS) before any other onRequest hook (the API key check: a preflight carries no
 * Authorization), and add Access-Control-Allow-Origin to the answers to an allowed origin; a disallowed one gets none,
 * so its browser keeps the answer from the page.
 */
export function registerCors(app: FastifyInstance, origins: readonly string[]): void {
  void app.register(cors, {
    origin: origins.includes('*') ? '*' : [...origins], // an array: an allowed origin is echoed, never a fixed one
    methods: ['GET', 'HEAD', 'POST', 'DELETE'],
    // no allowedHeaders: a preflight's Access-Control-Request-Headers are allowed (Authorization, OpenAI-Organization, X-Stainless-*)
    exposedHeaders: ['x-request-id', 'retry-after'], // the SDKs read both
    maxAge: 600,
  });
}

/** The headers hooks set on a reply (CORS), for a stream that hijacks it and writes its own head. */
export function hookHeaders(reply: FastifyReply): OutgoingHttpHeaders {
  return Object.fromEntries(Object.entries(reply.getHeaders()).filter(([, v]) => v !== undefined)) as OutgoingHttpHeaders;
}
