// /v1/embeddings as a user meets it: `floe serve --embedding-model` and `--task embed` as subprocesses, driven by the
// official `openai` client; the vectors are compared with the library's Embedder on the same model.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import OpenAI from 'openai';
import { Embedder } from '../../src/model/embed.js';
import { repoPath } from '../repo.js';

const BIN = repoPath('bin/floe.js');
const BUILT = repoPath('dist/src/serve/embeddings-routes.js');
const ROOT = repoPath('');
const EMBED = ROOT + 'models/floe-embed';
const CHAT = ROOT + 'models/floe-brown';
const T = 60_000;
const TEXTS = ['The jury praised the election.', 'a small boat on the river', 'the act of apprehending a criminal', 'Prices rose sharply in the spring.'];

interface Floe { url: string; proc: ChildProcess; out: () => string }
const procs: ChildProcess[] = [];

function startFloe(args: string[]): Promise<Floe> {
  if (!existsSync(BUILT)) throw new Error(`${BUILT} is missing: run \`npm run build\` first (npm test does)`);
  const proc = spawn(process.execPath, [BIN, 'serve', '--port', '0', '--threads', '1', '--no-ui', '--no-batch', '--kv-cache-memory', '64MiB', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  procs.push(proc);
  let out = '';
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`floe serve was not ready in 50 s:\n${out}`)), 50_000);
    const onData = (d: Buffer) => {
      out += d.toString();
      const m = /listening on (http:\/\/\S+)/.exec(out);
      if (m && /model ready in/.test(out)) { clearTimeout(timer); resolve({ url: m[1]!, proc, out: () => out }); }
    };
    proc.stdout!.on('data', onData);
    proc.stderr!.on('data', onData);
    proc.once('exit', (code) => { clearTimeout(timer); reject(new Error(`floe serve exited with ${code}:\n${out}`)); });
  });
}

let both: Floe, only: Floe, lib: Embedder;
before(async () => {
  [both, only, lib] = await Promise.all([
    startFloe(['--model', CHAT, '--model-name', 'chat', '--embedding-model', EMBED]),
    startFloe(['--model', EMBED, '--task', 'embed']),
    Embedder.open(EMBED),
  ]);
}, { timeout: T });
after(() => { for (const p of procs) p.kill('SIGKILL'); });

const client = (f: Floe) => new OpenAI({ baseURL: f.url + '/v1', apiKey: 'none', maxRetries: 0 });

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

test('--embedding-model: the openai client gets the library\'s vectors; usage counts the tokens', { timeout: T }, async () => {
  assert.match(both.out(), /embedding model 'floe-embed' .* ready: 256 dimensions, mean pooling, inputs up to 512 tokens/);
  const want = lib.embed(TEXTS);
  for (const f of [both, only]) {
    const r = await client(f).embeddings.create({ model: 'floe-embed', input: TEXTS, encoding_format: 'float' });
    assert.equal(r.data.length, TEXTS.length);
    r.data.forEach((d, i) => {
      assert.equal(d.index, i);
      assert.ok(maxDiff(d.embedding, want[i]!) < 1e-4, `input ${i}: max |server − library| ${maxDiff(d.embedding, want[i]!)}`);
    });
    assert.equal(r.usage.prompt_tokens, TEXTS.reduce((a, t) => a + lib.encode(t).length, 0));
    // the client's default (base64) decodes to the same floats; token-id input equals the text
    const b = await client(f).embeddings.create({ model: 'floe-embed', input: TEXTS[1]! });
    assert.ok(maxDiff(b.data[0]!.embedding, want[1]!) < 1e-4);
    const ids = await client(f).embeddings.create({ model: 'floe-embed', input: [lib.encode(TEXTS[2]!)], encoding_format: 'float' });
    assert.ok(maxDiff(ids.data[0]!.embedding, want[2]!) < 1e-4);
  }
});

