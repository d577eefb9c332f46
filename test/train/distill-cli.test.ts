// floe distill as a user runs it (subprocess): summary, metrics with ce / kd, the cache reused by a second student run,
// usage errors (exit 2) and a bad student path (exit 1).

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runEach } from '../cli/run-each.js';
import { tinyModelDir, writeTrainData } from './fixtures.js';
import { repoPath } from '../repo.js';

const BIN = repoPath('bin/floe.js'); // the built CLI as users run it (npm test builds dist/ first; `npm run build` after a src change): it starts ~0.3 s sooner than src through tsx
const ARGS = [BIN];
const teacher = tinyModelDir('gqa_f32');
const student = tinyModelDir('mha_f32');
const work = mkdtempSync(join(tmpdir(), 'floe-cli-distill-'));
const data = writeTrainData(work, 10);

function floe(args: string[]) {
  const r = spawnSync(process.execPath, [...ARGS, ...args], { encoding: 'utf8', timeout: 120_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}
const common = ['--teacher', teacher, '--student', student, '--data', data, '--max-steps', '3', '--lr', '1e-2', '--batch-size', '2', '--lora-rank', '4',
  '--top-k', '16', '--seed', '3', '--backend', 'reference'];

describe('floe distill (subprocess)', () => {
  it('builds the teacher cache, trains, reports bytes/token; a second run with another loss reuses the cache', () => {
    const cache = join(work, 'teacher.cache');
    const a = floe(['distill', ...common, '--teacher-cache', cache, '--out', join(work, 'a'), '--json']);
    assert.equal(a.code, 0, a.err);
    const s = JSON.parse(a.out.trim());
    assert.equal(s.steps, 3);
    assert.equal(s.teacherCache.built, true);
    assert.equal(s.teacherCache.bytesPerToken, 16 * 6 + 4);
    assert.equal(s.teacherCache.bytes, statSync(cache).size);
    assert.ok(existsSync(join(work, 'a', 'final', 'adapter_model.safetensors')));
    const ms = readFileSync(join(work, 'a', 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    for (const m of ms) assert.ok(typeof m.ce === 'number' && typeof m.kd === 'number' && Math.abs(m.loss - (0.5 * m.ce + 0.5 * m.kd)) < 1e-9 * m.loss, JSON.stringify(m));
    const b = floe(['distill', ...common, '--teacher-cache', cache, '--loss', 'jsd', '--beta', '0.3', '--out', join(work, 'b')]);
    assert.equal(b.code, 0, b.err);
    assert.match(b.out, /teacher cache .*: \d+ target tokens, 100 bytes\/token, .* reused/);
  });

  it('a cache from another teacher, from the teacher since retrained, or from data since changed is refused before training', () => {
    const dir = mkdtempSync(join(work, 'stale-'));
    const own = join(dir, 'teacher');
    cpSync(teacher, own, { recursive: true });
    const cache = join(dir, 'stale.cache');
    const args = (t: string, d: string, out: string) => ['distill', ...common.map((x) => (x === teacher ? t : x === data ? d : x)), '--teacher-cache', cache, '--out', join(dir, out)];
    assert.equal(floe(args(own, data, 'ok')).code, 0);
    const refused = (r: ReturnType<typeof floe>, out: string, re: RegExp) => {
      assert.equal(r.code, 1, r.err);
      assert.match(r.err, re);
      assert.ok(!existsSync(join(dir, out)), `${out}: nothing trained, no --out made`);
    };
    refused(floe(args(student, data, 'other-teacher')), 'other-teacher', new RegExp(`stale\\.cache: the cache was made from teacher ${own}, this run's teacher is ${student}`));
    const lines = readFileSync(data, 'utf8').trim().split('\n');
    const edited = join(dir, 'edited.jsonl');
    writeFileSync(edited, [...lines.slice(0, -1), JSON.stringify({ text: 'an edited last line of the data.' })].join('\n') + '\n');
    refused(floe(args(own, edited, 'edited')), 'edited', new RegExp(`edited\\.jsonl:${lines.length} is not in the teacher cache as tokenized now`));
    assert.equal(floe(['distill', ...common.map((x) => (x === teacher ? own : x)), '--teacher-cache', cache, '--cache-dtype', 'f32', '--out', join(dir, 'f32')]).code, 1);
    const weights = readdirSync(own).find((f) => f.endsWith('.safetensors'))!;
    utimesSync(join(own, weights), new Date(), new Date(Date.now() + 60_000)); // retrained in place: same path, other files
    refused(floe(args(own, data, 'retrained')), 'retrained', /the cache was made from teacher .* as it was then \(its files changed since\)/);
  });

  it('--on-policy 1 samples with the student and needs no cache; metrics say which batches were on-policy', () => {
    const r = floe(['distill', ...common, '--on-policy', '1', '--sample-temperature', '0.8', '--max-new-tokens', '6', '--out', join(work, 'gkd')]);
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /on-policy +λ 1: 3 micro-batches sampled by the student, \d+ tokens/);
    assert.match(r.out, /teacher cache none/);
    assert.ok(!existsSync(join(work, 'gkd.teacher-cache')));
    const ms = readFileSync(join(work, 'gkd', 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((m) => m.type === 'train');
    assert.deepEqual(ms.map((m) => m.on_policy), [[true], [true], [true]]);
    for (const m of ms) assert.ok(Math.abs(m.loss - 0.5 * m.kd) < 1e-9 * m.loss, 'an on-policy batch trains the KD part alone');
    // usage errors: run() calls in one process (../cli/run-each.ts), not a process each
    const usage = runEach([['distill', ...common, '--out', join(work, 'e'), '--on-policy', '2'], ['distill', ...common, '--out', join(work, 'e'), '--sample-temperature', '0.5']]);
    assert.deepEqual(usage.map((u) => u.status), [2, 2], usage.map((u) => u.stderr).join(''));
  });

  it('a finished --out (or a --resume with nothing to resume) is refused before any teacher compute', () => {
    const done = join(work, 'done');
    mkdirSync(done);
    writeFileSync(join(done, 'summary.json'), '{}\n');
    const empty = join(work, 'nothing-to-resume');
    mkdirSync(empty);
    // run() calls in one process (../cli/run-each.ts), not a process each
    const [r, r2] = runEach([['distill', ...common, '--out', done], ['distill', ...common, '--out', join(work, 'fresh'), '--resume', empty]]);
    assert.equal(r!.status, 2, r!.stderr);
    assert.match(r!.stderr, /done is not empty \(summary\.json\): pass --resume DIR/);
    assert.doesNotMatch(r!.stderr, /teacher pass/);
    assert.ok(!existsSync(`${done}.teacher-cache`), 'no teacher cache was computed');
    assert.equal(r2!.status, 2, r2!.stderr);
    assert.match(r2!.stderr, /no complete checkpoint to resume from/);
    assert.ok(!existsSync(join(work, 'fresh.teacher-cache')), 'no teacher cache was computed');
  });

  it('--out in a folder that does not exist yet: the folder is made for the run and its teacher cache', () => {
    const out = join(work, 'new-parent', 'deeper', 'x');
    const r = floe(['distill', ...common, '--max-steps', '1', '--out', out]);
    assert.equal(r.code, 0, r.err);
    assert.ok(existsSync(join(out, 'final', 'adapter_model.safetensors')));
    assert.ok(existsSync(`${out}.teacher-cache`));
  });

  it('usage errors exit 2; a student that is not a model directory exits 1 and says why', () => {
    // run() calls in one process (../cli/run-each.ts), not a process each (~1 s of start-up apiece)
    const [beta, loss, teacher, r] = runEach([
      ['distill', ...common, '--out', join(work, 'c'), '--beta', '0.5'],
      ['distill', ...common, '--out', join(work, 'c'), '--loss', 'kl'],
      ['distill', '--student', student, '--data', data, '--out', join(work, 'c')],
      ['distill', ...common.map((x) => (x === student ? tinyModelDir('gqa_f32').replace(/$/, '/../nonexistent') : x)), '--out', join(work, 'd')],
    ]);
    assert.deepEqual([beta!.status, loss!.status, teacher!.status], [2, 2, 2], beta!.stderr + loss!.stderr + teacher!.stderr);
    assert.equal(r!.status, 1);
    assert.match(r!.stderr, /floe distill: student .*: distillation needs a Hugging Face model directory/);
  });
});
