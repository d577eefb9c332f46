// The batch lane: interactive prompts are admitted ahead of waiting batch prompts, take a running batch sequence's
// slot when none is free, batch sequences are preempted first under KV pressure; batch outputs are unchanged.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { KvManager } from '../../src/engine/block-pool.js';
import { Engine } from '../../src/engine/engine.js';
import { Scheduler, type SchedSeq, type SchedulerOutput } from '../../src/engine/scheduler.js';
import type { EngineOutput } from '../../src/engine/protocol.js';
import { collect, fixtureModel, genReq, rand, randomPrompt, runAll, type Collected } from './helpers.js';

class FakeSeq implements SchedSeq {
  numComputed = 0;
  readonly tokens: number[];
  readonly usePrefixCache = false;
  constructor(readonly id: string, promptLen: number, readonly lowPriority: boolean, base: number) {
    this.tokens = Array.from({ length: promptLen }, (_, i) => base + i);
  }
}

function sampleAll(out: SchedulerOutput, seqs: Map<string, FakeSeq>): void {
  for (const s of out.seqs) {
    const q = seqs.get(s.id)!;
    if (q.numComputed === q.tokens.length) q.tokens.push(1000 + q.tokens.length);
  }
}

test('a waiting interactive prompt is admitted before batch prompts that arrived earlier', () => {
  const sched = new Scheduler(new KvManager(200, 16), { maxBatchedTokens: 64, maxNumSeqs: 4 });
  const seqs = new Map<string, FakeSeq>();
  const add = (s: FakeSeq) => { seqs.set(s.id, s); sched.add(s); };
  for (let i = 0; i < 6; i++) add(new FakeSeq(`b${i}`, 8, true, i * 100));
  add(new FakeSeq('i0', 8, false, 9000));
  add(new FakeSeq('b6', 8, true, 9100));
  add(new FakeSeq('i1', 8, false, 9200));
  assert.deepEqual(sched.waiting.map((s) => s.id), ['i0', 'i1', 'b0', 'b1', 'b2', 'b3', 'b4', 'b5', 'b6']);
  const first = sched.schedule();
  assert.deepEqual(first.seqs.map((s) => s.id), ['i0', 'i1', 'b0', 'b1']);
});

test('an interactive prompt takes the newest running batch sequence\'s slot when all are busy; that one waits at the head of its lane', () => {
  const sched = new Scheduler(new KvManager(200, 16), { maxBatchedTokens: 64, maxNumSeqs: 3 });
  const seqs = new Map<string, FakeSeq>();
  const add = (s: FakeSeq) => { seqs.set(s.id, s); sched.add(s); };
  for (let i = 0; i < 5; i++) add(new FakeSeq(`b${i}`, 8, true, i * 100));
  sampleAll(sched.schedule(), seqs);
  assert.deepEqual(sched.running.map((s) => s.id), ['b0', 'b1', 'b2']);
  add(new FakeSeq('i0', 8, false, 9000));
  const out = sched.schedule();
  assert.deepEqual(out.preempted, ['b2']);
  assert.deepEqual(out.seqs.map((s) => [s.id, s.numTokens]), [['b0', 1], ['b1', 1], ['i0', 8]]);
  assert.deepEqual(sched.waiting.map((s) => s.id), ['b2', 'b3', 'b4']);
  assert.equal(seqs.get('b2')!.numComputed, 0);
});

test('under KV pressure a batch sequence is preempted before a newer interactive one', () => {
  // 4 blocks of 4 tokens: two sequences of 7 tokens each fill them at their next token
  const sched = new Scheduler(new KvManager(4, 4), { maxBatchedTokens: 64, maxNumSeqs: 4 });
  const seqs = new Map<string, FakeSeq>();
  const add = (s: FakeSeq) => { seqs.set(s.id, s); sched.add(s); };
  add(new FakeSeq('b0', 7, true, 0));
  sampleAll(sched.schedule(), seqs);
  add(new FakeSeq('i0', 7, false, 500));
  sampleAll(sched.schedule(), seqs);
  assert.deepEqual(sched.running.map((s) => s.id), ['b0', 'i0']);
  // b0 (9 tokens) needs a third block, none is free: b0, older but batch, goes; without lanes the newest (i0) would
  const out = sched.schedule();
  assert.deepEqual(out.preempted, ['b0']);
  assert.deepEqual(out.seqs.map((s) => [s.id, s.numTokens]), [['i0', 1]]);
  assert.deepEqual(sched.waiting.map((s) => s.id), ['b0']);
});

