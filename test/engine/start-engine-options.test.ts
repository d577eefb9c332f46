// startEngine called from code (the library's entry, src/index.ts) with an option it does not know: a TypeError naming
// it and the nearest known one, before any worker starts, as openModel, generate, finetune and startServer refuse
// theirs. Before, `kvCacheDtype: 'f32'` started an engine with the default KV dtype without a word. Guard.open and
// synth, which hand their callers' engine options on, name themselves; startServer, whose options object carries
// keys of its own into floe's internal engine entry, still starts.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { builtinModel, Guard, startEngine, startServer, synth } from '../../src/index.js';

const BROWN = builtinModel('floe-brown');
const SMALL = { backend: 'reference', kvCacheMemory: 2 ** 20 } as const;
// JavaScript callers: what a JS user may pass, so the checks are reached past TypeScript
const loose = <T>(v: unknown) => v as T;

/** startEngine's outcome: the error it rejects with, or null (an engine that did start is shut down). */
const outcome = (p: Promise<{ shutdown(ms: number): Promise<void> }>) => p.then(async (e) => { await e.shutdown(0); return null; }, (e: Error) => e);

test('startEngine: an unknown option fails naming it and the nearest known one, before the engine starts', async () => {
  const kv = await outcome(startEngine(loose({ model: BROWN, ...SMALL, kvCacheDtype: 'f32' })));
  assert.ok(kv instanceof TypeError, `rejects with a TypeError, got ${kv}`);
  assert.equal(kv.message, "startEngine: unknown option 'kvCacheDtype' (did you mean 'kvDtype'?); the options are model, modelId, backend, threads, dtype, " +
    'kvCacheMemory, kvDtype, swapSpace, kvPrefault, blockSize, maxBatchedTokens, maxNumSeqs, maxBatchSeqs, maxQueue, prefixCaching, speculative, ' +
    'numSpeculativeTokens, numPredictionTokens, loraModules, maxLoras, maxLoraRank, maxCpuLoras, offload, pipeline');
  assert.match(String((await outcome(startEngine(loose({ model: BROWN, ...SMALL, max_num_seqs: 2 }))))?.message), /^startEngine: unknown option 'max_num_seqs' \(did you mean 'maxNumSeqs'\?\)/);
  // serve's option names are not the engine's
  assert.match(String((await outcome(startEngine(loose({ model: BROWN, ...SMALL, enableLoraLoading: true }))))?.message), /^startEngine: unknown option 'enableLoraLoading'; the options are/);
  assert.deepEqual(await outcome(startEngine(loose(BROWN))), new TypeError(`startEngine: options must be an object, got '${BROWN}' (a string)`));
});

test('startEngine: the options it documents start an engine (modelId, maxQueue, prefixCaching, ...)', async () => {
  const e = await startEngine({ model: BROWN, ...SMALL, modelId: 'brown', threads: 1, maxNumSeqs: 2, maxQueue: 4, prefixCaching: false, blockSize: 16, swapSpace: 0 });
  try {
    assert.equal(e.info.modelId, 'brown');
    assert.equal(e.info.maxNumSeqs, 2);
  } finally {
    await e.shutdown(0);
  }
});

test('Guard.open and synth name themselves for an unknown engine option of their caller', async () => {
  // a guard that did open (the old behaviour) is closed, so that the failure is reported and nothing keeps running
  const g = await Guard.open(builtinModel('floe-guard'), loose({ ...SMALL, maxNumSeq: 2 })).then(async (x) => { await x.close(); return null; }, (e: Error) => e);
  assert.ok(g instanceof TypeError, `Guard.open rejects with a TypeError, got ${g}`);
  assert.match(g.message, /^Guard\.open: unknown option 'maxNumSeq' \(did you mean 'maxNumSeqs'\?\); the options are backend, threads, .*, format, name$/);
  const out = join(mkdtempSync(join(tmpdir(), 'floe-start-engine-')), 'out.jsonl');
  await assert.rejects(synth({ method: 'self-instruct', model: BROWN, out, num: 1, maxTokens: 2, engine: loose({ ...SMALL, thread: 1 }) }),
    { name: 'TypeError', message: "synth: engine: unknown option 'thread' (did you mean 'threads'?); the options are threads, backend, kvCacheMemory, kvDtype, maxNumSeqs" });
});

test('startServer with its LoRA-loading options (keys of its own, not the engine\'s) starts its engine', async () => {
  const s = await startServer({ model: BROWN, ...SMALL, port: 0, ui: false, dataDir: null, log: () => {}, enableLoraLoading: true, loraRoot: tmpdir() });
  try {
    const info = await s.ready;
    assert.ok(info.kvBlocks > 0);
  } finally {
    await s.close(0);
  }
});
