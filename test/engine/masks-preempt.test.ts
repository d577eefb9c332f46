// vLLM's token masks (min_tokens, allowed_token_ids, bad_words) under KV pressure: a preempted completion, swapped out
// or recomputed, and n = 2 forks, give the tokens the same requests give on a pool with room for all at once.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Engine } from '../../src/engine/engine.js';
import type { GenerateRequest } from '../../src/engine/protocol.js';
import { KvCache } from '../../src/model/kv-cache.js';
import { fixtureModel, genReq, GREEDY, rand, randomPrompt, runAll } from './helpers.js';

const model = await fixtureModel('gqa_f32');

function requests(): GenerateRequest[] {
  const r = rand(11);
  return Array.from({ length: 8 }, (_, i) => {
    const prompt = randomPrompt(r, 20 + i * 3);
    const sampling = i % 2 ? GREEDY : { ...GREEDY, temperature: 1, seed: 100 + i };
    const allowed = i % 4 === 1 ? Array.from({ length: 40 }, (_, j) => 3 + j * 5) : null;
    // a bad word whose prefix the output is likely to hold: its own first tokens ban what followed them
    const bad = [[prompt[3]!, prompt[4]!], [prompt[7]!], [17, 18, 19]];
    return genReq(`m${i}`, prompt, {
      sampling, maxTokens: 30, n: i % 3 === 0 ? 2 : 1, minTokens: 10 + i, stopTokenIds: [prompt[1]!, prompt[2]!],
      allowedTokenIds: allowed, badWordIds: i % 4 === 1 ? [] : bad,
    });
  });
}

const tokensOf = (e: Engine, reqs: GenerateRequest[]) => {
  for (const q of reqs) e.add(q);
  const { byId } = runAll(e);
  return reqs.map((q) => byId.get(q.id)!.tokens);
};

for (const swap of [true, false]) {
  test(`masks survive preemption (${swap ? 'swapped' : 'recomputed'}) and forks: equal to an unpressed pool`, () => {
    const perBlock = KvCache.bytesPerToken(2, 2, 16, 'f32') * 8;
    const roomy = tokensOf(new Engine(model, null, { kvDtype: 'f32', blockSize: 8, kvCacheMemory: 200 * perBlock, maxBatchedTokens: 64 }), requests());
    const tight = new Engine(model, null, { kvDtype: 'f32', blockSize: 8, kvCacheMemory: 12 * perBlock, maxBatchedTokens: 64, swapSpace: swap ? 64 * perBlock : 0 });
    const got = tokensOf(tight, requests());
    assert.ok(tight.stats().preemptions > 0);
    assert.deepEqual(got, roomy);
    // the masks acted: each completion keeps them, and the unmasked requests answer otherwise
    requests().forEach((q, i) => got[i]!.forEach((out) => {
      assert.ok(out.slice(0, q.minTokens).every((t) => !q.stopTokenIds.includes(t)), `${q.id}: no stop id before min_tokens`);
      if (q.allowedTokenIds) assert.ok(out.every((t) => q.allowedTokenIds!.includes(t)), `${q.id}: allowed ids only`);
      for (const w of q.badWordIds ?? []) {
        for (let e = w.length; e <= out.length; e++) assert.notDeepEqual(out.slice(e - w.length, e), w, `${q.id}: bad word ${w}`);
      }
    }));
    const plain = tokensOf(new Engine(model, null, { kvDtype: 'f32', blockSize: 8, kvCacheMemory: 200 * perBlock }),
      requests().map((q) => ({ ...q, minTokens: 0, allowedTokenIds: null, badWordIds: [] })));
    assert.ok(plain.filter((t, i) => JSON.stringify(t) !== JSON.stringify(got[i])).length >= 6, 'most requests answer otherwise without masks');
  });
}