test('--embedding-model: the chat model still embeds under its own name, with other vectors', { timeout: T }, async () => {
  const e = await client(both).embeddings.create({ model: 'floe-embed', input: TEXTS[0]!, encoding_format: 'float' });
  const c = await client(both).embeddings.create({ model: 'chat', input: TEXTS[0]!, encoding_format: 'float' });
  assert.equal(c.model, 'chat');
  assert.equal(c.data[0]!.embedding.length, 256);
  assert.ok(maxDiff(c.data[0]!.embedding, e.data[0]!.embedding) > 1e-2, 'a different model gives a different vector');
  const chat = await client(both).chat.completions.create({ model: 'chat', messages: [{ role: 'user', content: 'hi' }], max_tokens: 2 });
  assert.equal(chat.choices.length, 1);
  const models = (await client(both).models.list()).data.map((m) => m.id);
  assert.deepEqual(models, ['chat', 'floe-embed']);
});

test('dimensions: the model\'s width is accepted, any other is refused (no truncation)', { timeout: T }, async () => {
  const r = await client(only).embeddings.create({ model: 'floe-embed', input: 'x', dimensions: 256, encoding_format: 'float' });
  assert.equal(r.data[0]!.embedding.length, 256);
  await assert.rejects(client(only).embeddings.create({ model: 'floe-embed', input: 'x', dimensions: 64 }),
    (e: unknown) => e instanceof OpenAI.BadRequestError && e.param === 'dimensions');
  await assert.rejects(client(only).embeddings.create({ model: 'floe-embed', input: 'word '.repeat(600) }),
    (e: unknown) => e instanceof OpenAI.BadRequestError && /at most 512/.test(e.message));
});

test('--task embed: generation routes refuse with a reason', { timeout: T }, async () => {
  await assert.rejects(client(only).chat.completions.create({ model: 'floe-embed', messages: [{ role: 'user', content: 'hi' }] }),
    (e: unknown) => e instanceof OpenAI.BadRequestError && /--task embed/.test(e.message));
  await assert.rejects(client(only).completions.create({ model: 'floe-embed', prompt: 'hi', max_tokens: 2 }),
    (e: unknown) => e instanceof OpenAI.BadRequestError && /only \/v1\/embeddings answers/.test(e.message));
});

test('many inputs of one request share engine steps (batched, not one forward each)', { timeout: T }, async () => {
  const steps = async () => Number(/^floe_engine_steps_total (\S+)$/m.exec(await (await fetch(only.url + '/metrics')).text())![1]);
  const inputs = Array.from({ length: 24 }, (_, i) => `sentence number ${i} about ${TEXTS[i % TEXTS.length]}`);
  const s0 = await steps();
  const r = await client(only).embeddings.create({ model: 'floe-embed', input: inputs, encoding_format: 'float' });
  const used = (await steps()) - s0;
  assert.equal(r.data.length, inputs.length);
  assert.ok(used >= 1 && used < inputs.length / 2, `${inputs.length} inputs took ${used} engine steps`);
  const want = lib.embed(inputs);
  r.data.forEach((d, i) => assert.ok(maxDiff(d.embedding, want[i]!) < 1e-4));
});

test('more inputs than --max-num-seqs + --max-queue: a 400 naming the limit (a 429 would be retried in vain); a batch that fits is answered', { timeout: T }, async () => {
  const small = await startFloe(['--model', EMBED, '--task', 'embed', '--max-num-seqs', '2', '--max-queue', '3']);
  try {
    const inputs = (n: number) => Array.from({ length: n }, (_, i) => `sentence number ${i}`);
    const r = await client(small).embeddings.create({ model: 'floe-embed', input: inputs(5), encoding_format: 'float' });
    assert.equal(r.data.length, 5);
    await assert.rejects(client(small).embeddings.create({ model: 'floe-embed', input: inputs(6), encoding_format: 'float' }),
      (e: unknown) => e instanceof OpenAI.BadRequestError && (e.error as { param?: string }).param === 'input' &&
        /'input' holds 6 inputs, but this server takes at most 5 .*--max-num-seqs.*--max-queue/.test(e.message));
  } finally {
    small.proc.kill('SIGKILL');
  }
});
