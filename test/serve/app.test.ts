// The HTTP app against a fake engine (fastify inject): validation per field, response shapes, auth, limits, loading.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EngineRequestError } from '../../src/engine/protocol.js';
import { ChatTemplate } from '../../src/formats/chat-template.js';
import { Tokenizer } from '../../src/formats/tokenizer.js';
import { createApp } from '../../src/serve/app.js';
import { byteTokenizer, byteTokenizerFiles, CHAT_TEMPLATE, FakeEngine } from './helpers.js';

const tok = byteTokenizer();

function setup(opts: { apiKey?: string; bodyLimit?: number; loading?: boolean } = {}) {
  const engine = new FakeEngine(tok);
  const s = createApp({ modelName: 'tiny', apiKey: opts.apiKey, bodyLimit: opts.bodyLimit });
  if (!opts.loading) s.ready({ engine, tokenizer: tok, template: new ChatTemplate(CHAT_TEMPLATE) });
  const post = (url: string, body: unknown, headers: Record<string, string> = {}) =>
    s.app.inject({ method: 'POST', url, headers: { 'content-type': 'application/json', ...headers }, payload: typeof body === 'string' ? body : JSON.stringify(body) });
  return { ...s, engine, post };
}

function sse(payload: string): unknown[] {
  const events = payload.split('\n\n').filter((e) => e.length > 0);
  assert.equal(events.at(-1), 'data: [DONE]', 'stream ends with [DONE]');
  return events.slice(0, -1).map((e) => {
    assert.ok(e.startsWith('data: '), `event ${JSON.stringify(e.slice(0, 40))}`);
    return JSON.parse(e.slice(6));
  });
}

const user = (content: string) => ({ model: 'tiny', messages: [{ role: 'user', content }] });

