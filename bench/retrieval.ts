// Dense retrieval on the held-out sets of bench/retrieval-data.ts: brute-force cosine over an embedder's unit vectors,
// recall@1/5/10 and MRR, beside baselines measured in the same run (chance, the untrained base model mean-pooled, BM25),
// and the hybrid: reciprocal-rank fusion of the model's dense ranking with BM25's.
// Usage: node --import tsx bench/retrieval.ts --model models/floe-embed [--baselines] [--base models/floe-brown] [--out FILE.json]
//        [--pool-skip-bos true|false]   (overrides the model's embedding_config.json; the base is pooled without BOS)

import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { Embedder } from '../src/model/embed.js';
import { brownRetrieval, wordnetRetrieval, wordnetWords, type RetrievalSet } from './retrieval-data.js';

export interface Scores { readonly recall1: number; readonly recall5: number; readonly recall10: number; readonly mrr: number; readonly queries: number; readonly docs: number }

/** Metrics from a score function: score(q) gives one number per document, higher is better; ties rank pessimistically. */
export function evaluate(set: RetrievalSet, score: (q: number) => ArrayLike<number>): Scores {
  let r1 = 0, r5 = 0, r10 = 0, mrr = 0;
  set.queries.forEach((q, qi) => {
    const s = score(qi);
    const rel = new Set(q.relevant);
    let best = -Infinity;
    for (const d of rel) best = Math.max(best, s[d]!);
    let rank = 1; // of the best relevant document: 1 + documents scoring at least as high that are not relevant
    for (let d = 0; d < set.docs.length; d++) if (!rel.has(d) && s[d]! >= best) rank++;
    if (rank <= 1) r1++;
    if (rank <= 5) r5++;
    if (rank <= 10) r10++;
    mrr += 1 / rank;
  });
  const n = set.queries.length;
  return { recall1: r1 / n, recall5: r5 / n, recall10: r10 / n, mrr: mrr / n, queries: n, docs: set.docs.length };
}

/** Expected metrics of a random ranking (first relevant of k among N). */
export function chance(set: RetrievalSet): Scores {
  const N = set.docs.length;
  let r1 = 0, r5 = 0, r10 = 0, mrr = 0;
  for (const q of set.queries) {
    const k = q.relevant.length;
    // P(first relevant at rank ≤ c) = 1 − C(N−k, c) / C(N, c)
    const atMost = (c: number) => { let p = 1; for (let i = 0; i < c; i++) p *= (N - k - i) / (N - i); return 1 - Math.max(p, 0); };
    r1 += atMost(1); r5 += atMost(5); r10 += atMost(10);
    let prevCdf = 0;
    for (let c = 1; c <= N - k + 1; c++) { const cdf = atMost(c); mrr += (cdf - prevCdf) / c; prevCdf = cdf; }
  }
  const n = set.queries.length;
  return { recall1: r1 / n, recall5: r5 / n, recall10: r10 / n, mrr: mrr / n, queries: n, docs: N };
}

type Scorer = (qi: number) => ArrayLike<number>;

/** Cosine of query qi's vector with every document's (the returned array is reused between calls). */
export function denseScorer(emb: Embedder, set: RetrievalSet): Scorer {
  const D = emb.dim;
  const docs = emb.embed(set.docs);
  const qs = emb.embed(set.queries.map((q) => q.text));
  const s = new Float32Array(set.docs.length);
  return (qi) => {
    const q = qs[qi]!;
    docs.forEach((d, j) => { let x = 0; for (let k = 0; k < D; k++) x += q[k]! * d[k]!; s[j] = x; });
    return s;
  };
}

export const denseScores = (emb: Embedder, set: RetrievalSet): Scores => evaluate(set, denseScorer(emb, set));

/** Reciprocal-rank fusion (k 60, the usual constant, not tuned here): Σ over scorers of 1 / (k + rank of the document), ties ranked last of their group. */
export function rrfScorer(scorers: readonly Scorer[], N: number, k = 60): Scorer {
  const out = new Float64Array(N);
  const idx = Int32Array.from({ length: N }, (_, i) => i);
  return (qi) => {
    out.fill(0);
    for (const sc of scorers) {
      const s = Float64Array.from(sc(qi));
      idx.sort((a, b) => s[b]! - s[a]!);
      for (let r = 0; r < N;) { // tied documents all take the group's worst rank
        let e = r + 1;
        while (e < N && s[idx[e]!] === s[idx[r]!]) e++;
        for (let j = r; j < e; j++) out[idx[j]!]! += 1 / (k + e);
        r = e;
      }
    }
    return out;
  };
}

