// MinHash against exact Jaccard on fresh random sets; LSH recall on planted near-duplicates and no false merges.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { chooseBands, estimateJaccard, exactJaccard, LshIndex, MinHasher, shingles } from '../../src/platform/synth/minhash.js';

const rand = (() => { let s = (Date.now() ^ 0x9e3779b9) >>> 0; return () => { s = (Math.imul(s ^ (s >>> 15), 0x2c1b3c6d) + 0x6d2b79f5) >>> 0; return s / 2 ** 32; }; })();

test('MinHash Jaccard estimates track exact Jaccard on random shingle sets (error ~ sqrt(J(1-J)/K))', () => {
  const K = 256;
  const h = new MinHasher(K, Math.floor(rand() * 1e6));
  let sumErr = 0;
  let worst = 0;
  const trials = 60;
  for (let t = 0; t < trials; t++) {
    const n = 50 + Math.floor(rand() * 200);
    const shared = Math.floor(rand() * n);
    const base = Array.from({ length: 3 * n }, () => Math.floor(rand() * 2 ** 32));
    const a = base.slice(0, n);
    const b = [...base.slice(0, shared), ...base.slice(n, 2 * n - shared)];
    const j = exactJaccard(a, b);
    const e = estimateJaccard(h.signature(Uint32Array.from(a)), h.signature(Uint32Array.from(b)));
    const err = Math.abs(e - j);
    sumErr += err;
    worst = Math.max(worst, err / Math.max(Math.sqrt((j * (1 - j)) / K), 0.01));
  }
  assert.ok(sumErr / trials < 0.04, `mean abs error ${sumErr / trials}`);
  assert.ok(worst < 5, `worst error ${worst} standard deviations`);
});

test('identical sets estimate 1, disjoint sets estimate ~0', () => {
  const h = new MinHasher(128, 7);
  const a = Uint32Array.from({ length: 100 }, () => Math.floor(rand() * 2 ** 32));
  const b = Uint32Array.from({ length: 100 }, () => Math.floor(rand() * 2 ** 32));
  assert.equal(estimateJaccard(h.signature(a), h.signature(a)), 1);
  assert.ok(estimateJaccard(h.signature(a), h.signature(b)) < 0.05);
});

test('chooseBands puts the S-curve midpoint at or below the threshold', () => {
  for (const t of [0.5, 0.7, 0.8, 0.9]) {
    const { bands, rows } = chooseBands(128, t);
    assert.equal(bands * rows, 128);
    const mid = (1 / bands) ** (1 / rows);
    assert.ok(mid <= t, `t=${t}: midpoint ${mid}`);
    // a pair at the threshold shares a band almost surely
    assert.ok(1 - (1 - t ** rows) ** bands > 0.97, `t=${t}: P(candidate) ${1 - (1 - t ** rows) ** bands}`);
  }
});

const VOCAB = Array.from({ length: 3000 }, (_, i) => `w${i.toString(36)}`);
const doc = (n: number) => Array.from({ length: n }, () => VOCAB[Math.floor(rand() * VOCAB.length)]!);
/** Change `k` random words: a planted near-duplicate. */
const perturb = (d: string[], k: number) => { const c = [...d]; for (let i = 0; i < k; i++) c[Math.floor(rand() * c.length)] = VOCAB[Math.floor(rand() * VOCAB.length)]!; return c; };

test('LSH finds planted near-duplicates (recall) and merges no unrelated texts (precision), against exact shingle Jaccard', () => {
  const threshold = 0.7;
  const idx = new LshIndex(threshold);
  const originals = Array.from({ length: 200 }, () => doc(60 + Math.floor(rand() * 60)));
  originals.forEach((d, i) => assert.equal(idx.add(`o${i}`, d.join(' ')), null, `original ${i} merged`));
  let should = 0;
  let found = 0;
  let wrong = 0;
  for (let i = 0; i < originals.length; i++) {
    const d = originals[i]!;
    const near = perturb(d, 1 + Math.floor(rand() * 3)); // a few words changed: shingle Jaccard mostly 0.8-0.95
    const j = exactJaccard(shingles(d.join(' ')), shingles(near.join(' ')));
    const hit = idx.query(near.join(' '));
    if (j >= threshold + 0.1) { should++; if (hit?.id === `o${i}`) found++; }
    if (hit && hit.id !== `o${i}`) wrong++;
  }
  assert.ok(should > 150, `planted pairs above threshold: ${should}`);
  assert.ok(found / should >= 0.97, `recall ${found}/${should}`);
  assert.equal(wrong, 0);
  // fresh unrelated texts are not taken for duplicates
  let fp = 0;
  for (let i = 0; i < 200; i++) if (idx.query(doc(80).join(' '))) fp++;
  assert.equal(fp, 0);
});

test('exact duplicates up to case and whitespace are caught even when too short to shingle', () => {
  const idx = new LshIndex(0.9);
  assert.equal(idx.add('a', 'Hello  World'), null);
  assert.deepEqual(idx.add('b', ' hello world\n'), { id: 'a', similarity: 1 });
  assert.equal(idx.size, 1);
});
