// Requests cut short by a graceful stop past its grace period: a retryable 503, never a 500 that reads as a server bug.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { copyFileSync, mkdtempSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startServer } from '../../src/serve/server.js';
import { repoPath } from '../repo.js';

const BROWN = repoPath('models/floe-brown');

test('/v1/embeddings still running when the grace period ends: 503, as a completion cut short gets', async () => {
  const server = await startServer({ model: BROWN, port: 0, ui: false, dataDir: null, kvCacheMemory: 8 * 2 ** 20, maxBatchedTokens: 64, maxNumSeqs: 4, log: () => {} });
  await server.ready;
  // 64 inputs of ~300 tokens in 64-token steps: hundreds of steps, so the stop comes while most wait
  const input = Array.from({ length: 64 }, (_, i) => `sentence ${i} about rivers and the sea and ships `.repeat(30));
  const answer = fetch(`${server.url}/v1/embeddings`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: 'floe-brown', input }) });
  while (server.serve.inFlight() === 0) await new Promise((r) => setImmediate(r));
  await server.close(0);
  const r = await answer;
  const body = (await r.json()) as { error?: { message: string; code: string } };
  assert.equal(r.status, 503, JSON.stringify(body));
  assert.match(body.error!.message, /shut(ting)? down.*retry/);
});

test('floe serve exits 1 when one model fails to load while another loaded (guard, chat model): nothing left running keeps the process alive', async () => {
  const BIN = repoPath('bin/floe.js');
  const GUARD = repoPath('models/floe-guard');
  const noWeights = mkdtempSync(join(tmpdir(), 'floe-no-weights-'));
  copyFileSync(join(BROWN, 'config.json'), join(noWeights, 'config.json')); // passes the preflight, fails to load
  const cases = [
    ['--model', BROWN, '--guard-model', noWeights], // the chat model loads, the guard does not
    ['--model', noWeights, '--guard-model', GUARD], // the guard loads, the chat model does not
  ];
  for (const args of cases) {
    const proc = spawn(process.execPath, [BIN, 'serve', '--port', '0', '--threads', '1', '--no-ui', '--no-batch', '--kv-cache-memory', '16MiB', '--guard-kv-cache-memory', '4MiB', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    proc.stdout.on('data', (d) => { out += d; });
    proc.stderr.on('data', (d) => { out += d; });
    const exited = new Promise<number | null>((r) => proc.once('exit', (code) => r(code)));
    const timer = new Promise<'hung'>((r) => setTimeout(() => r('hung'), 20_000).unref());
    const code = await Promise.race([exited, timer]);
    if (code === 'hung') proc.kill('SIGKILL');
    assert.match(out, /cannot load/, out);
    assert.equal(code, 1, `${args.join(' ')}: ${code === 'hung' ? 'still running 20 s after it failed to load' : `exit ${code}`}\n${out}`);
  }
});

test('a graceful stop does not wait for connections that never sent a request (a balancer\'s pre-opened one, the one undici opens after an aborted fetch)', async () => {
  const server = await startServer({ model: BROWN, port: 0, ui: false, dataDir: null, kvCacheMemory: 8 * 2 ** 20, log: () => {} });
  await server.ready;
  const { port } = new URL(server.url);
  const silent = connect(Number(port), '127.0.0.1');
  silent.on('error', () => {});
  await new Promise((r) => silent.once('connect', r));
  const used = await fetch(`${server.url}/health`); // a keep-alive connection, idle after its request
  assert.equal(used.status, 200);
  const closed = new Promise((r) => silent.once('close', r));
  const t0 = performance.now();
  await server.close(5000);
  const ms = performance.now() - t0;
  await closed;
  assert.ok(ms < 2000, `close took ${ms.toFixed(0)} ms with nothing running (grace 5 s)`);
});
