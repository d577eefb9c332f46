// Adapter names that would hide another model: `floe serve --lora-modules NAME=DIR` with the base model's name, or a
// name in the fine-tuning jobs' namespace (ft:<base>:floe:…), is a usage error (exit 2); before, the first was served
// and unreachable (requests naming it got the base, /v1/models listed the name twice). At runtime,
// POST /v1/load_lora_adapter refused the base's name but took a job's fine-tuned model name, replacing the job's
// adapter under its name until the next start, and /v1/unload_lora_adapter removed a job's model; both are now a 400
// naming lora_name, and the job's model keeps answering as it did.
// `floe serve` on the built-in model, the official openai client.

import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { cpSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI, { toFile } from 'openai';
import { FloeExited, startFloeServe } from './floe-process.js';
import { repoPath } from '../repo.js';

const BUILT = repoPath('dist/src/platform/jobs/child.js');
const TOOLS = repoPath('models/floe-brown-tools');
const procs: ChildProcess[] = [];
after(() => { for (const p of procs) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL'); });

/** `floe serve ARGS`: its exit code and output, or 'served' when it got as far as serving (then it is killed). */
const serve = (args: string[]): Promise<{ code: number | null | 'served'; out: string }> =>
  startFloeServe(null, { built: BUILT, procs, args }).then(
    (f) => { f.proc.kill('SIGKILL'); return { code: 'served' as const, out: f.out() }; },
    (e: unknown) => { if (e instanceof FloeExited) return { code: e.code, out: e.out }; throw e; });

test('--lora-modules with the base model\'s name or a jobs\' ft: name exits 2 naming the module', { timeout: 60_000 }, async () => {
  for (const [args, re] of [
    [['--lora-modules', `floe-brown=${TOOLS}`], /--lora-modules floe-brown=.*'floe-brown' is the base model's name/],
    [['--model-name', 'base', '--lora-modules', `tools=${TOOLS}`, `base=${TOOLS}`], /--lora-modules base=.*'base' is the base model's name/],
    [['--lora-modules', `ft:floe-brown:floe:x:ftjob-1=${TOOLS}`], /--lora-modules ft:floe-brown:floe:x:ftjob-1=.*fine-tuning jobs' namespace/],
  ] as const) {
    const r = await serve([...args]);
    assert.equal(r.code, 2, `${args.join(' ')}:\n${r.out}`);
    assert.match(r.out, re);
  }
  // another base's ft: name, or the base's name inside another, is an ordinary adapter name
  assert.equal((await serve(['--lora-modules', `ft:other:floe:x:ftjob-1=${TOOLS}`, `floe-brown-tools=${TOOLS}`])).code, 'served');
});

test("load_lora_adapter / unload_lora_adapter on a fine-tuning job's model or checkpoint name is a 400; the job's model keeps answering", { timeout: 120_000 }, async () => {
  const root = mkdtempSync(join(tmpdir(), 'floe-loranames-root-'));
  cpSync(TOOLS, join(root, 'tools'), { recursive: true });
  const floe = await startFloeServe(mkdtempSync(join(tmpdir(), 'floe-loranames-')), { built: BUILT, procs, args: ['--jobs-threads', '1', '--enable-lora-loading', '--lora-root', root, '--lora-modules', `tools=${TOOLS}`] });
  const c = new OpenAI({ baseURL: floe.url + '/v1', apiKey: 'unused', maxRetries: 0 });
  const line = JSON.stringify({ messages: [{ role: 'user', content: 'the river' }, { role: 'assistant', content: 'PINE PINE PINE' }] });
  const train = await c.files.create({ file: await toFile(Buffer.from(`${line}\n${line}\n`), 'train.jsonl'), purpose: 'fine-tune' });
  let job = await c.fineTuning.jobs.create({ model: 'floe-brown', training_file: train.id, seed: 1, hyperparameters: { batch_size: 2, learning_rate_multiplier: 50 }, floe: { max_steps: 3, save_steps: 3, lora_rank: 4 } } as unknown as OpenAI.FineTuning.Jobs.JobCreateParams);
  while (!['succeeded', 'failed', 'cancelled'].includes(job.status)) {
    await new Promise((ok) => setTimeout(ok, 100));
    job = await c.fineTuning.jobs.retrieve(job.id);
  }
  assert.equal(job.status, 'succeeded', JSON.stringify(job.error));
  const ft = job.fine_tuned_model!;
  const ckpt = (await c.fineTuning.jobs.checkpoints.list(job.id)).data[0]!.fine_tuned_model_checkpoint;
  const ask = async (model: string) => (await c.completions.create({ model, prompt: 'the river', max_tokens: 8, temperature: 0 })).choices[0]!.text;
  const before = await ask(ft);
  assert.notEqual(before, await ask('tools'), 'the tools adapter answers otherwise, so a replaced job model would show');
  const is400 = (re: RegExp) => (e: unknown) => e instanceof OpenAI.BadRequestError && e.param === 'lora_name' && re.test(e.message);
  for (const name of [ft, ckpt, `ft:floe-brown:floe::ftjob-0123`]) {
    await assert.rejects(c.post('/load_lora_adapter', { body: { lora_name: name, lora_path: 'tools' } }), is400(/fine-tuning jobs' namespace/), name);
  }
  await assert.rejects(c.post('/unload_lora_adapter', { body: { lora_name: ft } }), is400(/fine-tuning job's model or checkpoint/));
  await assert.rejects(c.post('/load_lora_adapter', { body: { lora_name: 'floe-brown', lora_path: 'tools' } }), is400(/base model's name/));
  assert.equal(await ask(ft), before, "the job's model still answers with its own adapter");
  const models = (await c.models.list()).data as unknown as Array<{ id: string; root: string }>;
  assert.match(models.find((m) => m.id === ft)!.root, new RegExp(`jobs/${job.id}/adapter$`));
  // an ordinary name still loads and unloads
  await c.post('/load_lora_adapter', { body: { lora_name: 'mine', lora_path: 'tools' } });
  assert.equal(await ask('mine'), await ask('tools'));
  await c.post('/unload_lora_adapter', { body: { lora_name: 'mine' } });
  floe.proc.kill('SIGTERM');
  await floe.exit;
});
