// Seeded fuzz of the HTTP API on the built-in models (chat floe-brown, guard floe-guard, embedding floe-embed, a data
// dir): valid requests to every JSON route, mutated (a field dropped, set to a wrong type, huge or deep; unknown
// fields; wrong content types; broken JSON; oversized lists), must each get a 2xx or a 4xx whose JSON error has a
// message, and a param when a field was wrong; never a 5xx, never a dropped connection; the server still answers a
// valid chat request after each batch. Replay one run with FLOE_FUZZ_SEED=<seed> (FLOE_FUZZ_COUNT: how many requests;
// FLOE_FUZZ_ALL=1: every mutation of every valid request, ~8000, a minute or two; FLOE_FUZZ_VERBOSE=1: each answer).
// The defects it found are pinned first, each by its own test.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ChatTemplate } from '../../src/formats/chat-template.js';
import { loadTokenizer } from '../../src/formats/tokenizer.js';
import { createApp } from '../../src/serve/app.js';
import { MAX_MODERATION_INPUTS } from '../../src/serve/guard-routes.js';
import { startServer, type RunningServer } from '../../src/serve/server.js';
import { MAX_JSON_DEPTH } from '../../src/serve/validate.js';
import { FakeEngine } from './helpers.js';
import { rand } from '../engine/helpers.js';
import { repoPath } from '../repo.js';

const BROWN = repoPath('models/floe-brown');
const GUARD = repoPath('models/floe-guard');
const EMBED = repoPath('models/floe-embed');

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
const SCHEMA = { type: 'object', properties: { answer: { type: 'string', maxLength: 8 }, n: { type: 'integer' } }, required: ['answer'], additionalProperties: false };

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

// The fuzz: valid requests (bases), broken one way each, sent a few at a time; a valid chat request after each group.

const SEED = process.env.FLOE_FUZZ_SEED !== undefined ? Number(process.env.FLOE_FUZZ_SEED) : Math.floor(Math.random() * 2 ** 31);
const COUNT = Number(process.env.FLOE_FUZZ_COUNT ?? 500);
const PARALLEL = 6; // requests in flight at once; the health check runs after each group

type Path = ReadonlyArray<string | number>;

/** A path as OpenAI's `param` names it: messages[0].content. */
const paramOf = (p: Path): string => p.map((k, i) => (typeof k === 'number' ? `[${k}]` : i === 0 ? k : `.${k}`)).join('');

/** Values of every wrong kind: each replaces a field somewhere. */
const WRONG: ReadonlyArray<[string, () => Json]> = [
  ['null', () => null], ['0', () => 0], ['-1', () => -1], ['1.5', () => 1.5], ['1e308', () => 1e308], ['-1e308', () => -1e308],
  ['2^53+2', () => 2 ** 53 + 2], ['true', () => true], ['false', () => false], ['""', () => ''], ['"NaN"', () => 'NaN'],
  ['"Infinity"', () => 'Infinity'], ['"-1"', () => '-1'], ['"x"', () => 'x'], ['100k chars', () => 'x'.repeat(100_000)],
  ['[]', () => []], ['[1,"a",null,{}]', () => [1, 'a', null, {}]], ['{}', () => ({})], ['{"a":{"b":1}}', () => ({ a: { b: 1 } })],
  ['object nested 2000 deep', () => nested(2000)], ['array nested 2000 deep', () => nestedArray(2000)],
  ['5000 strings', () => Array.from({ length: 5000 }, (_, i) => `s${i}`)], ['"\\u0000\\ud800"', () => '\u0000\ud800'],
];

interface Case {
  readonly what: string; // how the valid request was changed (printed on failure)
  readonly route: string;
  readonly body: string | FormData | undefined;
  readonly contentType: string | null; // null: none sent (FormData sets its own)
  readonly field: string | null; // the field a mutation made wrong: a 400 must name a param
  readonly onSuccess?: (json: Record<string, unknown>) => Promise<void>; // undo what a 2xx started (a batch, a job)
}

