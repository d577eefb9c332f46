// Stored chat completions (store: true) through the official openai client on real sockets: the built-in model with a
// data dir (retrieve, list, update, delete, messages, the request's settings, streamed, n > 1, store false), a fake
// engine with a data dir (a failed or abandoned generation is not kept; a Batch request_id is its answer's x-request-id;
// a record stored without settings still answers) and one without (404s, store ignored).

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI, { toFile } from 'openai';
import { EngineRequestError } from '../../src/engine/protocol.js';
import { ChatTemplate } from '../../src/formats/chat-template.js';
import { createApp } from '../../src/serve/app.js';
import { startServer } from '../../src/serve/server.js';
import { apiRefusal, byteTokenizer, CHAT_TEMPLATE, FakeEngine } from './helpers.js';
import { repoPath } from '../repo.js';

const BROWN = repoPath('models/floe-brown');
const srv = await startServer({ model: BROWN, port: 0, threads: 2, kvCacheMemory: 32 << 20, log: () => {}, ui: false, dataDir: mkdtempSync(join(tmpdir(), 'floe-chat-store-')) });

/** A fake-engine server on a socket: with a data dir or without (--no-batch). */
async function fakeServer(dataDir: string | null) {
  const tok = byteTokenizer();
  const engine = new FakeEngine(tok);
  const s = createApp({ modelName: 'tiny', dataDir });
  s.ready({ engine, tokenizer: tok, template: new ChatTemplate(CHAT_TEMPLATE) });
  const url = await s.app.listen({ port: 0, host: '127.0.0.1' });
  return { engine, serve: s, app: s.app, client: new OpenAI({ baseURL: `${url}/v1`, apiKey: 'none', maxRetries: 0 }) };
}
const fakeDir = mkdtempSync(join(tmpdir(), 'floe-chat-store-fake-'));
const fake = await fakeServer(fakeDir);
const bare = await fakeServer(null);
await srv.ready;
after(() => Promise.all([srv.close(1000), fake.app.close(), bare.app.close()]));
const client = new OpenAI({ baseURL: srv.url + '/v1', apiKey: 'none', maxRetries: 0 });
const model = srv.modelName;
type Stored = OpenAI.Chat.ChatCompletion & { metadata?: Record<string, string> }; // the client's type lacks the stored metadata
const ask = (text: string): OpenAI.Chat.ChatCompletionMessageParam[] => [{ role: 'user', content: text }];
// the request's settings a stored completion carries (the client's type lacks them), and the model's defaults for them
const SETTINGS = ['seed', 'temperature', 'top_p', 'presence_penalty', 'frequency_penalty', 'tools', 'tool_choice', 'response_format'];
const settingsOf = (c: object) => Object.fromEntries(SETTINGS.map((k) => [k, (c as Record<string, unknown>)[k]]));
const gen = JSON.parse(readFileSync(join(BROWN, 'generation_config.json'), 'utf8')) as { temperature: number; top_p: number };

test('store: true keeps the completion as returned, with its metadata and x-request-id; the header names no ignored field', async () => {
  const { data, request_id, response } = await client.chat.completions.create({
    model, messages: ask('Tell me about the river.'), max_tokens: 4, temperature: 0, store: true, metadata: { topic: 'rivers' },
  }).withResponse();
  assert.equal(response.headers.get('x-floe-ignored-fields'), null, 'store and metadata are honoured here');
  assert.match(request_id!, /^req_[0-9a-f]{32}$/);
  const got = await client.chat.completions.retrieve(data.id);
  const settings = { seed: null, temperature: 0, top_p: gen.top_p, presence_penalty: 0, frequency_penalty: 0, tools: null, tool_choice: 'none', response_format: { type: 'text' } };
  assert.deepEqual(got, { ...JSON.parse(JSON.stringify(data)), metadata: { topic: 'rivers' }, request_id, ...settings });
  assert.deepEqual(SETTINGS.filter((k) => k in data), [], 'the create answer carries no settings, as OpenAI\'s');
});

