// `floe serve` as a user meets it: a subprocess on a free port, driven by the official `openai` client.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import OpenAI from 'openai';
import { ChatTemplate, encodeChat } from '../../src/formats/chat-template.js';
import { byteTokenizer, CHAT_TEMPLATE, FIXTURES, makeModelDir, SPECIALS } from './helpers.js';
import { repoPath } from '../repo.js';

const BIN = repoPath('bin/floe.js');
const BUILT = repoPath('dist/src/serve/server.js');
const T = 30_000; // per test: a hung request fails its test instead of the run
const KEY = 'test-key-' + Math.random().toString(36).slice(2);
const tok = byteTokenizer();
const ref = JSON.parse(readFileSync(FIXTURES + 'gqa_f32/reference.json', 'utf8')) as {
  prompt_ids: number[]; greedy_ids: number[]; logprob_positions: number[]; logprobs: number[][];
};

interface Floe { url: string; proc: ChildProcess; out: () => string; exit: Promise<number | null> }
const procs: ChildProcess[] = [];

function startFloe(dir: string, args: string[], env: Record<string, string> = {}): Promise<Floe> {
  if (!existsSync(BUILT)) throw new Error(`${BUILT} is missing: run \`npm run build\` first (npm test does)`);
  const proc = spawn(process.execPath, [BIN, 'serve', '--model', dir, '--port', '0', '--threads', '1', '--model-name', 'tiny', ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  procs.push(proc);
  let out = '';
  const exit = new Promise<number | null>((r) => proc.once('exit', (code) => r(code)));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`floe serve did not start in 20 s:\n${out}`)), 20_000);
    const onData = (d: Buffer) => {
      out += d.toString();
      const m = /listening on (http:\/\/\S+)/.exec(out);
      if (m) { clearTimeout(timer); resolve({ url: m[1]!, proc, out: () => out, exit }); }
    };
    proc.stdout!.on('data', onData);
    proc.stderr!.on('data', onData);
    void exit.then((code) => { clearTimeout(timer); reject(new Error(`floe serve exited with ${code}:\n${out}`)); });
  });
}

/** Resolves once the server's output matches `re` (an event, not a clock). */
function waitOutput(f: Floe, re: RegExp): Promise<void> {
  if (re.test(f.out())) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const onData = () => { if (re.test(f.out())) { done(); resolve(); } };
    const done = () => { f.proc.stdout!.off('data', onData); f.proc.stderr!.off('data', onData); };
    // Listeners added after startFloe's own: f.out() already holds the new chunk when these run.
    f.proc.stdout!.on('data', onData);
    f.proc.stderr!.on('data', onData);
    void f.exit.then(() => { done(); reject(new Error(`exited before printing ${re}:\n${f.out()}`)); });
  });
}

/** Waits for the "model ready" line (an event, not a poll), then checks that /health says ok. */
async function waitHealthy(f: Floe): Promise<void> {
  await waitOutput(f, /model ready in/);
  const r = await fetch(f.url + '/health');
  assert.equal(r.status, 200);
  assert.deepEqual(await json(r), { status: 'ok' });
}

async function metric(url: string, name: string): Promise<number> {
  const text = await (await fetch(url + '/metrics')).text();
  const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(text);
  assert.ok(m, `metric ${name} missing`);
  return Number(m[1]);
}

