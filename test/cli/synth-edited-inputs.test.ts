// floe synth rerun on an existing --out after one of its input files was edited (subprocess on the src CLI, floe-brown):
// a prompt file of --prompts DIR or the --seeds file. The rerun is refused naming the edited file (the output would
// otherwise mix units made from the old and the new text); with the file restored it resumes. Before, the progress
// header held only the paths, so the rerun resumed silently into a mixed file. A progress file from before the inputs
// were recorded (a header without them) still resumes.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { appendFileSync, copyFileSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoPath } from '../repo.js';

const BIN = repoPath('bin/floe.js'); // the built CLI as users run it (npm test builds dist/ first; `npm run build` after a src change): it starts ~0.3 s sooner than src through tsx
const SHIPPED = repoPath('data/synth');
const dir = mkdtempSync(join(tmpdir(), 'synth-inputs-'));

function synth(...args: string[]) {
  const r = spawnSync(process.execPath, [BIN, 'synth', '--num', '3', '--max-tokens', '24', '--threads', '1', ...args],
    { encoding: 'utf8', timeout: 120_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

test('an edited --prompts file: the rerun is refused naming it; restored, the rerun resumes', () => {
  const prompts = join(dir, 'prompts');
  mkdirSync(join(prompts, 'self-instruct'), { recursive: true });
  const file = join(prompts, 'self-instruct', 'instruction.txt');
  copyFileSync(join(SHIPPED, 'self-instruct', 'instruction.txt'), file);
  const original = readFileSync(file, 'utf8');
  const out = join(dir, 'p.jsonl');
  const args = ['--method', 'self-instruct', '--prompts', prompts, '--out', out];
  assert.equal(synth(...args).code, 0);
  appendFileSync(file, 'Keep it short.\n');
  const r = synth(...args);
  assert.equal(r.code, 1, r.err);
  assert.match(r.err, /p\.jsonl was made by another synth run: these inputs were edited since: prompt self-instruct\/instruction\.txt/);
  writeFileSync(file, original);
  const again = synth(...args, '--json');
  assert.equal(again.code, 0, again.err);
  assert.equal(JSON.parse(again.out).resumed_units, 3);
});

test('an edited --seeds file: the rerun is refused naming it', () => {
  const seeds = join(dir, 'seeds.jsonl');
  copyFileSync(join(SHIPPED, 'seeds.jsonl'), seeds);
  const out = join(dir, 's.jsonl');
  const args = ['--method', 'evol-instruct', '--rounds', '1', '--seeds', seeds, '--out', out];
  assert.equal(synth(...args).code, 0);
  appendFileSync(seeds, JSON.stringify({ instruction: 'Write a haiku about rivers.' }) + '\n');
  const r = synth(...args);
  assert.equal(r.code, 1, r.err);
  assert.match(r.err, /these inputs were edited since: seeds .*seeds\.jsonl/);
});

test('a progress header written before inputs were recorded still resumes', () => {
  const out = join(dir, 'old.jsonl');
  const args = ['--method', 'magpie', '--out', out, '--json'];
  assert.equal(synth(...args).code, 0);
  const lines = readFileSync(`${out}.synth-progress`, 'utf8').split('\n');
  const head = JSON.parse(lines[0]!);
  assert.ok(head.inputs, 'the header records the inputs');
  delete head.inputs;
  writeFileSync(`${out}.synth-progress`, [JSON.stringify(head), ...lines.slice(1)].join('\n'));
  const r = synth(...args);
  assert.equal(r.code, 0, r.err);
  assert.equal(JSON.parse(r.out).resumed_units, 3);
});