test('completions: an empty text prompt starts from the BOS the tokenizer adds (OpenAI and vLLM take it); with no BOS it is a 400 naming the prompt', async () => {
  const { post, engine } = setup();
  const bos = tok.encode('');
  assert.equal(bos.length, 1, 'the test tokenizer adds a BOS');
  const r = await post('/v1/completions', { model: 'tiny', prompt: '', max_tokens: 3 });
  assert.equal(r.statusCode, 200, r.body);
  assert.deepEqual(engine.requests[0]!.promptIds, bos);
  assert.equal(r.json().usage.prompt_tokens, 1);
  const two = await post('/v1/completions', { model: 'tiny', prompt: ['', 'x'], max_tokens: 3 });
  assert.equal(two.statusCode, 200, two.body);
  assert.deepEqual(engine.requests.slice(1).map((q) => q.promptIds).sort((a, b) => a.length - b.length), [bos, tok.encode('x')]);
  const emb = await post('/v1/embeddings', { model: 'tiny', input: '' });
  assert.equal(emb.statusCode, 400, 'an embedding of nothing is still refused');
  assert.equal(emb.json().error.param, 'input');

  const { tokenizerJson, tokenizerConfig } = byteTokenizerFiles();
  const noBos = new Tokenizer({ ...tokenizerJson, post_processor: null }, tokenizerConfig);
  assert.deepEqual(noBos.encode(''), []);
  const s = createApp({ modelName: 'tiny' });
  s.ready({ engine: new FakeEngine(noBos), tokenizer: noBos, template: null });
  for (const [prompt, param] of [['', 'prompt'], [['x', ''], 'prompt[1]']] as const) {
    const e = await s.app.inject({ method: 'POST', url: '/v1/completions', headers: { 'content-type': 'application/json' }, payload: JSON.stringify({ model: 'tiny', prompt, max_tokens: 3 }) });
    assert.equal(e.statusCode, 400, e.body);
    assert.equal(e.json().error.param, param);
    assert.match(e.json().error.message, /must not be empty: this model's tokenizer adds no BOS/);
  }
});

test('chat: prompt goes through the template; message, usage and sampling reach the engine', async () => {
  const { post, engine } = setup();
  const r = await post('/v1/chat/completions', { ...user('hi'), max_tokens: 5, temperature: 0.7, top_p: 0.9, top_k: 5, min_p: 0.1, seed: 11, stop: 'zz', logit_bias: { '65': 3 }, frequency_penalty: 0.5, return_token_ids: true });
  assert.equal(r.statusCode, 200, r.body);
  const j = r.json();
  const req = engine.requests[0]!;
  assert.deepEqual(req.promptIds, tok.encode('<|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n'));
  assert.equal(req.maxTokens, 5);
  assert.deepEqual(req.stop, ['zz']);
  assert.deepEqual({ ...req.sampling }, { temperature: 0.7, topP: 0.9, topK: 5, minP: 0.1, repetitionPenalty: 1, frequencyPenalty: 0.5, presencePenalty: 0, seed: 11, logitBias: { 65: 3 } });
  assert.equal(j.object, 'chat.completion');
  assert.equal(j.model, 'tiny');
  assert.equal(j.choices[0].message.role, 'assistant');
  assert.equal(j.choices[0].message.content, tok.decode(FakeEngine.tokens(req.promptIds, 0, 5)));
  assert.equal(j.choices[0].finish_reason, 'length');
  assert.deepEqual(j.choices[0].token_ids, FakeEngine.tokens(req.promptIds, 0, 5));
  assert.deepEqual(j.prompt_token_ids, req.promptIds);
  assert.deepEqual(j.usage, { prompt_tokens: req.promptIds.length, completion_tokens: 5, total_tokens: req.promptIds.length + 5, prompt_tokens_details: { cached_tokens: 0 } });
});

test('chat stream: role first per choice, content deltas, finish, usage chunk, [DONE]', async () => {
  const { post, engine } = setup();
  const r = await post('/v1/chat/completions', { ...user('yo'), max_tokens: 4, n: 2, stream: true, stream_options: { include_usage: true }, logprobs: true, top_logprobs: 2 });
  assert.equal(r.statusCode, 200, r.body);
  assert.match(String(r.headers['content-type']), /text\/event-stream/);
  const chunks = sse(r.body) as any[];
  const p = engine.requests[0]!.promptIds;
  for (const i of [0, 1]) {
    const mine = chunks.filter((c) => c.choices[0]?.index === i);
    assert.deepEqual(mine[0].choices[0].delta, { role: 'assistant', content: '' });
    const text = mine.map((c) => c.choices[0].delta.content ?? '').join('');
    assert.equal(text, tok.decode(FakeEngine.tokens(p, i, 4)));
    assert.equal(mine.at(-1).choices[0].finish_reason, 'length');
    const lps = mine.flatMap((c) => c.choices[0].logprobs?.content ?? []);
    assert.equal(lps.length, 4);
    assert.equal(lps[0].top_logprobs.length, 2);
    assert.deepEqual(lps[0].bytes, [...Buffer.from(lps[0].token)]);
  }
  const last = chunks.at(-1);
  assert.deepEqual(last.choices, []);
  assert.equal(last.usage.completion_tokens, 8);
  assert.ok(chunks.slice(0, -1).every((c) => c.usage === null), 'usage null on every other chunk');
});

test('completions: echo + logprobs in the legacy shape with prompt logprobs; token ids prompt; several prompts', async () => {
  const { post, engine } = setup();
  const r = await post('/v1/completions', { model: 'tiny', prompt: 'abc', max_tokens: 3, echo: true, logprobs: 1 });
  assert.equal(r.statusCode, 200, r.body);
  const c = r.json().choices[0];
  const ids = tok.encode('abc');
  assert.equal(engine.requests[0]!.promptLogprobs, 1);
  assert.equal(c.text, 'abc' + tok.decode(FakeEngine.tokens(ids, 0, 3)));
  assert.equal(c.logprobs.tokens.length, ids.length + 3);
  assert.deepEqual(c.logprobs.token_logprobs.slice(0, ids.length), [null, ...ids.slice(1).map((_, j) => -2 - j)]);
  assert.equal(c.logprobs.tokens.slice(ids.length).join(''), tok.decode(FakeEngine.tokens(ids, 0, 3)));
  const offsets = c.logprobs.text_offset as number[];
  assert.equal(offsets[0], 0);
  assert.equal(offsets[1], 0, 'the added BOS is not in the text');
  for (let i = 1; i < offsets.length; i++) {
    const t = c.logprobs.tokens[i] as string;
    assert.equal(c.text.slice(offsets[i]!, offsets[i]! + t.length), t, `text_offset ${i}`);
  }

  const r2 = await post('/v1/completions', { prompt: [[5, 6, 7], 'xy'], max_tokens: 2, n: 2, prompt_logprobs: 1 });
  assert.equal(r2.statusCode, 200, r2.body);
  const j2 = r2.json();
  assert.deepEqual(j2.choices.map((ch: any) => ch.index), [0, 1, 2, 3]);
  assert.equal(j2.choices[0].text, tok.decode(FakeEngine.tokens([5, 6, 7], 0, 2)));
  assert.equal(j2.choices[3].text, tok.decode(FakeEngine.tokens(tok.encode('xy'), 1, 2)));
  assert.equal(j2.usage.prompt_tokens, 3 + tok.encode('xy').length);
  assert.equal(j2.choices[0].prompt_logprobs[0], null);
  assert.deepEqual(j2.choices[0].prompt_logprobs[1]['6'], { logprob: -2, rank: 1, decoded_token: tok.decode([6]) });
});

/** Reference text_offset: the JS offset of the character each token's first byte falls in (tokens absent from the text stay put). */
function charOffsets(tokens: Array<{ bytes: number[]; inText: boolean }>, text: string): number[] {
  const charAt: number[] = []; // byte position -> JS offset of its character
  for (let o = 0; o < text.length;) {
    const cp = text.codePointAt(o)!;
    const ch = String.fromCodePoint(cp);
    for (let k = 0; k < Buffer.byteLength(ch); k++) charAt.push(o);
    o += ch.length;
  }
  let pos = 0;
  return tokens.map((t) => {
    const at = charAt[pos] ?? text.length;
    if (t.inText) pos += t.bytes.length;
    return at;
  });
}

/** The logprobs name of a one-byte token: its character when ASCII, vLLM's `bytes:\xNN` when a partial UTF-8 sequence. */
const byteName = (b: number) => (b < 0x80 ? String.fromCharCode(b) : `bytes:\\x${b.toString(16).padStart(2, '0')}`);

test('non-ASCII logprobs: text_offset counts characters, partial UTF-8 tokens are named bytes:\\x.., top_logprobs keys stay distinct', async () => {
  const { post, engine } = setup();
  const gen = [...Buffer.from('éü')];
  engine.script = gen;
  const prompt = '日本語\nx';
  const r = await post('/v1/completions', { model: 'tiny', prompt, max_tokens: gen.length, echo: true, logprobs: 3 });
  assert.equal(r.statusCode, 200, r.body);
  const c = r.json().choices[0];
  assert.equal(c.text, prompt + 'éü');
  const ids = tok.encode(prompt);
  assert.equal(ids[0], 1, 'BOS first');
  const pieces = [{ bytes: [...Buffer.from('<|begin_of_text|>')], inText: false }, ...[...ids.slice(1), ...gen].map((b) => ({ bytes: [b], inText: true }))];
  assert.deepEqual(c.logprobs.text_offset, charOffsets(pieces, c.text));
  assert.equal(c.logprobs.text_offset[ids.indexOf(0x0a)], 3, "the '\\n' after 日本語 is character 3");
  assert.deepEqual(c.logprobs.tokens.slice(1), [...ids.slice(1), ...gen].map(byteName));
  for (const [i, top] of (c.logprobs.top_logprobs as Array<Record<string, number> | null>).entries()) {
    if (i === 0) { assert.equal(top, null); continue; }
    const tokId = [...ids, ...gen][i]!;
    const want = i < ids.length ? [tokId, tokId ^ 1] : [tokId, 0x20, tokId ^ 1];
    assert.deepEqual(Object.keys(top!).sort(), want.map(byteName).sort(), `top_logprobs ${i}: one key per candidate`);
  }

  const rs = await post('/v1/chat/completions', { ...user('x'), max_tokens: gen.length, logprobs: true, top_logprobs: 3, stream: true });
  const content = (sse(rs.body) as any[]).flatMap((ch) => ch.choices[0]?.logprobs?.content ?? []);
  assert.equal(content.length, gen.length);
  content.forEach((e: any, i: number) => {
    assert.deepEqual(e.bytes, [gen[i]], 'bytes: the token\'s own UTF-8 bytes');
    assert.equal(e.token, byteName(gen[i]!));
    assert.deepEqual(e.top_logprobs.map((t: any) => t.bytes), [[gen[i]], [0x20], [gen[i]! ^ 1]]);
    assert.equal(new Set(e.top_logprobs.map((t: any) => t.token)).size, 3);
  });
});

test('embeddings: float and base64 agree; usage counts tokens', async () => {
  const { post } = setup();
  const a = (await post('/v1/embeddings', { model: 'tiny', input: ['hello', 'hi'] })).json();
  const b = (await post('/v1/embeddings', { model: 'tiny', input: ['hello', 'hi'], encoding_format: 'base64' })).json();
  assert.equal(a.data.length, 2);
  const buf = Buffer.from(b.data[1].embedding, 'base64');
  const f = new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4);
  assert.deepEqual(Array.from(f), a.data[1].embedding);
  assert.equal(a.usage.prompt_tokens, tok.encode('hello').length + tok.encode('hi').length);
});

