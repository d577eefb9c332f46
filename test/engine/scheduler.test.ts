// Scheduler: token budget (decode first, then prompt chunks), chunked prefill order, sequence cap, preemption and resume.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { KvManager } from '../../src/engine/block-pool.js';
import { Scheduler, type SchedSeq, type SchedulerOutput } from '../../src/engine/scheduler.js';

class FakeSeq implements SchedSeq {
  numComputed = 0;
  readonly tokens: number[];
  constructor(readonly id: string, promptLen: number, readonly usePrefixCache = true, base = 0) {
    this.tokens = Array.from({ length: promptLen }, (_, i) => base + i);
  }
}

/** What the engine does after the forward: every sequence that reached its end gets a new token. */
function sampleAll(out: SchedulerOutput, seqs: Map<string, FakeSeq>, kv?: KvManager): void {
  for (const s of out.seqs) {
    const q = seqs.get(s.id)!;
    kv?.cacheComputed(s.id, q.tokens, q.numComputed);
    if (q.numComputed === q.tokens.length) q.tokens.push(1000 + q.tokens.length);
  }
}

function mk(...specs: [string, number][]): Map<string, FakeSeq> {
  return new Map(specs.map(([id, n], i) => [id, new FakeSeq(id, n, true, i * 10_000)]));
}

test('decode tokens of running sequences first, then a chunk of the waiting prompt within the budget', () => {
  const sched = new Scheduler(new KvManager(100, 16), { maxBatchedTokens: 32, maxNumSeqs: 8 });
  const seqs = mk(['a', 5], ['b', 7], ['c', 3]);
  for (const s of seqs.values()) sched.add(s);
  const first = sched.schedule();
  assert.deepEqual(first.seqs.map((s) => [s.id, s.start, s.numTokens]), [['a', 0, 5], ['b', 0, 7], ['c', 0, 3]]);
  assert.equal(first.numBatchedTokens, 15);
  sampleAll(first, seqs);
  const long = new FakeSeq('long', 100, true, 99_000);
  seqs.set('long', long);
  sched.add(long);
  const second = sched.schedule();
  assert.deepEqual(second.seqs.map((s) => [s.id, s.start, s.numTokens]), [['a', 5, 1], ['b', 7, 1], ['c', 3, 1], ['long', 0, 29]]);
  assert.equal(second.numBatchedTokens, 32);
  sampleAll(second, seqs);
  // the long prompt continues as a running sequence, after the decodes
  const third = sched.schedule();
  assert.deepEqual(third.seqs.map((s) => [s.id, s.start, s.numTokens]), [['a', 6, 1], ['b', 8, 1], ['c', 4, 1], ['long', 29, 29]]);
  assert.equal(long.numComputed, 58);
  assert.equal(third.seqs[3]!.blockTable.length, 4, 'blocks for 58 tokens');
});

test('chunked prefill: prompts in arrival order, a long prompt spread over steps, a waiting prompt gets half the budget beside it', () => {
  const sched = new Scheduler(new KvManager(100, 16), { maxBatchedTokens: 40, maxNumSeqs: 8 });
  const seqs = mk(['x', 90], ['y', 30]);
  for (const s of seqs.values()) sched.add(s);
  const plan: [string, number, number][][] = [];
  for (let i = 0; i < 4; i++) {
    const o = sched.schedule();
    plan.push(o.seqs.map((s) => [s.id, s.start, s.numTokens]));
    assert.ok(o.numBatchedTokens <= 40);
    sampleAll(o, seqs);
  }
  assert.deepEqual(plan, [
    [['x', 0, 40]],
    [['x', 40, 20], ['y', 0, 20]],
    [['x', 60, 30], ['y', 20, 10]],
    [['x', 90, 1], ['y', 30, 1]],
  ]);
});

