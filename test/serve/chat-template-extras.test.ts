// vLLM's chat extras continue_final_message and chat_template_kwargs on a real server (the built-in model, its
// template extended to read one more variable), through the openai client: the prompt checked against the template
// rendered here with @huggingface/jinja and cut by hand, against /tokenize, and the answer against /v1/completions.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Template } from '@huggingface/jinja';
import OpenAI, { toFile } from 'openai';
import { loadTokenizer, type Tokenizer } from '../../src/formats/tokenizer.js';
import { startServer, type RunningServer } from '../../src/serve/server.js';
import { ApiError } from '../../src/serve/errors.js';
import { parseChatRequest } from '../../src/serve/validate.js';
import { poll, terminal } from './batch-helpers.js';
import { repoPath } from '../repo.js';

const BROWN = repoPath('models/floe-brown');
const T = 60_000;
const MODEL = 'floe-brown';
// floe-brown's template, plus a system turn from the `house_style` variable when a request passes one
const HOUSE = "{%- if house_style is defined %}{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' + house_style + '<|eot_id|>' }}{%- endif %}";

let server: RunningServer;
let client: OpenAI;
let tok: Tokenizer;
let source: string;
before(async () => {
  const dir = mkdtempSync(join(tmpdir(), 'floe-brown-house-'));
  for (const f of ['config.json', 'generation_config.json', 'model.safetensors', 'tokenizer.json']) symlinkSync(join(BROWN, f), join(dir, f));
  const config = JSON.parse(readFileSync(join(BROWN, 'tokenizer_config.json'), 'utf8')) as { chat_template: string };
  assert.ok(config.chat_template.startsWith('{{- bos_token }}'));
  source = config.chat_template.replace('{{- bos_token }}', '{{- bos_token }}' + HOUSE);
  writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify({ ...config, chat_template: source }));
  tok = (await loadTokenizer(dir))!;
  server = await startServer({ model: dir, modelName: MODEL, port: 0, ui: false, dataDir: mkdtempSync(join(tmpdir(), 'floe-extras-data-')), kvCacheMemory: 16 * 2 ** 20, threads: 1, log: () => {} });
  await server.ready;
  client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'unused', maxRetries: 0 });
});
after(async () => { await server?.close(0); });

type Msg = { role: string; content: string; tool_calls?: unknown };
const PREFILL = 'The river was';
const messages: Msg[] = [{ role: 'user', content: 'Tell me about rivers.' }, { role: 'assistant', content: PREFILL }];
const CONTINUE = { continue_final_message: true, add_generation_prompt: false };
const tools = [{ type: 'function' as const, function: { name: 'get_time', parameters: { type: 'object', properties: { tz: { type: 'string' } } } } }];

/** The template rendered by @huggingface/jinja itself (not floe's ChatTemplate), with `vars` besides the usual ones. */
const render = (msgs: Msg[], vars: Record<string, unknown>) =>
  new Template(source).render({ messages: msgs, bos_token: tok.bosToken ?? '', eos_token: tok.eosToken ?? '', add_generation_prompt: false, ...vars });
/** transformers' cut, by hand: the rendering up to the end of the last occurrence of the final content. */
const cutAfter = (text: string, content: string) => {
  const at = text.lastIndexOf(content);
  assert.ok(at >= 0, `'${content}' is rendered`);
  return text.slice(0, at + content.length);
};
const encode = (text: string) => tok.encode(text, { addSpecialTokens: false });

/** A chat request with extras the openai client's types do not know, sent as extra body keys (as vLLM's clients do). */
const chat = (body: Record<string, unknown>) =>
  client.chat.completions.create({ model: MODEL, messages, ...body } as unknown as OpenAI.ChatCompletionCreateParamsNonStreaming) as unknown as Promise<OpenAI.ChatCompletion & { prompt_token_ids: number[] }>;
