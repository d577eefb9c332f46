// floe generate --prediction FILE: the same output ids as without it, the prediction's counts in --json timings.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const BIN = fileURLToPath(new URL('../../bin/floe.js', import.meta.url));
const floe = (...args: string[]) => spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 60_000 });

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
