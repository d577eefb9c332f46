// Clients that leave mid-request: nothing is computed for them afterwards, and what was computed is accounted for.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { existsSync } from 'node:fs';
import OpenAI from 'openai';
import { startServer, type RunningServer } from '../../src/serve/server.js';
import { repoPath } from '../repo.js';

const BROWN = repoPath('models/floe-brown');
const GUARD = repoPath('models/floe-guard');
const skip = !existsSync(`${GUARD}/config.json`) && 'models/floe-guard is not in this tree';

let server: RunningServer;
before(async () => {
  if (skip) return;
  server = await startServer({ model: BROWN, guardModel: GUARD, port: 0, ui: false, dataDir: null, kvCacheMemory: 16 * 2 ** 20, guardKvCacheMemory: 8 * 2 ** 20, log: () => {} });
  await server.ready;
});
after(async () => { await server?.close(0); });

const metrics = async (): Promise<Record<string, number>> => {
  const text = await (await fetch(`${server.url}/metrics`)).text();
  return Object.fromEntries([...text.matchAll(/^(floe_\w+) (\S+)$/gm)].map((m) => [m[1]!, Number(m[2])]));
};

test('a client that disconnects while the input rail judges its prompt: the completion is aborted, not generated for nobody', { skip }, async () => {
  const MAX = 400;
  for (const stream of [false, true]) {
    const before = await metrics();
    const body = JSON.stringify({
      model: 'floe-brown', messages: [{ role: 'user', content: `Tell me about rivers and the sea (${stream}).` }], max_tokens: MAX, ignore_eos: true,
      temperature: 0, stream, guardrails: { input: true, output: false },
    });
    const req = request(`${server.url}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' } });
    req.on('error', () => {}); // the socket is destroyed on purpose
    req.end(body);
    // the handler has started (the guard is judging the prompt): leave now
    while (server.serve.inFlight() === 0) await new Promise((r) => setImmediate(r));
    req.destroy();
    while (server.serve.inFlight() > 0) await new Promise((r) => setTimeout(r, 5));
    // the handler is gone; the engine frees an aborted sequence's blocks at its next step, so wait (2 s at most) for it
    let after = await metrics();
    for (let i = 0; i < 200 && (after.floe_kv_blocks_used !== 0 || after.floe_num_requests_running !== 0); i++) {
      await new Promise((r) => setTimeout(r, 10));
      after = await metrics();
    }
    assert.equal(after.floe_requests_aborted_total! - before.floe_requests_aborted_total!, 1, `stream ${stream}: the request counts as aborted`);
    const generated = after.floe_engine_generation_tokens_total! - before.floe_engine_generation_tokens_total!;
    assert.ok(generated < MAX, `stream ${stream}: ${generated} tokens generated for a client that had left`);
    assert.equal(after.floe_kv_blocks_used, 0);
    assert.equal(after.floe_num_requests_running, 0);
  }
});

test('a client that disconnects from /v1/embeddings: its inputs still waiting are aborted, not embedded for nobody', { skip }, async () => {
  const before = await metrics();
  // 64 inputs of ~300 tokens: many engine steps, so the disconnect comes while most still wait
  const input = Array.from({ length: 64 }, (_, i) => `sentence ${i} about rivers and the sea and ships `.repeat(30));
  const req = request(`${server.url}/v1/embeddings`, { method: 'POST', headers: { 'content-type': 'application/json' } });
  req.on('error', () => {}); // the socket is destroyed on purpose
  req.end(JSON.stringify({ model: 'floe-brown', input }));
  while (server.serve.inFlight() === 0) await new Promise((r) => setImmediate(r));
  req.destroy();
  while (server.serve.inFlight() > 0) await new Promise((r) => setTimeout(r, 5));
  await new Promise((r) => setTimeout(r, 100)); // aborts already sent reach the engine
  const after = await metrics();
  assert.equal(after.floe_requests_aborted_total! - before.floe_requests_aborted_total!, 1, 'the request counts as aborted');
  const computed = after.floe_engine_prompt_tokens_total! - before.floe_engine_prompt_tokens_total!;
  assert.ok(computed < 64 * 300 / 2, `${computed} prompt tokens computed for a client that had left`);
  assert.equal(after.floe_kv_blocks_used, 0);
  assert.equal(after.floe_num_requests_running, 0);
  assert.equal(after.floe_num_requests_waiting, 0);
});

test('a Responses stream the client leaves counts its prompt and streamed tokens in /metrics, as a chat stream does', { skip }, async () => {
  const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'none', maxRetries: 0 });
  const before = await metrics();
  const stream = await client.responses.create({ model: 'floe-brown', input: 'Tell me about rivers.', max_output_tokens: 300, temperature: 0, stream: true });
  let deltas = 0;
  for await (const ev of stream) if (ev.type === 'response.output_text.delta' && ++deltas === 5) break; // the client aborts the request
  while (server.serve.inFlight() > 0) await new Promise((r) => setTimeout(r, 5));
  const after = await metrics();
  assert.equal(after.floe_requests_aborted_total! - before.floe_requests_aborted_total!, 1);
  assert.ok(after.floe_prompt_tokens_total! - before.floe_prompt_tokens_total! > 0, 'prompt tokens counted');
  const generated = after.floe_generation_tokens_total! - before.floe_generation_tokens_total!;
  assert.ok(generated >= 5 && generated < 300, `${generated} generated tokens counted for 5 streamed deltas`);
});
