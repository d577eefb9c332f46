// finetune() and distill() from the library: a refused output directory (and distill's topK) names the function's own
// options, not only the CLI's flags. Before, a library caller was told to "pass --resume DIR ... or --overwrite ...,
// or choose another --out" (and "--top-k expects ..."), flags it cannot pass. The CLI keeps its text (test/train/cli.test.ts
// pins finetune's).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RunSetupError, distill, finetune } from '../../src/index.js';
import { readHfConfig } from '../../src/formats/hf-config.js';
import { tinyModelDir, writeTrainData } from './fixtures.js';
import { repoPath } from '../repo.js';

const work = mkdtempSync(join(tmpdir(), 'floe-outdir-'));
const teacher = tinyModelDir(), student = tinyModelDir(); // the same tokenizer files: a valid pair
const data = writeTrainData(work, 4);

/** Each function with its options for an `out`, and the CLI flags that reach the same run. */
const FNS = [
  {
    name: 'finetune',
    run: (out: string, extra: Record<string, unknown> = {}) => finetune({ model: tinyModelDir(), data: writeTrainData(work, 4), out, maxSteps: 1, ...extra }),
    cli: () => ['finetune', '--model', tinyModelDir(), '--data', writeTrainData(work, 4)],
    noOptions: /finetune\(\) options/,
  },
  {
    name: 'distill',
    run: (out: string, extra: Record<string, unknown> = {}) => distill({ teacher, student, data, out, maxSteps: 1, backend: 'reference', ...extra }),
    cli: () => ['distill', '--teacher', teacher, '--student', student, '--data', data],
    noOptions: /\(\w+\(\) options/,
  },
] as const;

for (const f of FNS) {
  test(`${f.name}(): a non-empty out names the options resume, overwrite and out; an overwrite of a foreign dir names overwrite${f.name === 'distill' ? '; a bad topK names topK' : ''}`, async () => {
    const out = join(work, `busy-${f.name}`);
    mkdirSync(join(out, 'checkpoint-000001'), { recursive: true });
    await assert.rejects(f.run(out), (e: Error) => {
      assert.ok(e instanceof RunSetupError, String(e));
      assert.match(e.message, new RegExp(`busy-${f.name} is not empty \\(checkpoint-000001\\): `));
      assert.match(e.message, new RegExp(`\\(${f.name}\\(\\) options: resume: DIR, overwrite: true, out\\)$`));
      return true;
    });
    // the names are the function's own: with both, it refuses the pair, not an unknown option
    await assert.rejects(f.run(out, { resume: out, overwrite: true }), (e: Error) => {
      assert.equal(e.message, 'give either resume or overwrite, not both');
      return true;
    });
    writeFileSync(join(out, 'notes.txt'), 'mine');
    await assert.rejects(f.run(out, { overwrite: true }), (e: Error) => {
      assert.ok(e instanceof RunSetupError, String(e));
      assert.match(e.message, new RegExp(`clears only a finetune output dir, and this one also holds notes\\.txt \\(${f.name}\\(\\) options: overwrite: true\\)$`));
      return true;
    });
    if (f.name !== 'distill') return;
    const V = readHfConfig(student).config.vocabSize;
    await assert.rejects(f.run(join(work, 'fresh'), { topK: V + 1 }), (e: Error) => {
      assert.ok(e instanceof RunSetupError, String(e));
      assert.match(e.message, new RegExp(`expects an integer in \\[1, ${V}\\] \\(the vocab size\\), got ${V + 1} \\(distill\\(\\) options: topK\\)$`));
      return true;
    });
  });

  test(`floe ${f.name} (CLI) into a non-empty --out: exit 2 with the flags only, not the option names ${f.name}() adds for the library`, () => {
    const out = join(work, `busy-cli-${f.name}`);
    mkdirSync(join(out, 'checkpoint-000001'), { recursive: true });
    const BIN = repoPath('bin/floe.js'); // the built CLI as users run it (npm test builds dist/ first; `npm run build` after a src change): it starts ~0.3 s sooner than src through tsx
    const r = spawnSync(process.execPath, [BIN, ...f.cli(), '--out', out, '--max-steps', '1', '--backend', 'reference'], { encoding: 'utf8' });
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, new RegExp(`busy-cli-${f.name} is not empty \\(checkpoint-000001\\): pass --resume DIR to continue that run or --overwrite to clear it, or choose another --out`));
    assert.doesNotMatch(r.stderr, f.noOptions);
  });
}

test('floe finetune into the --out of a run that stopped before its first checkpoint: the errors say to start over with --overwrite, which works', () => {
  const out = join(work, 'killed-early');
  mkdirSync(join(out, '.checkpoint-000002.tmp-123'), { recursive: true }); // what a SIGKILL in the first save leaves
  writeFileSync(join(out, 'metrics.jsonl'), '{"step":1,"loss":5}\n');
  const BIN = repoPath('bin/floe.js');
  const model = tinyModelDir(), d = writeTrainData(work, 4);
  const run = (...extra: string[]) => spawnSync(process.execPath, [BIN, 'finetune', '--model', model, '--data', d, '--max-steps', '1', '--backend', 'reference', '--out', out, ...extra], { encoding: 'utf8' });
  const again = run();
  assert.equal(again.status, 2, again.stderr);
  assert.match(again.stderr, /killed-early holds a run that stopped before its first checkpoint \(\.checkpoint-000002\.tmp-123, metrics\.jsonl\): there is nothing to resume; pass --overwrite to start it again/);
  const resume = run('--resume', out);
  assert.equal(resume.status, 2, resume.stderr);
  assert.match(resume.stderr, /no complete checkpoint to resume from .*; the run stopped before its first checkpoint was saved: start it again with --overwrite instead of --resume/);
  const over = run('--overwrite');
  assert.equal(over.status, 0, over.stderr);
});

test('floe finetune with a --data or --eval it cannot read fails naming the file, and makes no --out', () => {
  const BIN = repoPath('bin/floe.js');
  const model = tinyModelDir(), d = writeTrainData(work, 4);
  for (const [flag, bad, why] of [['--data', join(work, 'nope.jsonl'), /ENOENT/], ['--eval', join(work, 'nope-eval.jsonl'), /ENOENT/], ['--data', work, /EISDIR: a directory/]] as const) {
    const out = join(work, `never-made-${flag.slice(2)}-${why.source.slice(0, 6)}`);
    const args = flag === '--data' ? ['--data', bad] : ['--data', d, '--eval', bad];
    const r = spawnSync(process.execPath, [BIN, 'finetune', '--model', model, ...args, '--max-steps', '1', '--backend', 'reference', '--out', out], { encoding: 'utf8' });
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, new RegExp(`${bad.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: cannot read data: ${why.source}`));
    assert.equal(existsSync(out), false, `${flag} ${bad}: --out was not made`);
  }
});
