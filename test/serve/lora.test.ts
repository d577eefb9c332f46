// Multi-LoRA over HTTP with the official `openai` client: adapters listed in /v1/models with their parent,
// selected by the request's model, loaded and unloaded at runtime inside --lora-root only.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import { Engine } from '../../src/engine/engine.js';
import { writePeftAdapter } from '../../src/formats/peft.js';
import type { LoraAdapter } from '../../src/model/lora.js';
import type { LlamaModel } from '../../src/model/llama.js';
import { createApp } from '../../src/serve/app.js';
import { startServer } from '../../src/serve/server.js';
import { fixtureModel, genReq, rand, randomPrompt, runAll } from '../engine/helpers.js';
import { merged, randomAdapter } from '../model/lora-helpers.js';
import { byteTokenizer, FakeEngine, makeModelDir } from './helpers.js';
import { repoPath } from '../repo.js';

function alone(m: LlamaModel, prompt: number[], maxTokens: number): number[] {
  const e = new Engine(m, null, { kvDtype: 'f32', kvCacheMemory: 4 << 20 });
  e.add(genReq('x', prompt, { maxTokens, ignoreEos: true }));
  return runAll(e).byId.get('x')!.tokens[0]!;
}

test('serve: adapters by name, mixed concurrent requests, runtime load/unload inside --lora-root', async () => {
  const base = await fixtureModel('gqa_f32');
  const dir = makeModelDir('gqa_f32');
  const root = mkdtempSync(join(tmpdir(), 'floe-lora-root-'));
  const outside = mkdtempSync(join(tmpdir(), 'floe-lora-outside-'));
  const seed = Date.now() & 0xffff;
  const ads: Record<string, LoraAdapter> = { one: randomAdapter(base, seed, 4), two: randomAdapter(base, seed + 1, 2, ['q', 'o', 'up']) };
  for (const [n, a] of Object.entries(ads)) writePeftAdapter(join(root, n), a);
  writePeftAdapter(join(outside, 'evil'), randomAdapter(base, seed + 2, 2));
  symlinkSync(join(outside, 'evil'), join(root, 'link'));
  mkdirSync(join(root, 'sub'));

  const server = await startServer({
    model: dir, port: 0, modelName: 'base', kvDtype: 'f32', log: () => {},
    loraModules: [{ name: 'one', path: join(root, 'one') }], enableLoraLoading: true, loraRoot: root,
  });
  try {
    await server.ready;
    const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'unused', maxRetries: 0 });
    const list = (await client.models.list()).data as unknown as Array<{ id: string; parent: string | null; root: string }>;
    assert.deepEqual(list.map((m) => [m.id, m.parent]), [['base', null], ['one', 'base']]);
    assert.equal(list[1]!.root, join(root, 'one'));

    const r = rand(seed);
    const complete = async (model: string, prompt: number[]) => {
      const c = await client.completions.create({ model, prompt, max_tokens: 6, temperature: 0, ignore_eos: true, return_token_ids: true } as OpenAI.CompletionCreateParamsNonStreaming);
      assert.equal(c.model, model);
      return (c.choices[0] as unknown as { token_ids: number[] }).token_ids;
    };
    const prompts = [randomPrompt(r, 9), randomPrompt(r, 14), randomPrompt(r, 5)];
    // sent together, so the engine may batch the base and the adapter in one step (test/engine/multi-lora checks that it does)
    const [g0, g1, g2] = await Promise.all([complete('base', prompts[0]!), complete('one', prompts[1]!), complete('one', prompts[0]!)]);
    assert.deepEqual(g0, alone(base, prompts[0]!, 6));
    assert.deepEqual(g1, alone(merged(base, ads.one!), prompts[1]!, 6));
    assert.deepEqual(g2, alone(merged(base, ads.one!), prompts[0]!, 6));
    assert.notDeepEqual(g0, g2, 'the adapter changes the answer on this prompt');

    await assert.rejects(complete('two', prompts[2]!), (e: unknown) => e instanceof OpenAI.NotFoundError && /'two' does not exist/.test(e.message));
    const loaded = await client.post('/load_lora_adapter', { body: { lora_name: 'two', lora_path: 'two' } }) as { id: string; parent: string; root: string };
    assert.equal(loaded.parent, 'base');
    assert.equal(loaded.root, join(root, 'two'));
    assert.deepEqual((await client.models.list()).data.map((m) => m.id), ['base', 'one', 'two']);
    assert.deepEqual(await complete('two', prompts[2]!), alone(merged(base, ads.two!), prompts[2]!, 6));

    for (const bad of ['../' + outside.split('/').pop() + '/evil', join(outside, 'evil'), 'link', 'missing', '.', 'sub']) {
      await assert.rejects(client.post('/load_lora_adapter', { body: { lora_name: 'evil', lora_path: bad } }),
        (e: unknown) => e instanceof OpenAI.BadRequestError || (e instanceof OpenAI.APIError && e.status === 400), bad);
    }
    assert.deepEqual((await client.models.list()).data.map((m) => m.id), ['base', 'one', 'two'], 'nothing outside the root was loaded');
    // a dir inside the root that holds no adapter: the engine's refusal names lora_path, what the client must fix
    await assert.rejects(client.post('/load_lora_adapter', { body: { lora_name: 'empty', lora_path: 'sub' } }),
      (e: unknown) => e instanceof OpenAI.BadRequestError && e.param === 'lora_path' && e.code === 'invalid_adapter' && /adapter_config\.json|adapter_model/.test(e.message));

    await client.post('/unload_lora_adapter', { body: { lora_name: 'two' } });
    assert.deepEqual((await client.models.list()).data.map((m) => m.id), ['base', 'one']);
    await assert.rejects(complete('two', prompts[2]!), OpenAI.NotFoundError);
    await assert.rejects(client.post('/unload_lora_adapter', { body: { lora_name: 'two' } }), OpenAI.NotFoundError);
  } finally {
    await server.close(0);
  }
});