const tokenize = async (body: Record<string, unknown>) => {
  const r = await fetch(`${server.url}/tokenize`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: MODEL, messages, ...body }) });
  return { status: r.status, body: await r.json() as { tokens: number[]; error?: { param: string | null; message: string; code: string } } };
};
const refused = async (p: Promise<unknown>, param: string, message: RegExp, what: string, code?: string) => {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof OpenAI.BadRequestError, `${what}: ${String(e)}`);
    assert.equal(e.param, param, `${what}: ${e.message}`);
    assert.match(e.message, message, what);
    if (code) assert.equal(e.code, code, what);
    return true;
  });
};

test('continue_final_message: the prompt ends with the final content (no end of turn, no generation prompt), as /tokenize counts it, and greedy decoding continues it as /v1/completions does', { timeout: T }, async () => {
  const rendered = render(messages, {});
  const prompt = cutAfter(rendered, PREFILL);
  assert.equal(rendered.slice(prompt.length), '<|eot_id|>', 'the end of turn is cut off');
  const r = await chat({ ...CONTINUE, temperature: 0, max_tokens: 12, return_token_ids: true });
  assert.deepEqual(r.prompt_token_ids, encode(prompt), 'the ids sent to the engine: the rendering cut after the final content');
  assert.deepEqual(r.prompt_token_ids.slice(-encode(PREFILL).length), encode(PREFILL), 'ending with the final content\'s tokens');
  const t = await tokenize(CONTINUE);
  assert.equal(t.status, 200, JSON.stringify(t.body));
  assert.deepEqual(t.body.tokens, r.prompt_token_ids, '/tokenize gives the ids the chat route sent');

  // the oracle: a plain completion of that prompt text (its BOS added by the tokenizer, not written in the text)
  assert.ok(prompt.startsWith(tok.bosToken!));
  const c = await client.completions.create({ model: MODEL, prompt: prompt.slice(tok.bosToken!.length), temperature: 0, max_tokens: 12, return_token_ids: true } as OpenAI.CompletionCreateParamsNonStreaming) as OpenAI.Completion & { choices: Array<{ prompt_token_ids: number[] }> };
  assert.deepEqual(c.choices[0]!.prompt_token_ids, r.prompt_token_ids, 'the same prompt');
  const content = r.choices[0]!.message.content!;
  assert.ok(content.length > 0);
  assert.equal(content, c.choices[0]!.text, 'the message holds only the continuation, as the completion does');
  assert.equal(r.choices[0]!.finish_reason, c.choices[0]!.finish_reason);
  assert.ok(!content.startsWith(PREFILL), 'the prefill is not repeated');

  // streamed, and n > 1: the same continuation in every choice
  const stream = await client.chat.completions.create({ model: MODEL, messages, ...CONTINUE, temperature: 0, max_tokens: 12, stream: true, n: 2 } as unknown as OpenAI.ChatCompletionCreateParamsStreaming);
  const texts = ['', ''];
  for await (const ch of stream) for (const x of ch.choices) texts[x.index] += x.delta.content ?? '';
  assert.deepEqual(texts, [content, content]);
  const n3 = await chat({ ...CONTINUE, temperature: 0, max_tokens: 12, n: 3 });
  assert.deepEqual(n3.choices.map((x) => x.message.content), [content, content, content]);
});

test('continue_final_message with tools, and with chat_template_kwargs: the ids sent are the hand-cut rendering and /tokenize\'s', { timeout: T }, async () => {
  for (const [what, extra, vars] of [
    ['tools', { tools }, { tools }],
    ['chat_template_kwargs', { chat_template_kwargs: { house_style: 'Answer in verse.' } }, { house_style: 'Answer in verse.' }],
  ] as const) {
    const r = await chat({ ...CONTINUE, ...extra, temperature: 0, max_tokens: 4, return_token_ids: true });
    assert.deepEqual(r.prompt_token_ids, encode(cutAfter(render(messages, vars), PREFILL)), what);
    const t = await tokenize({ ...CONTINUE, ...extra });
    assert.deepEqual(t.body.tokens, r.prompt_token_ids, `${what}: /tokenize`);
  }
});

