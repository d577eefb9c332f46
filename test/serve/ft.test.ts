// The fine-tuning jobs API through `floe serve` on the built-in model with the official openai client: upload →
// job → events → checkpoints → succeeded → the ft: model answers at once (equal to the adapter run in-process);
// malformed JSONL → 400 with the line; unknown model / file → 404; cancel; kill -9 mid-save → resumes and succeeds.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import OpenAI, { toFile } from 'openai';
import { startFloeServe, type Floe } from './floe-process.js';
import { client, poll, terminal, type Job } from './ft-helpers.js';
import { Engine } from '../../src/engine/engine.js';
import { readPeftAdapter } from '../../src/model/adapter.js';
import { openModel } from '../../src/model/open.js';
import { genReq } from '../engine/helpers.js';
import { repoPath } from '../repo.js';

const BUILT = repoPath('dist/src/platform/jobs/child.js');
const MODEL = repoPath('models/floe-brown');
const T = 120_000;

const procs: ChildProcess[] = [];

/** `floe serve` on the built-in model (jobs' trainer on 1 thread); resolves once the model is ready. */
const startFloe = (dataDir: string, env: Record<string, string> = {}): Promise<Floe> =>
  startFloeServe(dataDir, { built: BUILT, procs, args: ['--jobs-threads', '1'], env });

type ApiError = InstanceType<typeof OpenAI.APIError>;

/** Every event, newest first, walked through the cursor `limit` at a time. */
async function allEvents(c: OpenAI, id: string, limit = 4): Promise<OpenAI.FineTuning.Jobs.FineTuningJobEvent[]> {
  const out: OpenAI.FineTuning.Jobs.FineTuningJobEvent[] = [];
  let after: string | undefined;
  for (;;) {
    const page = await c.fineTuning.jobs.listEvents(id, { limit, ...(after ? { after } : {}) });
    out.push(...page.data);
    if (!(page as unknown as { has_more: boolean }).has_more) return out;
    after = page.data.at(-1)!.id;
  }
}

// fresh random data: chat and prompt/completion lines over a small vocabulary (FT_SEED=N replays a run's data)
const WORDS = ['the', 'river', 'old', 'man', 'said', 'city', 'house', 'was', 'in', 'a', 'long', 'night', 'came', 'from', 'we'];
const seed = process.env.FT_SEED ? Number(process.env.FT_SEED) : Math.floor(Math.random() * 1e9);
let s0 = seed;
const r = () => { s0 = (Math.imul(s0, 1103515245) + 12345) & 0x7fffffff; return s0 / 2 ** 31; };
const sentence = () => Array.from({ length: 2 + Math.floor(r() * 5) }, () => WORDS[Math.floor(r() * WORDS.length)]).join(' ');
const example = (i: number) => i % 3 === 2
  ? { prompt: `${sentence()}:`, completion: ` ${sentence()}` }
  : { messages: [{ role: 'user', content: sentence() }, { role: 'assistant', content: `well, ${sentence()}` }] };
const trainJsonl = Array.from({ length: 24 }, (_, i) => JSON.stringify(example(i))).join('\n') + '\n';
const validJsonl = Array.from({ length: 4 }, (_, i) => JSON.stringify(example(i))).join('\n') + '\n';
const STEPS = 8;
const SAVE = 2;
/** The job every run here trains (the kill -9 test repeats it and must reproduce its losses). */
const jobBody = (training_file: string, validation_file: string) => ({
  model: 'floe-brown', training_file, validation_file, suffix: 'demo', seed: 1234,
  hyperparameters: { batch_size: 4, learning_rate_multiplier: 10 },
  floe: { lora_rank: 4, lora_alpha: 8, lora_targets: ['q', 'v', 'up'], max_steps: STEPS, save_steps: SAVE },
}) as unknown as OpenAI.FineTuning.Jobs.JobCreateParams;

let floe: Floe;
const floeDir = mkdtempSync(join(tmpdir(), 'floe-ft-'));
let reference: { losses: string; job: Job } | null = null;

before(async () => {
  floe = await startFloe(floeDir, { FLOE_JOBS_TEST_STEP_MS: '30' });
});
after(() => {
  for (const p of procs) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
});