/** Chat logprob bytes → token id under the test tokenizer (each non-special id is its byte). */
function idOf(bytes: number[]): number {
  if (bytes.length === 1) return bytes[0]!;
  const text = Buffer.from(bytes).toString();
  const s = SPECIALS.find(([, c]) => c === text);
  assert.ok(s, `token bytes ${JSON.stringify(bytes)} are neither one byte nor a special token`);
  return s[0];
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
const json = async (r: Response): Promise<any> => r.json();

let main: Floe;
let client: OpenAI;
const dir = makeModelDir('gqa_f32');

let loading: { health: Response; models: Response } | null = null;

before(async () => {
  // The load is held until SIGUSR2: the loading state is observed for sure, not raced against a clock.
  main = await startFloe(dir, ['--api-key', KEY, '--max-num-seqs', '64', '--max-queue', '256', '--kv-cache-memory', '16MiB', '--max-body', '64KiB'], { FLOE_SERVE_LOAD_HOLD: '1' });
  client = new OpenAI({ baseURL: main.url + '/v1', apiKey: KEY, maxRetries: 0, timeout: 30_000 });
  loading = { health: await fetch(main.url + '/health'), models: await fetch(main.url + '/v1/models', { headers: { authorization: `Bearer ${KEY}` } }) };
  main.proc.kill('SIGUSR2');
  await waitHealthy(main);
});

after(async () => {
  for (const p of procs) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
});

test('start-up: /health and /v1 are 503 with Retry-After while loading, then 200; the KV budget is printed; /v1/models lists the model', { timeout: T }, async () => {
  assert.equal(loading!.health.status, 503);
  assert.deepEqual(await json(loading!.health), { status: 'loading' });
  assert.equal(loading!.models.status, 503);
  assert.equal(loading!.models.headers.get('retry-after'), '1');
  assert.equal((await json(loading!.models)).error.code, 'model_loading');
  assert.match(main.out(), /KV cache \w+: \d+ blocks × \d+ = \d+ tokens; longest request 256 tokens \(context window 256\)/);
  const models = await client.models.list();
  assert.deepEqual(models.data.map((m) => m.id), ['tiny']);
});

test('completions: greedy token ids and prompt logprobs match the PyTorch reference; echo + legacy logprobs', { timeout: T }, async () => {
  const r = await client.completions.create({
    model: 'tiny', prompt: ref.prompt_ids, max_tokens: ref.greedy_ids.length, temperature: 0, logprobs: 2, echo: true,
    // vLLM extras
    ignore_eos: true, prompt_logprobs: 1, return_token_ids: true,
  } as OpenAI.CompletionCreateParamsNonStreaming);
  const c = r.choices[0]! as OpenAI.CompletionChoice & { token_ids: number[]; prompt_logprobs: Array<Record<string, { logprob: number }> | null> };
  assert.deepEqual(c.token_ids, ref.greedy_ids);
  assert.equal(c.finish_reason, 'length');
  const P = ref.prompt_ids.length;
  // Echo returns the prompt as given (its special tokens included); the completion skips specials by default.
  assert.equal(c.text, tok.decode(ref.prompt_ids) + tok.decode(ref.greedy_ids, { skipSpecialTokens: true }));
  const lp = c.logprobs!;
  assert.equal(lp.tokens!.length, P + ref.greedy_ids.length);
  assert.equal(lp.token_logprobs![0], null);
  assert.equal(c.prompt_logprobs[0], null);
  for (let i = 1; i < P; i++) {
    const want = ref.logprobs[ref.logprob_positions.indexOf(i - 1)]![ref.prompt_ids[i]!]!;
    assert.ok(Math.abs(lp.token_logprobs![i]! - want) < 1e-4, `echo logprob ${i}: ${lp.token_logprobs![i]} vs ${want}`);
    assert.ok(Math.abs(c.prompt_logprobs[i]![String(ref.prompt_ids[i])]!.logprob - want) < 1e-4, `prompt_logprobs ${i}`);
  }
  for (let i = P; i < lp.tokens!.length; i++) {
    const top = lp.top_logprobs![i]!;
    assert.ok(Object.keys(top).length >= 1 && Object.keys(top).length <= 2);
    assert.ok(Math.max(...Object.values(top)) <= lp.token_logprobs![i]! + 1e-6, 'greedy: the chosen token is the most likely');
  }
  assert.deepEqual(r.usage && { p: r.usage.prompt_tokens, c: r.usage.completion_tokens }, { p: P, c: ref.greedy_ids.length });
});

test('chat: plain and streaming agree; the template renders the prompt; logprobs bytes; usage', { timeout: T }, async () => {
  const messages = [{ role: 'system' as const, content: 'Be brief.' }, { role: 'user' as const, content: 'Héllo, wörld?' }];
  const promptIds = encodeChat(tok, new ChatTemplate(CHAT_TEMPLATE), messages, { addGenerationPrompt: true });
  const body = { model: 'tiny', messages, max_tokens: 20, temperature: 0, logprobs: true, top_logprobs: 3, ignore_eos: true } as OpenAI.ChatCompletionCreateParamsNonStreaming;
  const plain = await client.chat.completions.create(body);
  const ch = plain.choices[0]!;
  assert.equal(plain.object, 'chat.completion');
  assert.equal(ch.message.role, 'assistant');
  assert.equal(plain.usage!.prompt_tokens, promptIds.length);
  assert.equal(plain.usage!.completion_tokens, 20);
  assert.equal(typeof plain.usage!.prompt_tokens_details!.cached_tokens, 'number');
  const ids = ch.logprobs!.content!.map((e) => idOf(e.bytes!));
  assert.equal(ids.length, 20);
  assert.equal(ch.message.content, tok.decode(ids, { skipSpecialTokens: true }));
  const fatal = new TextDecoder('utf-8', { fatal: true });
  const nameOf = (bytes: number[]) => {
    try {
      return fatal.decode(Uint8Array.from(bytes));
    } catch {
      return 'bytes:' + bytes.map((b) => `\\x${b.toString(16).padStart(2, '0')}`).join('');
    }
  };
  let partial = 0;
  for (const e of ch.logprobs!.content!) {
    assert.equal(e.top_logprobs.length, 3);
    assert.equal(e.top_logprobs[0]!.logprob, e.logprob, 'greedy picks the top token');
    for (const t of [e, ...e.top_logprobs]) assert.equal(t.token, nameOf(t.bytes!), 'whole UTF-8 as text, a partial sequence as bytes:\\x..');
    assert.equal(new Set(e.top_logprobs.map((t) => t.token)).size, 3, 'distinct candidates have distinct names');
    partial += e.top_logprobs.filter((t) => t.token.startsWith('bytes:')).length;
  }
  assert.ok(partial > 0, 'the byte-level model proposes partial UTF-8 tokens');

  const stream = await client.chat.completions.create({ ...body, stream: true, stream_options: { include_usage: true } });
  const chunks: OpenAI.ChatCompletionChunk[] = [];
  for await (const chunk of stream) chunks.push(chunk);
  assert.equal(chunks[0]!.choices[0]!.delta.role, 'assistant');
  assert.equal(chunks.map((c) => c.choices[0]?.delta.content ?? '').join(''), ch.message.content);
  assert.equal(chunks.at(-2)!.choices[0]!.finish_reason, 'length');
  assert.deepEqual(chunks.at(-1)!.choices, []);
  assert.equal(chunks.at(-1)!.usage!.completion_tokens, 20);
  assert.ok(chunks.at(-1)!.usage!.prompt_tokens_details!.cached_tokens! > 0, 'the second identical prompt hits the prefix cache');
});

test('n > 1, seeds and stop strings', { timeout: T }, async () => {
  const base = { model: 'tiny', messages: [{ role: 'user' as const, content: 'count' }], max_tokens: 24, ignore_eos: true } as OpenAI.ChatCompletionCreateParamsNonStreaming;
  const seeded = (seed: number) => client.chat.completions.create({ ...base, temperature: 1, seed, n: 3 });
  const [a, b, c] = await Promise.all([seeded(7), seeded(7), seeded(8)]);
  assert.deepEqual(a.choices.map((x) => x.index), [0, 1, 2]);
  assert.equal(a.usage!.completion_tokens, 72);
  assert.deepEqual(a.choices.map((x) => x.message.content), b.choices.map((x) => x.message.content), 'same seed, same samples');
  assert.notDeepEqual(a.choices.map((x) => x.message.content), c.choices.map((x) => x.message.content), 'another seed, other samples');
  assert.notEqual(a.choices[0]!.message.content, a.choices[1]!.message.content, 'the n completions differ from each other');

  const greedy = await client.chat.completions.create({ ...base, temperature: 0, n: 2 });
  assert.equal(greedy.choices[0]!.message.content, greedy.choices[1]!.message.content, 'greedy completions agree');
  const text = greedy.choices[0]!.message.content!;
  // A stop string from the middle of the greedy text: the output must end right before its first occurrence.
  let stop = '';
  for (let len = 3; len >= 1 && stop === ''; len--) {
    for (let at = 1; at + len <= text.length && stop === ''; at++) {
      const s = text.slice(at, at + len);
      if (!s.includes('\uFFFD') && text.indexOf(s) === at) stop = s;
    }
  }
  assert.ok(stop !== '', `no usable stop string in ${JSON.stringify(text)}`);
  const stopped = await client.chat.completions.create({ ...base, temperature: 0, stop: ['never-there', stop] });
  assert.equal(stopped.choices[0]!.message.content, text.slice(0, text.indexOf(stop)));
  assert.equal(stopped.choices[0]!.finish_reason, 'stop');
});

test('32 simultaneous streams each equal the same request run alone (greedy and seeded)', { timeout: T }, async () => {
  const reqs = Array.from({ length: 32 }, (_, i) => ({
    model: 'tiny', prompt: `request ${i}: ${'xyz'.repeat(i % 5)}`, max_tokens: 12, ignore_eos: true,
    ...(i % 2 === 0 ? { temperature: 0 } : { temperature: 0.9, top_p: 0.95, seed: 1000 + i }),
  }) as unknown as OpenAI.CompletionCreateParamsNonStreaming);
  const alone: string[] = [];
  for (const r of reqs) alone.push((await client.completions.create(r)).choices[0]!.text);
  const together = await Promise.all(reqs.map(async (r) => {
    const s = await client.completions.create({ ...r, stream: true });
    let text = '';
    for await (const chunk of s) text += chunk.choices[0]?.text ?? '';
    return text;
  }));
  assert.deepEqual(together, alone);
  assert.ok(new Set(alone).size > 16, 'prompts give different outputs');
});

// The slower reference backend, so that a stream is still running when the client leaves or SIGTERM arrives.
let slow: Floe | null = null;

test('cancellation mid-stream frees the KV blocks', { timeout: T }, async () => {
  slow = await startFloe(dir, ['--backend', 'reference', '--shutdown-grace', '0.2'], { FLOE_ENGINE_STEP_DELAY_MS: '20' });
  await waitHealthy(slow);
  const c = new OpenAI({ baseURL: slow.url + '/v1', apiKey: 'none', maxRetries: 0 });
  const stream = await c.chat.completions.create({
    model: 'tiny', messages: [{ role: 'user', content: 'go' }], max_tokens: 220, temperature: 0, stream: true, ignore_eos: true,
  } as unknown as OpenAI.ChatCompletionCreateParamsStreaming);
  let chunks = 0;
  let usedDuring = 0;
  for await (const _ of stream) {
    if (++chunks === 4) {
      usedDuring = await metric(slow.url, 'floe_kv_blocks_used');
      break; // the openai client aborts the request when the loop is left
    }
  }
  assert.ok(usedDuring > 0, 'blocks were in use while streaming');
  let state = '';
  // Until the server has seen the disconnect: no clock bound (the test's timeout catches a server that never does).
  for (;; await new Promise((r) => setTimeout(r, 20))) {
    const [used, running, aborted] = await Promise.all(['floe_kv_blocks_used', 'floe_num_requests_running', 'floe_requests_aborted_total'].map((m) => metric(slow!.url, m)));
    state = `used ${used}, running ${running}, aborted ${aborted}`;
    if (used === 0 && running === 0 && aborted === 1) break;
  }
  assert.equal(state, 'used 0, running 0, aborted 1', 'the server saw the disconnect and freed every KV block');
  const generated = await metric(slow.url, 'floe_engine_generation_tokens_total');
  assert.ok(generated < 220, `the request stopped early (${generated} of 220 tokens generated)`);
});

test('errors: 401 without or with a wrong key, 400 with the right param per bad field, 404, 413, malformed JSON', { timeout: T }, async () => {
  const noKey = new OpenAI({ baseURL: main.url + '/v1', apiKey: 'wrong', maxRetries: 0 });
  await assert.rejects(noKey.models.list(), (e: unknown) => e instanceof OpenAI.AuthenticationError && e.status === 401);
  const r401 = await fetch(main.url + '/v1/models');
  assert.equal(r401.status, 401);
  assert.equal((await json(r401)).error.code, 'invalid_api_key');

  const user = [{ role: 'user' as const, content: 'hi' }];
  const bad: Array<[string, Record<string, unknown>]> = [
    ['temperature', { temperature: 2.5 }], ['top_p', { top_p: 1.5 }], ['n', { n: 0 }], ['max_tokens', { max_tokens: 10_000 }],
    ['max_tokens', { max_tokens: -3 }], ['seed', { seed: 0.5 }], ['stop', { stop: 42 }], ['logit_bias', { logit_bias: { 99999: 1 } }],
    ['top_logprobs', { logprobs: true, top_logprobs: 100 }], ['response_format.json_schema.schema', { response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'integer', not: { const: 3 } } } } }],
    ['tools', { tools: [{ type: 'function', function: { name: 'f', parameters: {} } }] }],
    ['messages[0].role', { messages: [{ role: 'robot', content: 'x' }] }], ['frequency_penalty', { frequency_penalty: 9 }],
  ];
  for (const [param, over] of bad) {
    await assert.rejects(client.chat.completions.create({ model: 'tiny', messages: user, ...over } as never),
      (e: unknown) => e instanceof OpenAI.BadRequestError && e.status === 400 && e.param === param, `${param} ${JSON.stringify(over)}`);
  }
  await assert.rejects(client.chat.completions.create({ model: 'gpt-4o', messages: user }),
    (e: unknown) => e instanceof OpenAI.NotFoundError && e.status === 404 && e.code === 'model_not_found' && e.param === 'model');
  await assert.rejects(client.completions.create({ model: 'tiny', prompt: 'x', suffix: 'y' }), (e: unknown) => e instanceof OpenAI.BadRequestError && e.param === 'suffix');
  await assert.rejects(client.completions.create({ model: 'tiny', prompt: 'x'.repeat(400) }), (e: unknown) => e instanceof OpenAI.BadRequestError && e.param === 'prompt');
  await assert.rejects(client.embeddings.create({ model: 'tiny', input: 'x', dimensions: 5 }), (e: unknown) => e instanceof OpenAI.BadRequestError && e.param === 'dimensions');

  const auth = { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' };
  for (const raw of ['{', '{"messages": [1, 2', 'null', '{"model":"tiny","messages":[{"role":"user","content":"x"}],"max_tokens":1e999}']) {
    const r = await fetch(main.url + '/v1/chat/completions', { method: 'POST', headers: auth, body: raw });
    assert.equal(r.status, 400, raw);
    assert.equal(typeof (await json(r)).error.message, 'string');
  }
  const big = await fetch(main.url + '/v1/completions', { method: 'POST', headers: auth, body: JSON.stringify({ prompt: 'x'.repeat(100_000) }) });
  assert.equal(big.status, 413);
  assert.match((await json(big)).error.message, /65536 bytes/);
  const nf = await fetch(main.url + '/v1/engines', { headers: auth });
  assert.equal(nf.status, 404);
  assert.equal((await json(nf)).error.type, 'invalid_request_error');
  assert.equal((await fetch(main.url + '/health')).status, 200, 'still serving');
});

