// README (HTTP API): "SIGTERM keeps the server listening but answering 503 while running requests finish within
// --shutdown-grace". A request that needs a second engine after its generation (the guard's output rail) or before it
// (the input rail: the guard, then the chat model) finishes too, not only the part running when the stop came; so do
// the guard's and the embedder's own routes (/v1/moderations, /v1/rag/*), which the stop used to cut (500).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startServer, type RunningServer } from '../../src/serve/server.js';
import { repoPath } from '../repo.js';

const BROWN = repoPath('models/floe-brown');
const GUARD = repoPath('models/floe-guard');
const EMBED = repoPath('models/floe-embed');

async function guarded(): Promise<RunningServer> {
  const server = await startServer({
    model: BROWN, guardModel: GUARD, guardrails: true, port: 0, ui: false, dataDir: null, threads: 1,
    kvCacheMemory: 32 * 2 ** 20, guardKvCacheMemory: 16 * 2 ** 20, log: () => {},
  });
  await server.ready;
  return server;
}

const post = (server: RunningServer, path: string, body: unknown) =>
  fetch(`${server.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });

/** Stop the server once the request is in its handler (counted as running: without that the wait times out); the grace period (30 s) is far longer than the request needs. */
async function stopWhileRunning(server: RunningServer): Promise<Promise<void>> {
  const deadline = Date.now() + 30_000;
  while (server.serve.inFlight() === 0) {
    if (Date.now() > deadline) { await server.close(0); throw new Error('the request was not counted as running within 30 s'); }
    await new Promise((r) => setImmediate(r));
  }
  return server.close(30_000);
}

test('a graceful stop lets a running completion finish through its output rail (not a 500 "guard: the request was aborted")', async () => {
  const server = await guarded();
  const answer = post(server, '/v1/completions', { model: 'floe-brown', prompt: 'The old man', max_tokens: 48, ignore_eos: true, temperature: 0 });
  const closed = await stopWhileRunning(server);
  const r = await answer;
  const body = (await r.json()) as { choices?: { finish_reason: string }[]; guardrails?: { flagged: boolean }; usage?: { completion_tokens: number; guard?: unknown } };
  await closed;
  assert.equal(r.status, 200, JSON.stringify(body));
  assert.equal(body.usage!.completion_tokens, 48);
  assert.equal(typeof body.guardrails!.flagged, 'boolean');
  assert.ok(body.usage!.guard, 'the output rail judged the answer');
});

test('a graceful stop lets a running streamed chat answer finish through its last output-rail window', async () => {
  const server = await guarded();
  const answer = post(server, '/v1/chat/completions', {
    model: 'floe-brown', messages: [{ role: 'user', content: 'Tell me a story' }], max_tokens: 40, ignore_eos: true, temperature: 0, stream: true,
  });
  const closed = await stopWhileRunning(server);
  const r = await answer;
  const text = await r.text();
  await closed;
  assert.equal(r.status, 200, text);
  assert.doesNotMatch(text, /"error"/, text);
  const events = text.split('\n\n').filter((e) => e.startsWith('data: ')).map((e) => e.slice(6));
  assert.equal(events.at(-1), '[DONE]', text);
  const chunks = events.slice(0, -1).map((e) => JSON.parse(e) as { choices: { finish_reason: string | null }[]; guardrails?: unknown });
  assert.ok(chunks.some((c) => c.choices.some((ch) => ch.finish_reason === 'length')), text);
  assert.ok(chunks.some((c) => c.guardrails !== undefined), 'the last chunk carries the verdict');
});

test('a graceful stop during the input rail still generates the answer (the chat model takes the request after the guard)', async () => {
  const server = await guarded();
  const answer = post(server, '/v1/chat/completions', {
    model: 'floe-brown', messages: [{ role: 'user', content: 'Tell me a story' }], max_tokens: 8, temperature: 0, guardrails: { input: true, output: true },
  });
  const closed = await stopWhileRunning(server);
  const r = await answer;
  const body = (await r.json()) as { choices?: { message: { content: string } }[]; usage?: { completion_tokens: number } };
  await closed;
  assert.equal(r.status, 200, JSON.stringify(body));
  assert.ok(body.usage!.completion_tokens > 0 || body.choices![0]!.message.content.length > 0, JSON.stringify(body));
});

test('a graceful stop lets a running /v1/moderations finish (the guard stops after it)', async () => {
  const server = await guarded();
  const answer = post(server, '/v1/moderations', { input: ['hello there', 'how are you'] });
  const closed = await stopWhileRunning(server);
  const r = await answer;
  const body = (await r.json()) as { results?: { flagged: boolean }[] };
  await closed;
  assert.equal(r.status, 200, JSON.stringify(body));
  assert.equal(body.results!.length, 2);
});

/** A server with a RAG collection 'notes' holding one document of 40 paragraphs; also returns that text. */
async function withRag(): Promise<{ server: RunningServer; text: string }> {
  const server = await startServer({
    model: BROWN, embeddingModel: EMBED, ragDb: mkdtempSync(join(tmpdir(), 'floe-rag-stop-')), port: 0, ui: false, dataDir: null, threads: 1,
    kvCacheMemory: 32 * 2 ** 20, log: () => {},
  });
  await server.ready;
  const text = Array.from({ length: 40 }, (_, i) => `Paragraph ${i}: the keys rotate every ${i + 2} days, and the old keys stay valid one hour.`).join('\n\n');
  for (const [path, body] of [['/v1/rag/collections', { name: 'notes' }], ['/v1/rag/collections/notes/documents', { source: 'keys.md', text }]] as const) {
    const r = await post(server, path, body);
    if (r.status !== 200) { await server.close(0); assert.fail(`${path}: ${r.status} ${await r.text()}`); }
  }
  return { server, text };
}

test('a graceful stop lets a running RAG query finish (the embedding model stops after it)', async () => {
  const { server } = await withRag();
  const answer = post(server, '/v1/rag/query', { collection: 'notes', query: 'how often do the keys rotate?', k: 3 });
  const closed = await stopWhileRunning(server);
  const r = await answer;
  const body = (await r.json()) as { data?: unknown[] };
  await closed;
  assert.equal(r.status, 200, JSON.stringify(body));
  assert.equal(body.data!.length, 3);
});

test('a graceful stop lets a running RAG ingest finish (the embedding model stops after it)', async () => {
  const { server, text } = await withRag();
  const answer = post(server, '/v1/rag/collections/notes/documents', { source: 'more.md', text: text.replaceAll('keys', 'tokens') });
  const closed = await stopWhileRunning(server);
  const r = await answer;
  const body = (await r.json()) as { added?: string[] };
  await closed;
  assert.equal(r.status, 200, JSON.stringify(body));
  assert.deepEqual(body.added, ['more.md']);
});
