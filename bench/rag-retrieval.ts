// Retrieval through floe's RAG store (LanceDB) on the held-out sets of bench/retrieval-data.ts: BM25 (LanceDB's
// full-text index), dense (cosine), hybrid (RRF of both, k 60, equal weights) and hybrid with fusion weights tuned on
// TRAINING queries (never the evaluation ones): recall@1/5/10 and MRR (truncated at --depth).
// Each set's documents are ingested as one collection (one chunk per document when it fits the embedder).
// Usage: node --import tsx bench/rag-retrieval.ts [--model models/floe-embed] [--max-queries N] [--depth 100] [--no-tune] [--out FILE.json]

import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { openEmbedder, type RagEmbedder } from '../src/platform/rag/embedder.js';
import { rrf } from '../src/platform/rag/fusion.js';
import { RagStore, type SearchOptions } from '../src/platform/rag/store.js';
import { mix32, Rng } from '../src/train/rng.js';
import { brownRetrieval, wordnetRetrieval, wordnetWords, wordnetWordsUnseen, type RetrievalSet } from './retrieval-data.js';

export interface Scores { readonly recall1: number; readonly recall5: number; readonly recall10: number; readonly mrr: number; readonly queries: number; readonly docs: number; readonly chunks: number; readonly msPerQuery: number }
export interface Fusion { readonly rrfK: number; readonly weights: readonly [number, number] } // weights of [dense, BM25]

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

/** Training-side sets shaped like the evaluation ones (texts the embedder trained on: dense looks better here than held out). */
export function tuningSets(seed = 3): RetrievalSet[] {
  const r = new Rng(mix32(seed, 0x7e));
  const b = r.shuffle([...brownRetrieval({ seed, pairsPerPassage: 1 }).train]).slice(0, 400);
  const brown: RetrievalSet = { name: 'brown-train-tuning', docs: b.map((p) => p.positive), queries: b.map((p, i) => ({ text: p.query, relevant: [i] })) };
  const bySynset = new Map<string, string[]>();
  for (const p of wordnetRetrieval({ seed }).train) { let e = bySynset.get(p.query); if (!e) bySynset.set(p.query, e = []); e.push(p.positive); }
  const defs = r.shuffle([...bySynset.keys()]).slice(0, 700);
  const docs: string[] = [];
  const queries = defs.map((d) => ({ text: d, relevant: bySynset.get(d)!.map((e) => docs.push(e) - 1) }));
  return [brown, { name: 'wordnet-train-tuning', docs, queries }];
}

/** Metrics from each query's ranked document indices (rank 0 when no relevant document is in the list). */
function scoresOf(set: RetrievalSet, ranked: readonly (readonly number[])[], extra: { chunks: number; msPerQuery: number }): Scores {
  let r1 = 0, r5 = 0, r10 = 0, mrr = 0;
  ranked.forEach((docs, qi) => {
    const rel = new Set(set.queries[qi]!.relevant);
    const rank = docs.findIndex((d) => rel.has(d)) + 1;
    if (rank === 1) r1++;
    if (rank >= 1 && rank <= 5) r5++;
    if (rank >= 1 && rank <= 10) r10++;
    if (rank >= 1) mrr += 1 / rank;
  });
  const n = ranked.length;
  return { recall1: r1 / n, recall5: r5 / n, recall10: r10 / n, mrr: mrr / n, queries: n, docs: set.docs.length, ...extra };
}

/** A set ingested as a collection; rank(q, options) gives document indices best first (chunks of one document merged). */
async function ingestSet(set: RetrievalSet, emb: RagEmbedder, dir: string) {
  const store = await RagStore.open(join(dir, set.name), { create: true });
  const col = await store.create('eval', emb);
  const t0 = performance.now();
  const ing = await col.ingest(set.docs.map((d, i) => ({ source: `d${i}`, content: d, kind: 'doc.txt' })), emb,
    { chunkTokens: emb.maxTokens, overlap: 0, commitChunks: 100_000 });
  process.stderr.write(`  ${set.name}: ingested ${set.docs.length} docs as ${ing.chunks} chunks in ${((performance.now() - t0) / 1000).toFixed(1)} s\n`);
  await emb.embed(set.queries.map((q) => q.text)); // warm the cache in one batch: latency below is search only
  const rank = async (q: string, o: SearchOptions): Promise<number[]> => {
    const docs: number[] = [];
    for (const h of await col.search(q, emb, o)) { const d = Number(h.source.slice(1)); if (!docs.includes(d)) docs.push(d); }
    return docs;
  };
  return { chunks: ing.chunks, rank, close: () => store.close() };
}

