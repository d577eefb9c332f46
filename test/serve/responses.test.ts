// The Responses API (POST /v1/responses) on the built-in model through the official openai client on a real socket:
// plain and streamed answers equal chat completions' greedy answer, the stream helper's events and finalResponse,
// responses.parse with a zod schema, max_output_tokens → incomplete, function tools (forced, and a round trip with the
// tool-use adapter), validation 400s, and the stored responses (GET, DELETE, input_items, previous_response_id).

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import OpenAI from 'openai';
import { zodTextFormat } from 'openai/helpers/zod';
import { z } from 'zod';
import { EngineRequestError } from '../../src/engine/protocol.js';
import { ChatTemplate } from '../../src/formats/chat-template.js';
import { createApp } from '../../src/serve/app.js';
import { startServer } from '../../src/serve/server.js';
import { byteTokenizer, CHAT_TEMPLATE, FakeEngine } from './helpers.js';
import { TOOLS } from '../../scripts/make-tool-data.js';
import { repoPath } from '../repo.js';

const BROWN = repoPath('models/floe-brown');
const ADAPTER = repoPath('models/floe-brown-tools');
const hasAdapter = existsSync(`${ADAPTER}/adapter_model.safetensors`);
const base = { model: BROWN, port: 0, threads: 2, kvCacheMemory: 48 << 20, log: () => {}, ui: false } as const;
const srv = await startServer({ ...base, dataDir: mkdtempSync(join(tmpdir(), 'floe-resp-')), ...(hasAdapter ? { loraModules: [{ name: 'tools', path: ADAPTER }] } : {}) });
const bare = await startServer({ ...base, dataDir: null }); // no data dir: nothing stored
await Promise.all([srv.ready, bare.ready]);
after(() => Promise.all([srv.close(1000), bare.close(1000)]));
const client = new OpenAI({ baseURL: srv.url + '/v1', apiKey: 'none', maxRetries: 0 });
const model = srv.modelName;

