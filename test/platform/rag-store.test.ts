// RAG collections on LanceDB: ingest (text, Markdown, HTML), re-ingest idempotence and change replacement, BM25
// on a rare term, hybrid equal to a hand-computed RRF of the two lists, filters, bad input leaving nothing written.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CollectionNotFoundError, EmbedderMismatchError, RagStore } from '../../src/platform/rag/store.js';
import { rrf } from '../../src/platform/rag/fusion.js';
import { brownTokenizer, hashEmbedder, randomText, rng } from './rag-helpers.js';

async function setup() {
  const dir = mkdtempSync(join(tmpdir(), 'floe-rag-'));
  const tok = await brownTokenizer();
  const emb = hashEmbedder(tok);
  const r = rng((Date.now() ^ 0xabc) >>> 0);
  const files = {
    a: join(dir, 'a.txt'), b: join(dir, 'b.md'), c: join(dir, 'c.html'),
  };
  writeFileSync(files.a, `${randomText(r, 6)}\n\nThe zyxoquartz crystal was found in the old mine.\n\n${randomText(r, 6)}`);
  writeFileSync(files.b, `# Notes\n\n${randomText(r, 5)}\n\n- the river was cold\n- the boat was small\n`);
  writeFileSync(files.c, `<html><body><h1>Page</h1><p>${randomText(r, 4).replaceAll('\n', ' ')}</p><p>Cats &amp; dogs live here.</p></body></html>`);
  const store = await RagStore.open(join(dir, 'db'), { create: true });
  return { dir, tok, emb, files, store };
}

test('ingest → search: every mode finds documents; BM25 ranks the rare term first; filters apply', async () => {
  const { emb, files, store } = await setup();
  const col = await store.create('docs', emb);
  // create() answers the creation time the collection records (POST /v1/rag/collections then GET showed two)
  assert.equal(col.created, (await store.collection('docs')).created);
  const events: Array<{ done: number; total: number; chunks: number }> = [];
  const res = await col.ingestFiles([files.a, files.b, files.c], emb, { chunkTokens: 48, overlap: 8, onProgress: (p) => events.push(p) });
  assert.deepEqual(res.added, [files.a, files.b, files.c]);
  assert.deepEqual(events.at(-1), { done: 3, total: 3, source: files.c, chunks: res.chunks });
  for (let i = 1; i < events.length; i++) assert.ok(events[i]!.done >= events[i - 1]!.done && events[i]!.chunks >= events[i - 1]!.chunks, 'progress never goes back');
  assert.equal(res.chunks, await col.table.countRows());
  const info = await col.info();
  assert.equal(info.documents, 3);
  assert.equal(info.embedder, 'test-hash');
  assert.equal(info.dim, 64);
  const rare = await col.search('zyxoquartz', emb, { mode: 'bm25', k: 3 });
  assert.equal(rare[0]!.source, files.a);
  assert.match(rare[0]!.text, /zyxoquartz/);
  const holds = rare.map((p) => /zyxoquartz/.test(p.text));
  assert.deepEqual(holds, [...holds].sort((x, y) => Number(y) - Number(x)), 'chunks holding the term rank first');
  // offsets of a plain-text chunk give back its exact text
  const { readFileSync } = await import('node:fs');
  const src = readFileSync(files.a, 'utf8');
  assert.equal(src.slice(rare[0]!.start, rare[0]!.end), rare[0]!.text);
  // dense search with a chunk's own text finds that chunk first (cosine 1)
  const dense = await col.search(rare[0]!.text, emb, { mode: 'vector', k: 2 });
  assert.equal(dense[0]!.id, rare[0]!.id);
  assert.ok(Math.abs(dense[0]!.score - 1) < 1e-5, `self-similarity ${dense[0]!.score}`);
  const only = await col.search('the old man', emb, { mode: 'hybrid', k: 20, where: { field: 'source', op: '=', value: files.b } });
  assert.ok(only.length > 0 && only.every((p) => p.source === files.b));
  await assert.rejects(col.search('x', emb, { mode: 'bm25', where: 'no_such_column = 1' as never }), /raw SQL is not accepted/);
  await assert.rejects(col.search('x', emb, { mode: 'bm25', where: { field: 'no_such_column', op: '=', value: 1 } as never }), /'where.field' must be one of source, kind/);
  await assert.rejects(store.collection('nope'), (e: unknown) => e instanceof CollectionNotFoundError && /collection 'nope' does not exist .*'docs'/.test((e as Error).message));
  await assert.rejects(store.create('bad name!', emb), /invalid collection name/);
  const wrong = hashEmbedder(await brownTokenizer(), 32, 128, 'small');
  await assert.rejects(col.search('x', wrong, { mode: 'vector' }), /holds 64-dim vectors from embedder 'test-hash', but embedder 'small' makes 32-dim/);
  await assert.rejects(col.ingestFiles([files.a], wrong), /64-dim/);
  await assert.rejects(store.create('docs', wrong, { existOk: true }), /64-dim/);
  assert.deepEqual((await store.list()).map((c) => c.name), ['docs']);
});