test('embeddings: normalized, base64 equals float, mean differs from last, batch equals singles', { timeout: T }, async () => {
  const a = await client.embeddings.create({ model: 'tiny', input: ['the cat', 'a dog'] });
  const f = await client.embeddings.create({ model: 'tiny', input: ['the cat', 'a dog'], encoding_format: 'float' });
  assert.equal(a.data.length, 2);
  const v = a.data[0]!.embedding;
  assert.equal(v.length, 64);
  assert.ok(Math.abs(Math.hypot(...v) - 1) < 1e-5, 'unit norm');
  assert.deepEqual(a.data.map((d) => d.embedding), f.data.map((d) => d.embedding));
  const single = await client.embeddings.create({ model: 'tiny', input: 'a dog', encoding_format: 'float' });
  for (let i = 0; i < 64; i++) assert.ok(Math.abs(single.data[0]!.embedding[i]! - f.data[1]!.embedding[i]!) < 1e-5);
  const last = await client.embeddings.create({ model: 'tiny', input: 'a dog', encoding_format: 'float', pooling: 'last' } as OpenAI.EmbeddingCreateParams);
  assert.notDeepEqual(last.data[0]!.embedding, single.data[0]!.embedding);
  assert.equal(a.usage.prompt_tokens, tok.encode('the cat').length + tok.encode('a dog').length);
});

