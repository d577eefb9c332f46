// A fine-tuning job's models beyond chat, through `floe serve` with the official openai client: /v1/embeddings loads a
// checkpoint on first use as chat does, and embeds with the job's models as the library's Embedder does with their
// adapters (applied to the weights, not the engine's per-token LoRA); a restart with --max-lora-rank below the job's
// rank refuses its models with the rank and the flag (as vLLM refuses such an adapter), not as models that do not exist.

import { before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI, { toFile } from 'openai';
import { serverProcs, startFloeServe, type Floe } from './floe-process.js';
import { chatJsonl, client, ftSeed, poll, sentences, terminal, type Job } from './ft-helpers.js';
import { Embedder } from '../../src/model/embed.js';
import { repoPath } from '../repo.js';

const BUILT = repoPath('dist/src/platform/jobs/child.js');
const MODEL = repoPath('models/floe-brown');
const T = 120_000;

const procs = serverProcs();
const startFloe = (dataDir: string, args: readonly string[] = []): Promise<Floe> =>
  startFloeServe(dataDir, { built: BUILT, procs, args: ['--jobs-threads', '1', ...args] });

// fresh random data each run (FT_SEED=N replays one)
const seed = ftSeed();
const sentence = sentences(seed);
const trainJsonl = chatJsonl(12, sentence);
const TEXTS = [sentence(), sentence(), sentence()];
const RANK = 8;

const dir = mkdtempSync(join(tmpdir(), 'floe-ft-models-'));
let job: Job;

/** One short job (rank 8, 2 steps, a checkpoint at each) on a fresh data dir; the server that ran it is stopped. */
before(async () => {
  const f = await startFloe(dir);
  const c = client(f);
  const train = await c.files.create({ file: await toFile(Buffer.from(trainJsonl), 'train.jsonl'), purpose: 'fine-tune' });
  const created = await c.fineTuning.jobs.create({
    model: 'floe-brown', training_file: train.id, seed: 7, hyperparameters: { batch_size: 4, learning_rate_multiplier: 10 },
    floe: { lora_rank: RANK, max_steps: 2, save_steps: 1 },
  } as unknown as OpenAI.FineTuning.Jobs.JobCreateParams);
  job = await poll(c, created.id, terminal);
  assert.equal(job.status, 'succeeded', JSON.stringify(job.error));
  f.proc.kill('SIGTERM');
  await f.exit;
}, { timeout: T });

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

test(`/v1/embeddings: a job's checkpoint is loaded on first use and its result model embeds, each as the library with that adapter (seed ${seed})`, { timeout: T }, async () => {
  const f = await startFloe(dir);
  const c = client(f);
  const ck = `${job.fine_tuned_model}:ckpt-step-1`;
  assert.ok(!(await c.models.list()).data.some((m) => m.id === ck), 'the checkpoint is not served before its first use');
  const base = await Embedder.open(MODEL, { pooling: 'mean', skipBos: false, threads: 1 });
  const want0 = base.embed(TEXTS);
  for (const [name, adapter] of [[ck, join(dir, 'jobs', job.id, 'run', 'checkpoint-000001')], [job.fine_tuned_model!, join(dir, 'jobs', job.id, 'adapter')]] as const) {
    const got = await c.embeddings.create({ model: name, input: TEXTS, encoding_format: 'float' });
    assert.equal(got.model, name);
    const want = (await Embedder.open(MODEL, { adapter, pooling: 'mean', skipBos: false, threads: 1 })).embed(TEXTS);
    got.data.forEach((d, i) => {
      assert.ok(maxDiff(d.embedding, want[i]!) < 1e-5, `${name} input ${i}: max |server − library| ${maxDiff(d.embedding, want[i]!)}`);
      // the adapter trained: its vectors are not the base model's (else the comparison above would prove nothing); a
      // step moves them by 3e-3 to 1e-2 here, the server and the library differ by 1e-7
      assert.ok(maxDiff(want[i]!, want0[i]!) > 1e-4, `${name} input ${i}: the adapter changes the vector (${maxDiff(want[i]!, want0[i]!)})`);
    });
  }
  assert.ok((await c.models.list()).data.some((m) => m.id === ck), 'listed once served');
  f.proc.kill('SIGTERM');
  await f.exit;
});

test('a restart with --max-lora-rank below the job\'s rank: its models are a 400 naming the rank and the flag on every route, not a 404; a high enough one serves them again', { timeout: T }, async () => {
  const low = await startFloe(dir, ['--max-lora-rank', String(RANK / 2)]);
  const c = client(low);
  const ft = job.fine_tuned_model!;
  const ck = `${ft}:ckpt-step-2`;
  const why = (name: string) => `the model '${name}' (fine-tuning job ${job.id}) exists but is not served: its LoRA rank ${RANK} is above ` +
    `this server's --max-lora-rank ${RANK / 2}; restart floe serve with --max-lora-rank ${RANK} or more to serve it`;
  const refused = (name: string) => (e: unknown) => e instanceof OpenAI.BadRequestError && e.param === 'model' && e.code === 'lora_rank_exceeded' &&
    e.message === `400 ${why(name)}`;
  for (const name of [ft, ck]) {
    await assert.rejects(c.models.retrieve(name), refused(name), `retrieve ${name}`);
    await assert.rejects(c.chat.completions.create({ model: name, messages: [{ role: 'user', content: 'the river' }], max_tokens: 2 }), refused(name), `chat ${name}`);
    await assert.rejects(c.completions.create({ model: name, prompt: 'the river', max_tokens: 2 }), refused(name), `completions ${name}`);
    await assert.rejects(c.embeddings.create({ model: name, input: 'the river' }), refused(name), `embeddings ${name}`);
    await assert.rejects(c.responses.create({ model: name, input: 'the river', max_output_tokens: 2 }), refused(name), `responses ${name}`);
  }
  // not served, so not listed (the console offers only what answers); the job itself is untouched; the start said why
  assert.deepEqual((await c.models.list()).data.map((m) => m.id), ['floe-brown']);
  assert.equal((await c.fineTuning.jobs.retrieve(job.id)).status, 'succeeded');
  assert.ok(low.out().includes(`cannot serve ${ft} from ${join(dir, 'jobs', job.id, 'adapter')}: ${why(ft)}`), low.out());
  // a name that no job has is still a 404
  await assert.rejects(c.chat.completions.create({ model: `${ft}x`, messages: [{ role: 'user', content: 'hi' }], max_tokens: 2 }), (e: unknown) => e instanceof OpenAI.NotFoundError);
  low.proc.kill('SIGTERM');
  await low.exit;

  const enough = await startFloe(dir, ['--max-lora-rank', String(RANK)]);
  const c2 = client(enough);
  assert.ok((await c2.models.list()).data.some((m) => m.id === ft), 'served again');
  const e = await c2.embeddings.create({ model: ck, input: 'the river' });
  assert.equal(e.model, ck);
  enough.proc.kill('SIGTERM');
  await enough.exit;
});
