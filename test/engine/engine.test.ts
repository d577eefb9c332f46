// End to end, in-process: the engine's batched, chunked, preempted, prefix-cached outputs equal generate() run alone.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Engine } from '../../src/engine/engine.js';
import { EngineRequestError, type GenerateRequest, type SamplingSpec } from '../../src/engine/protocol.js';
import { generate } from '../../src/model/generate.js';
import { KvCache } from '../../src/model/kv-cache.js';
import type { LlamaModel } from '../../src/model/llama.js';
import { TextStream } from '../../src/model/text-stream.js';
import { byteDecoder, fixtureModel, genReq, GREEDY, rand, randomPrompt, runAll } from './helpers.js';

const model = await fixtureModel('gqa_f32');
const KV_F32 = { kvDtype: 'f32' as const };

/** generate() alone for one completion of a request (completion i uses seed + i, as the engine does). */
function alone(m: LlamaModel, req: GenerateRequest, index = 0) {
  const s = req.sampling;
  return generate(m, req.promptIds, {
    maxTokens: req.maxTokens,
    sampling: { ...s, logitBias: s.logitBias ? new Map(Object.entries(s.logitBias).map(([k, v]) => [Number(k), v])) : null, seed: s.seed === null ? null : s.seed + index },
    stopTokenIds: req.ignoreEos ? req.stopTokenIds : [...req.stopTokenIds, ...m.config.eosTokenIds],
    logprobs: req.logprobs ?? undefined,
    promptLogprobs: req.promptLogprobs ?? undefined,
    kvDtype: 'f32',
    text: req.stop.length > 0 ? new TextStream(byteDecoder, req.stop, { promptIds: req.promptIds }) : undefined,
  });
}

function mixedRequests(seed: number, count: number, sampled: boolean): GenerateRequest[] {
  const r = rand(seed);
  return Array.from({ length: count }, (_, i) => {
    const sampling: SamplingSpec = sampled
      ? { ...GREEDY, temperature: 0.7 + r(), topK: r() < 0.5 ? 20 : 0, topP: r() < 0.5 ? 0.9 : 1, repetitionPenalty: r() < 0.3 ? 1.2 : 1, frequencyPenalty: r() < 0.3 ? 0.5 : 0, seed: Math.floor(r() * 1e6) }
      : GREEDY;
    return genReq(`r${i}`, randomPrompt(r, 1 + Math.floor(r() * 70)), { sampling, maxTokens: 1 + Math.floor(r() * 20), ignoreEos: r() < 0.5 });
  });
}

for (const sampled of [false, true]) {
  test(`32 concurrent ${sampled ? 'seeded sampling' : 'greedy'} requests each equal generate() alone`, () => {
    const engine = new Engine(model, null, { ...KV_F32, maxBatchedTokens: 48, maxNumSeqs: 12 });
    const reqs = mixedRequests(sampled ? 7 : 3, 32, sampled);
    for (const q of reqs) engine.add(q);
    const { byId } = runAll(engine);
    for (const q of reqs) {
      const want = alone(model, q);
      const got = byId.get(q.id)!;
      assert.deepEqual(got.tokens[0], want.outputIds, `${q.id}: prompt ${q.promptIds.length} tokens`);
      assert.equal(got.finish[0], want.finishReason, q.id);
      const last = got.outputs.at(-1)!;
      assert.equal(last.usage.completionTokens, want.outputIds.length);
      assert.equal(last.usage.promptTokens, q.promptIds.length);
    }
    assert.equal(engine.kv.pool.numUsed, 0, 'every block released');
    const st = engine.stats();
    assert.ok(st.steps < reqs.reduce((a, q) => a + q.maxTokens + Math.ceil(q.promptIds.length / 48), 0), 'requests were batched');
  });
}