// An ingest commits its rows before it builds the BM25 index: a bm25 or hybrid query in between (the server runs
// queries during an ingest; another process may be ingesting) failed with Lance's "Cannot perform full text search
// unless an INVERTED index has been created" (a 500 over HTTP), and after an ingest killed in that gap it failed
// until the next ingest. A collection now has its text index from creation, and one without it gets it on first use.
test('bm25 and hybrid queries during an ingest, and on a collection whose text index is missing, find the rows', async () => {
  const { emb, files, store } = await setup();
  const col = await store.create('docs', emb);
  const during: Array<Promise<unknown>> = [];
  await col.ingestFiles([files.a, files.b, files.c], emb, {
    chunkTokens: 48, overlap: 8, commitChunks: 1,
    onProgress: (p) => { if (p.done === 1 && during.length === 0) during.push(col.search('zyxoquartz crystal', emb, { mode: 'bm25', k: 3 }), col.search('zyxoquartz crystal', emb, { k: 3 })); },
  });
  assert.equal(during.length, 2);
  for (const r of await Promise.all(during) as Array<Array<{ source: string }>>) assert.equal(r[0]?.source, files.a);
  // a collection left without its text index (made by an older floe, or an ingest killed before indexing)
  const fts = (await col.table.listIndices()).find((i) => i.indexType === 'FTS')!;
  await col.table.dropIndex(fts.name);
  const again = await store.collection('docs');
  assert.equal((await again.search('zyxoquartz', null, { mode: 'bm25', k: 1 }))[0]?.source, files.a);
  assert.equal((await again.search('zyxoquartz', emb, { k: 1 }))[0]?.source, files.a);
});

// Two writers on one database (two floe serve on one --rag-db, or the server and floe rag ingest): each ingest's
// index step (optimize, createIndex) raced the other's and failed with Lance's "Retryable commit conflict … Please
// retry" after its rows were committed, so the client got an error (a 500 over HTTP) for a document that was stored.
test('two stores ingesting into one collection at once: every ingest succeeds and every document is searchable', async () => {
  const { dir, emb } = await setup();
  const a = await RagStore.open(join(dir, 'db'), { create: true });
  const b = await RagStore.open(join(dir, 'db'));
  await a.create('shared', emb);
  const r = rng(7);
  const writer = async (store: RagStore, tag: string) => {
    const col = await store.collection('shared');
    for (let i = 0; i < 10; i++) await col.ingest([{ source: `${tag}/${i}.txt`, content: `${randomText(r, 2)}\n\nmarker${tag}${i} here.` }], emb, { chunkTokens: 48, overlap: 4 });
  };
  await Promise.all([writer(a, 'a'), writer(b, 'b'), writer(a, 'c'), writer(b, 'd')]);
  const col = await a.collection('shared');
  assert.equal((await col.info()).documents, 40);
  for (const tag of ['a', 'b', 'c', 'd']) assert.equal((await col.search(`marker${tag}9`, null, { mode: 'bm25', k: 1 }))[0]?.source, `${tag}/9.txt`);
  a.close();
  b.close();
});

// Listing while collections come and go (DELETE on the server, floe rag delete / ingest in another process): a
// collection dropped or half-created between the directory listing and its opening failed the whole list (a 500
// on GET /v1/rag/collections); it is left out now.
test('list() while another store creates and drops collections: never fails, lists the stable ones', async () => {
  const { dir, emb } = await setup();
  const a = await RagStore.open(join(dir, 'db'), { create: true });
  const b = await RagStore.open(join(dir, 'db'));
  await a.create('stable', emb);
  let stop = false, lists = 0;
  const lister = (async () => {
    while (!stop) {
      const names = (await b.list()).map((c) => c.name);
      assert.ok(names.includes('stable'), names.join(','));
      lists++;
    }
  })();
  for (let i = 0; i < 12; i++) {
    const c = await a.create(`churn${i}`, emb);
    await c.ingest([{ source: 'a.txt', content: `churn ${i} text` }], emb, { chunkTokens: 48, overlap: 4 });
    await a.drop(`churn${i}`);
  }
  stop = true;
  await lister;
  assert.ok(lists > 0);
  a.close();
  b.close();
});