test('continue_final_message refusals: with add_generation_prompt true (its default, as vLLM), a final content the template does not render, no final text', { timeout: T }, async () => {
  await refused(chat({ continue_final_message: true, add_generation_prompt: true }), 'continue_final_message', /cannot set both 'continue_final_message' and 'add_generation_prompt' to true: send 'add_generation_prompt': false/, 'both true');
  await refused(chat({ continue_final_message: true }), 'continue_final_message', /'add_generation_prompt' defaults to true/, 'add_generation_prompt left out');
  await refused(chat({ continue_final_message: 'yes', add_generation_prompt: false }), 'continue_final_message', /must be a boolean/, 'not a boolean', 'invalid_type');
  // floe-brown's template writes an assistant turn with tool calls as the calls alone: its content is not in the prompt
  const call = { id: 'c1', type: 'function', function: { name: 'get_time', arguments: '{"tz":"UTC"}' } };
  const dropped: Msg[] = [messages[0]!, { role: 'assistant', content: 'Checking the clock', tool_calls: [call] }];
  assert.ok(!render(dropped, { tools }).includes('Checking the clock'));
  await refused(chat({ ...CONTINUE, messages: dropped, tools }), 'continue_final_message', /does not render the content of messages\[1\] verbatim/, 'not rendered');
  await refused(chat({ ...CONTINUE, messages: [messages[0]!, { role: 'assistant', content: '  ' }] }), 'continue_final_message', /messages\[1\] has no text to continue/, 'blank');
  // /tokenize answers as chat does, the default's hint included
  for (const [body, param, message] of [
    [{ continue_final_message: true }, 'continue_final_message', /'add_generation_prompt' defaults to true/],
    [{ ...CONTINUE, messages: dropped, tools }, 'continue_final_message', /does not render the content of messages\[1\] verbatim/],
  ] as const) {
    const t = await tokenize(body);
    assert.equal(t.status, 400, JSON.stringify(body));
    assert.equal(t.body.error!.param, param);
    assert.match(t.body.error!.message, message);
  }
});

