// floe synth --method from-documents with a small --max-tokens (subprocess on the src CLI, floe-brown): a question the
// model was still writing when it hit --max-tokens is dropped as question_truncated, as self-instruct drops a cut task
// (instruction_truncated) and magpie a cut user turn (user_turn_unfinished). Before, the cut question ("Accordingly large
// percentage of interest is") was answered and kept as a training sample.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoPath } from '../repo.js';

const BIN = repoPath('bin/floe.js'); // the built CLI as users run it (npm test builds dist/ first; `npm run build` after a src change): it starts ~0.3 s sooner than src through tsx
const README = repoPath('README.md');
const dir = mkdtempSync(join(tmpdir(), 'synth-question-'));

test('from-documents drops questions cut at --max-tokens as question_truncated', () => {
  const doc = join(dir, 'doc.txt');
  writeFileSync(doc, readFileSync(README, 'utf8').slice(0, 12_000).replace(/[`*|#<>]/g, ''));
  const out = join(dir, 'q.jsonl');
  const r = spawnSync(process.execPath, [BIN, 'synth', '--method', 'from-documents', '--docs', doc,
    '--chunk-tokens', '128', '--num', '12', '--max-tokens', '10', '--min-support', 'off', '--threads', '1', '--out', out, '--json'], { encoding: 'utf8', timeout: 120_000 });
  assert.equal(r.status, 0, r.stderr);
  const s = JSON.parse(r.stdout);
  assert.ok(s.rejected.question_truncated >= 1, r.stdout);
  // every outcome is in the progress log: the truncated units are not among the kept lines
  const units = Object.assign({}, ...readFileSync(`${out}.synth-progress`, 'utf8').trim().split('\n').slice(1).map((l) => JSON.parse(l).units));
  const kept = readFileSync(out, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l).provenance.id);
  for (const id of kept) assert.equal(units[id], 'kept');
  assert.equal(Object.values(units).filter((x) => x === 'question_truncated').length, s.rejected.question_truncated);
});
