// RAG over HTTP on the built-in models (chat: floe-brown; embedding engine: floe-embed): collections, documents
// (JSON text and a multipart file), /v1/rag/query, and chat completions with the `rag` extra body field through the
// official `openai` client: passages injected into the prompt, citations returned (plain and streamed).

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import OpenAI from 'openai';
import { startServer, type RunningServer } from '../../src/serve/server.js';
import { createApp } from '../../src/serve/app.js';
import { openEmbedder } from '../../src/platform/rag/embedder.js';
import { RagStore } from '../../src/platform/rag/store.js';
import { brownTokenizer, hashEmbedder, randomText, rng } from '../platform/rag-helpers.js';
import { byteTokenizer, FakeEngine } from './helpers.js';
import { repoPath } from '../repo.js';

const BROWN = repoPath('models/floe-brown');
const EMBED = repoPath('models/floe-embed');
const T = 120_000;
let server: RunningServer;
const DB = join(mkdtempSync(join(tmpdir(), 'floe-rag-http-')), 'db');

before(async () => {
  server = await startServer({
    model: BROWN, modelName: 'chat', port: 0, threads: 1, log: () => {}, ui: false, dataDir: null, kvCacheMemory: 64 * 2 ** 20,
    ragDb: DB, embeddingModel: EMBED,
  });
  await server.ready;
});
after(async () => { await server?.close(0); });

