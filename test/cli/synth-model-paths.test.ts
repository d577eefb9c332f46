// floe synth with a model path that does not exist (subprocess on the src CLI): --model, --model beside --endpoint (its
// chat template and tokenizer) and --guard-model each exit 1 naming the path and what it was for, as finetune and
// generate do ("PATH: cannot open model: ..."), before any engine starts. Before: a bare "ENOENT: no such file or
// directory, stat '/x'", and for --guard-model only after the generating model had loaded.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoPath } from '../repo.js';

const BIN = repoPath('bin/floe.js'); // the built CLI as users run it (npm test builds dist/ first; `npm run build` after a src change): it starts ~0.3 s sooner than src through tsx
const dir = mkdtempSync(join(tmpdir(), 'synth-paths-'));
const missing = join(dir, 'no-such-model');

const cases: [string, string[], RegExp][] = [
  ['--model', ['--model', missing], /no-such-model: cannot open model: no such file or directory/],
  ['--model beside --endpoint', ['--endpoint', 'http://127.0.0.1:9', '--model', missing], /no-such-model: cannot open model \(for the endpoint's chat template and tokenizer\): no such file or directory/],
  ['--guard-model', ['--guard-model', missing], /no-such-model: cannot open guard model: no such file or directory/],
];

cases.forEach(([name, args, message], i) => {
  test(`${name} that does not exist: exit 1 naming it, nothing written`, () => {
    const out = join(dir, `o${i}.jsonl`);
    const r = spawnSync(process.execPath, [BIN, 'synth', '--method', 'magpie', '--num', '1', ...args, '--out', out],
      { encoding: 'utf8', timeout: 60_000 });
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, message);
    assert.ok(!existsSync(out) && !existsSync(`${out}.synth-progress`));
  });
});
