// `mpirun -np N floe finetune --pipeline-parallel-size N` (LoRA, f32 floe-brown) equals `floe finetune --grad-accum M`
// in one process: per-step losses and grad norms, the assembled adapter (served through the openai client); resume from
// per-stage checkpoints continues exactly; -np / --pipeline-parallel-size mismatches and a missing mpirun are explained.

import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import OpenAI from 'openai';
import { assertSameAdapter, assertSameRun, finetuneArgs, M, type Metric, metrics, singleRun } from './finetune-compare.js';
import { BIN, BROWN, launchServe, MPI_ENV, MPI_SKIP, mpirunArgs, rankPid } from './mpi-helpers.js';
import { randomData } from './train-data.js';

const work = mkdtempSync(join(tmpdir(), 'floe-mpi-ft-'));
const data = randomData(work, 16);
const seed = String(Math.floor(Math.random() * 1e6));
const ARGS = finetuneArgs(data, seed);

let single: { out: string; m: Metric[] } | undefined;
function one(): { out: string; m: Metric[] } {
  if (single) return single;
  const out = join(work, 'single');
  single = { out, m: singleRun(ARGS, out) };
  return single;
}

function mpirun(np: number, tcp: boolean, args: string[]) {
  return spawnSync('mpirun', mpirunArgs(np, tcp, args), { encoding: 'utf8', timeout: 180_000, env: MPI_ENV });
}

test('floe finetune --pipeline-parallel-size without mpirun says how to launch it', () => {
  const env = { ...process.env };
  delete env.OMPI_COMM_WORLD_SIZE;
  delete env.PMIX_RANK;
  const r = spawnSync(process.execPath, [BIN, ...ARGS, '--out', join(work, 'nompi'), '--pipeline-parallel-size', '2'], { encoding: 'utf8', timeout: 60_000, env });
  assert.notEqual(r.status, 0);
  assert.match(r.stdout + r.stderr, /mpirun -np 2 floe/); // --json: the error is a JSON line on stdout
  assert.equal(existsSync(join(work, 'nompi', 'metrics.jsonl')), false);
});

test('mpirun -np 3 with --pipeline-parallel-size 2 is refused, naming both', { skip: MPI_SKIP }, () => {
  const r = mpirun(3, false, [...ARGS, '--out', join(work, 'mismatch'), '--pipeline-parallel-size', '2']);
  assert.equal(r.signal, null, 'mpirun did not hang');
  assert.notEqual(r.status, 0);
  assert.match(r.stdout + r.stderr, /--pipeline-parallel-size 2 but mpirun started 3 ranks \(mpirun -np 2\)/);
});