const BAD: Array<[string, string, Record<string, unknown>, string | null]> = [
  ['chat', 'no messages', { model: 'tiny' }, 'messages'],
  ['chat', 'messages not a list', { messages: 'hi' }, 'messages'],
  ['chat', 'empty messages', { messages: [] }, 'messages'],
  ['chat', 'bad role', { messages: [{ role: 'wizard', content: 'x' }] }, 'messages[0].role'],
  ['chat', 'content of wrong type', { messages: [{ role: 'user', content: 5 }] }, 'messages[0].content'],
  ['chat', 'image part', { messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'x' } }] }] }, 'messages[0].content[0].type'],
  ['chat', 'temperature too high', { ...user('x'), temperature: 3 }, 'temperature'],
  ['chat', 'temperature string', { ...user('x'), temperature: 'hot' }, 'temperature'],
  ['chat', 'top_p negative', { ...user('x'), top_p: -0.1 }, 'top_p'], // 0 is OpenAI's greedy (openai-contract-chat.test.ts)
  ['chat', 'top_k fractional', { ...user('x'), top_k: 1.5 }, 'top_k'],
  ['chat', 'min_p above 1', { ...user('x'), min_p: 1.5 }, 'min_p'],
  ['chat', 'repetition_penalty 0', { ...user('x'), repetition_penalty: 0 }, 'repetition_penalty'],
  ['chat', 'n zero', { ...user('x'), n: 0 }, 'n'],
  ['chat', 'n huge', { ...user('x'), n: 1e9 }, 'n'],
  ['chat', 'max_tokens negative', { ...user('x'), max_tokens: -1 }, 'max_tokens'],
  ['chat', 'max_tokens huge', { ...user('x'), max_tokens: 1e300 }, 'max_tokens'],
  ['chat', 'max_tokens over context', { ...user('x'), max_tokens: 250 }, 'max_tokens'],
  ['chat', 'max_completion_tokens float', { ...user('x'), max_completion_tokens: 2.5 }, 'max_completion_tokens'],
  ['chat', 'frequency_penalty', { ...user('x'), frequency_penalty: 5 }, 'frequency_penalty'],
  ['chat', 'presence_penalty', { ...user('x'), presence_penalty: -3 }, 'presence_penalty'],
  ['chat', 'seed float', { ...user('x'), seed: 1.5 }, 'seed'],
  ['chat', 'stop number', { ...user('x'), stop: 5 }, 'stop'],
  ['chat', 'stop too many', { ...user('x'), stop: Array.from({ length: 20 }, (_, i) => `s${i}`) }, 'stop'],
  ['chat', 'logit_bias bad key', { ...user('x'), logit_bias: { foo: 1 } }, 'logit_bias'],
  ['chat', 'logit_bias out of vocab', { ...user('x'), logit_bias: { 999: 1 } }, 'logit_bias'],
  ['chat', 'logit_bias value', { ...user('x'), logit_bias: { 5: 1000 } }, 'logit_bias'],
  ['chat', 'top_logprobs without logprobs', { ...user('x'), top_logprobs: 2 }, 'top_logprobs'],
  ['chat', 'top_logprobs too many', { ...user('x'), logprobs: true, top_logprobs: 50 }, 'top_logprobs'],
  ['chat', 'logprobs not bool', { ...user('x'), logprobs: 3 }, 'logprobs'],
  ['chat', 'stream not bool', { ...user('x'), stream: 'yes' }, 'stream'],
  ['chat', 'stream_options without stream', { ...user('x'), stream_options: { include_usage: true } }, 'stream_options'],
  ['chat', 'response_format type', { ...user('x'), response_format: { type: 'yaml' } }, 'response_format.type'],
  ['chat', 'response_format unsupported keyword', { ...user('x'), response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'integer', not: { const: 3 } } } } }, 'response_format.json_schema.schema'],
  ['chat', 'response_format without name', { ...user('x'), response_format: { type: 'json_schema', json_schema: { schema: {} } } }, 'response_format.json_schema.name'],
  ['chat', 'guided_regex syntax', { ...user('x'), guided_regex: '(a' }, 'guided_regex'],
  ['chat', 'guided_choice empty', { ...user('x'), guided_choice: [] }, 'guided_choice'],
  ['chat', 'two guided_*', { ...user('x'), guided_regex: 'a', guided_choice: ['a'] }, 'guided_choice'],
  ['chat', 'tools on a template without tool support', { ...user('x'), tools: [{ type: 'function', function: { name: 'f' } }] }, 'tools'],
  ['chat', 'tool name', { ...user('x'), tools: [{ type: 'function', function: { name: 'a b' } }] }, 'tools[0].function.name'],
  ['chat', 'tool_choice unknown function', { ...user('x'), tools: [{ type: 'function', function: { name: 'f' } }], tool_choice: { type: 'function', function: { name: 'g' } } }, 'tool_choice'],
  ['chat', 'tool_choice required without tools', { ...user('x'), tool_choice: 'required' }, 'tool_choice'],
  ['chat', 'forced tool with an unsupported keyword', { ...user('x'), tools: [{ type: 'function', function: { name: 'f', parameters: { type: 'object', properties: { a: { type: 'integer', not: { const: 3 } } } } } }], tool_choice: 'required' }, 'tools[0].function.parameters'],
  ['completions', 'guided_json not a schema', { prompt: 'a', guided_json: 5 }, 'guided_json'],
  ['completions', 'guided_json unsupported keyword', { prompt: 'a', guided_json: { type: 'array', uniqueItems: true } }, 'guided_json'],
  ['chat', 'unknown field', { ...user('x'), temprature: 1 }, 'temprature'],
  ['chat', 'user not string', { ...user('x'), user: 5 }, 'user'],
  ['chat', 'stop_token_ids out of vocab', { ...user('x'), stop_token_ids: [300] }, 'stop_token_ids'],
  ['completions', 'no prompt', { model: 'tiny' }, 'prompt'],
  ['completions', 'empty prompt list', { prompt: [] }, 'prompt'],
  ['completions', 'prompt object', { prompt: { a: 1 } }, 'prompt'],
  ['completions', 'token id out of vocab', { prompt: [1, 2, 256] }, 'prompt'],
  ['completions', 'negative token id', { prompt: [1, -2] }, 'prompt'],
  ['completions', 'suffix', { prompt: 'a', suffix: 'b' }, 'suffix'],
  ['completions', 'echo not bool', { prompt: 'a', echo: 1 }, 'echo'],
  ['completions', 'logprobs too many', { prompt: 'a', logprobs: 99 }, 'logprobs'],
  ['completions', 'prompt too long', { prompt: 'x'.repeat(300) }, 'prompt'],
  ['completions', 'best_of', { prompt: 'a', best_of: 3 }, 'best_of'],
  ['embeddings', 'no input', { model: 'tiny' }, 'input'],
  ['embeddings', 'bad encoding', { input: 'a', encoding_format: 'hex' }, 'encoding_format'],
  ['embeddings', 'bad pooling', { input: 'a', pooling: 'max' }, 'pooling'],
  ['embeddings', 'dimensions', { input: 'a', dimensions: 3 }, 'dimensions'],
  ['embeddings', 'input too long', { input: 'x'.repeat(300) }, 'input'],
];

