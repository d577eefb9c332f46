// The CLI names a KV dtype as --kv-cache-dtype does (`fp8`, not the tensor dtype `fp8_e4m3`): serve's start-up line and
// its --kv-cache-memory error, as eval already did.

import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startFloeServe } from '../serve/floe-process.js';
import { repoPath } from '../repo.js';

const ROOT = repoPath('');
const BROWN = join(ROOT, 'models/floe-brown');
const procs: ChildProcess[] = [];
after(() => { for (const p of procs) p.kill('SIGKILL'); });

test('floe serve --kv-cache-dtype fp8: the start-up line says "KV cache fp8", as the flag does', { timeout: 60_000 }, async () => {
  const f = await startFloeServe(mkdtempSync(join(tmpdir(), 'floe-kvname-')), {
    built: join(ROOT, 'dist/src/serve/server.js'), procs, args: ['--model', BROWN, '--kv-cache-dtype', 'fp8', '--kv-cache-memory', '8MiB'],
  });
  const line = f.out().split('\n').find((l) => /model ready in/.test(l))!;
  assert.match(line, /; KV cache fp8: \d+ blocks/);
  assert.doesNotMatch(f.out(), /fp8_e4m3/);
  f.proc.kill('SIGTERM');
  assert.equal(await f.exit, 0);
});

test('floe serve --kv-cache-dtype fp8 with a --kv-cache-memory below one block: the error names fp8', () => {
  const r = spawnSync(process.execPath, [join(ROOT, 'bin/floe.js'), 'serve', '--model', BROWN, '--port', '0', '--no-batch', '--kv-cache-dtype', 'fp8', '--kv-cache-memory', '1000'],
    { encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 1, r.stderr);
  assert.match(r.stderr, /holds no KV block: one block of 16 tokens takes \d+ bytes \(fp8, /);
  assert.doesNotMatch(r.stderr, /fp8_e4m3/);
});
