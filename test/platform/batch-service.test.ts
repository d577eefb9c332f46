// BatchService's own rules with a plain executor function (the real routes and engine are in test/serve/batch*.ts):
// the window bounds lines in flight, 429 / loading answers are retried and recorded once, a shutting-down answer
// leaves the line for the next process, an expired window ends the batch 'expired' with what was answered.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BatchService, type ExecResult, type Executor } from '../../src/platform/batch.js';
import { createFile } from '../../src/platform/files.js';
import { Store } from '../../src/platform/store.js';

const line = (i: number) => JSON.stringify({ custom_id: `c${i}`, method: 'POST', url: '/v1/completions', body: { n: i } }) + '\n';
const answer = (body: Record<string, unknown>): ExecResult => ({ status: 200, body: JSON.stringify({ echo: body.n }) });
const err = (status: number, code: string): ExecResult => ({ status, body: JSON.stringify({ error: { message: code, type: 'x', param: null, code } }) });

function setup(n: number): { store: Store; fileId: string } {
  const store = new Store(mkdtempSync(join(tmpdir(), 'floe-batch-svc-')));
  const fileId = createFile(store, 'batch', 'in.jsonl', Array.from({ length: n }, (_, i) => line(i)), n).id;
  return { store, fileId };
}

test('at most window() lines in flight; 429 and model_loading are retried and each line recorded once, in input order', async () => {
  const { store, fileId } = setup(40);
  let inFlight = 0, most = 0;
  const tries = new Map<number, number>();
  const exec: Executor = async (_url, body) => {
    inFlight++;
    most = Math.max(most, inFlight);
    await new Promise((ok) => setTimeout(ok, Math.random() * 5));
    inFlight--;
    const n = body.n as number;
    const t = (tries.get(n) ?? 0) + 1;
    tries.set(n, t);
    if (n % 5 === 0 && t === 1) return err(429, 'too_many_requests');
    if (n % 7 === 0 && t === 1) return err(503, 'model_loading');
    return answer(body);
  };
  const svc = new BatchService(store, exec, { window: () => 6, retryMs: 1 });
  const b = await svc.wait(svc.create({ input_file_id: fileId, endpoint: '/v1/completions' }).id);
  assert.equal(b.status, 'completed');
  assert.equal(most, 6);
  assert.deepEqual(svc.object(b).request_counts, { total: 40, completed: 40, failed: 0 });
  const res = [...store.results(b.id)];
  assert.deepEqual(res.map((r) => [r.custom_id, JSON.parse(r.body).echo]), Array.from({ length: 40 }, (_, i) => [`c${i}`, i]));
  assert.equal(tries.get(35), 2);
  store.close();
});

test('a shutting-down answer stops the loop and leaves unanswered lines for the next process, which runs only those', async () => {
  const { store, fileId } = setup(30);
  let calls = 0;
  const first: Executor = async (_u, body) => (++calls > 10 ? err(503, 'shutting_down') : answer(body));
  const svc1 = new BatchService(store, first, { window: () => 1 });
  const id = svc1.create({ input_file_id: fileId, endpoint: '/v1/completions' }).id;
  const mid = await svc1.wait(id);
  assert.equal(mid.status, 'in_progress');
  assert.equal(store.doneLines(id).size, 10);
  const seen: number[] = [];
  const svc2 = new BatchService(store, async (_u, body) => { seen.push(body.n as number); return answer(body); }, { window: () => 4 });
  svc2.resume();
  const end = await svc2.wait(id);
  assert.equal(end.status, 'completed');
  assert.deepEqual(seen.sort((a, b) => a - b), Array.from({ length: 20 }, (_, i) => i + 10));
  store.close();
});

test('past expires_at the batch ends expired with the lines answered so far; non-2xx answers and the lines never run (batch_expired) go to the error file', async () => {
  const { store, fileId } = setup(20);
  let svc: BatchService;
  let id = '';
  const exec: Executor = async (_u, body) => {
    const n = body.n as number;
    if (n === 7) store.updateBatch(id, { expires_at: 0 }); // the window closes while line 7 runs
    return n === 3 ? err(400, 'invalid_value') : answer(body);
  };
  svc = new BatchService(store, exec, { window: () => 1 });
  id = svc.create({ input_file_id: fileId, endpoint: '/v1/completions' }).id;
  const end = await svc.wait(id);
  assert.equal(end.status, 'expired');
  assert.ok(end.expired_at !== null);
  const o = svc.object(end) as { request_counts: { completed: number; failed: number } };
  assert.deepEqual(o.request_counts, { total: 20, completed: 7, failed: 13 });
  const errLines = (await import('node:fs')).readFileSync(store.filePath(end.error_file_id!), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  assert.deepEqual(errLines.map((l) => [l.custom_id, l.response?.status_code ?? l.error.code]),
    [['c3', 400], ...Array.from({ length: 12 }, (_, i) => [`c${8 + i}`, 'batch_expired'])]);
  store.close();
});

test('the input file deleted while its batch runs (DELETE /v1/files): a restart still resumes the batch and its files hold every line', async () => {
  for (const cancel of [false, true]) {
    const { store, fileId } = setup(20);
    let calls = 0;
    const svc1 = new BatchService(store, async (_u, body) => (++calls > 8 ? err(503, 'shutting_down') : answer(body)), { window: () => 1 });
    const id = svc1.create({ input_file_id: fileId, endpoint: '/v1/completions' }).id;
    assert.equal((await svc1.wait(id)).status, 'in_progress');
    assert.ok(store.deleteFile(fileId), 'the input file is deleted');
    assert.ok(!existsSync(store.filePath(fileId)));
    if (cancel) store.updateBatch(id, { status: 'cancelling' }); // cancelled while no process ran it
    const svc2 = new BatchService(store, async (_u, body) => answer(body), { window: () => 4 });
    svc2.resume();
    const end = await svc2.wait(id);
    assert.equal(end.status, cancel ? 'cancelled' : 'completed', JSON.stringify(end.errors));
    const out = new Set([...store.results(id)].map((r) => r.custom_id));
    assert.deepEqual([...out], Array.from({ length: cancel ? 8 : 20 }, (_, i) => `c${i}`), 'the lines answered before the restart are kept');
    assert.equal(svc2.object(end).output_file_id !== null, true);
    assert.ok(!existsSync(store.batchInputPath(id)), 'an ended batch keeps no copy of its input');
    store.close();
  }
});
