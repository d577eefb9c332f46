// The HTTP API on the built-in models (chat floe-brown, guard floe-guard, embedding floe-embed, a data dir) answers
// malformed requests with a 4xx naming the field: defects a fuzz of the API found, each pinned by its own test.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ChatTemplate } from '../../src/formats/chat-template.js';
import { loadTokenizer } from '../../src/formats/tokenizer.js';
import { createApp } from '../../src/serve/app.js';
import { MAX_MODERATION_INPUTS } from '../../src/serve/guard-routes.js';
import { startServer, type RunningServer } from '../../src/serve/server.js';
import { MAX_JSON_DEPTH } from '../../src/serve/validate.js';
import { FakeEngine } from './helpers.js';

const BROWN = fileURLToPath(new URL('../../models/floe-brown', import.meta.url));
const GUARD = fileURLToPath(new URL('../../models/floe-guard', import.meta.url));
const EMBED = fileURLToPath(new URL('../../models/floe-embed', import.meta.url));

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

const nested = (depth: number, leaf: Json = 1): Json => {
  let v: Json = leaf;
  for (let i = 0; i < depth; i++) v = { a: v };
  return v;
};
const nestedArray = (depth: number): Json => {
  let v: Json = [];
  for (let i = 0; i < depth; i++) v = [v];
  return v;
};

let server: RunningServer;
let url = '';
let trainFile = '';
let batchFile = '';

