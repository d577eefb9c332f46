// `mpirun -np N floe serve --pipeline-parallel-size N --dtype D`: rank 0's /v1/floe/info names the weights every
// stage process holds (engine.weights.stages: each stage's layers and linear dtype; rank 0's also the embedding and
// head), and the start-up line says the conversion took effect, as a single process's does.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { readHfConfig } from '../../src/formats/hf-config.js';
import { balancedStages, formatStages } from '../../src/parallel/stages.js';
import { BROWN, launchServe, MPI_SKIP, type Launched } from './mpi-helpers.js';

async function stop(s: Launched): Promise<void> {
  s.proc.kill('SIGTERM');
  const t = setTimeout(() => s.proc.kill('SIGKILL'), 20_000);
  await s.exited;
  clearTimeout(t);
}

// floe-brown is f32 with a tied head: what each --dtype makes of its linear weights and of its embedding (= head)
const CASES = [
  { np: 2, dtype: 'bf16', stages: undefined, linear: 'bf16', embedding: 'bf16' },
  { np: 3, dtype: 'fp8', stages: '0-0,1-2,3-5', linear: 'fp8_e4m3', embedding: 'f32' },
] as const;

for (const c of CASES) {
  test(`mpirun -np ${c.np} floe serve --dtype ${c.dtype}${c.stages ? ` --pipeline-stages ${c.stages}` : ''}: /v1/floe/info names every stage's weights`, { skip: MPI_SKIP, timeout: 180_000 }, async () => {
    const s = await launchServe(c.np, false, ['--dtype', c.dtype, ...(c.stages ? ['--pipeline-stages', c.stages] : [])]);
    try {
      const info = await (await fetch(`${s.url}/v1/floe/info`)).json() as { engine: { weights?: unknown } };
      const layers = (c.stages ?? formatStages(balancedStages(readHfConfig(BROWN).config, c.np))).split(',');
      assert.deepEqual(info.engine.weights, {
        linear: c.linear, embedding: c.embedding, head: c.embedding, converted: c.dtype,
        stages: layers.map((l, rank) => ({ rank, layers: l, linear: c.linear, ...(rank === 0 ? { embedding: c.embedding, head: c.embedding } : {}) })),
      });
      assert.match(s.log(), new RegExp(`weights ${c.linear} \\(--dtype ${c.dtype}\\)`), s.log());
    } finally {
      await stop(s);
    }
  });
}