test('the request\'s settings: retrieve and list answer them as given (seed as used: mod 2^53; top_p 0 as asked)', async () => {
  const tools: OpenAI.Chat.ChatCompletionTool[] = [{ type: 'function', function: { name: 'get_weather', description: 'Weather of a city.', parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } } }];
  const responseFormat = { type: 'json_schema', json_schema: { name: 'city', schema: { type: 'object', properties: { name: { type: 'string' } } } } } as const;
  const asks = [
    { seed: 12345, temperature: 0.5, top_p: 0.8, presence_penalty: 0.25, frequency_penalty: -0.5, tools, tool_choice: { type: 'function', function: { name: 'get_weather' } } },
    { seed: 2 ** 53 + 6, temperature: 1.5, top_p: 0, presence_penalty: -1, frequency_penalty: 2, tools, tool_choice: 'none', response_format: responseFormat },
  ] as const;
  const want = asks.map((a) => ({ response_format: { type: 'text' }, ...JSON.parse(JSON.stringify(a)) as object, seed: a.seed % 2 ** 53 }));
  assert.deepEqual(want.map((w) => (w as { seed: number }).seed), [12345, 6]);
  const ids: string[] = [];
  for (const a of asks) {
    const c = await client.chat.completions.create({ model, messages: ask('Weather in Lyon?'), max_tokens: 4, store: true, metadata: { run: 'settings-test' }, ...a });
    assert.deepEqual(SETTINGS.filter((k) => k in c), []);
    ids.push(c.id);
  }
  for (const [i, id] of ids.entries()) assert.deepEqual(settingsOf(await client.chat.completions.retrieve(id)), want[i], `request ${i}`);
  const listed = await client.chat.completions.list({ metadata: { run: 'settings-test' } });
  assert.deepEqual(listed.data.map((c) => c.id), ids);
  assert.deepEqual(listed.data.map(settingsOf), want);
});

test('the request\'s settings when it gave none: the model\'s generation_config.json sampling, tool_choice auto with tools', async () => {
  const tools: OpenAI.Chat.ChatCompletionTool[] = [{ type: 'function', function: { name: 'get_time', parameters: { type: 'object', properties: {} } } }];
  const bare = await client.chat.completions.create({ model, messages: ask('Hello.'), max_tokens: 1, store: true });
  const defaults = { seed: null, temperature: gen.temperature, top_p: gen.top_p, presence_penalty: 0, frequency_penalty: 0, response_format: { type: 'text' } };
  assert.deepEqual(settingsOf(await client.chat.completions.retrieve(bare.id)), { ...defaults, tools: null, tool_choice: 'none' });
  const withTools = await client.chat.completions.create({ model, messages: ask('Hello.'), max_tokens: 1, store: true, tools });
  assert.deepEqual(settingsOf(await client.chat.completions.retrieve(withTools.id)), { ...defaults, tools: JSON.parse(JSON.stringify(tools)), tool_choice: 'auto' });
});

test('n > 1: every choice is stored; without metadata the stored metadata is {}', async () => {
  const data = await client.chat.completions.create({ model, messages: ask('Name a city.'), max_tokens: 3, n: 3, temperature: 1, seed: 7, store: true });
  assert.equal(data.choices.length, 3);
  const got = await client.chat.completions.retrieve(data.id);
  assert.deepEqual(got.choices, JSON.parse(JSON.stringify(data.choices)));
  assert.deepEqual((got as Stored).metadata, {});
});

test('messages list: the request messages with ids <completion id>-<i>, paged by after / limit, ordered asc or desc', async () => {
  const messages: OpenAI.Chat.ChatCompletionMessageParam[] = [
    { role: 'system', content: 'Be brief.' },
    { role: 'user', content: 'Hello', name: 'ann' },
    { role: 'assistant', content: 'Hi.' },
    { role: 'user', content: [{ type: 'text', text: 'Tell me ' }, { type: 'text', text: 'a story.' }] },
  ];
  const c = await client.chat.completions.create({ model, messages, max_tokens: 2, temperature: 0, store: true });
  const want = [
    { id: `${c.id}-0`, role: 'system', content: 'Be brief.', name: null, content_parts: null },
    { id: `${c.id}-1`, role: 'user', content: 'Hello', name: 'ann', content_parts: null },
    { id: `${c.id}-2`, role: 'assistant', content: 'Hi.', name: null, content_parts: null },
    { id: `${c.id}-3`, role: 'user', content: 'Tell me a story.', name: null, content_parts: [{ type: 'text', text: 'Tell me ' }, { type: 'text', text: 'a story.' }] },
  ];
  const all = await client.chat.completions.messages.list(c.id);
  assert.deepEqual(all.data, want);
  assert.equal(all.has_more, false);
  const first = await client.chat.completions.messages.list(c.id, { limit: 3, order: 'desc' });
  assert.deepEqual(first.data, [want[3], want[2], want[1]]);
  assert.equal(first.has_more, true);
  const next = await client.chat.completions.messages.list(c.id, { limit: 3, order: 'desc', after: first.data.at(-1)!.id });
  assert.deepEqual(next.data, [want[0]]);
  assert.equal(next.has_more, false);
  const paged: unknown[] = [];
  for await (const m of client.chat.completions.messages.list(c.id, { limit: 1 })) paged.push(m);
  assert.deepEqual(paged, want, 'the client pages through every message');
  const bad = await apiRefusal(client.chat.completions.messages.list(c.id, { after: 'msg_nope' }));
  assert.equal(bad.status, 404);
  assert.equal(bad.param, 'after');
});

