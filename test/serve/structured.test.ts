// Structured outputs and tool calling through HTTP with the official openai client on the built-in model (floe-brown):
// every output parses and validates (ajv), streamed or not; tool calls single, parallel, streamed, and runTools' round trip.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import OpenAI from 'openai';
import { Ajv } from 'ajv';
import { zodResponseFormat } from 'openai/helpers/zod';
import { z } from 'zod';
import { startServer } from '../../src/serve/server.js';
import { repoPath } from '../repo.js';

const BROWN = repoPath('models/floe-brown');
const srv = await startServer({ model: BROWN, port: 0, threads: 2, kvCacheMemory: 48 << 20, log: () => {}, ui: false });
await srv.ready;
after(() => srv.close(1000));
const client = new OpenAI({ baseURL: srv.url + '/v1', apiKey: 'none', maxRetries: 0 });
const ajv = new Ajv({ strict: false });
const model = srv.modelName;

const ORDER = {
  type: 'object',
  properties: {
    customer: { type: 'object', properties: { name: { type: 'string', maxLength: 16 }, vip: { type: 'boolean' } }, required: ['name'], additionalProperties: false },
    items: {
      type: 'array', minItems: 1, maxItems: 3,
      items: { type: 'object', properties: { sku: { enum: ['A1', 'B2', 'C3'] }, qty: { type: 'integer' }, note: { anyOf: [{ type: 'string', maxLength: 8 }, { type: 'null' }] } }, required: ['sku', 'qty'] },
    },
    total: { type: 'number' },
    status: { const: 'open' },
  },
  required: ['customer', 'items', 'status'],
  additionalProperties: false,
};
const messages = [{ role: 'user' as const, content: 'Write the order for the committee as JSON.' }];

test('response_format json_schema: nested objects, arrays, enums, optional fields; n = 3 sampled choices all validate', async () => {
  const r = await client.chat.completions.create({
    model, messages, n: 3, temperature: 0.9, seed: 4, max_tokens: 200,
    response_format: { type: 'json_schema', json_schema: { name: 'order', schema: ORDER, strict: true } },
  });
  assert.equal(r.choices.length, 3);
  for (const ch of r.choices) {
    assert.equal(ch.finish_reason, 'stop', ch.message.content ?? '');
    const v = JSON.parse(ch.message.content!);
    assert.ok(ajv.validate(ORDER, v), `${ch.message.content} ${ajv.errorsText()}`);
  }
  const obj = await client.chat.completions.create({ model, messages, temperature: 0, max_tokens: 60, response_format: { type: 'json_object' } });
  assert.ok(obj.choices[0]!.message.content!.startsWith('{'));
  if (obj.choices[0]!.finish_reason === 'stop') assert.equal(typeof JSON.parse(obj.choices[0]!.message.content!), 'object');
});

test('a refused schema keyword is a 400 naming it; max_tokens cutting a value is finish_reason length', async () => {
  await assert.rejects(client.chat.completions.create({
    model, messages, response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'object', properties: { a: { type: 'string', format: 'iri' } } } } },
  }), (e: unknown) => e instanceof OpenAI.BadRequestError && e.param === 'response_format.json_schema.schema' && /'format' "iri" at #\/properties\/a/.test(e.message));
  await assert.rejects(client.chat.completions.create({
    model, messages, response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'object', properties: { a: { $ref: 'https://example.com/a.json' } } } } },
  }), (e: unknown) => e instanceof OpenAI.BadRequestError && e.param === 'response_format.json_schema.schema' && /'\$ref' "https:\/\/example.com\/a.json" at #\/properties\/a/.test(e.message));
  const cut = await client.chat.completions.create({ model, messages, max_tokens: 4, response_format: { type: 'json_schema', json_schema: { name: 'order', schema: ORDER } } });
  assert.equal(cut.choices[0]!.finish_reason, 'length');
  assert.throws(() => JSON.parse(cut.choices[0]!.message.content!));
});

