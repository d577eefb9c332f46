// Batch input validation (each rule names its line) and the SQLite store (durable, idempotent results in input
// order, cursor pagination, no half-written file left behind).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileValidationError, createFile, parseBatchInput } from '../../src/platform/files.js';
import { Store, UnknownCursorError, type JobRow } from '../../src/platform/store.js';

const ok = (id: string, url = '/v1/chat/completions') => JSON.stringify({ custom_id: id, method: 'POST', url, body: { messages: [] } });

test('parseBatchInput: each malformed line is refused with its 1-based number and the rule', () => {
  const cases: Array<[string, RegExp]> = [
    ['not json', /^line 2: not valid JSON/],
    ['[1]', /^line 2: expected a JSON object .* got an array/],
    [JSON.stringify({ method: 'POST', url: '/v1/completions', body: {} }), /^line 2: custom_id must be a non-empty string/],
    [ok('a'), /^line 2: custom_id 'a' is already used on line 1/],
    [JSON.stringify({ custom_id: 'b', method: 'PUT', url: '/v1/completions', body: {} }), /^line 2: method must be 'POST', got "PUT"/],
    [JSON.stringify({ custom_id: 'b', method: 'POST', url: '/v1/models', body: {} }), /^line 2: url must be one of .* got "\/v1\/models"/],
    [JSON.stringify({ custom_id: 'b', method: 'POST', url: '/v1/completions', body: 'x' }), /^line 2: body must be a JSON object/],
    ['', /^line 2: empty line/],
  ];
  for (const [bad, re] of cases) {
    assert.throws(() => parseBatchInput(`${ok('a')}\n${bad}\n${ok('c')}\n`), (e: unknown) => e instanceof FileValidationError && e.line === 2 && re.test(e.message), bad);
  }
  assert.throws(() => parseBatchInput(''), /no lines/);
  const parsed = parseBatchInput(`${ok('a')}\r\n${ok('b', '/v1/embeddings')}`);
  // a UTF-8 byte order mark (the upload's TextDecoder drops it, the batch's readFileSync does not)
  assert.deepEqual(parseBatchInput(`\uFEFF${ok('a')}\n`).map((l) => l.custom_id), ['a']);
  assert.deepEqual(parsed.map((l) => [l.custom_id, l.url]), [['a', '/v1/chat/completions'], ['b', '/v1/embeddings']]);
});

test('store: results are durable across a reopen, idempotent per line and read back in input order', () => {
  const dir = mkdtempSync(join(tmpdir(), 'floe-store-'));
  const lines = Array.from({ length: 50 }, (_, i) => i).sort(() => Math.random() - 0.5);
  let st = new Store(dir);
  for (const i of lines.slice(0, 25)) st.putResult('b1', { line: i, custom_id: `c${i}`, request_id: `r${i}`, status_code: i % 7 ? 200 : 400, body: `{"n":${i}}` });
  st.close(); // a new process
  st = new Store(dir);
  assert.deepEqual([...st.doneLines('b1')].sort((a, b) => a - b), lines.slice(0, 25).sort((a, b) => a - b));
  for (const i of lines) st.putResult('b1', { line: i, custom_id: `c${i}`, request_id: `x${i}`, status_code: 200, body: '{}' });
  const res = [...st.results('b1')];
  assert.deepEqual(res.map((r) => r.line), Array.from({ length: 50 }, (_, i) => i));
  for (const r of res) {
    const first = lines.indexOf(r.line) < 25;
    assert.equal(r.request_id, first ? `r${r.line}` : `x${r.line}`, 'the first recorded result stays');
  }
  const bad = lines.slice(0, 25).filter((i) => i % 7 === 0).length;
  assert.deepEqual(st.counts('b1'), { completed: 50 - bad, failed: bad });
  st.close();
});

test('store: files are listed newest first with an after cursor; tmp files of a crashed write are removed on open', () => {
  const dir = mkdtempSync(join(tmpdir(), 'floe-store-'));
  const st = new Store(dir);
  const ids = Array.from({ length: 5 }, (_, i) => createFile(st, 'batch', `f${i}.jsonl`, [`line ${i}\n`], 1).id);
  assert.equal(readFileSync(st.filePath(ids[2]!), 'utf8'), 'line 2\n');
  const page1 = st.listFiles('batch', null, 2);
  assert.deepEqual(page1.map((f) => f.id), [ids[4], ids[3]]);
  assert.deepEqual(st.listFiles('batch', page1[1]!.id, 10).map((f) => f.id), [ids[2], ids[1], ids[0]]);
  assert.deepEqual(st.listFiles('batch_output', null, 10), []);
  assert.equal(st.deleteFile(ids[0]!), true);
  assert.ok(!existsSync(st.filePath(ids[0]!)));
  st.close();
  writeFileSync(join(dir, 'files', 'file-x.jsonl.123.tmp'), 'half');
  const again = new Store(dir);
  assert.deepEqual(readdirSync(join(dir, 'files')).filter((f) => f.endsWith('.tmp')), []);
  assert.equal(again.listFiles(null, null, 10).length, 4);
  again.close();
});

test('store: an after cursor that names no row of the list is refused (it used to restart at the first page)', () => {
  const st = new Store(mkdtempSync(join(tmpdir(), 'floe-store-')));
  const ids = Array.from({ length: 3 }, (_, i) => createFile(st, 'batch', `f${i}.jsonl`, [`line ${i}\n`], 1).id);
  const job = (id: string): Omit<JobRow, 'seq'> => ({
    id, model: 'm', training_file: ids[0]!, validation_file: null, hyperparameters: '{}', options: '{}', suffix: null, seed: 1, metadata: null,
    status: 'queued', error: null, fine_tuned_model: null, result_files: '[]', trained_tokens: null, created_at: 1, started_at: null, finished_at: null,
    attempts: 0, child_pid: null,
  });
  for (const j of ['ftjob-a', 'ftjob-b']) {
    st.insertJob(job(j));
    st.addJobEvent({ id: `ev-${j}`, job_id: j, created_at: 1, level: 'info', message: 'm', type: 'message', data: null });
    st.putJobCheckpoint({ id: `ck-${j}`, job_id: j, step: 2, created_at: 1 });
  }
  const refused = (f: () => unknown, id: string, what: RegExp) => assert.throws(f, (e: unknown) =>
    e instanceof UnknownCursorError && e.after === id && what.test(e.message) && e.message.includes(`'${id}'`));
  refused(() => st.listFiles(null, 'file-nope', 10), 'file-nope', /^no file with id/);
  st.deleteFile(ids[1]!);
  refused(() => st.listFiles('batch', ids[1]!, 10), ids[1]!, /^no file with id/); // a deleted file's id
  assert.deepEqual(st.listFiles('batch_output', ids[2]!, 10), [], 'a cursor of another purpose still marks a place');
  refused(() => st.listBatches('batch_nope', 10), 'batch_nope', /^no batch with id/);
  refused(() => st.listJobs('ftjob-nope', 10), 'ftjob-nope', /^no fine-tuning job with id/);
  refused(() => st.jobEvents('ftjob-a', 'ev-ftjob-b', 10), 'ev-ftjob-b', /^no event of ftjob-a with id/); // another job's event
  refused(() => st.jobCheckpoints('ftjob-a', 'ck-ftjob-b', 10), 'ck-ftjob-b', /^no checkpoint of ftjob-a with id/);
  assert.deepEqual(st.listJobs('ftjob-b', 10).map((j) => j.id), ['ftjob-a']);
  assert.deepEqual(st.jobEvents('ftjob-a', 'ev-ftjob-a', 10), []);
  st.close();
});
