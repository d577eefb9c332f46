// Retrieval through floe's RAG store (LanceDB) on the held-out sets of bench/retrieval-data.ts: BM25 (LanceDB's
// full-text index), dense (cosine) and hybrid (RRF of both), recall@1/5/10 and MRR (truncated at --depth).
// Each set's documents are ingested as one collection (one chunk per document when it fits the embedder).
// Usage: node --import tsx bench/rag-retrieval.ts [--model models/floe-embed] [--max-queries N] [--depth 100] [--out FILE.json]

import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { openEmbedder, type RagEmbedder } from '../src/platform/rag/embedder.js';
import { RagStore, type SearchMode } from '../src/platform/rag/store.js';
import { brownRetrieval, wordnetRetrieval, type RetrievalSet } from './retrieval-data.js';

export interface Scores { readonly recall1: number; readonly recall5: number; readonly recall10: number; readonly mrr: number; readonly queries: number; readonly docs: number; readonly chunks: number; readonly msPerQuery: number }

/** Remembers vectors by text, so that dense and hybrid embed each query once. */
function cached(e: RagEmbedder): RagEmbedder {
  const memo = new Map<string, Float32Array>();
  return {
    ...e, countTokens: (t) => e.countTokens(t),
    async embed(texts) {
      const miss = texts.filter((t) => !memo.has(t));
      if (miss.length) (await e.embed(miss)).forEach((v, i) => memo.set(miss[i]!, v));
      return texts.map((t) => memo.get(t)!);
    },
  };
}

export async function runSet(set: RetrievalSet, emb: RagEmbedder, o: { maxQueries: number; depth: number; dir: string }): Promise<Record<SearchMode, Scores>> {
  const store = await RagStore.open(join(o.dir, set.name), { create: true });
  const col = await store.create('eval', emb);
  const t0 = performance.now();
  const ing = await col.ingest(set.docs.map((d, i) => ({ source: `d${i}`, content: d, kind: 'doc.txt' })), emb,
    { chunkTokens: emb.maxTokens, overlap: 0, commitChunks: 100_000 });
  process.stderr.write(`  ${set.name}: ingested ${set.docs.length} docs as ${ing.chunks} chunks in ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);
  const queries = set.queries.slice(0, o.maxQueries);
  await emb.embed(queries.map((q) => q.text)); // warm the cache in one batch: latency below is search only
  const out = {} as Record<SearchMode, Scores>;
  for (const mode of ['bm25', 'vector', 'hybrid'] as const) {
    let r1 = 0, r5 = 0, r10 = 0, mrr = 0;
    const t1 = performance.now();
    for (const q of queries) {
      const hits = await col.search(q.text, emb, { k: o.depth, mode });
      const docs: number[] = [];
      for (const h of hits) { const d = Number(h.source.slice(1)); if (!docs.includes(d)) docs.push(d); }
      const rel = new Set(q.relevant);
      const rank = docs.findIndex((d) => rel.has(d)) + 1; // 0: not in the top depth
      if (rank === 1) r1++;
      if (rank >= 1 && rank <= 5) r5++;
      if (rank >= 1 && rank <= 10) r10++;
      if (rank >= 1) mrr += 1 / rank;
    }
    const n = queries.length;
    out[mode] = { recall1: r1 / n, recall5: r5 / n, recall10: r10 / n, mrr: mrr / n, queries: n, docs: set.docs.length, chunks: ing.chunks, msPerQuery: (performance.now() - t1) / n };
  }
  store.close();
  return out;
}

const fmt = (s: Scores) => `R@1 ${s.recall1.toFixed(3)}  R@5 ${s.recall5.toFixed(3)}  R@10 ${s.recall10.toFixed(3)}  MRR ${s.mrr.toFixed(3)}  ${s.msPerQuery.toFixed(1)} ms/query`;

export async function main(argv: string[]): Promise<Record<string, Record<SearchMode, Scores>>> {
  const { values: v } = parseArgs({ args: argv, options: { model: { type: 'string' }, 'max-queries': { type: 'string' }, depth: { type: 'string' }, out: { type: 'string' } } });
  const model = v.model ?? 'models/floe-embed';
  if (!existsSync(model)) throw new Error(`${model} does not exist: train it (scripts/make-embedder.ts) or pass --model`);
  const emb = cached(await openEmbedder(model));
  const maxQueries = Number(v['max-queries'] ?? Infinity), depth = Number(v.depth ?? 100);
  const dir = mkdtempSync(join(tmpdir(), 'floe-rag-bench-'));
  const report: Record<string, Record<SearchMode, Scores>> = {};
  try {
    for (const set of [brownRetrieval().eval, wordnetRetrieval().eval]) {
      const r = report[set.name] = await runSet(set, emb, { maxQueries, depth, dir });
      for (const [mode, s] of Object.entries(r)) process.stdout.write(`${set.name.padEnd(28)} ${mode.padEnd(7)} ${fmt(s)}  (${s.queries} queries, ${s.docs} docs, ${s.chunks} chunks)\n`);
      const best = Math.max(r.bm25.mrr, r.vector.mrr);
      process.stdout.write(`${set.name.padEnd(28)} dense ${r.vector.mrr >= r.bm25.mrr ? '≥' : '<'} BM25; hybrid ${r.hybrid.mrr >= best ? '≥' : '<'} the better of the two (MRR)\n`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  if (v.out) writeFileSync(v.out, JSON.stringify({ model, depth, report }, null, 1) + '\n');
  return report;
}

if (import.meta.url === `file://${process.argv[1]}`) await main(process.argv.slice(2));