const post = async (route: string, body: unknown) => {
  const r = await fetch(url + route, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  return { status: r.status, json: await r.json() as Record<string, any> };
};
const upload = async (purpose: string, text: string): Promise<string> => {
  const fd = new FormData();
  fd.set('purpose', purpose);
  fd.set('file', new Blob([text]), 'in.jsonl');
  const r = await fetch(url + '/v1/files', { method: 'POST', body: fd });
  const j = await r.json() as { id: string };
  assert.equal(r.status, 200, JSON.stringify(j));
  return j.id;
};

before(async () => {
  server = await startServer({
    model: BROWN, guardModel: GUARD, embeddingModel: EMBED, port: 0, ui: false, threads: 1, log: () => {},
    dataDir: mkdtempSync(join(tmpdir(), 'floe-fuzz-')), kvCacheMemory: 24 * 2 ** 20, guardKvCacheMemory: 8 * 2 ** 20,
  });
  await server.ready;
  url = server.url;
  const line = JSON.stringify({ messages: [{ role: 'user', content: 'the river' }, { role: 'assistant', content: 'was long' }] });
  trainFile = await upload('fine-tune', `${line}\n${line}\n`);
  const req = (i: number) => JSON.stringify({ custom_id: `r${i}`, method: 'POST', url: '/v1/chat/completions', body: { messages: [{ role: 'user', content: 'hi' }], max_tokens: 1 } });
  batchFile = await upload('batch', `${req(1)}\n${req(2)}\n`);
});
after(async () => { await server?.close(0); });

const TOOL = { type: 'function', function: { name: 'get_weather', description: 'the weather', parameters: { type: 'object', properties: { city: { type: 'string' }, days: { type: 'integer', minimum: 1 } }, required: ['city'] } } };

// Defects the fuzz found, each pinned: the request, and the answer it gets now (each was a 500, a wrong param, or taken).

const nestedProps = (levels: number): Json => ({ type: 'object', properties: nested(levels) });

test(`a body, or a JSON string field, nested more than ${MAX_JSON_DEPTH} levels deep is a 400 naming its field on every route; ${MAX_JSON_DEPTH} levels pass (deeper was a 500: the schema compiler and the chat template overflowed the stack)`, async () => {
  const deep = (r: { status: number; json: Record<string, any> }, param: string, what: string) => {
    assert.equal(r.status, 400, `${what}: ${JSON.stringify(r.json).slice(0, 300)}`);
    assert.equal(r.json.error.param, param, what);
    assert.equal(r.json.error.code, 'too_deeply_nested', what);
    assert.match(r.json.error.message, new RegExp(`nests arrays and objects more than ${MAX_JSON_DEPTH} levels deep`), what);
  };
  const user = [{ role: 'user', content: 'hi' }];
  deep(await post('/v1/chat/completions', { messages: user, max_tokens: 1, response_format: { type: 'json_schema', json_schema: { name: 'a', schema: { type: nestedArray(2000) } } } }), 'response_format', 'chat schema');
  deep(await post('/v1/responses', { input: 'hi', max_output_tokens: 1, text: { format: { type: 'json_schema', name: 'a', schema: { type: nestedArray(2000) } } } }), 'text', 'responses schema');
  deep(await post('/tokenize', { messages: user, tools: [{ ...TOOL, function: { name: 'f', parameters: nestedProps(2000) } }] }), 'tools', '/tokenize tools');
  deep(await post('/v1/batches', { input_file_id: batchFile, endpoint: '/v1/chat/completions', metadata: nested(2000) }), 'metadata', 'batches');
  // JSON inside strings: tool-call arguments (chat, responses) and guided_json
  const args = JSON.stringify(nested(2000));
  deep(await post('/v1/chat/completions', { messages: [...user, { role: 'assistant', tool_calls: [{ id: 'c', type: 'function', function: { name: 'f', arguments: args } }] }, { role: 'tool', tool_call_id: 'c', content: 'x' }], max_tokens: 1 }),
    'messages[1].tool_calls[0].function.arguments', 'chat tool-call arguments');
  deep(await post('/v1/responses', { input: [{ type: 'function_call', call_id: 'c', name: 'f', arguments: args }, { type: 'function_call_output', call_id: 'c', output: 'x' }], max_output_tokens: 1 }), 'input[0].arguments', 'responses arguments');
  deep(await post('/v1/completions', { prompt: 'a', max_tokens: 1, guided_json: JSON.stringify({ type: 'object', properties: nested(2000) }) }), 'guided_json', 'guided_json string');
  // the limit itself: body (1) > tools (2) > [0] (3) > function (4) > parameters (5) > properties' objects (6 ...)
  const at = (levels: number) => post('/tokenize', { messages: user, tools: [{ type: 'function', function: { name: 'f', parameters: nestedProps(levels) } }] });
  const ok = await at(MAX_JSON_DEPTH - 5);
  assert.equal(ok.status, 200, JSON.stringify(ok.json).slice(0, 300));
  deep(await at(MAX_JSON_DEPTH - 4), 'tools', `one level past ${MAX_JSON_DEPTH}`);
});

test('guided_regex of thousands of nested groups is a 400 naming guided_regex (was a 500: the regex parser overflowed the stack); a modestly nested one runs', async () => {
  const pattern = '('.repeat(5000) + 'a' + ')'.repeat(5000);
  for (const [route, body] of [['/v1/chat/completions', { messages: [{ role: 'user', content: 'hi' }] }], ['/v1/completions', { prompt: 'a' }]] as const) {
    const r = await post(route, { ...body, max_tokens: 1, guided_regex: pattern });
    assert.equal(r.status, 400, `${route}: ${JSON.stringify(r.json).slice(0, 300)}`);
    assert.equal(r.json.error.param, 'guided_regex');
    assert.match(r.json.error.message, /'guided_regex' is nested too deeply to compile/);
    const fine = await post(route, { ...body, max_tokens: 1, guided_regex: '('.repeat(50) + 'a' + ')'.repeat(50) });
    assert.equal(fine.status, 200, `${route}: ${JSON.stringify(fine.json).slice(0, 300)}`);
  }
});

test('/tokenize: a chat template that refuses the messages (raise_exception) is a 400 naming messages, as /v1/chat/completions answers it (was a 500)', async () => {
  const tok = (await loadTokenizer(BROWN))!;
  const template = new ChatTemplate("{% if messages[0].role != 'user' %}{{ raise_exception('the first message must be the user\\'s') }}{% endif %}{% for m in messages %}{{ m.content }}{% endfor %}", 't.jinja');
  const s = createApp({ modelName: 'brown', ui: false });
  s.ready({ engine: new FakeEngine(tok, { vocabSize: tok.vocabSize, maxModelLen: 2048, maxRequestTokens: 2048 }), tokenizer: tok, template });
  for (const url of ['/tokenize', '/v1/chat/completions']) {
    const r = await s.app.inject({ method: 'POST', url, headers: { 'content-type': 'application/json' }, payload: JSON.stringify({ messages: [{ role: 'system', content: 'x' }, { role: 'user', content: 'y' }], ...(url === '/tokenize' ? {} : { max_tokens: 1 }) }) });
    assert.equal(r.statusCode, 400, `${url}: ${r.body}`);
    const e = (JSON.parse(r.body) as { error: { param: string; message: string } }).error;
    assert.equal(e.param, 'messages', url);
    assert.match(e.message, /the chat template rejected the messages: .*the first message must be the user's/, url);
  }
  await s.app.close();
});

test(`/v1/moderations: more than ${MAX_MODERATION_INPUTS} inputs are a 400 before any is judged (10,000 took minutes, one guard judgement after another)`, async () => {
  for (const n of [MAX_MODERATION_INPUTS + 1, 10_000]) {
    const r = await post('/v1/moderations', { input: Array(n).fill('a calm river') });
    assert.equal(r.status, 400, `${n} inputs: ${JSON.stringify(r.json).slice(0, 300)}`);
    assert.equal(r.json.error.param, 'input');
    assert.match(r.json.error.message, new RegExp(`'input' may hold at most ${MAX_MODERATION_INPUTS} texts, got ${n}`));
  }
});

test('/v1/moderations: an input too long for the guard is a 400 naming it (input or input[i]), not messages', async () => {
  const long = 'the river ran on '.repeat(400); // over the guard's 1024 tokens
  for (const [input, param] of [[long, 'input'], [['a calm river', long], 'input[1]'], [[{ type: 'text', text: long }], 'input[0]']] as const) {
    const r = await post('/v1/moderations', { input });
    assert.equal(r.status, 400, JSON.stringify(r.json).slice(0, 300));
    assert.equal(r.json.error.code, 'context_length_exceeded');
    assert.equal(r.json.error.param, param);
  }
  const m = await post('/v1/moderations', { messages: [{ role: 'user', content: long }] });
  assert.equal(m.json.error?.param, 'messages', JSON.stringify(m.json).slice(0, 300));
});

test('POST /v1/batches: an unknown parameter (a misspelt completion_window, output_expires_after) is a 400 naming it and creates no batch (it was dropped silently)', async () => {
  const count = async () => ((await (await fetch(`${url}/v1/batches?limit=10000`)).json()) as { data: unknown[] }).data.length;
  const before = await count();
  const base = { input_file_id: batchFile, endpoint: '/v1/chat/completions' };
  for (const [extra, param, re] of [
    [{ completion_windwo: '24h' }, 'completion_windwo', /unknown parameter 'completion_windwo'; a batch takes input_file_id, endpoint, completion_window, metadata/],
    [{ output_expires_after: { anchor: 'created_at', seconds: 3600 } }, 'output_expires_after', /'output_expires_after' is not supported/],
  ] as const) {
    const r = await post('/v1/batches', { ...base, ...extra });
    assert.equal(r.status, 400, JSON.stringify(r.json));
    assert.equal(r.json.error.param, param);
    assert.match(r.json.error.message, re);
  }
  assert.equal(await count(), before, 'no batch was created');
});