test('list: metadata and model filters, order asc / desc by created, paging with after / limit / has_more', async () => {
  const ids: string[] = [];
  for (const k of ['a', 'b', 'a', 'a']) {
    const c = await client.chat.completions.create({ model, messages: ask(`Say ${k}.`), max_tokens: 1, temperature: 0, store: true, metadata: { run: 'list-test', k } });
    ids.push(c.id);
  }
  const as = [ids[0], ids[2], ids[3]];
  const page = await client.chat.completions.list({ metadata: { run: 'list-test', k: 'a' } });
  assert.deepEqual(page.data.map((c) => c.id), as, 'asc (the default): oldest first');
  assert.ok(page.data.every((c) => (c as Stored).metadata?.k === 'a' && c.object === 'chat.completion'));
  assert.equal(page.has_more, false);
  const desc = await client.chat.completions.list({ metadata: { run: 'list-test' }, order: 'desc' });
  assert.deepEqual(desc.data.map((c) => c.id), [...ids].reverse());
  const p1 = await client.chat.completions.list({ metadata: { run: 'list-test' }, limit: 3 });
  assert.deepEqual(p1.data.map((c) => c.id), ids.slice(0, 3));
  assert.equal(p1.has_more, true);
  const raw = await fetch(`${srv.url}/v1/chat/completions?metadata[run]=list-test&limit=3`).then((r) => r.json()) as { first_id: string; last_id: string };
  assert.deepEqual([raw.first_id, raw.last_id], [ids[0], ids[2]]);
  const p2 = await client.chat.completions.list({ metadata: { run: 'list-test' }, limit: 3, after: p1.data.at(-1)!.id });
  assert.deepEqual(p2.data.map((c) => c.id), ids.slice(3));
  assert.equal(p2.has_more, false);
  const walked: string[] = [];
  for await (const c of client.chat.completions.list({ metadata: { run: 'list-test' }, limit: 1 })) walked.push(c.id);
  assert.deepEqual(walked, ids, 'the client pages through all of them');
  assert.deepEqual((await client.chat.completions.list({ metadata: { run: 'list-test' }, model })).data.map((c) => c.id), ids);
  assert.deepEqual((await client.chat.completions.list({ metadata: { run: 'list-test' }, model: 'other-model' })).data, []);
  for (const [query, param] of [[{ limit: 0 }, 'limit'], [{ limit: 101 }, 'limit'], [{ order: 'newest' }, 'order'], [{ after: 'chatcmpl-nope' }, 'after']] as const) {
    const e = await apiRefusal(client.chat.completions.list(query as OpenAI.Chat.ChatCompletionListParams));
    assert.equal(e.param, param, JSON.stringify(query));
    assert.equal(e.status, param === 'after' ? 404 : 400);
  }
});

test('update replaces the metadata (the only field it takes); the list filter follows it', async () => {
  const c = await client.chat.completions.create({ model, messages: ask('Name a tree.'), max_tokens: 1, temperature: 0, store: true, metadata: { run: 'update-test', v: '1' } });
  const u = await client.chat.completions.update(c.id, { metadata: { run: 'update-test', v: '2' } });
  assert.deepEqual((u as Stored).metadata, { run: 'update-test', v: '2' });
  assert.deepEqual(((await client.chat.completions.retrieve(c.id)) as Stored).metadata, { run: 'update-test', v: '2' });
  assert.deepEqual((await client.chat.completions.list({ metadata: { run: 'update-test', v: '1' } })).data, []);
  assert.deepEqual((await client.chat.completions.list({ metadata: { run: 'update-test', v: '2' } })).data.map((x) => x.id), [c.id]);
  const other = await apiRefusal(client.post(`/chat/completions/${c.id}`, { body: { metadata: {}, temperature: 0 } }));
  assert.equal(other.status, 400);
  assert.equal(other.param, 'temperature');
  const cleared = await client.chat.completions.update(c.id, { metadata: null });
  assert.deepEqual((cleared as Stored).metadata, {});
  const missing = await apiRefusal(client.chat.completions.update('chatcmpl-nope', { metadata: { a: 'b' } }));
  assert.equal(missing.status, 404);
  assert.match(missing.message, /chatcmpl-nope/);
});