/** Valid requests, one or more per route; each generates at most a few tokens. */
function bases(): Array<{ route: string; body: Record<string, Json>; onSuccess?: Case['onSuccess'] }> {
  const messages: Json = [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: [{ type: 'text', text: 'Tell me about the river.' }] }];
  const cancelBatch = async (j: Record<string, unknown>) => { if (typeof j.id === 'string') await fetch(`${url}/v1/batches/${j.id}/cancel`, { method: 'POST' }); };
  const cancelJob = async (j: Record<string, unknown>) => {
    if (typeof j.id !== 'string') return;
    const r = await fetch(`${url}/v1/fine_tuning/jobs/${j.id}/cancel`, { method: 'POST' });
    assert.ok(r.status === 200 || r.status === 409, `cancel ${j.id}: ${r.status}`); // 409: it ended already
  };
  return [
    { route: '/v1/chat/completions', body: { model: 'floe-brown', messages, max_tokens: 2, temperature: 0, top_p: 0.9, stop: ['\n\n', 'END'], seed: 7, n: 1, logprobs: true, top_logprobs: 2, logit_bias: { '5': 1.5, '17': -100 }, user: 'u', stream: false } },
    { route: '/v1/chat/completions', body: { model: 'floe-brown', messages, max_completion_tokens: 3, stream: true, stream_options: { include_usage: true }, response_format: { type: 'json_schema', json_schema: { name: 'a', schema: SCHEMA, strict: true } } } },
    { route: '/v1/chat/completions', body: { messages: [...messages as Json[], { role: 'assistant', content: null, tool_calls: [{ id: 'c1', type: 'function', function: { name: 'get_weather', arguments: '{"city":"Oslo"}' } }] }, { role: 'tool', tool_call_id: 'c1', content: 'sunny' }], tools: [TOOL], tool_choice: 'auto', parallel_tool_calls: false, max_tokens: 2 } },
    { route: '/v1/chat/completions', body: { messages, tools: [TOOL], tool_choice: { type: 'function', function: { name: 'get_weather' } }, max_tokens: 4 } },
    { route: '/v1/completions', body: { model: 'floe-brown', prompt: 'The river', max_tokens: 2, temperature: 0, logprobs: 2, echo: true, stop: ['.'], logit_bias: { '9': 2 }, n: 2, seed: 1, prompt_logprobs: 1 } },
    { route: '/v1/completions', body: { prompt: [[5, 6, 7], 'and the old church'], max_tokens: 1, stream: true, stop_token_ids: [3], return_token_ids: true, guided_regex: '[a-z]+' } },
    { route: '/v1/embeddings', body: { model: 'floe-embed', input: ['a river', 'a church'], encoding_format: 'float', pooling: 'mean', normalize: true } },
    { route: '/score', body: { model: 'floe-embed', text_1: 'a river', text_2: ['a church', 'a boat'], truncate_prompt_tokens: 8, user: 'u' } },
    { route: '/v2/rerank', body: { query: 'a river', documents: ['a church', { text: 'a boat' }], top_n: 1, return_documents: true } },
    { route: '/v1/responses', body: { model: 'floe-brown', instructions: 'Be brief.', input: [{ role: 'user', content: [{ type: 'input_text', text: 'Hi there' }] }], max_output_tokens: 2, temperature: 0, store: false, metadata: { a: 'b' }, include: ['message.output_text.logprobs'], top_logprobs: 1 } },
    { route: '/v1/responses', body: { input: 'Hello', tools: [{ type: 'function', name: 'get_weather', parameters: TOOL.function.parameters as Json }], tool_choice: 'auto', text: { format: { type: 'json_schema', name: 'x', schema: SCHEMA } }, max_output_tokens: 3, stream: true } },
    { route: '/v1/moderations', body: { model: 'floe-guard', input: ['a calm river', { type: 'text', text: 'an old church' }], include_prompt: false } },
    { route: '/v1/moderations', body: { messages: [{ role: 'user', content: 'hello' }, { role: 'assistant', content: 'hi' }], role: 'agent' } },
    { route: '/tokenize', body: { model: 'floe-brown', prompt: 'the river', add_special_tokens: true, return_token_strs: true } },
    { route: '/tokenize', body: { messages, add_generation_prompt: true, tools: [TOOL] } },
    { route: '/detokenize', body: { model: 'floe-brown', tokens: [5, 6, 7, 4091] } },
    { route: '/v1/batches', body: { input_file_id: batchFile, endpoint: '/v1/chat/completions', completion_window: '24h', metadata: { k: 'v' } }, onSuccess: cancelBatch },
    { route: '/v1/fine_tuning/jobs', body: { model: 'floe-brown', training_file: trainFile, suffix: 'fz', seed: 3, floe: { max_steps: 1, lora_rank: 2 }, metadata: { a: 'b' } }, onSuccess: cancelJob },
  ];
}

