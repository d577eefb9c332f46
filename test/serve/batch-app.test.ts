// Batch routes in the app (in-process, FakeEngine for the plumbing; batch.test.ts runs the real engine): the lines
// reach the engine in the batch lane with the server's API key, direct requests in the interactive lane.

import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI, { toFile } from 'openai';
import { createApp } from '../../src/serve/app.js';
import { poll, terminal } from './batch-helpers.js';
import { ChatTemplate } from '../../src/formats/chat-template.js';
import { byteTokenizer, CHAT_TEMPLATE, FakeEngine } from './helpers.js';

const KEY = 'k-' + Math.random().toString(36).slice(2);
const tok = byteTokenizer();
const engine = new FakeEngine(tok);
const s = createApp({ modelName: 'tiny', apiKey: KEY, dataDir: mkdtempSync(join(tmpdir(), 'floe-batch-app-')), ui: false });
s.ready({ engine, tokenizer: tok, template: new ChatTemplate(CHAT_TEMPLATE) });
const url = await s.app.listen({ host: '127.0.0.1', port: 0 });
const client = new OpenAI({ baseURL: url + '/v1', apiKey: KEY, maxRetries: 0 });
after(() => s.app.close());

test('batch lines run in the batch lane with the server key; direct requests in the interactive lane; same answers', async () => {
  const r = Math.random;
  const prompts = Array.from({ length: 10 }, () => Array.from({ length: 3 + Math.floor(r() * 5) }, () => 0x61 + Math.floor(r() * 26)));
  const text = prompts.map((p, i) => JSON.stringify({ custom_id: `p${i}`, method: 'POST', url: '/v1/completions', body: { model: 'tiny', prompt: p, max_tokens: 3 + i } })).join('\n');
  const file = await client.files.create({ file: await toFile(Buffer.from(text), 'in.jsonl'), purpose: 'batch' });
  const b = await client.batches.create({ input_file_id: file.id, endpoint: '/v1/completions', completion_window: '24h' });
  const end = await poll(client, b.id, terminal);
  assert.equal(end.status, 'completed');
  const lines = (await (await client.files.content(end.output_file_id!)).text()).trim().split('\n').map((l) => JSON.parse(l));
  const batchReqs = engine.requests.splice(0);
  assert.equal(batchReqs.length, 10);
  assert.ok(batchReqs.every((q) => q.priority === 'batch'), 'every line in the batch lane');
  for (const [i, p] of prompts.entries()) {
    const direct = await client.completions.create({ model: 'tiny', prompt: p, max_tokens: 3 + i });
    assert.equal(lines[i].custom_id, `p${i}`);
    assert.deepEqual(lines[i].response.body.choices, direct.choices);
  }
  assert.ok(engine.requests.every((q) => q.priority === 'interactive'), 'direct requests in the interactive lane');
});

test('the Files and Batch routes need the API key', async () => {
  const r = await fetch(url + '/v1/files');
  assert.equal(r.status, 401);
  const r2 = await fetch(url + '/v1/batches', { method: 'POST', headers: { authorization: 'Bearer wrong', 'content-type': 'application/json' }, body: '{}' });
  assert.equal(r2.status, 401);
  const ok = await fetch(url + '/v1/files', { headers: { authorization: `Bearer ${KEY}` } });
  assert.equal(ok.status, 200);
});

test('a client may put itself in the batch lane with x-floe-priority: batch', async () => {
  await client.completions.create({ model: 'tiny', prompt: [0x61, 0x62], max_tokens: 2 }, { headers: { 'x-floe-priority': 'batch' } });
  assert.equal(engine.requests.at(-1)!.priority, 'batch');
});

