// serve's start-up KV check sizes a block in the KV dtype the engine will pick: f32 for an f32 checkpoint (floe-brown),
// so a budget between a bf16 block and an f32 block is refused before "listening", naming f32 and its size.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { preflight } from '../../src/serve/server.js';
import { repoPath } from '../repo.js';

const ROOT = repoPath('');
const BROWN = join(ROOT, 'models/floe-brown'); // f32: 6 layers × 4 kv heads × 32, 16-token blocks
const F32_BLOCK = 6 * 2 * 4 * 32 * 4 * 16; // 98304
const BF16_BLOCK = F32_BLOCK / 2;

test('an f32 model without --kv-cache-dtype: the check uses an f32 block (the dtype the engine picks)', () => {
  assert.throws(() => preflight({ model: BROWN, kvCacheMemory: 60_000 }),
    new RegExp(`--kv-cache-memory 60000 bytes holds no KV block: one block of 16 tokens takes ${F32_BLOCK} bytes \\(f32, .*give at least ${F32_BLOCK}`));
  assert.doesNotThrow(() => preflight({ model: BROWN, kvCacheMemory: F32_BLOCK }));
});

test('bf16 where the engine picks bf16: --kv-cache-dtype bf16, or fp8 weights (--dtype fp8)', () => {
  assert.doesNotThrow(() => preflight({ model: BROWN, kvCacheMemory: BF16_BLOCK, kvDtype: 'bf16' }));
  assert.doesNotThrow(() => preflight({ model: BROWN, kvCacheMemory: BF16_BLOCK, dtype: 'fp8' }));
  assert.throws(() => preflight({ model: BROWN, kvCacheMemory: BF16_BLOCK - 1, dtype: 'fp8' }), new RegExp(`takes ${BF16_BLOCK} bytes \\(bf16, `));
});

test('floe serve --kv-cache-memory 60000 on floe-brown exits 1 before listening', { timeout: 60_000 }, () => {
  const r = spawnSync(process.execPath, [join(ROOT, 'bin/floe.js'), 'serve', '--model', BROWN, '--port', '0', '--no-batch', '--kv-cache-memory', '60000'],
    { encoding: 'utf8', timeout: 50_000 });
  assert.equal(r.status, 1, r.stdout + r.stderr);
  assert.match(r.stderr, new RegExp(`takes ${F32_BLOCK} bytes \\(f32, `));
  assert.doesNotMatch(r.stdout + r.stderr, /listening/);
});

test('--guard-model: the guard\'s share of --kv-cache-memory must leave the chat model a block, else a message naming both flags', () => {
  const MiB = 2 ** 20;
  const guard = join(ROOT, 'models/floe-guard');
  assert.throws(() => preflight({ model: BROWN, guardModel: guard, kvCacheMemory: 8 * MiB, guardKvCacheMemory: 8 * MiB }),
    new RegExp(`--kv-cache-memory ${8 * MiB} bytes less the guard's ${8 * MiB} \\(--guard-kv-cache-memory\\) leaves 0 bytes for the chat model, which holds no KV block: .*give --kv-cache-memory at least ${8 * MiB + F32_BLOCK}`));
  assert.throws(() => preflight({ model: BROWN, guardModel: guard, kvCacheMemory: 8 * MiB, guardKvCacheMemory: 9 * MiB }), /leaves 0 bytes for the chat model/);
  assert.doesNotThrow(() => preflight({ model: BROWN, guardModel: guard, kvCacheMemory: 8 * MiB, guardKvCacheMemory: 8 * MiB - F32_BLOCK }));
  assert.doesNotThrow(() => preflight({ model: BROWN, guardModel: guard, kvCacheMemory: 4 * F32_BLOCK })); // a quarter for the guard
});
