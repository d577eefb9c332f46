// loadTextTools: the tokenizer and chat template the server uses, from an HF directory and from a GGUF file.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { encodeChat } from '../../src/formats/chat-template.js';
import { hfToGguf, gv } from '../../src/formats/gguf-writer.js';
import { loadModel } from '../../src/formats/load.js';
import { loadTextTools, parseSize } from '../../src/serve/server.js';
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

test('parseSize', () => {
  assert.equal(parseSize('2GiB'), 2 * 2 ** 30);
  assert.equal(parseSize('512MiB'), 512 * 2 ** 20);
  assert.equal(parseSize('1.5GB'), 1.5e9);
  assert.equal(parseSize('64k'), 64_000);
  assert.equal(parseSize('4096'), 4096);
  for (const bad of ['', 'lots', '-1GiB', '2XB', '0']) assert.throws(() => parseSize(bad), /size/, bad);
});
