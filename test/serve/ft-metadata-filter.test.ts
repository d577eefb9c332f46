// GET /v1/fine_tuning/jobs with OpenAI's metadata filter, through `floe serve` and the official openai client:
// `metadata: {k: v}` (sent as metadata[k]=v) lists only the jobs whose metadata holds every pair, `metadata: null`
// only the jobs without metadata, and pages through the filtered list; a malformed metadata parameter is a 400.
// Before, the filter was ignored and every job was listed.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type OpenAI from 'openai';
import { serverProcs, startFloeServe } from './floe-process.js';
import { client, uploadTinyTrain } from './ft-helpers.js';
import { repoPath } from '../repo.js';

const BUILT = repoPath('dist/src/platform/jobs/child.js');
const procs = serverProcs();

test('jobs.list({ metadata }) filters by every pair, metadata: null lists the jobs without metadata; bad filters are a 400', { timeout: 120_000 }, async () => {
  const floe = await startFloeServe(mkdtempSync(join(tmpdir(), 'floe-ftmd-')), { built: BUILT, procs, args: ['--jobs-threads', '1'] });
  const c = client(floe);
  const train = await uploadTinyTrain(c);
  const create = (metadata: Record<string, string> | undefined) =>
    c.fineTuning.jobs.create({ model: 'floe-brown', training_file: train.id, metadata, floe: { max_steps: 1, lora_rank: 2 } } as unknown as OpenAI.FineTuning.Jobs.JobCreateParams);
  const a1 = await create({ team: 'a', run: '1' });
  const b1 = await create({ team: 'b', run: '1' });
  const none = await create(undefined);
  const a2 = await create({ team: 'a', run: '2', 'key with spaces': 'é&=' });
  const ids = async (metadata: Record<string, string> | null, limit = 20) => {
    const out: string[] = [];
    for await (const j of c.fineTuning.jobs.list({ metadata, limit })) out.push(j.id);
    return out;
  };
  assert.deepEqual(await ids({ team: 'a' }), [a2.id, a1.id], 'newest first, only team a');
  assert.deepEqual(await ids({ team: 'a' }, 1), [a2.id, a1.id], 'the cursor pages through the filtered list');
  assert.deepEqual(await ids({ team: 'a', run: '1' }), [a1.id], 'every pair must match');
  assert.deepEqual(await ids({ run: '1' }), [b1.id, a1.id]);
  assert.deepEqual(await ids({ 'key with spaces': 'é&=' }), [a2.id], 'keys and values are URL-decoded');
  assert.deepEqual(await ids({ team: 'c' }), []);
  assert.deepEqual(await ids(null), [none.id], 'metadata: null: the jobs without metadata');
  const page = await c.fineTuning.jobs.list({ metadata: { team: 'b' } });
  assert.equal(page.has_more, false);
  assert.deepEqual(page.data.map((j) => j.metadata), [{ team: 'b', run: '1' }]);
  assert.deepEqual(await ids({}), [a2.id, none.id, b1.id, a1.id], 'no filter: every job');

  const raw = async (q: string) => {
    const r = await fetch(`${floe.url}/v1/fine_tuning/jobs?${q}`);
    return { status: r.status, body: await r.json() as { error?: { param: string; message: string } } };
  };
  assert.equal((await raw('metadata=null')).status, 200);
  for (const [q, param] of [['metadata=x', 'metadata'], ['metadata.team=a', 'metadata.team'], ['metadata%5Bteam%5D=a&metadata=null', 'metadata'], ['metadata%5Bteam%5D=a&metadata%5Bteam%5D=b', 'metadata[team]']] as const) {
    const r = await raw(q);
    assert.equal(r.status, 400, `${q}: ${JSON.stringify(r.body)}`);
    assert.equal(r.body.error!.param, param, q);
  }
  floe.proc.kill('SIGTERM');
  await floe.exit;
});