/** Every path into a body (object keys and array elements), to pick a field to break. */
function paths(v: Json, at: Path = [], out: Path[] = []): Path[] {
  if (at.length > 6) return out;
  if (Array.isArray(v)) v.forEach((x, i) => { out.push([...at, i]); paths(x, [...at, i], out); });
  else if (v !== null && typeof v === 'object') for (const [k, x] of Object.entries(v)) { out.push([...at, k]); paths(x, [...at, k], out); }
  return out;
}

const clone = <T>(v: T): T => structuredClone(v);
function parentOf(root: Json, p: Path): { parent: Json[] | Record<string, Json>; key: string | number } {
  let cur = root as Json;
  for (const k of p.slice(0, -1)) cur = (cur as Record<string, Json>)[k as string]!;
  return { parent: cur as Json[] | Record<string, Json>, key: p.at(-1)! };
}

/** Mutations aimed at what servers mishandle most: limits, long lists, roles, content parts, schemas, regexes, logit_bias. */
const TARGETED: ReadonlyArray<[string, Path, () => Json]> = [
  ['max_tokens 1e9', ['max_tokens'], () => 1e9], ['max_tokens 2^31', ['max_tokens'], () => 2 ** 31], ['max_tokens 0', ['max_tokens'], () => 0],
  ['max_completion_tokens 1e12', ['max_completion_tokens'], () => 1e12], ['max_output_tokens 1e9', ['max_output_tokens'], () => 1e9],
  ['n 1000', ['n'], () => 1000], ['n 2^40', ['n'], () => 2 ** 40], ['logprobs 1000', ['logprobs'], () => 1000], ['top_logprobs 1000', ['top_logprobs'], () => 1000],
  ['prompt_logprobs 1e6', ['prompt_logprobs'], () => 1e6],
  ['stop 5000 entries', ['stop'], () => Array.from({ length: 5000 }, (_, i) => `stop${i}`)], ['stop 20 empty', ['stop'], () => Array(20).fill('')],
  ['stop_token_ids 5000', ['stop_token_ids'], () => Array.from({ length: 5000 }, (_, i) => i)], ['stop_token_ids [-1]', ['stop_token_ids'], () => [-1]],
  ['role robot', ['messages', 1, 'role'], () => 'robot'], ['role function', ['messages', 0, 'role'], () => 'function'],
  ['role ipython', ['messages', 1, 'role'], () => 'ipython'], ['role number', ['messages', 1, 'role'], () => 3],
  ['content part image_url', ['messages', 1, 'content'], () => [{ type: 'image_url', image_url: { url: 'data:,' } }]],
  ['content part unknown', ['messages', 1, 'content'], () => [{ type: 'hologram', text: 'x' }]],
  ['content part no text', ['messages', 1, 'content'], () => [{ type: 'text' }]],
  ['content 10000 parts', ['messages', 1, 'content'], () => Array.from({ length: 10_000 }, () => ({ type: 'text', text: 'a' }))],
  ['message with tool_calls on user', ['messages', 1, 'tool_calls'], () => [{ id: 'x', type: 'function', function: { name: 'f', arguments: '{' } }]],
  ['tool_calls arguments not JSON', ['messages', 2, 'tool_calls'], () => [{ id: 'c1', type: 'function', function: { name: 'get_weather', arguments: '{"city":' } }]],
  ['tool_calls arguments deep', ['messages', 2, 'tool_calls'], () => [{ id: 'c1', type: 'function', function: { name: 'get_weather', arguments: JSON.stringify(nested(3000)) } }]],
  ['tool params type nonsense', ['tools', 0, 'function', 'parameters'], () => ({ type: 'nonsense' })],
  ['tool params properties 5', ['tools', 0, 'function', 'parameters'], () => ({ type: 'object', properties: 5 })],
  ['tool params bad $ref', ['tools', 0, 'function', 'parameters'], () => ({ type: 'object', properties: { a: { $ref: '#/nowhere' } } })],
  ['tool params $ref loop', ['tools', 0, 'function', 'parameters'], () => ({ $defs: { a: { $ref: '#/$defs/a' } }, type: 'object', properties: { x: { $ref: '#/$defs/a' } }, required: ['x'] })],
  ['tool params bad pattern', ['tools', 0, 'function', 'parameters'], () => ({ type: 'object', properties: { a: { type: 'string', pattern: '([' } }, required: ['a'] })],
  ['tool params required string', ['tools', 0, 'function', 'parameters'], () => ({ type: 'object', properties: {}, required: 'a' })],
  ['tool params deep', ['tools', 0, 'function', 'parameters'], () => nestedSchema(1000)],
  ['tool name missing', ['tools', 0, 'function', 'name'], () => null], ['tool name number', ['tools', 0, 'function', 'name'], () => 5],
  ['tools 5000', ['tools'], () => Array.from({ length: 5000 }, (_, i) => ({ type: 'function', function: { name: `f${i}` } }))],
  ['flat tool params deep', ['tools', 0, 'parameters'], () => nestedSchema(1000)],
  ['flat tool params nonsense', ['tools', 0, 'parameters'], () => ({ type: 'object', properties: { a: { type: 'strnig' } } })],
  ['schema type strnig', ['response_format', 'json_schema', 'schema'], () => ({ type: 'strnig' })],
  ['schema minLength > maxLength', ['response_format', 'json_schema', 'schema'], () => ({ type: 'string', minLength: 5, maxLength: 2 })],
  ['schema empty enum', ['response_format', 'json_schema', 'schema'], () => ({ enum: [] })],
  ['schema bad pattern', ['response_format', 'json_schema', 'schema'], () => ({ type: 'string', pattern: '[' })],
  ['schema deep', ['response_format', 'json_schema', 'schema'], () => nestedSchema(1000)],
  ['schema $ref loop', ['response_format', 'json_schema', 'schema'], () => ({ $ref: '#', type: 'object' })],
  ['schema array', ['response_format', 'json_schema', 'schema'], () => [1]],
  ['response_format type unknown', ['response_format', 'type'], () => 'xml'],
  ['text.format schema deep', ['text', 'format', 'schema'], () => nestedSchema(1000)],
  ['text.format schema strnig', ['text', 'format', 'schema'], () => ({ type: 'strnig' })],
  ['guided_regex bad', ['guided_regex'], () => '(['], ['guided_regex deep', ['guided_regex'], () => '('.repeat(5000) + ')'.repeat(5000)],
  ['guided_json deep', ['guided_json'], () => nestedSchema(1000)], ['guided_choice empty', ['guided_choice'], () => []],
  ['logit_bias key abc', ['logit_bias'], () => ({ abc: 1 })], ['logit_bias key -1', ['logit_bias'], () => ({ '-1': 1 })],
  ['logit_bias key 1e3', ['logit_bias'], () => ({ '1e3': 1 })], ['logit_bias key huge', ['logit_bias'], () => ({ '99999999999999999999': 1 })],
  ['logit_bias value string', ['logit_bias'], () => ({ '5': 'x' })], ['logit_bias value 1e9', ['logit_bias'], () => ({ '5': 1e9 })],
  ['logit_bias 20000 keys', ['logit_bias'], () => Object.fromEntries(Array.from({ length: 20_000 }, (_, i) => [String(i), 1]))],
  ['prompt ids out of vocab', ['prompt'], () => [[5, 1e9]]], ['prompt 10000 prompts', ['prompt'], () => Array(10_000).fill('a')],
  ['prompt ids mixed', ['prompt'], () => [5, 'a']], ['prompt nested', ['prompt'], () => [[[5]]]],
  ['input 10000 items', ['input'], () => Array(10_000).fill('a')], ['input ids out of vocab', ['input'], () => [[1e9]]],
  ['input item unknown type', ['input', 0, 'type'], () => 'computer_call'], ['input content part image', ['input', 0, 'content'], () => [{ type: 'input_image', image_url: 'x' }]],
  ['tokens -1', ['tokens'], () => [-1]], ['tokens 1.5', ['tokens'], () => [1.5]], ['tokens 100000 ids', ['tokens'], () => Array(100_000).fill(5)],
  ['metadata 100 keys', ['metadata'], () => Object.fromEntries(Array.from({ length: 100 }, (_, i) => [`k${i}`, 'v']))],
  ['metadata value number', ['metadata'], () => ({ a: 1 })],
  ['floe.lora_rank 1e6', ['floe', 'lora_rank'], () => 1e6], ['floe.max_steps -1', ['floe', 'max_steps'], () => -1],
  ['floe unknown key', ['floe', 'warp'], () => 9], ['hyperparameters n_epochs 0', ['hyperparameters'], () => ({ n_epochs: 0 })],
  ['hyperparameters lr string', ['hyperparameters'], () => ({ learning_rate_multiplier: 'fast' })],
  ['endpoint unknown', ['endpoint'], () => '/v1/nothing'], ['completion_window 1h', ['completion_window'], () => '1h'],
  ['training_file unknown id', ['training_file'], () => 'file-nope'], ['input_file_id wrong purpose', ['input_file_id'], () => '__TRAIN__'],
  ['moderation role bogus', ['role'], () => 'narrator'], ['messages empty', ['messages'], () => []],
  ['previous_response_id unknown', ['previous_response_id'], () => 'resp_nope'],
  ['stream_options without stream', ['stream'], () => false],
];