test('chat_template_kwargs: its variables reach the template (prompt, /tokenize, streamed, n > 1); the request\'s own variables cannot be overridden; a non-object is a 400 naming it', { timeout: T }, async () => {
  const style = { house_style: 'Answer in verse.', unread: { nested: [1, 'two', null, { three: true }] } };
  const plain = await chat({ max_tokens: 1, return_token_ids: true });
  const styled = await chat({ chat_template_kwargs: style, max_tokens: 1, return_token_ids: true });
  assert.deepEqual(plain.prompt_token_ids, encode(render(messages, { add_generation_prompt: true })));
  assert.deepEqual(styled.prompt_token_ids, encode(render(messages, { add_generation_prompt: true, ...style })));
  assert.ok(tok.decode(styled.prompt_token_ids, { skipSpecialTokens: false }).includes('system<|end_header_id|>\n\nAnswer in verse.'));
  assert.notDeepEqual(styled.prompt_token_ids, plain.prompt_token_ids);
  assert.deepEqual((await tokenize({ chat_template_kwargs: style })).body.tokens, styled.prompt_token_ids, '/tokenize');
  assert.deepEqual((await chat({ chat_template_kwargs: null, max_tokens: 1, return_token_ids: true })).prompt_token_ids, plain.prompt_token_ids, 'null is absent');
  const stream = await client.chat.completions.create({ model: MODEL, messages, chat_template_kwargs: style, temperature: 0, max_tokens: 6, n: 2, stream: true } as unknown as OpenAI.ChatCompletionCreateParamsStreaming);
  const texts = ['', ''];
  for await (const ch of stream) for (const x of ch.choices) texts[x.index] += x.delta.content ?? '';
  const whole = await chat({ chat_template_kwargs: style, temperature: 0, max_tokens: 6 });
  assert.deepEqual(texts, [whole.choices[0]!.message.content, whole.choices[0]!.message.content]);

  // what floe sets from the request (and the tokenizer, the template engine) is refused, not silently replaced
  for (const [key, value] of [
    ['add_generation_prompt', false], ['messages', [{ role: 'user', content: 'other' }]], ['tools', tools], ['bos_token', 'x'],
    ['eos_token', 'x'], ['continue_final_message', true], ['raise_exception', 'x'], ['range', 1], ['namespace', 1], ['none', 1], ['chat_template', '{{ 1 }}'], ['tokenize', true],
  ] as const) {
    const param = `chat_template_kwargs.${key}`;
    await refused(chat({ chat_template_kwargs: { house_style: 'x', [key]: value } }), param, new RegExp(`'${param.replace('.', '\\.')}' cannot be set`), key);
    const t = await tokenize({ chat_template_kwargs: { [key]: value } });
    assert.equal(t.body.error?.param, param, `/tokenize ${key}`);
  }
  for (const bad of ['x', [1], 3, true]) {
    await refused(chat({ chat_template_kwargs: bad }), 'chat_template_kwargs', /'chat_template_kwargs' must be an object/, JSON.stringify(bad), 'invalid_type');
    assert.equal((await tokenize({ chat_template_kwargs: bad })).body.error?.param, 'chat_template_kwargs');
  }
  let deep: unknown = 'x';
  for (let i = 0; i < 200; i++) deep = { d: deep };
  await refused(chat({ chat_template_kwargs: deep }), 'chat_template_kwargs', /nests arrays and objects more than 128 levels deep/, 'too deep', 'too_deeply_nested');
  // JSON values only: what no JSON body holds still fails in code that calls the parser directly
  const ctx = { modelName: MODEL, vocabSize: 10, hiddenSize: 4, maxNumSeqs: 4 };
  for (const [v, why] of [[() => 1, /function is not a JSON value/], [NaN, /NaN is not a JSON number/], [[new Date(0)], /Date is not a JSON value/]] as const) {
    assert.throws(() => parseChatRequest({ messages, chat_template_kwargs: { v } }, ctx), (e: unknown) => e instanceof ApiError && e.param === 'chat_template_kwargs.v' && why.test(e.message), String(v));
  }
  // the Responses API takes neither (as vLLM's): a 400 naming each
  for (const key of ['chat_template_kwargs', 'continue_final_message']) {
    await refused(client.responses.create({ model: MODEL, input: 'hi', [key]: key === 'continue_final_message' ? true : style } as unknown as OpenAI.Responses.ResponseCreateParamsNonStreaming), key, /./, `responses ${key}`);
  }
});

test('batch lines take both extras: the same prompt and answer as the direct request', { timeout: T }, async () => {
  const bodies = [
    { model: MODEL, messages, ...CONTINUE, temperature: 0, max_tokens: 5, return_token_ids: true },
    { model: MODEL, messages, chat_template_kwargs: { house_style: 'Answer in verse.' }, temperature: 0, max_tokens: 5, return_token_ids: true },
  ];
  const text = bodies.map((body, i) => JSON.stringify({ custom_id: `l${i}`, method: 'POST', url: '/v1/chat/completions', body })).join('\n');
  const file = await client.files.create({ file: await toFile(Buffer.from(text), 'extras.jsonl'), purpose: 'batch' });
  const b = await client.batches.create({ input_file_id: file.id, endpoint: '/v1/chat/completions', completion_window: '24h' });
  const end = await poll(client, b.id, terminal);
  assert.equal(end.status, 'completed');
  assert.equal(end.request_counts?.failed, 0, JSON.stringify(end));
  const lines = (await (await client.files.content(end.output_file_id!)).text()).trim().split('\n').map((l) => JSON.parse(l) as { custom_id: string; response: { status_code: number; body: OpenAI.ChatCompletion & { prompt_token_ids: number[] } } });
  for (const [i, body] of bodies.entries()) {
    const line = lines.find((l) => l.custom_id === `l${i}`)!;
    assert.equal(line.response.status_code, 200, JSON.stringify(line));
    const direct = await chat(body);
    assert.deepEqual(line.response.body.prompt_token_ids, direct.prompt_token_ids, `line ${i}`);
    assert.equal(line.response.body.choices[0]!.message.content, direct.choices[0]!.message.content, `line ${i}`);
  }
});
