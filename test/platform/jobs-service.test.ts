// JobService in-process (its trainer child runs from the TypeScript sources): a job trains floe-brown and hands its
// adapter to `register`; a file deleted before validation and a trainer that fails end `failed` with an error object.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readPeftAdapter } from '../../src/model/adapter.js';
import { readHfConfig } from '../../src/formats/hf-config.js';
import { createFile } from '../../src/platform/files.js';
import { JobApiError, JobService, autoHyperparameters, epochsOfSteps, fineTunedName } from '../../src/platform/jobs/service.js';
import { Store } from '../../src/platform/store.js';
import { repoPath } from '../repo.js';

const MODEL = repoPath('models/floe-brown');
const lines = Array.from({ length: 8 }, (_, i) => JSON.stringify({ prompt: `the river ${i}:`, completion: ` a long night ${Math.random().toString(36).slice(2, 7)}` })).join('\n');

function setup(modelPath = MODEL) {
  const store = new Store(mkdtempSync(join(tmpdir(), 'floe-jobs-svc-')));
  const registered: Array<[string, string]> = [];
  const svc = new JobService(store, { baseModel: 'floe-brown', modelPath, threads: 1, register: async (name, dir) => { registered.push([name, dir]); } });
  const file = createFile(store, 'fine-tune', 'train.jsonl', [lines], 8);
  return { store, svc, registered, file };
}

test('a job trains in a child process from the sources and registers its adapter; events and steps are recorded', { timeout: 120_000 }, async () => {
  const { store, svc, registered, file } = setup();
  await svc.start();
  const job = svc.create({ model: 'floe-brown', training_file: file.id, suffix: 'x', floe: { max_steps: 3, save_steps: 2, lora_rank: 2 } });
  assert.equal(job.status, 'validating_files');
  await svc.idle();
  const end = svc.get(job.id);
  assert.equal(end.status, 'succeeded', end.error ?? '');
  assert.equal(end.fine_tuned_model, fineTunedName('floe-brown', 'x', job.id));
  assert.deepEqual(registered, [[end.fine_tuned_model, svc.adapterDir(job.id)]]);
  const adapter = readPeftAdapter(svc.adapterDir(job.id), readHfConfig(MODEL).config);
  assert.equal(adapter.config.rank, 2);
  assert.deepEqual(store.jobSteps(job.id).filter((s) => s.train_loss !== null).map((s) => s.step), [1, 2, 3]);
  assert.deepEqual(store.jobCheckpoints(job.id, null, 10).map((c) => c.step), [3, 2]);
  assert.ok(existsSync(svc.runDir(job.id)), 'the trainer output stays (checkpoints)');
  await svc.close();
  store.close();
});

test('failures end the job failed with an error object: a file deleted before validation, a trainer that cannot load the model', { timeout: 120_000 }, async () => {
  const { store, svc, file } = setup(join(tmpdir(), 'no-such-model-dir'));
  await svc.start();
  const gone = createFile(store, 'fine-tune', 'gone.jsonl', [lines], 8);
  const a = svc.create({ model: 'floe-brown', training_file: gone.id });
  store.deleteFile(gone.id);
  const b = svc.create({ model: 'floe-brown', training_file: file.id, floe: { max_steps: 1 } });
  await svc.idle();
  const ea = svc.get(a.id);
  assert.equal(ea.status, 'failed');
  assert.deepEqual({ ...JSON.parse(ea.error!), message: undefined }, { code: 'invalid_training_file', message: undefined, param: 'training_file' });
  assert.match(JSON.parse(ea.error!).message, /was deleted/);
  const eb = svc.get(b.id);
  assert.equal(eb.status, 'failed');
  assert.equal(JSON.parse(eb.error!).code, 'training_failed');
  assert.match(JSON.parse(eb.error!).message, /no-such-model-dir/);
  assert.equal(eb.fine_tuned_model, null);
  await svc.close();
  store.close();
});

