// floe distill's flag mistakes exit 2 and name the flag (subprocess on the src CLI, floe-brown teaching floe-brown-draft),
// before any teacher pass. Before: --on-policy 1 with --teacher-cache / --cache-dtype exited 1 after the data was read;
// --top-k above the vocab size exited 1 ("top-k must be ..."); --on-policy abc with --max-new-tokens blamed
// --max-new-tokens ("apply to --on-policy L with L > 0") instead of the value of --on-policy.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoPath } from '../repo.js';

const BIN = repoPath('bin/floe.js'); // the built CLI as users run it (npm test builds dist/ first; `npm run build` after a src change): it starts ~0.3 s sooner than src through tsx
const teacher = repoPath('models/floe-brown');
const student = repoPath('models/floe-brown-draft');
const dir = mkdtempSync(join(tmpdir(), 'distill-usage-'));
const data = join(dir, 'data.jsonl');
writeFileSync(data, Array.from({ length: 4 }, (_, i) => JSON.stringify({ messages: [{ role: 'user', content: `Name a county ${i}.` }, { role: 'assistant', content: 'Cook County.' }] })).join('\n') + '\n');

function distill(...args: string[]) {
  const r = spawnSync(process.execPath, [BIN, 'distill', '--teacher', teacher, '--student', student, '--data', data, '--max-steps', '1', '--threads', '1', ...args], { encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, err: r.stderr };
}

const cases: [string, string[], RegExp][] = [
  ['--on-policy 1 with --teacher-cache', ['--on-policy', '1', '--teacher-cache', join(dir, 'c.cache')], /--teacher-cache does not apply to --on-policy 1: every batch is then scored by the teacher in memory/],
  ['--on-policy 1 with --cache-dtype', ['--on-policy', '1', '--cache-dtype', 'f32'], /--cache-dtype does not apply to --on-policy 1/],
  ['--top-k above the vocab', ['--top-k', '5000'], /--top-k expects an integer in \[1, 4096\] \(the vocab size\), got 5000/],
  ['--on-policy abc with --max-new-tokens', ['--on-policy', 'abc', '--max-new-tokens', '4'], /--on-policy expects a number >= 0 and <= 1, got 'abc'/],
  // finetune's flag for the model trained; before, only "Unknown option '--model'"
  ['--model (finetune\'s name for --student)', ['--model', student], /distill has no --model: give the model to train as --student DIR and the one it learns from as --teacher DIR/],
  ['--model=DIR', [`--model=${student}`], /distill has no --model: give the model to train as --student DIR/],
];

cases.forEach(([name, args, message], i) => {
  test(`usage error exits 2: ${name}`, () => {
    const out = join(dir, `out${i}`);
    const r = distill(...args, '--out', out);
    assert.equal(r.code, 2, r.err);
    assert.match(r.err, message);
    assert.doesNotMatch(r.err, /teacher pass/);
    assert.ok(!existsSync(`${out}.teacher-cache`) && !existsSync(join(dir, 'c.cache')), 'no teacher cache was computed');
  });
});
