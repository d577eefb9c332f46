// Strict function tools under tool_choice auto, through floe serve and the official openai client: a call the tool-use
// adapter (models/floe-brown-tools) opens is decoded under the calls grammar (the lazy grammar: free text until the
// output opens with '{'), so at temperature 1 over several seeds every call returned validates against its strict
// schema and no call comes back cut into text; chat (function.strict) and the Responses API (flat strict), plain and
// streamed; a strict schema the grammar cannot honour is a 400 naming the tool and the path.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { Ajv } from 'ajv';
import OpenAI from 'openai';
import { startServer, type RunningServer } from '../../src/serve/server.js';
import { makeToolData, promptOf, TOOLS } from '../../scripts/make-tool-data.js';
import { repoPath } from '../repo.js';

const BROWN = repoPath('models/floe-brown');
const ADAPTER = repoPath('models/floe-brown-tools');
const skip = !existsSync(`${ADAPTER}/adapter_model.safetensors`) && 'models/floe-brown-tools is not built (scripts/make-tool-model.ts)';
const ajv = new Ajv({ strict: false });
// the adapter's tools with strict schemas (no extra properties, as OpenAI's strict mode asks)
const strictTools = TOOLS.map((t) => ({ ...t.function, parameters: { ...t.function.parameters, additionalProperties: false } as Record<string, unknown> }));
const schemaOf = new Map<string, object>(strictTools.map((t) => [t.name, t.parameters]));
const chatTools = (strict: boolean): OpenAI.ChatCompletionFunctionTool[] => strictTools.map((t) => ({ type: 'function', function: { ...t, strict } }));
const rows = makeToolData({ seed: 7 }).heldout.filter((r) => r.kind === 'call').slice(0, 12);
const SEEDS = [1, 2, 3];

let srv: RunningServer;
let client: OpenAI;
before(async () => {
  if (skip) return;
  srv = await startServer({ model: BROWN, port: 0, ui: false, dataDir: null, threads: 2, kvCacheMemory: 48 << 20, maxNumSeqs: 12, loraModules: [{ name: 'tools', path: ADAPTER }], log: () => {} });
  await srv.ready;
  client = new OpenAI({ baseURL: `${srv.url}/v1`, apiKey: 'none', maxRetries: 0 });
});
after(async () => { await srv?.close(0); });

/** Calls that end the answer (not cut by max_tokens) must validate; text never opens a call ('{'). */
function check(what: string, calls: { name: string; arguments: string; cut: boolean }[], texts: string[]): number {
  for (const c of calls) {
    if (c.cut) continue; // max_tokens cut the call: its arguments so far (README)
    let args: unknown;
    assert.doesNotThrow(() => { args = JSON.parse(c.arguments); }, `${what}: ${c.name} ${c.arguments}`);
    assert.ok(ajv.validate(schemaOf.get(c.name)!, args), `${what}: ${c.name} ${c.arguments}: ${ajv.errorsText()}`);
  }
  for (const t of texts) assert.ok(!t.trimStart().startsWith('{'), `${what}: a call opened and came back as text: ${t.slice(0, 200)}`);
  return calls.filter((c) => !c.cut).length;
}

test('chat: strict tools under auto at temperature 1 over several seeds: every call validates, none is cut into text, streamed too', { skip, timeout: 300_000 }, async () => {
  let whole = 0;
  for (const seed of SEEDS) {
    const res = await Promise.all(rows.map((row) => client.chat.completions.create({
      model: 'tools', messages: promptOf(row) as OpenAI.ChatCompletionMessageParam[], tools: chatTools(true), tool_choice: 'auto', temperature: 1, seed, max_tokens: 64,
    })));
    whole += check(`seed ${seed}`,
      res.flatMap((r) => (r.choices[0]!.message.tool_calls ?? []).map((c) => ({ ...(c as OpenAI.ChatCompletionMessageFunctionToolCall).function, cut: r.choices[0]!.finish_reason === 'length' }))),
      res.map((r) => r.choices[0]!.message.content ?? ''));
  }
  assert.ok(whole >= rows.length, `the adapter calls tools on tool prompts (${whole} whole calls of ${SEEDS.length * rows.length} answers)`);
  // streamed: the stream helper's final message
  const streamed = await Promise.all(rows.map(async (row) => {
    const s = client.chat.completions.stream({ model: 'tools', messages: promptOf(row) as OpenAI.ChatCompletionMessageParam[], tools: chatTools(true), tool_choice: 'auto', temperature: 1, seed: 9, max_tokens: 64 });
    return (await s.finalChatCompletion()).choices[0]!;
  }));
  check('streamed', streamed.flatMap((c) => (c.message.tool_calls ?? []).map((t) => ({ ...(t as OpenAI.ChatCompletionMessageFunctionToolCall).function, cut: c.finish_reason === 'length' }))), streamed.map((c) => c.message.content ?? ''));
});