test('bad inputs: each field answers 400 with its param in OpenAI error shape, and nothing reaches the engine', async () => {
  const { post, engine } = setup();
  for (const [route, what, body, param] of BAD) {
    const r = await post(`/v1/${route === 'chat' ? 'chat/completions' : route}`, body);
    assert.equal(r.statusCode, 400, `${route} ${what}: ${r.body}`);
    const e = r.json().error;
    assert.equal(e.param, param, `${route} ${what}: ${e.message}`);
    assert.equal(e.type, 'invalid_request_error');
    assert.equal(typeof e.message, 'string');
    assert.ok('code' in e);
  }
  assert.equal(engine.requests.length, 0);
});

test("a completion the engine aborts (shutdown) is a 503 / an error event, never finish_reason 'abort'", async () => {
  const { post, engine } = setup();
  engine.cutAt = 2;
  const plain = await post('/v1/chat/completions', { ...user('x'), max_tokens: 6 });
  assert.equal(plain.statusCode, 503, plain.body);
  assert.equal(plain.json().error.code, 'shutting_down');
  for (const [url, body] of [['/v1/chat/completions', { ...user('x'), max_tokens: 6, stream: true }], ['/v1/completions', { prompt: 'x', max_tokens: 6, n: 2, stream: true }]] as const) {
    const events = sse((await post(url, body)).body) as any[];
    assert.equal(events.at(-1).error?.code, 'shutting_down', `${url}: the stream ends with an error event`);
    const finishes = events.flatMap((e) => (e.choices ?? []).map((c: any) => c.finish_reason)).filter((f) => f !== null);
    assert.deepEqual(finishes, [], `${url}: no finish_reason outside OpenAI's set`);
  }
});

test('generation_config.json defaults fill the sampling fields a request leaves out; explicit values win; max_new_tokens caps open chat output', async () => {
  const engine = new FakeEngine(tok);
  const s = createApp({ modelName: 'tiny' });
  s.ready({ engine, tokenizer: tok, template: new ChatTemplate(CHAT_TEMPLATE), defaults: { temperature: 0.6, topP: 0.9, topK: 20, minP: 0.05, repetitionPenalty: 1.1, maxNewTokens: 7 } });
  const post = (url: string, payload: object) => s.app.inject({ method: 'POST', url, payload });
  assert.equal((await post('/v1/chat/completions', user('x'))).statusCode, 200);
  assert.equal((await post('/v1/chat/completions', { ...user('x'), temperature: 1, top_p: 1, top_k: 0, min_p: 0, repetition_penalty: 1, max_tokens: 9 })).statusCode, 200);
  assert.equal((await post('/v1/completions', { prompt: 'x' })).statusCode, 200);
  const [silent, explicit, legacy] = engine.requests;
  assert.deepEqual({ ...silent!.sampling, maxTokens: silent!.maxTokens },
    { temperature: 0.6, topP: 0.9, topK: 20, minP: 0.05, repetitionPenalty: 1.1, frequencyPenalty: 0, presencePenalty: 0, seed: null, logitBias: null, maxTokens: 7 });
  assert.deepEqual({ t: explicit!.sampling.temperature, p: explicit!.sampling.topP, k: explicit!.sampling.topK, m: explicit!.sampling.minP, r: explicit!.sampling.repetitionPenalty, max: explicit!.maxTokens },
    { t: 1, p: 1, k: 0, m: 0, r: 1, max: 9 });
  assert.equal(legacy!.maxTokens, 16, "completions keep OpenAI's legacy max_tokens default");
  assert.equal(legacy!.sampling.temperature, 0.6);
});

test('an unknown model is 404 model_not_found; n over --max-num-seqs names the flag', async () => {
  const { post, engine, app } = setup();
  for (const [route, body] of [['chat/completions', { ...user('x'), model: 'gpt-4' }], ['completions', { model: 'tiny.gguf', prompt: 'a' }], ['embeddings', { model: 'x', input: 'a' }]] as const) {
    const r = await post(`/v1/${route}`, body);
    assert.equal(r.statusCode, 404, r.body);
    assert.deepEqual({ ...r.json().error, message: '' }, { message: '', type: 'invalid_request_error', param: 'model', code: 'model_not_found' });
  }
  const m = await app.inject({ method: 'GET', url: '/v1/models/gpt-4' });
  assert.equal(m.statusCode, 404);
  assert.equal(m.json().error.code, 'model_not_found');
  const small = createApp({ modelName: 'tiny' });
  small.ready({ engine: new FakeEngine(tok, { maxNumSeqs: 4 }), tokenizer: tok, template: new ChatTemplate(CHAT_TEMPLATE) });
  const r = await small.app.inject({ method: 'POST', url: '/v1/chat/completions', payload: { ...user('x'), n: 5 } });
  assert.equal(r.statusCode, 400);
  assert.equal(r.json().error.param, 'n');
  assert.match(r.json().error.message, /--max-num-seqs/);
  assert.equal((await small.app.inject({ method: 'POST', url: '/v1/chat/completions', payload: { ...user('x'), n: 4, max_tokens: 2 } })).statusCode, 200);
  assert.equal(engine.requests.length, 0);
});

