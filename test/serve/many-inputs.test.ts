// Lists of inputs as OpenAI takes them: up to 2048 embeddings inputs (or completion prompts) in one request, so that
// clients which batch 100 or 1000 texts per call (LlamaIndex, LangChain) are served; the server's slots plus queue
// still bound what one request may start.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ChatTemplate } from '../../src/formats/chat-template.js';
import { createApp } from '../../src/serve/app.js';
import { byteTokenizer, CHAT_TEMPLATE, FakeEngine } from './helpers.js';

const tok = byteTokenizer();

function setup(maxQueue: number) {
  const engine = new FakeEngine(tok, { maxNumSeqs: 64, maxQueue });
  const s = createApp({ modelName: 'tiny' });
  s.ready({ engine, tokenizer: tok, template: new ChatTemplate(CHAT_TEMPLATE) });
  const post = (url: string, body: unknown) =>
    s.app.inject({ method: 'POST', url, headers: { 'content-type': 'application/json' }, payload: JSON.stringify(body) });
  return { engine, post };
}

test('embeddings and completions take more than 64 inputs: one vector or choice each, in order', async () => {
  const { post } = setup(1024);
  const texts = Array.from({ length: 100 }, (_, i) => `text ${i}`);
  const e = await post('/v1/embeddings', { model: 'tiny', input: texts });
  assert.equal(e.statusCode, 200, e.body);
  assert.deepEqual(e.json().data.map((d: { index: number }) => d.index), texts.map((_, i) => i));
  const ids = await post('/v1/embeddings', { model: 'tiny', input: texts.map((t) => tok.encode(t)) });
  assert.equal(ids.statusCode, 200, ids.body);
  assert.equal(ids.json().data.length, 100);
  const c = await post('/v1/completions', { model: 'tiny', prompt: texts, max_tokens: 2 });
  assert.equal(c.statusCode, 200, c.body);
  assert.equal(c.json().choices.length, 100);
});

test('past the slots plus queue the 400 names the flags; past OpenAI\'s 2048 it names that limit', async () => {
  const { post } = setup(10);
  const r = await post('/v1/embeddings', { model: 'tiny', input: Array.from({ length: 75 }, () => 'x') });
  assert.equal(r.statusCode, 400, r.body);
  assert.match(r.json().error.message, /at most 74 at once.*--max-queue/);
  const big = setup(4096);
  for (const [url, field] of [['/v1/embeddings', 'input'], ['/v1/completions', 'prompt']] as const) {
    const over = await big.post(url, { model: 'tiny', [field]: Array.from({ length: 2049 }, () => 'x') });
    assert.equal(over.statusCode, 400, over.body);
    assert.equal(over.json().error.param, field);
    assert.match(over.json().error.message, /at most 2048 inputs, got 2049/);
  }
});