const terms = (t: string) => t.toLowerCase().match(/[a-z0-9]+/g) ?? [];

/** Okapi BM25 (k1 1.2, b 0.75, lower-cased alphanumeric words, no stemming or stop words): a plain lexical reference. */
export const bm25Scores = (set: RetrievalSet, k1 = 1.2, b = 0.75): Scores => evaluate(set, bm25Scorer(set, k1, b));

export function bm25Scorer(set: RetrievalSet, k1 = 1.2, b = 0.75): Scorer {
  const docs = set.docs.map((d) => { const tf = new Map<string, number>(); const ws = terms(d); for (const w of ws) tf.set(w, (tf.get(w) ?? 0) + 1); return { tf, len: ws.length }; });
  const avg = docs.reduce((a, d) => a + d.len, 0) / docs.length;
  const df = new Map<string, number>();
  for (const d of docs) for (const w of d.tf.keys()) df.set(w, (df.get(w) ?? 0) + 1);
  const N = docs.length;
  const s = new Float64Array(N);
  return (qi) => {
    s.fill(0);
    for (const w of new Set(terms(set.queries[qi]!.text))) {
      const n = df.get(w);
      if (!n) continue;
      const idf = Math.log(1 + (N - n + 0.5) / (n + 0.5));
      docs.forEach((d, j) => { const f = d.tf.get(w); if (f) s[j]! += idf * f * (k1 + 1) / (f + k1 * (1 - b + b * d.len / avg)); });
    }
    return s;
  };
}

const fmt = (s: Scores) => `R@1 ${s.recall1.toFixed(3)}  R@5 ${s.recall5.toFixed(3)}  R@10 ${s.recall10.toFixed(3)}  MRR ${s.mrr.toFixed(3)}`;

export async function main(argv: string[]): Promise<Record<string, Record<string, Scores>>> {
  const { values: v } = parseArgs({ args: argv, options: { model: { type: 'string' }, base: { type: 'string' }, baselines: { type: 'boolean' }, out: { type: 'string' }, 'pool-skip-bos': { type: 'string' } } });
  const skip = v['pool-skip-bos'];
  if (skip !== undefined && skip !== 'true' && skip !== 'false') throw new Error(`--pool-skip-bos must be true or false, got ${skip}`);
  const sets = [brownRetrieval().eval, wordnetRetrieval().eval, wordnetWords()];
  const report: Record<string, Record<string, Scores>> = {};
  const add = (set: RetrievalSet, name: string, s: Scores) => {
    (report[set.name] ??= {})[name] = s;
    process.stdout.write(`${set.name.padEnd(28)} ${name.padEnd(36)} ${fmt(s)}  (${s.queries} queries, ${s.docs} docs)\n`);
  };
  const models = [...(v.model ? [v.model] : []), ...(v.baselines ? [v.base ?? 'models/floe-brown'] : [])];
  for (const [i, m] of models.entries()) {
    const isBase = v.model === undefined || i > 0;
    const emb = await Embedder.open(m, { pooling: 'mean', skipBos: isBase ? true : skip === undefined ? undefined : skip === 'true' });
    for (const set of sets) {
      const t0 = performance.now();
      const dense = denseScorer(emb, set);
      add(set, `dense ${m}`, evaluate(set, dense));
      if (i === 0 && v.model !== undefined) add(set, 'hybrid (RRF of dense + bm25)', evaluate(set, rrfScorer([dense, bm25Scorer(set)], set.docs.length)));
      process.stderr.write(`  (${((performance.now() - t0) / 1000).toFixed(1)} s)\n`);
    }
  }
  if (v.baselines) for (const set of sets) { add(set, 'bm25', bm25Scores(set)); add(set, 'chance', chance(set)); }
  if (v.out) writeFileSync(v.out, JSON.stringify(report, null, 1) + '\n');
  return report;
}

if (import.meta.url === `file://${process.argv[1]}`) await main(process.argv.slice(2));
