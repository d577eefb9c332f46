// floe synth when a unit's prompt does not fit the model's context (subprocess on the src CLI, floe-brown: 1024 tokens),
// in-process and against a real `floe serve`: that unit is rejected as context_length_exceeded and the run goes on. Before,
// over --endpoint the server's 400 context_length_exceeded ended the whole run with exit 1 (and a rerun stopped at the same
// unit again, so the file could never be finished), and in-process the unit was miscounted as question_too_short.
// Also: an endpoint that refuses connections says why (ECONNREFUSED), not only "fetch failed".

import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startFloeServe } from '../serve/floe-process.js';
import { repoPath } from '../repo.js';

const BIN = repoPath('bin/floe.js'); // the built CLI as users run it (npm test builds dist/ first; `npm run build` after a src change): it starts ~0.3 s sooner than src through tsx
const BUILT = repoPath('dist/src/cli/main.js');
const BROWN = repoPath('models/floe-brown');
const dir = mkdtempSync(join(tmpdir(), 'synth-endpoint-'));
const procs: ChildProcess[] = [];
after(() => { for (const p of procs) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL'); });

function synth(...args: string[]) {
  const r = spawnSync(process.execPath, [BIN, 'synth', ...args], { encoding: 'utf8', timeout: 120_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

// one short document, and one whose single passage (--chunk-tokens 4000) is ~1,500 tokens: more than the 1024-token context
const short = join(dir, 'short.txt');
writeFileSync(short, 'The river runs north through the valley. It freezes every winter, and the town holds a skating fair on the ice.\n');
const long = join(dir, 'long.txt');
writeFileSync(long, Array.from({ length: 100 }, (_, i) => `The committee met on day ${i + 1} to discuss the budget of the county schools.`).join(' ') + '\n');
const args = ['--method', 'from-documents', '--docs', short, long, '--chunk-tokens', '4000', '--max-tokens', '24', '--min-support', 'off', '--json'];

test('in-process: the unit whose prompt exceeds the context is rejected as context_length_exceeded; the other runs', () => {
  const r = synth(...args, '--model', BROWN, '--threads', '1', '--out', join(dir, 'local.jsonl'));
  assert.equal(r.code, 0, r.err);
  const s = JSON.parse(r.out);
  assert.equal(s.units, 2);
  assert.equal(s.rejected.context_length_exceeded, 1, r.out);
  assert.ok(s.generated_tokens > 0, 'the short document was worked on');
});

test('against floe serve: the 400 context_length_exceeded rejects that unit, the run ends with exit 0', { timeout: 240_000 }, async () => {
  const { url, proc } = await startFloeServe(null, { built: BUILT, procs, args: ['--model', BROWN] });
  const r = synth(...args, '--endpoint', url, '--out', join(dir, 'remote.jsonl'));
  proc.kill('SIGTERM');
  assert.equal(r.code, 0, r.err);
  const s = JSON.parse(r.out);
  assert.equal(s.units, 2);
  assert.equal(s.rejected.context_length_exceeded, 1, r.out);
  assert.ok(s.generated_tokens > 0, 'the short document was worked on');
});

test('an endpoint that refuses connections: exit 1 naming the cause', async () => {
  const port = await new Promise<number>((res) => { const s = createServer().listen(0, '127.0.0.1', () => { const p = (s.address() as { port: number }).port; s.close(() => res(p)); }); });
  // --max-retries 1: two attempts, 0.25 s apart (the default 5 retries wait 7.75 s in all)
  const r = synth('--method', 'self-instruct', '--num', '1', '--endpoint', `http://127.0.0.1:${port}`, '--max-retries', '1', '--out', join(dir, 'refused.jsonl'));
  assert.equal(r.code, 1, r.err);
  assert.match(r.err, new RegExp(`GET http://127\\.0\\.0\\.1:${port}/v1/models: fetch failed: connect ECONNREFUSED 127\\.0\\.0\\.1:${port} \\(after 2 attempts\\)`));
});