function nestedSchema(depth: number): Json {
  let v: Json = { type: 'string' };
  for (let i = 0; i < depth; i++) v = { type: 'object', properties: { a: v }, required: ['a'] };
  return v;
}

/** A body at a path, mutated: the path's parent must exist (else the mutation does not apply). */
function setAt(body: Record<string, Json>, p: Path, v: Json | undefined): boolean {
  let cur: Json = body;
  for (const k of p.slice(0, -1)) {
    if (cur === null || typeof cur !== 'object') return false;
    cur = (cur as Record<string, Json>)[k as string] as Json;
    if (cur === undefined) return false;
  }
  if (cur === null || typeof cur !== 'object') return false;
  const key = p.at(-1)!;
  if (v === undefined) {
    if (Array.isArray(cur)) cur.splice(key as number, 1);
    else delete (cur as Record<string, Json>)[key];
  } else (cur as Record<string, Json>)[key] = v;
  return true;
}

type Base = ReturnType<typeof bases>[number];
const json = (what: string, route: string, body: unknown, field: string | null, onSuccess?: Case['onSuccess']): Case =>
  ({ what, route, body: JSON.stringify(body), contentType: 'application/json', field, onSuccess });
const fresh = (base: Base): Record<string, Json> => clone(base.body);

/** One field of a valid request broken: dropped, a wrong value, an unknown key beside it. op: 0 drop, 1.. WRONG[op - 1], last: unknown. */
const FIELD_OPS = WRONG.length + 2;
function fieldCase(base: Base, p: Path, op: number): Case {
  const body = fresh(base);
  if (op === 0) {
    setAt(body, p, undefined);
    return json(`drop ${paramOf(p)}`, base.route, body, paramOf(p), base.onSuccess);
  }
  if (op <= WRONG.length) {
    const [name, v] = WRONG[op - 1]!;
    setAt(body, p, v());
    return json(`${paramOf(p)} = ${name}`, base.route, body, paramOf(p), base.onSuccess);
  }
  const { parent } = parentOf(body, p);
  if (Array.isArray(parent)) parent.push({ floe_fuzz: 1 });
  else parent.floe_fuzz_unknown = 1;
  return json(`unknown field beside ${paramOf(p)}`, base.route, body, paramOf(p), base.onSuccess);
}