test('list with an after cursor that names nothing: 404 naming it (param after), not the first page again', async () => {
  const f = await client.files.create({ file: await toFile(Buffer.from(JSON.stringify({ custom_id: 'a', method: 'POST', url: '/v1/completions', body: { model: 'tiny', prompt: 'x' } }) + '\n'), 'one.jsonl'), purpose: 'batch' });
  await client.files.delete(f.id);
  const stale = async (what: string, page: () => Promise<unknown>, id: string) => {
    await assert.rejects(page, (e: unknown) => e instanceof OpenAI.NotFoundError && e.param === 'after' && e.code === 'not_found' && e.message.includes(`'${id}'`), what);
  };
  await stale('files, deleted cursor', () => client.files.list({ after: f.id }), f.id);
  await stale('files', () => client.files.list({ after: 'file-nope', purpose: 'batch' }), 'file-nope');
  await stale('batches', () => client.batches.list({ after: 'batch_nope' }), 'batch_nope');
  const ok = await client.files.list({ limit: 1 });
  assert.equal((await client.files.list({ after: ok.data[0]!.id })).data.some((x) => x.id === ok.data[0]!.id), false, 'a known cursor pages on');
});

test('a cancel aborts the lines in flight: their generations stop at once instead of running to their last token', async () => {
  engine.delayMs = 20; // 200 tokens a line: 4 s each unless aborted
  try {
    engine.requests.splice(0);
    const text = Array.from({ length: 4 }, (_, i) => JSON.stringify({ custom_id: `c${i}`, method: 'POST', url: '/v1/completions', body: { model: 'tiny', prompt: `line ${i}`, max_tokens: 200 } })).join('\n');
    const file = await client.files.create({ file: await toFile(Buffer.from(text), 'long.jsonl'), purpose: 'batch' });
    const b = await client.batches.create({ input_file_id: file.id, endpoint: '/v1/completions', completion_window: '24h' });
    while (engine.requests.length < 4) await new Promise((r) => setTimeout(r, 10)); // every line is generating
    const t0 = Date.now();
    await client.batches.cancel(b.id);
    const end = await poll(client, b.id, terminal);
    assert.equal(end.status, 'cancelled');
    assert.deepEqual(end.request_counts, { total: 4, completed: 0, failed: 0 });
    assert.deepEqual(engine.aborted.filter((id) => engine.requests.some((q) => q.id === id)).sort(), engine.requests.map((q) => q.id).sort(), 'every line in flight was aborted in the engine');
    assert.ok(Date.now() - t0 < 2000, `cancelled after ${Date.now() - t0} ms: the lines did not run on`);
  } finally {
    engine.delayMs = 0;
  }
});

test('a line with stream: true runs unstreamed with its stream_options dropped (they were a 400 saying stream must be true); without stream they stay a 400, as sent directly', async () => {
  const lines = [
    { url: '/v1/completions', body: { model: 'tiny', prompt: 'abc', max_tokens: 4, stream: true, stream_options: { include_usage: true } } },
    { url: '/v1/chat/completions', body: { model: 'tiny', messages: [{ role: 'user', content: 'abc' }], max_tokens: 4, stream: true, stream_options: { include_usage: true } } },
    { url: '/v1/responses', body: { model: 'tiny', input: 'abc', max_output_tokens: 4, stream: true, stream_options: { include_obfuscation: false } } },
  ];
  for (const { url: endpoint, body } of lines) {
    const text = [body, { ...body, stream: undefined }].map((b, i) => JSON.stringify({ custom_id: `s${i}`, method: 'POST', url: endpoint, body: b })).join('\n');
    const file = await client.files.create({ file: await toFile(Buffer.from(text), 'stream.jsonl'), purpose: 'batch' });
    const b = await client.batches.create({ input_file_id: file.id, endpoint: endpoint as '/v1/completions', completion_window: '24h' });
    const end = await poll(client, b.id, terminal);
    assert.deepEqual(end.request_counts, { total: 2, completed: 1, failed: 1 }, endpoint);
    const out = JSON.parse(await (await client.files.content(end.output_file_id!)).text());
    assert.equal(out.custom_id, 's0');
    const { stream: _s, stream_options: _o, ...plain } = body;
    const direct = await (await fetch(url + endpoint, { method: 'POST', headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' }, body: JSON.stringify(plain) })).json() as { object: string; usage: unknown };
    assert.equal(out.response.body.object, direct.object, endpoint);
    assert.deepEqual(out.response.body.usage, direct.usage, `${endpoint}: the unstreamed answer, usage included`);
    const err = JSON.parse(await (await client.files.content(end.error_file_id!)).text());
    assert.deepEqual([err.custom_id, err.response.status_code, err.response.body.error.param], ['s1', 400, 'stream_options']);
  }
});