test('newer SDK fields: harmless ones are ignored and named in x-floe-ignored-fields; ones that would change the answer are 400', async () => {
  const { post, engine } = setup();
  const harmless = {
    metadata: { a: 'b' }, store: false, service_tier: 'auto', parallel_tool_calls: true, prompt_cache_key: 'k', prompt_cache_retention: '24h',
    prompt_cache_options: { mode: 'implicit', ttl: '30m' }, safety_identifier: 'u1', reasoning_effort: 'low', verbosity: 'low', modalities: ['text'], user: 'me',
  };
  for (const stream of [false, true]) {
    const r = await post('/v1/chat/completions', { ...user('x'), max_tokens: 2, ...harmless, stream, ...(stream ? { stream_options: { include_usage: true, include_obfuscation: true } } : {}) });
    assert.equal(r.statusCode, 200, r.body);
    const want = [...Object.keys(harmless), ...(stream ? ['stream_options.include_obfuscation'] : [])].sort();
    assert.deepEqual(String(r.headers['x-floe-ignored-fields']).split(', ').sort(), want, `stream=${stream}`);
  }
  const plain = await post('/v1/chat/completions', { ...user('x'), max_tokens: 2 });
  assert.equal(plain.headers['x-floe-ignored-fields'], undefined, 'no header when nothing was ignored');
  const cmpl = await post('/v1/completions', { prompt: 'x', max_tokens: 2, user: 'me' });
  assert.equal(cmpl.headers['x-floe-ignored-fields'], 'user');
  assert.equal((await post('/v1/embeddings', { input: 'x', user: 'me' })).headers['x-floe-ignored-fields'], 'user');
  assert.equal(engine.requests.length, 4);
  for (const [param, over] of [['modalities', { modalities: ['text', 'audio'] }], ['audio', { audio: { voice: 'alloy', format: 'wav' } }],
    ['web_search_options', { web_search_options: {} }], ['reasoning_effort', { reasoning_effort: 3 }],
    ['moderation', { moderation: { model: 'omni-moderation-latest', policy: { output: { mode: 'block' } } } }]] as const) {
    const r = await post('/v1/chat/completions', { ...user('x'), ...over });
    assert.equal(r.statusCode, 400, param);
    assert.equal(r.json().error.param, param);
    if (param === 'moderation') assert.match(r.json().error.message, /'moderation' .* is not supported.*guardrails/);
  }
  assert.equal(engine.requests.length, 4);
});

test('malformed bodies, huge numbers and odd values never crash: 400s; the app still serves after', async () => {
  const { post } = setup();
  const raws = ['{', '[]', 'null', '"x"', '{"messages": [}', '{"__proto__": {"x": 1}}', '{"max_tokens": 1e999, "messages": []}',
    '{"model": "tiny", "messages": [{"role": "user", "content": "x"}], "temperature": NaN}', '['.repeat(100000)];
  for (const raw of raws) {
    const r = await post('/v1/chat/completions', raw);
    assert.equal(r.statusCode, 400, `${raw.slice(0, 30)}: ${r.body}`);
    assert.equal(typeof r.json().error.message, 'string');
  }
  const empty = await post('/v1/completions', '');
  assert.equal(empty.statusCode, 400);
  assert.match(empty.json().error.message, /must be a JSON object, got nothing/);
  const ok = await post('/v1/chat/completions', { ...user('still here'), max_tokens: 2 });
  assert.equal(ok.statusCode, 200);
});

test('auth, 404, 413, 415, 429 from the engine, 503 while loading', async () => {
  const s = setup({ apiKey: 'sekret', bodyLimit: 2000 });
  assert.equal((await s.post('/v1/chat/completions', user('x'))).statusCode, 401);
  const bad = await s.post('/v1/chat/completions', user('x'), { authorization: 'Bearer nope' });
  assert.equal(bad.statusCode, 401);
  assert.equal(bad.json().error.code, 'invalid_api_key');
  const auth = { authorization: 'Bearer sekret' };
  assert.equal((await s.post('/v1/chat/completions', { ...user('x'), max_tokens: 1 }, auth)).statusCode, 200);
  assert.equal((await s.app.inject({ method: 'GET', url: '/health' })).statusCode, 200, 'health needs no key');
  for (const url of ['/v1/models', '/%761/models', '/v1/models?x=1', '/v1/models/tiny']) {
    assert.equal((await s.app.inject({ method: 'GET', url })).statusCode, 401, url);
  }
  const nf = await s.app.inject({ method: 'GET', url: '/v1/nope', headers: auth });
  assert.equal(nf.statusCode, 404);
  assert.equal(nf.json().error.type, 'invalid_request_error');
  const big = await s.post('/v1/completions', { prompt: 'x'.repeat(5000) }, auth);
  assert.equal(big.statusCode, 413);
  assert.ok(big.json().error.message.includes('2000'));
  const txt = await s.app.inject({ method: 'POST', url: '/v1/completions', headers: { ...auth, 'content-type': 'application/xml' }, payload: '<a/>' });
  assert.equal(txt.statusCode, 415);
  s.engine.refuse = new EngineRequestError(429, 'queue full (3 waiting, --max-queue 3)');
  for (const stream of [false, true]) {
    const r = await s.post('/v1/chat/completions', { ...user('x'), stream }, auth);
    assert.equal(r.statusCode, 429, `stream=${stream}`);
    assert.equal(r.headers['retry-after'], '1', `stream=${stream}`);
    assert.equal(r.json().error.message, 'queue full (3 waiting, --max-queue 3)');
  }
  s.engine.refuse = new EngineRequestError(400, 'bad');
  assert.equal((await s.post('/v1/chat/completions', user('x'), auth)).headers['retry-after'], undefined, 'no Retry-After on a 400');

  const l = setup({ loading: true });
  assert.equal((await l.app.inject({ method: 'GET', url: '/health' })).statusCode, 503);
  const r = await l.post('/v1/chat/completions', user('x'));
  assert.equal(r.statusCode, 503);
  assert.equal(r.headers['retry-after'], '1');
  assert.equal(r.json().error.code, 'model_loading');
  l.ready({ engine: l.engine, tokenizer: tok, template: null });
  assert.equal((await l.app.inject({ method: 'GET', url: '/health' })).statusCode, 200);
  const noTemplate = await l.post('/v1/chat/completions', user('x'));
  assert.equal(noTemplate.statusCode, 400);
  assert.match(noTemplate.json().error.message, /chat template/);
  l.engine.failed = 'the engine worker exited unexpectedly (code 70)';
  const failed = await l.app.inject({ method: 'GET', url: '/health' });
  assert.equal(failed.statusCode, 503);
  assert.deepEqual(failed.json(), { status: 'engine_failed', error: 'the engine worker exited unexpectedly (code 70)' });
  l.drain();
  assert.equal((await l.app.inject({ method: 'GET', url: '/health' })).statusCode, 503);
  assert.deepEqual((await l.app.inject({ method: 'GET', url: '/health' })).json(), { status: 'shutting_down' });
});