test('delete: the object answers chat.completion.deleted, then retrieve, messages and delete are 404s naming the id', async () => {
  const c = await client.chat.completions.create({ model, messages: ask('Name a bird.'), max_tokens: 1, temperature: 0, store: true });
  assert.deepEqual(await client.chat.completions.delete(c.id), { object: 'chat.completion.deleted', id: c.id, deleted: true });
  for (const call of [() => client.chat.completions.retrieve(c.id), () => client.chat.completions.messages.list(c.id), () => client.chat.completions.delete(c.id)]) {
    const e = await apiRefusal(call());
    assert.equal(e.status, 404);
    assert.equal(e.code, 'not_found');
    assert.ok(e.message.includes(c.id), e.message);
  }
});

test('a streamed completion is stored as its assembled answer: the client\'s final completion, and the plain greedy answer', async () => {
  const messages = ask('Tell me about the old church.');
  const plain = await client.chat.completions.create({ model, messages, max_tokens: 6, temperature: 0 });
  const stream = client.chat.completions.stream({ model, messages, max_tokens: 6, temperature: 0, logprobs: true, top_logprobs: 2, store: true, stream_options: { include_usage: true } });
  const final = await stream.finalChatCompletion();
  const got = await client.chat.completions.retrieve(final.id);
  assert.equal(got.choices.length, 1);
  assert.equal(got.choices[0]!.message.content, final.choices[0]!.message.content);
  assert.equal(got.choices[0]!.message.content, plain.choices[0]!.message.content, 'the same text as the plain answer');
  assert.equal(got.choices[0]!.finish_reason, final.choices[0]!.finish_reason);
  assert.deepEqual(got.choices[0]!.logprobs!.content, JSON.parse(JSON.stringify(final.choices[0]!.logprobs!.content)));
  assert.equal(got.choices[0]!.logprobs!.content!.length, got.usage!.completion_tokens);
  assert.deepEqual(got.usage, final.usage);
  assert.deepEqual([got.created, got.model, got.system_fingerprint], [final.created, final.model, final.system_fingerprint]);
  assert.deepEqual((await client.chat.completions.messages.list(final.id)).data.map((m) => m.content), ['Tell me about the old church.']);
});

test('a streamed forced tool call is stored with the call ids, names and arguments the chunks carried, as the plain answer\'s', async () => {
  const tools: OpenAI.Chat.ChatCompletionTool[] = [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } } }];
  const req = { model, messages: ask('What is the weather in Lyon?'), tools, tool_choice: 'required' as const, max_tokens: 24, temperature: 0 };
  const plain = await client.chat.completions.create(req);
  const final = await client.chat.completions.stream({ ...req, store: true }).finalChatCompletion();
  const got = await client.chat.completions.retrieve(final.id);
  const calls = (m: OpenAI.Chat.ChatCompletionMessage) => m.tool_calls?.map((c) => c.type === 'function' ? [c.id, c.function.name, c.function.arguments] : c);
  assert.ok(calls(final.choices[0]!.message)!.length > 0, 'a forced call');
  assert.deepEqual(calls(got.choices[0]!.message), calls(final.choices[0]!.message), 'the streamed ids, names and arguments');
  assert.deepEqual(calls(got.choices[0]!.message)!.map((c) => (c as string[]).slice(1)), calls(plain.choices[0]!.message)!.map((c) => (c as string[]).slice(1)));
  assert.equal(got.choices[0]!.message.content, plain.choices[0]!.message.content);
  assert.equal(got.choices[0]!.finish_reason, plain.choices[0]!.finish_reason);
});

