// The chat and completions routes against the openai client's types (node_modules/openai/resources/**): fields the
// types mark required are present with their documented types, and the headers the client reads are sent.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI, { APIError } from 'openai';
import { startServer, type RunningServer } from '../../src/serve/server.js';
import { repoPath } from '../repo.js';

const BROWN = repoPath('models/floe-brown');
const T = 60_000;
const REQUEST_ID = /^req_[0-9a-f]{32}$/; // OpenAI's x-request-id form

let server: RunningServer;
let client: OpenAI;
before(async () => {
  server = await startServer({ model: BROWN, port: 0, ui: false, dataDir: null, kvCacheMemory: 16 * 2 ** 20, threads: 1, log: () => {} });
  await server.ready;
  client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'unused', maxRetries: 0 });
});
after(async () => { await server?.close(0); });

const messages = [{ role: 'user' as const, content: 'Tell me about rivers.' }];

test('every answer carries x-request-id (the client\'s _request_id and APIError.requestID), one per request', { timeout: T }, async () => {
  const data = await client.chat.completions.create({ model: 'floe-brown', messages, max_tokens: 2 });
  assert.match(String(data._request_id), REQUEST_ID);
  const { response } = await client.chat.completions.create({ model: 'floe-brown', messages, max_tokens: 2 }).withResponse();
  assert.match(String(response.headers.get('x-request-id')), REQUEST_ID);
  const again = await client.completions.create({ model: 'floe-brown', prompt: 'Rivers', max_tokens: 2 });
  assert.match(String(again._request_id), REQUEST_ID);
  assert.notEqual(again._request_id, data._request_id, 'each request has its own id');

  const streamed = await client.chat.completions.create({ model: 'floe-brown', messages, max_tokens: 2, stream: true }).withResponse();
  assert.match(String(streamed.response.headers.get('x-request-id')), REQUEST_ID, 'a stream\'s headers too');
  for await (const _ of streamed.data); // drain

  // refusals: the error the client throws names the request
  await assert.rejects(client.chat.completions.create({ model: 'nope', messages }), (e: unknown) => {
    assert.ok(e instanceof APIError && e.status === 404, String(e));
    assert.match(String(e.requestID), REQUEST_ID);
    return true;
  });
  // what the client never sends: a body of the wrong type, an unknown route, a body over the limit
  for (const [path, init] of [
    ['/v1/chat/completions', { method: 'POST', headers: { 'content-type': 'text/plain' }, body: '{}' }],
    ['/v1/nothing-here', { method: 'GET' }],
    ['/v1/chat/completions', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"model":' }],
  ] as const) {
    const r = await fetch(server.url + path, init);
    assert.ok(r.status >= 400, `${path}: ${r.status}`);
    assert.match(String(r.headers.get('x-request-id')), REQUEST_ID, `${init.method} ${path} (${r.status})`);
  }
});

test('a chat message has refusal null, and logprobs have refusal null beside content, streamed or not', { timeout: T }, async () => {
  const r = await client.chat.completions.create({ model: 'floe-brown', messages, max_tokens: 3, logprobs: true, top_logprobs: 1, n: 2 });
  for (const ch of r.choices) {
    assert.ok('refusal' in ch.message, `message ${JSON.stringify(ch.message)} lacks refusal (ChatCompletionMessage.refusal: string | null)`);
    assert.equal(ch.message.refusal, null);
    assert.ok(ch.logprobs && 'refusal' in ch.logprobs, `logprobs lack refusal (ChatCompletion.Choice.Logprobs.refusal: ... | null)`);
    assert.equal(ch.logprobs.refusal, null);
    assert.equal(ch.logprobs.content!.length, 3);
  }
  const plain = await client.chat.completions.create({ model: 'floe-brown', messages, max_tokens: 2 });
  assert.equal(plain.choices[0]!.message.refusal, null, 'without logprobs too');
  assert.equal(plain.choices[0]!.logprobs, null);

  const stream = await client.chat.completions.create({ model: 'floe-brown', messages, max_tokens: 3, logprobs: true, stream: true });
  let withLogprobs = 0;
  for await (const chunk of stream) {
    for (const ch of chunk.choices) {
      if (ch.logprobs === null || ch.logprobs === undefined) continue;
      withLogprobs++;
      assert.ok('refusal' in ch.logprobs, `chunk logprobs ${JSON.stringify(ch.logprobs)} lack refusal`);
      assert.equal(ch.logprobs.refusal, null);
    }
  }
  assert.ok(withLogprobs > 0, 'the stream carried logprobs');
});

test('system_fingerprint is a string (the client types it string), one per backend configuration', { timeout: T }, async () => {
  const FP = /^fp_[0-9a-f]{10}$/;
  const chat = await client.chat.completions.create({ model: 'floe-brown', messages, max_tokens: 2 });
  assert.match(String(chat.system_fingerprint), FP);
  const fp = chat.system_fingerprint;
  const text = await client.completions.create({ model: 'floe-brown', prompt: 'Rivers', max_tokens: 2 });
  assert.equal(text.system_fingerprint, fp, 'completions: the same server, the same fingerprint');
  for (const stream of [
    await client.chat.completions.create({ model: 'floe-brown', messages, max_tokens: 2, stream: true, stream_options: { include_usage: true } }),
    await client.completions.create({ model: 'floe-brown', prompt: 'Rivers', max_tokens: 2, stream: true, stream_options: { include_usage: true } }),
  ]) {
    let chunks = 0;
    for await (const chunk of stream) {
      chunks++;
      assert.equal(chunk.system_fingerprint, fp, `chunk ${JSON.stringify(chunk).slice(0, 200)}`);
    }
    assert.ok(chunks >= 2);
  }
  // another server: the same configuration gives the same fingerprint, other weights (--dtype bf16) another
  const fingerprintOf = async (dtype: 'bf16' | undefined) => {
    const other = await startServer({ model: BROWN, port: 0, ui: false, dataDir: null, kvCacheMemory: 16 * 2 ** 20, threads: 1, log: () => {}, ...(dtype ? { dtype } : {}) });
    try {
      await other.ready;
      const c = new OpenAI({ baseURL: `${other.url}/v1`, apiKey: 'unused', maxRetries: 0 });
      return (await c.chat.completions.create({ model: 'floe-brown', messages, max_tokens: 1 })).system_fingerprint;
    } finally {
      await other.close(0);
    }
  };
  assert.equal(await fingerprintOf(undefined), fp, 'a restart with the same configuration');
  const bf16 = await fingerprintOf('bf16');
  assert.match(String(bf16), FP);
  assert.notEqual(bf16, fp, 'weights held as bf16 are another backend configuration');
});

test('a model id of 100+ characters (a fine-tuned checkpoint with a suffix) reaches the model routes; a malformed URL is a 400 in OpenAI\'s shape', { timeout: T }, async () => {
  // ft:<base>:floe:<suffix up to 64>:<job id>:ckpt-step-N, as jobs name their models: 136 characters here
  const long = `ft:floe-brown:floe:${'s'.repeat(64)}:ftjob-${'0'.repeat(32)}:ckpt-step-10`;
  assert.ok(long.length > 100);
  // (this server has no data dir, so DELETE has no fine-tuned model to find: a 404 model_not_found, past the router either way)
  for (const [call, code] of [[() => client.models.retrieve(long), 'model_not_found'], [() => client.models.delete(long), 'model_not_found']] as const) {
    await assert.rejects(call(), (e: unknown) => {
      assert.ok(e instanceof APIError, String(e));
      assert.equal(e.status, 404, `${e.status} ${JSON.stringify(e.error)}`);
      assert.equal(e.code, code);
      return true;
    });
  }
  const r = await fetch(`${server.url}/v1/models/%E0%A4%A`); // a truncated UTF-8 escape
  assert.equal(r.status, 400);
  const body = await r.json() as { error: { message: string; type: string; param: unknown; code: unknown } };
  assert.deepEqual(Object.keys(body.error).sort(), ['code', 'message', 'param', 'type'], JSON.stringify(body));
  assert.equal(body.error.type, 'invalid_request_error');
  assert.match(body.error.message, /%E0%A4%A/);
  assert.match(String(r.headers.get('x-request-id')), REQUEST_ID);
});

test('top_p 0 (OpenAI takes it; clients send it for determinism) samples the most likely token: the greedy answer', { timeout: T }, async () => {
  const greedy = await client.chat.completions.create({ model: 'floe-brown', messages, max_tokens: 24, temperature: 0 });
  const expected = greedy.choices[0]!.message.content;
  assert.ok(expected && expected.length > 0);
  // a hot temperature would scatter the samples: top_p 0 leaves one candidate per step
  const r = await client.chat.completions.create({ model: 'floe-brown', messages, max_tokens: 24, temperature: 1.8, top_p: 0, n: 3, seed: 7 });
  assert.deepEqual(r.choices.map((c) => c.message.content), [expected, expected, expected]);
  const text = await client.completions.create({ model: 'floe-brown', prompt: 'Rivers run', max_tokens: 16, temperature: 0 });
  const textTopP = await client.completions.create({ model: 'floe-brown', prompt: 'Rivers run', max_tokens: 16, temperature: 1.8, top_p: 0 });
  assert.equal(textTopP.choices[0]!.text, text.choices[0]!.text, '/v1/completions too');
  // the Responses API echoes top_p as asked
  const resp = await client.responses.create({ model: 'floe-brown', input: 'Tell me about rivers.', max_output_tokens: 24, temperature: 1.8, top_p: 0, store: false });
  assert.equal(resp.top_p, 0);
  const respGreedy = await client.responses.create({ model: 'floe-brown', input: 'Tell me about rivers.', max_output_tokens: 24, temperature: 0, store: false });
  assert.equal(resp.output_text, respGreedy.output_text);
  // outside [0, 1] is still refused, naming the field
  await assert.rejects(client.chat.completions.create({ model: 'floe-brown', messages, top_p: -0.1 }), (e: unknown) => e instanceof APIError && e.status === 400 && e.param === 'top_p');
});

test('a 64-bit seed (OpenAI\'s seed is an int64) is taken and reproducible, not a 400', { timeout: T }, async () => {
  const big = 2 ** 62; // a double: JSON carries an int64 as one
  const ask = (seed: number) => client.chat.completions.create({ model: 'floe-brown', messages, max_tokens: 16, temperature: 1.5, seed });
  const [a, b] = [await ask(big), await ask(big)];
  assert.equal(a.choices[0]!.message.content, b.choices[0]!.message.content, 'the same seed, the same sample');
  const others = await Promise.all([big + 2 ** 12, -big, 2 ** 63 - 2 ** 11, 3].map(async (s) => (await ask(s)).choices[0]!.message.content));
  assert.ok(others.some((t) => t !== a.choices[0]!.message.content), `other seeds sample otherwise: ${JSON.stringify(others)}`);
  // past int64, or not an integer: a 400 naming seed
  for (const seed of [2 ** 64, 1.5]) {
    await assert.rejects(ask(seed), (e: unknown) => e instanceof APIError && e.status === 400 && e.param === 'seed' && /int64|integer/.test(e.message));
  }
});
