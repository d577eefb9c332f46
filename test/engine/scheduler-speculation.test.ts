// Scheduler with speculation: a decoding sequence gets k + 1 positions, draft slots never cause preemption, and
// unused draft slots are given back.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { KvManager } from '../../src/engine/block-pool.js';
import { Scheduler, type SchedSeq } from '../../src/engine/scheduler.js';

class Seq implements SchedSeq {
  numComputed = 0;
  lookahead = 0;
  readonly usePrefixCache = true;
  constructor(readonly id: string, readonly tokens: number[]) {}
}

test('lookahead: k + 1 positions for a decoding sequence, none while prefilling, blocks for all of them', () => {
  const kv = new KvManager(10, 4);
  const sched = new Scheduler(kv, { maxBatchedTokens: 64, maxNumSeqs: 4 });
  const a = new Seq('a', [1, 2, 3, 4, 5, 6]);
  a.lookahead = 3;
  sched.add(a);
  const first = sched.schedule();
  assert.deepEqual(first.seqs.map((s) => [s.start, s.numTokens, s.numLookahead]), [[0, 6, 0]], 'prefill has no draft slots');
  a.tokens.push(7);
  const second = sched.schedule();
  assert.deepEqual(second.seqs.map((s) => [s.start, s.numTokens, s.numLookahead]), [[6, 4, 3]]);
  assert.equal(kv.blockTable('a').length, 3, 'positions 0..9 need 3 blocks of 4');
  assert.equal(a.numComputed, 10);
  // the proposer found only one token: two slots go back
  const back = sched.retract(second, new Map([['a', 2]]));
  assert.deepEqual(back.seqs.map((s) => [s.start, s.numTokens, s.numLookahead]), [[6, 2, 1]]);
  assert.equal(back.numBatchedTokens, 2);
  assert.equal(a.numComputed, 8);
  assert.throws(() => sched.retract(back, new Map([['a', 2]])), /has 1 draft slots, cannot give back 2/);
});

test('lookahead shrinks to the budget and is dropped, not paid for with a preemption, when blocks run short', () => {
  const kv = new KvManager(4, 4); // 16 positions
  const sched = new Scheduler(kv, { maxBatchedTokens: 3, maxNumSeqs: 4 });
  const a = new Seq('a', [1, 2, 3, 4, 5, 6, 7]);
  const b = new Seq('b', [8, 9, 10, 11, 12, 13, 14, 15]);
  sched.add(a);
  sched.add(b);
  for (let i = 0; i < 10 && (a.numComputed < 7 || b.numComputed < 8); i++) sched.schedule(); // prefill in chunks of 3: a 2 blocks, b 2 blocks
  assert.deepEqual([a.numComputed, b.numComputed, kv.pool.numFree], [7, 8, 0]);
  a.lookahead = 4;
  a.tokens.push(16);
  const step = sched.schedule();
  // a at 7 computed of 8 wants 1 + 4 = 5 (budget 3 → 3 = 1 + 2 slots), needing 10 positions (3 blocks): none free
  assert.deepEqual(step.seqs.map((s) => [s.id, s.numTokens, s.numLookahead]), [['a', 1, 0]]);
  assert.equal(step.preempted.length, 0);
  assert.equal(sched.preemptions, 0);
});

test('an older sequence gets no draft slots from the block a younger one needs for its next token', () => {
  const kv = new KvManager(5, 4);
  const sched = new Scheduler(kv, { maxBatchedTokens: 64, maxNumSeqs: 4 });
  const a = new Seq('a', [1, 2, 3, 4, 5, 6, 7]); // 2 blocks, room for its next token
  const b = new Seq('b', [9, 10, 11, 12, 13, 14, 15, 16]); // 2 blocks, full: its next token needs the free block
  sched.add(a);
  sched.add(b);
  sched.schedule();
  assert.equal(kv.pool.numFree, 1);
  a.tokens.push(17);
  b.tokens.push(18);
  a.lookahead = 3; // would take the last free block, which b needs
  const step = sched.schedule();
  assert.deepEqual(step.seqs.map((s) => [s.id, s.numTokens, s.numLookahead]), [['a', 1, 0], ['b', 1, 0]]);
  assert.equal(sched.preemptions, 0);
});
