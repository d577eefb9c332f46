// mapfile: mmap (native addon) and read-into-memory give the same bytes; errors name the file.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { loadAddon } from '../../src/backend/native-addon.js';
import { mapFileSync, mapFileUsesMmap, setMapFileMmap } from '../../src/formats/mapfile.js';
import { rng, tmpDir } from './fixtures.js';

test('mmap and read paths return identical bytes; mmap is used when the addon is built', () => {
  const r = rng(5);
  const file = path.join(tmpDir(), 'blob.bin');
  const bytes = new Uint8Array(100_003).map(() => Math.floor(r() * 256));
  fs.writeFileSync(file, bytes);
  assert.equal(mapFileUsesMmap(), loadAddon() !== null);
  const a = mapFileSync(file);
  const prev = setMapFileMmap(false);
  try {
    assert.equal(mapFileUsesMmap(), false);
    const b = mapFileSync(file);
    assert.deepEqual(a, bytes);
    assert.deepEqual(b, bytes);
    assert.equal(b.byteOffset % 8, 0);
  } finally {
    setMapFileMmap(prev);
  }
  fs.writeFileSync(path.join(path.dirname(file), 'empty.bin'), '');
  assert.equal(mapFileSync(path.join(path.dirname(file), 'empty.bin')).byteLength, 0);
});

test('missing file and directories are errors naming the path', () => {
  assert.throws(() => mapFileSync('/nonexistent/x.bin'), /^Error: \/nonexistent\/x\.bin: cannot open/);
  const d = tmpDir();
  assert.throws(() => mapFileSync(d), new RegExp(`${d}: not a regular file`));
});
