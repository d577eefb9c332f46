// The CLI answers --help and usage errors without loading the HTTP server (fastify) or LanceDB: those imports cost
// ~0.8 s, and every command used to pay them before parsing its flags (offload-args imported parseSize from the
// server). A preloaded probe lists the heavy packages a process loaded; no timing is asserted.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { repoPath } from '../repo.js';

const BIN = repoPath('bin/floe.js');
const PROBE = repoPath('test/cli/loaded-probe.cjs');

function loaded(args: string[]): { status: number | null; heavy: string[]; stderr: string } {
  const r = spawnSync(process.execPath, ['--require', PROBE, ...args], { encoding: 'utf8', timeout: 30_000, input: '' });
  const m = /floe-loaded (\[.*\])/.exec(r.stderr);
  assert.ok(m, `the probe reported (${args.join(' ')}): ${r.stderr}`);
  return { status: r.status, heavy: JSON.parse(m[1]!) as string[], stderr: r.stderr };
}

test('the probe sees fastify and LanceDB when a process loads them', () => {
  const r = loaded(['-e', "require('fastify'); require('@lancedb/lancedb')"]);
  assert.deepEqual(r.heavy.sort(), ['@lancedb', 'fastify']);
});

test('--help and usage errors load neither the HTTP server nor LanceDB', () => {
  const cases: Array<[string[], number]> = [
    [['--help'], 0], [['generate', '--top-k=-1'], 2], [['chat', '--bogus'], 2], [['finetune', '--bogus'], 2],
    [['serve', '--port=-1'], 2], [['serve', '--help'], 0], [['rag', '--help'], 0], [['rag', 'query', '--bogus'], 2],
    [['info', '--help'], 0], [['distill', '--bogus'], 2], [['plan', '--bogus'], 2],
  ];
  for (const [args, code] of cases) {
    const r = loaded([BIN, ...args]);
    assert.equal(r.status, code, `floe ${args.join(' ')}: exit ${r.status}: ${r.stderr}`);
    assert.deepEqual(r.heavy, [], `floe ${args.join(' ')} loaded ${r.heavy.join(', ')}`);
  }
});