test('logprobs, top logprobs and prompt logprobs equal generate()', () => {
  const engine = new Engine(model, null, { ...KV_F32, maxBatchedTokens: 20 });
  const r = rand(11);
  const reqs = [0, 1, 2].map((i) => genReq(`lp${i}`, randomPrompt(r, 30 + i * 7), { maxTokens: 6, logprobs: i, promptLogprobs: 2 - i, sampling: { ...GREEDY, temperature: 1, seed: 5 + i }, ignoreEos: true }));
  for (const q of reqs) engine.add(q);
  const { byId } = runAll(engine);
  for (const q of reqs) {
    const want = alone(model, q);
    const got = byId.get(q.id)!;
    assert.deepEqual(got.tokens[0], want.outputIds);
    const lps = got.outputs.flatMap((o) => o.logprobs ?? []);
    assert.equal(lps.length, want.logprobs!.length);
    lps.forEach((e, i) => {
      assert.equal(e.token, want.logprobs![i]!.token);
      assert.ok(Math.abs(e.logprob - want.logprobs![i]!.logprob) < 1e-5, `${q.id} logprob ${i}`);
      assert.deepEqual(e.top.map((t) => t[0]), want.logprobs![i]!.top.map((t) => t[0]));
    });
    const withPrompt = got.outputs.filter((o) => o.promptLogprobs !== null);
    assert.equal(withPrompt.length, 1, 'prompt logprobs once');
    const pl = withPrompt[0]!.promptLogprobs!;
    assert.equal(pl.length, q.promptIds.length);
    assert.equal(pl[0], null);
    pl.slice(1).forEach((e, i) => {
      const w = want.promptLogprobs![i + 1]!;
      assert.equal(e!.token, w.token);
      assert.ok(Math.abs(e!.logprob - w.logprob) < 1e-5, `${q.id} prompt logprob ${i + 1}: ${e!.logprob} vs ${w.logprob}`);
      assert.deepEqual(e!.top.map((t) => t[0]), w.top.map((t) => t[0]));
    });
  }
});

test('prefix cache: a repeated prompt reuses full blocks and gives the same output', () => {
  const engine = new Engine(model, null, { ...KV_F32, blockSize: 8 });
  const prompt = randomPrompt(rand(21), 45);
  const q = (id: string) => genReq(id, prompt, { maxTokens: 10, ignoreEos: true, sampling: { ...GREEDY, temperature: 0.9, seed: 4 } });
  engine.add(q('a'));
  const first = runAll(engine).byId.get('a')!;
  assert.equal(first.outputs.at(-1)!.usage.cachedTokens, 0);
  assert.ok(engine.stats().kvBlocksCached > 0, 'released blocks stay cached');
  engine.add(q('b'));
  const second = runAll(engine).byId.get('b')!;
  assert.equal(second.outputs[0]!.usage.cachedTokens, 40, 'floor(44 / 8) full blocks of the prompt');
  assert.deepEqual(second.tokens[0], first.tokens[0]);
  assert.deepEqual(second.tokens[0], alone(model, q('x')).outputIds);
  // a prompt that extends the first request's output reuses blocks holding generated tokens too
  engine.add(q('c'));
  const third = genReq('d', [...prompt, ...first.tokens[0]!, 7, 9], { maxTokens: 4 });
  runAll(engine);
  engine.add(third);
  const d = runAll(engine).byId.get('d')!;
  assert.equal(d.outputs[0]!.usage.cachedTokens, 48);
  assert.deepEqual(d.tokens[0], alone(model, third).outputIds);
  assert.ok(engine.stats().prefixHitTokens >= 40 + 40 + 48);
});

