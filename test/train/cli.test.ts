// floe finetune / merge / generate --adapter as a user runs them (subprocesses), and a run killed with SIGKILL
// in the middle of a checkpoint save that resumes from the last complete checkpoint with the same loss curve.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runEach } from '../cli/run-each.js';
import { tinyModelDir, writeTrainData } from './fixtures.js';
import { repoPath } from '../repo.js';

const BIN = repoPath('bin/floe.js'); // the built CLI (npm run build)
const ARGS = [BIN];
const model = tinyModelDir();
const work = mkdtempSync(join(tmpdir(), 'floe-cli-train-'));
const data = writeTrainData(work, 10);

function floe(args: string[], env: Record<string, string> = {}) {
  const r = spawnSync(process.execPath, [...ARGS, ...args], { encoding: 'utf8', timeout: 120_000, env: { ...process.env, ...env } });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

const losses = (out: string) => readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((m) => m.type === 'train').map((m) => [m.step, m.loss]);
const common = ['--model', model, '--data', data, '--max-steps', '4', '--lr', '1e-2', '--batch-size', '2', '--lora-rank', '4', '--save-steps', '1', '--save-total-limit', '0', '--seed', '5', '--backend', 'reference'];

describe('floe finetune (subprocess)', () => {
  it('trains, prints a summary, writes metrics, checkpoints and a PEFT adapter; merge and generate --adapter use it', () => {
    const out = join(work, 'a');
    const r = floe(['finetune', ...common, '--out', out, '--json']);
    assert.equal(r.code, 0, r.err);
    const s = JSON.parse(r.out.trim());
    assert.equal(s.steps, 4);
    assert.match(r.err, /step 4\/4 loss \d+\.\d+ .* tok\/s ETA/);
    assert.equal(losses(out).length, 4);
    assert.ok(existsSync(join(out, 'final', 'adapter_model.safetensors')));
    const merged = join(work, 'merged');
    const m = floe(['merge', '--model', model, '--adapter', join(out, 'final'), '--out', merged]);
    assert.equal(m.code, 0, m.err);
    // eval --adapter scores the base with the adapter applied: the merged model's perplexity, not the base's
    const texts = join(work, 'eval-texts.jsonl');
    writeFileSync(texts, ['the cat sat on a mat.', 'and the dog ran there in the rain.'].map((t) => JSON.stringify({ text: t })).join('\n') + '\n');
    const ev = (...a: string[]) => {
      const r = floe(['eval', '--data', texts, '--json', '--backend', 'reference', ...a]);
      assert.equal(r.code, 0, r.err);
      return JSON.parse(r.out) as { loss: number; adapter: string | null };
    };
    const [eBase, eAdapter, eMerged] = [ev('--model', model), ev('--model', model, '--adapter', join(out, 'final')), ev('--model', merged)];
    assert.equal(eAdapter.adapter, join(out, 'final'));
    assert.ok(Math.abs(eAdapter.loss - eMerged.loss) < 1e-4, `adapter ${eAdapter.loss} vs merged ${eMerged.loss}`);
    assert.ok(Math.abs(eAdapter.loss - eBase.loss) > 1e-3, `the adapter changes the loss (${eAdapter.loss} vs base ${eBase.loss})`);
    // ids only: the random fixture model may emit ids outside the tiny tokenizer, so generate from dirs without one
    for (const f of ['tokenizer.json', 'tokenizer_config.json']) rmSync(join(merged, f));
    const bare = repoPath('test/fixtures/models/gqa_f32');
    const g1 = floe(['generate', '--model', bare, '--adapter', join(out, 'final'), '--prompt-ids', '1,88,100,4', '--temperature', '0', '--max-tokens', '6', '--json', '--backend', 'reference']);
    const g2 = floe(['generate', '--model', merged, '--prompt-ids', '1,88,100,4', '--temperature', '0', '--max-tokens', '6', '--json', '--backend', 'reference']);
    assert.equal(g1.code, 0, g1.err);
    assert.deepEqual(JSON.parse(g1.out).output_ids, JSON.parse(g2.out).output_ids);
  });

  it('--lora-alpha defaults to 2 × --lora-rank', () => {
    const out = join(work, 'alpha');
    const r = floe(['finetune', ...common, '--lora-rank', '3', '--max-steps', '1', '--out', out, '--json']);
    assert.equal(r.code, 0, r.err);
    const cfg = JSON.parse(readFileSync(join(out, 'final', 'adapter_config.json'), 'utf8'));
    assert.deepEqual([cfg.r, cfg.lora_alpha], [3, 6]);
  });

  it('a malformed line fails before training with its line number; bad flags are named', () => {
    const bad = join(work, 'bad.jsonl');
    writeFileSync(bad, '{"text": "the cat"}\n{"prompt": "x", "completion": 7}\n');
    // run() calls in one process (../cli/run-each.ts), not a process each (~1 s of start-up apiece)
    const [r, targets] = runEach([['finetune', '--model', model, '--data', bad, '--out', join(work, 'bad')],
      ['finetune', '--model', model, '--data', data, '--out', join(work, 'x'), '--lora-targets', 'q,zz']]);
    assert.equal(r!.status, 1);
    assert.match(r!.stderr, /bad\.jsonl:2: "completion" must be a string, got number/);
    assert.ok(!existsSync(join(work, 'bad', 'metrics.jsonl')), 'nothing was trained');
    assert.match(targets!.stderr, /LoRA target 'zz' is not one of q,k,v,o,gate,up,down/);
  });

  it('SIGKILL in the middle of a checkpoint save: resume picks the last complete checkpoint and the loss curve is unchanged', async () => {
    const ref = join(work, 'ref');
    assert.equal(floe(['finetune', ...common, '--out', ref, '--quiet']).code, 0);
    const out = join(work, 'killed');
    const child = spawn(process.execPath, [...ARGS, 'finetune', ...common, '--out', out, '--quiet'], { env: { ...process.env, FLOE_TEST_SAVE_PAUSE: '3:20000' }, stdio: 'ignore' });
    // wait until step 3's save is half written (weights and optimizer in its temporary directory), then kill
    const deadline = Date.now() + 60_000;
    for (;;) {
      const tmp = existsSync(out) ? readdirSync(out).find((n) => n.startsWith('.checkpoint-000003.tmp-')) : undefined;
      if (tmp && existsSync(join(out, tmp, 'optimizer.safetensors'))) break;
      if (Date.now() > deadline || child.exitCode !== null) assert.fail('the child never reached the save of step 3');
      await new Promise((r) => setTimeout(r, 50));
    }
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    assert.ok(!existsSync(join(out, 'checkpoint-000003')), 'the interrupted checkpoint never appears');
    assert.ok(existsSync(join(out, 'checkpoint-000002', 'trainer_state.json')));
    const r = floe(['finetune', ...common, '--out', out, '--resume', out]);
    assert.equal(r.code, 0, r.err);
    assert.match(r.err, /resumed from .*checkpoint-000002 at step 2/);
    assert.deepEqual(losses(out), losses(ref));
    assert.ok(!readdirSync(out).some((n) => n.includes('.tmp-')), 'the stale temporary directory is removed');
  });

  it('a resume that leaves out or changes a flag of the run names the flag, the recorded value and the given one (never null)', () => {
    const without = (args: string[], ...flags: string[]) => args.filter((a, i) => !flags.includes(a) && !flags.includes(args[i - 1]!));
    const two = [...without(common, '--max-steps'), '--max-steps', '2'];
    const out = join(work, 'resume-flags');
    assert.equal(floe(['finetune', ...two, '--out', out, '--quiet']).code, 0);
    // the four refusals as run() calls in one process (../cli/run-each.ts), not a process each
    const [left, batch, tokens, shuffle] = runEach([
      ['finetune', ...without(common, '--batch-size', '--lora-rank'), '--out', out, '--resume', out, '--quiet'],
      ['finetune', ...without(common, '--batch-size'), '--out', out, '--resume', out, '--quiet'],
      ['finetune', ...without(common, '--batch-size'), '--batch-tokens', '64', '--out', out, '--resume', out, '--quiet'],
      ['finetune', ...common, '--no-shuffle', '--out', out, '--resume', out, '--quiet'],
    ]).map((x) => ({ code: x.status, err: x.stderr }));
    assert.equal(left!.code, 2, 'a usage error, as other flag mistakes');
    assert.match(left!.err, /checkpoint-000002: the checkpoint was trained with --lora-rank 4 --lora-alpha 8, this run has --lora-rank 8 --lora-alpha 16: resume with the flags the run was started with/);
    assert.match(batch!.err, /the checkpoint was trained with --batch-size 2, this run has --batch-size 1: /);
    assert.match(tokens!.err, /the checkpoint was trained with --batch-size 2, this run has --batch-tokens 64: /);
    assert.match(shuffle!.err, /the checkpoint was trained with shuffled data \(no --no-shuffle\), this run has --no-shuffle: /);
    for (const r of [left!, batch!, tokens!, shuffle!]) assert.doesNotMatch(r.err, /null|undefined/);
    // a resume with nothing left to train (the checkpoint is at --max-steps) finishes and says so
    const done = floe(['finetune', ...two, '--out', out, '--resume', out]);
    assert.equal(done.code, 0, done.err);
    assert.match(done.err, /the checkpoint's step 2 already reaches the run's 2 steps \(--max-steps\): nothing left to train/);

    // --batch-size 1 is the default: giving it or leaving it out is the same run, either way round
    const one = join(work, 'resume-one');
    const bs1 = [...without(two, '--batch-size'), '--batch-size', '1'];
    assert.equal(floe(['finetune', ...bs1, '--out', one, '--quiet']).code, 0);
    const r = floe(['finetune', ...without(common, '--batch-size'), '--out', one, '--resume', one]);
    assert.equal(r.code, 0, r.err);
    assert.match(r.err, /resumed from .*checkpoint-000002 at step 2/);
    // a checkpoint from before the batch size was recorded has null for a left-out --batch-size
    const state = join(one, 'checkpoint-000004', 'trainer_state.json');
    const st = JSON.parse(readFileSync(state, 'utf8'));
    writeFileSync(state, JSON.stringify({ ...st, options: { ...st.options, batchSize: null } }));
    const old = floe(['finetune', ...without(common, '--batch-size', '--max-steps'), '--max-steps', '5', '--batch-size', '1', '--out', one, '--resume', one]);
    assert.equal(old.code, 0, old.err);
    assert.match(old.err, /resumed from .*checkpoint-000004 at step 4/);
  });

  it('bin/floe.js: a refused --out or --resume is a usage error (exit 2, "usage_error" with --json), as other flag mistakes', () => {
    const bin = (args: string[]) => spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 120_000 });
    const out = join(work, 'bin-usage');
    assert.equal(bin(['finetune', ...common, '--max-steps', '1', '--out', out, '--quiet']).status, 0);
    const again = bin(['finetune', ...common, '--out', out, '--json']);
    assert.equal(again.status, 2, again.stderr);
    assert.deepEqual(JSON.parse(again.stdout).error.type, 'usage_error');
    assert.match(JSON.parse(again.stdout).error.message, /bin-usage is not empty .*pass --resume DIR/);
    const seed = bin(['finetune', ...common, '--seed', '6', '--out', out, '--resume', out]);
    assert.equal(seed.status, 2, seed.stderr);
    assert.match(seed.stderr, /^floe finetune: .*the checkpoint was trained with --seed 5, this run has --seed 6: /m);
    const none = bin(['finetune', ...common, '--out', join(work, 'bin-fresh'), '--resume', join(work, 'bin-fresh')]);
    assert.equal(none.status, 2, none.stderr);
    assert.match(none.stderr, /no complete checkpoint to resume from/);
    // a file where --out wants a directory
    writeFileSync(join(work, 'bin-file'), 'x');
    const file = bin(['finetune', ...common, '--out', join(work, 'bin-file')]);
    assert.equal(file.status, 2, file.stderr);
    assert.match(file.stderr, /bin-file: the output path exists and is not a directory/);
    // a failure of the run itself stays 1
    const bad = join(work, 'bin-bad.jsonl');
    writeFileSync(bad, '{"text": 3}\n');
    assert.equal(bin(['finetune', ...common, '--data', bad, '--out', join(work, 'bin-bad')]).status, 1);
  });

  it('a non-empty --out is refused unless --resume continues it or --overwrite clears it', () => {
    const out = join(work, 'again');
    const short = common.map((a, i) => (common[i - 1] === '--max-steps' ? '2' : a));
    assert.equal(floe(['finetune', ...common, '--out', out, '--quiet']).code, 0);
    const before = readFileSync(join(out, 'metrics.jsonl'), 'utf8');
    const listing = readdirSync(out).sort();
    assert.ok(listing.includes('checkpoint-000004'));

    // the two refusals as run() calls in one process (../cli/run-each.ts), not a process each
    const [r, both] = runEach([['finetune', ...short, '--out', out, '--quiet'], ['finetune', ...short, '--out', out, '--overwrite', '--resume', out, '--json']]);
    assert.equal(r!.status, 2, 'a usage error: the command line is to change');
    assert.match(r!.stderr, /again is not empty .*--resume DIR to continue that run or --overwrite to clear it/);
    assert.equal(readFileSync(join(out, 'metrics.jsonl'), 'utf8'), before, 'the earlier metrics are untouched');
    assert.deepEqual(readdirSync(out).sort(), listing);

    assert.equal(both!.status, 2);
    assert.match(JSON.parse(both!.stdout).error.message, /give one of --resume or --overwrite/);

    const o = floe(['finetune', ...short, '--out', out, '--overwrite', '--quiet']);
    assert.equal(o.code, 0, o.err);
    assert.deepEqual(losses(out).map(([step]) => step), [1, 2], 'metrics hold only the new run');
    assert.deepEqual(readdirSync(out).filter((n) => n.startsWith('checkpoint-')).sort(), ['checkpoint-000001', 'checkpoint-000002'], 'the old checkpoints are gone');

    writeFileSync(join(out, 'notes.txt'), 'mine');
    const foreign = floe(['finetune', ...short, '--out', out, '--overwrite', '--quiet']);
    assert.equal(foreign.code, 2);
    assert.match(foreign.err, /--overwrite clears only a finetune output dir, and this one also holds notes\.txt/);
    assert.ok(existsSync(join(out, 'checkpoint-000002')), 'nothing was cleared');
  });
});
