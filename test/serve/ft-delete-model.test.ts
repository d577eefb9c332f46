// OpenAI's DELETE /v1/models/{model} on a fine-tuning job's model (client.models.delete): the model stops answering
// at once and is not served again after a restart; the job, its events, checkpoints and result file stay. The base
// and LoRA adapters are a 400 (adapters are unloaded with /v1/unload_lora_adapter), an unknown or already deleted
// model a 404. Before, every DELETE /v1/models was a 404 'no route', and a job's model could not be removed at all
// (unload_lora_adapter only until the next start, and it now refuses job names).
// `floe serve` on the built-in model, the official openai client.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import { serverProcs, startFloeServe } from './floe-process.js';
import { client, poll, terminal, uploadTinyTrain } from './ft-helpers.js';
import { repoPath } from '../repo.js';

const BUILT = repoPath('dist/src/platform/jobs/child.js');
const TOOLS = repoPath('models/floe-brown-tools');
const procs = serverProcs();

test("client.models.delete(job's fine-tuned model): gone now and after a restart, the job stays; other models are refused", { timeout: 120_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'floe-ftdelmodel-'));
  const args = ['--jobs-threads', '1', '--lora-modules', `tools=${TOOLS}`];
  const f1 = await startFloeServe(dir, { built: BUILT, procs, args });
  const c = client(f1);
  const train = await uploadTinyTrain(c);
  const create = () => c.fineTuning.jobs.create({ model: 'floe-brown', training_file: train.id, seed: 2, floe: { max_steps: 2, save_steps: 2, lora_rank: 2 } } as unknown as OpenAI.FineTuning.Jobs.JobCreateParams);
  const finish = (id: string) => poll(c, id, terminal);
  const job = await finish((await create()).id);
  const kept = await finish((await create()).id);
  assert.equal(job.status, 'succeeded', JSON.stringify(job.error));
  const ft = job.fine_tuned_model!;
  const ckpt = (await c.fineTuning.jobs.checkpoints.list(job.id)).data[0]!.fine_tuned_model_checkpoint;
  const ask = (cl: OpenAI, model: string) => cl.chat.completions.create({ model, messages: [{ role: 'user', content: 'the river' }], max_tokens: 2 });
  assert.equal((await ask(c, ft)).model, ft);

  assert.deepEqual(await c.models.delete(ft), { id: ft, object: 'model', deleted: true });
  const ids = async (cl: OpenAI) => (await cl.models.list()).data.map((m) => m.id);
  assert.ok(!(await ids(c)).includes(ft), 'no longer listed');
  assert.ok((await ids(c)).includes(kept.fine_tuned_model!), "the other job's model stays");
  await assert.rejects(ask(c, ft), (e: unknown) => e instanceof OpenAI.NotFoundError && e.param === 'model');
  await assert.rejects(c.models.delete(ft), (e: unknown) => e instanceof OpenAI.NotFoundError && /was deleted/.test(e.message));
  for (const other of ['floe-brown', 'tools']) {
    await assert.rejects(c.models.delete(other), (e: unknown) => e instanceof OpenAI.BadRequestError && /not the fine-tuned model of a job/.test(e.message), other);
  }
  await assert.rejects(c.models.delete('ft:floe-brown:floe::ftjob-0123'), OpenAI.NotFoundError);
  const after1 = await c.fineTuning.jobs.retrieve(job.id);
  assert.equal(after1.status, 'succeeded');
  assert.equal(after1.fine_tuned_model, ft, 'the job still names the model it made, as OpenAI keeps it');
  assert.equal((await c.fineTuning.jobs.listEvents(job.id)).data[0]!.message, `Fine-tuned model deleted: ${ft}`);
  assert.ok(!existsSync(join(dir, 'jobs', job.id, 'adapter')), 'its adapter left the data dir');
  assert.equal((await ask(c, ckpt)).model, ckpt, 'its checkpoints are still served');
  f1.proc.kill('SIGTERM');
  await f1.exit;

  const f2 = await startFloeServe(dir, { built: BUILT, procs, args });
  const c2 = client(f2);
  assert.ok(!(await ids(c2)).includes(ft), 'not served again after a restart');
  assert.ok((await ids(c2)).includes(kept.fine_tuned_model!));
  await assert.rejects(ask(c2, ft), OpenAI.NotFoundError);
  assert.ok(!/cannot serve/.test(f2.out()), f2.out());
  f2.proc.kill('SIGTERM');
  await f2.exit;
});