test('a short prompt arriving during a long prefill is admitted at the next step and decodes beside it', () => {
  const sched = new Scheduler(new KvManager(100, 16), { maxBatchedTokens: 64, maxNumSeqs: 8 });
  const seqs = mk(['long', 600]);
  sched.add(seqs.get('long')!);
  sampleAll(sched.schedule(), seqs);
  const short = new FakeSeq('short', 5, true, 50_000);
  seqs.set('short', short);
  sched.add(short);
  const o = sched.schedule();
  // the short prompt takes what it needs (up to half the budget), the long prefill the rest
  assert.deepEqual(o.seqs.map((s) => [s.id, s.start, s.numTokens]), [['long', 64, 59], ['short', 0, 5]]);
  sampleAll(o, seqs);
  // nothing waits: the long prefill leaves one token for the short one's decode (its stream is not held up either)
  assert.deepEqual(sched.schedule().seqs.map((s) => [s.id, s.start, s.numTokens]), [['long', 123, 63], ['short', 5, 1]]);
});

test('maxNumSeqs caps the running set; the rest waits', () => {
  const sched = new Scheduler(new KvManager(100, 16), { maxBatchedTokens: 512, maxNumSeqs: 2 });
  const seqs = mk(['a', 3], ['b', 3], ['c', 3]);
  for (const s of seqs.values()) sched.add(s);
  const o = sched.schedule();
  assert.deepEqual(o.seqs.map((s) => s.id), ['a', 'b']);
  assert.equal(sched.waiting.length, 1);
  sampleAll(o, seqs);
  sched.finish('a');
  assert.deepEqual(sched.schedule().seqs.map((s) => s.id), ['b', 'c']);
});

test('out of blocks: the newest running sequence is preempted, put first in line, and recomputed with its output later', () => {
  const L = 4;
  const kv = new KvManager(6, L); // 24 tokens
  const sched = new Scheduler(kv, { maxBatchedTokens: 64, maxNumSeqs: 8 });
  const seqs = mk(['old', 8], ['new', 8]);
  for (const s of seqs.values()) sched.add(s);
  let o = sched.schedule();
  assert.equal(kv.pool.numUsed, 4);
  sampleAll(o, seqs, kv);
  // each decode step adds a token; at 12 tokens each both need a 4th block, the pool has 6
  let preemptedAt = -1;
  for (let step = 0; step < 8 && preemptedAt < 0; step++) {
    o = sched.schedule();
    if (o.preempted.length > 0) preemptedAt = step;
    sampleAll(o, seqs, kv);
  }
  assert.ok(preemptedAt >= 0, 'a preemption happened');
  assert.deepEqual(o.preempted, ['new']);
  assert.equal(sched.preemptions, 1);
  const victim = seqs.get('new')!;
  assert.equal(victim.numComputed, 0);
  assert.ok(victim.tokens.length > 8, 'its output so far is kept');
  assert.equal(sched.waiting[0], victim);
  assert.deepEqual(o.seqs.map((s) => s.id), ['old'], 'no new admissions in a step that preempted');
  // finishing the old one lets the victim back in: it recomputes prompt + output (prefix cache aside)
  sched.finish('old');
  o = sched.schedule();
  assert.deepEqual(o.seqs.map((s) => s.id), ['new']);
  const s = o.seqs[0]!;
  assert.equal(s.start + s.numTokens, victim.tokens.length, 'everything but nothing more is recomputed');
  assert.ok(s.prefixHit > 0, 'its own released full blocks are found in the prefix cache');
  assert.equal(s.start, s.prefixHit);
});

test('a running sequence that cannot grow even alone preempts itself instead of looping', () => {
  const kv = new KvManager(2, 4);
  const sched = new Scheduler(kv, { maxBatchedTokens: 64, maxNumSeqs: 8 });
  const seqs = mk(['a', 8]);
  sched.add(seqs.get('a')!);
  const o = sched.schedule();
  sampleAll(o, seqs); // 9 tokens now, needs a 3rd block
  const o2 = sched.schedule();
  assert.deepEqual(o2.preempted, ['a']);
  assert.equal(o2.seqs.length, 0);
});
