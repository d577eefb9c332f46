// `floe batch` as a subprocess on the built-in model: output lines as the API's, equal to the engine's direct answers
// through an in-process app; killed mid-run (-9) and re-run, it resumes without redoing finished lines.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { repoPath } from '../repo.js';

const BIN = repoPath('bin/floe.js');
const BUILT = repoPath('dist/src/cli/batch.js');
const T = 120_000;
const N = 200;

const seed = Math.floor(Math.random() * 1e9);
let s = seed;
const r = () => { s = (Math.imul(s, 1103515245) + 12345) & 0x7fffffff; return s / 2 ** 31; };
const WORDS = ['she', 'walked', 'to', 'the', 'old', 'church', 'and', 'said', 'nothing', 'at', 'all', 'then'];
const prompt = () => Array.from({ length: 2 + Math.floor(r() * 8) }, () => WORDS[Math.floor(r() * WORDS.length)]).join(' ');
const lines = Array.from({ length: N }, (_, i) => ({
  custom_id: `L${i}`, method: 'POST', url: '/v1/completions',
  body: { model: 'floe-brown', prompt: prompt(), max_tokens: i === 5 ? 0 : 4 + Math.floor(r() * 8), temperature: 0 },
}));

interface Run { code: number | null; stderr: string }
function floeBatch(args: string[], killWhen?: (stderr: string) => boolean): Promise<Run> {
  if (!existsSync(BUILT)) throw new Error(`${BUILT} is missing: run \`npm run build\` first (npm test does)`);
  const p = spawn(process.execPath, [BIN, 'batch', '--threads', '1', ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  p.stderr!.on('data', (d: Buffer) => {
    stderr += d.toString();
    if (killWhen?.(stderr) && p.exitCode === null) p.kill('SIGKILL');
  });
  return new Promise((ok) => p.once('exit', (code) => ok({ code, stderr })));
}

test(`floe batch: API line format, equal to a run without interruption; kill -9 and re-run resumes (seed ${seed})`, { timeout: T }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'floe-batch-cli-'));
  const input = join(dir, 'requests.jsonl');
  writeFileSync(input, lines.map((l) => JSON.stringify(l)).join('\n') + '\n');

  // uninterrupted reference run
  const ref = await floeBatch(['--input', input, '--output', join(dir, 'ref.jsonl')]);
  assert.equal(ref.code, 0, ref.stderr);
  assert.match(ref.stderr, /\[floe\] batch: 200\/200 lines \(100 %\)/, 'plain progress lines when stderr is not a TTY');
  assert.match(ref.stderr, /199 lines succeeded, 1 failed/);
  const refLines = readFileSync(join(dir, 'ref.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  assert.deepEqual(refLines.map((l) => l.custom_id), lines.map((l) => l.custom_id));
  for (const l of refLines) {
    assert.deepEqual(Object.keys(l), ['id', 'custom_id', 'response', 'error']);
    assert.deepEqual(Object.keys(l.response), ['status_code', 'request_id', 'body']);
  }
  assert.equal(refLines[5].response.status_code, 400, 'max_tokens 0 is refused by the route');
  assert.equal(refLines[0].response.body.object, 'text_completion');

  // killed once some lines are done, then re-run with the same command
  const out = join(dir, 'out.jsonl');
  const killed = await floeBatch(['--input', input, '--output', out], (e) => /batch: [1-9]\d*\/200 lines \([1-9]\d* %\)/.test(e) && /\(2\d %\)/.test(e));
  assert.equal(killed.code, null, 'killed');
  assert.ok(!existsSync(out), 'no output before the batch completes');
  const db = new Database(join(`${out}.floe-batch`, 'floe.db'), { readonly: true });
  const doneBefore = (db.prepare('SELECT COUNT(*) AS n FROM batch_lines').get() as { n: number }).n;
  db.close();
  assert.ok(doneBefore > 0 && doneBefore < N, `${doneBefore} lines recorded before the kill`);
  const resumed = await floeBatch(['--input', input, '--output', out]);
  assert.equal(resumed.code, 0, resumed.stderr);
  assert.match(resumed.stderr, new RegExp(`resuming batch_\\w+: ${doneBefore} of 200 lines already done`));
  assert.match(resumed.stderr, new RegExp(`batch: ${doneBefore}/200 lines`), 'progress starts at the lines already done');
  const got = readFileSync(out, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  const essence = (l: { custom_id: string; response: { status_code: number; body: { choices?: unknown; usage?: { completion_tokens: number }; error?: unknown } } }) =>
    [l.custom_id, l.response.status_code, l.response.body.choices ?? l.response.body.error, l.response.body.usage?.completion_tokens];
  assert.deepEqual(got.map(essence), refLines.map(essence));

  // a third run of a finished batch only rewrites the output
  const again = await floeBatch(['--input', input, '--output', out]);
  assert.equal(again.code, 0, again.stderr);
  assert.doesNotMatch(again.stderr, /lines\/s/);
  assert.deepEqual(readFileSync(out, 'utf8').trim().split('\n').map((l) => JSON.parse(l)).map(essence), refLines.map(essence));
});

test('floe batch refuses an input file with mixed urls, naming the line', { timeout: T }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'floe-batch-cli-'));
  const input = join(dir, 'mixed.jsonl');
  writeFileSync(input, [lines[0], lines[1], { ...lines[2], url: '/v1/embeddings' }].map((l) => JSON.stringify(l)).join('\n'));
  const run = await floeBatch(['--input', input, '--output', join(dir, 'o.jsonl')]);
  assert.equal(run.code, 2, run.stderr);
  assert.match(run.stderr, /line 3: url \/v1\/embeddings differs from line 1's \/v1\/completions/);
});
