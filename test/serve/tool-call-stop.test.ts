// A stop sequence that cuts a tool call: the answer whole gave the call's JSON so far as content (a forced call
// included, which README promises never to show as text) while the stream sent it as a call with finish_reason
// 'tool_calls', as if complete. Both now give the call so far with finish_reason 'stop', as max_tokens gives it with
// 'length'. The calls are forced (tool_choice required, an enum argument), so greedy decoding is the same every time.

import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { startServer } from '../../src/serve/server.js';
import { repoPath } from '../repo.js';

const srv = await startServer({ model: repoPath('models/floe-brown'), port: 0, threads: 2, kvCacheMemory: 32 << 20, log: () => {}, ui: false, dataDir: null });
await srv.ready;
after(() => srv.close(1000));
const client = new OpenAI({ baseURL: srv.url + '/v1', apiKey: 'none', maxRetries: 0 });

const tools: OpenAI.ChatCompletionTool[] = [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string', enum: ['Paris'] } }, required: ['city'] } } }];
const ask = { model: srv.modelName, messages: [{ role: 'user' as const, content: 'Weather in Paris?' }], tools, tool_choice: 'required' as const, max_tokens: 40, temperature: 0 };

async function both(stop: string) {
  const whole = (await client.chat.completions.create({ ...ask, stop })).choices[0]!;
  const s = await client.chat.completions.create({ ...ask, stop, stream: true });
  const calls: Array<{ name: string; arguments: string }> = [];
  let content = '';
  let finish: string | null = null;
  for await (const chunk of s) {
    for (const c of chunk.choices) {
      content += c.delta.content ?? '';
      for (const tc of c.delta.tool_calls ?? []) {
        calls[tc.index] ??= { name: '', arguments: '' };
        calls[tc.index]!.name += tc.function?.name ?? '';
        calls[tc.index]!.arguments += tc.function?.arguments ?? '';
      }
      finish = c.finish_reason ?? finish;
    }
  }
  return { whole, streamed: { calls, content, finish } };
}

test('a stop sequence inside the arguments: the call so far, finish_reason stop, whole and streamed alike', async () => {
  const { whole, streamed } = await both('Paris');
  assert.equal(whole.finish_reason, 'stop');
  assert.equal(whole.message.content, null);
  assert.deepEqual(whole.message.tool_calls?.map((c) => c.type === 'function' && [c.function.name, c.function.arguments]), [['get_weather', '{"city": "']]);
  assert.deepEqual(streamed, { calls: [{ name: 'get_weather', arguments: '{"city": "' }], content: '', finish: 'stop' });
});

test('a stop sequence before the arguments of a forced call: that call with no arguments, never its JSON as text', async () => {
  const { whole, streamed } = await both('"parameters"');
  assert.equal(whole.finish_reason, 'stop');
  assert.equal(whole.message.content, null);
  assert.deepEqual(whole.message.tool_calls?.map((c) => c.type === 'function' && [c.function.name, c.function.arguments]), [['get_weather', '']]);
  assert.deepEqual(streamed, { calls: [{ name: 'get_weather', arguments: '' }], content: '', finish: 'stop' });
});
