// The adapter table's host-memory LRU (--max-cpu-loras): past the cap the least recently used idle adapter is
// dropped and read again from its directory when asked for; a resident one is never re-read per request, one a
// request holds is never dropped, and every answer equals the model with that adapter merged, run alone.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Engine } from '../../src/engine/engine.js';
import type { GenerateRequest } from '../../src/engine/protocol.js';
import { writePeftAdapter } from '../../src/formats/peft.js';
import type { LlamaModel } from '../../src/model/llama.js';
import { merged, randomAdapter } from '../model/lora-helpers.js';
import { fixtureModel, genReq, rand, randomPrompt, runAll } from './helpers.js';

function alone(m: LlamaModel, req: GenerateRequest): number[] {
  const e = new Engine(m, null, { kvDtype: 'f32', kvCacheMemory: 4 << 20 });
  e.add({ ...req, adapter: null });
  return runAll(e).byId.get(req.id)!.tokens[0]!;
}

test('max-cpu-loras: LRU eviction, reload on demand (once), no re-read while resident, answers equal the merged models', async () => {
  const base = await fixtureModel('gqa_f32');
  const seed = Date.now() & 0xffff;
  const root = mkdtempSync(join(tmpdir(), 'floe-lru-'));
  const ads = [0, 1, 2].map((i) => randomAdapter(base, seed + i, 2 + i));
  ads.forEach((a, i) => writePeftAdapter(join(root, `a${i}`), a));
  const engine = new Engine(base, null, { kvDtype: 'f32', kvCacheMemory: 4 << 20, maxLoras: 1, maxCpuLoras: 2 });
  const t = engine.adapters;
  for (let i = 0; i < 3; i++) engine.loadAdapter(`a${i}`, join(root, `a${i}`));
  assert.equal(t.reads, 3);
  assert.deepEqual(t.list().map((a) => [a.name, a.resident]), [['a0', false], ['a1', true], ['a2', true]], 'a0, least recently used, was dropped');

  const r = rand(seed);
  let n = 0;
  const ask = (a: number) => {
    const q = genReq(`q${n++}`, randomPrompt(r, 5 + (n % 4)), { adapter: `a${a}`, maxTokens: 4, ignoreEos: true });
    engine.add(q);
    const got = runAll(engine).byId.get(q.id)!.tokens[0]!;
    assert.deepEqual(got, alone(merged(base, ads[a]!), q), `${q.id} on a${a}`);
  };
  // resident adapters: many requests, no disk read
  for (const a of [1, 2, 1, 2, 2, 1]) ask(a);
  assert.equal(t.reads, 3, 'a resident adapter is never read again per request');
  // the evicted one is read once, and drops the LRU (a2 was used before a1 last)
  ask(0);
  assert.equal(t.reads, 4);
  assert.deepEqual(t.list().map((a) => [a.name, a.resident]), [['a0', true], ['a1', true], ['a2', false]]);
  ask(0); ask(1); ask(0);
  assert.equal(t.reads, 4, 'then stays resident');
  // an adapter a request holds is not dropped: a2 reload would evict a1 (LRU) but a1 is running
  const running = genReq('held', randomPrompt(r, 6), { adapter: 'a1', maxTokens: 6, ignoreEos: true });
  engine.add(running);
  const first = engine.step();
  const later = genReq('later', randomPrompt(r, 7), { adapter: 'a2', maxTokens: 3, ignoreEos: true });
  engine.add(later); // parked (maxLoras 1), but its adapter is read now
  assert.equal(t.reads, 5);
  assert.deepEqual(t.list().map((a) => [a.name, a.resident]), [['a0', false], ['a1', true], ['a2', true]], 'a0 dropped instead of the held a1');
  const out = runAll(engine).byId;
  const held = [...first, ...out.get('held')!.outputs].flatMap((o) => (o.kind === 'generate' && o.id === 'held' ? [...o.tokenIds] : []));
  assert.deepEqual(held, alone(merged(base, ads[1]!), running), 'held kept its adapter');
  assert.deepEqual(out.get('later')!.tokens[0], alone(merged(base, ads[2]!), later));

  // a directory gone while evicted: the request is refused with where and why, the engine keeps serving
  rmSync(join(root, 'a0'), { recursive: true });
  assert.throws(() => engine.add(genReq('gone', [5, 6, 7], { adapter: 'a0', maxTokens: 2 })), /a0 was evicted .*max-cpu-loras 2.*cannot be read again/);
  ask(1);
});

test('max-cpu-loras below max-loras is refused', async () => {
  const base = await fixtureModel('gqa_f32');
  assert.throws(() => new Engine(base, null, { kvDtype: 'f32', kvCacheMemory: 4 << 20, maxLoras: 3, maxCpuLoras: 2 }), /maxCpuLoras \(2\) must be at least maxLoras \(3\)/);
});
