// distill() from the library: a refused `out` (or `topK`) names distill()'s options, not only the CLI's flags, as
// finetune() does (finetune-out-dir-options.test.ts). Before, a library caller was told to "pass --resume DIR ... or
// --overwrite ..., or choose another --out" and "--top-k expects ...", flags it cannot pass. The CLI keeps its text.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { RunSetupError, distill, type DistillOptions } from '../../src/index.js';
import { readHfConfig } from '../../src/formats/hf-config.js';
import { tinyModelDir, writeTrainData } from './fixtures.js';

const work = mkdtempSync(join(tmpdir(), 'floe-distill-outdir-'));
const teacher = tinyModelDir(), student = tinyModelDir(); // the same tokenizer files: a valid pair
const data = writeTrainData(work, 4);
const opts = (out: string, extra: Partial<DistillOptions> = {}): DistillOptions => ({ teacher, student, data, out, maxSteps: 1, backend: 'reference', ...extra });

test('distill(): a non-empty out names the options resume, overwrite and out; an overwrite of a foreign dir names overwrite; a bad topK names topK', async () => {
  const out = join(work, 'busy');
  mkdirSync(join(out, 'checkpoint-000001'), { recursive: true });
  await assert.rejects(distill(opts(out)), (e: Error) => {
    assert.ok(e instanceof RunSetupError, String(e));
    assert.match(e.message, /busy is not empty \(checkpoint-000001\): /);
    assert.match(e.message, /\(distill\(\) options: resume: DIR, overwrite: true, out\)$/);
    return true;
  });
  // the names are distill()'s own: with both, it refuses the pair, not an unknown option
  await assert.rejects(distill(opts(out, { resume: out, overwrite: true })), (e: Error) => {
    assert.equal(e.message, 'give either resume or overwrite, not both');
    return true;
  });
  writeFileSync(join(out, 'notes.txt'), 'mine');
  await assert.rejects(distill(opts(out, { overwrite: true })), (e: Error) => {
    assert.ok(e instanceof RunSetupError, String(e));
    assert.match(e.message, /clears only a finetune output dir, and this one also holds notes\.txt \(distill\(\) options: overwrite: true\)$/);
    return true;
  });
  const V = readHfConfig(student).config.vocabSize;
  await assert.rejects(distill(opts(join(work, 'fresh'), { topK: V + 1 })), (e: Error) => {
    assert.ok(e instanceof RunSetupError, String(e));
    assert.match(e.message, new RegExp(`expects an integer in \\[1, ${V}\\] \\(the vocab size\\), got ${V + 1} \\(distill\\(\\) options: topK\\)$`));
    return true;
  });
});

test('floe distill (CLI) into a non-empty --out: exit 2 with the flags only, not the option names distill() adds for the library', () => {
  const out = join(work, 'busy-cli');
  mkdirSync(join(out, 'checkpoint-000001'), { recursive: true });
  const main = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url));
  const run = `const {run}=await import(${JSON.stringify(main)}); process.exitCode = await run(process.argv.slice(1));`;
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', run, '--', 'distill', '--teacher', teacher, '--student', student,
    '--data', data, '--out', out, '--max-steps', '1', '--backend', 'reference'], { encoding: 'utf8' });
  assert.equal(r.status, 2, r.stderr);
  assert.match(r.stderr, /busy-cli is not empty \(checkpoint-000001\): pass --resume DIR to continue that run or --overwrite to clear it, or choose another --out/);
  assert.doesNotMatch(r.stderr, /\(\w+\(\) options/);
});
