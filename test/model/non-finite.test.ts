// A model whose output is NaN (a corrupted checkpoint, an overflow) fails with an error that says so, on every
// backend and surface (generate greedy and sampled, speculative verify, embeddings, the server), instead of decoding
// token 0 over and over or answering embeddings of JSON nulls.

import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { APIError } from 'openai';
import { selectBackend } from '../../src/backend/select.js';
import { generate } from '../../src/model/generate.js';
import { Embedder } from '../../src/model/embed.js';
import { openModel } from '../../src/model/open.js';
import { NonFiniteOutputError, Sampler, DEFAULT_SAMPLING } from '../../src/model/sampler.js';
import { verifyDraft } from '../../src/model/speculation.js';
import { finetune } from '../../src/train/trainer.js';
import { client, serverProcs, startFloeServe } from '../serve/floe-process.js';
import { repoPath } from '../repo.js';

const BROWN = repoPath('models/floe-brown');
const dir = mkdtempSync(join(tmpdir(), 'floe-nonfinite-'));
after(() => rmSync(dir, { recursive: true, force: true }));

/** floe-brown with one element of a weight set to NaN (the weight's f32 element `at`). */
function poisoned(name: string, tensor: RegExp, at: number): string {
  const out = join(dir, name);
  cpSync(BROWN, out, { recursive: true });
  const f = join(out, 'model.safetensors');
  const b = readFileSync(f);
  const n = Number(b.readBigUInt64LE(0));
  const header = JSON.parse(b.subarray(8, 8 + n).toString()) as Record<string, { dtype: string; data_offsets: [number, number] }>;
  const key = Object.keys(header).find((k) => tensor.test(k))!;
  assert.equal(header[key]!.dtype, 'F32', `${key} is stored as F32`);
  b.writeFloatLE(Number.NaN, 8 + n + header[key]!.data_offsets[0] + 4 * at);
  writeFileSync(f, b);
  return out;
}

const NAN_MODEL = poisoned('nan-down', /layers\.1\.mlp\.down_proj/, 1000);
const prompt = [1, 400, 300, 500];

test('the sampler refuses NaN / Inf logits, greedy and sampled, on the native and the reference backend', () => {
  for (const backend of [selectBackend('native'), selectBackend('reference')]) {
    const V = 64;
    const nan = new Float32Array(V).fill(Number.NaN);
    const inf = Float32Array.from({ length: V }, (_, i) => (i === 9 ? Infinity : i * 0.01));
    const good = Float32Array.from({ length: V }, (_, i) => Math.sin(i));
    for (const params of [{ ...DEFAULT_SAMPLING, temperature: 0 }, { ...DEFAULT_SAMPLING, temperature: 0.8, seed: 1 }, { ...DEFAULT_SAMPLING, temperature: 1, topK: 5, topP: 0.9, seed: 2 }]) {
      const s = new Sampler(params, V, backend);
      for (const [what, z] of [['NaN', nan], ['+Inf', inf]] as const) {
        assert.throws(() => s.sample(z, null), (e: unknown) => e instanceof NonFiniteOutputError && /logits are not finite/.test(e.message), `${backend.name} ${what} T=${params.temperature}`);
        // the speculative verifier scores the same distribution (the bad row first: it is always scored)
        const rows = new Float32Array(2 * V);
        rows.set(z);
        rows.set(good, V);
        assert.throws(() => verifyDraft(s, null, rows, [3]), NonFiniteOutputError, `${backend.name} verify ${what}`);
      }
      const t = s.sample(good, null); // finite logits still sample
      assert.ok(t >= 0 && t < V);
    }
    // the message names how many and the first
    assert.throws(() => new Sampler({ ...DEFAULT_SAMPLING, temperature: 0 }, V, backend).sample(inf, null), /1 of 64 are NaN or Inf \(token 9: Infinity\)/);
  }
});

