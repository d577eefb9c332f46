// distill() from the library: a teacher cache that does not match the run names distill()'s options (teacherCache, and
// maxSeqLen / trainOnPrompt where the message names their flags), as a refused out or topK does
// (out-dir-options.test.ts). Before, a library caller was told only to "give another --teacher-cache", a flag it
// cannot pass. The CLI keeps its flag-only text and its exit code 1.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RunSetupError, distill, type DistillOptions } from '../../src/index.js';
import { tinyModelDir, writeTrainData } from './fixtures.js';
import { repoPath } from '../repo.js';

const work = mkdtempSync(join(tmpdir(), 'floe-distill-cache-options-'));
const teacher = tinyModelDir('gqa_f32'), other = tinyModelDir('mha_f32'), student = tinyModelDir('mha_f32');
const data = writeTrainData(work, 6);
const cache = join(work, 'run.cache');
let runs = 0;
const opts = (extra: Partial<DistillOptions> = {}): DistillOptions => ({
  teacher, student, data, out: join(work, `run${runs++}`), maxSteps: 1, batchSize: 2, topK: 8, teacherCache: cache, backend: 'reference', ...extra,
});

/** The refusal as the library sees it: the CLI's text (the cause, matching `cli`), then exactly `(distill() options: <names>)`. */
async function refused(o: DistillOptions, cli: RegExp, names: string): Promise<void> {
  await assert.rejects(distill(o), (e: Error) => {
    assert.ok(!(e instanceof RunSetupError), `a plain Error, as before (the CLI's exit 1): ${e}`);
    assert.ok(e.cause instanceof Error, `the CLI's text is the cause: ${e}`);
    assert.match(e.cause.message, cli);
    assert.doesNotMatch(e.cause.message, /distill\(\) options/);
    assert.equal(e.message, `${e.cause.message} (distill() options: ${names})`);
    return true;
  });
  assert.ok(!existsSync(o.out), `${o.out}: refused before training`);
}

test('distill(): a teacher cache made with another top-k, dtype, teacher or data names the option teacherCache (and maxSeqLen, trainOnPrompt)', { timeout: 300_000 }, async () => {
  const first = await distill(opts());
  assert.equal(first.teacherCache.built, true);
  assert.equal((await distill(opts({ loss: 'jsd' }))).teacherCache.built, false, 'a matching cache is reused');
  await refused(opts({ topK: 4 }), /run\.cache: the cache holds top-8 at temperature 2 .*this run asks top-4 .*; delete it or give another --teacher-cache$/, 'teacherCache');
  await refused(opts({ cacheDtype: 'f32' }), /run\.cache: the cache holds f16 log-probabilities, this run asks f32; delete it or give another --teacher-cache$/, 'teacherCache');
  await refused(opts({ teacher: other }), new RegExp(`run\\.cache: the cache was made from teacher ${teacher}, this run's teacher is ${other}; delete the cache to rebuild it, or give another --teacher-cache$`), 'teacherCache');
  const lines = readFileSync(data, 'utf8').trim().split('\n');
  const edited = join(work, 'edited.jsonl');
  writeFileSync(edited, [...lines.slice(0, -1), JSON.stringify({ text: 'an edited last line of the data.' })].join('\n') + '\n');
  await refused(opts({ data: edited }), new RegExp(`edited\\.jsonl:${lines.length} is not in the teacher cache as tokenized now .*: the data, tokenizer, --max-seq-len or --train-on-prompt changed; delete the cache to rebuild it, or give another --teacher-cache$`),
    'maxSeqLen, trainOnPrompt, teacherCache');
});

test('floe distill (CLI) with a mismatched --teacher-cache: exit 1 with the flags only, not the option names distill() adds for the library', { timeout: 300_000 }, () => {
  const own = join(work, 'cli.cache');
  const BIN = repoPath('bin/floe.js'); // the built CLI as users run it (npm test builds dist/ first; `npm run build` after a src change): it starts ~0.3 s sooner than src through tsx
  const floe = (topK: string, out: string) => spawnSync(process.execPath, [BIN, 'distill', '--teacher', teacher, '--student', student,
    '--data', data, '--out', join(work, out), '--max-steps', '1', '--batch-size', '2', '--top-k', topK, '--teacher-cache', own, '--backend', 'reference'], { encoding: 'utf8' });
  const made = floe('8', 'cli-a');
  assert.equal(made.status, 0, made.stderr);
  const r = floe('4', 'cli-b');
  assert.equal(r.status, 1, r.stderr);
  assert.match(r.stderr, /cli\.cache: the cache holds top-8 at temperature 2 .*this run asks top-4 .*; delete it or give another --teacher-cache\n/);
  assert.doesNotMatch(r.stderr, /\(\w+\(\) options/);
  assert.ok(!existsSync(join(work, 'cli-b')));
});
