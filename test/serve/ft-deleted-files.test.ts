// A fine-tuning job trains on the files it validated: deleting its training / validation file afterwards (OpenAI
// allows DELETE /v1/files on a job's file) neither fails a queued job nor a running one resumed after a restart, and
// an ended job keeps no copy. Before, the trainer read the upload's path: a queued job whose file was deleted failed
// at start, and a running one failed on resume with "ENOENT ... DATA/files/file-….jsonl". A trainer's error names
// the job's file ids, never a path inside the data dir.
// `floe serve` on the built-in model, the official openai client.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI, { toFile } from 'openai';
import { serverProcs, startFloeServe } from './floe-process.js';
import { client, poll, terminal, waitFor } from './ft-helpers.js';
import { repoPath } from '../repo.js';

const BUILT = repoPath('dist/src/platform/jobs/child.js');
const procs = serverProcs();

const WORDS = ['the', 'river', 'old', 'man', 'said', 'city', 'house', 'was', 'in', 'a', 'long', 'night'];
const jsonl = (n: number, k: number) => Array.from({ length: n }, (_, i) => JSON.stringify({ messages: [
  { role: 'user', content: `${WORDS[(i + k) % 12]} ${WORDS[(3 * i + k) % 12]}` }, { role: 'assistant', content: `${WORDS[(5 * i + k) % 12]} ${WORDS[(7 * i) % 12]} ${WORDS[i % 12]}` }] })).join('\n') + '\n';
const upload = async (c: OpenAI, text: string) => c.files.create({ file: await toFile(Buffer.from(text), 'data.jsonl'), purpose: 'fine-tune' });
const body = (training_file: string, validation_file: string | null, floe: Record<string, unknown>) =>
  ({ model: 'floe-brown', training_file, validation_file, seed: 5, hyperparameters: { batch_size: 2 }, floe: { lora_rank: 2, ...floe } }) as unknown as OpenAI.FineTuning.Jobs.JobCreateParams;

test('deleting the files of a running and of a queued job, then restarting mid-job: both jobs succeed; ended jobs keep no copy', { timeout: 180_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'floe-ftdel-'));
  const args = ['--jobs-threads', '1'];
  const f1 = await startFloeServe(dir, { built: BUILT, procs, args, env: { FLOE_JOBS_TEST_STEP_MS: '150' } });
  const c1 = client(f1);
  const [trainA, validA, trainB] = [await upload(c1, jsonl(8, 0)), await upload(c1, jsonl(2, 1)), await upload(c1, jsonl(6, 2))];
  // 12 steps of at least 150 ms: a is still training while the test looks at b and deletes the files after a's first
  // checkpoint (with 6, the 4 steps left gave 3 s here, and a held-up test process saw a succeeded, not running)
  const A_STEPS = 12;
  const a = await c1.fineTuning.jobs.create(body(trainA.id, validA.id, { max_steps: A_STEPS, save_steps: 2 }));
  const b = await c1.fineTuning.jobs.create(body(trainB.id, null, { max_steps: 2, save_steps: 2 }));
  await poll(c1, a.id, (j) => j.status === 'running');
  assert.equal((await poll(c1, b.id, (j) => j.status !== 'validating_files')).status, 'queued');
  await waitFor(async () => (await c1.fineTuning.jobs.checkpoints.list(a.id)).data.length > 0); // a checkpoint to resume from
  for (const id of [trainA.id, validA.id, trainB.id]) assert.equal((await c1.files.delete(id)).deleted, true);
  await assert.rejects(c1.files.retrieve(trainA.id), OpenAI.NotFoundError);
  assert.equal((await c1.fineTuning.jobs.retrieve(a.id)).status, 'running');
  f1.proc.kill('SIGTERM'); // a graceful stop leaves the job running for the next start
  assert.equal(await f1.exit, 0);

  const f2 = await startFloeServe(dir, { built: BUILT, procs, args });
  const c2 = client(f2);
  const doneA = await poll(c2, a.id, terminal);
  assert.equal(doneA.status, 'succeeded', JSON.stringify(doneA.error));
  const events = (await c2.fineTuning.jobs.listEvents(a.id, { limit: 100 })).data.map((e) => e.message);
  assert.ok(events.some((m) => /^Resuming from the checkpoint at step \d+ after a restart/.test(m)), events.join('\n'));
  const csv = await (await c2.files.content(doneA.result_files[0]!)).text();
  assert.deepEqual(csv.trim().split('\n').slice(1).map((l) => Number(l.split(',')[0])), Array.from({ length: A_STEPS }, (_, i) => i + 1));
  assert.ok(/^\d+,[\d.]+,,[\d.]+,$/m.test(csv), `validation losses from the deleted validation file:\n${csv}`);
  const doneB = await poll(c2, b.id, terminal);
  assert.equal(doneB.status, 'succeeded', JSON.stringify(doneB.error));
  assert.equal(doneB.training_file, trainB.id, 'the job still names the file it was created with');
  for (const j of [a, b]) for (const p of ['training_file', 'validation_file']) assert.ok(!existsSync(join(dir, 'jobs', j.id, `${p}.jsonl`)), `${j.id} dropped its ${p} copy`);
  const answer = await c2.chat.completions.create({ model: doneA.fine_tuned_model!, messages: [{ role: 'user', content: 'the river' }], max_tokens: 3 });
  assert.equal(answer.model, doneA.fine_tuned_model);
  f2.proc.kill('SIGTERM');
  await f2.exit;
});

test("a trainer's error names the job's file ids, not paths inside the data dir", { timeout: 120_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'floe-ftdel-'));
  const f = await startFloeServe(dir, { built: BUILT, procs, args: ['--jobs-threads', '1'] });
  const c = client(f);
  const train = await upload(c, jsonl(4, 0));
  const valid = await upload(c, jsonl(2, 1));
  // every example is longer than 2 tokens: the trainer finds no token to learn from
  const j = await poll(c, (await c.fineTuning.jobs.create(body(train.id, valid.id, { max_steps: 1, max_seq_len: 2 }))).id, terminal);
  assert.equal(j.status, 'failed');
  assert.equal(j.error!.code, 'training_failed');
  assert.ok(j.error!.message.includes(`training_file ${train.id}`), j.error!.message);
  assert.ok(!j.error!.message.includes(dir), `no data-dir path: ${j.error!.message}`);
  f.proc.kill('SIGTERM');
  await f.exit;
});