test('hybrid search equals a hand-computed reciprocal-rank fusion of the dense and BM25 lists', async () => {
  const { emb, files, store } = await setup();
  const col = await store.create('h', emb);
  await col.ingestFiles([files.a, files.b, files.c], emb, { chunkTokens: 32, overlap: 0 });
  for (const q of ['the old mine crystal', 'cold river boat', 'cats dogs']) {
    const depth = 50;
    const [qv] = await emb.embed([q]);
    const dense = (await col.dense(qv!, depth, null)).map((p) => p.id);
    const sparse = (await col.bm25(q, depth, null)).map((p) => p.id);
    const hand = new Map<string, number>();
    dense.forEach((id, i) => hand.set(id, (hand.get(id) ?? 0) + 1 / (60 + i + 1)));
    sparse.forEach((id, i) => hand.set(id, (hand.get(id) ?? 0) + 1 / (60 + i + 1)));
    const hybrid = await col.search(q, emb, { mode: 'hybrid', k: 10, depth });
    assert.equal(hybrid.length, Math.min(10, hand.size));
    for (const [i, p] of hybrid.entries()) {
      assert.ok(Math.abs(p.score - hand.get(p.id)!) < 1e-12, `${q}: ${p.id}`);
      if (i > 0) assert.ok(hybrid[i - 1]!.score >= p.score);
      assert.equal(p.vectorRank, dense.includes(p.id) ? dense.indexOf(p.id) + 1 : undefined);
      assert.equal(p.bm25Rank, sparse.includes(p.id) ? sparse.indexOf(p.id) + 1 : undefined);
    }
    // nothing left out scores higher than the last kept
    const kept = new Set(hybrid.map((p) => p.id));
    for (const [id, s] of hand) if (!kept.has(id)) assert.ok(s <= hybrid.at(-1)!.score);
  }
  assert.deepEqual(rrf([['a', 'b', 'c'], ['c', 'a']], 1), [{ id: 'a', score: 1 / 2 + 1 / 3 }, { id: 'c', score: 1 / 4 + 1 / 2 }, { id: 'b', score: 1 / 3 }]);
  // weighted fusion: Σ w_list / (k + rank), with a random constant and random weights
  const r = rng((Date.now() ^ 0x77) >>> 0);
  const rrfK = 1 + Math.floor(r() * 100), weights = [r() * 4, r() * 4] as const;
  for (const q of ['the old mine crystal', 'cold river boat']) {
    const [qv] = await emb.embed([q]);
    const dense = (await col.dense(qv!, 50, null)).map((p) => p.id);
    const sparse = (await col.bm25(q, 50, null)).map((p) => p.id);
    const hand = new Map<string, number>();
    dense.forEach((id, i) => hand.set(id, (hand.get(id) ?? 0) + weights[0] / (rrfK + i + 1)));
    sparse.forEach((id, i) => hand.set(id, (hand.get(id) ?? 0) + weights[1] / (rrfK + i + 1)));
    const hybrid = await col.search(q, emb, { mode: 'hybrid', k: 10, depth: 50, rrfK, weights });
    for (const p of hybrid) assert.ok(Math.abs(p.score - hand.get(p.id)!) < 1e-12, `${q}: ${p.id} weighted`);
    const kept = new Set(hybrid.map((p) => p.id));
    for (const [id, sc] of hand) if (!kept.has(id)) assert.ok(sc <= hybrid.at(-1)!.score);
  }
  assert.throws(() => rrf([['a'], ['b']], 60, [1]), /2 lists/);
  assert.throws(() => rrf([['a'], ['b']], 60, [1, -1]), /≥ 0/);
});

