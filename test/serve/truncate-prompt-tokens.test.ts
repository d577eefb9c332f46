// vLLM's truncate_prompt_tokens as a vLLM user sends it (an extra body field of the openai client) to `floe serve`:
// completions, chat completions, embeddings and a Batch API line. Each truncated request is checked against an
// independent oracle: the same request with the kept token ids sent as the prompt (or input).

import { before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI, { toFile } from 'openai';
import { loadTokenizer, type Tokenizer } from '../../src/formats/tokenizer.js';
import { repoPath } from '../repo.js';
import { poll, terminal } from './batch-helpers.js';
import { client, serverProcs, startFloeServe, type Floe } from './floe-process.js';

const BUILT = repoPath('dist/src/serve/prompt-truncation.js');
const CHAT = repoPath('models/floe-brown');
const EMBED = repoPath('models/floe-embed');
const T = 120_000;
const procs = serverProcs();

let f: Floe, c: OpenAI, maxLen: number, tok: Tokenizer, BOS: number;
before(async () => {
  [f, tok] = await Promise.all([
    startFloeServe(mkdtempSync(join(tmpdir(), 'floe-trunc-')), { built: BUILT, procs, args: ['--model', CHAT, '--embedding-model', EMBED] }),
    loadTokenizer(EMBED).then((t) => t!), // floe-brown's tokenizer.json too
  ]);
  c = client(f);
  maxLen = await modelLen('floe-brown');
  BOS = tok.encode('a', { addSpecialTokens: true })[0]!;
}, { timeout: T });

// extra body fields, as vLLM users pass them (openai-python's extra_body); the TypeScript client sends unknown keys as is
type Extra = { truncate_prompt_tokens?: unknown; return_token_ids?: boolean; prompt_logprobs?: number };
const cmpl = (b: OpenAI.CompletionCreateParamsNonStreaming & Extra) => c.completions.create(b);
const chat = (b: OpenAI.ChatCompletionCreateParamsNonStreaming & Extra) => c.chat.completions.create(b);
type Ids = { prompt_token_ids?: number[] };
const modelLen = async (id: string) => (await c.models.retrieve(id) as unknown as { max_model_len: number }).max_model_len; // vLLM's card field

const LONG = 'The jury praised the election, and the city council voted to spend the money on roads, schools and a new harbour for the fishing boats.';
const SHORT = 'A small boat.';
const greedy = { model: 'floe-brown', max_tokens: 8, temperature: 0 } as const;

test('completions: a text prompt keeps its BOS and its last k - 1 tokens, token ids their last k; usage counts the kept tokens; each prompt of a list on its own', { timeout: T }, async () => {
  const content = tok.encode(LONG, { addSpecialTokens: false });
  const k = 20;
  assert.ok(content.length > 2 * k, `the prompt is ${content.length} tokens`);
  const kept = [BOS, ...content.slice(-(k - 1))];

  const r = await cmpl({ ...greedy, prompt: LONG, truncate_prompt_tokens: k, return_token_ids: true });
  const oracle = await cmpl({ ...greedy, prompt: kept });
  assert.deepEqual((r.choices[0] as Ids).prompt_token_ids, kept);
  assert.equal(r.choices[0]!.text, oracle.choices[0]!.text);
  assert.equal(r.usage!.prompt_tokens, k);
  assert.notEqual(r.choices[0]!.text, (await cmpl({ ...greedy, prompt: LONG })).choices[0]!.text, 'the whole prompt answers otherwise');

  // token ids are cut as they are: the BOS goes and is not re-added (vLLM's slice)
  const ids = [BOS, ...content];
  const r2 = await cmpl({ ...greedy, prompt: ids, truncate_prompt_tokens: k, return_token_ids: true });
  assert.deepEqual((r2.choices[0] as Ids).prompt_token_ids, ids.slice(-k));
  assert.equal(r2.choices[0]!.text, (await cmpl({ ...greedy, prompt: ids.slice(-k) })).choices[0]!.text);
  assert.equal(r2.usage!.prompt_tokens, k);

  // a list: each prompt truncated on its own; one shorter than k is sent whole
  const short = tok.encode(SHORT, { addSpecialTokens: true });
  assert.ok(short.length < k);
  const both = await cmpl({ ...greedy, prompt: [LONG, SHORT], truncate_prompt_tokens: k, return_token_ids: true });
  assert.deepEqual(both.choices.map((ch) => (ch as Ids).prompt_token_ids), [kept, short]);
  assert.equal(both.choices[0]!.text, oracle.choices[0]!.text);
  assert.equal(both.choices[1]!.text, (await cmpl({ ...greedy, prompt: SHORT })).choices[0]!.text);
  assert.equal(both.usage!.prompt_tokens, k + short.length);
  // null is no truncation
  const none = await cmpl({ ...greedy, prompt: LONG, truncate_prompt_tokens: null, return_token_ids: true });
  assert.deepEqual((none.choices[0] as Ids).prompt_token_ids, ids);
});

test('completions: -1 keeps as many tokens as leave room for max_tokens; a prompt over the context, a 400 without it, is answered', { timeout: T }, async () => {
  const words = 'word '.repeat(maxLen + 100);
  const content = tok.encode(words, { addSpecialTokens: false });
  assert.ok(content.length > maxLen);
  await assert.rejects(cmpl({ ...greedy, prompt: words }), (e: unknown) => e instanceof OpenAI.BadRequestError && e.code === 'context_length_exceeded');
  const r = await cmpl({ ...greedy, prompt: words, truncate_prompt_tokens: -1, return_token_ids: true });
  const kept = [BOS, ...content.slice(-(maxLen - greedy.max_tokens - 1))];
  assert.deepEqual((r.choices[0] as Ids).prompt_token_ids, kept);
  assert.equal(r.usage!.prompt_tokens, maxLen - greedy.max_tokens);
  assert.equal(r.choices[0]!.text, (await cmpl({ ...greedy, prompt: kept })).choices[0]!.text);

  // the context check runs on the kept prompt: k + max_tokens past the context is the usual 400, naming max_tokens
  await assert.rejects(cmpl({ ...greedy, prompt: words, truncate_prompt_tokens: maxLen - 4 }),
    (e: unknown) => e instanceof OpenAI.BadRequestError && e.param === 'max_tokens' && e.code === 'context_length_exceeded' && e.message.includes(`${maxLen - 4} in the prompt`));
  const fits = await cmpl({ ...greedy, prompt: words, truncate_prompt_tokens: maxLen - 8 });
  assert.equal(fits.usage!.prompt_tokens, maxLen - 8);
});

test('completions: echo echoes the kept prompt, and its logprobs and prompt_logprobs cover the kept tokens', { timeout: T }, async () => {
  const k = 12;
  const kept = [BOS, ...tok.encode(LONG, { addSpecialTokens: false }).slice(-(k - 1))];
  const ask = { ...greedy, echo: true, logprobs: 0, prompt_logprobs: 1 };
  const r = await cmpl({ ...ask, prompt: LONG, truncate_prompt_tokens: k });
  const oracle = await cmpl({ ...ask, prompt: kept });
  const ch = r.choices[0]!;
  assert.equal(ch.text, oracle.choices[0]!.text);
  assert.ok(ch.text.startsWith(tok.decode(kept.slice(1))) && !ch.text.startsWith(LONG.slice(0, 10)), ch.text);
  assert.equal(ch.logprobs!.tokens!.length, k + greedy.max_tokens);
  assert.deepEqual(ch.logprobs, oracle.choices[0]!.logprobs);
  const plp = (ch as { prompt_logprobs?: unknown[] }).prompt_logprobs!;
  assert.equal(plp.length, k);
  assert.deepEqual(plp, (oracle.choices[0] as { prompt_logprobs?: unknown[] }).prompt_logprobs);
  // streamed, the first chunk echoes the same kept prompt
  let streamed = '';
  for await (const chunk of await c.completions.create({ ...greedy, echo: true, prompt: LONG, truncate_prompt_tokens: k, stream: true } as OpenAI.CompletionCreateParamsStreaming)) streamed += chunk.choices[0]?.text ?? '';
  assert.equal(streamed, ch.text);
});

test('chat: the prompt the template renders keeps its last k tokens (its BOS goes), as the same ids on /v1/completions', { timeout: T }, async () => {
  const messages = [{ role: 'system' as const, content: 'You answer in one short sentence.' }, { role: 'user' as const, content: LONG }];
  const rendered = (await (await fetch(f.url + '/tokenize', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ messages }) })).json() as { tokens: number[] }).tokens;
  assert.equal(rendered[0], BOS);
  const k = 30;
  assert.ok(rendered.length > k);
  const r = await chat({ ...greedy, messages, truncate_prompt_tokens: k, return_token_ids: true });
  assert.deepEqual((r as Ids).prompt_token_ids, rendered.slice(-k));
  assert.equal(r.usage!.prompt_tokens, k);
  assert.equal(r.choices[0]!.message.content, (await cmpl({ ...greedy, prompt: rendered.slice(-k) })).choices[0]!.text);
  // -1: as many as leave room for max_tokens; a short chat is sent whole
  const all = await chat({ ...greedy, messages, truncate_prompt_tokens: -1, return_token_ids: true });
  assert.deepEqual((all as Ids).prompt_token_ids, rendered);
});