test('a request the KV pool can never hold is refused up front, naming the KV limit', async () => {
  const engine = new FakeEngine(tok, { kvTokens: 48, maxRequestTokens: 48 });
  const s = createApp({ modelName: 'tiny' });
  s.ready({ engine, tokenizer: tok, template: null });
  const post = (body: unknown) => s.app.inject({ method: 'POST', url: '/v1/completions', payload: body as object });
  const r = await post({ prompt: 'x'.repeat(20), max_tokens: 40 });
  assert.equal(r.statusCode, 400);
  assert.equal(r.json().error.param, 'max_tokens');
  assert.equal(r.json().error.code, 'context_length_exceeded');
  assert.match(r.json().error.message, /KV cache holds at most 48 tokens/);
  const ok = await post({ prompt: 'x'.repeat(20), max_tokens: 27 });
  assert.equal(ok.statusCode, 200, ok.body);
  const fill = await post({ prompt: [5, 6, 7], max_tokens: null });
  assert.equal(fill.statusCode, 200);
  assert.equal(engine.requests.at(-1)!.maxTokens, 16, 'legacy completions default to 16 tokens');
  const chatFill = await s.app.inject({ method: 'POST', url: '/v1/chat/completions', payload: { messages: [{ role: 'user', content: 'x' }] } });
  assert.equal(chatFill.statusCode, 400, 'no template');
  const lone = await post({ prompt: 'a\ud800b', max_tokens: 2 });
  assert.ok(lone.statusCode === 200 || lone.statusCode === 400, `lone surrogate: ${lone.statusCode}`);
});

test('models and metrics', async () => {
  const { app, post } = setup();
  const m = (await app.inject({ method: 'GET', url: '/v1/models' })).json();
  assert.equal(m.data[0].id, 'tiny');
  assert.equal(m.data[0].max_model_len, 256);
  await post('/v1/chat/completions', { ...user('x'), max_tokens: 3 });
  await post('/v1/chat/completions', { ...user('x'), temperature: 9 });
  const text = (await app.inject({ method: 'GET', url: '/metrics' })).body;
  assert.match(text, /floe_http_requests_total\{route="\/v1\/chat\/completions",status="200"\} 1/);
  assert.match(text, /floe_http_requests_total\{route="\/v1\/chat\/completions",status="400"\} 1/);
  assert.match(text, /floe_generation_tokens_total 3/);
  assert.match(text, /floe_kv_blocks_total 64/);
  assert.match(text, /floe_time_to_first_token_seconds_count 1/);
});

/** Refuses the sub-request of prompt 2 (as a full queue does) while the others run, slowly. */
class ThirdRefused extends FakeEngine {
  override async *generate(req: Parameters<FakeEngine['generate']>[0], signal?: AbortSignal) {
    if (req.id.endsWith('-2')) {
      this.requests.push(req);
      throw new EngineRequestError(429, 'the queue is full');
    }
    yield* super.generate(req, signal);
  }
}

