// Worker threads under node flags a worker may not take itself: a process started as `node --max-old-space-size=N …`
// (a user raising the heap) still starts the engine and the RAG chunking worker. Both used to pass
// `execArgv: process.execArgv` to their Worker, which Node validates as the worker's own and refused
// (ERR_WORKER_INVALID_EXEC_ARGV), so `floe serve` could not load its model.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { pathToFileURL } from 'node:url';
import { generate } from '../../src/model/generate.js';
import { FIXTURES, fixtureModel, genReq, rand, randomPrompt } from './helpers.js';
import { repoPath, repoUrl } from '../repo.js';

const src = (p: string) => JSON.stringify(pathToFileURL(repoUrl(`src/${p}`).pathname).href);
const BROWN = repoPath('models/floe-brown');

test('the engine worker and the chunking worker start in a process given V8 flags (node --max-old-space-size=…)', async () => {
  const r = rand(Math.floor(Math.random() * 1e9));
  const req = genReq('flags', randomPrompt(r, 3 + Math.floor(r() * 20)), { maxTokens: 6, ignoreEos: true });
  const { kind: _k, ...q } = req;
  const script = `
    import { startEngine } from ${src('engine/client.ts')};
    import { ChunkWorker } from ${src('platform/rag/chunk-pool.ts')};
    const client = await startEngine({ model: ${JSON.stringify(FIXTURES + 'gqa_f32')}, kvDtype: 'f32' });
    const ids = [];
    for await (const o of client.generate(${JSON.stringify(q)})) ids.push(...o.tokenIds);
    await client.shutdown(0);
    const w = new ChunkWorker(${JSON.stringify(BROWN)});
    const docs = await w.prepare([{ source: 'a.txt', content: 'The old man walked to the town. He was tired.' }], { chunkTokens: 32, overlap: 0 });
    await w.close();
    console.log(JSON.stringify({ ids, chunks: docs[0].chunks.length }));`;
  const run = spawnSync(process.execPath, ['--max-old-space-size=3072', '--stack-size=984', '--import', 'tsx', '--input-type=module', '-e', script], { encoding: 'utf8', timeout: 120_000 });
  assert.equal(run.status, 0, `the child failed:\n${run.stderr}`);
  const out = JSON.parse(run.stdout.trim().split('\n').at(-1)!) as { ids: number[]; chunks: number };
  const model = await fixtureModel('gqa_f32');
  const want = generate(model, q.promptIds, { maxTokens: q.maxTokens, sampling: { ...q.sampling, logitBias: null }, stopTokenIds: [], kvDtype: 'f32' });
  assert.deepEqual(out.ids, want.outputIds, 'the worker under those flags decodes as generate() does');
  assert.equal(out.chunks, 1);
});
