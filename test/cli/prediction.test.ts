// floe generate --prediction FILE: the same output ids as without it, the prediction's counts in --json timings;
// --num-prediction-tokens on generate and serve.

import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import OpenAI from 'openai';
import { startFloeServe } from '../serve/floe-process.js';
import { runEach } from './run-each.js';
import { repoPath } from '../repo.js';

const BIN = repoPath('bin/floe.js');
const floe = (...args: string[]) => spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 60_000 });
const procs: ChildProcess[] = [];
after(() => { for (const p of procs) p.kill('SIGKILL'); });

test('floe generate --prediction FILE: same ids, most of a repeated answer accepted; a missing file is a usage error', () => {
  const args = ['generate', '--prompt', 'The committee said on Friday that the city', '--max-tokens', '40', '--temperature', '0', '--json'];
  const base = floe(...args);
  assert.equal(base.status, 0, base.stderr);
  const b = JSON.parse(base.stdout);
  assert.equal(b.timings.prediction, undefined);
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'floe-pred-')), 'prediction.txt');
  fs.writeFileSync(file, b.text);
  const r = floe(...args, '--prediction', file);
  assert.equal(r.status, 0, r.stderr);
  const j = JSON.parse(r.stdout);
  assert.deepEqual(j.output_ids, b.output_ids);
  assert.ok(j.timings.prediction.accepted >= 25, JSON.stringify(j.timings));
  const bad = floe(...args, '--prediction', file + '.missing');
  assert.equal(bad.status, 2);
  assert.match(bad.stdout + bad.stderr, /--prediction .*prediction\.txt\.missing: ENOENT/);
});

// With the whole answer predicted, each verify step keeps at most --num-prediction-tokens drafts and adds one token of
// its own, so at N = 1 at most (generated + 1) / 2 of the tokens come from the prediction (default 15: most of them).
const atMostOnePerStep = (accepted: number, generated: number) => accepted <= (generated + 1) / 2;

test('floe generate --num-prediction-tokens N caps the prediction tokens a step verifies; a bad N is a usage error', () => {
  const args = ['generate', '--prompt', 'The committee said on Friday that the city', '--max-tokens', '40', '--temperature', '0', '--json'];
  const base = floe(...args);
  assert.equal(base.status, 0, base.stderr);
  const b = JSON.parse(base.stdout);
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'floe-pred-')), 'prediction.txt');
  fs.writeFileSync(file, b.text);
  const one = JSON.parse(floe(...args, '--prediction', file, '--num-prediction-tokens', '1').stdout);
  assert.deepEqual(one.output_ids, b.output_ids);
  const t = one.timings;
  assert.ok(t.prediction.accepted >= 10 && atMostOnePerStep(t.prediction.accepted, t.generated_tokens), JSON.stringify(t));
  const all = JSON.parse(floe(...args, '--prediction', file).stdout).timings;
  assert.ok(!atMostOnePerStep(all.prediction.accepted, all.generated_tokens), JSON.stringify(all));
  // the usage errors as run() calls of the built CLI in one process (run-each.ts), not a process each
  const bads = ['0', '1.5', 'x'];
  const runs = runEach([...bads.map((v) => [...args, '--prediction', file, '--num-prediction-tokens', v]), ['serve', '--num-prediction-tokens', '0', '--port', '0']]);
  for (const [i, v] of bads.entries()) {
    const bad = runs[i]!;
    assert.equal(bad.status, 2, bad.stderr);
    assert.match(bad.stdout + bad.stderr, new RegExp(`--num-prediction-tokens expects an integer >= 1, got '${v.replace('.', '\\.')}'`));
  }
  const serve = runs[bads.length]!;
  assert.equal(serve.status, 2, serve.stderr);
  assert.match(serve.stderr, /--num-prediction-tokens expects an integer >= 1, got '0'/);
});

test('floe serve --num-prediction-tokens 1 reaches the engine: a chat answer predicted whole keeps at most one prediction token a step', { timeout: 90_000 }, async () => {
  const f = await startFloeServe(fs.mkdtempSync(path.join(os.tmpdir(), 'floe-pred-serve-')), {
    built: repoPath('dist/src/serve/server.js'), procs, args: ['--num-prediction-tokens', '1', '--no-batch'],
  });
  const client = new OpenAI({ baseURL: f.url + '/v1', apiKey: 'none', maxRetries: 0 });
  const req = { model: (await client.models.list()).data[0]!.id, messages: [{ role: 'user' as const, content: 'the city said the people would' }], temperature: 0, max_tokens: 40 };
  const answer = (await client.chat.completions.create(req)).choices[0]!.message.content!;
  const r = await client.chat.completions.create({ ...req, prediction: { type: 'content', content: answer } });
  assert.equal(r.choices[0]!.message.content, answer);
  const accepted = r.usage!.completion_tokens_details!.accepted_prediction_tokens!;
  assert.ok(accepted >= 5 && atMostOnePerStep(accepted, r.usage!.completion_tokens), JSON.stringify(r.usage));
  f.proc.kill('SIGTERM');
  assert.equal(await f.exit, 0);
});
