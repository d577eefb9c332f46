// What a killed run leaves behind resumes without loss: metrics.jsonl with a torn last line, the metrics rewrite on
// resume (atomic: a kill there keeps the earlier lines), the final output written whole.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { appendFileSync, cpSync, existsSync, linkSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { referenceBackend } from '../../src/backend/reference.js';
import { finetune, type FinetuneOptions } from '../../src/train/trainer.js';
import { asTrain, tinyModelDir, writeTrainData } from './fixtures.js';
import { repoPath } from '../repo.js';

const be = asTrain(referenceBackend);
const model = tinyModelDir();
const work = mkdtempSync(join(tmpdir(), 'floe-interrupted-'));
const data = writeTrainData(work, 10);

function run(out: string, extra: Partial<FinetuneOptions> = {}): FinetuneOptions {
  return { model, data, out, backendImpl: be, lr: 1e-2, lora: { rank: 4, alpha: 8 }, maxSteps: 4, batchSize: 2, seed: 3, saveSteps: 1, saveTotalLimit: 0, ...extra };
}
const losses = (out: string) => readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { type: string; step: number; loss: number })
  .filter((m) => m.type === 'train').map((m) => [m.step, m.loss]);

/** A run killed after step 2's checkpoint, mid-way through appending step 3's metrics line. */
async function killedAfterStep2(out: string): Promise<void> {
  await finetune(run(out));
  for (const n of ['checkpoint-000003', 'checkpoint-000004', 'final', 'summary.json']) rmSync(join(out, n), { recursive: true, force: true });
  const lines = readFileSync(join(out, 'metrics.jsonl'), 'utf8').split('\n');
  writeFileSync(join(out, 'metrics.jsonl'), lines.slice(0, 2).map((l) => l + '\n').join(''));
  appendFileSync(join(out, 'metrics.jsonl'), lines[2]!.slice(0, 25)); // torn: no newline
}

describe('an interrupted finetune run', () => {
  it('resumes over a torn last metrics line, with the loss curve of an uninterrupted run', async () => {
    const ref = join(work, 'ref');
    await finetune(run(ref));
    const out = join(work, 'torn');
    await killedAfterStep2(out);
    await finetune(run(out, { resume: out }));
    assert.deepEqual(losses(out), losses(ref));
  });

  it('a metrics line broken in the middle is refused naming the file and line, not a bare JSON error', async () => {
    const out = join(work, 'mid');
    await killedAfterStep2(out);
    const text = readFileSync(join(out, 'metrics.jsonl'), 'utf8').split('\n');
    text[0] = text[0]!.slice(0, 10);
    writeFileSync(join(out, 'metrics.jsonl'), text.join('\n') + '\n');
    await assert.rejects(finetune(run(out, { resume: out })), /metrics\.jsonl:1: not a JSON line/);
  });

  it('resume rewrites metrics.jsonl through a new file: the old one is never truncated in place', async () => {
    const out = join(work, 'atomic');
    await killedAfterStep2(out);
    const before = readFileSync(join(out, 'metrics.jsonl'), 'utf8');
    linkSync(join(out, 'metrics.jsonl'), join(work, 'metrics-link'));
    await finetune(run(out, { resume: out }));
    assert.equal(readFileSync(join(work, 'metrics-link'), 'utf8'), before, 'a kill during the rewrite would have found the lines still there');
  });
});

describe('the final output', () => {
  it('a final/ write that fails part-way leaves the previous final/ whole, never a model dir with files missing', async () => {
    const base = join(work, 'base');
    cpSync(model, base, { recursive: true });
    const out = join(work, 'full');
    await finetune(run(out, { model: base, full: true, lora: undefined, maxSteps: 2 }));
    const before = readdirSync(join(out, 'final')).sort();
    assert.ok(before.includes('config.json') && before.includes('tokenizer.json'), before.join(','));
    const weights = readFileSync(join(out, 'final', 'model.safetensors'));
    // the export copies the base's tokenizer files after the weights and config.json: make the last one fail
    mkdirSync(join(base, 'special_tokens_map.json'));
    await assert.rejects(finetune(run(out, { model: base, full: true, lora: undefined, maxSteps: 3, resume: out })), /EISDIR|directory/);
    assert.deepEqual(readdirSync(join(out, 'final')).sort(), before);
    assert.deepEqual(readFileSync(join(out, 'final', 'model.safetensors')), weights, 'the previous final/ is untouched');
    assert.deepEqual(readdirSync(out).filter((n) => n.startsWith('.')), [], 'no temporary directory is left');
  });
});

