// Files / Batch / fine-tuning request checks through `floe serve` with the official openai client: `metadata` follows
// OpenAI's rule (16 keys, keys ≤ 64 characters, string values ≤ 512) for batches and jobs alike, and `GET /v1/files`
// honours `order` (asc pages oldest first), refusing an unknown order rather than ignoring it, and lists every file
// in one page when no `limit` is given (OpenAI's default 10,000).

import { before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI, { toFile } from 'openai';
import { client, serverProcs, startFloeServe, type Floe } from './floe-process.js';
import { repoPath } from '../repo.js';

const BUILT = repoPath('dist/src/serve/batch-routes.js');
const T = 60_000;
const procs = serverProcs();
let floe: Floe;
let c: OpenAI;
before(async () => {
  floe = await startFloeServe(mkdtempSync(join(tmpdir(), 'floe-batch-api-')), { built: BUILT, procs });
  c = client(floe);
});

const batchFile = (tag: string) => toFile(Buffer.from(JSON.stringify({ custom_id: tag, method: 'POST', url: '/v1/completions', body: { prompt: 'the river', max_tokens: 2 } }) + '\n'), `${tag}.jsonl`);

async function refused(p: Promise<unknown>, param: string, message: RegExp): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof OpenAI.BadRequestError, String(e));
    assert.equal(e.param, param);
    assert.match(e.message, message);
    return true;
  });
}

test('batch and fine-tuning metadata: at most 16 keys, keys up to 64 characters, string values up to 512; the bad key is named', { timeout: T }, async () => {
  const f = await c.files.create({ file: await batchFile('m'), purpose: 'batch' });
  const create = (metadata: unknown) => c.batches.create({ input_file_id: f.id, endpoint: '/v1/completions', completion_window: '24h', metadata: metadata as Record<string, string> });
  const keys = (n: number) => Object.fromEntries(Array.from({ length: n }, (_, i) => [`k${i}`, 'v']));
  await refused(create(keys(17)), 'metadata', /at most 16 keys, got 17/);
  await refused(create({ ['x'.repeat(65)]: 'v' }), 'metadata', /65 characters; keys are at most 64/);
  await refused(create({ note: 'y'.repeat(513) }), 'metadata.note', /metadata\.note is 513 characters; values are at most 512/);
  await refused(create({ n: 3 }), 'metadata.n', /metadata\.n must be a string, got 3/);
  await refused(create(['a']), 'metadata', /must be an object of string values, got an array/);
  const most = { ...keys(15), ['z'.repeat(64)]: 'w'.repeat(512) };
  const b = await create(most);
  assert.deepEqual(b.metadata, most);
  assert.deepEqual((await c.batches.retrieve(b.id)).metadata, most);
  // Cancelled so that it does not run beside the later tests; two tokens can finish first (a 409 naming 'completed').
  await c.batches.cancel(b.id).catch((e: unknown) => {
    if (!(e instanceof OpenAI.ConflictError && /is completed;/.test(e.message))) throw e;
  });

  const ft = await c.files.create({ file: await toFile(Buffer.from(JSON.stringify({ prompt: 'a', completion: 'b' }) + '\n'), 'ft.jsonl'), purpose: 'fine-tune' });
  await refused(c.fineTuning.jobs.create({ model: 'floe-brown', training_file: ft.id, metadata: keys(17) }), 'metadata', /at most 16 keys, got 17/);
});

test('GET /v1/files order: asc pages oldest first, desc (the default) newest first; another order is a 400 naming it', { timeout: T }, async () => {
  const ids: string[] = [];
  for (const t of ['o1', 'o2', 'o3', 'o4']) ids.push((await c.files.create({ file: await batchFile(t), purpose: 'batch' })).id);
  const walk = async (order?: 'asc' | 'desc') => {
    const got: string[] = [];
    for await (const f of c.files.list({ purpose: 'batch', limit: 1, ...(order ? { order } : {}) })) if (ids.includes(f.id)) got.push(f.id);
    return got;
  };
  assert.deepEqual(await walk('asc'), ids);
  assert.deepEqual(await walk('desc'), [...ids].reverse());
  assert.deepEqual(await walk(), [...ids].reverse());
  const page = await c.files.list({ order: 'asc', after: ids[1], limit: 2, purpose: 'batch' });
  assert.deepEqual(page.data.map((f) => f.id), ids.slice(2));
  await refused(c.files.list({ order: 'sideways' as 'asc' }), 'order', /order must be 'asc' or 'desc', got 'sideways'/);
});

test('GET /v1/files without limit answers every file in one page, as OpenAI (default 10,000), so client.files.list().data is complete', { timeout: T }, async () => {
  const ids = new Set<string>();
  for (let i = 0; i < 23; i++) ids.add((await c.files.create({ file: await batchFile(`l${i}`), purpose: 'batch' })).id);
  const page = await c.files.list();
  assert.equal(page.has_more, false);
  assert.equal(page.data.filter((f) => ids.has(f.id)).length, 23);
  assert.equal((await c.batches.list()).data.length <= 20, true, 'other lists keep 20');
});
