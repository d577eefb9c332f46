// The embedder's training pairs (scripts/make-embed-pairs.ts) hold no evaluation text: no query, positive or mined
// negative equals a held-out query or document of any retrieval set; mined negatives are never the pair's own positive.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { brownRetrieval, wordnetRetrieval, wordnetWords } from '../../bench/retrieval-data.js';
import { makePairs } from '../../scripts/make-embed-pairs.js';

const SEED = Number(process.env.FLOE_SEED ?? (Date.now() % 1000));

test(`training pairs (with BM25-mined negatives and lemma pairs) share no text with the held-out sets (seed ${SEED})`, { timeout: 600_000 }, () => {
  const { pairs, counts } = makePairs({ brown: 600, brownPerPassage: 2, wordnet: 800, lemmas: 1500, hardNegatives: true, seed: SEED });
  assert.equal(pairs.length, 600 + 800 + 1500);
  assert.ok(counts.withNegative! > 1000, `mined negatives: ${counts.withNegative}`);
  const held = new Set<string>();
  for (const set of [brownRetrieval().eval, wordnetRetrieval().eval, wordnetWords()]) {
    for (const d of set.docs) held.add(d);
    for (const q of set.queries) held.add(q.text);
  }
  // the same definition text can name two synsets (one held out, one not): those are the only shared texts allowed
  const wnTrainDefs = new Set(wordnetRetrieval().train.map((p) => p.query));
  let shared = 0;
  for (const p of pairs) {
    for (const t of [p.query, p.positive, p.negative]) {
      if (t === undefined || !held.has(t)) continue;
      assert.ok(wnTrainDefs.has(t) || /^[^,]+(, [^,]+)*$/.test(t), `evaluation text in training: ${JSON.stringify(t).slice(0, 120)}`);
      shared++;
    }
    if (p.negative !== undefined) assert.notEqual(p.negative, p.positive);
  }
  assert.ok(shared <= pairs.length * 0.01, `${shared} shared texts`);
});
