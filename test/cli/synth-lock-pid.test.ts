// OUT.synth-lock left by a killed run whose pid is this run's own: a container restarted after an OOM kill (or a
// `docker run` that died) starts floe as the same pid (often 1), so the rerun found "its" pid alive and was refused
// ('being written by another floe synth run (pid 1, ...)') until the user deleted the lock by hand. A lock holding this
// process's pid that this process does not hold is a dead run's; two runs in one process on one --out are still refused.
// Subprocesses on the src CLI and floe-brown.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoPath } from '../repo.js';

// the built CLI (npm test builds dist/ first; `npm run build` after a src change): ~0.3 s less start-up than src through tsx
const MAIN = repoPath('dist/src/cli/main.js');
const dir = mkdtempSync(join(tmpdir(), 'synth-lock-pid-'));
const common = ['synth', '--method', 'self-instruct', '--num', '16', '--concurrency', '4', '--max-tokens', '32', '--threads', '1', '--json'];

/**
 * node FILE.mjs running SCRIPT with `run` (the CLI), `argv` (the synth command) and `out` bound: a file, not -e, so that
 * the process's execArgv (which synth's engine worker inherits) holds no --input-type.
 */
function child(out: string, script: string) {
  const argv = [...common, '--out', out];
  const file = `${out}.child.mjs`;
  writeFileSync(file, `import { writeFileSync } from 'node:fs'; const {run}=await import(${JSON.stringify(MAIN)}); ` +
    `const out=${JSON.stringify(out)}; const argv=${JSON.stringify(argv)}; ${script}`);
  return spawnSync(process.execPath, [file], { encoding: 'utf8', timeout: 180_000 });
}

test("a killed run's lock that holds this process's pid (a restarted container) is taken over", () => {
  const out = join(dir, 'same-pid.jsonl');
  // the lock as a killed run with this pid left it
  const r = child(out, "writeFileSync(out + '.synth-lock', process.pid + '\\n'); process.exitCode = await run(argv);");
  assert.equal(r.status, 0, r.stdout + r.stderr);
  const s = JSON.parse(r.stdout.trim().split('\n').pop()!);
  assert.equal(s.units, 16);
  assert.equal(readFileSync(out, 'utf8').split('\n').filter(Boolean).length, s.kept);
  assert.ok(!existsSync(`${out}.synth-lock`), 'the lock is released at the end');
});

test('two runs in one process on the same --out: the second is still refused', () => {
  const out = join(dir, 'one-process.jsonl');
  const r = child(out, 'const codes = await Promise.all([run(argv), run(argv)]); console.log(JSON.stringify({ codes }));');
  assert.equal(r.status, 0, r.stderr);
  const lines = r.stdout.trim().split('\n');
  assert.deepEqual([...JSON.parse(lines.pop()!).codes].sort(), [0, 1], r.stdout + r.stderr);
  assert.match(r.stdout, new RegExp(`one-process\\.jsonl is being written by another floe synth run \\(pid ${'\\d+'}, .*one-process\\.jsonl\\.synth-lock\\)`));
  assert.ok(!existsSync(`${out}.synth-lock`));
});
