// The serving engine through in-process pipeline stages with several micro-batches in flight equals the engine in
// one process running the same micro-batches (f32: bit for bit): continuous batching, chunked prefill, prefix caching,
// forks (copy-on-write blocks) and preemption.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { join } from 'node:path';
import { Engine, type EngineOptions } from '../../src/engine/engine.js';
import type { EngineOutput, GenerateRequest } from '../../src/engine/protocol.js';
import { openModel } from '../../src/model/open.js';
import { PipelineDriver, runStage } from '../../src/parallel/pipeline.js';
import { openStage } from '../../src/parallel/stage-model.js';
import { localGroup } from '../../src/parallel/transport.js';
import { collect, genReq, rand, type Collected } from '../engine/helpers.js';
import { repoPath } from '../repo.js';

const MODEL = repoPath('models/floe-brown');
const V = 4096;

function requests(seed: number) {
  const r = rand(seed);
  const prompt = (n: number) => Array.from({ length: n }, () => 10 + Math.floor(r() * (V - 20)));
  const shared = prompt(40); // two requests share a 40-token prefix (two full blocks of 16 cached)
  return [
    ...Array.from({ length: 9 }, (_, i) => genReq(`r${i}`, prompt(3 + Math.floor(r() * 90)), { maxTokens: 6 + Math.floor(r() * 14), logprobs: 2 })),
    genReq('fork', prompt(20), { maxTokens: 10, n: 2, sampling: { ...genReq('x', [1]).sampling, temperature: 0.9, seed: 7 } }),
    genReq('plp', prompt(30), { maxTokens: 5, promptLogprobs: 2 }),
    genReq('p1', [...shared, ...prompt(5)], { maxTokens: 8 }),
    genReq('p2', [...shared, ...prompt(7)], { maxTokens: 8 }),
  ];
}

// small KV pool (preemption) and token budget (chunked prefill); preemption recomputes in both (pipeline stages keep
// recompute, and a swapped sequence's KV is the decode's, not a recompute's: f32 logprobs would part by ~1e-6)
const OPTS = { kvBlocks: 24, blockSize: 16, maxBatchedTokens: 64, maxNumSeqs: 16, swapSpace: 0 } as const;

/** Run to the end, M micro-batches at a time: launch M steps, then take their outputs (the same waves either way). */
async function runWaves(engine: Engine, M: number, byId: Map<string, Collected>, other: EngineOutput[]): Promise<void> {
  for (let i = 0; engine.hasWork; i++) {
    assert.ok(i < 5000);
    const wave: Promise<EngineOutput[]>[] = [];
    for (let p = engine.launchStep(M); p; p = wave.length < M ? engine.launchStep(M) : null) wave.push(p);
    assert.ok(wave.length > 0, 'work left but no step could start');
    for (const outs of await Promise.all(wave)) for (const o of outs) collect(byId, other, o);
  }
}

/** An engine whose forward runs through `size` in-process stages: the requests run to the end, M = size at a time. */
async function throughStages(size: number, opts: EngineOptions, reqs: readonly GenerateRequest[], got: Map<string, Collected>, other: EngineOutput[]) {
  const group = localGroup(size);
  const opened = await Promise.all(group.map((tr) => openStage(MODEL, tr.rank, size)));
  const stages = group.slice(1).map((tr, i) => runStage(tr, opened[i + 1]!.model));
  const driver = new PipelineDriver(group[0]!, opened[0]!.model);
  const engine = new Engine(opened[0]!.model, null, { ...opts, remote: driver });
  for (const q of reqs) engine.add(q);
  await runWaves(engine, size, got, other);
  await driver.close();
  await Promise.all(stages);
  return { engine, driver };
}

