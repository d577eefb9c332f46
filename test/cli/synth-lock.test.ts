// Two `floe synth` runs on one --out (the same command started twice, two terminals), subprocesses on the src CLI and
// floe-brown: the second is refused (exit 1, naming the run that holds the file) and the first's file is whole and
// complete; a run killed with SIGKILL leaves its lock, which the rerun takes over. Before, both runs appended to the
// file, each exited 0, and it held torn JSON lines that a rerun took as committed ("resumed 60 of 60").

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoPath } from '../repo.js';

const BIN = repoPath('bin/floe.js'); // the built CLI as users run it (npm test builds dist/ first; `npm run build` after a src change): it starts ~0.3 s sooner than src through tsx
const ARGS = [BIN, 'synth'];
const dir = mkdtempSync(join(tmpdir(), 'synth-lock-'));
const common = ['--method', 'self-instruct', '--num', '40', '--concurrency', '4', '--max-tokens', '48', '--threads', '1', '--json'];

async function started(child: ReturnType<typeof spawn>, progress: string): Promise<void> {
  for (const t0 = Date.now(); !(existsSync(progress) && readFileSync(progress, 'utf8').split('\n').filter(Boolean).length >= 2);) {
    if (Date.now() - t0 > 90_000 || child.exitCode !== null) assert.fail('the first run ended or stalled before committing a batch');
    await new Promise((r) => setTimeout(r, 20));
  }
}

test('a second run on the same --out is refused while the first runs; the first file is whole', async () => {
  const out = join(dir, 'shared.jsonl');
  const first = spawn(process.execPath, [...ARGS, ...common, '--out', out], { stdio: ['ignore', 'pipe', 'pipe'] });
  let firstOut = '';
  first.stdout!.on('data', (b) => { firstOut += b; });
  const exited = new Promise<number | null>((r) => first.once('exit', (c) => r(c)));
  await started(first, `${out}.synth-progress`);
  const second = spawnSync(process.execPath, [...ARGS, ...common, '--out', out], { encoding: 'utf8', timeout: 120_000 });
  assert.equal(second.status, 1, second.stderr);
  assert.match(second.stdout, /shared\.jsonl is being written by another floe synth run \(pid \d+, .*shared\.jsonl\.synth-lock\)/);
  assert.equal(await exited, 0);
  const s = JSON.parse(firstOut);
  assert.equal(s.resumed_units, 0);
  const lines = readFileSync(out, 'utf8').split('\n').filter(Boolean);
  assert.equal(lines.length, s.kept);
  for (const l of lines) JSON.parse(l); // every line whole
  assert.ok(!existsSync(`${out}.synth-lock`), 'the lock is released at the end');
});

test('a run killed with SIGKILL leaves its lock; the rerun takes it over and finishes the file', async () => {
  const out = join(dir, 'killed.jsonl');
  const child = spawn(process.execPath, [...ARGS, ...common, '--out', out], { stdio: 'ignore' });
  const exited = new Promise<NodeJS.Signals | null>((r) => child.once('exit', (_c, sig) => r(sig)));
  await started(child, `${out}.synth-progress`);
  child.kill('SIGKILL');
  assert.equal(await exited, 'SIGKILL');
  const r = spawnSync(process.execPath, [...ARGS, ...common, '--out', out], { encoding: 'utf8', timeout: 120_000 });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(JSON.parse(r.stdout).units, 40);
  assert.ok(!existsSync(`${out}.synth-lock`));
});
