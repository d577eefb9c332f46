// vLLM's `structured_outputs` (its 0.10.2+ form of guided_*) through HTTP with the official openai client on floe-brown:
// json, regex, choice and json_object give exactly what guided_json / guided_regex / guided_choice / response_format
// json_object give (greedy and seeded n > 1, streamed, under --speculative ngram, as strict tools' text), outputs
// satisfy the constraint (ajv, the regex, the choice list), and what floe cannot honour is a 400 naming the key.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { Ajv } from 'ajv';
import { startServer } from '../../src/serve/server.js';
import { repoPath } from '../repo.js';

const BROWN = repoPath('models/floe-brown');
const plain = await startServer({ model: BROWN, port: 0, threads: 2, kvCacheMemory: 48 << 20, log: () => {}, ui: false });
const ngram = await startServer({ model: BROWN, port: 0, threads: 2, kvCacheMemory: 48 << 20, log: () => {}, ui: false, speculative: 'ngram' });
await Promise.all([plain.ready, ngram.ready]);
after(() => Promise.all([plain.close(1000), ngram.close(1000)]));
const clientOf = (srv: typeof plain) => new OpenAI({ baseURL: srv.url + '/v1', apiKey: 'none', maxRetries: 0 });
const client = clientOf(plain);
const model = plain.modelName;
const ajv = new Ajv({ strict: false });

type Body = Record<string, unknown>;
const PERSON = {
  type: 'object',
  properties: { name: { type: 'string', maxLength: 8 }, age: { type: 'integer', minimum: 0, maximum: 99 }, vip: { type: 'boolean' } },
  required: ['name', 'age', 'vip'], additionalProperties: false,
};
const REGEX = ' [1-9][0-9]{2}-(red|blue)';
const CHOICES = ['yes', 'no', 'maybe not'];

/** Each constraint as structured_outputs and as its older equivalent, with what its output must satisfy. */
const CASES: { name: string; so: Body; old: Body; holds: (text: string) => boolean }[] = [
  { name: 'json', so: { json: PERSON }, old: { guided_json: PERSON }, holds: (t) => ajv.validate(PERSON, JSON.parse(t)) },
  { name: 'json (a string)', so: { json: JSON.stringify(PERSON) }, old: { guided_json: PERSON }, holds: (t) => ajv.validate(PERSON, JSON.parse(t)) },
  { name: 'regex', so: { regex: REGEX }, old: { guided_regex: REGEX }, holds: (t) => new RegExp(`^(?:${REGEX})$`).test(t) },
  { name: 'choice', so: { choice: CHOICES }, old: { guided_choice: CHOICES }, holds: (t) => CHOICES.includes(t) },
];

interface Out { text: string; finish: string | null }
async function complete(c: OpenAI, body: Body, stream = false): Promise<Out[]> {
  const params = { model, prompt: 'The answer is', max_tokens: 60, temperature: 0, ...body };
  if (!stream) return (await c.completions.create(params as never) as OpenAI.Completion).choices.map((ch) => ({ text: ch.text, finish: ch.finish_reason }));
  const outs: Out[] = [];
  for await (const chunk of await c.completions.create({ ...params, stream: true } as never) as unknown as AsyncIterable<OpenAI.Completion>) {
    for (const ch of chunk.choices) {
      const o = (outs[ch.index] ??= { text: '', finish: null });
      o.text += ch.text;
      o.finish = ch.finish_reason ?? o.finish;
    }
  }
  return outs;
}
async function chat(c: OpenAI, body: Body, stream = false): Promise<Out[]> {
  const params = { model, messages: [{ role: 'user', content: 'Classify this sentiment: floe is wonderful!' }], max_tokens: 60, temperature: 0, ...body };
  if (!stream) return (await c.chat.completions.create(params as never) as OpenAI.ChatCompletion).choices.map((ch) => ({ text: ch.message.content ?? '', finish: ch.finish_reason }));
  const outs: Out[] = [];
  for await (const chunk of await c.chat.completions.create({ ...params, stream: true } as never) as unknown as AsyncIterable<OpenAI.ChatCompletionChunk>) {
    for (const ch of chunk.choices) {
      const o = (outs[ch.index] ??= { text: '', finish: null });
      o.text += ch.delta.content ?? '';
      o.finish = ch.finish_reason ?? o.finish;
    }
  }
  return outs;
}