test('streaming structured output: the deltas join into valid JSON', async () => {
  const stream = await client.chat.completions.create({
    model, messages, stream: true, temperature: 0.7, seed: 9, max_tokens: 200,
    response_format: { type: 'json_schema', json_schema: { name: 'order', schema: ORDER } },
  });
  let text = '';
  let deltas = 0;
  let finish: string | null = null;
  for await (const c of stream) {
    const d = c.choices[0]?.delta.content;
    if (d) { text += d; deltas++; }
    finish = c.choices[0]?.finish_reason ?? finish;
  }
  assert.equal(finish, 'stop');
  assert.ok(deltas > 3, `${deltas} deltas`);
  assert.ok(ajv.validate(ORDER, JSON.parse(text)), `${text} ${ajv.errorsText()}`);
});

test('guided_regex, guided_choice and guided_json on /v1/completions', async () => {
  const re = await client.completions.create({ model, prompt: 'The number is', max_tokens: 20, temperature: 1, seed: 3, guided_regex: ' [1-9][0-9]{2}-(red|blue)' } as never) as OpenAI.Completion;
  assert.match(re.choices[0]!.text, /^ [1-9][0-9]{2}-(red|blue)$/);
  const ch = await client.completions.create({ model, prompt: 'The answer is', max_tokens: 10, n: 4, temperature: 1, seed: 1, guided_choice: ['yes', 'no', 'maybe not'] } as never) as OpenAI.Completion;
  for (const c of ch.choices) assert.ok(['yes', 'no', 'maybe not'].includes(c.text), c.text);
  const schema = { type: 'array', items: { type: 'integer' }, minItems: 2, maxItems: 4 };
  const js = await client.completions.create({ model, prompt: 'Numbers:', max_tokens: 80, temperature: 0.8, seed: 2, guided_json: schema } as never) as OpenAI.Completion;
  assert.ok(ajv.validate(schema, JSON.parse(js.choices[0]!.text)), js.choices[0]!.text);
});

const WEATHER = {
  type: 'function' as const,
  function: {
    name: 'get_weather', description: 'Current weather in a city',
    parameters: { type: 'object', properties: { city: { type: 'string', maxLength: 12 }, unit: { enum: ['c', 'f'] } }, required: ['city'], additionalProperties: false },
  },
};
const TIME = {
  type: 'function' as const,
  function: { name: 'get_time', parameters: { type: 'object', properties: { zone: { type: 'string', maxLength: 6 } }, required: ['zone'] } },
};
const PARAMS: Record<string, object> = { get_weather: WEATHER.function.parameters, get_time: TIME.function.parameters };
const ask = [{ role: 'user' as const, content: 'What is the weather in Paris?' }];

function checkCalls(calls: readonly OpenAI.ChatCompletionMessageToolCall[] | undefined, names: readonly string[]): void {
  assert.ok(calls && calls.length > 0, 'tool calls present');
  for (const c of calls!) {
    assert.equal(c.type, 'function');
    assert.match(c.id, /^call_[0-9a-f]{24}$/);
    const fn = (c as OpenAI.ChatCompletionMessageFunctionToolCall).function;
    assert.ok(names.includes(fn.name), fn.name);
    assert.equal(typeof fn.arguments, 'string');
    assert.ok(ajv.validate(PARAMS[fn.name]!, JSON.parse(fn.arguments)), `${fn.arguments} ${ajv.errorsText()}`);
  }
  assert.equal(new Set(calls!.map((c) => c.id)).size, calls!.length, 'ids are distinct');
}

