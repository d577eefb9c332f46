// POST /v1/fine_tuning/jobs refuses what it would not honour, as OpenAI refuses an unrecognized argument: a misspelt
// parameter (validaton_file), a non-empty `integrations` (floe sends metrics to no wandb), and hyperparameters given
// both at the top level and in method.supervised, or floe.eval_steps without a validation_file. Before, each was
// accepted and silently dropped: the job trained without its validation file, without the integration, with the
// top-level values only, or without any validation loss. No job is created.
// `floe serve` on the built-in model, the official openai client.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import { serverProcs, startFloeServe } from './floe-process.js';
import { client, uploadTinyTrain } from './ft-helpers.js';
import { repoPath } from '../repo.js';

const BUILT = repoPath('dist/src/platform/jobs/child.js');
const procs = serverProcs();

test('unknown parameters, integrations and hyperparameters given twice are a 400 naming the parameter; the documented ones still create a job', { timeout: 120_000 }, async () => {
  const floe = await startFloeServe(mkdtempSync(join(tmpdir(), 'floe-ftparams-')), { built: BUILT, procs, args: ['--jobs-threads', '1'] });
  const c = client(floe);
  const train = await uploadTinyTrain(c);
  const base = { model: 'floe-brown', training_file: train.id, floe: { max_steps: 1, lora_rank: 2 } };
  const create = (extra: Record<string, unknown>) => c.fineTuning.jobs.create({ ...base, ...extra } as unknown as OpenAI.FineTuning.Jobs.JobCreateParams);
  const refused = async (extra: Record<string, unknown>, param: string, re: RegExp) => {
    await assert.rejects(create(extra), (e: unknown) => e instanceof OpenAI.BadRequestError && e.param === param && re.test(e.message), JSON.stringify(extra));
  };
  await refused({ validaton_file: train.id }, 'validaton_file', /unknown parameter 'validaton_file'; a fine-tuning job takes model, training_file, validation_file/);
  await refused({ learning_rate: 0.1 }, 'learning_rate', /unknown parameter 'learning_rate'/);
  await refused({ integrations: [{ type: 'wandb', wandb: { project: 'p' } }] }, 'integrations', /no integration/);
  await refused({ integrations: 'wandb' }, 'integrations', /no integration/);
  await refused({ hyperparameters: { batch_size: 2 }, method: { type: 'supervised', supervised: { hyperparameters: { batch_size: 1 } } } }, 'hyperparameters', /not both/);
  await refused({ floe: { ...base.floe, eval_steps: 1 } }, 'floe.eval_steps', /floe\.eval_steps \(1\) .* this job has no validation_file/);
  // a count past 2^31 (1e308 counted as an integer, and a job of that many steps trained until cancelled)
  await refused({ floe: { ...base.floe, max_steps: 1e308 } }, 'floe.max_steps', /floe\.max_steps must be an integer >= 1 and < 2147483648, got 1e\+308/);
  await refused({ floe: { ...base.floe, max_steps: 2 ** 53 + 2 } }, 'floe.max_steps', /< 2147483648/);
  await refused({ floe: { ...base.floe, max_seq_len: 2 ** 31 } }, 'floe.max_seq_len', /< 2147483648/);
  assert.deepEqual((await c.fineTuning.jobs.list()).data, [], 'no job was created');

  // every documented parameter together (integrations empty, hyperparameters in one place) makes a job
  const job = await create({
    validation_file: train.id, floe: { ...base.floe, eval_steps: 1 }, suffix: 'ok', seed: 3, metadata: { a: 'b' }, integrations: [],
    method: { type: 'supervised', supervised: { hyperparameters: { batch_size: 2, learning_rate_multiplier: 2 } } },
  });
  assert.equal(job.validation_file, train.id);
  assert.deepEqual(job.hyperparameters, { n_epochs: 'auto', batch_size: 2, learning_rate_multiplier: 2 });
  await c.fineTuning.jobs.cancel(job.id).catch(() => {}); // cleanup: a tiny job may have ended already
  floe.proc.kill('SIGTERM');
  await floe.exit;
});
