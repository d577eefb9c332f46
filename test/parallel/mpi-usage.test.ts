// Operator mistakes with pipeline parallelism are usage errors, as in one process: exit 2 with the reason, before
// anything runs where the flags alone tell (every rank refuses them), else MPI_Abort with code 2 once the model or the
// output dir shows it (a stage layout that does not fit, an output dir that is not empty, a resume dir of another
// layout). Serving refuses what its stages cannot run (adapters, a draft model) before rank 0 listens.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { Engine } from '../../src/engine/engine.js';
import { PipelineDriver } from '../../src/parallel/pipeline.js';
import { openStage } from '../../src/parallel/stage-model.js';
import { localGroup } from '../../src/parallel/transport.js';
import { BIN, BROWN, MPI_ENV, MPI_SKIP, mpirunArgs } from './mpi-helpers.js';
import { randomData } from './train-data.js';

const MODELS = join(BROWN, '..');
const work = mkdtempSync(join(tmpdir(), 'floe-mpi-usage-'));
const data = randomData(work, 12);
const FT = ['finetune', '--model', BROWN, '--data', data, '--max-steps', '2', '--batch-size', '2', '--lora-rank', '4', '--save-steps', '2',
  '--threads', '1', '--quiet'];

function mpirun(np: number, args: readonly string[]) {
  return spawnSync('mpirun', mpirunArgs(np, false, args), { encoding: 'utf8', timeout: 120_000, env: MPI_ENV });
}

/** Exit 2 (mpirun passes on the ranks' exit status or MPI_Abort's code), within the timeout, with `msg`. */
function assertUsage(r: ReturnType<typeof mpirun>, msg: RegExp): void {
  assert.equal(r.signal, null, `the job hung:\n${r.stderr}`);
  assert.match(r.stdout + r.stderr, msg);
  assert.equal(r.status, 2, r.stdout + r.stderr);
}