test('tool_choice named and required: tool_calls with valid arguments, finish_reason tool_calls; parallel calls', async () => {
  const named = await client.chat.completions.create({ model, messages: ask, tools: [WEATHER, TIME], tool_choice: { type: 'function', function: { name: 'get_time' } }, temperature: 0.8, seed: 1, max_tokens: 80 });
  const m = named.choices[0]!;
  assert.equal(m.finish_reason, 'tool_calls');
  assert.equal(m.message.content, null);
  checkCalls(m.message.tool_calls, ['get_time']);
  assert.equal(m.message.tool_calls!.length, 1, 'a named tool choice makes one call');

  // parallel: a bias towards ';' (id 26) after a complete call makes the model join several calls with "; "
  const r = await client.chat.completions.create({ model, messages: ask, tools: [WEATHER, TIME], tool_choice: 'required', n: 8, temperature: 0.8, seed: 2, max_tokens: 300, logit_bias: { 26: 6 } });
  let most = 0;
  for (const ch of r.choices) {
    if (ch.finish_reason === 'length') continue;
    assert.equal(ch.finish_reason, 'tool_calls');
    checkCalls(ch.message.tool_calls, ['get_weather', 'get_time']);
    most = Math.max(most, ch.message.tool_calls!.length);
  }
  assert.ok(most >= 2, `some choice made parallel calls (most ${most})`);
  const single = await client.chat.completions.create({ model, messages: ask, tools: [WEATHER, TIME], tool_choice: 'required', parallel_tool_calls: false, temperature: 0.8, seed: 4, max_tokens: 300, logit_bias: { 26: 20 } });
  assert.equal(single.choices[0]!.message.tool_calls!.length, 1, 'parallel_tool_calls false: one call');
  // a response_format beside a forced call is taken, as OpenAI takes it: the answer is the call, the same as without it
  const format = { type: 'json_schema' as const, json_schema: { name: 'order', schema: ORDER, strict: true } };
  for (const tool_choice of ['required', { type: 'function', function: { name: 'get_time' } }] as const) {
    const req = { model, messages: ask, tools: [WEATHER, TIME], tool_choice, temperature: 0.8, seed: 5, max_tokens: 120 };
    const withFormat = await client.chat.completions.create({ ...req, response_format: format });
    assert.equal(withFormat.choices[0]!.finish_reason, 'tool_calls');
    assert.deepEqual(withFormat.choices[0]!.message.tool_calls!.map((c) => c.type === 'function' && [c.function.name, c.function.arguments]),
      (await client.chat.completions.create(req)).choices[0]!.message.tool_calls!.map((c) => c.type === 'function' && [c.function.name, c.function.arguments]));
  }
  // its schema is still checked
  const bad = await client.chat.completions.create({ model, messages: ask, tools: [WEATHER], tool_choice: 'required', response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'object', properties: { a: { type: 'integer', not: { const: 3 } } } } } } }).catch((e: unknown) => e);
  assert.ok(bad instanceof OpenAI.APIError && bad.status === 400 && bad.param === 'response_format.json_schema.schema', String(bad));
});

test('streamed tool calls: id and name in the first delta, arguments in pieces; the client helper reassembles them', async () => {
  const stream = await client.chat.completions.create({ model, messages: ask, tools: [WEATHER, TIME], tool_choice: 'required', stream: true, temperature: 0.8, seed: 4, max_tokens: 300, logit_bias: { 26: 6 } });
  const byIndex = new Map<number, { id: string; name: string; args: string; pieces: number }>();
  let finish: string | null = null;
  for await (const c of stream) {
    for (const tc of c.choices[0]?.delta.tool_calls ?? []) {
      const cur = byIndex.get(tc.index);
      if (!cur) {
        assert.ok(tc.id && tc.function?.name, 'the first delta of a call names id and function');
        byIndex.set(tc.index, { id: tc.id!, name: tc.function!.name!, args: tc.function!.arguments ?? '', pieces: 0 });
      } else {
        assert.equal(tc.id, undefined);
        cur.args += tc.function?.arguments ?? '';
        cur.pieces++;
      }
    }
    finish = c.choices[0]?.finish_reason ?? finish;
  }
  assert.equal(finish, 'tool_calls');
  assert.ok(byIndex.size >= 1);
  for (const c of byIndex.values()) {
    assert.ok(c.pieces > 1, `arguments came in ${c.pieces} pieces`);
    assert.ok(ajv.validate(PARAMS[c.name]!, JSON.parse(c.args)), c.args);
  }
  const helper = client.chat.completions.stream({ model, messages: ask, tools: [WEATHER], tool_choice: 'required', temperature: 0.8, seed: 6, max_tokens: 120 });
  const final = await helper.finalChatCompletion();
  checkCalls(final.choices[0]!.message.tool_calls, ['get_weather']);
});