for (const swap of [true, false]) {
  test(`preemption under a tiny KV pool keeps outputs identical (${swap ? 'KV swapped out and back' : '--swap-space 0: recomputed'})`, () => {
    const perBlock = KvCache.bytesPerToken(2, 2, 16, 'f32') * 8;
    const engine = new Engine(model, null, { ...KV_F32, blockSize: 8, kvCacheMemory: 12 * perBlock, maxBatchedTokens: 64, swapSpace: swap ? 64 * perBlock : 0 });
    assert.equal(engine.info.kvBlocks, 12);
    const r = rand(5);
    const reqs = Array.from({ length: 8 }, (_, i) => genReq(`p${i}`, randomPrompt(r, 20 + i * 3), { maxTokens: 30, ignoreEos: true, sampling: i % 2 ? GREEDY : { ...GREEDY, temperature: 1, seed: i } }));
    for (const q of reqs) engine.add(q);
    const { byId } = runAll(engine);
    const st = engine.stats();
    assert.ok(st.preemptions > 0, 'the pool was too small for all at once');
    assert.equal(st.swappedOut, swap ? st.preemptions : 0);
    for (const q of reqs) assert.deepEqual(byId.get(q.id)!.tokens[0], alone(model, q).outputIds, q.id);
    assert.equal(engine.kv.pool.numUsed, 0);
    assert.equal(engine.swap!.used, 0);
  });
}

test('cancellation frees blocks at the next step and ends with abort', () => {
  const engine = new Engine(model, null, KV_F32);
  engine.add(genReq('keep', randomPrompt(rand(1), 20), { maxTokens: 12, ignoreEos: true }));
  engine.add(genReq('gone', randomPrompt(rand(2), 40), { maxTokens: 50, ignoreEos: true, n: 2 }));
  engine.step();
  engine.step();
  const before = engine.kv.pool.numUsed;
  engine.abort('gone');
  const outs = engine.step();
  const ends = outs.filter((o) => o.kind === 'generate' && o.id === 'gone');
  assert.deepEqual(ends.map((o) => o.kind === 'generate' && [o.index, o.finishReason]).sort(), [[0, 'abort'], [1, 'abort']]);
  assert.ok(engine.kv.pool.numUsed < before, `blocks freed: ${engine.kv.pool.numUsed} < ${before}`);
  assert.equal(engine.kv.pool.numUsed, 2, 'only the other request (20 + 3 tokens) holds blocks');
  runAll(engine);
  assert.equal(engine.kv.pool.numUsed, 0);
});

test('requests that can never fit are rejected with 400; a full queue with 429', () => {
  const perBlock = KvCache.bytesPerToken(2, 2, 16, 'f32') * 16;
  const engine = new Engine(model, null, { ...KV_F32, kvCacheMemory: 4 * perBlock, maxNumSeqs: 1, maxQueue: 2 });
  assert.equal(engine.info.maxRequestTokens, 64);
  const err = (f: () => void, status: number, re: RegExp) => assert.throws(f, (e: unknown) => e instanceof EngineRequestError && e.status === status && re.test(e.message));
  err(() => engine.add(genReq('big', randomPrompt(rand(1), 40), { maxTokens: 30 })), 400, /KV cache capacity of 64/);
  err(() => engine.add(genReq('ctx', randomPrompt(rand(1), 10), { maxTokens: 300 })), 400, /context window of 256/);
  err(() => engine.add(genReq('v', [1, 256])), 400, /token 1 has id 256/);
  err(() => engine.add(genReq('t', [1], { sampling: { ...GREEDY, temperature: -1 } })), 400, /temperature/);
  err(() => engine.add(genReq('m', [1], { maxTokens: 0 })), 400, /max_tokens/);
  engine.add(genReq('q1', [5, 6]));
  err(() => engine.add(genReq('q1', [5, 6])), 400, /already in use/);
  engine.add(genReq('q2', [5, 6]));
  engine.add(genReq('q3', [5, 6])); // one sequence slot free: q1 takes it, q2 and q3 are the queue
  err(() => engine.add(genReq('q4', [5, 6])), 429, /queue is full/);
  runAll(engine);
  engine.add(genReq('q4', [5, 6])); // recovered
  runAll(engine);
});

