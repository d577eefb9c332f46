// `floe batch` as a user runs it (subprocess, built-in model): an output path that cannot take the result is refused
// before any line runs; a run stopped and re-run a day later resumes (an offline batch has no completion window); a
// re-run resumes only its own input's batch, not another input's left in the same --state.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { runEach } from '../cli/run-each.js';
import { repoPath } from '../repo.js';

const BIN = repoPath('bin/floe.js');
const BUILT = repoPath('dist/src/cli/batch.js');
const T = 120_000;

const WORDS = ['the', 'river', 'old', 'man', 'said', 'city', 'house', 'was', 'in', 'a', 'long', 'night'];
function requests(n: number, tag: string, maxTokens: number): string {
  let s = n * 7919 + tag.length;
  const r = () => { s = (Math.imul(s, 1103515245) + 12345) & 0x7fffffff; return s / 2 ** 31; };
  return Array.from({ length: n }, (_, i) => JSON.stringify({
    custom_id: `${tag}${i}`, method: 'POST', url: '/v1/completions',
    body: { model: 'floe-brown', prompt: Array.from({ length: 3 + Math.floor(r() * 5) }, () => WORDS[Math.floor(r() * WORDS.length)]).join(' '), max_tokens: maxTokens, temperature: 0 },
  })).join('\n') + '\n';
}

interface Run { code: number | null; stderr: string }
/** `floe batch` with a narrow lane (8 lines in flight), so that lines finish one after another and a kill lands mid-run. */
function floeBatch(args: string[], killWhen?: (stderr: string) => boolean): Promise<Run> {
  if (!existsSync(BUILT)) throw new Error(`${BUILT} is missing: run \`npm run build\` first (npm test does)`);
  const p = spawn(process.execPath, [BIN, 'batch', '--threads', '1', '--max-num-seqs', '4', '--batch-max-num-seqs', '4', ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  p.stderr!.on('data', (d: Buffer) => {
    stderr += d.toString();
    if (killWhen?.(stderr) && p.exitCode === null) p.kill('SIGKILL');
  });
  return new Promise((ok) => p.once('exit', (code) => ok({ code, stderr })));
}

const db = (state: string) => new Database(join(state, 'floe.db'));
const doneIn = (state: string): Map<string, { n: number; ids: string[] }> => {
  const d = db(state);
  try {
    const out = new Map<string, { n: number; ids: string[] }>();
    for (const b of d.prepare('SELECT id FROM batches ORDER BY seq').pluck().all() as string[]) {
      const ids = d.prepare('SELECT request_id FROM batch_lines WHERE batch_id = ? ORDER BY line').pluck().all(b) as string[];
      out.set(b, { n: ids.length, ids });
    }
    return out;
  } finally {
    d.close();
  }
};

test('an --output (or --input) path that cannot work is a usage error (exit 2) before the engine loads, not a failure after the batch', { timeout: T }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'floe-batch-'));
  const input = join(dir, 'in.jsonl');
  writeFileSync(input, requests(3, 'p', 4));
  const missing = join(dir, 'no', 'such', 'out.jsonl');
  mkdirSync(join(dir, 'outdir'));
  // the four as run() calls of the built CLI in one process (../cli/run-each.ts), not a process each
  const batch = (args: string[]) => ['batch', '--threads', '1', '--max-num-seqs', '4', '--batch-max-num-seqs', '4', ...args];
  const [plain, withState, isDir, inDir] = runEach([
    batch(['--input', input, '--output', missing]), batch(['--input', input, '--output', missing, '--state', join(dir, 'st')]),
    batch(['--input', input, '--output', join(dir, 'outdir')]), batch(['--input', dir, '--output', join(dir, 'o.jsonl')]),
  ]).map((r) => ({ code: r.status, stderr: r.stderr }));
  for (const run of [plain!, withState!]) {
    assert.equal(run.code, 2, run.stderr);
    assert.match(run.stderr, new RegExp(`--output ${missing.replaceAll('/', '\\/')}: the directory ${join(dir, 'no', 'such').replaceAll('/', '\\/')} does not exist`));
    assert.doesNotMatch(run.stderr, /lines\/s/, 'no line ran');
  }
  assert.ok(!existsSync(join(dir, 'no')), 'nothing created along the missing path');
  assert.equal(isDir!.code, 2, isDir!.stderr);
  assert.match(isDir!.stderr, /--output .*outdir is a directory; expected a file path/);
  assert.equal(inDir!.code, 2, inDir!.stderr);
  assert.match(inDir!.stderr, /--input .* is a directory; expected a JSONL file/);
});