test('engine through 3 in-process stages, micro-batches overlapping, equals the engine in one process', async () => {
  const size = 3;
  const model = (await openModel(MODEL)).model;
  // fresh random requests; some draws fit the small pool without a preemption (~7%), or preempt the shared prefix's
  // blocks out of the cache before its second request comes, so draw again until the run in one process does both
  // (the pipeline must then do both as well: it schedules the same waves)
  let seed = 0, want = new Map<string, Collected>(), tries = 0;
  const other: EngineOutput[] = [];
  for (;;) {
    seed = Math.floor(Math.random() * 1e9);
    const single = new Engine(model, null, OPTS);
    want = new Map<string, Collected>();
    for (const q of requests(seed)) single.add(q);
    await runWaves(single, size, want, other);
    if (single.stats().preemptions > 0 && single.stats().prefixHitTokens > 0) break;
    assert.ok(++tries < 20, 'twenty draws of requests and none both preempted and hit the prefix cache in one process');
  }

  const got = new Map<string, Collected>();
  const { engine, driver } = await throughStages(size, OPTS, requests(seed), got, other);
  assert.deepEqual(other, []);
  assert.ok(driver.stats.maxInFlight >= 2, `micro-batches overlapped (at most ${driver.stats.maxInFlight} in flight)`);
  assert.ok(engine.stats().preemptions > 0, `the small pool preempted (seed ${seed})`);
  assert.ok(engine.stats().prefixHitTokens > 0, `the shared prefix hit the cache (seed ${seed})`);
  assert.deepEqual([...got.keys()].sort(), [...want.keys()].sort());
  for (const [id, w] of want) {
    const g = got.get(id)!;
    assert.deepEqual(g.tokens, w.tokens, id);
    assert.deepEqual(g.finish, w.finish, id);
    assert.deepEqual(g.outputs.flatMap((o) => o.logprobs ?? []), w.outputs.flatMap((o) => o.logprobs ?? []), id);
    assert.deepEqual(g.outputs.flatMap((o) => o.promptLogprobs ?? []), w.outputs.flatMap((o) => o.promptLogprobs ?? []), id);
  }
});

test('Predicted Outputs and the ngram proposer through 3 in-process stages: the same greedy tokens as without, drafts verified', async () => {
  const size = 3;
  const model = (await openModel(MODEL)).model;
  const seed = Math.floor(Math.random() * 1e9);
  const r = rand(seed);
  const prompt = (n: number) => Array.from({ length: n }, () => 10 + Math.floor(r() * (V - 20)));
  const phrase = prompt(6);
  const reqs = Array.from({ length: 5 }, (_, i) => genReq(`q${i}`, i === 0 ? Array<number[]>(6).fill(phrase).flat() : prompt(5 + Math.floor(r() * 40)), { maxTokens: 24 + Math.floor(r() * 24), ignoreEos: true }));
  const other: EngineOutput[] = [];
  const plain = new Map<string, Collected>();
  const single = new Engine(model, null, { ...OPTS, kvBlocks: 64 });
  for (const q of reqs) single.add(q);
  await runWaves(single, size, plain, other);
  // each prediction: the answer with a token in 8 replaced, so drafts are kept and rejected
  // (q0 has none: the ngram proposer drafts for it, from its phrase said six times)
  const predicted = reqs.map((q, i) => i === 0 ? q : ({ ...q, prediction: plain.get(q.id)!.tokens[0]!.map((t) => (r() < 0.125 ? 10 + Math.floor(r() * (V - 20)) : t)) }));

  const got = new Map<string, Collected>();
  const { engine } = await throughStages(size, { ...OPTS, kvBlocks: 64, speculative: 'ngram' }, predicted, got, other);
  assert.deepEqual(other, []);
  let accepted = 0;
  let verified = 0;
  for (const q of reqs) {
    const g = got.get(q.id)!;
    assert.deepEqual(g.tokens, plain.get(q.id)!.tokens, `${q.id} (seed ${seed})`);
    if (q.id === 'q0') continue;
    const u = g.outputs.at(-1)!.usage;
    accepted += u.acceptedPredictionTokens!;
    verified += u.acceptedPredictionTokens! + u.rejectedPredictionTokens!;
  }
  assert.ok(accepted > 0.3 * reqs.slice(1).reduce((s, q) => s + q.maxTokens!, 0), `accepted ${accepted} prediction tokens (seed ${seed})`);
  assert.ok(engine.stats().specDraftTokens! > verified, `the proposer drafted too: ${engine.stats().specDraftTokens} draft tokens, ${verified} from predictions`);
});
