// loadTextTools: the tokenizer and chat template the server uses, from an HF directory and from a GGUF file.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { totalmem } from 'node:os';
import { join } from 'node:path';
import { encodeChat } from '../../src/formats/chat-template.js';
import { hfToGguf, gv } from '../../src/formats/gguf-writer.js';
import { loadModel } from '../../src/formats/load.js';
import { defaultModelName, loadTextTools, preflight, startServer } from '../../src/serve/server.js';
import { parseSize } from '../../src/cli/args.js';
import { CHAT_TEMPLATE, makeModelDir } from './helpers.js';

test('HF dir and its GGUF conversion give the same tokens for chat and text', async () => {
  const dir = makeModelDir('gqa_f32');
  const gguf = join(dir, 'model.gguf');
  const m = await loadModel(dir);
  await hfToGguf(m, gguf, 'f32', { extraMetadata: { 'tokenizer.chat_template': gv.str(CHAT_TEMPLATE) } });
  m.dispose();
  const hf = await loadTextTools(dir);
  const gg = await loadTextTools(gguf);
  assert.ok(hf.tokenizer && hf.template && gg.tokenizer && gg.template);
  const messages = [{ role: 'system', content: 'sys' }, { role: 'user', content: `héllo ${Math.random()}` }];
  const a = encodeChat(hf.tokenizer, hf.template, messages, { addGenerationPrompt: true });
  assert.deepEqual(encodeChat(gg.tokenizer, gg.template, messages, { addGenerationPrompt: true }), a);
  assert.equal(a[0], 1, 'BOS from the template');
  const text = `random ${Math.random()} ünïcode`;
  assert.deepEqual(gg.tokenizer.encode(text), hf.tokenizer.encode(text));
});

test("loadTextTools reads generation_config.json's sampling defaults (do_sample false means greedy); none for GGUF", async () => {
  const dir = makeModelDir('gqa_f32');
  assert.deepEqual((await loadTextTools(dir)).defaults, {});
  writeFileSync(join(dir, 'generation_config.json'), JSON.stringify({ do_sample: true, temperature: 0.6, top_p: 0.9, eos_token_id: [2] }));
  assert.deepEqual((await loadTextTools(dir)).defaults, { temperature: 0.6, topP: 0.9 });
  writeFileSync(join(dir, 'generation_config.json'), JSON.stringify({ do_sample: false, temperature: 0.6, max_new_tokens: 64 }));
  assert.deepEqual((await loadTextTools(dir)).defaults, { temperature: 0, maxNewTokens: 64 });
});

test('a GGUF model is served under its file name without .gguf', { timeout: 60_000 }, async () => {
  const dir = makeModelDir('gqa_f32');
  const gguf = join(dir, 'tiny-q.gguf');
  const m = await loadModel(dir);
  await hfToGguf(m, gguf, 'f32');
  m.dispose();
  assert.equal(defaultModelName(gguf), 'tiny-q');
  assert.equal(defaultModelName(dir + '/'), dir.split('/').at(-1));
  const lines: string[] = [];
  const s = await startServer({ model: gguf, port: 0, threads: 1, kvCacheMemory: 2 ** 20, log: (l) => lines.push(l) });
  try {
    await s.ready;
    const models = await (await fetch(s.url + '/v1/models')).json() as { data: Array<{ id: string }> };
    assert.deepEqual(models.data.map((d) => d.id), ['tiny-q']);
    const r = await fetch(s.url + '/v1/completions', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ model: 'tiny-q', prompt: [5, 6], max_tokens: 2 }) });
    assert.equal(r.status, 200);
  } finally {
    await s.close(0);
  }
});

test('preflight: refuses a KV budget larger than the machine and a non-GGUF file, before any socket is opened', () => {
  const dir = makeModelDir('gqa_f32');
  assert.throws(() => preflight({ model: dir, kvCacheMemory: totalmem() * 2 }), /--kv-cache-memory .* GiB is more than this machine's/);
  assert.throws(() => preflight({ model: join(dir, 'config.json') }), /a file that is not GGUF/);
  assert.doesNotThrow(() => preflight({ model: dir, kvCacheMemory: 2 ** 20 }));
});

test('parseSize', () => {
  assert.equal(parseSize('2GiB'), 2 * 2 ** 30);
  assert.equal(parseSize('512MiB'), 512 * 2 ** 20);
  assert.equal(parseSize('1.5GB'), 1.5e9);
  assert.equal(parseSize('64k'), 64_000);
  assert.equal(parseSize('4096'), 4096);
  for (const bad of ['', 'lots', '-1GiB', '2XB', '0']) assert.throws(() => parseSize(bad), /size/, bad);
});