test(`upload, job, events, checkpoints, succeeded; the ft: model answers at once like the adapter in-process (seed ${seed})`, { timeout: T }, async () => {
  const c = client(floe);
  const train = await c.files.create({ file: await toFile(Buffer.from(trainJsonl), 'train.jsonl'), purpose: 'fine-tune' });
  const valid = await c.files.create({ file: await toFile(Buffer.from(validJsonl), 'valid.jsonl'), purpose: 'fine-tune' });
  assert.equal(train.purpose, 'fine-tune');
  assert.ok((await c.files.list({ purpose: 'fine-tune' })).data.some((f) => f.id === train.id));
  const created = await c.fineTuning.jobs.create(jobBody(train.id, valid.id));
  assert.match(created.id, /^ftjob-/);
  assert.ok(['validating_files', 'queued', 'running'].includes(created.status), created.status);
  assert.deepEqual(created.hyperparameters, { n_epochs: 'auto', batch_size: 4, learning_rate_multiplier: 10 });
  const seen = new Set<string>([created.status]);
  const job = await poll(c, created.id, (j) => { seen.add(j.status); return terminal(j); });
  assert.equal(job.status, 'succeeded', JSON.stringify(job.error));
  assert.ok(seen.has('running'), `statuses seen: ${[...seen].join(', ')}`);
  assert.equal(job.fine_tuned_model, `ft:floe-brown:floe:demo:${job.id}`);
  // max_steps 8 over 24 examples in batches of 4 (6 steps an epoch) is 1.33 epochs ('auto' alone would have been 5)
  assert.deepEqual(job.hyperparameters, { n_epochs: 1.33, batch_size: 4, learning_rate_multiplier: 10 });
  assert.equal(job.error, null);
  assert.ok(job.finished_at! >= job.created_at);

  // events: newest first, the cursor walks each once, one metrics event per step
  const events = await allEvents(c, job.id);
  const all = (await c.fineTuning.jobs.listEvents(job.id, { limit: 1000 })).data;
  assert.deepEqual(events.map((e) => e.id), all.map((e) => e.id));
  const msgs = events.map((e) => e.message).reverse();
  assert.match(msgs[0]!, /^Validating training file: /);
  for (const m of ['Files validated, moving job to queued state', 'Fine-tuning job started', 'The job has successfully completed']) assert.ok(msgs.includes(m), m);
  const stepEvents = events.filter((e) => e.type === 'metrics' && (e.data as { train_loss?: number }).train_loss !== undefined).reverse();
  assert.deepEqual(stepEvents.map((e) => (e.data as { step: number }).step), Array.from({ length: STEPS }, (_, i) => i + 1));
  const trainLoss = new Map(stepEvents.map((e) => [(e.data as { step: number }).step, (e.data as { train_loss: number }).train_loss]));
  // it learns: the held-out loss (the same validation file at every save) falls from the first save to the last; the
  // train losses are of different batches, so one step's can sit above the first's (8.708 at step 1, 8.796 at step 8
  // for seed 750253615) while the model improves
  const validLoss = events.filter((e) => e.type === 'metrics' && (e.data as { valid_loss?: number }).valid_loss !== undefined).reverse()
    .map((e) => (e.data as { valid_loss: number }).valid_loss);
  assert.ok(validLoss.length >= STEPS / SAVE, `a validation loss at every save: ${validLoss.length}`);
  assert.ok(validLoss.at(-1)! < validLoss[0]!, `validation loss fell: ${validLoss.map((x) => x.toFixed(3)).join(' ')} (train ${[...trainLoss.values()].map((x) => x.toFixed(3)).join(' ')})`);
  assert.equal(job.trained_tokens, (stepEvents.at(-1)!.data as { total_tokens: number }).total_tokens);

  // checkpoints: the last three saves (the trainer keeps three), newest first, with their step's losses
  const cks = (await c.fineTuning.jobs.checkpoints.list(job.id, { limit: 100 })).data;
  assert.deepEqual(cks.map((k) => k.step_number), [8, 6, 4, 2]);
  for (const k of cks) {
    assert.equal(k.metrics.train_loss, trainLoss.get(k.step_number));
    assert.equal(typeof k.metrics.valid_loss, 'number', 'validation loss at every save');
    assert.equal(k.fine_tuned_model_checkpoint, `${job.fine_tuned_model}:ckpt-step-${k.step_number}`);
  }
  const page = await c.fineTuning.jobs.checkpoints.list(job.id, { limit: 2, after: cks[1]!.id });
  assert.deepEqual(page.data.map((k) => k.step_number), [4, 2]);
  // a cursor that names nothing in the list is a 404, not the first page again
  const stale = (id: string) => (e: unknown) => e instanceof OpenAI.NotFoundError && e.param === 'after' && e.message.includes(`'${id}'`);
  await assert.rejects(c.fineTuning.jobs.checkpoints.list(job.id, { after: 'ftckpt-nope' }), stale('ftckpt-nope'));
  await assert.rejects(c.fineTuning.jobs.listEvents(job.id, { after: 'ftevent-nope' }), stale('ftevent-nope'));
  await assert.rejects(c.fineTuning.jobs.list({ after: 'ftjob-nope' }), stale('ftjob-nope'));

  // result file: step metrics CSV, one row per step
  assert.equal(job.result_files.length, 1);
  const csv = await (await c.files.content(job.result_files[0]!)).text();
  const rows = csv.trim().split('\n');
  assert.equal(rows[0], 'step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy');
  assert.deepEqual(rows.slice(1).map((l) => Number(l.split(',')[1])), [...trainLoss.values()]);
  reference = { losses: rows.slice(1).map((l) => l.split(',').slice(0, 2).join(',')).join('\n'), job };

  // served at once: listed with the base as parent, and its answers equal the adapter applied in-process
  const models = (await c.models.list()).data as unknown as Array<{ id: string; parent: string | null; root: string }>;
  const card = models.find((m) => m.id === job.fine_tuned_model);
  assert.ok(card, `listed in /v1/models: ${models.map((m) => m.id).join(', ')}`);
  assert.equal(card.parent, 'floe-brown');
  const chat = await c.chat.completions.create({ model: job.fine_tuned_model!, messages: [{ role: 'user', content: sentence() }], max_tokens: 8, temperature: 0 });
  assert.equal(chat.model, job.fine_tuned_model);
  assert.ok(chat.choices[0]!.message.content !== null);

  const { model } = await openModel(MODEL, { threads: 1 });
  const adapter = readPeftAdapter(card.root, model.config);
  assert.deepEqual(Object.keys(adapter.layers[0]!).sort(), ['q', 'up', 'v'], 'the job\'s lora_targets');
  assert.equal(adapter.config.rank, 4);
  assert.ok(adapter.layers.every((l) => Object.values(l).every((p) => p.b.some((x) => x !== 0))), 'the adapter trained (B is no longer zero)');
  const engine = new Engine(model, null, { kvDtype: 'f32', kvCacheMemory: 8 << 20 });
  engine.loadAdapter('ref', card.root);
  for (let i = 0; i < 3; i++) {
    const prompt = Array.from({ length: 4 + i }, () => 10 + Math.floor(r() * 3000));
    const got: OpenAI.Completion = await c.completions.create({ model: job.fine_tuned_model!, prompt, max_tokens: 6, temperature: 0, ignore_eos: true, return_token_ids: true } as OpenAI.CompletionCreateParamsNonStreaming);
    engine.add(genReq(`r${i}`, prompt, { maxTokens: 6, ignoreEos: true, adapter: 'ref' }));
    const want: number[] = [];
    while (engine.hasWork) for (const o of engine.step()) if (o.kind === 'generate') want.push(...o.tokenIds);
    assert.deepEqual((got.choices[0] as unknown as { token_ids: number[] }).token_ids, want, `prompt ${i}`);
  }

  // an intermediate checkpoint is a model too (OpenAI's ckpt-step-N name), served on first use like its adapter in-process
  const ckName = `${job.fine_tuned_model}:ckpt-step-4`;
  const ckDir = join(floeDir, 'jobs', job.id, 'run', 'checkpoint-000004');
  engine.loadAdapter('ck', ckDir);
  const prompt = Array.from({ length: 5 }, () => 10 + Math.floor(r() * 3000));
  const fromCk = await Promise.all([0, 1].map(() => c.completions.create({ model: ckName, prompt, max_tokens: 6, temperature: 0, ignore_eos: true, return_token_ids: true } as OpenAI.CompletionCreateParamsNonStreaming)));
  engine.add(genReq('ck', prompt, { maxTokens: 6, ignoreEos: true, adapter: 'ck' }));
  const wantCk: number[] = [];
  while (engine.hasWork) for (const o of engine.step()) if (o.kind === 'generate') wantCk.push(...o.tokenIds);
  for (const got of fromCk) assert.deepEqual((got.choices[0] as unknown as { token_ids: number[] }).token_ids, wantCk, 'the checkpoint adapter');
  assert.equal(fromCk[0]!.model, ckName);
  const ckChat = await c.chat.completions.create({ model: ckName, messages: [{ role: 'user', content: sentence() }], max_tokens: 4, temperature: 0 });
  assert.equal(ckChat.model, ckName);
  assert.ok((await c.models.list()).data.some((m) => m.id === ckName), 'listed once served');
  // step 2 was saved but rotated away (the trainer keeps 3); a step never saved; another job's name
  for (const [name, re] of [[`${job.fine_tuned_model}:ckpt-step-2`, /was removed \(the trainer keeps its last 3 checkpoints; on disk: steps 4, 6, 8\)/],
    [`${job.fine_tuned_model}:ckpt-step-5`, /has no checkpoint at step 5/], [`ft:floe-brown:floe:other:${job.id}:ckpt-step-4`, /does not exist/]] as const) {
    await assert.rejects(c.completions.create({ model: name, prompt: 'the', max_tokens: 2 }), (e: ApiError) => e.status === 404 && re.test(e.message), name);
  }
});

