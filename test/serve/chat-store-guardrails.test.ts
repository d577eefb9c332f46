// A streamed chat completion with store: true that the output rail filters (finish_reason content_filter) is kept, as
// the same completion answered whole is: the rail aborts the generation once every choice is filtered, and the
// streamed path took that abort for a client that left and stored nothing (a 404 on retrieve).

import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import { startServer } from '../../src/serve/server.js';
import { repoPath } from '../repo.js';

const srv = await startServer({
  model: repoPath('models/floe-brown'), guardModel: repoPath('models/floe-guard'), port: 0, ui: false, threads: 2,
  kvCacheMemory: 64 * 2 ** 20, maxNumSeqs: 4, log: () => {}, dataDir: mkdtempSync(join(tmpdir(), 'floe-store-rails-')),
});
await srv.ready;
after(() => srv.close(1000));
const client = new OpenAI({ baseURL: srv.url + '/v1', apiKey: 'none', maxRetries: 0 });

test('store: true keeps a completion the output rail filtered, streamed as well as whole', async () => {
  // threshold 0: every judgement flags, so every choice ends content_filter
  const body = {
    model: srv.modelName, messages: [{ role: 'user' as const, content: 'Tell me about rivers.' }], max_tokens: 16, temperature: 0, n: 2,
    store: true, guardrails: { threshold: 0 },
  };
  const whole = await client.chat.completions.create(body as OpenAI.ChatCompletionCreateParamsNonStreaming);
  assert.deepEqual(whole.choices.map((c) => c.finish_reason), ['content_filter', 'content_filter']);
  const streamed = await client.chat.completions.stream({ ...body, stream: true } as OpenAI.ChatCompletionCreateParamsStreaming).finalChatCompletion();
  assert.deepEqual(streamed.choices.map((c) => c.finish_reason), ['content_filter', 'content_filter']);
  for (const c of [whole, streamed]) {
    const kept = await client.chat.completions.retrieve(c.id);
    assert.deepEqual(kept.choices.map((ch) => [ch.message.content, ch.finish_reason]), c.choices.map((ch) => [ch.message.content, ch.finish_reason]));
  }
});