test('an interactive prompt whose first chunk finds too few free KV blocks takes them from the newest batch sequence', () => {
  // 5 blocks of 4 tokens: two running batch sequences of 8 tokens hold 4; the interactive prompt of 8 needs 2
  const sched = new Scheduler(new KvManager(5, 4), { maxBatchedTokens: 64, maxNumSeqs: 8 });
  const seqs = new Map<string, FakeSeq>();
  const add = (s: FakeSeq) => { seqs.set(s.id, s); sched.add(s); };
  add(new FakeSeq('b0', 7, true, 0));
  add(new FakeSeq('b1', 7, true, 100));
  sampleAll(sched.schedule(), seqs);
  assert.equal(sched.kv.pool.numFree, 1);
  add(new FakeSeq('i0', 8, false, 500));
  const out = sched.schedule();
  assert.deepEqual(out.preempted, ['b1']);
  assert.deepEqual(out.seqs.map((s) => [s.id, s.numTokens]), [['b0', 1], ['i0', 8]]);
  assert.deepEqual(sched.waiting.map((s) => s.id), ['b1']);
});

test('engine: an interactive request added while batch requests saturate it is scheduled at the next step; batch outputs unchanged', async () => {
  const model = await fixtureModel();
  const r = rand(7);
  const prompts = Array.from({ length: 12 }, () => randomPrompt(r, 6));
  const inter = randomPrompt(r, 6);
  const opts = { kvDtype: 'f32' as const, kvCacheMemory: 2 ** 22, maxBatchedTokens: 64, maxNumSeqs: 4 };
  // reference: every request alone in the interactive lane
  const alone = new Engine(model, null, opts);
  prompts.forEach((p, i) => alone.add(genReq(`b${i}`, p, { maxTokens: 6 })));
  alone.add(genReq('i', inter, { maxTokens: 3 }));
  const ref = runAll(alone).byId;

  const engine = new Engine(model, null, opts);
  const byId = new Map<string, Collected>();
  const other: EngineOutput[] = [];
  prompts.forEach((p, i) => engine.add(genReq(`b${i}`, p, { maxTokens: 6, priority: 'batch' })));
  for (let i = 0; i < 2; i++) for (const o of engine.step()) collect(byId, other, o);
  assert.deepEqual(engine.scheduler.running.map((s) => s.id), ['b0/0', 'b1/0', 'b2/0', 'b3/0']);
  const queued = engine.scheduler.waiting.length;
  assert.equal(queued, 8, 'batch requests are queued');
  engine.add(genReq('i', inter, { maxTokens: 3 }));
  const outs = engine.step();
  for (const o of outs) collect(byId, other, o);
  assert.ok(engine.scheduler.running.some((s) => s.id === 'i/0'), 'the interactive request runs after one step');
  assert.ok(outs.some((o) => o.id === 'i'), 'and produced its first token in it');
  assert.deepEqual(engine.scheduler.waiting.map((s) => s.id), ['b3/0', ...prompts.slice(4).map((_, i) => `b${i + 4}/0`)],
    'the newest running batch sequence gave up its slot and waits at the head of the batch lane; no batch prompt was admitted');
  for (let i = 0; engine.hasWork; i++) {
    assert.ok(i < 10_000);
    for (const o of engine.step()) collect(byId, other, o);
  }
  assert.deepEqual(other, []);
  for (const id of [...prompts.map((_, i) => `b${i}`), 'i']) assert.deepEqual(byId.get(id)!.tokens, ref.get(id)!.tokens, id);
});

test('engine: waiting batch requests do not count against --max-queue for an interactive request', async () => {
  const model = await fixtureModel();
  const r = rand(11);
  const engine = new Engine(model, null, { kvDtype: 'f32', kvCacheMemory: 2 ** 22, maxNumSeqs: 2, maxQueue: 2 });
  for (let i = 0; i < 4; i++) engine.add(genReq(`b${i}`, randomPrompt(r, 4), { priority: 'batch' }));
  assert.throws(() => engine.add(genReq('b4', randomPrompt(r, 4), { priority: 'batch' })), (e: Error & { status?: number }) => e.status === 429);
  // two free slots + a queue of two
  for (let i = 0; i < 4; i++) engine.add(genReq(`i${i}`, randomPrompt(r, 4)));
  assert.throws(() => engine.add(genReq('i4', randomPrompt(r, 4))), (e: Error & { status?: number }) => e.status === 429, 'interactive requests still have their own queue limit');
  assert.deepEqual(engine.scheduler.waiting.map((s) => s.id), ['i0/0', 'i1/0', 'i2/0', 'i3/0', 'b0/0', 'b1/0', 'b2/0', 'b3/0']);
});