test('malformed fine-tune JSONL is refused at upload with the line and the reason', { timeout: T }, async () => {
  const c = client(floe);
  const lines = trainJsonl.trim().split('\n').slice(0, 5);
  const bad = async (at: number, text: string, re: RegExp) => {
    const copy = [...lines];
    copy[at] = text;
    await assert.rejects(c.files.create({ file: await toFile(Buffer.from(copy.join('\n')), 'bad.jsonl'), purpose: 'fine-tune' }),
      (e: ApiError) => e.status === 400 && re.test(e.message) && (e.error as { code?: string }).code === 'invalid_file', re.source);
  };
  await bad(2, '{"messages": [{"role": "user", "content": "hi"}', /line 3: invalid JSON/);
  await bad(1, '{"messages": [{"role": "user", "content": "hi"}]}', /line 2: "messages" has no assistant message/);
  await bad(4, '{"prompt": "a"}', /line 5: "prompt" without "completion"/);
  await bad(0, '{"input": "a"}', /line 1: expected "text", "prompt"\+"completion" or "messages"/);
  await bad(3, '[1, 2]', /line 4: expected a JSON object/);
  await assert.rejects(c.files.create({ file: await toFile(Buffer.from(trainJsonl), 'x.jsonl'), purpose: 'assistants' }),
    (e: ApiError) => e.status === 400 && /purpose must be one of 'batch', 'fine-tune'/.test(e.message));
});

