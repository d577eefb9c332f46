// The shipped embedder (models/floe-embed) on slices of the held-out retrieval sets (bench/retrieval-data.ts): it must
// rank better than its untrained base (floe-brown, mean-pooled) and than chance, and than BM25 on the WordNet slice
// (issue #12's bar on one of the two sets). Full numbers: bench/retrieval.ts.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Embedder } from '../../src/model/embed.js';
import { brownRetrieval, wordnetRetrieval, type RetrievalSet } from '../../bench/retrieval-data.js';
import { bm25Scores, chance, denseScores } from '../../bench/retrieval.js';
import { repoPath } from '../repo.js';

const model = (name: string) => repoPath(`models/${name}`);

/** The first n queries and only their relevant documents (indices remapped). */
function slice(set: RetrievalSet, n: number): RetrievalSet {
  const docs: string[] = [];
  const queries = set.queries.slice(0, n).map((q) => ({ text: q.text, relevant: q.relevant.map((d) => docs.push(set.docs[d]!) - 1) }));
  return { name: set.name, docs, queries };
}

test('floe-embed beats its base and chance on held-out Brown inverse cloze and WordNet reverse dictionary', async () => {
  const [embed, base] = await Promise.all([Embedder.open(model('floe-embed')), Embedder.open(model('floe-brown'), { pooling: 'mean' })]);
  for (const set of [slice(brownRetrieval().eval, 100), slice(wordnetRetrieval().eval, 120)]) {
    const e = denseScores(embed, set), b = denseScores(base, set), c = chance(set);
    assert.ok(e.mrr > b.mrr, `${set.name}: floe-embed MRR ${e.mrr.toFixed(3)} vs floe-brown ${b.mrr.toFixed(3)}`);
    assert.ok(e.mrr > 3 * c.mrr, `${set.name}: floe-embed MRR ${e.mrr.toFixed(3)} vs chance ${c.mrr.toFixed(3)}`);
  }
});

test('floe-embed beats BM25 on a held-out WordNet reverse-dictionary slice (300 definitions)', async () => {
  const embed = await Embedder.open(model('floe-embed'));
  const set = slice(wordnetRetrieval().eval, 300);
  const e = denseScores(embed, set), b = bm25Scores(set);
  assert.ok(e.mrr > b.mrr, `${set.name}: floe-embed MRR ${e.mrr.toFixed(3)} vs BM25 ${b.mrr.toFixed(3)}`);
});
