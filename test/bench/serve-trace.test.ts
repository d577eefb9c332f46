// Serving-benchmark trace and statistics: seeded determinism, ranges, Poisson rate, percentiles, steady decode window.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  dist, makeTrace, percentile, seededRandom, singleStreamRate, steadyDecodeRate, summarize, type RequestRecord,
} from '../../bench/serve-trace.js';

const base = { numRequests: 300, promptMin: 20, promptMax: 40, outputMin: 5, outputMax: 9, rate: 4, vocabSize: 1000, seed: 3 };

test('makeTrace: same seed same trace, other seed other trace; lengths in range; no bos/eos ids', () => {
  const a = makeTrace(base);
  assert.deepEqual(makeTrace(base), a);
  assert.notDeepEqual(makeTrace({ ...base, seed: 4 }), a);
  for (const r of a) {
    assert.ok(r.prompt.length >= 20 && r.prompt.length <= 40, `prompt length ${r.prompt.length}`);
    assert.ok(r.outputTokens >= 5 && r.outputTokens <= 9, `output ${r.outputTokens}`);
    for (const id of r.prompt) assert.ok(Number.isInteger(id) && id >= 0 && id < 1000 && id !== 256 && id !== 257, `id ${id}`);
  }
  // every length of the range occurs (uniform draws), arrivals ascend from 0
  assert.equal(new Set(a.map((r) => r.outputTokens)).size, 5);
  assert.equal(a[0]!.arrivalS, 0);
  for (let i = 1; i < a.length; i++) assert.ok(a[i]!.arrivalS >= a[i - 1]!.arrivalS);
});

test('makeTrace: Poisson arrivals have mean gap 1/rate (within 4 standard errors)', () => {
  const rate = 2 + seededRandom(Date.now() >>> 0)() * 8;
  const n = 4000;
  const t = makeTrace({ ...base, numRequests: n, promptMin: 1, promptMax: 1, rate, seed: Date.now() >>> 0 });
  const meanGap = t[n - 1]!.arrivalS / (n - 1);
  // exponential gaps: standard deviation = mean, so the mean's standard error is (1/rate)/sqrt(n-1)
  assert.ok(Math.abs(meanGap - 1 / rate) < 4 / rate / Math.sqrt(n - 1), `mean gap ${meanGap} vs ${1 / rate}`);
});

test('makeTrace: fixed arrivals are i / rate exactly, with the same lengths and tokens as the Poisson trace', () => {
  const rate = 0.1 + seededRandom(Date.now() >>> 0)() * 5;
  const fixed = makeTrace({ ...base, rate, arrivals: 'fixed' });
  fixed.forEach((r, i) => assert.ok(Math.abs(r.arrivalS - i / rate) < 1e-9, `request ${i} at ${r.arrivalS}, want ${i / rate}`));
  const poisson = makeTrace({ ...base, rate });
  assert.notDeepEqual(fixed.map((r) => r.arrivalS), poisson.map((r) => r.arrivalS));
  assert.deepEqual(fixed.map(({ arrivalS: _, ...r }) => r), poisson.map(({ arrivalS: _, ...r }) => r));
});

test('makeTrace: rejects bad options', () => {
  assert.throws(() => makeTrace({ ...base, promptMin: 50 }), /promptMin <= promptMax/);
  assert.throws(() => makeTrace({ ...base, rate: 0 }), /rate > 0/);
});

test('percentile and dist match a sort-based reference on random data', () => {
  const rnd = seededRandom(Date.now() >>> 0);
  const xs = Array.from({ length: 1 + Math.floor(rnd() * 200) }, () => rnd() * 1000);
  const s = [...xs].sort((a, b) => a - b);
  for (const q of [0, 0.5, 0.9, 0.99, 1]) {
    const pos = (s.length - 1) * q;
    const ref = s[Math.floor(pos)]! * (1 - (pos - Math.floor(pos))) + s[Math.ceil(pos)]! * (pos - Math.floor(pos));
    assert.ok(Math.abs(percentile(s, q) - ref) < 1e-9);
  }
  const d = dist(xs)!;
  assert.equal(d.max, s[s.length - 1]);
  assert.ok(Math.abs(d.mean - xs.reduce((a, b) => a + b, 0) / xs.length) < 1e-9);
  assert.equal(dist([]), null);
});

/** Streams emitting one token every `period` ms from their own first-token time. */
function synthetic(starts: number[], tokens: number[], period: number): RequestRecord[] {
  return starts.map((st, i) => {
    const tokenMs = Array.from({ length: tokens[i]! }, (_, k) => st + k * period);
    return { index: i, promptTokens: 10, sentMs: 0, firstTokenMs: tokenMs[0]!, endMs: tokenMs[tokenMs.length - 1]!, outputTokens: tokenMs.length, tokenMs, error: null };
  });
}

test('steadyDecodeRate: S streams at one token per period give S/period, whatever their offsets', () => {
  const rnd = seededRandom(Date.now() >>> 0);
  const S = 2 + Math.floor(rnd() * 20);
  const period = 5 + rnd() * 50;
  const starts = Array.from({ length: S }, () => Math.floor(rnd() * 5) * period); // prefills end on step boundaries
  const recs = synthetic(starts, starts.map(() => 60 + Math.floor(rnd() * 10)), period);
  const r = steadyDecodeRate(recs)!;
  assert.ok(Math.abs(r.tps - S / (period / 1000)) / (S / (period / 1000)) < 1e-9, `rate ${r.tps} vs ${S / (period / 1000)}`);
  assert.ok(Math.abs(singleStreamRate(recs[0]!)! - 1000 / period) < 1e-6);
  // a failed stream or a too-short window gives no figure
  assert.equal(steadyDecodeRate([...recs.slice(1), { ...recs[0]!, error: 'x' }]), null);
  assert.equal(steadyDecodeRate(synthetic([0, 1000], [3, 3], 10)), null);
});

test('summarize: TTFT, TPOT, e2e and throughput from records', () => {
  const trace = makeTrace({ ...base, numRequests: 2 });
  const recs: RequestRecord[] = [
    { index: 0, promptTokens: 1, sentMs: 0, firstTokenMs: 100, endMs: 500, outputTokens: 5, tokenMs: [100, 200, 300, 400, 500], error: null },
    { index: 1, promptTokens: 1, sentMs: 200, firstTokenMs: null, endMs: 300, outputTokens: 0, tokenMs: [], error: 'HTTP 500' },
  ];
  const s = summarize(trace, recs);
  assert.equal(s.completed, 1);
  assert.equal(s.errors, 1);
  assert.deepEqual(s.firstErrors, ['HTTP 500']);
  assert.equal(s.ttftMs!.p50, 100);
  assert.equal(s.tpotMs!.p50, 100);
  assert.equal(s.e2eMs!.p50, 500);
  assert.equal(s.outputTps, 5 / 0.5);
  assert.equal(s.shortOutputs, recs[0]!.outputTokens < trace[0]!.outputTokens ? 1 : 0);
});
