// `floe serve` killed while finalizing a batch (after its output / error files' rows were written, before the batch
// said completed): the next start finalizes again over the same files, so the batch has one output and one error
// file and GET /v1/files lists no stray copy.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { toFile } from 'openai';
import { client, poll, terminal } from './batch-helpers.js';
import { serverProcs, startFloeServe } from './floe-process.js';
import { repoPath } from '../repo.js';

const BUILT = repoPath('dist/src/serve/batch-routes.js');
const T = 60_000;
const procs = serverProcs();

test('killed mid-finalize, restarted: the batch ends with one output and one error file, none left over', { timeout: T }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'floe-batch-finalize-'));
  const f1 = await startFloeServe(dir, { built: BUILT, procs });
  const c1 = client(f1);
  const jsonl = Array.from({ length: 6 }, (_, i) => JSON.stringify({
    custom_id: `f-${i}`, method: 'POST', url: '/v1/chat/completions',
    body: { model: i === 2 ? 'no-such-model' : 'floe-brown', messages: [{ role: 'user', content: `hello ${i}` }], max_tokens: 4, temperature: 0 },
  })).join('\n') + '\n';
  const file = await c1.files.create({ file: await toFile(Buffer.from(jsonl), 'in.jsonl'), purpose: 'batch' });
  const first = await poll(c1, (await c1.batches.create({ input_file_id: file.id, endpoint: '/v1/chat/completions', completion_window: '24h' })).id, terminal);
  assert.equal(first.status, 'completed');
  const firstOut = await (await c1.files.content(first.output_file_id!)).text();
  f1.proc.kill('SIGKILL');
  await f1.exit;
  // the state a kill between the files' rows and the status flip leaves
  const db = new Database(join(dir, 'floe.db'));
  db.prepare("UPDATE batches SET status = 'finalizing', output_file_id = NULL, error_file_id = NULL, completed_at = NULL WHERE id = ?").run(first.id);
  db.close();

  const f2 = await startFloeServe(dir, { built: BUILT, procs });
  const c2 = client(f2);
  const end = await poll(c2, first.id, terminal);
  assert.equal(end.status, 'completed');
  assert.deepEqual(end.request_counts, { total: 6, completed: 5, failed: 1 });
  const outputs = (await c2.files.list({ purpose: 'batch_output' })).data.map((f) => f.id).sort();
  assert.deepEqual(outputs, [end.output_file_id!, end.error_file_id!].sort(), 'one output and one error file, no stray copy');
  assert.equal(await (await c2.files.content(end.output_file_id!)).text(), firstOut);
  const errs = (await (await c2.files.content(end.error_file_id!)).text()).trim().split('\n').map((l) => JSON.parse(l));
  assert.deepEqual(errs.map((l) => [l.custom_id, l.response.status_code]), [['f-2', 404]]);
  f2.proc.kill('SIGTERM');
  await f2.exit;
});
