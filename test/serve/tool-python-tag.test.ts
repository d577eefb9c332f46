// <|python_tag|> opening a call under tool_choice auto with strict tools, through floe serve and the official openai
// client: floe-brown has no such token, so a copy of it names its <|end_of_text|> (4092, then no EOS) <|python_tag|>;
// logit_bias puts it first wherever the grammar lets it come. With response_format too the answer is that format's
// value or calls, and the calls open as without it: by '{' or by the tag.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import { startServer, type RunningServer } from '../../src/serve/server.js';
import { repoPath } from '../repo.js';

const BROWN = repoPath('models/floe-brown');
const TAG = 4092;

/** floe-brown with token 4092 renamed <|python_tag|> and <|eot_id|> its only EOS. */
function taggedModel(): string {
  const dir = mkdtempSync(join(tmpdir(), 'floe-tag-'));
  const json = (f: string) => JSON.parse(readFileSync(join(BROWN, f), 'utf8'));
  const tok = json('tokenizer.json');
  tok.added_tokens.find((t: { id: number }) => t.id === TAG).content = '<|python_tag|>';
  const cfg = json('tokenizer_config.json');
  cfg.added_tokens_decoder[String(TAG)].content = '<|python_tag|>';
  cfg.eos_token = '<|eot_id|>';
  const config = json('config.json');
  config.eos_token_id = [4095];
  const gen = json('generation_config.json');
  gen.eos_token_id = [4095];
  for (const [f, v] of [['tokenizer.json', tok], ['tokenizer_config.json', cfg], ['config.json', config], ['generation_config.json', gen]] as const) writeFileSync(join(dir, f), JSON.stringify(v));
  symlinkSync(join(BROWN, 'model.safetensors'), join(dir, 'model.safetensors'));
  return dir;
}

let srv: RunningServer;
let client: OpenAI;
before(async () => {
  srv = await startServer({ model: taggedModel(), port: 0, ui: false, dataDir: null, threads: 2, kvCacheMemory: 32 << 20, log: () => {} });
  await srv.ready;
  client = new OpenAI({ baseURL: `${srv.url}/v1`, apiKey: 'none', maxRetries: 0 });
});
after(async () => { await srv?.close(0); });

const tools: OpenAI.ChatCompletionFunctionTool[] = [{ type: 'function', function: { name: 'ping', parameters: { type: 'object', properties: {}, additionalProperties: false }, strict: true } }];
const ANSWER = { type: 'object', properties: { answer: { type: 'string', maxLength: 20 } }, required: ['answer'], additionalProperties: false };
const format = { type: 'json_schema' as const, json_schema: { name: 'reply', schema: ANSWER, strict: true } };
const calls = (m: OpenAI.ChatCompletionMessage) => m.tool_calls?.map((c) => {
  const f = (c as OpenAI.ChatCompletionMessageFunctionToolCall).function;
  return { name: f.name, arguments: f.arguments };
});
const ask = { messages: [{ role: 'user' as const, content: 'Ping the server.' }], tools, tool_choice: 'auto' as const, temperature: 0, max_tokens: 32 };

test('the <|python_tag|> token opens a call under auto with strict tools, with response_format too, streamed or not', async () => {
  for (const response_format of [undefined, format]) {
    const what = response_format ? 'with response_format' : 'free text';
    const r = await client.chat.completions.create({ model: srv.modelName, ...ask, ...(response_format ? { response_format } : {}), logit_bias: { [TAG]: 100 }, logprobs: true });
    const ch = r.choices[0]!;
    assert.equal(ch.logprobs?.content?.[0]?.token, '<|python_tag|>', `${what}: the tag comes first`);
    assert.equal(ch.finish_reason, 'tool_calls', `${what}: ${JSON.stringify(ch.message)}`);
    assert.deepEqual(calls(ch.message), [{ name: 'ping', arguments: '{}' }]);
    assert.equal(ch.message.content, null);
    const s = client.chat.completions.stream({ model: srv.modelName, ...ask, ...(response_format ? { response_format } : {}), logit_bias: { [TAG]: 100 } });
    const end = (await s.finalChatCompletion()).choices[0]!;
    assert.equal(end.finish_reason, 'tool_calls', `${what}, streamed`);
    assert.deepEqual(calls(end.message), [{ name: 'ping', arguments: '{}' }]);
  }
  // the tag pushed down: with response_format the answer is its value (text) or a call opened by '{'
  const r = await client.chat.completions.create({ model: srv.modelName, ...ask, response_format: format, logit_bias: { [TAG]: -100 } });
  const ch = r.choices[0]!;
  if (ch.finish_reason === 'tool_calls') assert.equal(ch.message.tool_calls?.length, 1);
  else if (ch.finish_reason === 'stop') assert.equal(typeof JSON.parse(ch.message.content!).answer, 'string');
});