test("runTools completes a round trip: the model calls the named tool, the tool's result goes back as a tool message", async () => {
  const seen: unknown[] = [];
  const runner = client.chat.completions.runTools({
    model, messages: ask, temperature: 0.8, seed: 7, max_tokens: 80,
    tool_choice: { type: 'function', function: { name: 'get_weather' } },
    tools: [{
      type: 'function',
      function: {
        name: 'get_weather', description: WEATHER.function.description, parameters: WEATHER.function.parameters,
        function: (args: { city: string }) => { seen.push(args); return { city: args.city, temp_c: 21 }; },
        parse: JSON.parse,
      },
    }],
  });
  await runner.done();
  assert.equal(seen.length, 1, 'the tool ran once');
  assert.ok(ajv.validate(WEATHER.function.parameters, seen[0]));
  const msgs = runner.messages;
  const call = msgs.find((m) => m.role === 'assistant') as OpenAI.ChatCompletionAssistantMessageParam;
  const result = msgs.find((m) => m.role === 'tool') as OpenAI.ChatCompletionToolMessageParam;
  assert.ok(call.tool_calls?.length === 1);
  assert.equal(result.tool_call_id, call.tool_calls![0]!.id);
  assert.deepEqual(JSON.parse(result.content as string), { city: (seen[0] as { city: string }).city, temp_c: 21 });
  // the conversation with the call and its result renders and continues
  const next = await client.chat.completions.create({ model, messages: [...msgs, { role: 'user', content: 'And in Oslo?' }], tools: [WEATHER], tool_choice: 'required', temperature: 0.8, seed: 8, max_tokens: 80 });
  checkCalls(next.choices[0]!.message.tool_calls, ['get_weather']);
});

test("tool_choice auto on the built-in model: plain text stays content; 'none' renders no tools", async () => {
  const r = await client.chat.completions.create({ model, messages: ask, tools: [WEATHER], temperature: 0, max_tokens: 12 });
  const ch = r.choices[0]!;
  if (ch.message.tool_calls) checkCalls(ch.message.tool_calls, ['get_weather']);
  else assert.equal(typeof ch.message.content, 'string');
  const none = await client.chat.completions.create({ model, messages: ask, tools: [WEATHER], tool_choice: 'none', temperature: 0, max_tokens: 8, return_token_ids: true } as never) as OpenAI.ChatCompletion & { prompt_token_ids: number[] };
  const plain = await client.chat.completions.create({ model, messages: ask, temperature: 0, max_tokens: 8, return_token_ids: true } as never) as OpenAI.ChatCompletion & { prompt_token_ids: number[] };
  assert.deepEqual(none.prompt_token_ids, plain.prompt_token_ids);
  assert.equal(none.choices[0]!.message.tool_calls, undefined);
});

