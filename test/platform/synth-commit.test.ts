// floe synth's commits with the default concurrency (2 × the engine's 64 sequences = 128 units in flight) on floe-brown:
// units are committed a few at a time as they finish, so the progress (the terminal bar) moves through the run and a
// run killed before its end has work to resume. Before, a batch was the whole window: a default 100-unit run was one
// batch, the bar read 0/N units until the last unit and a SIGKILL at 99% left nothing committed.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { synth } from '../../src/platform/synth/synth.js';
import type { SynthProgress } from '../../src/platform/synth/pipeline.js';
import { repoPath } from '../repo.js';

const BROWN = repoPath('models/floe-brown');
const dir = mkdtempSync(join(tmpdir(), 'synth-commit-'));

test('the default window commits in small batches: progress between 0 and all units, several batch lines', async () => {
  const out = join(dir, 'magpie.jsonl');
  const seen: SynthProgress[] = [];
  const s = await synth({ method: 'magpie', model: BROWN, out, num: 32, maxTokens: 24, engine: { threads: 1 }, onProgress: (p) => seen.push(p) });
  assert.equal(s.units, 32);
  const partial = seen.filter((p) => p.done > 0 && p.done < 32);
  assert.ok(partial.length >= 2, `progress reports: ${seen.map((p) => p.done).join(' ')}`);
  const batches = readFileSync(`${out}.synth-progress`, 'utf8').trim().split('\n').slice(1).map((l) => Object.keys(JSON.parse(l).units).length);
  assert.equal(batches.reduce((a, b) => a + b, 0), 32);
  assert.ok(batches.length >= 4 && Math.max(...batches) <= 8, `units per batch: ${batches.join(', ')}`);
});
