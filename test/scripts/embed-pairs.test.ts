// The embedder's training pairs (scripts/make-embed-pairs.ts) hold no evaluation text: no query, positive or mined
// negative equals a held-out query or document of any retrieval set; mined negatives are never the pair's own positive.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { brownRetrieval, wordnetRetrieval, wordnetWords } from '../../bench/retrieval-data.js';
import { Bm25Index, lemmaPairs, makePairs } from '../../scripts/make-embed-pairs.js';
import { Rng } from '../../src/train/rng.js';

const SEED = Number(process.env.FLOE_SEED ?? (Date.now() % 1000));

test(`training pairs (with BM25-mined negatives and lemma pairs) share no text with the held-out sets (seed ${SEED})`, { timeout: 600_000 }, () => {
  const { pairs, counts } = makePairs({ brown: 600, brownPerPassage: 2, wordnet: 800, lemmas: 1500, hardNegatives: true, lemmaNegatives: true, seed: SEED });
  assert.equal(pairs.length, 600 + 800 + 1500);
  assert.ok(counts.withNegative! > 2400, `mined negatives: ${counts.withNegative}`);
  // lemma pairs (definition → "word, word") carry mined word lists as negatives (v3's recipe)
  const lemmaNegs = pairs.filter((p) => p.negative !== undefined && /^[^,.;]+(, [^,.;]+)*$/.test(p.positive) && /^[^,.;]+(, [^,.;]+)*$/.test(p.negative));
  assert.ok(lemmaNegs.length > 1000, `lemma pairs with a mined word-list negative: ${lemmaNegs.length}`);
  const held = new Set<string>();
  for (const set of [brownRetrieval().eval, wordnetRetrieval().eval, wordnetWords()]) {
    for (const d of set.docs) held.add(d);
    for (const q of set.queries) held.add(q.text);
  }
  // a text may name a held-out synset and a training one at once: a word list ("run"), a definition or an example that
  // two synsets share. Word lists are vocabulary, not answers, and pass; shared definitions and examples stay rare.
  const wn = wordnetRetrieval().train;
  const lemmas = lemmaPairs(); // training synsets with or without examples
  const trainLists = new Set(lemmas.map((p) => p.positive));
  const wnTrainTexts = new Set([...wn.map((p) => p.query), ...wn.map((p) => p.positive), ...lemmas.map((p) => p.query)]);
  let shared = 0;
  for (const p of pairs) {
    for (const t of [p.query, p.positive, p.negative]) {
      if (t === undefined || !held.has(t) || trainLists.has(t)) continue;
      assert.ok(wnTrainTexts.has(t), `evaluation text in training: ${JSON.stringify(t).slice(0, 120)}`);
      shared++;
    }
    if (p.negative !== undefined) assert.notEqual(p.negative, p.positive);
  }
  assert.ok(shared <= pairs.length * 0.01, `${shared} shared texts`);
});

test(`Bm25Index.top keeps the n best of a full sort by (score desc, index asc) (seed ${SEED})`, () => {
  const r = new Rng(SEED);
  const vocab = Array.from({ length: 40 }, (_, i) => `w${i}`);
  const docs = Array.from({ length: 300 }, () => Array.from({ length: 1 + r.int(12) }, () => vocab[r.int(r.int(2) ? 8 : 40)]!).join(' '));
  docs.push(docs[5]!, docs[5]!); // exact ties: the lower index first
  const idx = new Bm25Index(docs);
  // reference: score every document directly, then sort all of them
  const tf = docs.map((d) => { const m = new Map<string, number>(); for (const w of d.split(' ')) m.set(w, (m.get(w) ?? 0) + 1); return m; });
  const len = docs.map((d) => d.split(' ').length), avg = len.reduce((a, b) => a + b, 0) / docs.length, N = docs.length;
  for (let q = 0; q < 200; q++) {
    const query = Array.from({ length: 1 + r.int(5) }, () => vocab[r.int(40)]!).join(' ');
    const n = 1 + r.int(15);
    const score = new Map<number, number>();
    for (const w of new Set(query.split(' '))) {
      const df = tf.filter((m) => m.has(w)).length;
      if (df === 0 || df > N / 4) continue;
      const idf = Math.log(1 + (N - df + 0.5) / (df + 0.5));
      tf.forEach((m, j) => { const f = m.get(w); if (f) score.set(j, (score.get(j) ?? 0) + idf * f * (1.2 + 1) / (f + 1.2 * (1 - 0.75 + 0.75 * len[j]! / avg))); });
    }
    const want = [...score.entries()].sort((a, b) => b[1] - a[1] || a[0] - b[0]).slice(0, n).map(([j]) => j);
    assert.deepEqual(idx.top(query, n), want, `query ${JSON.stringify(query)}, n ${n}`);
  }
});

test(`sourceBatches writes runs of B pairs from one source (seed ${SEED})`, { timeout: 600_000 }, () => {
  const B = 16;
  const { pairs, counts } = makePairs({ brown: 100, brownPerPassage: 1, wordnet: 90, lemmas: 70, hardNegatives: false, sourceBatches: B, seed: SEED });
  // whole runs only: 6 + 5 + 4 runs of 16
  assert.equal(pairs.length, (6 + 5 + 4) * B);
  assert.equal(counts.written, pairs.length);
  const brownQ = new Set(brownRetrieval({ seed: SEED }).train.map((p) => p.query));
  // by the whole (query, positive) pair: a positive alone can be both (seed 549: "obstruction of justice" is a WordNet
  // example's positive and a lemma pair's)
  const key = (p: { query: string; positive: string }) => `${p.query}\u0000${p.positive}`;
  const lemmaP = new Set(lemmaPairs().map(key));
  const wnPairs = new Set(wordnetRetrieval().train.map(key));
  const kind = (p: { query: string; positive: string }) => (brownQ.has(p.query) ? 'brown' : wnPairs.has(key(p)) ? 'wordnet' : lemmaP.has(key(p)) ? 'lemma' : '?');
  const kinds = new Map<string, number>();
  for (let i = 0; i < pairs.length; i += B) {
    const run = pairs.slice(i, i + B).map(kind);
    assert.ok(run.every((k) => k === run[0] && k !== '?'), `run ${i / B}: ${run.join(' ')}`);
    kinds.set(run[0]!, (kinds.get(run[0]!) ?? 0) + 1);
  }
  assert.deepEqual([kinds.get('brown'), kinds.get('wordnet'), kinds.get('lemma')], [6, 5, 4]);
  // the runs are interleaved, not one source after another
  const order = Array.from({ length: pairs.length / B }, (_, i) => kind(pairs[i * B]!));
  assert.ok(order.some((k, i) => i > 0 && k !== order[i - 1] && order.slice(0, i - 1).includes(k)), order.join(' '));
});