test('re-ingest: unchanged files are skipped (no embedding, no write); a changed file replaces its chunks only', async () => {
  const { emb, files, store, tok } = await setup();
  const col = await store.create('r', emb);
  await col.ingestFiles([files.a, files.b, files.c], emb, { chunkTokens: 48 });
  const rowsOf = async () => (await col.table.query().select(['id', 'source', 'doc_hash']).toArray()) as Array<{ id: string; source: string; doc_hash: string }>;
  const before = await rowsOf();
  const version = await col.table.version();
  const calls = emb.calls;
  const again = await col.ingestFiles([files.a, files.b, files.c], emb, { chunkTokens: 48 });
  assert.deepEqual(again.skipped, [files.a, files.b, files.c]);
  assert.equal(again.chunks, 0);
  assert.equal(emb.calls, calls, 'no embedding for unchanged files');
  assert.equal(await col.table.version(), version, 'no new table version');
  writeFileSync(files.b, '# Changed\n\nThe lighthouse keeper counted ships every night.\n');
  const changed = await col.ingestFiles([files.a, files.b, files.c], emb, { chunkTokens: 48 });
  assert.deepEqual(changed.replaced, [files.b]);
  assert.deepEqual(changed.skipped, [files.a, files.c]);
  const after = await rowsOf();
  const ids = (rows: typeof after, s: string) => rows.filter((x) => x.source === s).map((x) => x.id).sort();
  assert.deepEqual(ids(after, files.a), ids(before, files.a));
  assert.deepEqual(ids(after, files.c), ids(before, files.c));
  const bRows = after.filter((x) => x.source === files.b);
  assert.equal(bRows.length, 1);
  assert.ok(!before.some((x) => x.id === bRows[0]!.id), 'new chunk ids for new content');
  const hit = await col.search('lighthouse', emb, { mode: 'bm25', k: 5 });
  assert.equal(hit.length, 1);
  assert.equal(hit[0]!.source, files.b);
  assert.equal(await col.deleteSource(files.b), 1);
  assert.equal((await col.info()).documents, 2);
  void tok;
});

test('re-ingest with other --chunk-tokens / --overlap re-chunks unchanged files; the same settings again skip them', async () => {
  const { emb, files, store, tok } = await setup();
  const col = await store.create('rechunk', emb);
  const rows = async () => (await col.table.query().select(['source', 'text']).toArray()) as Array<{ source: string; text: string }>;
  const longest = (rs: Array<{ text: string }>) => Math.max(...rs.map((x) => tok.encode(x.text).length));
  await col.ingestFiles([files.a], emb, { chunkTokens: 96, overlap: 0 });
  const wide = await rows();
  const narrow = await col.ingestFiles([files.a], emb, { chunkTokens: 24, overlap: 0 });
  assert.deepEqual(narrow.replaced, [files.a], 'new chunk size: the file is chunked again');
  assert.deepEqual(narrow.skipped, []);
  const now = await rows();
  assert.ok(now.length > wide.length, `${now.length} chunks at 24 tokens vs ${wide.length} at 96`);
  assert.ok(longest(now) <= 24, `every stored chunk fits 24 tokens (longest ${longest(now)})`);
  assert.equal(now.length, narrow.chunks, 'the old chunks are gone');
  const same = await col.ingestFiles([files.a], emb, { chunkTokens: 24, overlap: 0 });
  assert.deepEqual(same.skipped, [files.a], 'same content and settings: skipped');
  const overlapped = await col.ingestFiles([files.a], emb, { chunkTokens: 24, overlap: 4 });
  assert.deepEqual(overlapped.replaced, [files.a], 'new overlap: chunked again');
  assert.equal((await rows()).length, overlapped.chunks);
});

test('another embedder of the same dimension is refused unless allowed; the same directory under another path is the same embedder', async () => {
  const { dir, emb, files, store, tok } = await setup();
  const col = await store.create('own', emb);
  await col.ingestFiles([files.a], emb, { chunkTokens: 48 });
  const other = hashEmbedder(tok, emb.dim, emb.maxTokens, 'other-hash');
  const refused = (e: unknown) => e instanceof EmbedderMismatchError && /collection 'own' was embedded by 'test-hash', not by 'other-hash'/.test((e as Error).message);
  for (const mode of ['vector', 'hybrid'] as const) await assert.rejects(col.search('zyxoquartz', other, { mode }), refused);
  await assert.rejects(col.ingestFiles([files.b], other), refused);
  await assert.rejects(store.create('own', other, { existOk: true }), refused);
  assert.equal((await col.search('zyxoquartz', other, { mode: 'bm25' })).length > 0, true, 'BM25 needs no embedder');
  assert.ok((await col.search('zyxoquartz', other, { mode: 'vector', allowEmbedderMismatch: true })).length > 0);
  assert.deepEqual((await col.ingestFiles([files.b], other, { allowEmbedderMismatch: true })).added, [files.b]);
  // recorded as a directory path: a symlink to it (or the path itself) is the same embedder
  const model = join(dir, 'model'), link = join(dir, 'model-link');
  mkdirSync(model);
  symlinkSync(model, link);
  const byPath = await store.create('bypath', hashEmbedder(tok, emb.dim, emb.maxTokens, model));
  await byPath.ingestFiles([files.a], hashEmbedder(tok, emb.dim, emb.maxTokens, link), { chunkTokens: 48 });
  assert.ok((await byPath.search('zyxoquartz', hashEmbedder(tok, emb.dim, emb.maxTokens, link), { mode: 'vector' })).length > 0);
});