test('/metrics parses as Prometheus text with the serving metrics', { timeout: T }, async () => {
  const text = await (await fetch(main.url + '/metrics')).text();
  const samples = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (-?[0-9.e+-]+|NaN|[+-]Inf)$/.exec(line);
    assert.ok(m, `not a Prometheus sample line: ${line}`);
    samples.set(m[1]! + (m[2] ?? ''), Number(m[3]));
  }
  for (const name of ['floe_prompt_tokens_total', 'floe_generation_tokens_total', 'floe_time_to_first_token_seconds_count',
    'floe_inter_token_latency_seconds_count', 'floe_num_requests_running', 'floe_num_requests_waiting', 'floe_kv_blocks_used',
    'floe_kv_blocks_cached', 'floe_kv_blocks_total', 'floe_prefix_cache_hit_rate', 'floe_num_preemptions_total']) {
    assert.ok(samples.has(name), `missing ${name}`);
  }
  assert.ok(samples.get('floe_generation_tokens_total')! >= 32 * 12 * 2, 'counts the tokens served above');
  assert.ok(samples.get('floe_prefix_cache_hit_rate')! > 0, 'the repeated prompts hit the prefix cache');
  assert.ok(samples.get('floe_http_requests_total{route="/v1/chat/completions",status="400"}')! >= 13);
  assert.ok(samples.get('floe_http_requests_total{route="/v1/completions",status="200"}')! >= 64);
});

