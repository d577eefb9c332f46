// bench/retrieval.ts scoring: reciprocal-rank fusion against ranks counted here on fresh random scores (with ties).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { rrfScorer } from '../../bench/retrieval.js';
import { rand } from '../engine/helpers.js';

const SEED = process.env.FLOE_SEED !== undefined ? Number(process.env.FLOE_SEED) >>> 0 : (Math.random() * 2 ** 32) >>> 0;

test(`rrfScorer: Σ 1/(60 + rank), a tied document ranked after every document tied with it (seed ${SEED})`, () => {
  const r = rand(SEED);
  const N = 40, Q = 5;
  // scorer a: continuous scores; scorer b: a few levels, so many ties
  const a = Array.from({ length: Q }, () => Array.from({ length: N }, () => r()));
  const b = Array.from({ length: Q }, () => Array.from({ length: N }, () => Math.floor(r() * 4)));
  const fused = rrfScorer([(q) => a[q]!, (q) => b[q]!], N);
  const rank = (s: number[], d: number) => s.filter((x) => x >= s[d]!).length; // 1 + those above + those tied (itself counted)
  for (let q = 0; q < Q; q++) {
    const got = Array.from(fused(q));
    for (let d = 0; d < N; d++) {
      const want = 1 / (60 + rank(a[q]!, d)) + 1 / (60 + rank(b[q]!, d));
      assert.ok(Math.abs(got[d]! - want) < 1e-12, `query ${q} doc ${d}: ${got[d]} vs ${want}`);
    }
  }
});