test('killed, then re-run after its 24 h would have passed: the offline batch resumes without redoing lines, never "expired"', { timeout: T }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'floe-batch-'));
  const input = join(dir, 'in.jsonl');
  const N = 40;
  writeFileSync(input, requests(N, 'q', 24));
  const out = join(dir, 'out.jsonl');
  const state = `${out}.floe-batch`;
  const killed = await floeBatch(['--input', input, '--output', out], (e) => /batch: [1-9]\d*\/40 lines \((2|3|4)\d %\)/.test(e));
  assert.equal(killed.code, null, `killed mid-run: ${killed.stderr}`);
  const [[id, before]] = [...doneIn(state)] as [[string, { n: number; ids: string[] }]];
  assert.ok(before.n > 0 && before.n < N, `${before.n} lines recorded before the kill`);
  // the next run happens a day later: the batch's row says its 24 h went by
  const d = db(state);
  d.prepare('UPDATE batches SET expires_at = ? WHERE id = ?').run(Math.floor(Date.now() / 1000) - 3600, id);
  d.close();
  const resumed = await floeBatch(['--input', input, '--output', out]);
  assert.equal(resumed.code, 0, resumed.stderr);
  assert.match(resumed.stderr, new RegExp(`resuming ${id}: ${before.n} of 40 lines already done`));
  assert.match(resumed.stderr, /40 lines succeeded, 0 failed/);
  const after = doneIn(state);
  assert.deepEqual([...after.keys()], [id], 'the same batch, not a new one from scratch');
  const got = readFileSync(out, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  assert.equal(got.length, N);
  assert.ok(got.every((l, i) => l.custom_id === `q${i}` && l.response.status_code === 200));
  const kept = new Set(before.ids);
  assert.equal(got.filter((l) => kept.has(l.response.request_id)).length, before.n, 'the lines done before the kill kept their answers (not redone)');
});

test('re-running one input resumes only its batch: another input left unfinished in the same --state does not run with it', { timeout: T }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'floe-batch-'));
  const a = join(dir, 'a.jsonl');
  const b = join(dir, 'b.jsonl');
  writeFileSync(a, requests(40, 'a', 24));
  writeFileSync(b, requests(40, 'b', 24));
  const state = join(dir, 'state');
  const midRun = (e: string) => /batch: [1-9]\d*\/40 lines \((2|3|4)\d %\)/.test(e);
  assert.equal((await floeBatch(['--input', a, '--output', join(dir, 'a.out'), '--state', state], midRun)).code, null);
  assert.equal((await floeBatch(['--input', b, '--output', join(dir, 'b.out'), '--state', state], midRun)).code, null);
  const before = doneIn(state);
  const [idA, idB] = [...before.keys()] as [string, string];
  assert.ok(before.get(idB)!.n < 40, 'b left unfinished');
  const rerunA = await floeBatch(['--input', a, '--output', join(dir, 'a.out'), '--state', state]);
  assert.equal(rerunA.code, 0, rerunA.stderr);
  const after = doneIn(state);
  assert.equal(after.get(idA)!.n, 40);
  assert.equal(after.get(idB)!.n, before.get(idB)!.n, "b's lines did not run during a's re-run");
  const rerunB = await floeBatch(['--input', b, '--output', join(dir, 'b.out'), '--state', state]);
  assert.equal(rerunB.code, 0, rerunB.stderr);
  assert.match(rerunB.stderr, new RegExp(`resuming ${idB}: ${before.get(idB)!.n} of 40 lines already done`));
  assert.equal(readFileSync(join(dir, 'b.out'), 'utf8').trim().split('\n').length, 40);
});
