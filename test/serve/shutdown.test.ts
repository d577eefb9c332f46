// Requests cut short by a graceful stop past its grace period: a retryable 503, never a 500 that reads as a server bug.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { startServer } from '../../src/serve/server.js';

const BROWN = fileURLToPath(new URL('../../models/floe-brown', import.meta.url));

test('/v1/embeddings still running when the grace period ends: 503, as a completion cut short gets', async () => {
  const server = await startServer({ model: BROWN, port: 0, ui: false, dataDir: null, kvCacheMemory: 8 * 2 ** 20, maxBatchedTokens: 64, maxNumSeqs: 4, log: () => {} });
  await server.ready;
  // 64 inputs of ~300 tokens in 64-token steps: hundreds of steps, so the stop comes while most wait
  const input = Array.from({ length: 64 }, (_, i) => `sentence ${i} about rivers and the sea and ships `.repeat(30));
  const answer = fetch(`${server.url}/v1/embeddings`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: 'floe-brown', input }) });
  while (server.serve.inFlight() === 0) await new Promise((r) => setImmediate(r));
  await server.close(0);
  const r = await answer;
  const body = (await r.json()) as { error?: { message: string; code: string } };
  assert.equal(r.status, 503, JSON.stringify(body));
  assert.match(body.error!.message, /shut(ting)? down.*retry/);
});
