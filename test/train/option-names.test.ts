// finetune() / distill() from the library: every refusal that names CLI flags also names the options they are, through
// one table per function and one wrapper (src/train/option-names.ts). Before, finetune() re-worded only a refused out,
// and a resume of other settings ('trained with --lora-rank 4 ..., this run has --lora-rank 8'), a chat template that
// needs '--train-on-prompt', a contrastive batch that needs a larger '--batch-size' and distill's resume refusals
// ('--kd-ratio', '--on-policy', '--loss') named only flags a library caller cannot pass. The CLI keeps its flag-only text
// and its exit code (2 for a resume, 1 for the others).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { RunSetupError, distill, finetune, type DistillOptions, type FinetuneOptions } from '../../src/index.js';
import { contrastiveObjective } from '../../src/train/contrastive.js';
import { asTrainBackend } from '../../src/train/trainer.js';
import { DISTILL_FLAG_OPTIONS, FINETUNE_FLAG_OPTIONS, flagWording, OptionNamedError, withOptionNames } from '../../src/train/option-names.js';
import { OBJECTIVE_FLAGS, TRAIN_FLAGS } from '../../src/cli/train-args.js';
import { DISTILL_FLAGS } from '../../src/cli/distill.js';
import type { Backend } from '../../src/backend/backend.js';
import { tinyModelDir, writeTrainData } from './fixtures.js';
import { repoPath } from '../repo.js';

const work = mkdtempSync(join(tmpdir(), 'floe-option-names-'));
const model = tinyModelDir();
const data = writeTrainData(work, 6);
const BIN = repoPath('bin/floe.js'); // the built CLI as users run it (npm test builds dist/ first; `npm run build` after a src change): it starts ~0.3 s sooner than src through tsx
const floe = (args: string[]) => spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8' });

/**
 * The refusal as the library sees it: the CLI's text (its cause, matching `cli`, with no option names), then exactly
 * `(<fn>() options: <names>)`; a RunSetupError stays one, a plain Error is an OptionNamedError (still no RunSetupError).
 */
async function refused(p: Promise<unknown>, fn: string, setup: boolean, cli: RegExp, names: string): Promise<void> {
  await assert.rejects(p, (e: Error) => {
    assert.equal(e instanceof RunSetupError, setup, `${setup ? 'a RunSetupError' : 'not a RunSetupError'}: ${e}`);
    if (!setup) assert.ok(e instanceof OptionNamedError, String(e));
    assert.ok(e.cause instanceof Error, `the CLI's text is the cause: ${e}`);
    assert.match(e.cause.message, cli);
    assert.doesNotMatch(e.cause.message, /options:/);
    assert.equal(e.message, `${e.cause.message} (${fn}() options: ${names})`);
    assert.equal(flagWording(e), e.cause);
    return true;
  });
}