const post = async (body: unknown, url = srv.url) => {
  const r = await fetch(`${url}/v1/responses`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  return { status: r.status, headers: r.headers, body: await r.json() as { error?: { param: string | null; code: string | null; message: string } } & Record<string, unknown> };
};

test('plain and streamed responses carry the greedy answer of chat completions for the same conversation', async () => {
  const instructions = 'You answer briefly.';
  const input: OpenAI.Responses.ResponseInput = [{ role: 'user', content: 'Tell me about the city and its old church.' }];
  const chat = await client.chat.completions.create({ model, messages: [{ role: 'system', content: instructions }, { role: 'user', content: 'Tell me about the city and its old church.' }], temperature: 0, max_completion_tokens: 40 });
  const r = await client.responses.create({ model, instructions, input, temperature: 0, max_output_tokens: 40 });
  assert.match(r.id, /^resp_/);
  assert.equal(r.object, 'response');
  assert.equal(r.output_text, chat.choices[0]!.message.content, 'the same text as chat');
  assert.equal(r.output.length, 1);
  const msg = r.output[0] as OpenAI.Responses.ResponseOutputMessage;
  assert.equal(msg.type, 'message');
  assert.equal(msg.role, 'assistant');
  assert.match(msg.id, /^msg_/);
  assert.equal(msg.content[0]!.type, 'output_text');
  const incomplete = chat.choices[0]!.finish_reason === 'length';
  assert.equal(r.status, incomplete ? 'incomplete' : 'completed');
  assert.equal(msg.status, r.status);
  assert.deepEqual(r.usage, {
    input_tokens: chat.usage!.prompt_tokens, input_tokens_details: { cached_tokens: r.usage!.input_tokens_details.cached_tokens },
    output_tokens: chat.usage!.completion_tokens, output_tokens_details: { reasoning_tokens: 0 }, total_tokens: chat.usage!.total_tokens,
  });
  assert.ok(r.usage!.input_tokens_details.cached_tokens > 0, 'the same prompt hit the prefix cache');
  assert.equal(r.instructions, instructions);
  assert.equal(r.temperature, 0);
  assert.equal(r.max_output_tokens, 40);
  assert.equal(r.error, null);
  assert.deepEqual(r.tools, []);
  assert.equal(r.tool_choice, 'auto', "OpenAI echoes the request's default, tools or not");

  // raw stream: every event typed and numbered in order, text deltas add up to the plain answer
  const events: OpenAI.Responses.ResponseStreamEvent[] = [];
  for await (const e of await client.responses.create({ model, instructions, input, temperature: 0, max_output_tokens: 40, stream: true })) events.push(e);
  assert.deepEqual(events.map((e) => e.sequence_number), events.map((_, i) => i));
  const types = events.map((e) => e.type);
  assert.deepEqual(types.slice(0, 4), ['response.created', 'response.in_progress', 'response.output_item.added', 'response.content_part.added']);
  assert.deepEqual(types.slice(-4), ['response.output_text.done', 'response.content_part.done', 'response.output_item.done', incomplete ? 'response.incomplete' : 'response.completed']);
  const deltas = events.filter((e): e is OpenAI.Responses.ResponseTextDeltaEvent => e.type === 'response.output_text.delta');
  assert.ok(deltas.length > 1, 'text arrives in pieces');
  assert.equal(deltas.map((e) => e.delta).join(''), r.output_text);
  for (const e of deltas) assert.deepEqual([e.output_index, e.content_index, e.item_id], [0, 0, (events[2] as OpenAI.Responses.ResponseOutputItemAddedEvent).item.id]);
  const last = (events.at(-1) as OpenAI.Responses.ResponseCompletedEvent).response;
  assert.equal((last.output[0] as OpenAI.Responses.ResponseOutputMessage).content[0]!.type === 'output_text' && ((last.output[0] as OpenAI.Responses.ResponseOutputMessage).content[0] as OpenAI.Responses.ResponseOutputText).text, r.output_text);
  assert.equal(last.usage!.output_tokens, r.usage!.output_tokens);

  // the stream helper: text events with snapshots and finalResponse
  const stream = client.responses.stream({ model, instructions, input, temperature: 0, max_output_tokens: 40 });
  let snapshot = '';
  stream.on('response.output_text.delta', (e) => { snapshot = e.snapshot; });
  const final = await stream.finalResponse();
  assert.equal(final.output_text, r.output_text);
  assert.equal(snapshot, r.output_text);
  assert.equal(final.status, r.status);
});

test('a plain string input is one user message; max_output_tokens cuts the answer: status incomplete, reason max_output_tokens', async () => {
  const chat = await client.chat.completions.create({ model, messages: [{ role: 'user', content: 'Once upon a time' }], temperature: 0, max_completion_tokens: 3 });
  const r = await client.responses.create({ model, input: 'Once upon a time', temperature: 0, max_output_tokens: 3 });
  assert.equal(r.status, 'incomplete');
  assert.deepEqual(r.incomplete_details, { reason: 'max_output_tokens' });
  assert.equal(r.usage!.output_tokens, 3);
  assert.equal(r.output_text, chat.choices[0]!.message.content);
  assert.equal(r.output[0]!.type === 'message' && r.output[0].status, 'incomplete');
  const final = await client.responses.stream({ model, input: 'Once upon a time', temperature: 0, max_output_tokens: 3 }).finalResponse();
  assert.equal(final.status, 'incomplete');
  assert.equal(final.output_text, r.output_text);
});

test('logprobs: include message.output_text.logprobs with top_logprobs gives each token and its alternatives', async () => {
  const r = await client.responses.create({ model, input: 'Hello', temperature: 0, max_output_tokens: 5, include: ['message.output_text.logprobs'], top_logprobs: 2 });
  const part = (r.output[0] as OpenAI.Responses.ResponseOutputMessage).content[0] as OpenAI.Responses.ResponseOutputText;
  assert.equal(part.logprobs!.length, r.usage!.output_tokens);
  assert.equal(part.logprobs!.map((l) => l.token).join(''), part.text);
  for (const l of part.logprobs!) {
    assert.equal(l.top_logprobs.length, 2);
    assert.ok(l.logprob <= 0 && Array.isArray(l.bytes));
    assert.equal(l.top_logprobs[0]!.token, l.token, 'greedy: the chosen token is the most likely');
  }
  const plain = await client.responses.create({ model, input: 'Hello', temperature: 0, max_output_tokens: 5 });
  assert.deepEqual(((plain.output[0] as OpenAI.Responses.ResponseOutputMessage).content[0] as OpenAI.Responses.ResponseOutputText).logprobs, []);
});

test('responses.parse with a zod json_schema: constrained decoding gives an object the schema accepts, streamed too', async () => {
  const City = z.object({ name: z.string().max(20), population: z.number().int(), capital: z.boolean() });
  const text = { format: zodTextFormat(City, 'city') };
  const r = await client.responses.parse({ model, input: 'Describe a city as JSON.', temperature: 0, max_output_tokens: 80, text });
  assert.equal(r.status, 'completed', r.output_text);
  assert.deepEqual(City.parse(JSON.parse(r.output_text)), r.output_parsed);
  assert.equal((r.text!.format as { type: string }).type, 'json_schema');
  const final = await client.responses.stream({ model, input: 'Describe a city as JSON.', temperature: 0, max_output_tokens: 80, text }).finalResponse();
  assert.deepEqual(final.output_parsed, r.output_parsed);
  const obj = await client.responses.create({ model, input: 'Say something as JSON.', temperature: 0, max_output_tokens: 40, text: { format: { type: 'json_object' } } });
  if (obj.status === 'completed') assert.equal(typeof JSON.parse(obj.output_text), 'object');
});

const weather: OpenAI.Responses.FunctionTool = {
  type: 'function', name: 'get_weather', description: 'Current weather of a city', strict: true,
  parameters: { type: 'object', properties: { city: { type: 'string', enum: ['Lyon', 'Paris', 'Porto'] } }, required: ['city'], additionalProperties: false },
};

test('a forced function tool: a function_call item (call_id, name, JSON arguments), streamed argument deltas, the same as chat', async () => {
  const input = 'What is the weather in Lyon?';
  const r = await client.responses.create({ model, input, tools: [weather], tool_choice: { type: 'function', name: 'get_weather' }, temperature: 0, max_output_tokens: 40 });
  const chat = await client.chat.completions.create({
    model, messages: [{ role: 'user', content: input }], temperature: 0, max_completion_tokens: 40,
    tools: [{ type: 'function', function: { name: weather.name, description: weather.description!, parameters: weather.parameters! } }], tool_choice: { type: 'function', function: { name: 'get_weather' } },
  });
  // the tiny model may pad a call with whitespace the grammar allows until max_output_tokens: then the call so far, incomplete
  const cut = chat.choices[0]!.finish_reason === 'length';
  assert.equal(r.status, cut ? 'incomplete' : 'completed', JSON.stringify(r));
  assert.equal(r.output.length, 1);
  const call = r.output[0] as OpenAI.Responses.ResponseFunctionToolCall;
  assert.equal(call.type, 'function_call');
  assert.equal(call.status, r.status);
  assert.equal(call.name, 'get_weather');
  assert.match(call.call_id, /^call_/);
  assert.match(call.id!, /^fc_/);
  assert.match(call.arguments, /^\{"city": "(Lyon|Paris|Porto)"/);
  if (!cut) assert.equal(typeof JSON.parse(call.arguments).city, 'string');
  assert.deepEqual(r.tools, [weather]);
  assert.deepEqual(r.tool_choice, { type: 'function', name: 'get_weather' });
  assert.equal(call.arguments, (chat.choices[0]!.message.tool_calls![0] as OpenAI.ChatCompletionMessageFunctionToolCall).function.arguments);

  const events: OpenAI.Responses.ResponseStreamEvent[] = [];
  const stream = client.responses.stream({ model, input, tools: [weather], tool_choice: 'required', temperature: 0, max_output_tokens: 40 });
  stream.on('event', (e) => events.push(e));
  const final = await stream.finalResponse();
  const sc = final.output[0] as OpenAI.Responses.ResponseFunctionToolCall;
  assert.equal(sc.arguments, call.arguments);
  const argDeltas = events.filter((e) => e.type === 'response.function_call_arguments.delta');
  assert.ok(argDeltas.length > 1, 'arguments arrive in pieces');
  assert.equal(argDeltas.map((e) => (e as OpenAI.Responses.ResponseFunctionCallArgumentsDeltaEvent).delta).join(''), call.arguments);
  const done = events.find((e) => e.type === 'response.function_call_arguments.done') as OpenAI.Responses.ResponseFunctionCallArgumentsDoneEvent;
  assert.equal(done.arguments, call.arguments);
  assert.ok(events.some((e) => e.type === 'response.output_item.done' && e.item.type === 'function_call'));
});

// the adapter's four tools in the Responses API's flat shape
const adapterTools: OpenAI.Responses.FunctionTool[] = TOOLS.map((t) => ({ type: 'function', name: t.function.name, description: t.function.description, parameters: t.function.parameters as Record<string, unknown>, strict: false }));

test('a tool round trip: function_call and function_call_output items in input render as chat tool turns', async () => {
  const m = hasAdapter ? 'tools' : model;
  const tools = hasAdapter ? adapterTools : [weather];
  const chatTools = tools.map((t) => ({ type: 'function' as const, function: { name: t.name, description: t.description!, parameters: t.parameters! } }));
  const first = await client.responses.create({ model: m, input: 'Could you check the weather for Lyon?', tools, tool_choice: hasAdapter ? 'auto' : 'required', temperature: 0, max_output_tokens: 64 });
  const call = first.output.find((o): o is OpenAI.Responses.ResponseFunctionToolCall => o.type === 'function_call');
  assert.ok(call, `a call: ${JSON.stringify(first.output)}`);
  const result = { city: 'Lyon', temperature: 14, unit: 'celsius' };
  const input: OpenAI.Responses.ResponseInput = [
    { role: 'user', content: 'Could you check the weather for Lyon?' },
    ...first.output as OpenAI.Responses.ResponseInputItem[], // the output replayed as input, ids and statuses included
    { type: 'function_call_output', call_id: call.call_id, output: JSON.stringify(result) },
  ];
  const second = await client.responses.create({ model: m, input, tools, temperature: 0, max_output_tokens: 48 });
  const chat = await client.chat.completions.create({
    model: m, temperature: 0, max_completion_tokens: 48, tools: chatTools,
    messages: [
      { role: 'user', content: 'Could you check the weather for Lyon?' },
      { role: 'assistant', content: '', tool_calls: [{ id: call.call_id, type: 'function', function: { name: call.name, arguments: call.arguments } }] },
      { role: 'tool', tool_call_id: call.call_id, content: JSON.stringify(result) },
    ],
  });
  assert.equal(second.usage!.input_tokens, chat.usage!.prompt_tokens, 'the same prompt as chat');
  const chatText = chat.choices[0]!.message.content ?? '';
  if (!chat.choices[0]!.message.tool_calls) assert.equal(second.output_text, chatText);
  if (hasAdapter) assert.ok(second.output_text.trim().length > 0 && !chat.choices[0]!.message.tool_calls, `the adapter answers in text: ${JSON.stringify(second.output)}`);
});

test('bad requests are 400s naming the field, in OpenAI\'s shape', async () => {
  const cases: Array<[Record<string, unknown>, string, RegExp]> = [
    [{}, 'input', /'input' is required/],
    [{ input: 5 }, 'input', /string or an array/],
    [{ input: [{ role: 'robot', content: 'x' }] }, 'input[0].role', /one of user/],
    [{ input: [{ role: 'user', content: [{ type: 'input_image', image_url: 'http://x' }] }] }, 'input[0].content[0].type', /text only/],
    [{ input: [{ type: 'function_call_output', call_id: 'call_x', output: '1' }] }, 'input[0].call_id', /no function_call item/],
    [{ input: [{ type: 'function_call', call_id: 'c', name: 'f', arguments: 'nope' }] }, 'input[0].arguments', /JSON string of an object/],
    [{ input: [{ type: 'item_reference', id: 'msg_1' }] }, 'input[0].type', /item_reference/],
    [{ input: 'hi', max_output_tokens: 0 }, 'max_output_tokens', /'max_output_tokens' must be an integer >= 1/],
    [{ input: 'hi', max_output_tokens: 100000 }, 'max_output_tokens', /maximum context length/],
    [{ input: 'hi', temperature: 3 }, 'temperature', /<= 2/],
    [{ input: 'hi', stream: 'yes' }, 'stream', /'stream' must be a boolean/],
    [{ input: 'hi', tools: [{ type: 'web_search' }] }, 'tools[0].type', /built-in tool "web_search" is not supported/],
    [{ input: 'hi', tools: [{ type: 'function', function: { name: 'f' } }] }, 'tools[0].function', /flat|nested/],
    [{ input: 'hi', tools: [{ type: 'function', name: 'bad name!' }] }, 'tools[0].name', /'tools\[0\].name' must be 1-64/],
    [{ input: 'hi', tools: [weather], tool_choice: { type: 'function', name: 'other' } }, 'tool_choice', /not in 'tools'/],
    [{ input: 'hi', tool_choice: { type: 'file_search' } }, 'tool_choice.type', /not supported/],
    [{ input: 'hi', tools: [weather], tool_choice: 'sometimes' }, 'tool_choice', /\{"type": "function", "name"\}, got "sometimes"/],
    [{ input: 'hi', text: { format: { type: 'json_schema', name: 'x' } } }, 'text.format.schema', /required/],
    [{ input: 'hi', text: { format: { type: 'json_schema', name: 'x', schema: { type: 'string', pattern: '(' } } } }, 'text.format.schema', /text\.format\.schema/],
    [{ input: 'hi', text: { format: { type: 'json_schema', name: 'bad name!', schema: {} } } }, 'text.format.name', /'text\.format\.name' must be/],
    [{ input: 'hi', background: true }, 'background', /not supported/],
    [{ input: 'hi', conversation: 'conv_1' }, 'conversation', /not supported/],
    [{ input: 'hi', moderation: { model: 'omni-moderation-latest' } }, 'moderation', /'moderation' .* is not supported.*guardrails/],
    [{ input: 'hi', prompt_cache_options: 'implicit' }, 'prompt_cache_options', /must be an object/],
    [{ input: 'hi', truncation: 'auto' }, 'truncation', /"disabled"/],
    [{ input: 'hi', include: ['nonsense'] }, 'include[0]', /must be one of/],
    [{ input: 'hi', frobnicate: 1 }, 'frobnicate', /unrecognized request argument/],
    [{ input: 'hi', metadata: { k: 5 } }, 'metadata.k', /string/],
    [{ input: 'hi', previous_response_id: 'resp_nope' }, 'previous_response_id', /no stored response/],
  ];
  for (const [body, param, msg] of cases) {
    const r = await post({ model, ...body });
    const want = param === 'previous_response_id' ? 404 : 400;
    assert.equal(r.status, want, `${JSON.stringify(body)}: ${JSON.stringify(r.body)}`);
    assert.equal(r.body.error!.param, param, `${JSON.stringify(body)}: ${JSON.stringify(r.body)}`);
    assert.match(r.body.error!.message, msg, JSON.stringify(body));
  }
  const nm = await post({ model: 'gpt-4o', input: 'hi' });
  assert.deepEqual([nm.status, nm.body.error!.code, nm.body.error!.param], [404, 'model_not_found', 'model']);
  // fields that cannot change the answer are accepted and named
  const ok = await post({ model, input: 'hi', max_output_tokens: 2, user: 'u1', reasoning: { effort: 'low' }, service_tier: 'auto', text: { verbosity: 'low' }, include: ['reasoning.encrypted_content'],
    prompt_cache_options: { mode: 'implicit', ttl: '30m' } });
  assert.equal(ok.status, 200, JSON.stringify(ok.body));
  assert.equal(ok.headers.get('x-floe-ignored-fields'), 'user, service_tier, prompt_cache_options, reasoning, include[0], text.verbosity');
});

test('stored responses: GET, input_items, previous_response_id continues the conversation, DELETE; store false is not kept', async () => {
  const first = await client.responses.create({ model, input: [{ role: 'user', content: 'Name a color.' }], instructions: 'Be brief.', temperature: 0, max_output_tokens: 8, metadata: { run: 'a' } });
  assert.equal((first as unknown as { store: boolean }).store, true);
  const got = await client.responses.retrieve(first.id);
  assert.deepEqual(got, { ...first, output_text: got.output_text });
  assert.deepEqual(got.metadata, { run: 'a' });
  const items = await client.responses.inputItems.list(first.id);
  assert.equal(items.data.length, 1);
  assert.deepEqual([items.data[0]!.type, (items.data[0] as OpenAI.Responses.ResponseInputMessageItem).role], ['message', 'user']);

  // previous_response_id: the previous input and output come first (its instructions do not), as if sent in full
  const second = await client.responses.create({ model, previous_response_id: first.id, input: 'And another one?', temperature: 0, max_output_tokens: 8 });
  assert.equal(second.previous_response_id, first.id);
  const full = await client.responses.create({
    model, temperature: 0, max_output_tokens: 8, store: false,
    input: [{ role: 'user', content: 'Name a color.' }, { role: 'assistant', content: first.output_text }, { role: 'user', content: 'And another one?' }],
  });
  assert.equal(second.output_text, full.output_text);
  assert.equal(second.usage!.input_tokens, full.usage!.input_tokens);
  assert.equal((full as unknown as { store: boolean }).store, false);
  await assert.rejects(client.responses.retrieve(full.id), (e: unknown) => e instanceof OpenAI.NotFoundError);
  const third = await client.responses.create({ model, previous_response_id: second.id, input: 'One more.', temperature: 0, max_output_tokens: 4 });
  assert.ok(third.usage!.input_tokens > second.usage!.input_tokens, 'the chain carries both turns');
  const streamed = await client.responses.stream({ model, previous_response_id: first.id, input: 'And another one?', temperature: 0, max_output_tokens: 8 }).finalResponse();
  assert.equal(streamed.output_text, second.output_text);
  const kept = await client.responses.retrieve(streamed.id);
  assert.equal(kept.output_text, streamed.output_text, 'a streamed response is stored too');
  assert.equal(kept.output[0]!.id, streamed.output[0]!.id);

  await client.responses.delete(first.id);
  await assert.rejects(client.responses.retrieve(first.id), (e: unknown) => e instanceof OpenAI.NotFoundError);
  const gone = await post({ model, previous_response_id: first.id, input: 'x' });
  assert.deepEqual([gone.status, gone.body.error!.param], [404, 'previous_response_id']);

  // without a data dir: nothing stored, previous_response_id is a 400, GET a 404
  const plain = await post({ model, input: 'hi', max_output_tokens: 2 }, bare.url);
  assert.equal(plain.status, 200);
  assert.equal(plain.body.store, false);
  const g = await fetch(`${bare.url}/v1/responses/${plain.body.id as string}`);
  assert.equal(g.status, 404);
  const prev = await post({ model, input: 'hi', previous_response_id: plain.body.id }, bare.url);
  assert.deepEqual([prev.status, prev.body.error!.param], [400, 'previous_response_id']);
});

test('a client that leaves a stream aborts the engine request', async () => {
  // the answer must outlast the client: floe-brown's stories end (EOS) after ~100-200 tokens, which the engine could
  // finish before the close reaches the server (clean-clone CI); a 3,000-character string cannot end early
  const long = { type: 'json_schema' as const, name: 'story', schema: { type: 'object', properties: { story: { type: 'string', minLength: 3000 } }, required: ['story'], additionalProperties: false } };
  const stream = await client.responses.create({ model, input: 'Write a long story.', max_output_tokens: 900, temperature: 1, stream: true, text: { format: long } });
  let n = 0;
  for await (const e of stream) if (e.type === 'response.output_text.delta' && ++n === 3) break; // the client closes the connection
  assert.equal(n, 3);
  const metric = async () => Number(/^floe_requests_aborted_total (\S+)$/m.exec(await (await fetch(srv.url + '/metrics')).text())?.[1] ?? NaN);
  const deadline = Date.now() + 30_000; // generous: a poll, so a passing run does not wait for it
  while (!(await metric() >= 1) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  assert.ok(await metric() >= 1, 'the aborted counter moved');
});

test('a full queue is a 429 with Retry-After, streamed or not; a completion cut by shutdown is a 503, or an error event then response.failed', async () => {
  const engine = new FakeEngine(byteTokenizer());
  const s = createApp({ modelName: 'tiny' });
  s.ready({ engine, tokenizer: byteTokenizer(), template: new ChatTemplate(CHAT_TEMPLATE) });
  const send = (body: object) => s.app.inject({ method: 'POST', url: '/v1/responses', payload: { model: 'tiny', input: 'x', max_output_tokens: 6, ...body } });
  engine.refuse = new EngineRequestError(429, 'queue full (3 waiting, --max-queue 3)');
  for (const stream of [false, true]) {
    const r = await send({ stream });
    assert.deepEqual([r.statusCode, r.headers['retry-after'], r.json().error.message], [429, '1', 'queue full (3 waiting, --max-queue 3)'], `stream=${stream}`);
  }
  engine.refuse = null;
  engine.cutAt = 2;
  const plain = await send({});
  assert.deepEqual([plain.statusCode, plain.json().error.code], [503, 'shutting_down']);
  const r = await send({ stream: true });
  const events = r.body.split('\n\n').filter((e) => e !== '').map((e) => {
    const m = /^event: (\S+)\ndata: (.*)$/s.exec(e);
    assert.ok(m, `an SSE event with a name: ${e.slice(0, 60)}`);
    const data = JSON.parse(m[2]!);
    assert.equal(data.type, m[1], 'the event name is the data type');
    return data;
  });
  assert.deepEqual(events.slice(-2).map((e) => e.type), ['error', 'response.failed']);
  assert.equal(events.at(-2).code, 'shutting_down');
  assert.equal(events.at(-1).response.status, 'failed');
  assert.match(events.at(-1).response.error.message, /shut down/);
  assert.deepEqual(events.map((e) => e.sequence_number), events.map((_, i) => i));
});

test('previous_response_id after a function call: the new input must answer every call (OpenAI\'s 400), and a cut call cannot be answered', async () => {
  const input = 'What is the weather in Lyon?';
  const first = await client.responses.create({ model, input, tools: [weather], tool_choice: 'required', temperature: 0, max_output_tokens: 60 });
  const call = first.output.find((o): o is OpenAI.Responses.ResponseFunctionToolCall => o.type === 'function_call');
  assert.ok(call && call.status === 'completed', JSON.stringify(first.output));
  const missing = await post({ model, previous_response_id: first.id, input: 'Thanks, and tomorrow?', tools: [weather], max_output_tokens: 4 });
  assert.equal(missing.status, 400);
  assert.equal(missing.body.error!.param, 'input');
  assert.equal(missing.body.error!.message, `No tool output found for function call ${call.call_id}.`);
  const other = await post({ model, previous_response_id: first.id, input: [{ type: 'function_call_output', call_id: 'call_other', output: '{}' }], max_output_tokens: 4 });
  assert.equal(other.status, 400, 'an output for another call does not answer it');
  const answered = await client.responses.create({ model, previous_response_id: first.id, input: [{ type: 'function_call_output', call_id: call.call_id, output: '{"temperature": 14}' }], tools: [weather], temperature: 0, max_output_tokens: 4 });
  assert.equal(answered.previous_response_id, first.id);
  // a call cut by max_output_tokens has no whole arguments to answer
  const cut = await client.responses.create({ model, input, tools: [weather], tool_choice: 'required', temperature: 0, max_output_tokens: 34 });
  const cutCall = cut.output.find((o): o is OpenAI.Responses.ResponseFunctionToolCall => o.type === 'function_call');
  assert.ok(cutCall && cutCall.status === 'incomplete', JSON.stringify(cut.output));
  const again = await post({ model, previous_response_id: cut.id, input: [{ type: 'function_call_output', call_id: cutCall.call_id, output: '{}' }], max_output_tokens: 4 });
  assert.equal(again.status, 400, JSON.stringify(again.body));
  assert.equal(again.body.error!.param, 'previous_response_id');
  assert.match(again.body.error!.message, /cut by max_output_tokens/);
});

test('a forced call cut by max_output_tokens: the call so far, incomplete, and before its name is whole no item at all (never text), as chat', async () => {
  const input = 'What is the weather in Lyon?';
  const whole = await client.responses.create({ model, input, tools: [weather], tool_choice: 'required', temperature: 0, max_output_tokens: 60 });
  const full = (whole.output[0] as OpenAI.Responses.ResponseFunctionToolCall).arguments;
  const seen = new Set<string>();
  for (let n = 8; n <= 40; n += 2) {
    const r = await client.responses.create({ model, input, tools: [weather], tool_choice: { type: 'function', name: 'get_weather' }, temperature: 0, max_output_tokens: n });
    assert.equal(r.status, 'incomplete', `${n}: ${JSON.stringify(r.output)}`);
    assert.deepEqual(r.incomplete_details, { reason: 'max_output_tokens' });
    assert.ok(r.output.every((o) => o.type === 'function_call'), `${n}: no text: ${JSON.stringify(r.output)}`);
    const chat = await client.chat.completions.create({
      model, messages: [{ role: 'user', content: input }], temperature: 0, max_completion_tokens: n,
      tools: [{ type: 'function', function: { name: weather.name, description: weather.description!, parameters: weather.parameters! } }], tool_choice: 'required',
    });
    const msg = chat.choices[0]!.message;
    assert.equal(chat.choices[0]!.finish_reason, 'length');
    assert.equal(msg.content, null, `${n}: chat gives no text either`);
    if (r.output.length === 0) { seen.add('none'); assert.deepEqual(msg.tool_calls, []); continue; }
    const call = r.output[0] as OpenAI.Responses.ResponseFunctionToolCall;
    assert.equal(r.output.length, 1);
    assert.deepEqual([call.name, call.status], ['get_weather', 'incomplete']);
    assert.ok(full.startsWith(call.arguments), `${n}: ${call.arguments}`);
    assert.equal((msg.tool_calls![0] as OpenAI.ChatCompletionMessageFunctionToolCall).function.arguments, call.arguments);
    seen.add(call.arguments === '' ? 'name' : 'args');
    const streamed = await client.responses.stream({ model, input, tools: [weather], tool_choice: 'required', temperature: 0, max_output_tokens: n }).finalResponse();
    assert.deepEqual(streamed.output.map((o) => [o.type, (o as OpenAI.Responses.ResponseFunctionToolCall).arguments]), [['function_call', call.arguments]]);
  }
  assert.deepEqual([...seen].sort(), ['args', 'name', 'none'], 'cut before the name, after it, inside the arguments');
  const none = await client.responses.stream({ model, input, tools: [weather], tool_choice: 'required', temperature: 0, max_output_tokens: 8 }).finalResponse();
  assert.deepEqual([none.status, none.output], ['incomplete', []]);
});

test('include message.output_text.logprobs with tools: a text answer carries its tokens\' logprobs, streamed too; a call carries none', async () => {
  const lp = { include: ['message.output_text.logprobs' as const], top_logprobs: 1, temperature: 0, max_output_tokens: 12 };
  // tool_choice auto: the base model answers in text
  const r = await client.responses.create({ model, input: 'Hello', tools: [weather], tool_choice: 'auto', ...lp });
  assert.deepEqual(r.output.map((o) => o.type), ['message'], JSON.stringify(r.output));
  const part = (r.output[0] as OpenAI.Responses.ResponseOutputMessage).content[0] as OpenAI.Responses.ResponseOutputText;
  assert.ok(part.text.length > 0);
  assert.equal(part.logprobs!.length, r.usage!.output_tokens);
  assert.equal(part.logprobs!.map((l) => l.token).join(''), part.text);
  for (const l of part.logprobs!) assert.ok(l.top_logprobs.length === 1 && l.top_logprobs[0]!.token === l.token, 'greedy: the chosen token is the most likely');
  const events: OpenAI.Responses.ResponseStreamEvent[] = [];
  const s = client.responses.stream({ model, input: 'Hello', tools: [weather], tool_choice: 'auto', ...lp });
  s.on('event', (e) => events.push(e));
  const final = await s.finalResponse();
  const deltas = events.filter((e): e is OpenAI.Responses.ResponseTextDeltaEvent => e.type === 'response.output_text.delta');
  // the same tokens; logprobs within a cached prefix's rounding (the stream reads the first request's KV: ~2e-6 apart,
  // and equal only when an earlier test had cached the same prompt for both)
  const same = (got: readonly OpenAI.Responses.ResponseTextDeltaEvent.Logprob[] | undefined, what: string) => {
    assert.deepEqual(got!.map((l) => l.token), part.logprobs!.map((l) => l.token), what);
    got!.forEach((l, i) => assert.ok(Math.abs(l.logprob - part.logprobs![i]!.logprob) < 1e-4, `${what}: ${l.token} ${l.logprob} vs ${part.logprobs![i]!.logprob}`));
  };
  same(deltas.flatMap((e) => e.logprobs), 'streamed deltas');
  same(((final.output[0] as OpenAI.Responses.ResponseOutputMessage).content[0] as OpenAI.Responses.ResponseOutputText).logprobs, 'the final part');
  // a forced call: a function_call item, no message, no logprobs anywhere
  const c = await client.responses.create({ model, input: 'What is the weather in Lyon?', tools: [weather], tool_choice: 'required', ...lp, max_output_tokens: 60 });
  assert.deepEqual(c.output.map((o) => o.type), ['function_call']);
  assert.ok(!JSON.stringify(c.output).includes('logprob'));
});

test('include message.output_text.logprobs with tools: an answer that ends at EOS carries every token\'s logprob, EOS included, as chat completions gives them', async () => {
  // the EOS token adds no text: the builder held its logprob for a call that never came (output_tokens 17, logprobs 16)
  const r = await client.responses.create({ model, input: 'Hello', tools: [weather], tool_choice: 'auto', include: ['message.output_text.logprobs'], top_logprobs: 1, temperature: 0, max_output_tokens: 200 });
  assert.equal(r.status, 'completed', 'the answer ends at EOS');
  const part = (r.output[0] as OpenAI.Responses.ResponseOutputMessage).content[0] as OpenAI.Responses.ResponseOutputText;
  assert.equal(part.logprobs!.length, r.usage!.output_tokens);
  const chat = await client.chat.completions.create({
    model, messages: [{ role: 'user', content: 'Hello' }], tools: [{ type: 'function', function: { name: weather.name, description: weather.description!, parameters: weather.parameters!, strict: true } }],
    tool_choice: 'auto', logprobs: true, top_logprobs: 1, temperature: 0, max_completion_tokens: 200,
  });
  assert.equal(chat.choices[0]!.finish_reason, 'stop');
  // the same tokens; logprobs within a cached prefix's rounding (the second request reads the first's KV)
  const want = chat.choices[0]!.logprobs!.content!;
  assert.deepEqual(part.logprobs!.map((l) => l.token), want.map((l) => l.token));
  part.logprobs!.forEach((l, i) => assert.ok(Math.abs(l.logprob - want[i]!.logprob) < 1e-3, `${l.token}: ${l.logprob} vs chat ${want[i]!.logprob}`));
  const events: OpenAI.Responses.ResponseStreamEvent[] = [];
  const s = client.responses.stream({ model, input: 'Hello', tools: [weather], tool_choice: 'auto', include: ['message.output_text.logprobs'], top_logprobs: 1, temperature: 0, max_output_tokens: 200 });
  s.on('event', (e) => events.push(e));
  await s.finalResponse();
  assert.deepEqual(events.filter((e): e is OpenAI.Responses.ResponseTextDeltaEvent => e.type === 'response.output_text.delta').flatMap((e) => e.logprobs).map((l) => l.token), want.map((l) => l.token));
});

test('a function tool without strict is strict where its schema allows it, as OpenAI\'s Responses API does; explicit strict is kept', async () => {
  // raw HTTP: a client that leaves strict out (the SDK's type asks for it, null included)
  const post = async (tools: object[]) => {
    const r = await fetch(`${srv.url}/v1/responses`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model, input: 'Hello', tools, max_output_tokens: 4, temperature: 0 }) });
    return { status: r.status, body: await r.json() as { tools?: { strict: boolean | null }[]; error?: { param: string } } };
  };
  const { strict: _s, ...plain } = weather;
  const opaque = { type: 'function', name: 'lookup', parameters: { type: 'object', properties: { q: { not: { type: 'string' } } } } }; // `not`: no grammar
  const a = await post([plain, { ...plain, name: 'get_weather_null', strict: null }, { ...plain, name: 'get_weather_loose', strict: false }, opaque]);
  assert.equal(a.status, 200, JSON.stringify(a.body));
  assert.deepEqual(a.body.tools!.map((t) => t.strict), [true, true, false, false], 'omitted and null: strict when the schema compiles; false kept; no grammar: not strict');
  // strict: true on a schema the grammar cannot honour stays a 400 naming it
  const b = await post([{ ...opaque, strict: true }]);
  assert.deepEqual([b.status, b.body.error!.param], [400, 'tools[0].parameters']);
});