// A batch lane wider than maxNumSeqs (maxBatchSeqs): batch sequences alone run in wide steps; once an interactive
// sequence runs or waits, steps narrow back to maxNumSeqs rows with every interactive row in them, and the batch rows
// left out keep their KV (no preemption unless the width itself is full).

/** Every sequence's invariants after a step: picked ids are running, distinct, and within the caps. */
function checkStep(sched: Scheduler, out: SchedulerOutput, seqs: Map<string, FakeSeq>, maxNumSeqs: number, width: number): void {
  const ids = out.seqs.map((s) => s.id);
  assert.equal(new Set(ids).size, ids.length, 'no sequence twice in a step');
  for (const id of ids) assert.ok(sched.running.some((s) => s.id === id), `${id} is running`);
  assert.ok(sched.running.length <= width, `running ${sched.running.length} <= width ${width}`);
  const interactive = sched.running.filter((s) => !s.lowPriority).length + sched.waiting.filter((s) => !s.lowPriority).length;
  assert.ok(sched.running.filter((s) => !s.lowPriority).length <= maxNumSeqs, 'interactive running <= maxNumSeqs');
  if (interactive > 0) assert.ok(ids.length <= maxNumSeqs, `a step with interactive work has <= ${maxNumSeqs} rows, got ${ids.length}`);
  // no batch row beside an interactive prefill (a step that computes more than one token of an interactive sequence)
  const prefill = out.seqs.some((s) => !seqs.get(s.id)!.lowPriority && s.numTokens > 1);
  if (prefill && width > maxNumSeqs) assert.ok(out.seqs.every((s) => !seqs.get(s.id)!.lowPriority), 'an interactive prefill step has no batch rows');
  // every running interactive sequence with work is in the step (budget permitting: the tests give plenty)
  for (const s of sched.running) if (!s.lowPriority && !ids.includes(s.id)) assert.fail(`interactive ${s.id} left out of a step`);
  void seqs;
}

test('wide batch lane: batch alone runs maxBatchSeqs rows per step; an interactive arrival narrows steps to maxNumSeqs without preempting', () => {
  const maxNumSeqs = 4;
  const width = 12;
  const sched = new Scheduler(new KvManager(400, 16), { maxBatchedTokens: 256, maxNumSeqs, maxBatchSeqs: width, widenAfterSteps: 2 });
  assert.equal(sched.width, width);
  const seqs = new Map<string, FakeSeq>();
  const add = (s: FakeSeq) => { seqs.set(s.id, s); sched.add(s); };
  for (let i = 0; i < 16; i++) add(new FakeSeq(`b${i}`, 8, true, i * 100));
  let out = sched.schedule();
  assert.equal(out.seqs.length, width, 'a batch alone fills the wide lane');
  sampleAll(out, seqs);
  out = sched.schedule();
  assert.deepEqual(out.seqs.map((s) => s.numTokens), Array(width).fill(1), 'then decodes all of it in one step');
  sampleAll(out, seqs);
  add(new FakeSeq('i0', 8, false, 9000));
  add(new FakeSeq('i1', 8, false, 9100));
  out = sched.schedule();
  checkStep(sched, out, seqs, maxNumSeqs, width);
  assert.deepEqual(out.preempted, ['b11', 'b10'], 'the width was full: the two newest batch sequences gave their slots');
  assert.deepEqual(out.seqs.map((s) => s.id), ['i0', 'i1'], 'the interactive prompts prefill alone');
  sampleAll(out, seqs);
  const kept = sched.running.filter((s) => s.lowPriority).map((s) => s.id);
  assert.deepEqual(kept, ['b0', 'b1', 'b2', 'b3', 'b4', 'b5', 'b6', 'b7', 'b8', 'b9'], 'left-out batch rows stay running with their KV');
  for (const id of kept) assert.ok(seqs.get(id)!.numComputed > 0);
  // the interactive pair decodes with two batch rows beside it until it ends; then the lane widens again
  for (let k = 0; k < 3; k++) {
    out = sched.schedule();
    checkStep(sched, out, seqs, maxNumSeqs, width);
    assert.deepEqual(out.seqs.map((s) => s.id), ['b0', 'b1', 'i0', 'i1'], 'oldest batch rows up to maxNumSeqs beside the decoding pair');
    assert.equal(out.preempted.length, 0);
    sampleAll(out, seqs);
  }
  sched.finish('i0');
  sched.finish('i1');
  // the lane stays narrow for widenAfterSteps (2 here) steps without interactive work, then widens
  for (let k = 0; k < 2; k++) {
    out = sched.schedule();
    assert.deepEqual(out.seqs.map((s) => s.id), ['b0', 'b1', 'b2', 'b3'], `quiet step ${k + 1}: still ${maxNumSeqs} rows, oldest first`);
    sampleAll(out, seqs);
  }
  out = sched.schedule();
  assert.equal(out.seqs.length, width, 'then the lane is wide again');
  assert.equal(out.preempted.length, 0);
});

