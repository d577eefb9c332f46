// The MPI transport under mpirun (3 ranks, shared memory and TCP): ordered, complete messages under concurrency,
// allreduce and barrier; a rank's abort ends the job with its message.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { test } from 'node:test';
import { MPI_ENV, MPI_SKIP } from './mpi-helpers.js';
import { nodeScript } from '../repo.js';

const RANK = nodeScript('test/parallel/mpi-transport-rank.ts');

for (const tcp of [false, true]) {
  test(`3 ranks over ${tcp ? 'TCP (loopback)' : 'shared memory'}: 40 concurrent messages each way in order, allreduce, barrier`, { skip: MPI_SKIP }, () => {
    const r = spawnSync('mpirun', ['-np', '3', '--oversubscribe', ...(tcp ? ['--mca', 'btl', 'tcp,self'] : []), process.execPath, ...RANK],
      { encoding: 'utf8', timeout: 90_000, env: MPI_ENV });
    assert.equal(r.status, 0, r.stdout + r.stderr);
    assert.deepEqual(r.stdout.trim().split('\n').sort(), [0, 1, 2].map((k) => `rank ${k}/3 ok 40 messages`));
  });
}
