// A fine-tuning job created under one --max-lora-rank that finishes under a server restarted with a lower one (it was
// running, queued or paused across the restart): it ends succeeded with its fine_tuned_model, unserved as a finished
// job's model is at such a start (a 400 lora_rank_exceeded naming the rank and the flag, not listed), and a restart
// with a high enough limit serves it. Before, it failed 'model_registration_failed' with the engine's rank message
// although it had trained and its adapter was on disk. `floe serve` on the built-in model, the official openai client.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI, { toFile } from 'openai';
import { serverProcs, startFloeServe, type Floe } from './floe-process.js';
import { chatJsonl, client, ftSeed, poll, sentences, terminal, waitFor } from './ft-helpers.js';
import { repoPath } from '../repo.js';

const BUILT = repoPath('dist/src/platform/jobs/child.js');
const procs = serverProcs();

const startFloe = (dataDir: string, args: readonly string[], env?: Record<string, string>): Promise<Floe> =>
  startFloeServe(dataDir, { built: BUILT, procs, args: ['--jobs-threads', '1', ...args], env });
const stop = async (f: Floe) => { f.proc.kill('SIGTERM'); await f.exit; };

// fresh random data each run (FT_SEED=N replays one)
const seed = ftSeed();
const trainJsonl = chatJsonl(8, sentences(seed));
const RANK = 8;
const LOW = 4;

test(`jobs of rank ${RANK} running, queued and paused when floe serve restarts with --max-lora-rank ${LOW} finish succeeded and unserved (a 400 naming the rank); --max-lora-rank ${RANK} serves them (seed ${seed})`, { timeout: 300_000 }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'floe-ft-rank-limit-'));
  // the first server's trainer sleeps 10 minutes after each step: its job is still training when the server stops
  const first = await startFloe(dir, [], { FLOE_JOBS_TEST_STEP_MS: '600000' });
  let c = client(first);
  const train = await c.files.create({ file: await toFile(Buffer.from(trainJsonl), 'train.jsonl'), purpose: 'fine-tune' });
  const create = (suffix: string) => c.fineTuning.jobs.create({
    model: 'floe-brown', training_file: train.id, seed: 7, suffix, hyperparameters: { batch_size: 4, learning_rate_multiplier: 10 },
    floe: { lora_rank: RANK, max_steps: 2, save_steps: 1 },
  } as unknown as OpenAI.FineTuning.Jobs.JobCreateParams);
  const events = async (id: string) => (await c.fineTuning.jobs.listEvents(id, { limit: 100 })).data.reverse();

  const running = await create('running');
  // its trainer has taken a step (and sleeps): the job is training, one at a time, so the next ones wait
  await waitFor(async () => (await events(running.id)).some((e) => e.type === 'metrics'));
  const queued = await create('queued');
  assert.equal((await poll(c, queued.id, (j) => j.status !== 'validating_files')).status, 'queued');
  const paused = await create('paused');
  assert.equal((await poll(c, paused.id, (j) => j.status !== 'validating_files')).status, 'queued');
  assert.equal((await c.fineTuning.jobs.pause(paused.id)).status as string, 'paused');
  assert.equal((await c.fineTuning.jobs.retrieve(running.id)).status, 'running');
  await stop(first);

  const low = await startFloe(dir, ['--max-lora-rank', String(LOW)]);
  c = client(low);
  // a new job of that rank is refused at creation, as before: only jobs created under the higher limit reach the end
  await assert.rejects(create('new'), (e: unknown) => e instanceof OpenAI.BadRequestError && e.param === 'floe.lora_rank' &&
    e.message === `400 floe.lora_rank ${RANK} is above this server's --max-lora-rank ${LOW}; its adapter could not be served`);
  const queuedDone = await poll(c, queued.id, (j) => j.status !== 'queued' && j.status !== 'running');
  assert.equal(queuedDone.status, 'succeeded', JSON.stringify(queuedDone.error));
  assert.equal((await c.fineTuning.jobs.resume(paused.id)).status, 'queued');
  const why = (name: string, id: string) => `the model '${name}' (fine-tuning job ${id}) exists but is not served: its LoRA rank ${RANK} is above ` +
    `this server's --max-lora-rank ${LOW}; restart floe serve with --max-lora-rank ${RANK} or more to serve it`;
  const refused = (name: string, id: string) => (e: unknown) => e instanceof OpenAI.BadRequestError && e.param === 'model' &&
    e.code === 'lora_rank_exceeded' && e.message === `400 ${why(name, id)}`;
  const models: string[] = [];
  for (const [created, suffix] of [[running, 'running'], [queued, 'queued'], [paused, 'paused']] as const) {
    const j = await poll(c, created.id, terminal);
    const ft = `ft:floe-brown:floe:${suffix}:${j.id}`; // OpenAI's name: ft:<base>:<org>:<suffix>:<job id>
    assert.equal(j.status, 'succeeded', `${suffix}: ${JSON.stringify(j.error)}`);
    assert.equal(j.error, null);
    assert.equal(j.fine_tuned_model, ft);
    assert.equal(j.result_files.length, 1);
    assert.ok(existsSync(join(dir, 'jobs', j.id, 'adapter', 'adapter_model.safetensors')), `${suffix}: the adapter is on disk`);
    const msgs = (await events(j.id)).map((e) => `${e.level}: ${e.message}`);
    assert.ok(msgs.includes(`info: New fine-tuned model created: ${ft}`), msgs.join('\n'));
    const w = why(ft, j.id);
    assert.ok(msgs.includes(`warn: ${w.charAt(0).toUpperCase()}${w.slice(1)}`), msgs.join('\n'));
    assert.ok(low.out().includes(`cannot serve ${ft} from ${join(dir, 'jobs', j.id, 'adapter')}: ${w}`), low.out());
    // its model and checkpoints say why they are not served, as a finished job's do after such a restart
    const ck = (await c.fineTuning.jobs.checkpoints.list(j.id)).data[0]!.fine_tuned_model_checkpoint;
    for (const name of [ft, ck]) {
      await assert.rejects(c.models.retrieve(name), refused(name, j.id), `retrieve ${name}`);
      await assert.rejects(c.chat.completions.create({ model: name, messages: [{ role: 'user', content: 'the river' }], max_tokens: 2 }), refused(name, j.id), `chat ${name}`);
    }
    models.push(ft);
  }
  // the running one went on after the restart (it had no complete checkpoint: from step 0)
  assert.ok((await events(running.id)).some((e) => e.message === 'Restarting from step 0 after a restart (no checkpoint was complete)'));
  assert.deepEqual((await c.models.list()).data.map((m) => m.id), ['floe-brown']);
  await stop(low);

  const enough = await startFloe(dir, ['--max-lora-rank', String(RANK)]);
  c = client(enough);
  const listed = (await c.models.list()).data.map((m) => m.id);
  for (const ft of models) {
    assert.ok(listed.includes(ft), `${ft} served again: ${listed.join(', ')}`);
    const a = await c.chat.completions.create({ model: ft, messages: [{ role: 'user', content: 'the river' }], max_tokens: 2 });
    assert.equal(a.model, ft);
  }
  await stop(enough);
});