test('tool parameter schemas: a 400 names the tool and the path inside its parameters; a schema of no type still forces an object call', async () => {
  const bad = { type: 'function' as const, function: { name: 'lookup', parameters: { type: 'object', properties: { q: { type: 'strin' } } } } };
  for (const tool_choice of ['required', { type: 'function', function: { name: 'lookup' } }] as const) {
    await assert.rejects(client.chat.completions.create({ model, messages: ask, tools: [WEATHER, bad], tool_choice, max_tokens: 5 }),
      (e: unknown) => e instanceof OpenAI.BadRequestError && e.param === 'tools[1].function.parameters' && /tool 'lookup'/.test(e.message) && /#\/properties\/q\b/.test(e.message), JSON.stringify(tool_choice));
  }
  // arguments are an object: a parameters schema of another type is refused for every tool_choice
  const list = { type: 'function' as const, function: { name: 'listy', parameters: { type: 'array', items: { type: 'integer' } } } };
  await assert.rejects(client.chat.completions.create({ model, messages: ask, tools: [WEATHER, list], max_tokens: 5 }),
    (e: unknown) => e instanceof OpenAI.BadRequestError && e.param === 'tools[1].function.parameters' && /tool 'listy'/.test(e.message) && /"array"/.test(e.message));
  // parameters {} (any arguments): a forced call is still an object, so it comes back as a tool call
  const any = { type: 'function' as const, function: { name: 'anything', parameters: {} } };
  const r = await client.chat.completions.create({ model, messages: ask, tools: [any], tool_choice: 'required', temperature: 0, max_tokens: 80 });
  const call = r.choices[0]!.message.tool_calls?.[0] as OpenAI.ChatCompletionMessageFunctionToolCall | undefined;
  assert.ok(call, `a tool call, not content: ${r.choices[0]!.message.content}`);
  assert.match(call.function.arguments, /^\{/, 'the arguments are an object (whole, or cut by max_tokens)');
  if (r.choices[0]!.finish_reason !== 'length') assert.equal(typeof JSON.parse(call.function.arguments), 'object');
});

test('tool calls streamed and not give the same arguments text; max_tokens inside a call gives the call so far, finish_reason length, both ways', async () => {
  const req = { model, messages: ask, tools: [WEATHER, TIME], tool_choice: 'required' as const, temperature: 0, max_tokens: 300 };
  const argsOf = (c: OpenAI.ChatCompletion) => c.choices[0]!.message.tool_calls?.map((t) => [(t as OpenAI.ChatCompletionMessageFunctionToolCall).function.name, (t as OpenAI.ChatCompletionMessageFunctionToolCall).function.arguments]);
  const whole = await client.chat.completions.create(req);
  const streamed = await client.chat.completions.stream(req).finalChatCompletion();
  assert.equal(whole.choices[0]!.finish_reason, 'tool_calls');
  assert.deepEqual(argsOf(streamed), argsOf(whole));
  // cut a few tokens into the arguments
  const full = (whole.choices[0]!.message.tool_calls![0] as OpenAI.ChatCompletionMessageFunctionToolCall).function.arguments;
  assert.ok(full.length > 4, full);
  const cutAt = whole.usage!.completion_tokens - 3;
  const cut = await client.chat.completions.create({ ...req, max_tokens: cutAt });
  const cutStream = await client.chat.completions.stream({ ...req, max_tokens: cutAt }).finalChatCompletion();
  assert.equal(cut.choices[0]!.finish_reason, 'length');
  assert.equal(cutStream.choices[0]!.finish_reason, 'length');
  assert.equal(cut.choices[0]!.message.content, null);
  assert.deepEqual(argsOf(cut), argsOf(cutStream));
  assert.ok(full.startsWith(argsOf(cut)![0]![1]!) && argsOf(cut)![0]![1] !== full, `${argsOf(cut)} is a cut of ${full}`);
});

test('zodResponseFormat through chat.completions.parse: reused and recursive schemas ($ref into definitions), bounds, regex, iso formats; parsed by zod and valid by ajv', async () => {
  const Item = z.object({ sku: z.string().regex(/^[A-Z]\d$/), qty: z.number().int().min(1).max(9) });
  const Tree: z.ZodType<{ value: number; children: unknown[] }> = z.object({ value: z.number().gt(-5).lt(5), get children() { return z.array(Tree).max(2); } });
  const Order = z.object({ first: Item, second: Item, day: z.iso.date(), id: z.uuid(), tree: Tree });
  const rf = zodResponseFormat(Order, 'order');
  assert.match(JSON.stringify(rf.json_schema.schema), /"\$ref":"#\/definitions\//); // the client really sends a $ref
  for (const seed of [1, 2]) {
    const r = await client.chat.completions.parse({ model, messages, temperature: 1, seed, max_tokens: 300, response_format: rf });
    const ch = r.choices[0]!;
    if (ch.finish_reason !== 'stop') { assert.equal(ch.finish_reason, 'length'); continue; } // a deep tree may run to max_tokens
    assert.ok(ch.message.parsed, ch.message.content ?? '');
    assert.ok(ajv.validate(rf.json_schema.schema!, JSON.parse(ch.message.content!)), `${ch.message.content} ${ajv.errorsText()}`);
  }
});

test("pydantic's HttpUrl (format uri, minLength 1, maxLength 2083) and zod's z.url() with a 10000-character pattern string: decoded, not a 400; valid by ajv with ajv-formats", async () => {
  const withFormats = new Ajv({ strict: false });
  (createRequire(import.meta.url)('ajv-formats') as (a: Ajv) => Ajv)(withFormats);
  const link = (JSON.parse(readFileSync(repoPath('test/fixtures/schemas/pydantic.json'), 'utf8')) as Record<string, object>).link!;
  const Page = z.object({ site: z.url(), slug: z.string().regex(/^[a-z-]+$/).max(10000) });
  const rf = zodResponseFormat(Page, 'page');
  assert.match(JSON.stringify(rf.json_schema.schema), /"format":"uri"/);
  let stopped = 0;
  for (const seed of [1, 2]) {
    const a = await client.chat.completions.create({ model, messages, temperature: 1, seed, max_tokens: 300, response_format: { type: 'json_schema', json_schema: { name: 'link', schema: link as Record<string, unknown> } } });
    const b = await client.chat.completions.parse({ model, messages, temperature: 1, seed, max_tokens: 300, response_format: rf });
    for (const [ch, schema] of [[a.choices[0]!, link], [b.choices[0]!, rf.json_schema.schema!]] as const) {
      if (ch.finish_reason !== 'stop') { assert.equal(ch.finish_reason, 'length'); continue; }
      stopped++;
      assert.ok(withFormats.validate(schema, JSON.parse(ch.message.content!)), `${ch.message.content} ${withFormats.errorsText()}`);
    }
    if (b.choices[0]!.finish_reason === 'stop') assert.ok(b.choices[0]!.message.parsed?.site.startsWith('http'));
  }
  assert.ok(stopped > 0, 'no output ended by itself');
});

test("multipleOf and format ipv6: pydantic's conint / confloat / Field(multiple_of) with IPv6Address, and zod's multipleOf with z.ipv6(), decode (were a 400); parse() takes each output", async () => {
  const withFormats = new Ajv({ strict: false });
  (createRequire(import.meta.url)('ajv-formats') as (a: Ajv) => Ajv)(withFormats);
  const order = (JSON.parse(readFileSync(repoPath('test/fixtures/schemas/pydantic.json'), 'utf8')) as Record<string, object>).order!;
  const Line = z.object({ price: z.number().multipleOf(0.01).min(0).max(500), qty: z.number().int().multipleOf(5).min(0).max(1000), ip: z.ipv6() });
  const rf = zodResponseFormat(Line, 'line');
  assert.match(JSON.stringify(rf.json_schema.schema), /"multipleOf":0\.01.*"format":"ipv6"/);
  let stopped = 0;
  for (const seed of [1, 2, 3]) {
    const a = await client.chat.completions.create({ model, messages, temperature: 1, seed, max_tokens: 120, response_format: { type: 'json_schema', json_schema: { name: 'order', schema: order as Record<string, unknown> } } });
    const ch = a.choices[0]!;
    if (ch.finish_reason === 'stop') { stopped++; assert.ok(withFormats.validate(order, JSON.parse(ch.message.content!)), `${ch.message.content} ${withFormats.errorsText()}`); }
    // zod's own check (parse() runs it) takes multiples of 0.01 exactly; ajv's double division would refuse some (0.07)
    const b = await client.chat.completions.parse({ model, messages, temperature: 1, seed, max_tokens: 120, response_format: rf });
    if (b.choices[0]!.finish_reason === 'stop') { stopped++; assert.ok(Line.safeParse(b.choices[0]!.message.parsed).success && b.choices[0]!.message.parsed!.qty % 5 === 0, b.choices[0]!.message.content!); }
  }
  assert.ok(stopped > 0, 'no output ended by itself');
});

test("an unbounded number's exponent keeps it a finite double: zod's z.number() takes the output parse() reads (1e999 was Infinity)", async () => {
  const rf = zodResponseFormat(z.object({ x: z.number() }), 'n');
  assert.deepEqual(rf.json_schema.schema!.properties, { x: { type: 'number' } }); // no bounds: the grammar's own number
  // a bias towards '9' (id 24) then 'e' (id 68) makes the longest digit runs and exponent the grammar allows
  const [nine, e] = [24, 68];
  assert.deepEqual(await tokenIds('9e9'), [nine, e, nine]);
  const r = await client.chat.completions.parse({ model, messages, response_format: rf, temperature: 0, max_tokens: 60, logit_bias: { [nine]: 100, [e]: 50 } });
  const ch = r.choices[0]!;
  assert.equal(ch.finish_reason, 'stop');
  assert.match(ch.message.content!, /^\{"x": ?9+e9+\}$/, 'the output has an exponent');
  const x = (JSON.parse(ch.message.content!) as { x: number }).x;
  assert.ok(Number.isFinite(x), `${ch.message.content} parses as ${x}`);
  assert.deepEqual(ch.message.parsed, { x });
});

async function tokenIds(text: string): Promise<number[]> {
  const res = await fetch(`${srv.url}/tokenize`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model, prompt: text, add_special_tokens: false }) });
  return ((await res.json()) as { tokens: number[] }).tokens;
}