test('a multi-prompt completion the engine refuses in part aborts its other prompts (plain and streamed); prompts past slots + queue are a 400 up front', async () => {
  for (const stream of [false, true]) {
    const engine = new ThirdRefused(tok, { maxNumSeqs: 2, maxQueue: 2 });
    engine.delayMs = 5;
    const s = createApp({ modelName: 'tiny' });
    s.ready({ engine, tokenizer: tok, template: null });
    // A real socket: inject's replies close before they finish, which hides a skipped abort.
    const url = await s.app.listen({ port: 0, host: '127.0.0.1' });
    const r = await fetch(`${url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt: ['a', 'b', 'c', 'd'], max_tokens: 200, ignore_eos: true, stream }) });
    assert.equal(r.status, 429, `stream=${stream}: ${await r.text()}`);
    await s.app.close();
    const others = engine.requests.map((q) => q.id).filter((id) => !id.endsWith('-2'));
    assert.equal(others.length, 3);
    assert.deepEqual(others.filter((id) => !engine.aborted.includes(id)), [], `stream=${stream}: every other prompt is aborted`);
  }

  const engine = new FakeEngine(tok, { maxNumSeqs: 2, maxQueue: 1 });
  const s = createApp({ modelName: 'tiny' });
  s.ready({ engine, tokenizer: tok, template: null });
  const r = await s.app.inject({ method: 'POST', url: '/v1/completions', payload: { prompt: ['a', 'b', 'c', 'd'], max_tokens: 2 } });
  assert.equal(r.statusCode, 400, r.body);
  assert.equal(r.json().error.param, 'prompt');
  assert.match(r.json().error.message, /--max-num-seqs.*--max-queue/);
  assert.equal(engine.requests.length, 0, 'nothing reached the engine');
  const fits = await s.app.inject({ method: 'POST', url: '/v1/completions', payload: { prompt: ['a', 'b', 'c'], max_tokens: 2 } });
  assert.equal(fits.statusCode, 200, fits.body);
});

/** Candidates that never include the token itself (as when sampling picks outside the top k). */
class Unlikely extends FakeEngine {
  static top(t: number): Array<[number, number]> { return [[t ^ 2, -0.2], [t ^ 4, -0.3], [t ^ 8, -0.4]]; }
  override async *generate(req: Parameters<FakeEngine['generate']>[0], signal?: AbortSignal) {
    for await (const o of super.generate(req, signal)) {
      yield {
        ...o,
        logprobs: o.logprobs && o.logprobs.map((e) => ({ ...e, top: Unlikely.top(e.token).slice(0, req.logprobs!) })),
        promptLogprobs: o.promptLogprobs && o.promptLogprobs.map((e) => e && { ...e, top: Unlikely.top(e.token).slice(0, req.promptLogprobs!) }),
      };
    }
  }
}

test('legacy logprobs k: top_logprobs hold the chosen token plus the k most likely (k + 1 at most), echoed prompt tokens too; k = 0 is the token alone', async () => {
  const engine = new Unlikely(tok);
  const s = createApp({ modelName: 'tiny' });
  s.ready({ engine, tokenizer: tok, template: null });
  const ids = tok.encode('abc');
  for (const k of [0, 1, 2]) {
    for (const stream of [false, true]) {
      const r = await s.app.inject({ method: 'POST', url: '/v1/completions', payload: { prompt: 'abc', max_tokens: 3, echo: true, logprobs: k, stream } });
      assert.equal(r.statusCode, 200, r.body);
      const choices = stream ? (sse(r.body) as any[]).flatMap((e) => e.choices) : r.json().choices;
      const lp = { tokens: choices.flatMap((c: any) => c.logprobs?.tokens ?? []), token_logprobs: choices.flatMap((c: any) => c.logprobs?.token_logprobs ?? []), top: choices.flatMap((c: any) => c.logprobs?.top_logprobs ?? []) };
      const all = [...ids, ...FakeEngine.tokens(ids, 0, 3)];
      assert.equal(lp.top.length, all.length, `k=${k} stream=${stream}`);
      all.forEach((t, i) => {
        if (i === 0) return assert.equal(lp.top[0], null, 'the first prompt token has no logprob');
        const want = Object.fromEntries([[t, lp.token_logprobs[i]] as [number, number], ...Unlikely.top(t).slice(0, k)].map(([id, v]) => [tok.decode([id]), v]));
        assert.deepEqual(lp.top[i], want, `k=${k} stream=${stream} position ${i}`);
      });
    }
  }
});

test('streamed chat with tools and logprobs: the chunks carry the logprobs of every token, held-back call text included, as the plain reply does', async () => {
  const engine = new FakeEngine(tok);
  const s = createApp({ modelName: 'tiny' });
  s.ready({ engine, tokenizer: tok, template: new ChatTemplate(CHAT_TEMPLATE + '{% if tools %}{% endif %}') });
  const tools = [{ type: 'function', function: { name: 'get_time', parameters: { type: 'object', properties: { tz: { type: 'string' } } } } }];
  for (const text of ['{"name": "get_time", "parameters": {"tz": "UTC"}}', 'plain words']) {
    engine.script = [...Buffer.from(text)];
    const body = { ...user('x'), tools, logprobs: true, top_logprobs: 1, max_tokens: engine.script.length };
    const plain = await s.app.inject({ method: 'POST', url: '/v1/chat/completions', payload: body });
    assert.equal(plain.statusCode, 200, plain.body);
    const want = plain.json().choices[0].logprobs.content;
    assert.equal(want.length, engine.script.length, 'the plain reply has one entry per token');
    const streamed = await s.app.inject({ method: 'POST', url: '/v1/chat/completions', payload: { ...body, stream: true } });
    const chunks = sse(streamed.body) as any[];
    assert.deepEqual(chunks.flatMap((c) => c.choices[0]?.logprobs?.content ?? []), want, text);
  }
});

test('parallel_tool_calls false with tool_choice auto: a reply with two calls comes back as its first call, plain and streamed', async () => {
  const engine = new FakeEngine(tok);
  const s = createApp({ modelName: 'tiny' });
  s.ready({ engine, tokenizer: tok, template: new ChatTemplate(CHAT_TEMPLATE + '{% if tools %}{% endif %}') });
  const tools = ['get_time', 'get_date'].map((name) => ({ type: 'function', function: { name, parameters: { type: 'object', properties: { tz: { type: 'string' } } } } }));
  const script = [...Buffer.from('{"name": "get_time", "parameters": {"tz": "UTC"}}; {"name": "get_date", "parameters": {"tz": "CET"}}')];
  engine.script = script;
  for (const parallel of [false, true]) {
    const body = { ...user('x'), tools, parallel_tool_calls: parallel, max_tokens: script.length };
    const plain = await s.app.inject({ method: 'POST', url: '/v1/chat/completions', payload: body });
    assert.equal(plain.statusCode, 200, plain.body);
    const calls = plain.json().choices[0].message.tool_calls.map((c: any) => [c.function.name, c.function.arguments]);
    assert.deepEqual(calls, parallel ? [['get_time', '{"tz": "UTC"}'], ['get_date', '{"tz": "CET"}']] : [['get_time', '{"tz": "UTC"}']]);
    const chunks = sse((await s.app.inject({ method: 'POST', url: '/v1/chat/completions', payload: { ...body, stream: true } })).body) as any[];
    const deltas = chunks.flatMap((c) => c.choices[0]?.delta?.tool_calls ?? []);
    assert.deepEqual([...new Set(deltas.map((d: any) => d.index))], parallel ? [0, 1] : [0]);
    assert.ok(chunks.every((c) => !c.choices[0]?.delta?.content), 'the dropped call is not sent as content');
  }
});

test('a missing nested field is "is required" (missing_required_parameter) at its own path, never "got undefined"', async () => {
  const { post } = setup();
  const fn = { name: 'f', parameters: { type: 'object' } };
  const cases: Array<[Record<string, unknown>, string]> = [
    [{ response_format: { type: 'json_schema', json_schema: { schema: { type: 'object' } } } }, 'response_format.json_schema.name'],
    [{ response_format: { type: 'json_schema' } }, 'response_format.json_schema'],
    [{ tools: [{ type: 'function', function: { parameters: { type: 'object' } } }] }, 'tools[0].function.name'],
    [{ tools: [{ type: 'function', function: fn }, { type: 'function' }] }, 'tools[1].function'],
    [{ tools: [{ function: fn }] }, 'tools[0].type'],
    [{ messages: [{ content: 'x' }] }, 'messages[0].role'],
    [{ messages: [{ role: 'user', content: [{ text: 'x' }] }] }, 'messages[0].content[0].type'],
    [{ messages: [{ role: 'user', content: [{ type: 'text' }] }] }, 'messages[0].content[0].text'],
    [{ messages: [{ role: 'user', content: 'x' }, { role: 'assistant', tool_calls: [{ id: 'c', type: 'function', function: { name: 'f', arguments: '{}' } }] }, { role: 'tool', content: 'r' }] }, 'messages[2].tool_call_id'],
  ];
  for (const [over, param] of cases) {
    const r = await post('/v1/chat/completions', { ...user('x'), ...over });
    assert.equal(r.statusCode, 400, param);
    const e = r.json().error;
    assert.deepEqual({ param: e.param, code: e.code }, { param, code: 'missing_required_parameter' }, e.message);
    const why = param === 'tools[0].type' ? ' (only "function" tools are supported)' : param === 'response_format.json_schema' ? " when 'response_format.type' is 'json_schema'"
      : param.endsWith('tool_call_id') ? ': a tool message answers the tool call with this id' : '';
    assert.equal(e.message, `'${param}' is required${why}`);
  }
  // a tool_call_id of another type is refused on any message; a string one passes
  const calls = [{ role: 'user', content: 'x' }, { role: 'assistant', tool_calls: [{ id: 'c', type: 'function', function: { name: 'f', arguments: '{}' } }] }];
  const bad = await post('/v1/chat/completions', { ...user('x'), messages: [...calls, { role: 'tool', tool_call_id: 7, content: 'r' }] });
  assert.equal(bad.statusCode, 400);
  assert.deepEqual({ param: bad.json().error.param, code: bad.json().error.code }, { param: 'messages[2].tool_call_id', code: 'invalid_type' });
  const good = await post('/v1/chat/completions', { ...user('x'), messages: [...calls, { role: 'tool', tool_call_id: 'c', content: 'r' }] });
  assert.equal(good.statusCode, 200, good.body);
});

test('/v1/embeddings with an unknown model: the 404 names the embedding model beside the chat model, as /v1/models lists them', async () => {
  const engine = new FakeEngine(tok);
  const s = createApp({ modelName: 'tiny' });
  s.ready({ engine, tokenizer: tok, template: null, embedding: { name: 'embedder', engine: new FakeEngine(tok), tokenizer: tok, pooling: 'mean', maxTokens: 32 } });
  const ids = (await s.app.inject({ method: 'GET', url: '/v1/models' })).json().data.map((m: any) => m.id);
  const r = await s.app.inject({ method: 'POST', url: '/v1/embeddings', payload: { model: 'text-embedding-3-small', input: 'x' } });
  assert.equal(r.statusCode, 404, r.body);
  assert.deepEqual({ ...r.json().error, message: '' }, { message: '', type: 'invalid_request_error', param: 'model', code: 'model_not_found' });
  const named = [...r.json().error.message.matchAll(/'([^']+)'/g)].map((m) => m[1]).slice(1);
  assert.deepEqual(named.sort(), [...ids].sort());
  for (const model of ids) assert.equal((await s.app.inject({ method: 'POST', url: '/v1/embeddings', payload: { model, input: 'x' } })).statusCode, 200, model);
});

test("/v1/models advertises the embedding model's real input limit: max_model_len tokens embed, one more is refused (--task embed and --embedding-model)", async () => {
  for (const taskEmbed of [true, false]) {
    const engine = new FakeEngine(tok);
    const s = createApp({ modelName: 'tiny' });
    const name = taskEmbed ? 'tiny' : 'embedder';
    s.ready({ engine, tokenizer: tok, template: null, embedding: { name, engine: taskEmbed ? engine : new FakeEngine(tok), tokenizer: tok, pooling: 'mean', maxTokens: 32 } });
    const card = (await s.app.inject({ method: 'GET', url: '/v1/models' })).json().data.find((m: any) => m.id === name);
    const embed = (len: number) => s.app.inject({ method: 'POST', url: '/v1/embeddings', payload: { model: name, input: Array.from({ length: len }, () => 97) } });
    assert.equal((await embed(card.max_model_len)).statusCode, 200, `taskEmbed=${taskEmbed}: max_model_len ${card.max_model_len} tokens`);
    const over = await embed(card.max_model_len + 1);
    assert.equal(over.statusCode, 400, `taskEmbed=${taskEmbed}`);
    assert.equal(over.json().error.code, 'context_length_exceeded');
  }
});

test('ignore_eos with constrained decoding is a 400 naming ignore_eos, before the engine', async () => {
  const { post, engine } = setup();
  const tools = [{ type: 'function', function: { name: 'f', parameters: { type: 'object' } } }];
  const cases: Array<[string, Record<string, unknown>]> = [
    ['chat/completions', { ...user('x'), response_format: { type: 'json_schema', json_schema: { name: 'o', schema: { type: 'object' } } } }],
    ['chat/completions', { ...user('x'), response_format: { type: 'json_object' } }],
    ['chat/completions', { ...user('x'), tools, tool_choice: 'required' }],
    ['chat/completions', { ...user('x'), guided_regex: 'a+' }],
    ['completions', { prompt: 'x', guided_choice: ['yes', 'no'] }],
  ];
  for (const [route, body] of cases) {
    const r = await post(`/v1/${route}`, { ...body, ignore_eos: true, max_tokens: 4 });
    assert.equal(r.statusCode, 400, `${route} ${JSON.stringify(body)}`);
    assert.equal(r.json().error.param, 'ignore_eos', r.body);
  }
  assert.equal(engine.requests.length, 0);
});

test('echo: a token-id prompt echoes as its text prompt does (no literal BOS), text_offset alike; specials given elsewhere stay', async () => {
  const { post } = setup();
  const ids = tok.encode('abc');
  assert.equal(ids[0], 1, 'the tokenizer adds BOS');
  for (const stream of [false, true]) {
    const echo = async (prompt: unknown) => {
      const r = await post('/v1/completions', { prompt, max_tokens: 2, echo: true, logprobs: 1, stream });
      assert.equal(r.statusCode, 200, r.body);
      const choices = stream ? (sse(r.body) as any[]).flatMap((e) => e.choices) : r.json().choices;
      return { text: choices.map((c: any) => c.text).join(''), tokens: choices.flatMap((c: any) => c.logprobs.tokens), offsets: choices.flatMap((c: any) => c.logprobs.text_offset) };
    };
    const [fromText, fromIds] = [await echo('abc'), await echo(ids)];
    assert.deepEqual(fromIds, fromText, `stream=${stream}`);
    assert.ok(fromText.text.startsWith('abc'));
    // a special token inside the prompt is part of what the user gave: echoed as text either way
    const mid = [1, ...tok.encode('a<|eot_id|>b', { addSpecialTokens: false })];
    assert.deepEqual(await echo(mid), await echo('a<|eot_id|>b'), `stream=${stream}: a special token inside`);
  }
});

test("a body that is not sent as JSON (text/plain, fetch's default for a string; form-urlencoded, curl -d's) is a 415 telling the client which header to send", async () => {
  const s = setup();
  const body = JSON.stringify({ prompt: 'x', max_tokens: 1 });
  for (const ct of ['text/plain;charset=UTF-8', 'application/x-www-form-urlencoded']) {
    const r = await s.app.inject({ method: 'POST', url: '/v1/completions', headers: { 'content-type': ct }, payload: body });
    assert.equal(r.statusCode, 415, `${ct}: ${r.body}`);
    assert.equal(r.json().error.code, 'unsupported_media_type');
    assert.ok(r.json().error.message.includes(`'${ct}'`), r.json().error.message);
    assert.match(r.json().error.message, /Content-Type: application\/json/);
  }
  assert.equal((await s.post('/v1/completions', body)).statusCode, 200, 'the same body as JSON is served');
  assert.equal(s.engine.requests.length, 1);
});
