// `floe serve --dtype bf16` on the built-in f32 model answers a chat completion through the official openai client,
// and its engine runs the bf16 model: /v1/floe/info's KV cache defaults to bf16 (f32 only for f32 weights).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { client, serverProcs, startFloeServe } from './floe-process.js';
import { repoPath } from '../repo.js';

const BUILT = repoPath('dist/src/engine/worker.js');
const procs = serverProcs();

test('floe serve --dtype bf16: a chat completion through the openai client; the engine holds bf16 weights', async () => {
  const f = await startFloeServe(null, { built: BUILT, procs, args: ['--dtype', 'bf16', '--kv-cache-memory', '64MiB'] });
  const r = await client(f).chat.completions.create({ model: 'floe-brown', messages: [{ role: 'user', content: 'Tell me a story.' }], max_tokens: 8, temperature: 0 });
  assert.equal(r.choices.length, 1);
  assert.ok((r.choices[0]!.message.content ?? '').length > 0, JSON.stringify(r.choices[0]));
  assert.ok(r.usage!.completion_tokens >= 1 && r.usage!.completion_tokens <= 8, JSON.stringify(r.usage));
  type Info = { kv_cache: { dtype: string }; engine: { weights?: { linear: string | null; embedding: string; head: string; converted: string | null } } };
  const info = await (await fetch(f.url + '/v1/floe/info')).json() as Info;
  assert.equal(info.kv_cache.dtype, 'bf16', 'the KV cache follows the weights: bf16 for the converted model (f32 without --dtype)');
  assert.deepEqual(info.engine.weights, { linear: 'bf16', embedding: 'bf16', head: 'bf16', converted: 'bf16' }, 'the weights as the engine holds them');
  f.proc.kill('SIGTERM');
  await f.exit;
  assert.match(f.out(), /model ready in [\d.]+ s; weights bf16 \(--dtype bf16\); KV cache bf16/);
});

test('floe serve without --dtype: /v1/floe/info reports the weights as stored (f32 for the built-in model), nothing converted', async () => {
  const f = await startFloeServe(null, { built: BUILT, procs, args: ['--kv-cache-memory', '64MiB'] });
  const info = await (await fetch(f.url + '/v1/floe/info')).json() as { engine: { weights?: unknown } };
  assert.deepEqual(info.engine.weights, { linear: 'f32', embedding: 'f32', head: 'f32', converted: null });
  f.proc.kill('SIGTERM');
  await f.exit;
});