/** The mutations of TARGETED that apply to a base (their parent path exists in it). */
const targetedFor = (base: Base) => TARGETED.filter(([, p]) => p.length === 1 || setAt(fresh(base), p, 0));
function targetedCase(base: Base, [name, p, v]: (typeof TARGETED)[number]): Case {
  const body = fresh(base);
  let value = v();
  if (value === '__TRAIN__') value = trainFile;
  setAt(body, p, value);
  return json(name, base.route, body, paramOf(p), base.onSuccess);
}

/** The request itself broken: content type, JSON syntax, body kind, size. */
function requestCases(base: Base, cut: number): Array<() => Case> {
  const body = fresh(base);
  const text = JSON.stringify(body);
  const raw = (what: string, b: () => string, contentType: string | null) => (): Case => ({ what, route: base.route, body: b(), contentType, field: null });
  const j = 'application/json';
  return [
    raw('text/plain', () => text, 'text/plain'), raw('form-urlencoded', () => 'a=1&b=2', 'application/x-www-form-urlencoded'),
    raw('multipart without boundary', () => text, 'multipart/form-data'), raw('no content-type', () => text, null),
    raw('content-type nonsense', () => text, '%%%/;;'), raw('json charset latin1', () => text, 'application/json; charset=latin1'),
    raw('truncated JSON', () => text.slice(0, Math.floor(cut * text.length)), j), raw('trailing garbage', () => text + '}{', j),
    raw('BOM before JSON', () => '\ufeff' + text, j), raw('single quotes', () => text.replaceAll('"', "'"), j), raw('empty body', () => '', j),
    raw('body null', () => 'null', j), raw('body array', () => `[${text}]`, j), raw('body string', () => '"hello"', j), raw('body number', () => '1e999', j),
    raw('__proto__ key', () => `{"__proto__":{"x":1},${text.slice(1)}`, j),
    raw('constructor.prototype key', () => `{"constructor":{"prototype":{"x":1}},${text.slice(1)}`, j),
    raw('duplicate keys', () => `{"model":5,${text.slice(1)}`, j),
    raw('body nested 100000 deep', () => '['.repeat(100_000) + ']'.repeat(100_000), j),
    raw('body 9 MiB', () => JSON.stringify({ ...body, pad: 'x'.repeat(9 * 2 ** 20) }), j),
    () => ({ ...raw('invalid UTF-8', () => '', j)(), body: Buffer.concat([Buffer.from(text.slice(0, -1) + ',"zz":"'), Buffer.from([0xff, 0xfe, 0xc3]), Buffer.from('"}')]) as unknown as string }),
    () => json('unknown top-level field', base.route, { ...body, zz_unknown: { a: 1 } }, 'zz_unknown', base.onSuccess),
  ];
}

