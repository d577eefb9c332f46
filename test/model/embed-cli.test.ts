// `floe embed` as a subprocess: its vectors equal the library Embedder's on the shipped model; usage errors.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { Embedder } from '../../src/model/embed.js';
import { repoPath } from '../repo.js';

const BIN = repoPath('bin/floe.js');
const MODEL = repoPath('models/floe-embed');
const floe = (args: string[], input?: string) => spawnSync(process.execPath, [BIN, 'embed', ...args], { encoding: 'utf8', input, timeout: 60_000 });

test('floe embed --json and plain output equal the library vectors', async () => {
  const texts = ['a tangible and visible entity', 'The jury praised the election.'];
  const want = (await Embedder.open(MODEL)).embed(texts);
  const r = floe(['--model', MODEL, '--text', texts[0]!, '--text', '-', '--json', '--threads', '1'], texts[1] + '\n');
  assert.equal(r.status, 0, r.stderr);
  const j = JSON.parse(r.stdout) as { dimensions: number; pooling: string; data: { index: number; tokens: number; truncated: boolean; embedding: number[] }[] };
  assert.equal(j.dimensions, 256);
  assert.equal(j.pooling, 'mean');
  j.data.forEach((d, i) => {
    assert.equal(d.truncated, false);
    let m = 0;
    d.embedding.forEach((x, k) => { m = Math.max(m, Math.abs(x - want[i]![k]!)); });
    assert.ok(m < 1e-6, `text ${i}: max diff ${m}`);
  });
  const plain = floe(['--text', texts[0]!, '--threads', '1']); // default model: the package's floe-embed
  assert.equal(plain.status, 0, plain.stderr);
  assert.match(plain.stderr, /using the built-in embedder/);
  const row = plain.stdout.trim().split(' ').map(Number);
  assert.equal(row.length, 256);
  row.forEach((x, k) => assert.ok(Math.abs(x - want[0]![k]!) < 1e-6));
});

test('floe embed: a missing --text or a bad --pooling is a usage error (exit 2)', () => {
  const a = floe(['--model', MODEL]);
  assert.equal(a.status, 2);
  assert.match(a.stderr, /--text T is required/);
  const b = floe(['--model', MODEL, '--text', 'x', '--pooling', 'max', '--json']);
  assert.equal(b.status, 2);
  assert.match(JSON.parse(b.stdout).error.message, /--pooling expects mean or last/);
});
