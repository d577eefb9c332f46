// vLLM's Score API (/score, /v1/score) and Rerank API (/rerank, /v1/rerank, /v2/rerank) as a RAG user meets them on
// `floe serve --embedding-model`: every score is checked against an independent oracle, the cosine similarity the
// test computes from the /v1/embeddings vectors of the same texts (official `openai` client); the routes themselves
// are not OpenAI's, so they are called with fetch.

import { before, test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { repoPath } from '../repo.js';
import { serverProcs, startFloeServe, type Floe } from './floe-process.js';

const BUILT = repoPath('dist/src/serve/score-routes.js');
const CHAT = repoPath('models/floe-brown');
const EMBED = repoPath('models/floe-embed');
const KEY = 'sk-score-test';
const ORIGIN = 'http://rag.example';
const T = 120_000;
const procs = serverProcs();

const QUERY = 'a small boat on the river';
const DOCS = ['Prices rose sharply in the spring.', 'The fishing boats came back to the harbour.', 'The jury praised the election.', 'a little boat drifting down the river'];
const LONG = 'word '.repeat(600); // past floe-embed's 512 tokens

let f: Floe, embedOnly: Floe, chatOnly: Floe, oai: OpenAI;
before(async () => {
  [f, embedOnly, chatOnly] = await Promise.all([
    startFloeServe(null, { built: BUILT, procs, args: ['--model', CHAT, '--model-name', 'chat', '--embedding-model', EMBED, '--api-key', KEY, '--allowed-origins', ORIGIN, '--kv-cache-memory', '64MiB'] }),
    startFloeServe(null, { built: BUILT, procs, args: ['--model', EMBED, '--task', 'embed', '--kv-cache-memory', '64MiB'] }),
    startFloeServe(null, { built: BUILT, procs, args: ['--model', CHAT, '--model-name', 'chat', '--kv-cache-memory', '64MiB'] }),
  ]);
  oai = new OpenAI({ baseURL: f.url + '/v1', apiKey: KEY, maxRetries: 0 });
}, { timeout: T });

interface Answer { status: number; body: any; headers: Headers }
async function post(s: Floe, path: string, body: unknown, headers: Record<string, string> = { authorization: `Bearer ${KEY}` }): Promise<Answer> {
  const r = await fetch(s.url + path, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });
  return { status: r.status, body: await r.json(), headers: r.headers };
}

/** The oracle: each text's /v1/embeddings vector (alone) and token count. */
async function embed(text: string, extra: Record<string, unknown> = {}): Promise<{ v: number[]; tokens: number }> {
  const r = await oai.embeddings.create({ model: 'floe-embed', input: text, encoding_format: 'float', ...extra } as OpenAI.EmbeddingCreateParams);
  return { v: r.data[0]!.embedding, tokens: r.usage.prompt_tokens };
}
function cos(a: readonly number[], b: readonly number[]): number {
  let ab = 0, aa = 0, bb = 0;
  for (let i = 0; i < a.length; i++) { ab += a[i]! * b[i]!; aa += a[i]! * a[i]!; bb += b[i]! * b[i]!; }
  return ab / Math.sqrt(aa * bb);
}
function close(got: number, want: number, what: string): void {
  assert.ok(Math.abs(got - want) < 1e-5, `${what}: ${got} vs the oracle's ${want}`);
}