test('unknown model, file or job → 404; a batch file or bad hyperparameters → 400', { timeout: T }, async () => {
  const c = client(floe);
  const train = await c.files.create({ file: await toFile(Buffer.from(trainJsonl), 'train.jsonl'), purpose: 'fine-tune' });
  const is = (status: number, re: RegExp) => (e: ApiError) => e.status === status && re.test(e.message);
  await assert.rejects(c.fineTuning.jobs.create({ model: 'gpt-4o-mini', training_file: train.id }), is(404, /the model 'gpt-4o-mini' does not exist .* fine-tunes 'floe-brown'/));
  await assert.rejects(c.fineTuning.jobs.create({ model: 'floe-brown', training_file: 'file-nope' }), is(404, /no file with id 'file-nope'/));
  await assert.rejects(c.fineTuning.jobs.create({ model: 'floe-brown', training_file: train.id, validation_file: 'file-nope2' }), is(404, /file-nope2/));
  await assert.rejects(c.fineTuning.jobs.retrieve('ftjob-nope'), is(404, /no fine-tuning job with id 'ftjob-nope'/));
  await assert.rejects(c.fineTuning.jobs.listEvents('ftjob-nope'), is(404, /ftjob-nope/));
  await assert.rejects(c.fineTuning.jobs.cancel('ftjob-nope'), is(404, /ftjob-nope/));
  const batchLine = JSON.stringify({ custom_id: 'a', method: 'POST', url: '/v1/chat/completions', body: {} });
  const batchFile = await c.files.create({ file: await toFile(Buffer.from(batchLine), 'b.jsonl'), purpose: 'batch' });
  await assert.rejects(c.fineTuning.jobs.create({ model: 'floe-brown', training_file: batchFile.id }), is(400, /purpose 'batch'; training_file needs purpose 'fine-tune'/));
  await assert.rejects(c.fineTuning.jobs.create({ model: 'floe-brown', training_file: train.id, hyperparameters: { n_epochs: 0 } }), is(400, /hyperparameters.n_epochs must be 'auto' or an integer/));
  await assert.rejects(c.fineTuning.jobs.create({ model: 'floe-brown', training_file: train.id, floe: { lora_targets: ['zz'] } } as unknown as OpenAI.FineTuning.Jobs.JobCreateParams), is(400, /floe.lora_targets: LoRA target 'zz'/));
  // the server's --max-lora-rank (default 64): refused at create, not after training, when the adapter would not serve
  const jobs = (await c.fineTuning.jobs.list()).data.length;
  await assert.rejects(c.fineTuning.jobs.create({ model: 'floe-brown', training_file: train.id, floe: { lora_rank: 65 } } as unknown as OpenAI.FineTuning.Jobs.JobCreateParams), is(400, /floe.lora_rank 65 is above this server's --max-lora-rank 64/));
  assert.equal((await c.fineTuning.jobs.list()).data.length, jobs, 'no job was created');
});

test('cancel: a running job stops its trainer and ends cancelled; a queued one never starts; list pages newest first', { timeout: T }, async () => {
  const c = client(floe);
  const train = await c.files.create({ file: await toFile(Buffer.from(trainJsonl), 'train.jsonl'), purpose: 'fine-tune' });
  const long = { model: 'floe-brown', training_file: train.id, floe: { max_steps: 500, save_steps: 5 } } as unknown as OpenAI.FineTuning.Jobs.JobCreateParams;
  const a = await c.fineTuning.jobs.create(long);
  const b = await c.fineTuning.jobs.create(long);
  await poll(c, a.id, (j) => j.status === 'running');
  const firstStep = async () => { for (;;) { if ((await allEvents(c, a.id, 100)).some((e) => e.type === 'metrics')) return; await new Promise((ok) => setTimeout(ok, 50)); } };
  await firstStep();
  assert.equal((await c.fineTuning.jobs.retrieve(b.id)).status, 'queued', 'one job at a time');
  // a checkpoint of the running job answers as a model (its newest, so the trainer's rotation leaves it on disk)
  let ck: string | undefined;
  while (!(ck = (await c.fineTuning.jobs.checkpoints.list(a.id, { limit: 1 })).data[0]?.fine_tuned_model_checkpoint)) await new Promise((ok) => setTimeout(ok, 50));
  assert.match(ck, new RegExp(`^ft:floe-brown:floe::${a.id}:ckpt-step-\\d+$`));
  const during = await c.completions.create({ model: ck, prompt: 'the river', max_tokens: 3, temperature: 0 });
  assert.equal(during.model, ck);
  assert.equal((await c.fineTuning.jobs.retrieve(a.id)).status, 'running');
  const list = await c.fineTuning.jobs.list({ limit: 2 });
  assert.deepEqual(list.data.map((j) => j.id), [b.id, a.id]);
  const next = await c.fineTuning.jobs.list({ limit: 100, after: a.id });
  assert.ok(!next.data.some((j) => j.id === a.id || j.id === b.id));

  const db = new Database(join(floeDir, 'floe.db'), { readonly: true });
  const pid = (db.prepare('SELECT child_pid FROM ft_jobs WHERE id = ?').get(a.id) as { child_pid: number }).child_pid;
  db.close();
  assert.ok(existsSync(`/proc/${pid}`), 'the trainer runs in its own process');
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  assert.equal(Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16]), 10, 'niced');
  assert.match(readFileSync(`/proc/${pid}/cmdline`, 'utf8'), /jobs\/child\.js/);
  const cancelled = await c.fineTuning.jobs.cancel(a.id);
  assert.equal(cancelled.status, 'cancelled');
  assert.ok(!existsSync(`/proc/${pid}`), 'the trainer process is gone');
  const n = (await allEvents(c, a.id, 100)).length;
  await assert.rejects(c.fineTuning.jobs.cancel(a.id), (e: ApiError) => e.status === 409 && /is cancelled/.test(e.message));
  // the queued job starts next; cancelling it stops it too
  await poll(c, b.id, (j) => j.status === 'running');
  assert.equal((await c.fineTuning.jobs.cancel(b.id)).status, 'cancelled');
  await new Promise((ok) => setTimeout(ok, 300));
  assert.equal((await allEvents(c, a.id, 100)).length, n, 'nothing happens to a cancelled job afterwards');
  assert.equal((await c.fineTuning.jobs.retrieve(a.id)).status, 'cancelled');
  // a queued job cancelled before it starts
  const q1 = await c.fineTuning.jobs.create(long);
  const q2 = await c.fineTuning.jobs.create(long);
  await poll(c, q2.id, (j) => j.status === 'queued');
  assert.equal((await c.fineTuning.jobs.cancel(q2.id)).status, 'cancelled');
  await c.fineTuning.jobs.cancel(q1.id);
  assert.ok(!(await allEvents(c, q2.id, 100)).some((e) => e.message === 'Fine-tuning job started'));
});

