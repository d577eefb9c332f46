// finetune() from the library: a refused output directory names finetune()'s options, not only the CLI's flags.
// Before, a library caller was told to "pass --resume DIR ... or --overwrite ..., or choose another --out", flags it
// cannot pass. The CLI's text stays (test/train/cli.test.ts pins it).

import { test } from 'node:test';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RunSetupError, finetune, type FinetuneOptions } from '../../src/index.js';
import { tinyModelDir, writeTrainData } from './fixtures.js';

const work = mkdtempSync(join(tmpdir(), 'floe-ft-outdir-'));
const opts = (out: string, extra: Partial<FinetuneOptions> = {}): FinetuneOptions => ({ model: tinyModelDir(), data: writeTrainData(work, 4), out, maxSteps: 1, ...extra });

test('finetune(): a non-empty out names the options resume, overwrite and out; an overwrite of a foreign dir names overwrite', async () => {
  const out = join(work, 'busy');
  mkdirSync(join(out, 'checkpoint-000001'), { recursive: true });
  await assert.rejects(finetune(opts(out)), (e: Error) => {
    assert.ok(e instanceof RunSetupError, String(e));
    assert.match(e.message, /busy is not empty \(checkpoint-000001\): /);
    assert.match(e.message, /\(finetune\(\) options: resume: DIR, overwrite: true, out\)$/);
    return true;
  });
  // the names are finetune()'s own: with both, it refuses the pair, not an unknown option
  await assert.rejects(finetune(opts(out, { resume: out, overwrite: true })), (e: Error) => {
    assert.equal(e.message, 'give either resume or overwrite, not both');
    return true;
  });

  writeFileSync(join(out, 'notes.txt'), 'mine');
  await assert.rejects(finetune(opts(out, { overwrite: true })), (e: Error) => {
    assert.ok(e instanceof RunSetupError, String(e));
    assert.match(e.message, /clears only a finetune output dir, and this one also holds notes\.txt \(finetune\(\) options: overwrite: true\)$/);
    return true;
  });
});

test('floe finetune (CLI) into a non-empty --out: exit 2 with the flags only, not the option names finetune() adds for the library', () => {
  const out = join(work, 'busy-cli');
  mkdirSync(join(out, 'checkpoint-000001'), { recursive: true });
  const main = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url));
  const run = `const {run}=await import(${JSON.stringify(main)}); process.exitCode = await run(process.argv.slice(1));`;
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', run, '--', 'finetune', '--model', tinyModelDir(),
    '--data', writeTrainData(work, 4), '--out', out, '--max-steps', '1', '--backend', 'reference'], { encoding: 'utf8' });
  assert.equal(r.status, 2, r.stderr);
  assert.match(r.stderr, /busy-cli is not empty \(checkpoint-000001\): pass --resume DIR to continue that run or --overwrite to clear it, or choose another --out/);
  assert.doesNotMatch(r.stderr, /finetune\(\) options/);
});
