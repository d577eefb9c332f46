// vLLM's /tokenize, /detokenize and /version on floe serve's app: the ids are the ones the generation routes send the
// engine for the same prompt or chat (the built-in model's real tokenizer and chat template), errors are OpenAI-shaped.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { loadChatTemplate } from '../../src/formats/chat-template.js';
import { loadTokenizer } from '../../src/formats/tokenizer.js';
import { createApp } from '../../src/serve/app.js';
import { FakeEngine } from './helpers.js';
import { repoPath, repoUrl } from '../repo.js';

const BROWN = repoPath('models/floe-brown');
const VERSION = (JSON.parse(readFileSync(repoUrl('package.json'), 'utf8')) as { version: string }).version;

async function setup(apiKey?: string) {
  const tok = (await loadTokenizer(BROWN))!;
  const template = (await loadChatTemplate(BROWN))!;
  const engine = new FakeEngine(tok, { vocabSize: tok.vocabSize, maxModelLen: 2048, maxRequestTokens: 2048 });
  const s = createApp({ modelName: 'brown', apiKey, ui: false });
  s.ready({ engine, tokenizer: tok, template });
  const post = (url: string, body: unknown, headers: Record<string, string> = {}) =>
    s.app.inject({ method: 'POST', url, headers: { 'content-type': 'application/json', ...headers }, payload: JSON.stringify(body) });
  return { s, tok, engine, post };
}

const WORDS = ['the', 'jury', 'said', 'Fulton', 'County', 'election', ',', 'of', 'Atlanta', '"', 'irregularities', 'took', 'place', '.', '\n', '  ', 'über', '42'];
const randomText = () => Array.from({ length: 3 + Math.floor(Math.random() * 20) }, () => WORDS[Math.floor(Math.random() * WORDS.length)]).join(Math.random() < 0.5 ? ' ' : '');

test('/tokenize of a prompt gives the ids /v1/completions sends the engine; /detokenize gives the text back', async () => {
  const { post, engine, tok } = await setup();
  for (let k = 0; k < 8; k++) {
    const prompt = randomText();
    const t = await post('/tokenize', { model: 'brown', prompt });
    assert.equal(t.statusCode, 200, t.body);
    const r = await post('/v1/completions', { model: 'brown', prompt, max_tokens: 1 });
    assert.equal(r.statusCode, 200, r.body);
    const sent = engine.requests.at(-1)!.promptIds;
    assert.deepEqual(t.json().tokens, sent, prompt);
    assert.equal(t.json().count, sent.length);
    assert.equal(t.json().max_model_len, 2048);
    assert.equal(t.json().token_strs, null);
    const plain = (await post('/tokenize', { prompt, add_special_tokens: false, return_token_strs: true })).json();
    assert.deepEqual(plain.tokens, sent.slice(1), 'without the BOS');
    assert.equal(plain.token_strs.length, plain.count);
    plain.token_strs.forEach((str: string, i: number) => assert.equal(tok.tokenToId(str), plain.tokens[i], 'token_strs are the vocabulary strings of the ids'));
    assert.equal((await post('/detokenize', { tokens: plain.tokens })).json().prompt, prompt);
    assert.equal((await post('/detokenize', { model: 'brown', tokens: sent })).json().prompt, tok.decode(sent, { skipSpecialTokens: false }));
  }
});

test('/tokenize of messages gives the ids /v1/chat/completions sends the engine (template, generation prompt, tools, continue_final_message, chat_template_kwargs)', async () => {
  const { post, engine, tok } = await setup();
  const tools = [{ type: 'function', function: { name: 'get_time', parameters: { type: 'object', properties: { tz: { type: 'string' } } } } }];
  for (let k = 0; k < 9; k++) {
    const cont = k % 3 === 2; // an assistant prefill, continued
    const prefill = `Well ${randomText()}`;
    const messages = [{ role: 'system', content: randomText() }, { role: 'user', content: randomText() }, ...(cont ? [{ role: 'assistant', content: prefill }] : [])];
    const withTools = { ...(k % 2 === 1 ? { tools } : {}), ...(cont ? { continue_final_message: true, add_generation_prompt: false, chat_template_kwargs: { date_string: '26 Jul 2024' } } : {}) };
    const t = await post('/tokenize', { messages, ...withTools });
    assert.equal(t.statusCode, 200, t.body);
    const r = await post('/v1/chat/completions', { messages, max_tokens: 1, ...withTools });
    assert.equal(r.statusCode, 200, r.body);
    assert.deepEqual(t.json().tokens, engine.requests.at(-1)!.promptIds);
    assert.equal(r.json().usage.prompt_tokens, t.json().count);
    if (cont) {
      assert.ok(tok.decode(t.json().tokens, { skipSpecialTokens: false }).endsWith(prefill.trim()), 'the prompt ends with the prefill, open');
      continue;
    }
    const bare = (await post('/tokenize', { messages, add_generation_prompt: false, ...withTools })).json();
    assert.ok(bare.count < t.json().count, 'no assistant header without the generation prompt');
    assert.deepEqual(bare.tokens, t.json().tokens.slice(0, bare.count));
  }
});

test('/tokenize and /detokenize refuse bad input with OpenAI errors, need the API key, and /version answers', async () => {
  const { post, s } = await setup('k');
  const auth = { authorization: 'Bearer k' };
  assert.equal((await post('/tokenize', { prompt: 'x' })).statusCode, 401);
  assert.equal((await post('/detokenize', { tokens: [1] })).statusCode, 401);
  const bad: Array<[string, unknown, number, string | null]> = [
    ['/tokenize', { prompt: 'x', messages: [] }, 400, 'messages'],
    ['/tokenize', {}, 400, 'prompt'],
    ['/tokenize', { prompt: 3 }, 400, 'prompt'],
    ['/tokenize', { prompt: 'x', add_generation_prompt: true }, 400, 'add_generation_prompt'],
    ['/tokenize', { prompt: 'x', model: 'gpt-4' }, 404, 'model'],
    ['/tokenize', { messages: [{ role: 'user' }] }, 400, 'messages[0].content'],
    ['/tokenize', { messages: [{ role: 'user', content: 'x' }], add_special_tokens: true }, 400, 'add_special_tokens'],
    ['/detokenize', { tokens: [1, -2] }, 400, 'tokens[1]'],
    ['/detokenize', { tokens: [10 ** 9] }, 400, 'tokens[0]'],
    ['/detokenize', {}, 400, 'tokens'],
    ['/detokenize', { tokens: [1], extra: 1 }, 400, 'extra'],
  ];
  for (const [url, body, status, param] of bad) {
    const r = await post(url, body, auth);
    assert.equal(r.statusCode, status, `${url} ${JSON.stringify(body)}: ${r.body}`);
    assert.equal(r.json().error.param, param, r.body);
  }
  const v = await s.app.inject({ method: 'GET', url: '/version' });
  assert.deepEqual(v.json(), { version: VERSION });
});