test('responses: flat strict tools under auto at temperature 1 over several seeds: every function_call validates', { skip, timeout: 300_000 }, async () => {
  const tools: OpenAI.Responses.FunctionTool[] = strictTools.map((t) => ({ type: 'function', ...t, strict: true }));
  let whole = 0;
  for (const seed of SEEDS) {
    const res = await Promise.all(rows.map((row) => client.responses.create({
      model: 'tools', input: promptOf(row) as OpenAI.Responses.ResponseInput, tools, tool_choice: 'auto', temperature: 1, max_output_tokens: 64,
      seed, // floe's sampling extra, as on chat
    } as OpenAI.Responses.ResponseCreateParamsNonStreaming)));
    whole += check(`seed ${seed}`,
      res.flatMap((r) => r.output.filter((o) => o.type === 'function_call').map((o) => ({ name: o.name, arguments: o.arguments, cut: o.status === 'incomplete' }))),
      res.map((r) => r.output_text));
  }
  assert.ok(whole >= rows.length, `the adapter calls tools (${whole} whole calls)`);
});

test('response_format with strict tools under auto: the answer is a call that validates or text the format accepts', { skip, timeout: 300_000 }, async () => {
  const format = { type: 'object', properties: { answer: { type: 'string', maxLength: 40 } }, required: ['answer'], additionalProperties: false };
  const res = await Promise.all(rows.slice(0, 8).flatMap((row) => SEEDS.map((seed) => client.chat.completions.create({
    model: 'tools', messages: promptOf(row) as OpenAI.ChatCompletionMessageParam[], tools: chatTools(true), tool_choice: 'auto', temperature: 1, seed, max_tokens: 64,
    response_format: { type: 'json_schema', json_schema: { name: 'reply', schema: format, strict: true } },
  }))));
  for (const r of res) {
    const ch = r.choices[0]!;
    if (ch.finish_reason === 'length') continue;
    for (const c of ch.message.tool_calls ?? []) {
      const f = (c as OpenAI.ChatCompletionMessageFunctionToolCall).function;
      assert.ok(ajv.validate(schemaOf.get(f.name)!, JSON.parse(f.arguments)), `${f.name} ${f.arguments}`);
    }
    if (!ch.message.tool_calls) assert.ok(ajv.validate(format, JSON.parse(ch.message.content!)), `text: ${ch.message.content}`);
  }
});

test('a strict tool\'s schema the grammar cannot honour is a 400 under auto naming the tool and the path; a bad strict is a 400', { skip }, async () => {
  const odd = { type: 'function' as const, function: { name: 'pick', parameters: { type: 'object', properties: { n: { type: 'integer', not: { const: 3 } } } }, strict: true } };
  const messages: OpenAI.ChatCompletionMessageParam[] = [{ role: 'user', content: 'Pick a number' }];
  const e = await client.chat.completions.create({ model: 'tools', messages, tools: [...chatTools(false), odd], tool_choice: 'auto', max_tokens: 4 }).catch((x: unknown) => x);
  assert.ok(e instanceof OpenAI.BadRequestError, String(e));
  assert.equal(e.param, 'tools[4].function.parameters');
  assert.match(e.message, /tool 'pick'.*#\/properties\/n.*not/);
  const r = await client.responses.create({ model: 'tools', input: 'Pick a number', tools: [{ type: 'function', name: 'pick', parameters: odd.function.parameters, strict: true }], max_output_tokens: 4 }).catch((x: unknown) => x);
  assert.ok(r instanceof OpenAI.BadRequestError, String(r));
  assert.equal(r.param, 'tools[0].parameters');
  // not strict: nothing constrains its calls under auto, so nothing to refuse
  const ok = await client.chat.completions.create({ model: 'tools', messages, tools: [{ ...odd, function: { ...odd.function, strict: false } }], tool_choice: 'auto', max_tokens: 4 });
  assert.ok(ok.choices.length === 1);
  const bad = await client.chat.completions.create({ model: 'tools', messages, tools: [{ ...odd, function: { ...odd.function, strict: 'yes' as unknown as boolean } }], max_tokens: 4 }).catch((x: unknown) => x);
  assert.ok(bad instanceof OpenAI.BadRequestError, String(bad));
  assert.equal(bad.param, 'tools[0].function.strict');
});
