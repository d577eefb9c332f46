// system_fingerprint names the kernels too: the same model answers differently per ISA (avx512 / avx2 / scalar), AMX
// tiles and the bf16 dot product, so each gives its own fp_…; `floe serve` processes started with FLOE_ISA=scalar and
// FLOE_ISA=avx2 answer with different fingerprints, and the engine reports the ISA the addon dispatches.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadAddon } from '../../src/backend/native-addon.js';
import type { EngineInfo } from '../../src/engine/protocol.js';
import { ChatTemplate } from '../../src/formats/chat-template.js';
import { createApp } from '../../src/serve/app.js';
import { startServer } from '../../src/serve/server.js';
import { byteTokenizer, CHAT_TEMPLATE, FakeEngine } from './helpers.js';
import { client, serverProcs, startFloeServe } from './floe-process.js';
import { repoPath } from '../repo.js';

const BROWN = repoPath('models/floe-brown');
const BUILT = repoPath('dist/src/serve/app.js');
const addon = loadAddon();

async function fingerprint(kernels: EngineInfo['kernels']): Promise<string> {
  const tok = byteTokenizer();
  const s = createApp({ modelName: 'tiny' });
  s.ready({ engine: new FakeEngine(tok, { kernels }), tokenizer: tok, template: new ChatTemplate(CHAT_TEMPLATE) });
  const r = await s.app.inject({ method: 'POST', url: '/v1/chat/completions', payload: { messages: [{ role: 'user', content: 'x' }], max_tokens: 1 } });
  await s.app.close();
  return (r.json() as { system_fingerprint: string }).system_fingerprint;
}

test('each kernel configuration has its own fingerprint; the same one has the same', async () => {
  const base = { backend: 'native', isa: 'avx512', amx: null, bf16Dot: 'dpbf16', r16Wide: false } as const;
  const variants: Array<EngineInfo['kernels']> = [
    base, { ...base, isa: 'avx2', bf16Dot: null, r16Wide: null }, { ...base, isa: 'scalar', bf16Dot: null, r16Wide: null }, { ...base, bf16Dot: 'fma' },
    { ...base, r16Wide: true },
    { ...base, amx: { mode: 'tiles', int8: false, attn: false } }, { ...base, amx: { mode: 'tiles', int8: true, attn: false } },
    { backend: 'reference', isa: null, amx: null, bf16Dot: null, r16Wide: null },
  ];
  const fps = await Promise.all(variants.map(fingerprint));
  for (const fp of fps) assert.match(fp, /^fp_[0-9a-f]{10}$/);
  assert.equal(new Set(fps).size, variants.length, JSON.stringify(fps));
  assert.equal(await fingerprint({ ...base }), fps[0], 'deterministic');
});

test('the engine reports the backend and the ISA the addon dispatches', { skip: addon ? false : 'no native addon' }, async () => {
  const srv = await startServer({ model: BROWN, port: 0, threads: 1, kvCacheMemory: 16 << 20, log: () => {}, ui: false, dataDir: null });
  try {
    const info = await srv.ready;
    assert.equal(info.kernels?.backend, 'native');
    assert.equal(info.kernels?.isa, addon!.isa());
    assert.equal(info.kernels?.amx !== null, addon!.amx().active);
  } finally {
    await srv.close(1000);
  }
});

const avx2 = addon !== null && addon.supportedIsa() !== 'scalar';
test('floe serve under FLOE_ISA=scalar and FLOE_ISA=avx2 answers with different fingerprints', { skip: avx2 ? false : 'this CPU has no AVX2' }, async () => {
  const procs = serverProcs();
  const [scalar, vec] = await Promise.all(['scalar', 'avx2'].map((isa) => startFloeServe(null, { built: BUILT, procs, env: { FLOE_ISA: isa } })));
  const fp = async (f: typeof scalar) => (await client(f).chat.completions.create({ model: (await client(f).models.list()).data[0]!.id, messages: [{ role: 'user', content: 'Hi.' }], max_tokens: 1, temperature: 0 })).system_fingerprint;
  const [a, b] = await Promise.all([fp(scalar!), fp(vec!)]);
  assert.match(a!, /^fp_[0-9a-f]{10}$/);
  assert.notEqual(a, b);
});