/** Uploads: the Files API takes multipart only. */
function fileCases(): Case[] {
  const up = (what: string, field: string | null, parts: Record<string, string | Blob>): Case => {
    const fd = new FormData();
    for (const [k, v] of Object.entries(parts)) typeof v === 'string' ? fd.set(k, v) : fd.set(k, v, 'a.jsonl');
    return { what, route: '/v1/files', body: fd, contentType: null, field };
  };
  return [
    up('upload without file', 'file', { purpose: 'fine-tune' }), up('upload without purpose', 'purpose', { file: new Blob(['{}\n']) }),
    up('upload purpose assistants', 'purpose', { purpose: 'assistants', file: new Blob(['{}\n']) }),
    up('batch upload not JSON', 'file', { purpose: 'batch', file: new Blob(['not json\n']) }),
    up('batch upload bad url', 'file', { purpose: 'batch', file: new Blob(['{"custom_id":"a","method":"POST","url":"/v1/x","body":{}}\n']) }),
    up('batch upload deep line', 'file', { purpose: 'batch', file: new Blob(['{"a":'.repeat(20_000) + '1' + '}'.repeat(20_000) + '\n']) }),
    up('fine-tune upload bad role', 'file', { purpose: 'fine-tune', file: new Blob(['{"messages":[{"role":"robot","content":5}]}\n']) }),
    up('fine-tune upload deep', 'file', { purpose: 'fine-tune', file: new Blob(['{"messages":' + '[{"role":"user","content":'.repeat(20_000) + '"x"' + '}]'.repeat(20_000) + '}\n']) }),
    up('upload invalid UTF-8', 'file', { purpose: 'fine-tune', file: new Blob([Buffer.from([0xff, 0xfe, 0x0a])]) }),
    up('upload empty file', 'file', { purpose: 'batch', file: new Blob(['']) }),
    up('upload file under another name', 'data', { purpose: 'batch', data: new Blob(['{}']) }),
    { what: 'upload as JSON', route: '/v1/files', body: JSON.stringify({ purpose: 'batch', file: 'x' }), contentType: 'application/json', field: null },
  ];
}

