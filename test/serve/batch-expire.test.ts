// A batch whose completion window ends before all its lines ran, through `floe serve` and the official openai client:
// it ends `expired`, the lines that ran are in the output / error files as usual, and (as with OpenAI) every line that
// never ran is in the error file as {response: null, error: {code: 'batch_expired'}} and counts as failed, so that
// each custom_id of the input is accounted for exactly once.

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
const T = 120_000;
const N = 40;
const BAD = 1; // refused by the route (400): the error file, with its response

const procs = serverProcs();

test('a batch past its window ends expired: the lines never run are in the error file as batch_expired, counted failed', { timeout: T }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'floe-batch-expire-'));
  const args = ['--max-num-seqs', '2', '--batch-max-num-seqs', '2']; // 4 lines in flight: lines finish one after another
  const f1 = await startFloeServe(dir, { built: BUILT, procs, args });
  const c1 = client(f1);
  const jsonl = Array.from({ length: N }, (_, i) => JSON.stringify({
    custom_id: `e-${i}`, method: 'POST', url: '/v1/completions',
    body: { model: 'floe-brown', prompt: `the old river ${i}`, max_tokens: i === BAD ? -1 : 24, temperature: 0 },
  })).join('\n') + '\n';
  const file = await c1.files.create({ file: await toFile(Buffer.from(jsonl), 'requests.jsonl'), purpose: 'batch' });
  const b = await c1.batches.create({ input_file_id: file.id, endpoint: '/v1/completions', completion_window: '24h', metadata: { run: 's29' } });
  await poll(c1, b.id, (x) => x.request_counts!.completed >= 4 || terminal(x));
  f1.proc.kill('SIGKILL');
  await f1.exit;
  // the server comes back after the 24 h went by
  const db = new Database(join(dir, 'floe.db'));
  db.prepare('UPDATE batches SET expires_at = ? WHERE id = ?').run(Math.floor(Date.now() / 1000) - 60, b.id);
  const ran = (db.prepare('SELECT custom_id FROM batch_lines WHERE batch_id = ?').pluck().all(b.id) as string[]);
  db.close();
  assert.ok(ran.length >= 4 && ran.length < N, `${ran.length} lines ran before the window ended`);

  const f2 = await startFloeServe(dir, { built: BUILT, procs, args });
  const c2 = client(f2);
  const end = await poll(c2, b.id, terminal);
  assert.equal(end.status, 'expired');
  assert.ok(end.expired_at !== null && end.completed_at === null);
  assert.deepEqual(end.metadata, { run: 's29' });
  const ok = ran.filter((c) => c !== `e-${BAD}`).length;
  assert.deepEqual(end.request_counts, { total: N, completed: ok, failed: N - ok });

  const read = async (id: string | null | undefined) => id ? (await (await c2.files.content(id)).text()).trim().split('\n').map((l) => JSON.parse(l)) : [];
  const out = await read(end.output_file_id);
  const errs = await read(end.error_file_id);
  assert.deepEqual(out.map((l) => l.custom_id).sort(), ran.filter((c) => c !== `e-${BAD}`).sort(), 'the output file holds the lines that ran');
  assert.ok(out.every((l) => l.response.status_code === 200 && l.error === null));
  assert.deepEqual([...out, ...errs].map((l) => l.custom_id).sort(), Array.from({ length: N }, (_, i) => `e-${i}`).sort(), 'every line once, in one file or the other');
  const idx = (l: { custom_id: string }) => Number(l.custom_id.slice(2));
  assert.deepEqual(errs.map(idx), [...errs.map(idx)].sort((x, y) => x - y), 'the error file in input order');
  for (const l of errs) {
    assert.deepEqual(Object.keys(l), ['id', 'custom_id', 'response', 'error']);
    if (ran.includes(l.custom_id)) {
      assert.equal(l.custom_id, `e-${BAD}`);
      assert.equal(l.response.status_code, 400);
      assert.equal(l.error, null);
    } else {
      assert.equal(l.response, null, `${l.custom_id}: never ran, so no response`);
      assert.equal(l.error.code, 'batch_expired');
      assert.match(l.error.message, /24h completion window ended/);
      assert.match(l.id, /^batch_req_/);
    }
  }
  f2.proc.kill('SIGTERM');
  await f2.exit;
});