test('kill -9 of the server and its trainer mid-save, restart: the half-written checkpoint is dropped, the job resumes from the last complete one (not step 0), succeeds with the same losses, and is served after another restart', { timeout: T }, async () => {
  assert.ok(reference, 'needs the first test');
  const dir = mkdtempSync(join(tmpdir(), 'floe-ft-kill-'));
  // the trainer stalls inside the save of step 2·SAVE (weights and optimizer written, state not yet): a window to kill it
  const f1 = await startFloe(dir, { FLOE_TEST_SAVE_PAUSE: `${2 * SAVE}:20000` });
  const c1 = client(f1);
  const train = await c1.files.create({ file: await toFile(Buffer.from(trainJsonl), 'train.jsonl'), purpose: 'fine-tune' });
  const valid = await c1.files.create({ file: await toFile(Buffer.from(validJsonl), 'valid.jsonl'), purpose: 'fine-tune' });
  const job = await c1.fineTuning.jobs.create(jobBody(train.id, valid.id));
  const run = join(dir, 'jobs', job.id, 'run');
  const half = new RegExp(`^\\.checkpoint-0+${2 * SAVE}\\.tmp-`);
  while (!(existsSync(run) && readdirSync(run).some((n) => half.test(n)))) await new Promise((ok) => setTimeout(ok, 30));
  const db = new Database(join(dir, 'floe.db'), { readonly: true });
  const row = db.prepare('SELECT status, child_pid FROM ft_jobs WHERE id = ?').get(job.id) as { status: string; child_pid: number };
  db.close();
  assert.equal(row.status, 'running');
  f1.proc.kill('SIGKILL');
  process.kill(row.child_pid, 'SIGKILL');
  await f1.exit;
  assert.deepEqual(readdirSync(run).filter((n) => n.startsWith('checkpoint-')), [`checkpoint-${String(SAVE).padStart(6, '0')}`], 'one complete checkpoint, one half-written');

  const f2 = await startFloe(dir);
  const c2 = client(f2);
  const end = await poll(c2, job.id, terminal);
  assert.equal(end.status, 'succeeded', JSON.stringify(end.error));
  const events = (await c2.fineTuning.jobs.listEvents(job.id, { limit: 1000 })).data;
  const resumed = events.find((e) => /^Resuming from the checkpoint at step \d+ after a restart$/.test(e.message));
  assert.ok(resumed, events.map((e) => e.message).join('\n'));
  const from = (resumed.data as { resumed_from_step: number }).resumed_from_step;
  assert.equal(from, SAVE, 'resumed from the last complete checkpoint');
  assert.ok(!readdirSync(run).some((n) => half.test(n)), 'the half-written checkpoint was removed');
  assert.ok(events.some((e) => new RegExp(`^resumed from .*checkpoint-0+${from} at step ${from}$`).test(e.message)), 'the trainer restored that checkpoint');
  const created = events.find((e) => e.message.startsWith('New fine-tuned model created'))!;
  assert.equal((created.data as { start_step: number }).start_step, from, 'the second trainer started at the checkpoint, not at step 0');
  const csv = await (await c2.files.content(end.result_files[0]!)).text();
  const losses = csv.trim().split('\n').slice(1).map((l) => l.split(',').slice(0, 2).join(',')).join('\n');
  assert.equal(losses, reference.losses, 'exact resume: the same losses as the uninterrupted job');
  const chat = await c2.chat.completions.create({ model: end.fine_tuned_model!, messages: [{ role: 'user', content: 'the river' }], max_tokens: 4, temperature: 0 });
  assert.equal(chat.model, end.fine_tuned_model);

  f2.proc.kill('SIGTERM');
  await f2.exit;
  const f3 = await startFloe(dir);
  const c3 = client(f3);
  const ids = (await c3.models.list()).data.map((m) => m.id);
  assert.ok(ids.includes(end.fine_tuned_model!), `re-registered at start: ${ids.join(', ')}`);
  const again = await c3.chat.completions.create({ model: end.fine_tuned_model!, messages: [{ role: 'user', content: 'the river' }], max_tokens: 4, temperature: 0 });
  assert.equal(again.choices[0]!.message.content, chat.choices[0]!.message.content);
  f3.proc.kill('SIGTERM');
  await f3.exit;
});