/** `count` cases drawn from the seed; FLOE_FUZZ_ALL: every mutation of every base instead (minutes). */
function makeCases(seed: number, count: number): Case[] {
  const r = rand(seed); // mulberry32: small, seedable, good enough to pick mutations
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
  const all = bases();
  if (process.env.FLOE_FUZZ_ALL) {
    return all.flatMap((base) => [
      ...paths(fresh(base)).flatMap((p) => Array.from({ length: FIELD_OPS }, (_, op) => fieldCase(base, p, op))),
      ...targetedFor(base).map((t) => targetedCase(base, t)), ...requestCases(base, 0.5).map((f) => f()),
    ]).concat(fileCases());
  }
  const out: Case[] = [];
  while (out.length < count) {
    const base = pick(all);
    const roll = r();
    if (roll < 0.45) out.push(fieldCase(base, pick(paths(fresh(base))), Math.floor(r() * FIELD_OPS)));
    else if (roll < 0.85) out.push(targetedCase(base, pick(targetedFor(base))));
    else out.push(pick(requestCases(base, r()))());
  }
  const files = fileCases();
  for (let i = 0; i < Math.max(4, Math.floor(count / 25)); i++) out.splice(Math.floor(r() * out.length), 0, pick(files));
  return out;
}

/** One request; a failure message, or null when the answer is acceptable. */
async function send(c: Case): Promise<string | null> {
  let res: Response;
  try {
    res = await fetch(url + c.route, { method: 'POST', headers: c.contentType === null ? {} : { 'content-type': c.contentType }, body: c.body });
  } catch (e) {
    return `connection failed: ${(e as Error).message} ${String((e as { cause?: unknown }).cause ?? '')}`;
  }
  let text: string;
  try {
    text = await res.text();
  } catch (e) {
    return `${res.status}, then the body broke off: ${(e as Error).message}`;
  }
  if (res.status >= 500) return `${res.status}: ${text.slice(0, 300)}`;
  if (res.status >= 200 && res.status < 300) {
    if ((res.headers.get('content-type') ?? '').startsWith('text/event-stream')) {
      // chat and completions end with [DONE]; the Responses API ends with its response.completed / .incomplete event
      const end = c.route === '/v1/responses' ? /"type":"response\.(completed|incomplete)"[^\n]*\n\n$/.test(text) : text.trimEnd().endsWith('data: [DONE]');
      if (!end) return `stream did not end with [DONE]: …${text.slice(-200)}`;
      if (text.includes('"server_error"')) return `stream carried a server error: ${text.slice(text.indexOf('"server_error"') - 200, text.indexOf('"server_error"') + 50)}`;
      return null;
    }
    let j: Record<string, unknown>;
    try { j = JSON.parse(text) as Record<string, unknown>; } catch { return `${res.status} with a body that is not JSON: ${text.slice(0, 200)}`; }
    await c.onSuccess?.(j);
    return null;
  }
  if (res.status < 400) return `unexpected status ${res.status}`;
  let j: { error?: { message?: unknown; param?: unknown; type?: unknown } };
  try { j = JSON.parse(text) as typeof j; } catch { return `${res.status} with a body that is not JSON: ${text.slice(0, 200)}`; }
  const e = j.error;
  if (!e || typeof e.message !== 'string' || e.message === '') return `${res.status} without error.message: ${text.slice(0, 300)}`;
  if (typeof e.type !== 'string') return `${res.status} without error.type: ${text.slice(0, 300)}`;
  if (res.status === 400 && c.field !== null && (typeof e.param !== 'string' || e.param === '')) return `400 about a wrong field with no param: ${e.message.slice(0, 300)}`;
  if (process.env.FLOE_FUZZ_VERBOSE) console.log(`  ${c.route} [${c.what}] -> ${res.status} param=${String(e.param)} ${e.message.slice(0, 160)}`.slice(0, 400));
  return null;
}