/** RRF constant and dense weight (BM25's is 1) maximising mean MRR over the tuning sets, from their dense and BM25 lists. */
export async function tuneFusion(emb: RagEmbedder, dir: string, depth: number): Promise<{ best: Fusion; grid: Array<Fusion & { mrr: number[] }> }> {
  const lists: Array<{ set: RetrievalSet; dense: string[][]; bm25: string[][] }> = [];
  for (const set of tuningSets()) {
    const s = await ingestSet(set, emb, dir);
    const dense: string[][] = [], bm25: string[][] = [];
    for (const q of set.queries) {
      dense.push((await s.rank(q.text, { k: depth, mode: 'vector' })).map(String));
      bm25.push((await s.rank(q.text, { k: depth, mode: 'bm25' })).map(String));
    }
    s.close();
    lists.push({ set, dense, bm25 });
  }
  const grid: Array<Fusion & { mrr: number[] }> = [];
  for (const rrfK of [5, 10, 20, 40, 60, 100]) {
    for (const wd of [0.25, 0.5, 0.75, 1, 1.25, 1.5, 2, 3, 4]) {
      const weights = [wd, 1] as const;
      const mrr = lists.map(({ set, dense, bm25 }) => scoresOf(set, dense.map((d, qi) => rrf([d, bm25[qi]!], rrfK, weights).map((x) => Number(x.id))), { chunks: 0, msPerQuery: 0 }).mrr);
      grid.push({ rrfK, weights, mrr });
    }
  }
  const mean = (g: { mrr: number[] }) => g.mrr.reduce((a, b) => a + b, 0) / g.mrr.length;
  const best = grid.reduce((a, g) => (mean(g) > mean(a) ? g : a));
  const base = lists.map(({ set, dense, bm25 }) => [scoresOf(set, dense.map((d) => d.map(Number)), { chunks: 0, msPerQuery: 0 }).mrr, scoresOf(set, bm25.map((d) => d.map(Number)), { chunks: 0, msPerQuery: 0 }).mrr]);
  lists.forEach(({ set }, i) => process.stderr.write(`  tuning ${set.name}: dense MRR ${base[i]![0]!.toFixed(3)}, BM25 ${base[i]![1]!.toFixed(3)}, best hybrid ${best.mrr[i]!.toFixed(3)}\n`));
  return { best: { rrfK: best.rrfK, weights: best.weights }, grid };
}

export async function runSet(set: RetrievalSet, emb: RagEmbedder, o: { maxQueries: number; depth: number; dir: string; tuned: Fusion | null }): Promise<Record<string, Scores>> {
  const s = await ingestSet(set, emb, o.dir);
  const queries = set.queries.slice(0, o.maxQueries);
  const sub: RetrievalSet = { ...set, queries };
  const runs: Array<[string, SearchOptions]> = [
    ['bm25', { mode: 'bm25' }], ['vector', { mode: 'vector' }], ['hybrid', { mode: 'hybrid' }],
    ...(o.tuned ? [['hybrid-tuned', { mode: 'hybrid', rrfK: o.tuned.rrfK, weights: o.tuned.weights }] as [string, SearchOptions]] : []),
  ];
  const out: Record<string, Scores> = {};
  for (const [name, so] of runs) {
    const t1 = performance.now();
    const ranked: number[][] = [];
    for (const q of queries) ranked.push(await s.rank(q.text, { ...so, k: o.depth }));
    out[name] = scoresOf(sub, ranked, { chunks: s.chunks, msPerQuery: (performance.now() - t1) / queries.length });
  }
  s.close();
  return out;
}

const fmt = (s: Scores) => `R@1 ${s.recall1.toFixed(3)}  R@5 ${s.recall5.toFixed(3)}  R@10 ${s.recall10.toFixed(3)}  MRR ${s.mrr.toFixed(3)}  ${s.msPerQuery.toFixed(1)} ms/query`;

export async function main(argv: string[]): Promise<Record<string, Record<string, Scores>>> {
  const { values: v } = parseArgs({ args: argv, options: { model: { type: 'string' }, 'max-queries': { type: 'string' }, depth: { type: 'string' }, out: { type: 'string' }, 'no-tune': { type: 'boolean' } } });
  const model = v.model ?? 'models/floe-embed';
  if (!existsSync(model)) throw new Error(`${model} does not exist: train it (scripts/make-embedder.ts) or pass --model`);
  const emb = cached(await openEmbedder(model));
  const maxQueries = Number(v['max-queries'] ?? Infinity), depth = Number(v.depth ?? 100);
  const dir = mkdtempSync(join(tmpdir(), 'floe-rag-bench-'));
  const report: Record<string, Record<string, Scores>> = {};
  let tuning: Awaited<ReturnType<typeof tuneFusion>> | null = null;
  try {
    if (!v['no-tune']) {
      tuning = await tuneFusion(emb, dir, depth);
      process.stdout.write(`fusion tuned on training queries: RRF k ${tuning.best.rrfK}, weights dense ${tuning.best.weights[0]} : BM25 ${tuning.best.weights[1]}\n`);
    }
    for (const set of [brownRetrieval().eval, wordnetRetrieval().eval, wordnetWords(), wordnetWordsUnseen()]) {
      const r = report[set.name] = await runSet(set, emb, { maxQueries, depth, dir, tuned: tuning?.best ?? null });
      for (const [mode, s] of Object.entries(r)) process.stdout.write(`${set.name.padEnd(28)} ${mode.padEnd(12)} ${fmt(s)}  (${s.queries} queries, ${s.docs} docs, ${s.chunks} chunks)\n`);
      const best = Math.max(r.bm25!.mrr, r.vector!.mrr);
      const h = r['hybrid-tuned'] ?? r.hybrid!;
      process.stdout.write(`${set.name.padEnd(28)} dense ${r.vector!.mrr >= r.bm25!.mrr ? '≥' : '<'} BM25; ${r['hybrid-tuned'] ? 'tuned ' : ''}hybrid ${h.mrr >= best ? '≥' : '<'} the better of the two (MRR)\n`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  if (v.out) writeFileSync(v.out, JSON.stringify({ model, depth, fusion: tuning?.best ?? null, fusionGrid: tuning?.grid ?? null, report }, null, 1) + '\n');
  return report;
}

if (import.meta.url === `file://${process.argv[1]}`) await main(process.argv.slice(2));