test('serve: runtime loading is refused unless enabled', async () => {
  const serve = createApp({ modelName: 'base', ui: false });
  serve.ready({ engine: new FakeEngine(byteTokenizer()), tokenizer: null, template: null });
  await serve.app.listen({ host: '127.0.0.1', port: 0 });
  try {
    const addr = serve.app.server.address() as { port: number };
    const client = new OpenAI({ baseURL: `http://127.0.0.1:${addr.port}/v1`, apiKey: 'unused', maxRetries: 0 });
    await assert.rejects(client.post('/load_lora_adapter', { body: { lora_name: 'x', lora_path: '/tmp' } }),
      (e: unknown) => e instanceof OpenAI.NotFoundError && /--enable-lora-loading/.test(e.message));
  } finally {
    await serve.app.close();
  }
});

const BIN = repoPath('bin/floe.js');
const BUILT = repoPath('dist/src/serve/server.js');

function floe(args: string[]): { proc: ChildProcess; out: () => string; exit: Promise<number | null> } {
  const proc = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  proc.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
  proc.stderr!.on('data', (d: Buffer) => { out += d.toString(); });
  return { proc, out: () => out, exit: new Promise((r) => proc.once('exit', (code) => r(code))) };
}

test('floe serve --lora-modules a=DIR b=DIR (vLLM spelling) serves both; bad flag combinations exit 2', { timeout: 60_000 }, async () => {
  assert.ok(existsSync(BUILT), `${BUILT} is missing: run \`npx tsc -p tsconfig.json\` first (npm test does)`);
  const base = await fixtureModel('gqa_f32');
  const dir = makeModelDir('gqa_f32');
  const root = mkdtempSync(join(tmpdir(), 'floe-lora-cli-'));
  writePeftAdapter(join(root, 'one'), randomAdapter(base, 1, 4));
  writePeftAdapter(join(root, 'two'), randomAdapter(base, 2, 2));
  const f = floe(['serve', '--model', dir, '--port', '0', '--threads', '1', '--model-name', 'tiny', '--lora-modules', `one=${join(root, 'one')}`, `two=${join(root, 'two')}`, '--max-loras', '1', '--max-lora-rank', '4']);
  try {
    await new Promise<void>((resolve, reject) => {
      const check = () => { if (/model ready in/.test(f.out())) resolve(); };
      f.proc.stdout!.on('data', check);
      f.proc.stderr!.on('data', check);
      void f.exit.then((c) => reject(new Error(`floe serve exited with ${c}:\n${f.out()}`)));
    });
    const url = /listening on (http:\/\/\S+)/.exec(f.out())![1]!;
    const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'unused', maxRetries: 0 });
    const models = (await client.models.list()).data as unknown as Array<{ id: string; parent: string | null }>;
    assert.deepEqual(models.map((m) => [m.id, m.parent]), [['tiny', null], ['one', 'tiny'], ['two', 'tiny']]);
    const [a, b] = await Promise.all(['one', 'two'].map((model) => client.completions.create({ model, prompt: [5, 6, 7, 8], max_tokens: 3, temperature: 0 })));
    assert.equal(a!.model, 'one');
    assert.equal(b!.model, 'two');
  } finally {
    f.proc.kill('SIGTERM');
    await f.exit;
  }
  for (const args of [['--enable-lora-loading'], ['--lora-modules', 'noequals'], ['--lora-root', root]]) {
    const g = floe(['serve', '--model', dir, '--port', '0', ...args]);
    assert.equal(await g.exit, 2, `${args.join(' ')}: ${g.out()}`);
  }
  const big = floe(['serve', '--model', dir, '--port', '0', '--lora-modules', `one=${join(root, 'one')}`, '--max-lora-rank', '2']);
  assert.notEqual(await big.exit, 0);
  assert.match(big.out(), /rank 4, above --max-lora-rank 2/);
});