/** The CLI's text: the exit code and the flag-only message, without the option names the library adds. */
function cliRefused(r: ReturnType<typeof floe>, code: number, text: RegExp): void {
  assert.equal(r.status, code, r.stderr);
  assert.match(r.stderr, text);
  assert.doesNotMatch(r.stderr, /\(\w+\(\) options/);
}

test('the flag -> option tables cover every flag of floe finetune and floe distill (the CLI\'s own parse tables)', () => {
  const cliOnly = new Set(['json']); // how the CLI prints, no option
  for (const f of Object.keys({ model: 1, ...TRAIN_FLAGS, ...OBJECTIVE_FLAGS })) {
    if (!cliOnly.has(f)) assert.ok(f in FINETUNE_FLAG_OPTIONS, `floe finetune --${f} has no finetune() option in the table`);
  }
  for (const f of Object.keys(DISTILL_FLAGS)) if (!cliOnly.has(f)) assert.ok(f in DISTILL_FLAG_OPTIONS, `floe distill --${f} has no distill() option in the table`);
  // distill's --temperature is the distillation temperature; finetune's is the contrastive objective's
  assert.equal(DISTILL_FLAG_OPTIONS.temperature, 'temperature');
  assert.equal(FINETUNE_FLAG_OPTIONS.temperature, 'objective');
  assert.ok(!('objective' in DISTILL_FLAG_OPTIONS) && !('model' in DISTILL_FLAG_OPTIONS), 'distill() has no objective or model option');
});

test('withOptionNames: flags in the order the message names them, once each; a flag is a whole word; other errors pass as they are', () => {
  // asTrainBackend's refusal (a native backend without training kernels; finetune() / distill() call it)
  const noKernels = (() => { try { asTrainBackend({ name: 'native' } as Backend); } catch (e) { return e; } })() as Error;
  assert.match(noKernels.message, /backend has no training kernels .*; try --backend reference$/);
  const named = withOptionNames(noKernels, 'finetune', FINETUNE_FLAG_OPTIONS) as Error;
  assert.ok(named instanceof OptionNamedError);
  assert.equal(named.message, `${noKernels.message} (finetune() options: backend)`);
  assert.equal(named.cause, noKernels);

  const e = new Error('/tmp/a--seed/x: give --eval-split or --eval, not --eval-split twice; --no-shuffle --json');
  assert.equal((withOptionNames(e, 'finetune', FINETUNE_FLAG_OPTIONS) as Error).message, `${e.message} (finetune() options: evalSplit, eval, shuffle)`);
  // finetune()'s names re-worded inside distill(): from the CLI's text, with distill()'s names
  const t = new RunSetupError('trained with --temperature 2, this run has --temperature 3');
  const inner = withOptionNames(t, 'finetune', FINETUNE_FLAG_OPTIONS) as Error;
  assert.equal(inner.message, `${t.message} (finetune() options: objective)`);
  const outer = withOptionNames(inner, 'distill', DISTILL_FLAG_OPTIONS) as Error;
  assert.ok(outer instanceof RunSetupError);
  assert.equal(outer.message, `${t.message} (distill() options: temperature)`);
  assert.equal(flagWording(outer), t);
  // an error naming no flag, and one not a plain Error / RunSetupError, are the same object
  const plain = new Error('loss became NaN at step 3: lower the learning rate');
  assert.equal(withOptionNames(plain, 'finetune', FINETUNE_FLAG_OPTIONS), plain);
  const range = new RangeError('max seq len 9999 exceeds --max-seq-len');
  assert.equal(withOptionNames(range, 'finetune', FINETUNE_FLAG_OPTIONS), range);
  assert.equal(flagWording(plain), plain);
});

test('finetune(): a resume of other settings names the options (lora.rank, seed, shuffle, batchSize / batchTokens); floe finetune keeps its flags, exit 2', { timeout: 300_000 }, async () => {
  const out = join(work, 'ft-resume');
  const o = (extra: Partial<FinetuneOptions> = {}): FinetuneOptions => ({ model, data, out, maxSteps: 1, batchSize: 2, seed: 5, lora: { rank: 4 }, backend: 'reference', ...extra });
  await finetune(o());
  const again = 'resume with the flags the run was started with \\(a flag left out takes its default\\), or start a new run$';
  await refused(finetune(o({ resume: out, lora: { rank: 8 } })), 'finetune', true,
    new RegExp(`checkpoint-000001: the checkpoint was trained with --lora-rank 4 --lora-alpha 8, this run has --lora-rank 8 --lora-alpha 16: ${again}`), 'lora.rank, lora.alpha');
  await refused(finetune(o({ resume: out, seed: 6 })), 'finetune', true, new RegExp(`trained with --seed 5, this run has --seed 6: ${again}`), 'seed');
  await refused(finetune(o({ resume: out, shuffle: false })), 'finetune', true, new RegExp(`trained with shuffled data \\(no --no-shuffle\\), this run has --no-shuffle: ${again}`), 'shuffle');
  await refused(finetune(o({ resume: out, batchSize: undefined, batchTokens: 64 })), 'finetune', true,
    new RegExp(`trained with --batch-size 2, this run has --batch-tokens 64: ${again}`), 'batchSize, batchTokens');

  const r = floe(['finetune', '--model', model, '--data', data, '--out', out, '--resume', out, '--max-steps', '1', '--batch-size', '2', '--seed', '6',
    '--lora-rank', '4', '--backend', 'reference', '--quiet']);
  cliRefused(r, 2, /checkpoint-000001: the checkpoint was trained with --seed 5, this run has --seed 6: resume with the flags the run was started with \(a flag left out takes its default\), or start a new run\n/);
});

test('finetune(): resuming a pipeline run is refused with the mpirun command line only, no finetune() option (none resumes it); floe finetune the same, exit 2', async () => {
  const out = join(work, 'pipeline-run');
  for (const s of [0, 1]) mkdirSync(join(out, `stage-${s}`, 'checkpoint-000001'), { recursive: true });
  const text = `${out} holds a pipeline run's per-stage checkpoints (2 stages, stage-K/checkpoint-*): resume it with \`mpirun -np 2 floe finetune --pipeline-parallel-size 2 --resume ${out} ...\` and the flags it was started with`;
  await assert.rejects(finetune({ model, data, out, resume: out, maxSteps: 1, backend: 'reference' }), (e: Error) => {
    assert.ok(e instanceof RunSetupError, String(e));
    assert.equal(e.message, text); // before: '... (finetune() options: resume: DIR)', the option the caller had passed
    return true;
  });
  const r = floe(['finetune', '--model', model, '--data', data, '--out', out, '--resume', out, '--max-steps', '1', '--backend', 'reference', '--quiet']);
  assert.equal(r.status, 2, r.stderr);
  assert.ok(r.stderr.includes(`${text}\n`), r.stderr);
});

test('finetune(): a chat template that does not render a prefix of the conversation names trainOnPrompt; floe finetune keeps --train-on-prompt, exit 1', { timeout: 300_000 }, async () => {
  const dir = tinyModelDir();
  const cfgFile = join(dir, 'tokenizer_config.json');
  // the message count at the end: messages[0..k] never renders as a prefix of the whole conversation
  const cfg = JSON.parse(readFileSync(cfgFile, 'utf8')) as Record<string, unknown>;
  writeFileSync(cfgFile, JSON.stringify({ ...cfg, chat_template: '{% for m in messages %}{{ m.role }}: {{ m.content }}\n{% endfor %}[{{ messages|length }}]' }));
  const chat = join(work, 'chat.jsonl');
  writeFileSync(chat, JSON.stringify({ messages: [{ role: 'user', content: 'the cat' }, { role: 'assistant', content: 'sat on a mat' }] }) + '\n');
  const text = 'chat\\.jsonl:1: the chat template does not render messages\\[0\\.\\.1\\] as a prefix of the whole conversation, so assistant tokens cannot be located \\(use --train-on-prompt\\)';
  await refused(finetune({ model: dir, data: chat, out: join(work, 'ft-chat'), maxSteps: 1, backend: 'reference' }), 'finetune', false, new RegExp(`${text}$`), 'trainOnPrompt');

  cliRefused(floe(['finetune', '--model', dir, '--data', chat, '--out', join(work, 'ft-chat-cli'), '--max-steps', '1', '--backend', 'reference', '--quiet']), 1,
    new RegExp(`^floe finetune: .*${text}\n`, 'm'));
});

test('finetune(): a contrastive micro-batch of one pair names batchSize; floe finetune keeps --batch-size, exit 1', { timeout: 300_000 }, async () => {
  const pairs = join(work, 'pairs.jsonl');
  writeFileSync(pairs, ['cat', 'dog', 'hat'].map((w) => JSON.stringify({ query: `the ${w}?`, positive: `the ${w} sat on a mat` })).join('\n') + '\n');
  const text = 'a contrastive micro-batch needs at least 2 documents \\(pairs or negatives\\): raise --batch-size';
  await refused(finetune({ model, data: pairs, out: join(work, 'ft-pairs'), maxSteps: 1, batchSize: 1, objective: contrastiveObjective(), backend: 'reference' }),
    'finetune', false, new RegExp(`^${text}$`), 'batchSize');
  cliRefused(floe(['finetune', '--model', model, '--data', pairs, '--out', join(work, 'ft-pairs-cli'), '--objective', 'contrastive', '--batch-size', '1',
    '--max-steps', '1', '--backend', 'reference', '--quiet']), 1, new RegExp(`^floe finetune: ${text}\n`, 'm'));
});

test('distill(): a resume of other settings names distill()\'s options (kdRatio, onPolicy, loss, lora.rank), not finetune()\'s; floe distill keeps its flags, exit 2', { timeout: 300_000 }, async () => {
  const teacher = tinyModelDir(), student = tinyModelDir();
  const out = join(work, 'kd-resume');
  const o = (extra: Partial<DistillOptions> = {}): DistillOptions => ({ teacher, student, data, out, maxSteps: 1, batchSize: 2, topK: 8, lora: { rank: 4 }, backend: 'reference', ...extra });
  await distill(o());
  const again = 'resume with the flags the run was started with \\(a flag left out takes its default\\), or start a new run$';
  await refused(distill(o({ resume: out, kdRatio: 0.7 })), 'distill', true, new RegExp(`checkpoint-000001: the checkpoint was trained with --kd-ratio 0\\.5, this run has --kd-ratio 0\\.7: ${again}`), 'kdRatio');
  await refused(distill(o({ resume: out, loss: 'jsd' })), 'distill', true, new RegExp(`trained with --loss forward-kl no --beta, this run has --loss jsd --beta 0\\.5: ${again}`), 'loss, beta');
  await refused(distill(o({ resume: out, onPolicy: 0.5 })), 'distill', true,
    new RegExp(`trained with distill "cached-top-k" no --on-policy no --sample-temperature no --max-new-tokens, this run has distill "cached-top-k\\+on-policy" --on-policy 0\\.5 --sample-temperature 1 no --max-new-tokens: ${again}`),
    'onPolicy, sampleTemperature, maxNewTokens');
  // finetune()'s check, re-worded by distill() from the CLI's text: no '(finetune() options: ...)' inside
  await refused(distill(o({ resume: out, lora: { rank: 8 } })), 'distill', true, new RegExp(`trained with --lora-rank 4 --lora-alpha 8, this run has --lora-rank 8 --lora-alpha 16: ${again}`), 'lora.rank, lora.alpha');

  const r = floe(['distill', '--teacher', teacher, '--student', student, '--data', data, '--out', out, '--resume', out, '--max-steps', '1', '--batch-size', '2',
    '--top-k', '8', '--lora-rank', '4', '--kd-ratio', '0.7', '--backend', 'reference', '--quiet']);
  cliRefused(r, 2, /checkpoint-000001: the checkpoint was trained with --kd-ratio 0\.5, this run has --kd-ratio 0\.7: resume with the flags the run was started with \(a flag left out takes its default\), or start a new run\n/);
});
