// The engine in its worker thread, used as the HTTP side uses it: concurrent streams, abort, embeddings, 429, shutdown.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadAddon } from '../../src/backend/native-addon.js';
import { nativeCounters } from '../../src/backend/native.js';
import { startEngine } from '../../src/engine/client.js';
import { EngineRequestError, type GenerateOutput } from '../../src/engine/protocol.js';
import { generate } from '../../src/model/generate.js';
import { FIXTURES, fixtureModel, genReq, GREEDY, rand, randomPrompt } from './helpers.js';

const model = await fixtureModel('gqa_f32');

async function drain(it: AsyncIterable<GenerateOutput>): Promise<GenerateOutput[]> {
  const out: GenerateOutput[] = [];
  for await (const o of it) out.push(o);
  return out;
}

test('worker: 32 concurrent streams equal generate() alone; abort frees blocks; embeddings; stats', async () => {
  const prefaults = nativeCounters()['prefault.madvise.native'] ?? 0;
  const client = await startEngine({ model: FIXTURES + 'gqa_f32', kvDtype: 'f32', maxBatchedTokens: 64, maxNumSeqs: 16, kvPrefault: true });
  try {
    // the KV pages are committed in the background while the streams below run (outputs checked against generate())
    if (loadAddon()) assert.equal(nativeCounters()['prefault.madvise.native'], prefaults + 1, 'the worker prefaulted its KV cache');
    assert.equal(client.info.vocabSize, 256);
    assert.equal(client.info.maxModelLen, 256);
    const r = rand(17);
    const reqs = Array.from({ length: 32 }, (_, i) => {
      const { kind: _k, ...q } = genReq(`w${i}`, randomPrompt(r, 2 + Math.floor(r() * 40)), {
        maxTokens: 2 + Math.floor(r() * 12), ignoreEos: true,
        sampling: i % 2 ? GREEDY : { ...GREEDY, temperature: 0.8, topP: 0.95, seed: 1000 + i },
      });
      return q;
    });
    const results = await Promise.all(reqs.map((q) => drain(client.generate(q))));
    reqs.forEach((q, i) => {
      const want = generate(model, q.promptIds, { maxTokens: q.maxTokens, sampling: { ...q.sampling, logitBias: null }, stopTokenIds: [], kvDtype: 'f32' });
      assert.deepEqual(results[i]!.flatMap((o) => o.tokenIds), want.outputIds, q.id);
      assert.equal(results[i]!.at(-1)!.finishReason, 'length');
    });

    // abort mid-stream through the AbortSignal
    const ac = new AbortController();
    const { kind: _k, ...long } = genReq('long', randomPrompt(r, 30), { maxTokens: 200, ignoreEos: true });
    const seen: GenerateOutput[] = [];
    for await (const o of client.generate(long, ac.signal)) {
      seen.push(o);
      if (seen.length === 3) ac.abort();
    }
    assert.equal(seen.at(-1)!.finishReason, 'abort');
    assert.ok(seen.flatMap((o) => o.tokenIds).length < 200);
    const st = await client.stats();
    assert.equal(st.kvBlocksUsed, 0, 'aborted request released its blocks');
    assert.ok(st.kvBlocksCached > 0);
    assert.ok(st.generatedTokens > 0 && st.promptTokens > 0 && st.steps > 0);

    const e = await client.embed({ id: 'emb', promptIds: [5, 6, 7], pooling: 'last', normalize: true });
    assert.equal(e.embedding.length, 64);
    assert.ok(Math.abs(Math.hypot(...e.embedding) - 1) < 1e-5);
    await assert.rejects(client.embed({ id: 'emb2', promptIds: [], pooling: 'mean', normalize: true }), (err: unknown) => err instanceof EngineRequestError && err.status === 400);
  } finally {
    await client.shutdown(1000);
  }
});

/** startEngine with test-hook variables in the worker's environment (a worker copies process.env when it starts). */
async function startWith(env: Record<string, string>, opts: Omit<Parameters<typeof startEngine>[0], 'model'>) {
  const saved = Object.keys(env).map((k) => [k, process.env[k]] as const);
  Object.assign(process.env, env);
  try {
    return await startEngine({ model: FIXTURES + 'gqa_f32', kvDtype: 'f32', ...opts });
  } finally {
    for (const [k, v] of saved) if (v === undefined) delete process.env[k]; else process.env[k] = v;
  }
}

