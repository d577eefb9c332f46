// `mpirun -np N floe generate --pipeline-parallel-size N` equals one process (tokens and logprobs, f32 bit for bit),
// over shared memory and over TCP on loopback; `floe` explains what to do without mpirun.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { BIN, BROWN, MPI_ENV, MPI_SKIP, mpirunArgs } from './mpi-helpers.js';

const V = 4096;
const prompt = Array.from({ length: 4 + Math.floor(Math.random() * 12) }, () => Math.floor(Math.random() * (V - 8))).join(',');
const ARGS = ['generate', '--model', BROWN, '--prompt-ids', prompt, '--max-tokens', '10', '--temperature', '0', '--logprobs', '3', '--prompt-logprobs', '2', '--json'];

function single(): { output_ids: number[]; logprobs: unknown; prompt_logprobs: unknown } {
  const r = spawnSync(process.execPath, [BIN, ...ARGS], { encoding: 'utf8', timeout: 60_000 });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout);
}

test('floe generate --pipeline-parallel-size without mpirun says how to launch it', () => {
  const env = { ...process.env };
  delete env.OMPI_COMM_WORLD_SIZE;
  const r = spawnSync(process.execPath, [BIN, ...ARGS, '--pipeline-parallel-size', '2'], { encoding: 'utf8', timeout: 60_000, env });
  assert.notEqual(r.status, 0);
  assert.match(r.stdout + r.stderr, /mpirun -np 2 floe/);
});

let want: ReturnType<typeof single> | undefined;
for (const [np, tcp, stages] of [[2, false, null], [3, false, null], [2, true, '0-2,3-5'], [3, true, null]] as const) {
  test(`mpirun -np ${np} floe generate over ${tcp ? 'TCP (loopback)' : 'shared memory'}${stages ? ` with --pipeline-stages ${stages}` : ''} equals one process`, { skip: MPI_SKIP }, () => {
    want ??= single();
    const extra = stages ? ['--pipeline-stages', stages] : ['--pipeline-parallel-size', String(np)];
    const r = spawnSync('mpirun', mpirunArgs(np, tcp, [...ARGS, ...extra]), { encoding: 'utf8', timeout: 90_000, env: MPI_ENV });
    assert.equal(r.status, 0, r.stderr);
    const got = JSON.parse(r.stdout); // only rank 0 prints
    assert.ok(want.output_ids.length >= 1 && want.output_ids.length <= 10, 'one process generated (a random prompt may reach EOS before 10 tokens)');
    assert.deepEqual(got.output_ids, want.output_ids);
    assert.deepEqual(got.logprobs, want.logprobs);
    assert.deepEqual(got.prompt_logprobs, want.prompt_logprobs);
  });
}

test('an error on rank 0 after the stages started ends the whole job with its message', { skip: MPI_SKIP }, () => {
  const t0 = Date.now();
  const r = spawnSync('mpirun', mpirunArgs(2, false, ['generate', '--model', BROWN, '--prompt-ids', `5,${V + 3}`, '--max-tokens', '3', '--pipeline-parallel-size', '2']),
    { encoding: 'utf8', timeout: 60_000, env: MPI_ENV });
  assert.equal(r.signal, null, `mpirun hung (killed after ${Date.now() - t0} ms)`);
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, new RegExp(`prompt token id ${V + 3} outside the vocabulary`));
});