test('bad input fails before anything is written: unsupported type, empty file, missing file, bytes that are not UTF-8; a BOM is dropped', async () => {
  const { dir, emb, files, store } = await setup();
  const col = await store.create('bad', emb);
  await col.ingestFiles([files.a], emb, { chunkTokens: 48 });
  const version = await col.table.version();
  const rows = await col.table.countRows();
  const pdf = join(dir, 'x.pdf');
  writeFileSync(pdf, '%PDF');
  const empty = join(dir, 'empty.md');
  writeFileSync(empty, '\n  \n');
  await assert.rejects(col.ingestFiles([files.b, pdf], emb), /x.pdf: unsupported file type '.pdf'; rag ingests .txt/);
  await assert.rejects(col.ingestFiles([files.b, empty], emb), /empty.md: the document is empty/);
  await assert.rejects(col.ingestFiles([files.b, join(dir, 'missing.txt')], emb), /missing.txt: no such file/);
  const latin1 = join(dir, 'latin1.txt');
  writeFileSync(latin1, Buffer.from('caf\xe9 au lait, na\xefve', 'latin1'));
  await assert.rejects(col.ingestFiles([files.b, latin1], emb), /latin1.txt: not valid UTF-8 text/);
  assert.equal(await col.table.version(), version);
  assert.equal(await col.table.countRows(), rows);
  // a byte order mark is not text: the chunks hold none, as the HTTP upload's do
  const bom = join(dir, 'bom.txt');
  writeFileSync(bom, '\uFEFFThe bom file talks about zyxoquartz mines.');
  await col.ingestFiles([bom], emb, { chunkTokens: 48 });
  const got = await col.search('zyxoquartz', null, { k: 10, mode: 'bm25', where: { field: 'source', op: '=', value: bom } });
  assert.ok(got.length > 0 && got.every((p) => !p.text.includes('\uFEFF')), 'no chunk starts with U+FEFF');
  await assert.rejects(RagStore.open(join(dir, 'nodb')), /does not exist/);
});

test('vector index by size: brute force below the threshold, IVF-HNSW-SQ from it, IVF-PQ from the next; search still finds each row', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'floe-rag-idx-'));
  const tok = await brownTokenizer();
  const emb = hashEmbedder(tok, 16);
  const store = await RagStore.open(join(dir, 'db'), { create: true, indexPolicy: { hnswRows: 300, pqRows: 700 } });
  const col = await store.create('i', emb);
  const r = rng((Date.now() ^ 0x1dc) >>> 0);
  const doc = (i: number) => ({ source: `d${i}.txt`, content: randomText(r, 1).slice(0, 200) || 'x' });
  await col.ingest(Array.from({ length: 150 }, (_, i) => doc(i)), emb, { chunkTokens: 128, overlap: 0 });
  const n1 = await col.table.countRows();
  assert.ok(n1 < 300);
  assert.equal((await col.info()).vectorIndex, null);
  await col.ingest(Array.from({ length: 300 }, (_, i) => doc(150 + i)), emb, { chunkTokens: 128, overlap: 0 });
  assert.ok((await col.table.countRows()) >= 300);
  assert.equal((await col.info()).vectorIndex, 'IvfHnswSq');
  // a stored chunk's own vector finds that chunk (or one with the same token counts) first
  const rows = (await col.table.query().select(['text']).limit(20).toArray()) as Array<{ text: string }>;
  for (const row of rows) {
    const [v] = await emb.embed([row.text]);
    const top = await col.dense(v!, 1, null);
    assert.ok(top[0]!.text === row.text || top[0]!.score > 0.99, `${row.text} → ${top[0]!.text} (${top[0]!.score})`); // ties: same tokens
  }
  await col.ingest(Array.from({ length: 300 }, (_, i) => doc(450 + i)), emb, { chunkTokens: 128, overlap: 0 });
  assert.equal((await col.info()).vectorIndex, 'IvfPq');
});