test('wide batch lane: random arrivals and finishes keep the caps (property test against the rules)', () => {
  const r = rand(23);
  for (let trial = 0; trial < 20; trial++) {
    const maxNumSeqs = 1 + Math.floor(r() * 5);
    const width = maxNumSeqs + Math.floor(r() * 10);
    const widenAfterSteps = Math.floor(r() * 4);
    const sched = new Scheduler(new KvManager(2000, 4), { maxBatchedTokens: 4096, maxNumSeqs, maxBatchSeqs: width, widenAfterSteps });
    const seqs = new Map<string, FakeSeq>();
    let n = 0;
    for (let step = 0; step < 60; step++) {
      const arrivals = Math.floor(r() * 3);
      for (let a = 0; a < arrivals; a++) {
        const s = new FakeSeq(`s${n++}`, 1 + Math.floor(r() * 12), r() < 0.7, n * 100);
        seqs.set(s.id, s);
        sched.add(s);
      }
      const quietBefore = sched.quietSteps;
      const out = sched.schedule();
      checkStep(sched, out, seqs, maxNumSeqs, width);
      if (sched.running.every((s) => s.lowPriority) && sched.waiting.every((s) => s.lowPriority)) {
        assert.equal(sched.quietSteps, quietBefore + 1);
        // batch alone: as many rows as there are sequences, up to the width once quiet for widenAfterSteps steps
        const cap = sched.quietSteps > widenAfterSteps ? width : maxNumSeqs;
        assert.equal(out.seqs.length, Math.min(cap, sched.running.length), `a batch alone uses ${cap} rows`);
      } else {
        assert.equal(sched.quietSteps, 0);
      }
      sampleAll(out, seqs);
      for (const s of [...sched.running]) if (r() < 0.1) sched.finish(s.id);
    }
  }
});

test('engine: a wide batch lane gives the same outputs as a narrow one, and an interactive request still starts at the next step', async () => {
  const model = await fixtureModel();
  const r = rand(29);
  const prompts = Array.from({ length: 14 }, () => randomPrompt(r, 6));
  const inter = randomPrompt(r, 6);
  const opts = { kvDtype: 'f32' as const, kvCacheMemory: 2 ** 22, maxBatchedTokens: 64, maxNumSeqs: 3 };
  const narrow = new Engine(model, null, opts);
  prompts.forEach((p, i) => narrow.add(genReq(`b${i}`, p, { maxTokens: 6, priority: 'batch' })));
  narrow.add(genReq('i', inter, { maxTokens: 3 }));
  const ref = runAll(narrow).byId;

  const engine = new Engine(model, null, { ...opts, maxBatchSeqs: 12 });
  assert.equal(engine.info.maxBatchSeqs, 12);
  const byId = new Map<string, Collected>();
  const other: EngineOutput[] = [];
  prompts.forEach((p, i) => engine.add(genReq(`b${i}`, p, { maxTokens: 6, priority: 'batch' })));
  for (let i = 0; i < 2; i++) for (const o of engine.step()) collect(byId, other, o);
  assert.equal(engine.scheduler.running.length, 12, 'the batch runs 12 wide');
  engine.add(genReq('i', inter, { maxTokens: 3 }));
  const outs = engine.step();
  for (const o of outs) collect(byId, other, o);
  assert.ok(outs.some((o) => o.id === 'i'), 'the interactive request produced its first token at the next step');
  for (let i = 0; engine.hasWork; i++) {
    assert.ok(i < 10_000);
    for (const o of engine.step()) collect(byId, other, o);
  }
  assert.deepEqual(other, []);
  for (const id of [...prompts.map((_, i) => `b${i}`), 'i']) assert.deepEqual(byId.get(id)!.tokens, ref.get(id)!.tokens, id);
  assert.throws(() => new Engine(model, null, { ...opts, maxBatchSeqs: 2 }), /maxBatchSeqs must be an integer >= maxNumSeqs/);
});
