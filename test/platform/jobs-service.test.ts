// JobService in-process (its trainer child runs from the TypeScript sources): a job trains floe-brown and hands its
// adapter to `register`; a file deleted before validation and a trainer that fails end `failed` with an error object.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { readPeftAdapter } from '../../src/model/adapter.js';
import { readHfConfig } from '../../src/formats/hf-config.js';
import { createFile } from '../../src/platform/files.js';
import { JobService, fineTunedName } from '../../src/platform/jobs/service.js';
import { Store } from '../../src/platform/store.js';

const MODEL = fileURLToPath(new URL('../../models/floe-brown', import.meta.url));
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