test('under KV pressure requests are swapped out and back (floe_num_swapped_out_total), or recomputed with --swap-space 0; answers equal those run alone', { timeout: 60_000 }, async () => {
  // 16 blocks of 16 tokens (bf16 KV of the 2-layer fixture: 4 KiB a block): 8 requests of ~75 tokens need ~40
  const reqs = Array.from({ length: 8 }, (_, i) => ({ model: 'tiny', prompt: `pressure ${i}: ${'abc'.repeat(i)}`, max_tokens: 60, ignore_eos: true, temperature: 0 }) as unknown as OpenAI.CompletionCreateParamsNonStreaming);
  const alone: string[] = [];
  for (const r of reqs) alone.push((await client.completions.create(r)).choices[0]!.text);
  for (const swap of [undefined, '0']) {
    const s = await startFloe(dir, ['--kv-cache-memory', '64KiB', '--kv-cache-dtype', 'bf16', ...(swap ? ['--swap-space', swap] : [])], { FLOE_ENGINE_TEST_HOLD: '8' });
    await waitHealthy(s);
    assert.match(s.out(), swap ? /no swap space: preempted requests are recomputed/ : /swap space 64 KiB for preempted requests' KV/);
    const c = new OpenAI({ baseURL: s.url + '/v1', apiKey: 'none', maxRetries: 0 });
    const together = await Promise.all(reqs.map(async (r) => (await c.completions.create(r)).choices[0]!.text));
    assert.deepEqual(together, alone);
    const preempted = await metric(s.url, 'floe_num_preemptions_total');
    const swapped = await metric(s.url, 'floe_num_swapped_out_total');
    assert.ok(preempted > 0, 'the pool was too small for all at once');
    if (swap) assert.equal(swapped, 0);
    else assert.ok(swapped > 0 && swapped <= preempted, `${swapped} of ${preempted} preemptions swapped`);
    s.proc.kill('SIGTERM');
    assert.equal(await s.exit, 0);
  }
});

test('--max-queue counts only what the free slots cannot take: 32 simultaneous requests, 64 slots, --max-queue 8: all served', { timeout: T }, async () => {
  const s = await startFloe(dir, ['--max-num-seqs', '64', '--max-queue', '8', '--kv-cache-memory', '16MiB'], { FLOE_ENGINE_TEST_HOLD: '32' });
  await waitHealthy(s);
  const c = new OpenAI({ baseURL: s.url + '/v1', apiKey: 'none', maxRetries: 0 });
  const results = await Promise.allSettled(Array.from({ length: 32 }, (_, i) =>
    c.completions.create({ model: 'tiny', prompt: `burst ${i}`, max_tokens: 4, ignore_eos: true } as OpenAI.CompletionCreateParamsNonStreaming)));
  const refused = results.filter((r) => r.status === 'rejected').map((r) => String((r as PromiseRejectedResult).reason));
  assert.deepEqual(refused, [], 'every request of the burst was admitted');
  s.proc.kill('SIGTERM');
  assert.equal(await s.exit, 0);
});

test('a burst past --max-num-seqs + --max-queue gets exactly the excess as 429s with Retry-After, then the server recovers; SIGTERM: /health 503 while a running stream finishes, exit 0', { timeout: T }, async () => {
  // The engine takes no step before all 16 requests reached it: 2 slots + 2 queued are admitted, 12 refused.
  // Each engine step takes >= 15 ms, so the drained stream below is still running while the test probes /health and
  // a late request (a fast stream could finish first; the server then stops listening and the probe saw a reset).
  const s = await startFloe(dir, ['--max-num-seqs', '2', '--max-queue', '2', '--shutdown-grace', '20'], { FLOE_ENGINE_TEST_HOLD: '16', FLOE_ENGINE_STEP_DELAY_MS: '15' });
  await waitHealthy(s);
  const c = new OpenAI({ baseURL: s.url + '/v1', apiKey: 'none', maxRetries: 0 });
  const results = await Promise.allSettled(Array.from({ length: 16 }, (_, i) =>
    c.completions.create({ model: 'tiny', prompt: `flood ${i}`, max_tokens: 40, ignore_eos: true } as OpenAI.CompletionCreateParamsNonStreaming)));
  const ok = results.filter((r) => r.status === 'fulfilled').length;
  const refused = results.flatMap((r) => (r.status === 'rejected' && r.reason instanceof OpenAI.RateLimitError && r.reason.status === 429 ? [r.reason] : []));
  assert.deepEqual({ ok, refused: refused.length }, { ok: 4, refused: 12 });
  for (const e of refused) assert.equal(e.headers?.get('retry-after'), '1');
  const again = await c.completions.create({ model: 'tiny', prompt: 'after the flood', max_tokens: 5 });
  assert.equal(again.choices.length, 1, 'recovered');

  const stream = await c.completions.create({ model: 'tiny', prompt: 'long', max_tokens: 200, ignore_eos: true, stream: true } as OpenAI.CompletionCreateParamsStreaming);
  let tokens = 0;
  let finish: string | null = null;
  for await (const chunk of stream) {
    if (tokens === 0) {
      s.proc.kill('SIGTERM');
      await waitOutput(s, /SIGTERM: stopping/);
      const h = await fetch(s.url + '/health');
      assert.equal(h.status, 503, 'draining: load balancers see 503 while running requests finish');
      assert.deepEqual(await json(h), { status: 'shutting_down' });
      await assert.rejects(c.completions.create({ model: 'tiny', prompt: 'late', max_tokens: 2 }),
        (e: unknown) => e instanceof OpenAI.APIError && e.status === 503 && e.code === 'shutting_down');
    }
    tokens += 1;
    finish = chunk.choices[0]?.finish_reason ?? finish;
  }
  assert.equal(finish, 'length', 'the running stream finished within the grace period');
  assert.equal(await s.exit, 0);
  assert.match(s.out(), /SIGTERM: stopping/);
});

test('a multi-prompt completion refused in part (429) leaves none of its prompts running', { timeout: T }, async () => {
  const s = await startFloe(dir, ['--max-num-seqs', '2', '--max-queue', '1'], { FLOE_ENGINE_STEP_DELAY_MS: '20' });
  await waitHealthy(s);
  const c = new OpenAI({ baseURL: s.url + '/v1', apiKey: 'none', maxRetries: 0 });
  // One long stream holds a slot: of three more prompts, two fit (a free slot, the queue) and the third is refused.
  const long = await c.completions.create({ model: 'tiny', prompt: 'long', max_tokens: 240, ignore_eos: true, stream: true } as OpenAI.CompletionCreateParamsStreaming);
  const it = long[Symbol.asyncIterator]();
  await it.next();
  let longDone = false;
  const rest = (async () => { while (!(await it.next()).done); longDone = true; })();
  await assert.rejects(c.completions.create({ model: 'tiny', prompt: ['a', 'b', 'c'], max_tokens: 200, ignore_eos: true } as OpenAI.CompletionCreateParamsNonStreaming),
    (e: unknown) => e instanceof OpenAI.RateLimitError);
  // Until the engine holds only the long stream again: no clock bound (the test's timeout catches prompts left running).
  let state = '';
  for (;; await new Promise((r) => setTimeout(r, 20))) {
    const [running, waiting] = await Promise.all(['floe_num_requests_running', 'floe_num_requests_waiting'].map((m) => metric(s.url, m)));
    state = `running ${running}, waiting ${waiting}, long stream ${longDone ? 'done' : 'running'}`;
    if (running <= 1 && waiting === 0) break;
  }
  assert.equal(state, 'running 1, waiting 0, long stream running', 'the refused request\'s other prompts were aborted');
  await rest;
  s.proc.kill('SIGTERM');
  assert.equal(await s.exit, 0);
});

test('SIGTERM with a short grace period ends the streams still running with a 503 error event (no made-up finish_reason), then exits 0', { timeout: T }, async () => {
  const s = slow ?? await startFloe(dir, ['--backend', 'reference', '--shutdown-grace', '0.2'], { FLOE_ENGINE_STEP_DELAY_MS: '20' });
  await waitHealthy(s);
  const c = new OpenAI({ baseURL: s.url + '/v1', apiKey: 'none', maxRetries: 0 });
  const stream = await c.completions.create({ model: 'tiny', prompt: 'long', max_tokens: 240, ignore_eos: true, stream: true } as OpenAI.CompletionCreateParamsStreaming);
  const finishes: Array<string | null> = [];
  let error: unknown = null;
  try {
    for await (const chunk of stream) {
      if (finishes.length === 0) s.proc.kill('SIGTERM');
      finishes.push(chunk.choices[0]?.finish_reason ?? null);
    }
  } catch (e) {
    error = e;
  }
  assert.ok(error instanceof OpenAI.APIError && error.code === 'shutting_down', `the stream ended with a shutting_down error event, got ${String(error)}`);
  assert.ok(finishes.every((f) => f === null), `no finish_reason outside OpenAI's set: ${finishes.filter((f) => f !== null).join(',')}`);
  assert.equal(await s.exit, 0);
  // Idle keep-alive connections are closed as streams end, never by the hard cut at grace + 3 s.
  assert.doesNotMatch(s.out(), /cutting the connections/);
});

test('an engine worker that dies mid-stream fails the in-flight request with an error, /health reports it, new requests get 503', { timeout: T }, async () => {
  const s = await startFloe(dir, [], { FLOE_ENGINE_TEST_FAULT: 'exit@6' });
  await waitHealthy(s);
  const c = new OpenAI({ baseURL: s.url + '/v1', apiKey: 'none', maxRetries: 0 });
  const stream = await c.completions.create({ model: 'tiny', prompt: 'doomed', max_tokens: 100, ignore_eos: true, stream: true } as OpenAI.CompletionCreateParamsStreaming);
  let error: unknown = null;
  let chunks = 0;
  try {
    for await (const _ of stream) chunks++;
  } catch (e) {
    error = e;
  }
  assert.ok(chunks < 100, 'the stream did not finish');
  assert.ok(error instanceof OpenAI.APIError && /engine worker exited unexpectedly \(code 70\)/.test(error.message), `error event, got ${String(error)}`);
  const h = await fetch(s.url + '/health');
  assert.equal(h.status, 503);
  const body = await json(h);
  assert.equal(body.status, 'engine_failed');
  assert.match(body.error, /code 70/);
  await assert.rejects(c.completions.create({ model: 'tiny', prompt: 'after', max_tokens: 2 }),
    (e: unknown) => e instanceof OpenAI.APIError && e.status === 503 && /restart the server/.test(e.message));
  await assert.rejects(c.chat.completions.create({ model: 'tiny', messages: [{ role: 'user', content: 'x' }], max_tokens: 2 }),
    (e: unknown) => e instanceof OpenAI.APIError && e.status === 503);
  s.proc.kill('SIGTERM');
  assert.equal(await s.exit, 0);
});

test('start-up checks run before "listening": a missing model path, a directory without config.json, a KV budget below one block', { timeout: T }, async () => {
  const cases: Array<[string[], RegExp]> = [
    [['--model', dir + '/nope'], /--model .*nope: no such file or directory/],
    [['--model', FIXTURES], /has no config\.json/],
    [['--model', dir, '--kv-cache-memory', '1000'], /--kv-cache-memory 1000 bytes holds no KV block/],
    [['--model', dir, '--swap-space', '100TiB'], /--swap-space 102400\.00 GiB is more than this machine's/],
  ];
  for (const [args, re] of cases) {
    const proc = spawn(process.execPath, [BIN, 'serve', '--port', '0', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    procs.push(proc);
    let out = '';
    proc.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
    proc.stderr!.on('data', (d: Buffer) => { out += d.toString(); });
    const code = await new Promise<number | null>((r) => proc.once('exit', (c) => r(c)));
    assert.equal(code, 1, out);
    assert.match(out, re);
    assert.doesNotMatch(out, /listening/);
  }
});
