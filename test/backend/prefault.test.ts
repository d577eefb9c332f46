// addon.prefault: a fresh buffer's pages become resident in the background while its contents stay as they were.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as os from 'node:os';
import { loadAddon } from '../../src/backend/native-addon.js';
import { nativeCounters } from '../../src/backend/native.js';

const addon = loadAddon();
const [major, minor] = os.release().split('.').map(Number) as [number, number];
const populateWrite = os.platform() === 'linux' && (major > 5 || (major === 5 && minor >= 14)); // MADV_POPULATE_WRITE
const skip = !addon ? 'needs the native addon' : !populateWrite ? `needs Linux 5.14+ (MADV_POPULATE_WRITE), this is ${os.release()}` : false;

test('prefault commits a fresh buffer\'s pages in the background and leaves its bytes unchanged', { skip }, async () => {
  const MiB = 2 ** 20, n = 192 * MiB;
  const b = new Uint8Array(n); // calloc'd: pages not resident until written
  const marks = [0, 4095, 4096, 7 * MiB + 13, 100 * MiB + 1, n - 1];
  marks.forEach((o, i) => { b[o] = 1 + i; });
  const before = nativeCounters()['prefault.madvise.native'] ?? 0;
  const rss0 = process.memoryUsage().rss;
  const t0 = performance.now();
  const bytes = addon!.prefault([b]);
  assert.ok(bytes === n || bytes === n - 4096, `whole pages inside the buffer: ${bytes} of ${n} bytes`);
  assert.ok(performance.now() - t0 < 50, 'prefault returns at once (the work is on its own thread)');
  assert.equal(nativeCounters()['prefault.madvise.native'], before + 1);
  let grown = 0;
  for (let i = 0; i < 100 && grown < 0.9 * n; i++) {
    await new Promise((r) => setTimeout(r, 50));
    grown = process.memoryUsage().rss - rss0;
  }
  assert.ok(grown >= 0.9 * n, `resident set grew by ${(grown / MiB).toFixed(0)} MiB, expected ~${n / MiB}`);
  marks.forEach((o, i) => assert.equal(b[o], 1 + i, `byte ${o}`));
  let nonzero = 0;
  for (let o = 0; o < n; o += 4093) if (b[o] !== 0 && !marks.includes(o)) nonzero++;
  assert.equal(nonzero, 0, 'bytes the test never wrote are still zero');
});

test('prefault: bad input is refused with the index of the offending buffer', { skip: !addon && 'needs the native addon' }, () => {
  assert.throws(() => addon!.prefault([new Uint8Array(8), new Float32Array(4) as unknown as Uint8Array]), /buffers\[1\] is not a Uint8Array/);
  assert.throws(() => addon!.prefault(null as unknown as Uint8Array[]), /must be an array of Uint8Array/);
  assert.equal(addon!.prefault([new Uint8Array(100)]), 0, 'a buffer smaller than a page has no whole page to commit');
});
