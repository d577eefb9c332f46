// client.models.retrieve(checkpoint model) (GET /v1/models/{ft:…:ckpt-step-N}) answers the checkpoint's card before
// any request used it, as chat / completions serve it on first use; a checkpoint the trainer rotated away is a 404
// naming the steps on disk. Before, the card was a 404 'does not exist' until a chat request had loaded it.
// `floe serve` on the built-in model, the official openai client.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import { serverProcs, startFloeServe } from './floe-process.js';
import { client, poll, terminal, uploadTinyTrain } from './ft-helpers.js';
import { repoPath } from '../repo.js';

const BUILT = repoPath('dist/src/platform/jobs/child.js');
const procs = serverProcs();

test('models.retrieve of a job checkpoint before its first use: its card; a rotated-away checkpoint: 404 with the steps on disk', { timeout: 120_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'floe-ckptcard-'));
  const floe = await startFloeServe(dir, { built: BUILT, procs, args: ['--jobs-threads', '1'] });
  const c = client(floe);
  const train = await uploadTinyTrain(c);
  const created = await c.fineTuning.jobs.create({ model: 'floe-brown', training_file: train.id, seed: 4, floe: { max_steps: 4, save_steps: 1, lora_rank: 2 } } as unknown as OpenAI.FineTuning.Jobs.JobCreateParams);
  const job = await poll(c, created.id, terminal);
  assert.equal(job.status, 'succeeded', JSON.stringify(job.error));
  const ckpts = (await c.fineTuning.jobs.checkpoints.list(job.id)).data; // steps 4, 3, 2, 1; the last 3 on disk
  assert.deepEqual(ckpts.map((k) => k.step_number), [4, 3, 2, 1]);
  const name = ckpts[1]!.fine_tuned_model_checkpoint;
  const card = await c.models.retrieve(name) as unknown as { id: string; parent: string; root: string };
  assert.equal(card.id, name);
  assert.equal(card.parent, 'floe-brown');
  assert.match(card.root, new RegExp(`jobs/${job.id}/run/checkpoint-0+3`));
  assert.equal((await c.chat.completions.create({ model: name, messages: [{ role: 'user', content: 'hi' }], max_tokens: 2 })).model, name);
  await assert.rejects(c.models.retrieve(ckpts[3]!.fine_tuned_model_checkpoint),
    (e: unknown) => e instanceof OpenAI.NotFoundError && /the checkpoint at step 1 of .* was removed .*on disk: steps 2, 3, 4/.test(e.message));
  await assert.rejects(c.models.retrieve(`${job.fine_tuned_model}:ckpt-step-9`), (e: unknown) => e instanceof OpenAI.NotFoundError && /has no checkpoint at step 9/.test(e.message));
  floe.proc.kill('SIGTERM');
  await floe.exit;
});