test('worker: a burst past maxNumSeqs + maxQueue gets exactly the excess as 429s, then recovers; shutdown aborts what is left after the grace period', async () => {
  // No step before all 12 requests arrived: 2 free slots + 3 queued are admitted, 7 refused.
  const client = await startWith({ FLOE_ENGINE_TEST_HOLD: '12' }, { maxNumSeqs: 2, maxQueue: 3 });
  try {
    const r = rand(4);
    const runs = Array.from({ length: 12 }, (_, i) => {
      const { kind: _k, ...q } = genReq(`f${i}`, randomPrompt(r, 8), { maxTokens: 20, ignoreEos: true });
      return drain(client.generate(q)).then((o) => ({ ok: true as const, o }), (e: unknown) => ({ ok: false as const, e }));
    });
    const got = await Promise.all(runs);
    const refused = got.filter((g) => !g.ok);
    assert.equal(refused.length, 7);
    for (const g of refused) assert.ok(!g.ok && g.e instanceof EngineRequestError && g.e.status === 429);
    assert.equal(got.filter((g) => g.ok).length, 5, 'the running and queued requests were served');
    const { kind: _k, ...again } = genReq('again', [3, 4, 5], { maxTokens: 2 });
    assert.equal((await drain(client.generate(again))).at(-1)!.finishReason, 'length');

    const { kind: _k2, ...endless } = genReq('endless', [3, 4, 5], { maxTokens: 250, ignoreEos: true });
    const pending = drain(client.generate(endless));
    await client.shutdown(0);
    const outs = await pending;
    assert.equal(outs.at(-1)!.finishReason, 'abort');
    await assert.rejects(drain(client.generate({ ...again, id: 'late' })), (e: unknown) => e instanceof EngineRequestError && e.status === 503);
  } finally {
    await client.shutdown(0);
  }
});

for (const fault of ['throw', 'exit'] as const) {
  test(`worker crash (${fault} in the loop): in-flight requests fail instead of hanging, failure() says why, later calls get 503`, { timeout: 30_000 }, async () => {
    const client = await startWith({ FLOE_ENGINE_TEST_FAULT: `${fault}@4` }, {});
    try {
      assert.equal(client.failure(), null);
      const r = rand(9);
      const runs = Array.from({ length: 3 }, (_, i) => {
        const { kind: _k, ...q } = genReq(`c${i}`, randomPrompt(r, 6), { maxTokens: 50, ignoreEos: true });
        return drain(client.generate(q)).then(() => null, (e: unknown) => e);
      });
      const stats = client.stats().then(() => null, (e: unknown) => e); // answered before the crash, or failed by it: never left hanging
      const errs = await Promise.all(runs);
      const want = fault === 'throw' ? { status: 500, re: /engine worker crashed: test fault at engine step 4/ } : { status: 503, re: /exited unexpectedly \(code 70\)/ };
      for (const e of errs) assert.ok(e instanceof EngineRequestError && e.status === want.status && want.re.test(e.message), String(e));
      assert.match(client.failure() ?? '', want.re);
      const s = await stats;
      assert.ok(s === null || s instanceof EngineRequestError);
      const { kind: _k, ...late } = genReq('late', [3, 4], { maxTokens: 2 });
      await assert.rejects(drain(client.generate(late)), (e: unknown) => e instanceof EngineRequestError && e.status === 503 && /restart the server/.test(e.message));
      await assert.rejects(client.stats(), (e: unknown) => e instanceof EngineRequestError && e.status === 503);
    } finally {
      await client.shutdown(0);
    }
  });
}

test('worker: a normal shutdown is not reported as a failure', async () => {
  const client = await startWith({}, {});
  await client.shutdown(0);
  assert.equal(client.failure(), null);
});

test('worker: 24 requests sharing one AbortSignal (a multi-prompt completion) raise no MaxListenersExceededWarning, and one abort stops them all', async () => {
  const warnings: Error[] = [];
  const onWarning = (w: Error): void => { warnings.push(w); };
  process.on('warning', onWarning);
  const client = await startWith({}, { maxNumSeqs: 32 });
  try {
    const ac = new AbortController();
    const reqs = Array.from({ length: 24 }, (_, i) => { const { kind: _k, ...q } = genReq(`shared${i}`, [3 + i, 4], { maxTokens: 200, ignoreEos: true }); return q; });
    const runs = reqs.map(async (q) => {
      const out: GenerateOutput[] = [];
      for await (const o of client.generate(q, ac.signal)) {
        out.push(o);
        if (q.id === 'shared0' && out.length === 2) ac.abort();
      }
      return out;
    });
    const results = await Promise.all(runs);
    for (const out of results) assert.equal(out.at(-1)!.finishReason, 'abort', 'every request sharing the signal was aborted');
    await new Promise((r) => setImmediate(r)); // warnings are emitted on a later tick
    assert.deepEqual(warnings.filter((w) => w.name === 'MaxListenersExceededWarning').map(String), []);
  } finally {
    process.off('warning', onWarning);
    await client.shutdown(0);
  }
});
