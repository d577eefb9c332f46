// --offload-ratio / --weights-memory as a user runs them: generate and finetune give the resident run's bytes, and a
// model bigger than the weights budget runs within it (peak RSS bound).

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { writeTrainData } from '../train/fixtures.js';
import { nodeScript, repoPath } from '../repo.js';

const ROOT = repoPath('');
const BIN = `${ROOT}bin/floe.js`; // the built CLI as users run it (npm test builds dist/ first; `npm run build` after a src change): it starts ~0.3 s sooner than src through tsx
const BROWN = `${ROOT}models/floe-brown`;
const work = mkdtempSync(join(tmpdir(), 'floe-offload-cli-'));
after(() => rmSync(work, { recursive: true, force: true }));

function floe(args: string[], env: Record<string, string> = {}) {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', timeout: 120_000, env: { ...process.env, ...env } });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

describe('floe CLI with streamed layers', () => {
  it('generate --offload-ratio / --weights-memory: same tokens and logprobs as resident', () => {
    const ids = Array.from({ length: 6 }, () => 1 + Math.floor(Math.random() * 4000)).join(',');
    const args = ['generate', '--model', BROWN, '--prompt-ids', ids, '--temperature', '0', '--max-tokens', '8', '--logprobs', '3', '--json'];
    // streamed layers are read in the file's row layout, so the resident run they equal bitwise keeps it too
    // (FLOE_R16_REPACK=0); the default resident run decodes f32r16 (another summation order): same tokens, logprobs close
    const a = floe(args, { FLOE_R16_REPACK: '0' });
    const r16 = floe(args);
    const b = floe([...args, '--offload-ratio', '0.5']);
    const c = floe([...args, '--weights-memory', '16.5MB']); // embedding 4.2 MB + 3 staging slots × 2.95 MB + 1 resident layer
    for (const r of [a, r16, b, c]) assert.equal(r.code, 0, r.err);
    const pick = (s: string) => { const j = JSON.parse(s); return [j.output_ids, j.logprobs]; };
    assert.deepEqual(pick(b.out), pick(a.out));
    assert.deepEqual(pick(c.out), pick(a.out));
    assert.deepEqual(pick(r16.out)[0], pick(a.out)[0]);
    const lps = (s: string) => Float64Array.from((pick(s)[1] as { logprob: number }[]).map((p) => p.logprob));
    const [x, y] = [lps(r16.out), lps(a.out)];
    assert.equal(x.length, y.length);
    x.forEach((v, i) => assert.ok(Math.abs(v - y[i]!) <= 1e-4, `logprob ${i}: f32r16 ${v} vs rows ${y[i]}`));
    const bad = floe([...args, '--weights-memory', '5MB']);
    assert.equal(bad.code, 1);
    assert.match(JSON.parse(bad.out).error.message, /below the minimum/);
    assert.equal(floe([...args, '--offload-ratio', '0.5', '--weights-memory', '1GB']).code, 2);
  });

  it('generate --adapter: applied as resident when the plan streams no layer, refused (exit 2) when it streams one', () => {
    const ids = Array.from({ length: 6 }, () => 1 + Math.floor(Math.random() * 4000)).join(',');
    const args = ['generate', '--model', BROWN, '--adapter', `${ROOT}models/floe-brown-tools`, '--prompt-ids', ids, '--temperature', '0', '--max-tokens', '8', '--json'];
    const a = floe(args);
    const b = floe([...args, '--weights-memory', '1GB']);
    for (const r of [a, b]) assert.equal(r.code, 0, r.err);
    assert.deepEqual(JSON.parse(b.out).output_ids, JSON.parse(a.out).output_ids);
    const c = floe([...args, '--offload-ratio', '0.5']);
    assert.equal(c.code, 2);
    assert.match(JSON.parse(c.out).error.message, /--adapter with streamed layers is not supported/);
  });

  it('finetune --offload-ratio: the same loss curve and adapter bytes as resident', () => {
    const data = writeTrainData(work, 6);
    const common = ['finetune', '--model', BROWN, '--data', data, '--max-steps', '2', '--lora-rank', '4', '--seed', '3', '--max-seq-len', '48', '--quiet', '--json'];
    const b = floe([...common, '--out', join(work, 'b'), '--offload-ratio', '0.5', '--checkpoint-activations']);
    const c = floe([...common, '--out', join(work, 'c'), '--checkpoint-activations']);
    for (const r of [b, c]) assert.equal(r.code, 0, r.err);
    const adapter = (d: string) => readFileSync(join(work, d, 'final', 'adapter_model.safetensors'));
    assert.ok(adapter('b').equals(adapter('c')), 'streamed == resident adapter (checkpointed)');
    const loss = (d: string) => readFileSync(join(work, d, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((m) => m.type === 'train').map((m) => m.loss);
    assert.deepEqual(loss('b'), loss('c'));
    assert.equal(floe([...common, '--out', join(work, 'd'), '--full', '--offload-ratio', '0.5']).code, 2);
  });

  it('a model 4× bigger than --weights-memory runs with peak RSS under the budget plus the stated overhead', () => {
    const run = (mode: string) => {
      const r = spawnSync(process.execPath, [...nodeScript('test/model/offload-rss-probe.ts'), join(work, 'big'), mode], { encoding: 'utf8', timeout: 120_000 });
      assert.equal(r.status, 0, r.stderr);
      return (mode === 'make' ? {} : JSON.parse(r.stdout)) as { baseline: number; peak: number; modelBytes: number; budget: number; overhead: number; streamed: number };
    };
    run('make');
    const s = run('stream');
    const resident = run('resident');
    assert.ok(s.modelBytes > 4 * s.budget, `model ${s.modelBytes} vs budget ${s.budget}`);
    assert.ok(s.streamed > 0);
    assert.ok(s.peak - s.baseline <= s.budget + s.overhead, `streamed: RSS grew ${s.peak - s.baseline}, budget ${s.budget} + overhead ${s.overhead}`);
    assert.ok(resident.peak - resident.baseline > s.budget + s.overhead, `resident run grows past the bound (${resident.peak - resident.baseline}): the bound can fail`);
    // --dtype bf16: streamed layers are converted while loading, one tensor at a time; their copies must not pile up
    const c = run('stream-bf16');
    assert.ok(c.modelBytes > 4 * c.budget && c.streamed > 0, `bf16 model ${c.modelBytes} vs budget ${c.budget}, ${c.streamed} layers streamed`);
    assert.ok(c.peak - c.baseline <= c.budget + c.overhead, `streamed bf16: RSS grew ${c.peak - c.baseline}, budget ${c.budget} + overhead ${c.overhead}`);
  });
});

describe('floe serve with streamed layers', () => {
  it('--offload-ratio reaches the engine worker: completions equal the resident server\'s', async () => {
    const { startServer } = await import('../../src/serve/server.js');
    const ask = async (offload: { offloadRatio: number } | undefined): Promise<unknown> => {
      const s = await startServer({ model: BROWN, port: 0, ui: false, dataDir: null, log: () => {}, offload, kvCacheMemory: 64 << 20 });
      try {
        await s.ready;
        const res = await fetch(`${s.url}/v1/completions`, { method: 'POST', headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ model: s.modelName, prompt: 'The old man', max_tokens: 10, temperature: 0, logprobs: 2 }) });
        assert.equal(res.status, 200);
        return (await res.json() as { choices: { text: string; logprobs: unknown }[] }).choices[0];
      } finally {
        await s.close(0);
      }
    };
    // the resident server in the row layout, as streamed layers are read (FLOE_R16_REPACK, read by the engine worker's openModel)
    const streamed = await ask({ offloadRatio: 0.5 });
    const prev = process.env.FLOE_R16_REPACK;
    process.env.FLOE_R16_REPACK = '0';
    try {
      assert.deepEqual(streamed, await ask(undefined));
    } finally {
      if (prev === undefined) delete process.env.FLOE_R16_REPACK;
      else process.env.FLOE_R16_REPACK = prev;
    }
    // the option really reaches the worker's openModel: a budget below the minimum fails the load
    const s = await startServer({ model: BROWN, port: 0, ui: false, dataDir: null, log: () => {}, offload: { weightsMemory: 1 << 20 } });
    await assert.rejects(s.ready, /below the minimum/);
    await s.close(0);
  });
});