test("'auto' hyperparameters follow the documented rule at its boundaries; given values are kept", () => {
  // epochs: 3, raised to ceil(100 / n) (≤ 25) when 3n < 100, lowered to floor(25000 / n) (≥ 1) when 3n > 25000
  for (const [n, epochs] of [[1, 25], [4, 25], [5, 20], [33, 4], [34, 3], [8333, 3], [8334, 2], [12_501, 1], [30_000, 1]] as const) {
    assert.equal(autoHyperparameters(n).n_epochs, epochs, `${n} examples`);
  }
  // batch: round(0.2% of n) in [1, 256]; learning-rate multiplier 1 / 2 / 4 for batches ≤ 8 / ≤ 64 / above
  for (const [n, batch, lr] of [[1, 1, 1], [749, 1, 1], [751, 2, 1], [4249, 8, 1], [4251, 9, 2], [32_249, 64, 2], [32_251, 65, 4], [1_000_000, 256, 4]] as const) {
    const hp = autoHyperparameters(n);
    assert.equal(hp.batch_size, batch, `${n} examples`);
    assert.equal(hp.learning_rate_multiplier, lr, `${n} examples`);
  }
  // a given value stays, and the rule reads the batch size actually used
  assert.deepEqual(autoHyperparameters(10, { n_epochs: 7, batch_size: 100, learning_rate_multiplier: 'auto' }), { n_epochs: 7, batch_size: 100, learning_rate_multiplier: 4 });
  assert.throws(() => autoHyperparameters(0), /positive number of training examples/);
});

test("a job's 'auto' hyperparameters are resolved from its training file when it is validated, and reported", { timeout: 60_000 }, async () => {
  const { store, svc, file } = setup();
  const job = svc.create({ model: 'floe-brown', training_file: file.id, hyperparameters: { batch_size: 2 } });
  assert.deepEqual(svc.object(job).hyperparameters, { n_epochs: 'auto', batch_size: 2, learning_rate_multiplier: 'auto' });
  await svc.close(); // no trainer is started: the job only gets validated and queued
  for (let i = 0; i < 200 && svc.get(job.id).status === 'validating_files'; i++) await new Promise((r) => setTimeout(r, 10));
  assert.equal(svc.get(job.id).status, 'queued');
  // 8 examples: 3 × 8 < 100 → ceil(100 / 8) = 13 epochs; batch 2 as given → multiplier 1
  assert.deepEqual(svc.object(svc.get(job.id)).hyperparameters, { n_epochs: 13, batch_size: 2, learning_rate_multiplier: 1 });
  const events = store.jobEvents(job.id, null, 100).map((e) => e.message);
  assert.ok(events.includes('Hyperparameters for 8 training examples: n_epochs=13, batch_size=2, learning_rate_multiplier=1'), events.join(' | '));
  store.close();
});

test("a job with floe.max_steps reports the epochs those steps make, not the 'auto' epochs it does not train; n_epochs with max_steps is refused", { timeout: 60_000 }, async () => {
  const { store, svc, file } = setup();
  // 8 examples in batches of 2: 4 steps an epoch, so 6 steps are 1.5 epochs ('auto' alone would say 13)
  const a = svc.create({ model: 'floe-brown', training_file: file.id, hyperparameters: { batch_size: 2 }, floe: { max_steps: 6 } });
  // 'auto' batch for 8 examples is 1: 8 steps an epoch, 3 steps are 0.375 epochs
  const b = svc.create({ model: 'floe-brown', training_file: file.id, floe: { max_steps: 3 } });
  assert.throws(() => svc.create({ model: 'floe-brown', training_file: file.id, hyperparameters: { n_epochs: 2 }, floe: { max_steps: 3 } }),
    (e: unknown) => e instanceof JobApiError && e.status === 400 && e.param === 'hyperparameters.n_epochs' && /n_epochs \(2\) or floe\.max_steps \(3\), not both/.test(e.message));
  await svc.close(); // no trainer is started: the jobs only get validated and queued
  for (let i = 0; i < 200 && [a, b].some((j) => svc.get(j.id).status === 'validating_files'); i++) await new Promise((r) => setTimeout(r, 10));
  assert.deepEqual(svc.object(svc.get(a.id)).hyperparameters, { n_epochs: 1.5, batch_size: 2, learning_rate_multiplier: 1 });
  assert.deepEqual(svc.object(svc.get(b.id)).hyperparameters, { n_epochs: 0.375, batch_size: 1, learning_rate_multiplier: 1 });
  assert.equal(epochsOfSteps(8, 24, 4), 1.33);
  assert.equal(epochsOfSteps(1, 30_000, 1), 0.0000333);
  const events = store.jobEvents(a.id, null, 100).map((e) => e.message);
  assert.ok(events.includes('Hyperparameters for 8 training examples: n_epochs=1.5 (floe.max_steps 6 at 4 steps an epoch), batch_size=2, learning_rate_multiplier=1'), events.join(' | '));
  store.close();
});