describe('floe merge', () => {
  it('an export that fails part-way leaves no config.json in a new --out: nothing there loads as a model', async () => {
    const ref = join(work, 'adapter-run');
    await finetune(run(ref, { maxSteps: 1 }));
    const base = join(work, 'merge-base');
    cpSync(model, base, { recursive: true });
    mkdirSync(join(base, 'special_tokens_map.json')); // copied after the weights: the write fails there
    const out = join(work, 'merged');
    const r = spawnSync(process.execPath, [repoPath('bin/floe.js'), 'merge', '--model', base, '--adapter', join(ref, 'final'), '--out', out], { encoding: 'utf8' });
    assert.equal(r.status, 1, r.stderr);
    assert.ok(!existsSync(join(out, 'config.json')), `left: ${existsSync(out) ? readdirSync(out).join(', ') : 'nothing'}`);
  });
});

describe('an output directory that cannot be written', () => {
  it('an --out under a file is a usage error naming --out, not a raw ENOTDIR / EEXIST (finetune, distill)', () => {
    writeFileSync(join(work, 'a-file'), 'x');
    const r = spawnSync(process.execPath, [repoPath('bin/floe.js'), 'finetune', '--model', model, '--data', data, '--max-steps', '1', '--out', join(work, 'a-file', 'sub')], { encoding: 'utf8' });
    assert.equal(r.status, 2, r.stderr);
    assert.match(r.stderr, /a-file\/sub: .*a-file is a file, so the output directory cannot be made under it; choose another --out/);
    // distill checks before its teacher pass (whose cache, OUT.teacher-cache, would fail there with a raw EEXIST)
    const d = spawnSync(process.execPath, [repoPath('bin/floe.js'), 'distill', '--teacher', model, '--student', model, '--data', data, '--max-steps', '1', '--out', join(work, 'a-file', 'sub')], { encoding: 'utf8' });
    assert.equal(d.status, 2, d.stderr);
    assert.match(d.stderr, /a-file is a file, so the output directory cannot be made under it/);
  });

  it('a read-only --out is refused before the model loads (skipped unless root, which can mount a read-only tmpfs)', { skip: process.getuid?.() !== 0 }, (t) => {
    const mnt = join(work, 'ro');
    mkdirSync(mnt);
    if (spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=1m,ro', 'tmpfs', mnt]).status !== 0) { t.skip('cannot mount tmpfs here'); return; }
    try {
      const r = spawnSync(process.execPath, [repoPath('bin/floe.js'), 'finetune', '--model', model, '--data', data, '--max-steps', '1', '--out', mnt], { encoding: 'utf8' });
      assert.equal(r.status, 2, r.stderr);
      assert.match(r.stderr, /the output directory is not writable \(EROFS\); choose another --out/);
    } finally {
      spawnSync('umount', [mnt]);
    }
  });
});

describe('resume on another base', () => {
  it('a base of the same shapes with other weights is refused naming both; a copy of the same base resumes', async () => {
    const out = join(work, 'other-base');
    await finetune(run(out, { maxSteps: 2 }));
    const copy = join(work, 'base-copy');
    cpSync(model, copy, { recursive: true });
    const other = join(work, 'base-other');
    cpSync(model, other, { recursive: true });
    const st = readFileSync(join(other, 'model.safetensors'));
    for (let i = st.length - 4000; i < st.length; i += 4) st[i + 3]! ^= 1; // same shapes, other weights
    writeFileSync(join(other, 'model.safetensors'), st);
    await assert.rejects(finetune(run(out, { model: other, resume: out })), /trained on the base model .*base-other, whose weights differ/);
    const s = await finetune(run(out, { model: copy, resume: out }));
    assert.equal(s.startStep, 2);
  });
});