test('score 1:N: each text_2 against text_1 is the cosine of their /v1/embeddings vectors; usage counts each pair\'s tokens, as vLLM; /score and /v1/score alike', { timeout: T }, async () => {
  const q = await embed(QUERY);
  const docs = await Promise.all(DOCS.map((d) => embed(d)));
  for (const path of ['/score', '/v1/score']) {
    for (const model of [undefined, 'floe-embed']) {
      const r = await post(f, path, { model, text_1: QUERY, text_2: DOCS });
      assert.equal(r.status, 200, JSON.stringify(r.body));
      assert.match(r.body.id, /^score-[0-9a-f]{32}$/);
      assert.equal(r.body.object, 'list');
      assert.equal(r.body.model, 'floe-embed');
      assert.ok(Number.isInteger(r.body.created) && Math.abs(r.body.created - Date.now() / 1000) < 60);
      assert.equal(r.body.data.length, DOCS.length);
      r.body.data.forEach((d: any, i: number) => {
        assert.deepEqual(Object.keys(d), ['index', 'object', 'score']);
        assert.equal(d.index, i);
        assert.equal(d.object, 'score');
        close(d.score, cos(q.v, docs[i]!.v), `${path} pair ${i}`);
      });
      const tokens = DOCS.length * q.tokens + docs.reduce((s, d) => s + d.tokens, 0);
      assert.deepEqual(r.body.usage, { prompt_tokens: tokens, total_tokens: tokens });
    }
  }
  // one string each side is one pair; a one-element text_1 list is 1:N too
  const one = await post(f, '/score', { text_1: QUERY, text_2: DOCS[3] });
  close(one.body.data[0].score, cos(q.v, docs[3]!.v), '1:1');
  const listed = await post(f, '/score', { text_1: [QUERY], text_2: DOCS });
  assert.equal(listed.body.data.length, DOCS.length);
  listed.body.data.forEach((d: any, i: number) => close(d.score, cos(q.v, docs[i]!.v), `[text_1] pair ${i}`));
});

test('score N:N pairs the lists in order; vLLM\'s other names for the two sides (data_1/data_2, queries/documents, queries/items) score the same', { timeout: T }, async () => {
  const left = [QUERY, DOCS[0]!, DOCS[2]!];
  const right = [DOCS[3]!, DOCS[1]!, 'The jury praised the candidate.'];
  const a = await Promise.all(left.map((t) => embed(t)));
  const b = await Promise.all(right.map((t) => embed(t)));
  const want = a.map((x, i) => cos(x.v, b[i]!.v));
  const tokens = [...a, ...b].reduce((s, x) => s + x.tokens, 0);
  for (const [k1, k2] of [['text_1', 'text_2'], ['data_1', 'data_2'], ['queries', 'documents'], ['queries', 'items']]) {
    const r = await post(f, '/score', { [k1!]: left, [k2!]: right });
    assert.equal(r.status, 200, `${k1}/${k2}: ${JSON.stringify(r.body)}`);
    assert.deepEqual(r.body.data.map((d: any) => d.index), [0, 1, 2]);
    r.body.data.forEach((d: any, i: number) => close(d.score, want[i]!, `${k1}/${k2} pair ${i}`));
    assert.equal(r.body.usage.prompt_tokens, tokens);
  }
});

test('rerank: results ranked as the oracle ranks the documents, with its scores; top_n keeps the best n; return_documents; /rerank, /v1/rerank and /v2/rerank alike', { timeout: T }, async () => {
  const q = await embed(QUERY);
  const docs = await Promise.all(DOCS.map((d) => embed(d)));
  const scores = docs.map((d) => cos(q.v, d.v));
  const order = scores.map((s, i) => [s, i] as const).sort((x, y) => y[0] - x[0]).map(([, i]) => i);
  for (let k = 1; k < order.length; k++) assert.ok(scores[order[k - 1]!]! - scores[order[k]!]! > 1e-4, 'the oracle\'s scores are apart enough to rank');
  const tokens = DOCS.length * q.tokens + docs.reduce((s, d) => s + d.tokens, 0);
  for (const path of ['/rerank', '/v1/rerank', '/v2/rerank']) {
    const r = await post(f, path, { model: 'floe-embed', query: QUERY, documents: DOCS });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.match(r.body.id, /^rerank-[0-9a-f]{32}$/);
    assert.equal(r.body.model, 'floe-embed');
    assert.deepEqual(r.body.usage, { prompt_tokens: tokens, total_tokens: tokens });
    assert.deepEqual(r.body.results.map((x: any) => x.index), order, path);
    for (const x of r.body.results) {
      assert.deepEqual(x.document, { text: DOCS[x.index] });
      close(x.relevance_score, scores[x.index]!, `${path} document ${x.index}`);
    }
  }
  const top = await post(f, '/rerank', { query: QUERY, documents: DOCS, top_n: 2 });
  assert.deepEqual(top.body.results.map((x: any) => x.index), order.slice(0, 2));
  assert.equal(top.body.usage.prompt_tokens, tokens, 'every document is scored, whatever top_n keeps');
  for (const n of [0, DOCS.length + 3]) {
    assert.deepEqual((await post(f, '/rerank', { query: QUERY, documents: DOCS, top_n: n })).body.results.map((x: any) => x.index), order, `top_n ${n}: all`);
  }
  const bare = await post(f, '/rerank', { query: QUERY, documents: DOCS, return_documents: false });
  assert.deepEqual(bare.body.results.map((x: any) => Object.keys(x)), order.map(() => ['index', 'relevance_score']));
  // Jina's and Cohere's document objects: the text is ranked, the document echoed as {text}
  const objs = await post(f, '/rerank', { query: QUERY, documents: DOCS.map((text, i) => ({ text, id: i })) });
  assert.deepEqual(objs.body.results.map((x: any) => [x.index, x.document]), order.map((i) => [i, { text: DOCS[i] }]));
  objs.body.results.forEach((x: any) => close(x.relevance_score, scores[x.index]!, `object document ${x.index}`));
});

