// JobService with the server's --dtype: a job trains on the base converted that way (its trainer's note is an event,
// its summary records it), and a job resumed after a restart keeps the dtype it started with, also when the new
// server has none (else the resume would change the job's computation and be refused).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createFile } from '../../src/platform/files.js';
import { JobService } from '../../src/platform/jobs/service.js';
import { Store } from '../../src/platform/store.js';
import { repoPath } from '../repo.js';

const MODEL = repoPath('models/floe-brown');
const lines = Array.from({ length: 6 }, (_, i) => JSON.stringify({ prompt: `the river ${i}:`, completion: ` a long night on the water ${i}` })).join('\n');

async function until(what: string, cond: () => boolean, ms = 60_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

test('jobs train on the server\'s --dtype base; a job resumed by a server without --dtype keeps the bf16 it started with', { timeout: 180_000 }, async () => {
  const store = new Store(mkdtempSync(join(tmpdir(), 'floe-jobs-dtype-')));
  const file = createFile(store, 'fine-tune', 'train.jsonl', [lines], 6);
  process.env.FLOE_JOBS_TEST_STEP_MS = '300'; // the trainer child (forked now) pauses after each step: time to stop it mid-run
  const first = new JobService(store, { baseModel: 'floe-brown', modelPath: MODEL, threads: 1, dtype: 'bf16' });
  await first.start();
  const job = first.create({ model: 'floe-brown', training_file: file.id, floe: { max_steps: 6, save_steps: 1, lora_rank: 2, max_seq_len: 32 } });
  await until('a checkpoint', () => store.jobCheckpoints(job.id, null, 10).length > 0);
  await first.close(); // a server stopped mid-job: the trainer is killed, the job stays running
  delete process.env.FLOE_JOBS_TEST_STEP_MS;
  assert.equal(first.get(job.id).status, 'running');
  const events = () => store.jobEvents(job.id, null, 1000).map((e) => e.message);
  assert.ok(events().some((m) => /^base: converted to bf16 while loading \(linear weights bf16/.test(m)), events().join('\n'));

  const second = new JobService(store, { baseModel: 'floe-brown', modelPath: MODEL, threads: 1 }); // no --dtype now
  await second.start();
  await second.idle();
  const end = second.get(job.id);
  assert.equal(end.status, 'succeeded', end.error ?? '');
  assert.ok(events().some((m) => /^Resuming from the checkpoint at step \d/.test(m)), events().join('\n'));
  const summary = JSON.parse(readFileSync(join(second.runDir(job.id), 'summary.json'), 'utf8')) as { steps: number; startStep: number; base: { converted: string; linear: string } };
  assert.ok(summary.startStep > 0, 'it resumed rather than restarted');
  assert.deepEqual([summary.steps, summary.base.converted, summary.base.linear], [6, 'bf16', 'bf16']);
  assert.ok(existsSync(second.adapterDir(job.id)));
  await second.close();
  store.close();
});
