// OpenAI's POST /v1/fine_tuning/jobs/{id}/pause and /resume (client.fineTuning.jobs.pause / resume): a running job
// stops its trainer and waits 'paused' (the trainer is free for the next job), resume queues it again and it
// continues from its last checkpoint to the losses and adapter of an uninterrupted run; a queued job pauses too, a
// paused job can be cancelled, and pausing / resuming a job in the wrong state is a 409. Before, both were a 404
// 'no route'. `floe serve` on the built-in model, the official openai client.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI, { toFile } from 'openai';
import { serverProcs, startFloeServe } from './floe-process.js';
import { client, poll, terminal, waitFor, type Job } from './ft-helpers.js';
import { repoPath } from '../repo.js';

const BUILT = repoPath('dist/src/platform/jobs/child.js');
const procs = serverProcs();

const WORDS = ['the', 'river', 'old', 'man', 'said', 'city', 'house', 'was', 'in', 'a', 'long', 'night'];
const jsonl = Array.from({ length: 8 }, (_, i) => JSON.stringify({ messages: [
  { role: 'user', content: `${WORDS[i % 12]} ${WORDS[(3 * i) % 12]}` }, { role: 'assistant', content: `${WORDS[(5 * i + 1) % 12]} ${WORDS[(7 * i + 2) % 12]}` }] })).join('\n') + '\n';

test('pause a running job, run another meanwhile, resume: it continues from its checkpoint to the uninterrupted result; wrong states are a 409', { timeout: 180_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'floe-ftpause-'));
  const floe = await startFloeServe(dir, { built: BUILT, procs, args: ['--jobs-threads', '1'], env: { FLOE_JOBS_TEST_STEP_MS: '150' } });
  const c = client(floe);
  const train = await c.files.create({ file: await toFile(Buffer.from(jsonl), 'train.jsonl'), purpose: 'fine-tune' });
  const create = (steps: number) => c.fineTuning.jobs.create({ model: 'floe-brown', training_file: train.id, seed: 8, hyperparameters: { batch_size: 2, learning_rate_multiplier: 5 }, floe: { max_steps: steps, save_steps: 2, lora_rank: 2 } } as unknown as OpenAI.FineTuning.Jobs.JobCreateParams);
  const steps = async (id: string) => (await c.fineTuning.jobs.listEvents(id, { limit: 100 })).data.filter((e) => e.type === 'metrics').length;
  const is409 = (re: RegExp) => (e: unknown) => e instanceof OpenAI.APIError && e.status === 409 && re.test(e.message);

  // 12 steps of at least 150 ms: a is still training when it is resumed (a 409) and paused after its first checkpoint
  // (with 6, a ended 2.6 s after that checkpoint in a run here: a test process held up that long found it succeeded)
  const STEPS = 12;
  const a = await create(STEPS);
  await poll(c, a.id, (j) => j.status === 'running');
  await assert.rejects(c.fineTuning.jobs.resume(a.id), is409(/is running; only a paused job can be resumed/));
  await waitFor(async () => (await c.fineTuning.jobs.checkpoints.list(a.id)).data.length > 0);
  const paused = await c.fineTuning.jobs.pause(a.id);
  assert.equal(paused.status as string, 'paused');
  const at = await steps(a.id);
  const b = await poll(c, (await create(2)).id, terminal); // the trainer is free: another job runs while a waits
  assert.equal(b.status, 'succeeded', JSON.stringify(b.error));
  assert.equal((await c.fineTuning.jobs.retrieve(a.id)).status as string, 'paused');
  assert.equal(await steps(a.id), at, 'no step ran while paused');
  await assert.rejects(c.fineTuning.jobs.pause(a.id), is409(/is paused; only a queued or running job can be paused/));
  await assert.rejects(c.fineTuning.jobs.pause(b.id), is409(/is succeeded/));

  assert.equal((await c.fineTuning.jobs.resume(a.id)).status, 'queued');
  const doneA = await poll(c, a.id, terminal);
  assert.equal(doneA.status, 'succeeded', JSON.stringify(doneA.error));
  const msgs = (await c.fineTuning.jobs.listEvents(a.id, { limit: 100 })).data.map((e) => e.message).reverse();
  assert.ok(msgs.includes('Job paused') && msgs.includes('Job resumed, moving job to queued state'), msgs.join('\n'));
  assert.ok(msgs.some((m) => /^Resuming from the checkpoint at step \d+ after a pause$/.test(m)), msgs.join('\n'));

  const u = await poll(c, (await create(STEPS)).id, terminal); // the same job, never paused
  assert.equal(u.status, 'succeeded');
  const csv = async (j: Job) => (await c.files.content(j.result_files[0]!)).text();
  assert.equal(await csv(doneA), await csv(u), 'the same losses step by step');
  const adapter = (j: Job) => readFileSync(join(dir, 'jobs', j.id, 'adapter', 'adapter_model.safetensors'));
  assert.ok(adapter(doneA).equals(adapter(u)), 'the same adapter, bit for bit');

  // a queued job pauses (it never starts), and a paused job can be cancelled
  const blocker = await create(1000); // cancelled below: it must still be training when q is looked at, however slow the host
  const q = await create(2);
  await poll(c, blocker.id, (j) => j.status === 'running');
  assert.equal((await poll(c, q.id, (j) => j.status !== 'validating_files')).status, 'queued');
  assert.equal((await c.fineTuning.jobs.pause(q.id)).status as string, 'paused');
  assert.equal((await c.fineTuning.jobs.cancel(q.id)).status, 'cancelled');
  await c.fineTuning.jobs.cancel(blocker.id);
  assert.ok(!(await c.fineTuning.jobs.listEvents(q.id)).data.some((e) => e.message === 'Fine-tuning job started'), 'it never started');
  floe.proc.kill('SIGTERM');
  await floe.exit;
});