test('an input over the model\'s max tokens is a 400 naming it, as on /v1/embeddings; truncate_prompt_tokens keeps its first k tokens, as /v1/embeddings does', { timeout: T }, async () => {
  const over = await post(f, '/rerank', { query: QUERY, documents: [DOCS[0], LONG] });
  assert.equal(over.status, 400);
  assert.equal(over.body.error.param, 'documents[1]');
  assert.equal(over.body.error.code, 'context_length_exceeded');
  assert.match(over.body.error.message, /at most 512/);
  const over1 = await post(f, '/score', { text_1: LONG, text_2: DOCS });
  assert.deepEqual([over1.status, over1.body.error.param, over1.body.error.code], [400, 'text_1', 'context_length_exceeded']);

  const q = await embed(QUERY, { truncate_prompt_tokens: 16 });
  const long = await embed(LONG, { truncate_prompt_tokens: 16 });
  const cut = await post(f, '/rerank', { query: QUERY, documents: [LONG], truncate_prompt_tokens: 16 });
  assert.equal(cut.status, 200, JSON.stringify(cut.body));
  close(cut.body.results[0].relevance_score, cos(q.v, long.v), 'truncated pair');
  assert.equal(cut.body.usage.prompt_tokens, q.tokens + 16);
  for (const v of [0, -2, 1.5, 'all', 100_000]) {
    const r = await post(f, '/score', { text_1: QUERY, text_2: LONG, truncate_prompt_tokens: v });
    assert.deepEqual([r.status, r.body.error.param], [400, 'truncate_prompt_tokens'], `truncate_prompt_tokens ${v}`);
  }
});