const call = async (method: string, path: string, body?: unknown) => {
  const r = await fetch(server.url + path, { method, headers: body === undefined ? {} : { 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
  return { status: r.status, json: await r.json() as Record<string, any> };
};

test('HTTP RAG: collections, documents, query, chat with rag → citations; errors', { timeout: T }, async () => {
  const r = rng((Date.now() ^ 0x42) >>> 0);
  const created = await call('POST', '/v1/rag/collections', { name: 'docs' });
  assert.equal(created.status, 200, JSON.stringify(created.json));
  assert.equal(created.json.dim, 256);
  assert.equal((await call('POST', '/v1/rag/collections', { name: 'docs' })).json.error.code, 'collection_exists');
  const a = `${randomText(r, 3)}\n\nThe zyxoquartz crystal glows green in the dark mine.\n\n${randomText(r, 3)}`;
  const add = await call('POST', '/v1/rag/collections/docs/documents', { documents: [{ source: 'a.txt', text: a }, { source: 'b.md', text: `# Boats\n\n${randomText(r, 2)}` }] });
  assert.deepEqual(add.json.added, ['a.txt', 'b.md']);
  const form = new FormData();
  form.append('file', new Blob(['<p>Cats &amp; dogs sleep by the fire.</p>'], { type: 'text/html' }), 'c.html');
  const up = await fetch(server.url + '/v1/rag/collections/docs/documents', { method: 'POST', body: form });
  assert.deepEqual(((await up.json()) as { added: string[] }).added, ['c.html']);
  const bad = await call('POST', '/v1/rag/collections/docs/documents', { source: 'x.pdf', text: 'abc' });
  assert.equal(bad.status, 400);
  assert.match(bad.json.error.message, /unsupported file type '.pdf'/);
  const list = await call('GET', '/v1/rag/collections');
  assert.deepEqual(list.json.data.map((c: { name: string; documents: number }) => [c.name, c.documents]), [['docs', 3]]);

  const q = await call('POST', '/v1/rag/query', { collection: 'docs', query: 'zyxoquartz', mode: 'bm25', k: 2 });
  assert.equal(q.json.data[0].source, 'a.txt');
  assert.equal(a.slice(q.json.data[0].start, q.json.data[0].end), q.json.data[0].text);
  const missing = await call('POST', '/v1/rag/query', { collection: 'nope', query: 'x' });
  assert.equal(missing.status, 404);
  // it names the collections there are, and not where the server keeps them
  assert.match(missing.json.error.message, /^collection 'nope' does not exist on this server \(it has .*'docs'/);
  assert.ok(!missing.json.error.message.includes(DB) && !missing.json.error.message.includes(tmpdir()), missing.json.error.message);
  assert.equal((await call('POST', '/v1/rag/query', { collection: 'docs', query: 'x', mode: 'fuzzy' })).json.error.param, 'mode');
  // a misspelt or unsupported option is refused, not silently ignored (as guardrails' are)
  const typo = await call('POST', '/v1/rag/query', { collection: 'docs', query: 'x', top_k: 3 });
  assert.deepEqual([typo.status, typo.json.error.param, typo.json.error.code], [400, 'top_k', 'unknown_parameter']);
  // where: a structured filter selects by metadata; raw SQL and malformed conditions are 400s naming the part
  for (const mode of ['vector', 'bm25', 'hybrid']) {
    const only = await call('POST', '/v1/rag/query', { collection: 'docs', query: 'the mine and the boats', mode, k: 20, where: { field: 'source', op: 'in', value: ['b.md', "it's.txt"] } });
    assert.equal(only.status, 200, JSON.stringify(only.json));
    assert.ok(only.json.data.length > 0 && only.json.data.every((p: { source: string }) => p.source === 'b.md'), mode);
  }
  // weighted fusion: with BM25's weight 0 the hybrid ranking is the dense one
  const dOnly = await call('POST', '/v1/rag/query', { collection: 'docs', query: 'the boats in the mine', mode: 'hybrid', k: 4, weights: [1, 0], rrf_k: 10 });
  const vec = await call('POST', '/v1/rag/query', { collection: 'docs', query: 'the boats in the mine', mode: 'vector', k: 4 });
  assert.deepEqual(dOnly.json.data.map((p: { id: string }) => p.id), vec.json.data.map((p: { id: string }) => p.id));
  assert.equal(dOnly.json.data[0].score, 1 / 11);
  assert.equal((await call('POST', '/v1/rag/query', { collection: 'docs', query: 'x', weights: [1] })).json.error.param, 'weights');
  assert.equal((await call('POST', '/v1/rag/query', { collection: 'docs', query: 'x', rrf_k: -1 })).json.error.param, 'rrf_k');
  const sql = await call('POST', '/v1/rag/query', { collection: 'docs', query: 'x', where: "source = 'a.txt' OR 1=1" });
  assert.deepEqual([sql.status, sql.json.error.param, sql.json.error.code], [400, 'where', 'invalid_filter']);
  assert.match(sql.json.error.message, /raw SQL is not accepted/);
  const badField = await call('POST', '/v1/rag/query', { collection: 'docs', query: 'x', where: [{ field: 'source', value: 'a.txt' }, { field: 'vector', op: '=', value: 'a' }] });
  assert.deepEqual([badField.status, badField.json.error.param], [400, 'where[1].field']);
  const badInt = await call('POST', '/v1/rag/query', { collection: 'docs', query: 'x', where: { field: 'chunk', op: '>', value: '0; DROP TABLE docs' } });
  assert.deepEqual([badInt.status, badInt.json.error.param], [400, 'where.value']);

  const question = 'What glows green in the dark mine?';
  const hybrid = await call('POST', '/v1/rag/query', { collection: 'docs', query: question, k: 3 });
  const client = new OpenAI({ baseURL: server.url + '/v1', apiKey: 'none' });
  const body = {
    model: 'chat', messages: [{ role: 'user' as const, content: question }], max_tokens: 8, temperature: 0,
    rag: { collection: 'docs', k: 3 }, return_token_ids: true,
  };
  const chat = await client.chat.completions.create(body as OpenAI.ChatCompletionCreateParamsNonStreaming) as OpenAI.ChatCompletion & {
    citations: Array<{ index: number; id: string; source: string; start: number; end: number; cited: boolean }>; prompt_token_ids: number[];
  };
  assert.deepEqual(chat.citations.map((c) => c.id), hybrid.json.data.map((p: { id: string }) => p.id));
  const prompt = (await brownTokenizer()).decode(chat.prompt_token_ids);
  hybrid.json.data.forEach((p: { source: string; text: string }, i: number) => assert.ok(prompt.includes(`[${i + 1}] (${p.source}) ${p.text}`), `passage ${i + 1} in the prompt`));
  assert.ok(prompt.includes(question));
  // the same chat without rag: no citations, no passages
  const plain = await client.chat.completions.create({ ...body, rag: undefined } as OpenAI.ChatCompletionCreateParamsNonStreaming) as OpenAI.ChatCompletion & { citations?: unknown };
  assert.equal(plain.citations, undefined);
  assert.ok(plain.usage!.prompt_tokens < chat.usage!.prompt_tokens);
  // streamed: the finishing chunk carries the citations, and the text equals the non-streamed greedy answer
  const stream = await client.chat.completions.create({ ...body, stream: true } as OpenAI.ChatCompletionCreateParamsStreaming);
  let text = '', cits: unknown = null;
  for await (const ch of stream) {
    text += ch.choices[0]?.delta?.content ?? '';
    if ((ch as { citations?: unknown }).citations) cits = (ch as { citations?: unknown }).citations;
  }
  assert.equal(text, chat.choices[0]!.message.content);
  assert.deepEqual(cits, chat.citations);
  await assert.rejects(client.chat.completions.create({ ...body, rag: { collection: 'nope' } } as OpenAI.ChatCompletionCreateParamsNonStreaming),
    (e: unknown) => e instanceof OpenAI.APIError && e.status === 404 && /collection 'nope' does not exist/.test(e.message));
  await assert.rejects(client.chat.completions.create({ ...body, rag: { collection: 'docs', rrf_k: 10 } } as OpenAI.ChatCompletionCreateParamsNonStreaming),
    (e: unknown) => e instanceof OpenAI.APIError && e.status === 400 && /unrecognized argument 'rag.rrf_k'/.test(e.message));
  await assert.rejects(client.chat.completions.create({ ...body, rag: { collection: 'docs', k: 0 } } as OpenAI.ChatCompletionCreateParamsNonStreaming),
    (e: unknown) => e instanceof OpenAI.APIError && e.status === 400 && /rag.k/.test(e.message));
  await assert.rejects(client.chat.completions.create({ ...body, rag: { collection: 'docs', where: 'chunk > 0' } } as OpenAI.ChatCompletionCreateParamsNonStreaming),
    (e: unknown) => e instanceof OpenAI.APIError && e.status === 400 && /'rag.where' must be a structured filter/.test(e.message));
  const filtered = await client.chat.completions.create({ ...body, rag: { collection: 'docs', k: 3, where: { field: 'source', op: 'prefix', value: 'c.' } } } as OpenAI.ChatCompletionCreateParamsNonStreaming) as OpenAI.ChatCompletion & { citations: Array<{ source: string }> };
  assert.ok(filtered.citations.length > 0 && filtered.citations.every((c) => c.source === 'c.html'));

  // the server's engine embeds as the library's Embedder does: a collection ingested over HTTP serves CLI/library queries
  const store = await RagStore.open(DB);
  const col = await store.collection('docs');
  assert.equal(col.embedderName, resolve(EMBED));
  const lib = await openEmbedder(EMBED, { threads: 1 });
  for (const p of hybrid.json.data as Array<{ id: string; text: string }>) {
    const [v] = await lib.embed([p.text]);
    const top = await col.dense(v!, 1, null);
    assert.equal(top[0]!.id, p.id);
    assert.ok(top[0]!.score > 0.999, `library vector vs stored: cosine ${top[0]!.score}`);
  }
  store.close();

  const del = await call('DELETE', '/v1/rag/collections/docs/documents?source=b.md');
  assert.deepEqual([del.json.deleted, (await call('GET', '/v1/rag/collections/docs')).json.documents], [true, 2]);
  assert.equal((await call('DELETE', '/v1/rag/collections/docs/documents?source=b.md')).status, 404);
  assert.equal((await call('DELETE', '/v1/rag/collections/docs')).json.deleted, true);
  assert.deepEqual((await call('GET', '/v1/rag/collections')).json.data, []);
});

test('HTTP RAG: a collection embedded by another model (same dimension) is refused for dense search unless allow_embedder_mismatch', { timeout: T }, async () => {
  const store = await RagStore.open(DB);
  const other = hashEmbedder(await brownTokenizer(), 256, 128, '/nowhere/other-embedder');
  const col = await store.create('foreign', other);
  await col.ingest([{ source: 'f.txt', content: 'The zyxoquartz crystal glows green in the dark mine.' }], other);
  store.close();
  for (const mode of ['vector', 'hybrid']) {
    const q = await call('POST', '/v1/rag/query', { collection: 'foreign', query: 'what glows?', mode });
    assert.equal(q.status, 400, JSON.stringify(q.json));
    assert.equal(q.json.error.code, 'embedder_mismatch');
    assert.match(q.json.error.message, /collection 'foreign' was embedded by '\/nowhere\/other-embedder', not by '.*floe-embed'/);
  }
  assert.equal((await call('POST', '/v1/rag/query', { collection: 'foreign', query: 'zyxoquartz', mode: 'bm25' })).status, 200);
  const allowed = await call('POST', '/v1/rag/query', { collection: 'foreign', query: 'what glows?', mode: 'vector', allow_embedder_mismatch: true });
  assert.equal(allowed.status, 200, JSON.stringify(allowed.json));
  assert.equal(allowed.json.data.length, 1);
  assert.equal((await call('POST', '/v1/rag/query', { collection: 'foreign', query: 'x', allow_embedder_mismatch: 'yes' })).status, 400);
  const chat = (rag: Record<string, unknown>) => call('POST', '/v1/chat/completions', { model: 'chat', max_tokens: 2, messages: [{ role: 'user', content: 'what glows?' }], rag });
  const refused = await chat({ collection: 'foreign' });
  assert.equal(refused.status, 400);
  assert.equal(refused.json.error.code, 'embedder_mismatch');
  const ok = await chat({ collection: 'foreign', allow_embedder_mismatch: true });
  assert.equal(ok.status, 200, JSON.stringify(ok.json));
  assert.equal(ok.json.citations.length, 1);
  assert.equal((await call('DELETE', '/v1/rag/collections/foreign')).json.deleted, true);
});

// Refusals name the field they are about in error.param; before, these all said param 'body' (and a 'kind' without an
// extension said "markdown: unsupported file type '(none)'").
test('HTTP RAG: a refused collection name, query, document or kind names its field', { timeout: T }, async () => {
  assert.equal((await call('POST', '/v1/rag/collections', { name: 'fields' })).status, 200);
  const cases: Array<[string, string, unknown, string, RegExp]> = [
    ['POST', '/v1/rag/collections', { name: '../x' }, 'name', /invalid collection name "..\/x"/],
    ['POST', '/v1/rag/query', { collection: 'a b', query: 'x' }, 'collection', /invalid collection name "a b"/],
    ['POST', '/v1/rag/query', { collection: 'fields', query: '  \n ' }, 'query', /the query is empty/],
    ['POST', '/v1/rag/collections/fields/documents', { documents: [{ source: 'a.txt', text: 'x' }, { source: 'a.txt', text: 'y' }] }, 'documents', /a.txt: given twice/],
    ['POST', '/v1/rag/collections/fields/documents', { source: 'b.pdf', text: 'x' }, 'documents', /b.pdf: unsupported file type '.pdf'/],
    ['POST', '/v1/rag/collections/fields/documents', { source: 'c.html', text: '<script>x</script>' }, 'documents', /c.html: the document is empty/],
    ['POST', '/v1/rag/collections/fields/documents', { documents: [{ source: 'wiki/7', kind: 'markdown', text: '# T' }] }, 'documents[0].kind', /'documents\[0\].kind' is a file name whose extension picks the parser/],
  ];
  for (const [method, path, body, param, re] of cases) {
    const r = await call(method, path, body);
    assert.deepEqual([r.status, r.json.error?.param], [400, param], `${path} ${JSON.stringify(body)}: ${JSON.stringify(r.json)}`);
    assert.match(r.json.error.message, re);
  }
  assert.equal((await call('POST', '/v1/rag/collections/fields/documents', { source: 'wiki/8', kind: 'page.MD', text: '# Title\n\nbody' })).status, 200);
  // multipart refusals said @fastify/multipart's 'reach files limit' / 'request file too large' with param and code null
  const upload = async (files: Array<[string, string | Uint8Array]>) => {
    const form = new FormData();
    for (const [name, data] of files) form.append('file', new Blob([data]), name);
    const r = await fetch(server.url + '/v1/rag/collections/fields/documents', { method: 'POST', body: form });
    return { status: r.status, json: await r.json() as Record<string, any> };
  };
  const two = await upload([['a.txt', 'one'], ['b.txt', 'two']]);
  assert.deepEqual([two.status, two.json.error.param, two.json.error.message], [400, 'file', 'send one document per request: the multipart body has more than one file part']);
  const big = await upload([['big.txt', new Uint8Array(16 * 2 ** 20 + 1).fill(97)]]);
  assert.deepEqual([big.status, big.json.error.param, big.json.error.code], [413, 'file', 'file_too_large']);
  assert.match(big.json.error.message, /big.txt is larger than the 16 MiB an upload may be/);
  assert.equal((await call('DELETE', '/v1/rag/collections/fields')).status, 200);
});

// A query reads the collection's files while it runs: DELETE (or `floe rag delete` in another process) removing them
// under it made the query, and a chat with rag on it, a 500 'internal error: … lance error: Not found: …/data/….lance'.
// Now the request that lost its collection is the 404 a query on a missing collection gets.
test('HTTP RAG: dropping a collection while queries and chats with rag on it are in flight: each is a 200 or a 404, never a 500', { timeout: T }, async () => {
  const r = rng((Date.now() ^ 0x77) >>> 0);
  const client = new OpenAI({ baseURL: server.url + '/v1', apiKey: 'none', maxRetries: 0 });
  const seen: Record<string, number> = {};
  for (let round = 0; round < 3; round++) {
    assert.equal((await call('POST', '/v1/rag/collections', { name: 'gone' })).status, 200);
    // 16 documents of 2 paragraphs (they were 8: embedding them on one thread took ~7 s a round, the race under 0.3 s);
    // with the 404 mapping removed, the queries still meet the drop and answer 500 (five runs of five)
    const documents = Array.from({ length: 16 }, (_, i) => ({ source: `d${i}.txt`, text: randomText(r, 2) }));
    assert.equal((await call('POST', '/v1/rag/collections/gone/documents', { documents })).status, 200);
    const inflight: Array<Promise<string>> = [];
    for (let i = 0; i < 12; i++) {
      inflight.push(call('POST', '/v1/rag/query', { collection: 'gone', query: 'the old man and the river', k: 5, mode: ['vector', 'bm25', 'hybrid'][i % 3] })
        .then((q) => (q.status === 200 ? '200' : `${q.status} ${q.json.error.code}: ${q.json.error.message}`)));
    }
    for (let i = 0; i < 2; i++) {
      inflight.push(client.chat.completions.create({ model: 'chat', max_tokens: 2, messages: [{ role: 'user', content: 'the old man?' }], rag: { collection: 'gone' } } as OpenAI.ChatCompletionCreateParamsNonStreaming)
        .then(() => '200', (e: InstanceType<typeof OpenAI.APIError>) => `${e.status} ${e.code}: ${e.message}`));
    }
    await Promise.race(inflight); // one has answered: the others are reading the collection
    assert.equal((await call('DELETE', '/v1/rag/collections/gone')).status, 200);
    for (const out of await Promise.all(inflight)) {
      assert.ok(out === '200' || /^404 collection_not_found: .*collection 'gone'/.test(out), out);
      seen[out.slice(0, 3)] = (seen[out.slice(0, 3)] ?? 0) + 1;
    }
  }
  assert.ok(seen['200']! > 0, JSON.stringify(seen));
});

// /v1/rag/query answered the library's vectorRank / bm25Rank and the collection routes its vectorIndex, while every
// other floe HTTP field (and `floe rag --json`) is snake_case. The ranks are checked against the dense and BM25 lists
// the server answers on their own; the collection against the library's description of it.
const SNAKE_SEED = (Date.now() ^ 0x5a5a) >>> 0;
test(`HTTP RAG: passages and collections name their fields snake_case: vector_rank, bm25_rank, vector_index (seed ${SNAKE_SEED})`, { timeout: T }, async () => {
  const r = rng(SNAKE_SEED);
  const snake = (o: Record<string, unknown>, what: string) => {
    for (const k of Object.keys(o)) assert.match(k, /^[a-z0-9_]+$/, `${what}: field '${k}' in ${JSON.stringify(o)}`);
  };
  const created = await call('POST', '/v1/rag/collections', { name: 'snake' });
  assert.equal(created.status, 200, JSON.stringify(created.json));
  const documents = Array.from({ length: 4 }, (_, i) => ({ source: `s${i}.txt`, text: randomText(r, 2) }));
  documents.push({ source: 'rare.txt', text: 'The zyxoquartz crystal glows green in the dark mine.' });
  const add = await call('POST', '/v1/rag/collections/snake/documents', { documents });
  assert.equal(add.status, 200, JSON.stringify(add.json));
  const chunks = add.json.chunks as number;
  assert.ok(chunks <= 50, `${chunks} chunks: hybrid fuses the top max(50, 4k) of each list, the whole collection here`);

  // hybrid passages carry their rank in the dense list and (only where the query's terms occur) in the BM25 list
  const query = 'zyxoquartz crystal glows'; // words randomText never writes: BM25 matches rare.txt only
  const all = async (mode: string) => ((await call('POST', '/v1/rag/query', { collection: 'snake', query, mode, k: 100 })).json.data as Array<{ id: string }>).map((p) => p.id);
  const [dense, bm25] = [await all('vector'), await all('bm25')];
  assert.equal(dense.length, chunks);
  assert.ok(bm25.length >= 1 && bm25.length < chunks, `BM25 matched ${bm25.length} of ${chunks} chunks`);
  const q = await call('POST', '/v1/rag/query', { collection: 'snake', query, mode: 'hybrid', k: chunks });
  assert.equal(q.status, 200, JSON.stringify(q.json));
  assert.equal(q.json.data.length, chunks);
  for (const p of q.json.data as Array<Record<string, unknown>>) {
    snake(p, 'hybrid passage');
    const id = p.id as string;
    const expected: Record<string, unknown> = { vector_rank: dense.indexOf(id) + 1 };
    if (bm25.includes(id)) expected.bm25_rank = bm25.indexOf(id) + 1;
    assert.deepEqual({ vector_rank: p.vector_rank, ...('bm25_rank' in p ? { bm25_rank: p.bm25_rank } : {}) }, expected, id);
    assert.deepEqual(Object.keys(p).sort(), ['object', 'rank', 'id', 'source', 'chunk', 'start', 'end', 'text', 'score', ...Object.keys(expected)].sort(), id);
  }
  for (const mode of ['vector', 'bm25']) {
    for (const p of (await call('POST', '/v1/rag/query', { collection: 'snake', query, mode, k: 3 })).json.data) snake(p, `${mode} passage`);
  }

  // the collection as list, describe and create answer it: the library's description, vector_index for vectorIndex
  const store = await RagStore.open(DB);
  const lib = await (await store.collection('snake')).info();
  store.close();
  const want = { object: 'rag.collection', name: lib.name, embedder: lib.embedder, dim: lib.dim, chunks: lib.chunks, documents: lib.documents, created: lib.created, vector_index: lib.vectorIndex };
  assert.equal(lib.vectorIndex, null);
  assert.deepEqual((await call('GET', '/v1/rag/collections/snake')).json, want);
  assert.deepEqual((await call('GET', '/v1/rag/collections')).json.data.find((c: { name: string }) => c.name === 'snake'), want);
  snake(created.json, 'created collection');
  assert.deepEqual(Object.keys(created.json).sort(), Object.keys(want).sort());
  assert.equal((await call('DELETE', '/v1/rag/collections/snake')).json.deleted, true);
});

test('a server without --rag-db refuses the rag field with 400 and has no /v1/rag routes', async () => {
  const tok = byteTokenizer();
  const s = createApp({ modelName: 'tiny', ui: false });
  s.ready({ engine: new FakeEngine(tok), tokenizer: tok, template: null });
  const r = await s.app.inject({ method: 'POST', url: '/v1/chat/completions', payload: { model: 'tiny', messages: [{ role: 'user', content: 'hi' }], rag: { collection: 'docs' } } });
  assert.equal(r.statusCode, 400);
  assert.equal(r.json().error.code, 'rag_unavailable');
  assert.equal((await s.app.inject({ method: 'GET', url: '/v1/rag/collections' })).statusCode, 404);
  await s.app.close();
});