test('--max-queue counts only what the free sequence slots cannot take: a burst of 32 fits 64 slots with max-queue 8', () => {
  const engine = new Engine(model, null, { ...KV_F32, maxNumSeqs: 64, maxQueue: 8 });
  const r = rand(31);
  const is429 = (e: unknown) => e instanceof EngineRequestError && e.status === 429;
  for (let i = 0; i < 32; i++) engine.add(genReq(`b${i}`, randomPrompt(r, 4), { maxTokens: 50, ignoreEos: true }));
  for (let i = 32; i < 64 + 8; i++) engine.add(genReq(`b${i}`, randomPrompt(r, 4), { maxTokens: 50, ignoreEos: true }));
  assert.throws(() => engine.add(genReq('over', [5, 6])), is429, '64 slots + 8 queued: the 73rd is refused');
  engine.step(); // 64 run now, 8 wait: still full
  assert.equal(engine.scheduler.running.length, 64);
  assert.throws(() => engine.add(genReq('over', [5, 6])), is429);
  for (let i = 0; i < 4; i++) engine.abort(`b${i}`);
  engine.step(); // 4 slots freed and refilled from the queue: 4 places in the queue
  for (let i = 0; i < 4; i++) engine.add(genReq(`late${i}`, [5, 6], { maxTokens: 50, ignoreEos: true }));
  assert.throws(() => engine.add(genReq('over', [5, 6])), is429);
  const { byId } = runAll(engine);
  assert.equal([...byId.values()].filter((c) => c.finish[0] === 'length').length, 64 + 8 - 4 + 4);
});

test('n > 1 shares the prompt blocks; completion i equals generate() with seed + i', () => {
  const engine = new Engine(model, null, { ...KV_F32, blockSize: 8 });
  const q = genReq('n', randomPrompt(rand(8), 29), { n: 4, maxTokens: 9, ignoreEos: true, sampling: { ...GREEDY, temperature: 1.1, seed: 100 }, logprobs: 1 });
  engine.add(q);
  let peak = 0;
  const outs = [];
  while (engine.hasWork) { outs.push(...engine.step()); peak = Math.max(peak, engine.kv.pool.numUsed); }
  // unshared: 4 × ceil(38/8) = 20 blocks; shared: 3 prompt blocks + 4 × 2 (CoW copy of the partial block + growth)
  assert.ok(peak <= 11, `peak blocks ${peak}`);
  const byIndex: number[][] = [[], [], [], []];
  for (const o of outs) if (o.kind === 'generate') byIndex[o.index]!.push(...o.tokenIds);
  for (let i = 0; i < 4; i++) assert.deepEqual(byIndex[i], alone(model, q, i).outputIds, `completion ${i}`);
  assert.notDeepEqual(byIndex[0], byIndex[1], 'different seeds give different samples');
  assert.equal(engine.kv.pool.numUsed, 0);
});

test('stop strings (spanning tokens) and stop token ids, with text', () => {
  const engine = new Engine(model, byteDecoder, KV_F32);
  const r = rand(3);
  const prompt = randomPrompt(r, 16);
  const free = alone(model, genReq('x', prompt, { maxTokens: 16, ignoreEos: true }));
  const text = byteDecoder.decode(free.outputIds);
  const stop = text.slice(5, 7); // spans two tokens
  const q1 = genReq('s1', prompt, { maxTokens: 16, ignoreEos: true, stop: [stop, '\u0000never'] });
  const q2 = genReq('s2', prompt, { maxTokens: 16, ignoreEos: true, stopTokenIds: [free.outputIds[3]!] });
  engine.add(q1);
  engine.add(q2);
  const { byId } = runAll(engine);
  const w1 = alone(model, q1);
  assert.equal(byId.get('s1')!.text[0], w1.text);
  assert.equal(byId.get('s1')!.text[0], text.slice(0, text.indexOf(stop)));
  assert.deepEqual(byId.get('s1')!.tokens[0], w1.outputIds);
  assert.equal(byId.get('s1')!.finish[0], 'stop');
  assert.equal(byId.get('s1')!.stopReason[0], stop);
  assert.deepEqual(byId.get('s2')!.tokens[0], free.outputIds.slice(0, free.outputIds.indexOf(free.outputIds[3]!) + 1));
  assert.equal(byId.get('s2')!.stopReason[0], free.outputIds[3]);
});