test('malformed requests: a 400 naming the field (404 for a model that does not exist), before any engine work', { timeout: T }, async () => {
  const cases: Array<[string, unknown, number, string | null, string]> = [
    ['/rerank', { documents: DOCS }, 400, 'query', 'missing_required_parameter'],
    ['/rerank', { query: QUERY }, 400, 'documents', 'missing_required_parameter'],
    ['/rerank', { query: null, documents: DOCS }, 400, 'query', 'missing_required_parameter'],
    ['/score', { text_2: DOCS }, 400, 'text_1', 'missing_required_parameter'],
    ['/score', { text_1: QUERY }, 400, 'text_2', 'missing_required_parameter'],
    ['/score', {}, 400, 'text_1', 'missing_required_parameter'],
    ['/score', { queries: QUERY }, 400, 'documents', 'missing_required_parameter'],
    ['/score', { text_1: QUERY, documents: DOCS }, 400, 'documents', 'invalid_value'],
    ['/score', { text_1: [QUERY, DOCS[0]], text_2: DOCS }, 400, 'text_2', 'invalid_value'], // 2:4
    ['/score', { text_1: DOCS, text_2: QUERY }, 400, 'text_2', 'invalid_value'], // N:1
    ['/score', { text_1: [], text_2: DOCS }, 400, 'text_1', 'invalid_value'],
    ['/score', { text_1: QUERY, text_2: [] }, 400, 'text_2', 'invalid_value'],
    ['/rerank', { query: QUERY, documents: [] }, 400, 'documents', 'invalid_value'],
    ['/rerank', { query: [QUERY], documents: DOCS }, 400, 'query', 'invalid_type'],
    ['/rerank', { query: 7, documents: DOCS }, 400, 'query', 'invalid_type'],
    ['/rerank', { query: '', documents: DOCS }, 400, 'query', 'invalid_value'],
    ['/rerank', { query: QUERY, documents: 5 }, 400, 'documents', 'invalid_type'],
    ['/rerank', { query: QUERY, documents: [DOCS[0], 3] }, 400, 'documents[1]', 'invalid_type'],
    ['/rerank', { query: QUERY, documents: [DOCS[0], ''] }, 400, 'documents[1]', 'invalid_value'],
    ['/rerank', { query: QUERY, documents: [{ text: 3 }] }, 400, 'documents[0].text', 'invalid_type'],
    ['/rerank', { query: QUERY, documents: [{ content: [{ type: 'text', text: 'x' }] }] }, 400, 'documents[0]', 'invalid_type'],
    ['/score', { text_1: QUERY, text_2: [{ text: 'x' }] }, 400, 'text_2[0]', 'invalid_type'],
    ['/score', { text_1: 3, text_2: DOCS }, 400, 'text_1', 'invalid_type'],
    ['/score', { text_1: QUERY, text_2: [[1, 2]] }, 400, 'text_2[0]', 'invalid_type'],
    ['/rerank', { query: QUERY, documents: DOCS, top_n: -1 }, 400, 'top_n', 'invalid_value'],
    ['/rerank', { query: QUERY, documents: DOCS, top_n: '2' }, 400, 'top_n', 'invalid_type'],
    ['/rerank', { query: QUERY, documents: DOCS, top_n: 1.5 }, 400, 'top_n', 'invalid_type'],
    ['/rerank', { query: QUERY, documents: DOCS, return_documents: 'yes' }, 400, 'return_documents', 'invalid_type'],
    ['/rerank', { query: QUERY, documents: DOCS, rank_fields: ['text'] }, 400, 'rank_fields', 'unknown_parameter'],
    ['/score', { text_1: QUERY, text_2: DOCS, encoding_format: 'float' }, 400, 'encoding_format', 'unknown_parameter'],
    ['/score', { model: 3, text_1: QUERY, text_2: DOCS }, 400, 'model', 'invalid_type'],
    ['/rerank', 'not an object', 400, null, 'invalid_body'],
    // the chat model embeds on /v1/embeddings, but is no embedding model: scoring with it is refused
    ['/rerank', { model: 'chat', query: QUERY, documents: DOCS }, 400, 'model', 'model_not_supported'],
    ['/score', { model: 'chat', text_1: QUERY, text_2: DOCS }, 400, 'model', 'model_not_supported'],
    ['/v2/rerank', { model: 'bge-reranker-v2-m3', query: QUERY, documents: DOCS }, 404, 'model', 'model_not_found'],
    ['/score', { model: 'text-embedding-3-small', text_1: QUERY, text_2: DOCS }, 404, 'model', 'model_not_found'],
  ];
  const embedded = async () => Number(/^floe_prompt_tokens_total (\S+)$/m.exec(await (await fetch(f.url + '/metrics')).text())![1]);
  const before = await embedded();
  for (const [path, body, status, param, code] of cases) {
    const r = await post(f, path, body);
    const what = `${path} ${JSON.stringify(body).slice(0, 90)}`;
    assert.equal(r.status, status, `${what}: ${JSON.stringify(r.body)}`);
    assert.deepEqual({ ...r.body.error, message: '' }, { message: '', type: 'invalid_request_error', param, code }, what);
    if (param !== null) assert.ok(r.body.error.message.includes(param.replace(/\[\d+\].*$/, '')), `${what}: the message names ${param}: ${r.body.error.message}`);
  }
  assert.equal(await embedded(), before, 'no refused request reached the engine');
  const chat = await post(f, '/rerank', { model: 'chat', query: QUERY, documents: DOCS });
  assert.match(chat.body.error.message, /'chat' is a generative model, not an embedding model.*"model": "floe-embed"/);
});

