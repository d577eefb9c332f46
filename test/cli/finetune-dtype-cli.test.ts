// `floe finetune --dtype fp8|bf16` as a user runs it (subprocesses): usage mistakes exit 2 before any model is read,
// the summary says which base was trained on, and a resume with another --dtype (or none) is refused naming both.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runEach } from './run-each.js';
import { repoPath } from '../repo.js';

const BIN = repoPath('bin/floe.js'); // the built CLI as users run it (npm test builds dist/ first; `npm run build` after a src change): it starts ~0.3 s sooner than src through tsx
const MODEL = repoPath('models/floe-brown');
const work = mkdtempSync(join(tmpdir(), 'floe-cli-ft-dtype-'));
const data = join(work, 'train.jsonl');
writeFileSync(data, ['the river ran on in the dark, and the men said nothing at all.', 'the jury said the vote was fair and the city was pleased.']
  .map((text) => JSON.stringify({ text })).join('\n') + '\n');

function floe(args: string[]) {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 120_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

const train = ['--data', data, '--max-seq-len', '32', '--lora-rank', '2', '--backend', 'reference', '--quiet'];

describe('floe finetune --dtype', () => {
  it('usage errors, exit 2 before loading: --dtype with --full (finetune and distill), an unknown --dtype', () => {
    const missing = join(work, 'no-such-model');
    const out = join(work, 'never');
    // run() calls in one process (./run-each.ts), not a process each (~1 s of start-up apiece)
    const cmds = [['finetune', '--model', missing], ['distill', '--teacher', missing, '--student', missing]];
    const runs = runEach([...cmds.map((cmd) => [...cmd, '--data', data, '--out', out, '--full', '--dtype', 'bf16']),
      ['finetune', '--model', missing, ...train, '--out', out, '--dtype', 'f16']]);
    for (const r of runs.slice(0, 2)) {
      assert.equal(r.status, 2, r.stderr);
      assert.match(r.stderr, /--dtype bf16 converts the frozen base of a LoRA run; --full trains f32 master copies of every weight/);
      assert.doesNotMatch(r.stderr, /no-such-model/, 'refused before the model is opened');
    }
    const bad = runs[2]!;
    assert.equal(bad.status, 2, bad.stderr);
    assert.match(bad.stderr, /--dtype expects fp8 \(.*\) or bf16 \(.*\), got 'f16'/);
    assert.ok(!existsSync(out), 'nothing written');
  });

  it('trains on the converted base (summary), and a resume with another --dtype or none is refused naming both values', () => {
    const out = join(work, 'run');
    const a = floe(['finetune', '--model', MODEL, ...train, '--out', out, '--max-steps', '1', '--dtype', 'bf16', '--json']);
    assert.equal(a.code, 0, a.err);
    assert.deepEqual(JSON.parse(a.out).base, { converted: 'bf16', linear: 'bf16', embedding: 'bf16', head: 'bf16' });
    // the two refusals as run() calls in one process (./run-each.ts), not a process each
    const [other, none] = runEach([['finetune', '--model', MODEL, ...train, '--out', out, '--max-steps', '2', '--dtype', 'fp8', '--resume', out],
      ['finetune', '--model', MODEL, ...train, '--out', out, '--max-steps', '2', '--resume', out]]);
    assert.equal(other!.status, 2, other!.stderr);
    assert.match(other!.stderr, /checkpoint-000001: the checkpoint was trained with --dtype bf16, this run has --dtype fp8: resume with the flags the run was started with/);
    assert.equal(none!.status, 2, none!.stderr);
    assert.match(none!.stderr, /the checkpoint was trained with --dtype bf16, this run has the base as stored \(no --dtype\)/);
    const same = floe(['finetune', '--model', MODEL, ...train, '--out', out, '--max-steps', '2', '--dtype', 'bf16', '--resume', out, '--json']);
    assert.equal(same.code, 0, same.err);
    assert.equal(JSON.parse(same.out).steps, 2);
    const lines = readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { step: number; base_dtype: string });
    assert.deepEqual(lines.map((m) => [m.step, m.base_dtype]), [[1, 'bf16'], [2, 'bf16']]);
  });
});