test('embeddings: an input over the model\'s max tokens, a 400 without it, keeps its first k tokens (BOS included), as the same ids sent', { timeout: T }, async () => {
  const max = await modelLen('floe-embed');
  const text = 'word '.repeat(max + 50);
  const ids = tok.encode(text, { addSpecialTokens: true });
  assert.ok(ids.length > max);
  const emb = (b: { input: unknown } & Extra) => c.embeddings.create({ model: 'floe-embed', encoding_format: 'float', ...b } as OpenAI.EmbeddingCreateParams);
  await assert.rejects(emb({ input: text }), (e: unknown) => e instanceof OpenAI.BadRequestError && e.code === 'context_length_exceeded');
  const k = 100;
  const r = await emb({ input: [text, ids], truncate_prompt_tokens: k });
  const oracle = await emb({ input: ids.slice(0, k) });
  assert.deepEqual(r.data[0]!.embedding, oracle.data[0]!.embedding);
  assert.deepEqual(r.data[1]!.embedding, oracle.data[0]!.embedding);
  assert.equal(r.usage.prompt_tokens, 2 * k);
  // -1: the model's max tokens
  const whole = await emb({ input: text, truncate_prompt_tokens: -1 });
  assert.deepEqual(whole.data[0]!.embedding, (await emb({ input: ids.slice(0, max) })).data[0]!.embedding);
  assert.equal(whole.usage.prompt_tokens, max);
  await assert.rejects(emb({ input: text, truncate_prompt_tokens: max + 1 }),
    (e: unknown) => e instanceof OpenAI.BadRequestError && e.param === 'truncate_prompt_tokens' && e.message.includes(String(max)));
});