test('embeddings (mean and last, normalized or not, mean from poolFrom) equal a direct forward', () => {
  const engine = new Engine(model, null, { ...KV_F32, maxBatchedTokens: 16 });
  const r = rand(9);
  const cfg = model.config;
  const prompts = [randomPrompt(r, 37), randomPrompt(r, 5)];
  const cases = prompts.flatMap((p, i) => (['mean', 'last'] as const).flatMap((pooling) => [false, true].map((normalize) => ({ id: `e${i}${pooling}${normalize}`, p, pooling, normalize, poolFrom: 0 }))));
  // mean pooling from position 1 (BOS left out) and 20 (past the first 16-token step)
  cases.push({ id: 'f1', p: prompts[0]!, pooling: 'mean', normalize: true, poolFrom: 1 }, { id: 'f20', p: prompts[0]!, pooling: 'mean', normalize: false, poolFrom: 20 });
  for (const c of cases) engine.add({ kind: 'embed', id: c.id, promptIds: c.p, pooling: c.pooling, normalize: c.normalize, poolFrom: c.poolFrom });
  engine.add(genReq('g', prompts[0]!, { maxTokens: 3 })); // mixed into the same steps
  const { other } = runAll(engine);
  for (const c of cases) {
    const got = other.find((o) => o.id === c.id);
    assert.ok(got && got.kind === 'embed', c.id);
    const T = c.p.length;
    const kv = new KvCache(cfg.numLayers, Math.ceil(T / 16), 16, cfg.numKvHeads, cfg.headDim, 'f32');
    const pos = Int32Array.from({ length: T }, (_, i) => i);
    const hidden = new Float32Array(T * cfg.hiddenSize);
    model.forward({ tokens: Int32Array.from(c.p), positions: pos, slots: pos, attn: { numSeqs: 1, qStart: Int32Array.of(0, T), ctxLen: Int32Array.of(T), blockTables: Int32Array.from({ length: kv.numBlocks }, (_, i) => i), maxBlocks: kv.numBlocks }, logitRows: pos }, kv, hidden);
    const D = cfg.hiddenSize;
    const want = new Float64Array(D);
    for (let t = c.pooling === 'mean' ? c.poolFrom : T - 1; t < T; t++) for (let d = 0; d < D; d++) want[d]! += hidden[t * D + d]! / (c.pooling === 'mean' ? T - c.poolFrom : 1);
    const norm = c.normalize ? Math.hypot(...want) : 1;
    assert.equal(got.embedding.length, D);
    assert.equal(got.promptTokens, T);
    for (let d = 0; d < D; d++) assert.ok(Math.abs(got.embedding[d]! - want[d]! / norm) < 1e-5, `${c.id}[${d}]: ${got.embedding[d]} vs ${want[d]! / norm}`);
  }
  assert.throws(() => engine.add({ kind: 'embed', id: 'bad', promptIds: prompts[1]!, pooling: 'mean', normalize: true, poolFrom: 5 }), /poolFrom must be an integer in \[0, 5\)/);
});

test('default KV budget: a fraction of free RAM, capped at maxNumSeqs full contexts; info reports the capacity', async () => {
  const { defaultKvCacheMemory } = await import('../../src/engine/engine.js');
  const perToken = KvCache.bytesPerToken(2, 2, 16, 'f32');
  assert.equal(defaultKvCacheMemory(model, 'f32', 3), 3 * 256 * perToken, 'tiny model: capped, not gigabytes');
  const engine = new Engine(model, null, { ...KV_F32, maxNumSeqs: 3, blockSize: 16 });
  assert.equal(engine.info.kvBlocks, (3 * 256) / 16);
  assert.equal(engine.info.kvTokens, 768);
  assert.equal(engine.info.maxRequestTokens, 256);
  assert.deepEqual(engine.info.eosTokenIds, [2]);
  assert.throws(() => new Engine(model, null, { ...KV_F32, kvCacheMemory: 100 }), /less than one block/);
});
