// floe distill killed (SIGKILL) during its teacher pass, then run again (subprocess on the src CLI, floe-brown teaching
// floe-brown-draft): the rerun removes the dead pass's OUT.teacher-cache.tmp-PID and builds the cache. Before, each killed
// pass left its temp file behind for good, as large as the cache (388 bytes per target token: 60 MB here, gigabytes on
// a real data set), and every later kill added another.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoPath } from '../repo.js';

const BIN = repoPath('bin/floe.js'); // the built CLI as users run it (npm test builds dist/ first; `npm run build` after a src change): it starts ~0.3 s sooner than src through tsx
const ARGS = [BIN];
const teacher = repoPath('models/floe-brown');
const student = repoPath('models/floe-brown-draft');
const dir = mkdtempSync(join(tmpdir(), 'distill-cache-'));
const data = join(dir, 'data.jsonl');
// enough samples that the teacher pass takes seconds
writeFileSync(data, Array.from({ length: 3000 }, (_, i) => JSON.stringify({ messages: [
  { role: 'user', content: `Which committee met on day ${i} of the session, and what did it discuss?` },
  { role: 'assistant', content: `On day ${i} the county committee met to discuss the budget of the schools and the roads.` },
] })).join('\n') + '\n');
const out = join(dir, 'run');
const args = ['distill', '--teacher', teacher, '--student', student, '--data', data, '--out', out, '--max-steps', '1', '--quiet'];
const temps = () => readdirSync(dir).filter((n) => n.startsWith('run.teacher-cache.tmp-'));

test('a teacher pass killed mid-way: the rerun removes its temp file and builds the cache', async () => {
  const child = spawn(process.execPath, [...ARGS, ...args], { stdio: 'ignore' });
  const exited = new Promise<NodeJS.Signals | null>((r) => child.once('exit', (_c, sig) => r(sig)));
  for (const t0 = Date.now(); !(temps().length === 1 && statSync(join(dir, temps()[0]!)).size > 0);) {
    if (Date.now() - t0 > 90_000 || child.exitCode !== null) assert.fail('the teacher pass ended or never started writing');
    await new Promise((r) => setTimeout(r, 20));
  }
  child.kill('SIGKILL');
  assert.equal(await exited, 'SIGKILL');
  const left = temps();
  assert.equal(left.length, 1);
  assert.ok(!existsSync(`${out}.teacher-cache`), 'killed before the rename');

  // The rerun on the first 100 samples: the stale temp files are found by OUT's name alone (removeStaleCacheTemps
  // reads no data), so a short pass proves the same as a 3000-sample one, which took ~35 s of the test's ~45.
  writeFileSync(data, readFileSync(data, 'utf8').split('\n').slice(0, 100).join('\n') + '\n');
  const r = spawnSync(process.execPath, [...ARGS, ...args], { encoding: 'utf8', timeout: 180_000 });
  assert.equal(r.status, 0, r.stderr);
  assert.ok(existsSync(`${out}.teacher-cache`));
  assert.deepEqual(temps(), [], `left behind: ${temps().join(', ')}`);
});