for (const [route, run] of [['/v1/completions', complete], ['/v1/chat/completions', chat]] as const) {
  test(`${route}: structured_outputs json, regex, choice give exactly guided_*'s choices, greedy and seeded n = 3, streamed too, and satisfy the constraint`, async () => {
    for (const c of CASES) {
      for (const sampling of [{}, { n: 3, temperature: 1, seed: 7 }]) {
        const want = await run(client, { ...c.old, ...sampling });
        const got = await run(client, { structured_outputs: c.so, ...sampling });
        const what = `${c.name} ${JSON.stringify(sampling)}`;
        assert.deepEqual(got, want, what);
        assert.deepEqual(await run(client, { structured_outputs: c.so, ...sampling }, true), want, `${what} streamed`);
        for (const o of got) {
          assert.equal(o.finish, 'stop', `${what}: ${o.text}`);
          assert.ok(c.holds(o.text), `${what}: ${JSON.stringify(o.text)} ${ajv.errorsText()}`);
        }
      }
    }
  });
}

test('structured_outputs json_object: chat gives what response_format json_object gives, streamed too; completions give an object', async () => {
  const want = await chat(client, { response_format: { type: 'json_object' } });
  assert.deepEqual(await chat(client, { structured_outputs: { json_object: true } }), want);
  assert.deepEqual(await chat(client, { structured_outputs: { json_object: true } }, true), want);
  const [c] = await complete(client, { prompt: 'Data:', structured_outputs: { json_object: true } });
  for (const o of [want[0]!, c!]) {
    assert.match(o.text, /^\{/);
    if (o.finish === 'stop') assert.equal(Object.prototype.toString.call(JSON.parse(o.text)), '[object Object]', o.text);
  }
});

test('structured_outputs under --speculative ngram gives the text it gives without, streamed too', async () => {
  const spec = clientOf(ngram);
  const drafts = async () => Number(/^floe_spec_decode_num_draft_tokens_total (\S+)$/m.exec(await (await fetch(ngram.url + '/metrics')).text())![1]);
  const before = await drafts();
  for (const c of CASES) {
    const want = await complete(client, { structured_outputs: c.so });
    assert.deepEqual(await complete(spec, { structured_outputs: c.so }), want, c.name);
    assert.deepEqual(await chat(spec, { structured_outputs: c.so }, true), await chat(client, { structured_outputs: c.so }), `${c.name} chat streamed`);
  }
  assert.ok(await drafts() > before, 'draft tokens were verified under the constraint');
});

test('options that cannot change the output here are taken: the output is the one without them', async () => {
  const want = await complete(client, { guided_json: PERSON });
  const opts = { disable_fallback: true, disable_additional_properties: true, disable_any_whitespace: false, whitespace_pattern: null };
  assert.deepEqual(await complete(client, { structured_outputs: { json: PERSON, ...opts } }), want);
  // disable_any_whitespace changes no regex or choice (vLLM reads it for JSON only); null keys are absent
  assert.deepEqual(await complete(client, { structured_outputs: { choice: CHOICES, disable_any_whitespace: true, regex: null } }), await complete(client, { guided_choice: CHOICES }));
  // response_format text constrains nothing, so it goes with structured_outputs
  assert.deepEqual(await chat(client, { structured_outputs: { choice: CHOICES }, response_format: { type: 'text' } }), await chat(client, { guided_choice: CHOICES }));
});

test('structured_outputs with strict tools under tool_choice auto constrains the text, as guided_* does', async () => {
  const tools = [{ type: 'function', function: { name: 'get_weather', strict: true, parameters: { type: 'object', properties: { city: { type: 'string', maxLength: 12 } }, required: ['city'], additionalProperties: false } } }];
  const ask = { messages: [{ role: 'user', content: 'Is it sunny in Paris?' }], tools, tool_choice: 'auto' };
  const full = async (body: Body) => (await client.chat.completions.create({ model, max_tokens: 60, temperature: 0, ...ask, ...body } as never) as OpenAI.ChatCompletion).choices[0]!;
  const want = await full({ guided_choice: CHOICES });
  const got = await full({ structured_outputs: { choice: CHOICES } });
  assert.deepEqual(got, want);
  assert.ok(CHOICES.includes(got.message.content!), `${got.message.content} (without a constraint: ${(await full({})).message.content})`);
});

const bad = (e: unknown, param: string, re?: RegExp) => e instanceof OpenAI.BadRequestError && e.status === 400 && e.param === param && (!re || re.test(e.message));

test('structured_outputs errors: each a 400 naming the field or key, on completions and chat', async () => {
  const nested = (d: number): object => (d === 0 ? { type: 'string' } : { type: 'array', items: nested(d - 1) });
  const cases: [unknown, string, RegExp?][] = [
    ['yes', 'structured_outputs', /must be an object/], [['json'], 'structured_outputs', /must be an object/], [5, 'structured_outputs', /must be an object/],
    [{}, 'structured_outputs', /gives none/], [{ disable_fallback: true }, 'structured_outputs', /gives none/],
    [{ regex: 'a', choice: ['a'] }, 'structured_outputs.choice', /only one constraint/],
    [{ json: PERSON, json_object: true }, 'structured_outputs.json_object', /only one constraint/],
    [{ regex: 'a', json_object: false }, 'structured_outputs.json_object', /only one constraint/],
    [{ choice: ['a'], backend: 'xgrammar' }, 'structured_outputs.backend', /unrecognized argument/],
    [{ json: 5 }, 'structured_outputs.json', /JSON Schema object/], [{ json: '{"type": ' }, 'structured_outputs.json', /not JSON/],
    [{ json: '[1]' }, 'structured_outputs.json', /JSON Schema object/],
    [{ json: { type: 'array', uniqueItems: true } }, 'structured_outputs.json', /uniqueItems/],
    [{ json: JSON.stringify(nested(200)) }, 'structured_outputs.json', /levels deep/],
    [{ regex: '(a' }, 'structured_outputs.regex'], [{ regex: '' }, 'structured_outputs.regex', /non-empty string/],
    [{ regex: '(?=a)b' }, 'structured_outputs.regex'],
    [{ choice: [] }, 'structured_outputs.choice', /non-empty array/], [{ choice: 'yes' }, 'structured_outputs.choice', /non-empty array/],
    [{ choice: ['a', ''] }, 'structured_outputs.choice'],
    [{ json_object: false }, 'structured_outputs.json_object', /must be true/], [{ json_object: 'yes' }, 'structured_outputs.json_object', /must be true/],
    [{ grammar: 'root ::= "yes" | "no"' }, 'structured_outputs.grammar', /not supported/],
    [{ structural_tag: '{"type": "structural_tag"}' }, 'structured_outputs.structural_tag', /not supported/],
    [{ choice: ['a'], whitespace_pattern: '[ ]?' }, 'structured_outputs.whitespace_pattern', /not supported/],
    [{ json: PERSON, disable_any_whitespace: true }, 'structured_outputs.disable_any_whitespace', /not supported/],
    [{ json_object: true, disable_any_whitespace: true }, 'structured_outputs.disable_any_whitespace', /not supported/],
    [{ choice: ['a'], disable_fallback: 'yes' }, 'structured_outputs.disable_fallback', /boolean/],
    [{ choice: ['a'], disable_additional_properties: 1 }, 'structured_outputs.disable_additional_properties', /boolean/],
  ];
  for (const [so, param, re] of cases) {
    for (const run of [complete, chat]) {
      await assert.rejects(run(client, { structured_outputs: so }), (e: unknown) => bad(e, param, re), `${run.name} ${JSON.stringify(so)}`);
    }
  }
  // with another constraint: guided_*, a response_format other than text, a forced tool call
  for (const old of [{ guided_choice: ['a'] }, { guided_json: PERSON }, { guided_regex: 'a' }]) {
    for (const run of [complete, chat]) await assert.rejects(run(client, { structured_outputs: { choice: ['a'] }, ...old }), (e: unknown) => bad(e, 'structured_outputs', /cannot be combined/), JSON.stringify(old));
  }
  const tools = [{ type: 'function', function: { name: 'f', parameters: { type: 'object', properties: {} } } }];
  for (const other of [
    { response_format: { type: 'json_object' } }, { response_format: { type: 'json_schema', json_schema: { name: 'p', schema: PERSON } } },
    { tools, tool_choice: 'required' }, { tools, tool_choice: { type: 'function', function: { name: 'f' } } },
  ]) {
    await assert.rejects(chat(client, { structured_outputs: { json_object: true }, ...other }), (e: unknown) => bad(e, 'structured_outputs', /cannot be combined/), JSON.stringify(other));
  }
  // past a complete value only EOS may follow, and a mask of its own could leave nothing the grammar allows, as with guided_*
  for (const [extra, param] of [[{ ignore_eos: true }, 'ignore_eos'], [{ min_tokens: 2 }, 'min_tokens'], [{ allowed_token_ids: [5, 6] }, 'allowed_token_ids'], [{ bad_words: ['yes'] }, 'bad_words']] as const) {
    for (const run of [complete, chat]) await assert.rejects(run(client, { structured_outputs: { choice: ['a'] }, ...extra }), (e: unknown) => bad(e, param, /structured_outputs/), param);
  }
});