test('store false or absent keeps nothing', async () => {
  const a = await client.chat.completions.create({ model, messages: ask('Hi.'), max_tokens: 1, temperature: 0, metadata: { run: 'unstored' } });
  const b = await client.chat.completions.create({ model, messages: ask('Hi.'), max_tokens: 1, temperature: 0, store: false, metadata: { run: 'unstored' } });
  const s = client.chat.completions.stream({ model, messages: ask('Hi.'), max_tokens: 1, temperature: 0, metadata: { run: 'unstored' } });
  const c = await s.finalChatCompletion();
  for (const id of [a.id, b.id, c.id]) assert.equal((await apiRefusal(client.chat.completions.retrieve(id))).status, 404);
  assert.deepEqual((await client.chat.completions.list({ metadata: { run: 'unstored' } })).data, []);
});

test('invalid metadata is a 400 naming the param, on create (stored or not) and on update', async () => {
  const cases: Array<[unknown, string]> = [
    [Object.fromEntries(Array.from({ length: 17 }, (_, i) => [`k${i}`, 'v'])), 'metadata'],
    [{ ['x'.repeat(65)]: 'v' }, 'metadata'],
    [{ k: 'v'.repeat(513) }, 'metadata.k'],
    [{ k: 5 }, 'metadata.k'],
    ['tag', 'metadata'],
  ];
  const ok = await client.chat.completions.create({ model, messages: ask('Hi.'), max_tokens: 1, temperature: 0, store: true });
  for (const [metadata, param] of cases) {
    for (const store of [true, false]) {
      const e = await apiRefusal(client.chat.completions.create({ model, messages: ask('Hi.'), max_tokens: 1, store, metadata: metadata as Record<string, string> }));
      assert.deepEqual([e.status, e.param], [400, param], `${JSON.stringify(metadata).slice(0, 40)} store=${store}: ${e.message}`);
    }
    const u = await apiRefusal(client.chat.completions.update(ok.id, { metadata: metadata as Record<string, string> }));
    assert.deepEqual([u.status, u.param], [400, param]);
  }
  // the limits themselves are accepted
  const edge = { ...Object.fromEntries(Array.from({ length: 15 }, (_, i) => [`k${i}`, 'v'])), ['x'.repeat(64)]: 'v'.repeat(512) };
  const c = await client.chat.completions.create({ model, messages: ask('Hi.'), max_tokens: 1, temperature: 0, store: true, metadata: edge });
  assert.deepEqual(((await client.chat.completions.retrieve(c.id)) as Stored).metadata, edge);
});

test('a completion stored without its settings (by the previous version) still answers, its settings null', async () => {
  const fc = fake.client;
  const c = await fc.chat.completions.create({ model: 'tiny', messages: ask('x'), max_tokens: 2, store: true, metadata: { run: 'old-format' } });
  const fresh = await fc.chat.completions.retrieve(c.id);
  assert.equal((fresh as Stored & { temperature: number }).temperature, 1, 'stored with its settings');
  // the row as the previous version wrote it: the completion as answered and its request_id
  const { default: Database } = await import('better-sqlite3');
  const db = new Database(join(fakeDir, 'floe.db'));
  try {
    const row = db.prepare('SELECT completion FROM chat_completions WHERE id = ?').pluck().get(c.id) as string;
    const old = Object.fromEntries(Object.entries(JSON.parse(row) as object).filter(([k]) => !SETTINGS.includes(k)));
    assert.equal(db.prepare('UPDATE chat_completions SET completion = ? WHERE id = ?').run(JSON.stringify(old), c.id).changes, 1);
  } finally {
    db.close();
  }
  const nulls = Object.fromEntries(SETTINGS.map((k) => [k, null]));
  const got = await fc.chat.completions.retrieve(c.id);
  assert.deepEqual(got, { ...fresh, ...nulls });
  assert.deepEqual((await fc.chat.completions.list({ metadata: { run: 'old-format' } })).data, [got]);
  assert.deepEqual((await fc.chat.completions.update(c.id, { metadata: { run: 'old-format', v: '2' } })) as object, { ...got, metadata: { run: 'old-format', v: '2' } });
  assert.deepEqual((await fc.chat.completions.messages.list(c.id)).data.map((m) => m.content), ['x']);
});