test('/metrics floe_lora_requests_info (vLLM lora_requests_info): adapters of running and waiting requests, max_lora', { timeout: 60_000 }, async () => {
  const base = await fixtureModel('gqa_f32');
  const dir = makeModelDir('gqa_f32');
  const root = mkdtempSync(join(tmpdir(), 'floe-lora-metrics-'));
  writePeftAdapter(join(root, 'one'), randomAdapter(base, 11, 4));
  writePeftAdapter(join(root, 'two'), randomAdapter(base, 12, 2));
  // 5 ms per engine step (read by the engine's worker when it starts): the 'one' requests run for 1.2 s or more. The tiny
  // fixture's 240 tokens took about three scrapes on a quiet machine (two saw 'one' running with 'two' waiting): a faster
  // or differently loaded host could finish them between two scrapes
  const delay = process.env.FLOE_ENGINE_STEP_DELAY_MS;
  process.env.FLOE_ENGINE_STEP_DELAY_MS = '5';
  const server = await startServer({
    model: dir, port: 0, modelName: 'base', kvDtype: 'f32', log: () => {}, maxLoras: 1,
    loraModules: [{ name: 'one', path: join(root, 'one') }, { name: 'two', path: join(root, 'two') }],
  });
  const restore = () => { if (delay === undefined) delete process.env.FLOE_ENGINE_STEP_DELAY_MS; else process.env.FLOE_ENGINE_STEP_DELAY_MS = delay; };
  const info = async () => {
    const text = await (await fetch(`${server.url}/metrics`)).text();
    const lines = text.split('\n').filter((l) => l.startsWith('floe_lora_requests_info{'));
    assert.equal(lines.length, 1, text);
    const m = /^floe_lora_requests_info\{running_lora_adapters="([^"]*)",waiting_lora_adapters="([^"]*)",max_lora="(\d+)"\} (\S+)$/.exec(lines[0]!);
    assert.ok(m, lines[0]);
    return { running: m[1], waiting: m[2], max: m[3], at: Number(m[4]) };
  };
  try {
    await server.ready.finally(restore);
    assert.deepEqual({ ...(await info()), at: 0 }, { running: '', waiting: '', max: '1', at: 0 });
    const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: 'unused', maxRetries: 0 });
    const run = (model: string, max_tokens: number) => client.completions.create({ model, prompt: [5, 6, 7, 8], max_tokens, temperature: 0, ignore_eos: true } as OpenAI.CompletionCreateParamsNonStreaming);
    // --max-loras 1: 'two' waits while the 'one' requests run
    const all = Promise.all([...Array.from({ length: 4 }, () => run('one', 240)), run('two', 4)]);
    let seen = null;
    for (let i = 0; i < 2000 && !seen; i++) {
      const x = await info();
      if (x.running === 'one' && x.waiting === 'two') seen = x;
    }
    await all;
    assert.ok(seen, "never saw running 'one' with 'two' waiting");
    assert.ok(Math.abs(seen.at - Date.now() / 1000) < 60, `value is the reading's unix time, got ${seen.at}`);
    assert.deepEqual({ ...(await info()), at: 0 }, { running: '', waiting: '', max: '1', at: 0 });
  } finally {
    await server.close(0);
  }
});