test('--pipeline-stages that overlap, leave a gap or pass the last layer, or more stages than layers: exit 2 naming the range', { skip: MPI_SKIP, timeout: 300_000 }, () => {
  const gen = ['generate', '--model', BROWN, '--prompt', 'x', '--max-tokens', '2', '--threads', '1'];
  assertUsage(mpirun(2, [...gen, '--pipeline-stages', '0-3,3-5']), /entry 1 '3-5' starts at layer 3, expected 4/);
  assertUsage(mpirun(2, [...gen, '--pipeline-stages', '0-2,4-5']), /entry 1 '4-5' starts at layer 4, expected 3/);
  assertUsage(mpirun(2, [...gen, '--pipeline-stages', '0-2,3-7']), /covers layers 0-7, the model has 6 \(0-5\)/);
  assertUsage(mpirun(7, [...gen, '--pipeline-parallel-size', '7']), /pipeline parallel size 7 is more than the model's 6 layers/);
  // the count of ranges against the other flags: said before MPI starts, naming the flag the operator gave
  assertUsage(mpirun(3, [...gen, '--pipeline-stages', '0-2,3-5']), /--pipeline-stages '0-2,3-5' \(2 stages\) but mpirun started 3 ranks/);
  assertUsage(mpirun(2, [...gen, '--pipeline-stages', '0-2,3-5', '--pipeline-parallel-size', '3']), /'0-2,3-5' has 2 stages but --pipeline-parallel-size is 3/);
  // serve: the stages find it while rank 0 already listens; the job still ends with 2
  const serve = ['serve', '--model', BROWN, '--port', '0', '--no-ui', '--no-batch', '--kv-cache-memory', '16MiB', '--threads', '1'];
  assertUsage(mpirun(2, [...serve, '--pipeline-stages', '0-2,3-9']), /covers layers 0-9, the model has 6/);
});

test('--pipeline-stages with one range is refused as a usage error, with or without mpirun (a pipeline has 2 stages or more)', { timeout: 120_000 }, () => {
  const gen = ['generate', '--model', BROWN, '--prompt', 'x', '--max-tokens', '2', '--threads', '1', '--pipeline-stages', '0-5'];
  const env = { ...process.env };
  delete env.OMPI_COMM_WORLD_SIZE;
  delete env.PMIX_RANK;
  const alone = spawnSync(process.execPath, [BIN, ...gen], { encoding: 'utf8', timeout: 60_000, env });
  assert.equal(alone.status, 2, alone.stderr);
  assert.match(alone.stderr, /--pipeline-stages '0-5' is one stage: a pipeline needs at least 2 .*for one process leave the flag out/);
  // before, under `mpirun -np 1` it joined MPI and aborted with exit 1: 'a pipeline needs at least 2 ranks'
  if (!MPI_SKIP) assertUsage(mpirun(1, gen), /--pipeline-stages '0-5' is one stage/);
});

test('floe serve with pipeline stages refuses LoRA adapters and a draft model before it listens (exit 2)', { skip: MPI_SKIP, timeout: 200_000 }, () => {
  const serve = ['serve', '--model', BROWN, '--port', '0', '--no-ui', '--no-batch', '--kv-cache-memory', '16MiB', '--threads', '1', '--pipeline-parallel-size', '2'];
  for (const [extra, msg] of [
    [['--lora-modules', `tools=${join(MODELS, 'floe-brown-tools')}`], /--lora-modules is not supported with --pipeline-parallel-size/],
    // before, the server listened, took adapters at runtime and answered with rank 0's layers adapted and the rest not
    [['--enable-lora-loading', '--lora-root', MODELS], /--enable-lora-loading is not supported with --pipeline-parallel-size/],
    [['--speculative', join(MODELS, 'floe-brown-draft')], /a draft model or proposer module is not supported with --pipeline-parallel-size yet; --speculative ngram and suffix are/],
  ] as const) {
    const r = mpirun(2, [...serve, ...extra]);
    assertUsage(r, msg);
    assert.doesNotMatch(r.stdout, /listening on/, 'refused before the HTTP server starts');
  }
});

test('an engine whose forward runs through pipeline stages refuses to load a LoRA adapter', async () => {
  const [tr0] = localGroup(2);
  const st = await openStage(BROWN, 0, 2);
  const engine = new Engine(st.model, null, { remote: new PipelineDriver(tr0!, st.model), kvBlocks: 8, swapSpace: 0 });
  assert.throws(() => engine.loadAdapter('tools', join(MODELS, 'floe-brown-tools')), /LoRA adapters are not supported with pipeline parallelism yet/);
  st.loaded.dispose();
});

test('floe finetune with pipeline stages: flags it cannot run and a non-empty --out are usage errors (exit 2)', { skip: MPI_SKIP, timeout: 300_000 }, () => {
  const pp = ['--pipeline-parallel-size', '2'];
  assertUsage(mpirun(2, [...FT, '--out', join(work, 'e1'), ...pp, '--eval', data]), /^floe finetune: pipeline-parallel fine-tuning does not support --eval/m);
  assertUsage(mpirun(2, [...FT, '--out', join(work, 'e2'), ...pp, '--micro-batches', '3', '--grad-accum', '4']), /--micro-batches 3 and --grad-accum 4 disagree/);
  assert.equal(existsSync(join(work, 'e1')), false, 'nothing was written');
  const out = join(work, 'run2');
  const ok = mpirun(2, [...FT, '--out', out, ...pp]);
  assert.equal(ok.status, 0, ok.stderr);
  assertUsage(mpirun(2, [...FT, '--out', out, ...pp]), /is not empty .*pass --resume DIR/);
  // --json: the error is a JSON line on stdout, as one process prints it (before, stdout stayed empty)
  const j = mpirun(2, [...FT, '--out', out, ...pp, '--json']);
  assertUsage(j, /is not empty/);
  const line = j.stdout.trim().split('\n').filter((l) => l.startsWith('{')).at(-1) ?? '';
  const err = (JSON.parse(line || '{}') as { error?: { message: string; type: string } }).error;
  assert.equal(err?.type, 'usage_error', j.stdout);
  assert.match(err!.message, /is not empty/);
});

test('--resume of a run with another layout says which layout it holds and how to resume it (exit 2)', { skip: MPI_SKIP, timeout: 300_000 }, () => {
  const pp2 = join(work, 'pp2');
  const r = mpirun(2, [...FT, '--out', pp2, '--pipeline-parallel-size', '2']);
  assert.equal(r.status, 0, r.stderr);
  const one = join(work, 'one');
  const s = spawnSync(process.execPath, [BIN, ...FT, '--out', one], { encoding: 'utf8', timeout: 120_000 });
  assert.equal(s.status, 0, s.stderr);
  const more = ['--max-steps', '4'];
  assertUsage(mpirun(3, [...FT, ...more, '--out', pp2, '--resume', pp2, '--pipeline-parallel-size', '3']),
    /holds a run of 2 pipeline stages, this job has 3: resume it with `mpirun -np 2 floe finetune --pipeline-parallel-size 2/);
  // fewer ranks than the run had: the stage count, read from the checkpoints, not --micro-batches' default (P)
  const pp3 = join(work, 'pp3');
  const r3 = mpirun(3, [...FT, '--out', pp3, '--pipeline-parallel-size', '3']);
  assert.equal(r3.status, 0, r3.stderr);
  assertUsage(mpirun(2, [...FT, ...more, '--out', pp3, '--resume', pp3, '--pipeline-parallel-size', '2']),
    /holds a run of 3 pipeline stages, this job has 2: resume it with `mpirun -np 3 floe finetune --pipeline-parallel-size 3/);
  assertUsage(mpirun(2, [...FT, ...more, '--out', one, '--resume', one, '--pipeline-parallel-size', '2']),
    /holds a one-process run's checkpoints \(checkpoint-\*\), not per-stage ones: resume it without --pipeline-parallel-size/);
  const single = spawnSync(process.execPath, [BIN, ...FT, ...more, '--out', pp2, '--resume', pp2], { encoding: 'utf8', timeout: 120_000 });
  assert.equal(single.status, 2, single.stderr);
  assert.match(single.stderr, /holds a pipeline run's per-stage checkpoints \(2 stages, stage-K\/checkpoint-\*\): resume it with `mpirun -np 2 floe finetune --pipeline-parallel-size 2/);
});
