// ChunkWorker: extraction + chunking in a worker thread gives exactly what prepareDocuments gives in this thread (same
// tokenizer counts), reports errors as the in-thread path does, and leaves this thread's event loop running meanwhile.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { threadId } from 'node:worker_threads';
import { ChunkWorker } from '../../src/platform/rag/chunk-pool.js';
import { prepareDocuments } from '../../src/platform/rag/prepare.js';
import { BROWN, brownTokenizer, randomText, rng } from './rag-helpers.js';

const SEED = Number(process.env.FLOE_SEED ?? (Date.now() & 0x7fffffff));

test(`the chunk worker equals in-thread preparation on random text, Markdown and HTML (seed ${SEED})`, async () => {
  const r = rng(SEED);
  const tok = await brownTokenizer();
  const count = (t: string) => tok.encode(t, { addSpecialTokens: true }).length;
  const docs = Array.from({ length: 6 }, (_, i) => {
    const body = randomText(r, 2 + Math.floor(r() * 6));
    if (i % 3 === 1) return { source: `d${i}.md`, content: `# Title ${i}\n\n${body}\n\n- item one\n- item *two*\n` };
    if (i % 3 === 2) return { source: `d${i}`, kind: 'page.html', content: `<html><body><h1>H${i}</h1><p>${body.replaceAll('\n\n', '</p><p>')}</p></body></html>` };
    return { source: `d${i}.txt`, content: body };
  });
  const o = { chunkTokens: 24 + Math.floor(r() * 100), overlap: Math.floor(r() * 12) };
  const w = new ChunkWorker(BROWN);
  try {
    const got = await w.prepare(docs, o);
    assert.notEqual(w.lastThreadId, 0);
    assert.notEqual(w.lastThreadId, threadId, 'prepared in another thread');
    assert.deepEqual(got, prepareDocuments(docs, o, count));
    assert.ok(got.every((d) => d.chunks.length > 0 && d.chunks.every((c) => c.tokens <= o.chunkTokens)));
    // errors come back with the in-thread messages (the server maps them to 400s)
    await assert.rejects(w.prepare([{ source: 'x.pdf', content: '%PDF' }], o), /x.pdf: unsupported file type '.pdf'/);
    await assert.rejects(w.prepare([{ source: 'e.md', content: '\n \n' }], o), /e.md: the document is empty/);
    await assert.rejects(w.prepare(docs, { chunkTokens: 24, overlap: 500 }), /chunk overlap must be in/);
    // this thread keeps running while a large job is chunked there: an interval fires many times before it resolves
    const big = Array.from({ length: 40 }, (_, i) => ({ source: `big${i}.txt`, content: randomText(r, 30) }));
    let ticks = 0;
    const iv = setInterval(() => { ticks++; }, 1);
    const res = await w.prepare(big, { chunkTokens: 64, overlap: 8 });
    clearInterval(iv);
    assert.equal(res.length, 40);
    assert.ok(ticks > 3, `event loop ticks while chunking: ${ticks}`);
  } finally {
    await w.close();
  }
});