test('generate() and floe generate on a checkpoint with a NaN weight: an error naming the cause, exit 1 (native and reference)', async () => {
  for (const backend of ['native', 'reference'] as const) {
    const m = await openModel(NAN_MODEL, { threads: 1, backend });
    for (const sampling of [{ temperature: 0 }, { temperature: 0.7, seed: 3 }]) {
      assert.throws(() => generate(m.model, prompt, { maxTokens: 3, sampling, stopTokenIds: [] }), NonFiniteOutputError, `${backend} ${JSON.stringify(sampling)}`);
    }
    assert.throws(() => generate(m.model, [...prompt, ...prompt], { maxTokens: 3, sampling: { temperature: 0 }, stopTokenIds: [], speculative: 'ngram' }), NonFiniteOutputError);
    const r = spawnSync(process.execPath, [repoPath('bin/floe.js'), 'generate', '--model', NAN_MODEL, '--prompt', 'The man said', '--max-tokens', '3', '--backend', backend, '--threads', '1'], { encoding: 'utf8' });
    assert.equal(r.status, 1, r.stderr);
    assert.match(r.stderr, /floe generate: the model's logits are not finite: 4096 of 4096 are NaN or Inf/);
    assert.equal(r.stdout, '', 'no garbage text');
  }
  // the unpoisoned model decodes (the check has no false positive on the same path)
  const ok = await openModel(BROWN, { threads: 1 });
  assert.equal(generate(ok.model, prompt, { maxTokens: 3, sampling: { temperature: 0 }, stopTokenIds: [] }).outputIds.length, 3);
});

test('a NaN in q_proj, k_proj or v_proj reaches the logits on the native backend too (its attention passes NaN on)', async () => {
  // before, the AVX-512 attention's exp clamp turned a NaN score into e^-87 and decoding went on, plausibly
  for (const proj of ['q', 'k', 'v'] as const) {
    const model = poisoned(`nan-${proj}`, new RegExp(`layers\\.2\\.self_attn\\.${proj}_proj`), 17);
    for (const backend of ['native', 'reference'] as const) {
      const m = await openModel(model, { threads: 1, backend });
      // a one-token prompt (decode rows), then a longer one (prefill tiles), greedy
      for (const ids of [[1], Array.from({ length: 90 }, (_, i) => 300 + i)]) {
        assert.throws(() => generate(m.model, ids, { maxTokens: 2, sampling: { temperature: 0 }, stopTokenIds: [] }), NonFiniteOutputError, `${proj}_proj ${backend} ${ids.length} tokens`);
      }
    }
  }
});

test('finetune on a checkpoint with a NaN weight stops at step 1 saying the model, not the learning rate, gives it', async () => {
  const data = join(dir, 'train.jsonl');
  writeFileSync(data, Array.from({ length: 8 }, (_, i) => JSON.stringify({ text: `The old man walked to the river, time ${i}.` })).join('\n') + '\n');
  for (const full of [false, true]) {
    const out = join(dir, `ft-${full}`);
    await assert.rejects(finetune({ model: NAN_MODEL, data, out, ...(full ? { full: true } : { lora: { rank: 4 } }), maxSteps: 3, batchSize: 2, threads: 1 }),
      (e: unknown) => /loss is NaN at step 1, before any update: .*nan-down as loaded gives non-finite outputs.*the learning rate is not the cause/.test((e as Error).message), `full=${full}`);
  }
  // after an update it is the learning rate's (a finite model, a rate that overflows the weights)
  await assert.rejects(finetune({ model: BROWN, data, out: join(dir, 'ft-lr'), full: true, lr: 1e30, maxSteps: 4, batchSize: 2, threads: 1 }),
    /loss became (NaN|Infinity) at step [2-4]: lower the learning rate/);
});

test('Embedder on a checkpoint with a NaN weight throws instead of returning a vector of NaN', async () => {
  const e = await Embedder.open(NAN_MODEL, { threads: 1 });
  assert.throws(() => e.embed(['The man said']), (err: unknown) => err instanceof NonFiniteOutputError && /hidden states are not finite/.test((err as Error).message));
});

const procs = serverProcs();

test('floe serve on a checkpoint with a NaN weight: completions, chat and embeddings are 500s that say why; the server stays up', async () => {
  const f = await startFloeServe(null, { built: repoPath('dist/src/cli/main.js'), procs, args: ['--model', NAN_MODEL] });
  const c = client(f);
  const why = /logits are not finite/;
  for (const stream of [false, true]) {
    await assert.rejects(async () => {
      const r = await c.completions.create({ model: 'nan-down', prompt: 'The man', max_tokens: 4, stream });
      if (stream) for await (const _ of r as AsyncIterable<unknown>) { /* drain */ }
    }, (e: unknown) => e instanceof APIError && e.status === 500 && why.test(e.message), `completions stream=${stream}`);
  }
  await assert.rejects(c.chat.completions.create({ model: 'nan-down', messages: [{ role: 'user', content: 'hi' }], max_tokens: 4, temperature: 0 }),
    (e: unknown) => e instanceof APIError && e.status === 500 && why.test(e.message));
  await assert.rejects(c.embeddings.create({ model: 'nan-down', input: ['The man', 'a'] }),
    (e: unknown) => e instanceof APIError && e.status === 500 && /hidden states are not finite/.test(e.message));
  assert.equal((await fetch(f.url + '/health')).status, 200);
  f.proc.kill('SIGTERM');
  assert.equal(await f.exit, 0);
});