test('mpirun -np 2 floe finetune (shared memory) equals one process; the adapter serves; resume after step 2 continues exactly', { skip: MPI_SKIP, timeout: 600_000 }, async () => {
  const want = one();
  const out = join(work, 'pp2');
  const r = mpirun(2, false, [...ARGS, '--out', out, '--pipeline-parallel-size', '2', '--micro-batches', String(M)]);
  assert.equal(r.status, 0, r.stderr);
  const summary = JSON.parse(r.stdout) as { steps: number; output: string }; // only rank 0 prints
  assert.equal(summary.steps, 4);
  const got = metrics(out);
  assertSameRun(got, want.m);
  assertSameAdapter(join(out, 'final'), join(want.out, 'final'));
  for (const s of [0, 1]) assert.ok(existsSync(join(out, `stage-${s}`, 'checkpoint-000002', 'optimizer.safetensors')), `stage ${s} checkpointed step 2`);

  // the assembled adapter through floe serve --lora-modules and the openai client: as the one-process adapter
  const srv = await launchServe(0, false, ['--lora-modules', `pp=${join(out, 'final')}`, `one=${join(want.out, 'final')}`]);
  try {
    const client = new OpenAI({ baseURL: `${srv.url}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 60_000 });
    const ask = (model: string) => client.completions.create({ model, prompt: 'the jury said that the', max_tokens: 6, temperature: 0, logprobs: 1 });
    const [a, b, base] = [await ask('pp'), await ask('one'), await ask('floe-brown')];
    assert.equal(a.choices[0]!.text, b.choices[0]!.text);
    const la = a.choices[0]!.logprobs!.token_logprobs!, lb = b.choices[0]!.logprobs!.token_logprobs!;
    la.forEach((v, i) => assert.ok(Math.abs(v! - lb[i]!) < 1e-3, `token ${i} logprob ${v} vs ${lb[i]}`));
    assert.notDeepEqual(la, base.choices[0]!.logprobs!.token_logprobs, 'the adapter changes the model');
  } finally {
    srv.proc.kill('SIGTERM');
    await srv.exited;
  }

  // a run stopped after its step-2 checkpoints: drop what came later, resume from the output dir
  for (const s of [0, 1]) rmSync(join(out, `stage-${s}`, 'checkpoint-000004'), { recursive: true });
  rmSync(join(out, 'final'), { recursive: true });
  const again = mpirun(2, false, [...ARGS, '--out', out, '--pipeline-parallel-size', '2', '--micro-batches', String(M), '--resume', out]);
  assert.equal(again.status, 0, again.stderr);
  const resumed = metrics(out);
  assert.deepEqual(resumed, got.map((m, i) => (i < 2 ? m : resumed[i])), 'steps 1-2 kept from the first run');
  assert.deepEqual(resumed.slice(2).map((m) => [m.step, m.loss, m.grad_norm, m.lr]), got.slice(2).map((m) => [m.step, m.loss, m.grad_norm, m.lr]), 'steps 3-4 as uninterrupted');
  assertSameAdapter(join(out, 'final'), join(want.out, 'final'));

  // resuming with another stage split is refused with the reason
  const other = mpirun(2, false, [...ARGS, '--out', out, '--pipeline-stages', '0-2,3-5', '--micro-batches', String(M), '--resume', out]);
  assert.notEqual(other.status, 0);
  assert.match(other.stdout + other.stderr, /trained with --pipeline-stages 0-3,4-5, this run has --pipeline-stages 0-2,3-5: /);

  // and on a base of the same shapes with other weights (as the one-process trainer refuses it)
  const base = join(work, 'base-other');
  cpSync(BROWN, base, { recursive: true });
  const st = readFileSync(join(base, 'model.safetensors'));
  for (let i = st.length - 4000; i < st.length; i += 4) st[i + 3]! ^= 1;
  writeFileSync(join(base, 'model.safetensors'), st);
  const args = ARGS.map((a) => (a === BROWN ? base : a));
  assert.notDeepEqual(args, ARGS);
  const otherBase = mpirun(2, false, [...args, '--out', out, '--pipeline-parallel-size', '2', '--micro-batches', String(M), '--resume', out]);
  assert.notEqual(otherBase.status, 0);
  assert.match(otherBase.stdout + otherBase.stderr, /trained on the base model .*, this run has .*base-other, whose weights differ/);
});

test('mpirun -np 3 floe finetune over TCP (loopback) with checkpointed activations equals one process', { skip: MPI_SKIP, timeout: 300_000 }, () => {
  const want = one();
  const out = join(work, 'pp3');
  const r = mpirun(3, true, [...ARGS, '--out', out, '--pipeline-parallel-size', '3', '--micro-batches', String(M), '--checkpoint-activations']);
  assert.equal(r.status, 0, r.stderr);
  assertSameRun(metrics(out), want.m);
  assertSameAdapter(join(out, 'final'), join(want.out, 'final'));
});

test('kill -9 of a stage mid-training ends the job within a bounded time; the run resumes from the stages\' checkpoints', { skip: MPI_SKIP, timeout: 300_000 }, async () => {
  const out = join(work, 'killed');
  const args = ['finetune', '--model', BROWN, '--data', data, '--max-steps', '500', '--batch-size', '2', '--lora-rank', '4', '--lr-schedule', 'constant',
    '--save-steps', '1', '--threads', '1', '--quiet', '--out', out, '--pipeline-parallel-size', '2', '--micro-batches', '2'];
  const proc = spawn('mpirun', mpirunArgs(2, false, args), { env: MPI_ENV });
  let log = '';
  proc.stdout!.on('data', (d) => (log += d));
  proc.stderr!.on('data', (d) => (log += d));
  const exited = new Promise<number | null>((r) => proc.on('exit', (code) => r(code)));
  const steps = () => (existsSync(join(out, 'metrics.jsonl')) ? readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').filter(Boolean).length : 0);
  for (let i = 0; steps() < 2; i++) {
    assert.ok(i < 1200 && proc.exitCode === null, `training did not start:\n${log}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  process.kill(rankPid(proc.pid!, 1), 'SIGKILL');
  const t0 = Date.now();
  const guard = setTimeout(() => proc.kill('SIGKILL'), 60_000);
  const code = await exited;
  clearTimeout(guard);
  assert.ok(Date.now() - t0 < 60_000, `mpirun ended ${Date.now() - t0} ms after the kill`);
  assert.notEqual(code, 0);
  assert.ok(steps() < 500, 'the job stopped');
  // both stages saved some step (every step is saved); resume runs to a later step from the newest common one
  const saved = Math.min(...[0, 1].map((s) => Number(/\d+$/.exec(readdirSync(join(out, `stage-${s}`)).filter((n) => n.startsWith('checkpoint-')).sort().at(-1)!)![0])));
  const r = mpirun(2, false, [...args.map((a) => (a === '500' ? String(saved + 2) : a)), '--resume', out]);
  assert.equal(r.status, 0, r.stderr);
  const m = readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Metric);
  assert.deepEqual(m.map((x) => x.step), Array.from({ length: saved + 2 }, (_, i) => i + 1));
  assert.ok(existsSync(join(out, 'final', 'adapter_model.safetensors')));
});