test('a non-streamed response its client leaves is not stored (it would read as incomplete, cut by max_output_tokens); a finished one is', async () => {
  const engine = new FakeEngine(byteTokenizer());
  const dataDir = mkdtempSync(join(tmpdir(), 'floe-resp-left-'));
  const s = createApp({ modelName: 'tiny', dataDir, ui: false });
  s.ready({ engine, tokenizer: byteTokenizer(), template: new ChatTemplate(CHAT_TEMPLATE) });
  const url = await s.app.listen({ host: '127.0.0.1', port: 0 });
  try {
    const c = new OpenAI({ baseURL: url + '/v1', apiKey: 'none', maxRetries: 0 });
    const stored = () => {
      const db = new Database(join(dataDir, 'floe.db'), { readonly: true });
      try { return (db.prepare('SELECT response FROM responses').pluck().all() as string[]).map((r) => JSON.parse(r) as { id: string; status: string }); } finally { db.close(); }
    };
    const done = await c.responses.create({ model: 'tiny', input: 'x', max_output_tokens: 4 });
    assert.deepEqual(stored().map((r) => r.id), [done.id], 'a finished response is stored');
    engine.delayMs = 20; // 200 tokens: 4 s unless aborted
    const ac = new AbortController();
    const left = c.responses.create({ model: 'tiny', input: 'a long answer', max_output_tokens: 200 }, { signal: ac.signal });
    while (engine.requests.length < 2) await new Promise((r) => setTimeout(r, 5));
    ac.abort();
    await assert.rejects(left, OpenAI.APIUserAbortError);
    while (s.inFlight() > 0) await new Promise((r) => setTimeout(r, 5));
    assert.deepEqual(engine.aborted, [engine.requests[1]!.id], 'the generation was aborted');
    assert.deepEqual(stored().map((r) => [r.id, r.status]), [[done.id, done.status]], 'only the finished response is stored');
  } finally {
    engine.delayMs = 0;
    await s.app.close();
  }
});
