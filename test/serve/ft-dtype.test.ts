// `floe serve --dtype bf16` with fine-tuning jobs: a job trains its adapter on the base converted the same way as the
// served weights (its trainer says so in the job's events), and the ft: model it makes answers on that server.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startFloeServe, serverProcs } from './floe-process.js';
import { client, poll, terminal, uploadTinyTrain } from './ft-helpers.js';
import { repoPath } from '../repo.js';

const BUILT = repoPath('dist/src/platform/jobs/child.js');
const procs = serverProcs();

for (const dtype of ['bf16', null] as const) {
  test(`serve ${dtype ? `--dtype ${dtype}` : 'without --dtype'}: a fine-tuning job trains on the base ${dtype ? 'converted the same way' : 'as stored'}`, { timeout: 180_000 }, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'floe-ft-dtype-'));
    const f = await startFloeServe(dir, { built: BUILT, procs, args: ['--jobs-threads', '1', ...(dtype ? ['--dtype', dtype] : [])] });
    const c = client(f);
    const train = await uploadTinyTrain(c);
    const job = await c.fineTuning.jobs.create({ model: 'floe-brown', training_file: train.id, seed: 3, suffix: 'dt', floe: { lora_rank: 2, max_steps: 2 } } as never);
    const end = await poll(c, job.id, terminal);
    assert.equal(end.status, 'succeeded', JSON.stringify(end.error));
    const events = (await c.fineTuning.jobs.listEvents(job.id, { limit: 100 })).data.map((e) => e.message);
    const note = events.filter((m) => /^base: converted to/.test(m));
    if (dtype) assert.ok(note.some((m) => m.startsWith(`base: converted to ${dtype} while loading (linear weights ${dtype}`)), events.join('\n'));
    else assert.deepEqual(note, [], 'no conversion without --dtype');
    const answer = await c.completions.create({ model: end.fine_tuned_model!, prompt: 'the river', max_tokens: 3, temperature: 0 });
    assert.equal(answer.choices.length, 1);
    f.proc.kill('SIGTERM');
    await f.exit;
  });
}