test('truncate_prompt_tokens other than an integer >= 1 or -1, or past max_model_len, is a 400 naming it; /tokenize does not take it', { timeout: T }, async () => {
  const refused = (what: string) => (e: unknown) => {
    assert.ok(e instanceof OpenAI.BadRequestError, `${what}: ${String(e)}`);
    assert.equal(e.param, 'truncate_prompt_tokens', what);
    assert.notEqual(e.code, 'unknown_parameter', `${what}: a known field with a bad value`);
    return true;
  };
  for (const v of [0, -2, 1.5, '3', true, [3], maxLen + 1]) {
    const what = JSON.stringify(v);
    await assert.rejects(cmpl({ ...greedy, prompt: LONG, truncate_prompt_tokens: v }), refused(`completions ${what}`));
    await assert.rejects(chat({ ...greedy, messages: [{ role: 'user', content: LONG }], truncate_prompt_tokens: v }), refused(`chat ${what}`));
    await assert.rejects(c.embeddings.create({ model: 'floe-embed', input: LONG, truncate_prompt_tokens: v } as OpenAI.EmbeddingCreateParams & Extra), refused(`embeddings ${what}`));
  }
  const ok = await cmpl({ ...greedy, prompt: LONG, truncate_prompt_tokens: maxLen });
  assert.equal(ok.usage!.prompt_tokens, tok.encode(LONG, { addSpecialTokens: true }).length, 'k past the prompt keeps it whole');
  // vLLM's /tokenize takes no truncate_prompt_tokens either
  const t = await fetch(f.url + '/tokenize', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt: LONG, truncate_prompt_tokens: 5 }) });
  assert.equal(t.status, 400);
  assert.equal(((await t.json()) as { error: { param: string } }).error.param, 'truncate_prompt_tokens');
});

test('a Batch API line with truncate_prompt_tokens answers as the same request sent directly', { timeout: T }, async () => {
  const body = { ...greedy, prompt: LONG, truncate_prompt_tokens: 16, return_token_ids: true };
  const file = await c.files.create({ file: await toFile(Buffer.from(JSON.stringify({ custom_id: 't', method: 'POST', url: '/v1/completions', body }) + '\n'), 'trunc.jsonl'), purpose: 'batch' });
  const b = await c.batches.create({ input_file_id: file.id, endpoint: '/v1/completions', completion_window: '24h' });
  const end = await poll(c, b.id, terminal);
  assert.equal(end.status, 'completed');
  const line = JSON.parse(await (await c.files.content(end.output_file_id!)).text()) as { response: { status_code: number; body: OpenAI.Completion } };
  assert.equal(line.response.status_code, 200);
  const direct = await cmpl(body);
  assert.deepEqual(line.response.body.choices, direct.choices);
  assert.equal(line.response.body.usage!.prompt_tokens, 16);
});