const healthy = async (): Promise<string | null> => {
  try {
    const r = await post('/v1/chat/completions', { messages: [{ role: 'user', content: 'hi' }], max_tokens: 1 });
    return r.status === 200 && Array.isArray(r.json.choices) ? null : `valid chat request answered ${r.status} ${JSON.stringify(r.json).slice(0, 200)}`;
  } catch (e) {
    return `valid chat request failed: ${(e as Error).message}`;
  }
};

test(`fuzz: mutated requests to every JSON route get a 2xx or a 4xx naming the field, never a 5xx or a dropped connection (seed ${SEED}; replay: FLOE_FUZZ_SEED=${SEED})`, { timeout: process.env.FLOE_FUZZ_ALL ? 3_600_000 : 300_000 }, async () => {
  for (const b of bases()) {
    // every base is valid: a mutation's 4xx is the mutation's doing
    const body = b.body;
    const r = await fetch(url + b.route, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    const text = await r.text();
    assert.equal(r.status, 200, `${b.route} ${JSON.stringify(body).slice(0, 300)} → ${text.slice(0, 300)}`);
    if (b.onSuccess) await b.onSuccess(JSON.parse(text) as Record<string, unknown>);
  }
  const cases = makeCases(SEED, COUNT);
  const failures: string[] = [];
  for (let i = 0; i < cases.length; i += PARALLEL) {
    const group = cases.slice(i, i + PARALLEL);
    const got = await Promise.all(group.map(async (c, k) => {
      const t0 = performance.now();
      const g = await send(c);
      if (process.env.FLOE_FUZZ_VERBOSE) console.log(`#${i + k} ${c.route} [${c.what}] ${Math.round(performance.now() - t0)} ms ${g ?? 'ok'}`.slice(0, 300));
      return g;
    }));
    got.forEach((g, k) => { if (g !== null) failures.push(`#${i + k} ${group[k]!.route} [${group[k]!.what}]: ${g}`); });
    const h = await healthy();
    if (h !== null) {
      failures.push(`after #${i}..#${i + group.length - 1}: ${h}`);
      break;
    }
  }
  assert.deepEqual(failures, [], `seed ${SEED}: ${failures.length} bad answers`);
});
