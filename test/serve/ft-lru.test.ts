// `floe serve --max-loras 1 --max-cpu-loras 2` with three adapters, through the openai client: answers equal each
// adapter run in-process; with the adapter directories then deleted, the two resident adapters still answer (never
// read again per request) and the evicted one is refused, naming --max-cpu-loras and its directory.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import { Engine } from '../../src/engine/engine.js';
import { writePeftAdapter } from '../../src/formats/peft.js';
import { openModel } from '../../src/model/open.js';
import { genReq, rand, randomPrompt } from '../engine/helpers.js';
import { randomAdapter } from '../model/lora-helpers.js';
import { client, serverProcs, startFloeServe } from './floe-process.js';
import { repoPath } from '../repo.js';

const BUILT = repoPath('dist/src/engine/adapters.js');
const MODEL = repoPath('models/floe-brown');
const procs = serverProcs();

test('serve --max-cpu-loras: LRU residency over HTTP; resident adapters never re-read, the evicted one reloads from disk', { timeout: 120_000 }, async () => {
  const { model } = await openModel(MODEL, { threads: 1 });
  const seed = Date.now() & 0xffff;
  const root = mkdtempSync(join(tmpdir(), 'floe-ft-lru-'));
  const ads = [0, 1, 2].map((i) => randomAdapter(model, seed + i, 2 + i, ['q', 'v', 'down'], false, 0.05));
  ads.forEach((a, i) => writePeftAdapter(join(root, `a${i}`), a));
  const floe = await startFloeServe(null, { built: BUILT, procs, args: ['--max-loras', '1', '--max-cpu-loras', '2',
    '--lora-modules', ...[0, 1, 2].map((i) => `a${i}=${join(root, `a${i}`)}`)] });
  const c = client(floe);
  const engine = new Engine(model, null, { kvDtype: 'f32', kvCacheMemory: 8 << 20 });
  ads.forEach((a, i) => engine.adapters.add(`a${i}`, `/mem/a${i}`, a));
  const r = rand(seed);
  let n = 0;
  const ask = async (a: number) => {
    const prompt = randomPrompt(r, 5, 4000);
    const got: OpenAI.Completion = await c.completions.create({ model: `a${a}`, prompt, max_tokens: 5, temperature: 0, ignore_eos: true, return_token_ids: true } as OpenAI.CompletionCreateParamsNonStreaming);
    engine.add(genReq(`q${n}`, prompt, { maxTokens: 5, ignoreEos: true, adapter: `a${a}` }));
    const want: number[] = [];
    while (engine.hasWork) for (const o of engine.step()) if (o.kind === 'generate' && o.id === `q${n}`) want.push(...o.tokenIds);
    n++;
    assert.deepEqual((got.choices[0] as unknown as { token_ids: number[] }).token_ids, want, `a${a}`);
  };
  // loaded a0, a1, a2 at start: a0 (least recently used) was dropped; asking for it reads it again and drops a1
  await Promise.all([ask(2), ask(0), ask(2)]); // three requests, one adapter slot: they wait their turn
  await ask(0);
  rmSync(root, { recursive: true });
  for (const a of [0, 2, 0, 2]) await ask(a); // resident: answered without their directories
  await assert.rejects(c.completions.create({ model: 'a1', prompt: [5, 6, 7], max_tokens: 2 }),
    (e: InstanceType<typeof OpenAI.APIError>) => e.status === 400 && /a1 was evicted from memory \(--max-cpu-loras 2\) and cannot be read again from .*a1/.test(e.message));
  await ask(2); // still serving
  floe.proc.kill('SIGTERM');
});