test('which model scores: --task embed scores with the served model; a server without an embedding model says how to start one', { timeout: T }, async () => {
  const q = await embed(QUERY);
  const d = await embed(DOCS[3]!);
  for (const model of [undefined, 'floe-embed']) {
    const r = await post(embedOnly, '/rerank', { model, query: QUERY, documents: [DOCS[3]] }, {});
    assert.equal(r.status, 200, JSON.stringify(r.body));
    close(r.body.results[0].relevance_score, cos(q.v, d.v), `--task embed, model ${model}`);
  }
  assert.equal((await post(embedOnly, '/score', { model: 'chat', text_1: QUERY, text_2: DOCS }, {})).status, 404);
  for (const [path, body] of [['/score', { text_1: QUERY, text_2: DOCS }], ['/rerank', { model: 'chat', query: QUERY, documents: DOCS }]] as const) {
    const r = await post(chatOnly, path, body, {});
    assert.deepEqual([r.status, r.body.error.param, r.body.error.code], [400, 'model', 'model_not_supported'], path);
    assert.match(r.body.error.message, /--embedding-model/);
  }
});

test('as the other routes: the API key guards every path, errors and answers carry x-request-id and CORS headers, /metrics counts requests and embedded tokens', { timeout: T }, async () => {
  const body = { query: QUERY, documents: DOCS.slice(0, 2) };
  for (const path of ['/score', '/v1/score', '/rerank', '/v1/rerank', '/v2/rerank']) {
    const b = path.endsWith('score') ? { text_1: QUERY, text_2: DOCS.slice(0, 2) } : body;
    const none = await post(f, path, b, {});
    assert.deepEqual([none.status, none.body.error.code], [401, 'invalid_api_key'], `${path} without a key`);
    const wrong = await post(f, path, b, { authorization: 'Bearer nope' });
    assert.equal(wrong.status, 401, `${path} with a wrong key`);
    const ok = await post(f, path, b, { authorization: `Bearer ${KEY}`, origin: ORIGIN });
    assert.equal(ok.status, 200, path);
    assert.match(ok.headers.get('x-request-id') ?? '', /^req_/);
    assert.equal(ok.headers.get('access-control-allow-origin'), ORIGIN, `${path}: CORS`);
    const bad = await post(f, path, {}, { authorization: `Bearer ${KEY}`, origin: ORIGIN });
    assert.equal(bad.status, 400);
    assert.match(bad.headers.get('x-request-id') ?? '', /^req_/);
    assert.equal(bad.headers.get('access-control-allow-origin'), ORIGIN, `${path}: CORS on an error`);
  }
  const pre = await fetch(f.url + '/v2/rerank', { method: 'OPTIONS', headers: { origin: ORIGIN, 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization,content-type' } });
  assert.equal(pre.status, 204);
  assert.equal(pre.headers.get('access-control-allow-origin'), ORIGIN);

  const metrics = async () => (await fetch(f.url + '/metrics')).text();
  const count = (text: string, re: RegExp) => Number(re.exec(text)?.[1] ?? 0);
  const requests = (text: string, route: string, status: number) => count(text, new RegExp(`^floe_http_requests_total\\{route="${route.replaceAll('/', '\\/')}",status="${status}"\\} (\\S+)$`, 'm'));
  const prompt = (text: string) => count(text, /^floe_prompt_tokens_total (\S+)$/m);
  const m0 = await metrics();
  const q = await embed(QUERY);
  const docs = await Promise.all(body.documents.map((t) => embed(t)));
  const m1 = await metrics();
  const r = await post(f, '/v2/rerank', body);
  await post(f, '/v2/rerank', { query: QUERY });
  const m2 = await metrics();
  assert.equal(requests(m2, '/v2/rerank', 200) - requests(m0, '/v2/rerank', 200), 1);
  assert.equal(requests(m2, '/v2/rerank', 400) - requests(m1, '/v2/rerank', 400), 1);
  // the engine embedded the query once and each document once; usage counts the query once per pair, as vLLM
  assert.equal(prompt(m2) - prompt(m1), q.tokens + docs[0]!.tokens + docs[1]!.tokens);
  assert.equal(r.body.usage.prompt_tokens, 2 * q.tokens + docs[0]!.tokens + docs[1]!.tokens);
});