test('a failed or abandoned generation is not stored', async () => {
  const { engine, client: fc } = fake;
  const tag = { run: 'failed' };
  engine.refuse = new EngineRequestError(429, 'queue full');
  assert.equal((await apiRefusal(fc.chat.completions.create({ model: 'tiny', messages: ask('x'), max_tokens: 3, store: true, metadata: tag }))).status, 429);
  engine.refuse = null;
  engine.cutAt = 1; // the engine ends it (a shutdown): a 503, or an error event when streamed
  assert.equal((await apiRefusal(fc.chat.completions.create({ model: 'tiny', messages: ask('x'), max_tokens: 3, store: true, metadata: tag }))).status, 503);
  await assert.rejects(fc.chat.completions.stream({ model: 'tiny', messages: ask('x'), max_tokens: 3, store: true, metadata: tag }).finalChatCompletion());
  engine.cutAt = null;
  // a client that leaves mid-stream
  engine.delayMs = 20;
  const before = engine.aborted.length;
  const ac = new AbortController();
  const s = await fc.chat.completions.create({ model: 'tiny', messages: ask('x'), max_tokens: 200, store: true, metadata: tag, stream: true }, { signal: ac.signal });
  for await (const _ of s) { ac.abort(); break; }
  // until the server has aborted it and its handler has ended (where it would store)
  for (const deadline = Date.now() + 10_000; engine.aborted.length === before || fake.serve.inFlight() > 0;) {
    assert.ok(Date.now() < deadline, 'the engine request was never aborted, or its handler never ended');
    await new Promise((r) => setTimeout(r, 10));
  }
  engine.delayMs = 0;
  // the control: the same request that finishes is stored
  const done = await fc.chat.completions.create({ model: 'tiny', messages: ask('x'), max_tokens: 3, store: true, metadata: { run: 'finished' } });
  assert.deepEqual((await fc.chat.completions.list({ metadata: { run: 'finished' } })).data.map((c) => c.id), [done.id]);
  assert.deepEqual((await fc.chat.completions.list({ metadata: tag })).data, []);
});

test('no data dir (--no-batch): store: true is accepted and ignored, and the stored-completion routes are 404s saying nothing is stored', async () => {
  const { data, response } = await bare.client.chat.completions.create({ model: 'tiny', messages: ask('x'), max_tokens: 2, store: true, metadata: { a: 'b' } }).withResponse();
  assert.deepEqual(response.headers.get('x-floe-ignored-fields')?.split(', ').sort(), ['metadata', 'store']);
  const c = bare.client.chat.completions;
  for (const call of [() => c.retrieve(data.id), () => c.list(), () => c.messages.list(data.id), () => c.update(data.id, { metadata: {} }), () => c.delete(data.id)]) {
    const e = await apiRefusal(call());
    assert.equal(e.status, 404);
    assert.equal(e.code, 'not_found');
    assert.match(e.message, /stores no chat completions.*--no-batch/);
  }
  // invalid metadata is still a 400 here
  assert.equal((await apiRefusal(bare.client.chat.completions.create({ model: 'tiny', messages: ask('x'), max_tokens: 2, metadata: { k: 5 } as never }))).param, 'metadata.k');
});

test('a Batch API line\'s response.request_id is the x-request-id its answer carried (req_ and 32 hex digits): the stored completion\'s', async () => {
  const fc = fake.client;
  const lines = ['a', 'b'].map((k) => ({ custom_id: k, method: 'POST', url: '/v1/chat/completions', body: { model: 'tiny', messages: ask(k), max_tokens: 2, store: true } }));
  const file = await fc.files.create({ file: await toFile(Buffer.from(lines.map((l) => JSON.stringify(l)).join('\n')), 'in.jsonl'), purpose: 'batch' });
  let b = await fc.batches.create({ input_file_id: file.id, endpoint: '/v1/chat/completions', completion_window: '24h' });
  for (const deadline = Date.now() + 20_000; !['completed', 'failed', 'cancelled', 'expired'].includes(b.status);) {
    assert.ok(Date.now() < deadline, `batch still ${b.status}`);
    await new Promise((r) => setTimeout(r, 20));
    b = await fc.batches.retrieve(b.id);
  }
  assert.equal(b.status, 'completed');
  const out = (await (await fc.files.content(b.output_file_id!)).text()).trim().split('\n').map((l) => JSON.parse(l) as { id: string; response: { status_code: number; request_id: string; body: { id: string } } });
  assert.equal(out.length, 2);
  for (const l of out) {
    assert.equal(l.response.status_code, 200);
    assert.match(l.response.request_id, /^req_[0-9a-f]{32}$/);
    assert.equal(l.id, `batch_req_${l.response.request_id.slice(4)}`);
    const stored = await fc.chat.completions.retrieve(l.response.body.id) as Stored & { request_id: string };
    assert.equal(stored.request_id, l.response.request_id, 'the same id as the answer\'s x-request-id');
  }
  assert.notEqual(out[0]!.response.request_id, out[1]!.response.request_id);
});
