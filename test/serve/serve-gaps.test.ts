// Small gaps an OpenAI client meets: DELETE /v1/models without a data dir, the Responses API's tool_choice echo,
// the RAG upload's size limit and its not-UTF-8 message.

import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { constants } from 'node:buffer';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import { ChatTemplate } from '../../src/formats/chat-template.js';
import { createApp, type AppOptions } from '../../src/serve/app.js';
import { apiRefusal, byteTokenizer, CHAT_TEMPLATE, FakeEngine } from './helpers.js';

const tok = byteTokenizer();
const closers: Array<() => Promise<unknown>> = [];
after(async () => { for (const c of closers) await c(); });

/** The app on a fake engine over HTTP, and the official client on it. */
async function serve(opts: Partial<AppOptions> = {}): Promise<OpenAI> {
  const s = createApp({ modelName: 'tiny', ...opts });
  s.ready({ engine: new FakeEngine(tok), tokenizer: tok, template: new ChatTemplate(CHAT_TEMPLATE) });
  await s.app.listen({ host: '127.0.0.1', port: 0 });
  closers.push(() => s.app.close());
  const a = s.app.server.address();
  return new OpenAI({ baseURL: `http://127.0.0.1:${typeof a === 'object' && a ? a.port : 0}/v1`, apiKey: 'unused', maxRetries: 0 });
}

test('DELETE /v1/models/{id} without a data dir (--no-batch): OpenAI\'s 404 model_not_found naming the model, or a 400 for a served one, not "no route"', async () => {
  const client = await serve({ dataDir: null });
  const gone = await apiRefusal(client.models.delete('ft:tiny:floe:x:ftjob-1'));
  assert.equal(gone.status, 404);
  assert.equal(gone.code, 'model_not_found', 'the code the client expects for a model it cannot delete');
  assert.equal(gone.param, 'model');
  assert.match(gone.message, /the model 'ft:tiny:floe:x:ftjob-1' does not exist/);
  assert.match(gone.message, /no data dir \(--no-batch\)/, 'says why there is nothing to delete');
  const base = await apiRefusal(client.models.delete('tiny'));
  assert.equal(base.status, 400);
  assert.equal(base.code, 'invalid_value');
  assert.match(base.message, /'tiny' is not the fine-tuned model of a job/);
  // the model is still served
  assert.equal((await client.models.retrieve('tiny')).id, 'tiny');
});

test("responses: tool_choice is echoed as the request gave it, default 'auto' (OpenAI's), also with no tools", async () => {
  const client = await serve();
  const plain = await client.responses.create({ model: 'tiny', input: 'hi', max_output_tokens: 2 });
  assert.deepEqual(plain.tools, []);
  assert.equal(plain.tool_choice, 'auto');
  for (const choice of ['none', 'auto'] as const) {
    const r = await client.responses.create({ model: 'tiny', input: 'hi', max_output_tokens: 2, tool_choice: choice });
    assert.equal(r.tool_choice, choice);
  }
  // 'auto' sent back with no tools is the default, not chat's 'needs tools' 400; 'required' still needs them
  assert.equal((await apiRefusal(client.responses.create({ model: 'tiny', input: 'hi', max_output_tokens: 2, tool_choice: 'required' }))).param, 'tool_choice');
  const events: OpenAI.Responses.ResponseStreamEvent[] = [];
  for await (const e of await client.responses.create({ model: 'tiny', input: 'hi', max_output_tokens: 2, stream: true })) events.push(e);
  const done = events.find((e) => e.type === 'response.completed' || e.type === 'response.incomplete') as OpenAI.Responses.ResponseCompletedEvent;
  assert.equal(done.response.tool_choice, 'auto', 'the streamed response too');
  assert.equal((events[0] as OpenAI.Responses.ResponseCreatedEvent).response.tool_choice, 'auto', 'response.created');
});

test('rag: a maxFileBytes past the longest string is refused at createApp, naming the option and the limit', () => {
  const db = mkdtempSync(join(tmpdir(), 'floe-gaps-rag-'));
  const max = constants.MAX_STRING_LENGTH;
  // the decoder throws ERR_STRING_TOO_LONG past it (what an upload that size met, reported as 'not valid UTF-8')
  assert.ok(max < 2 ** 30, `MAX_STRING_LENGTH ${max}`);
  for (const n of [max + 1, 2 ** 30, 4 * 2 ** 30]) {
    assert.throws(() => createApp({ modelName: 'tiny', rag: { db, embedderName: 'e', maxFileBytes: n } }),
      (e: Error) => e instanceof RangeError && e.message.includes(`maxFileBytes is ${n} bytes`) && e.message.includes(`give at most ${max}`), String(n));
  }
  for (const n of [0, -1, 1.5, Number.NaN]) assert.throws(() => createApp({ modelName: 'tiny', rag: { db, embedderName: 'e', maxFileBytes: n } }), RangeError, String(n));
  for (const n of [max, 2 ** 20, undefined]) createApp({ modelName: 'tiny', rag: { db, embedderName: 'e', maxFileBytes: n } });
});

test('rag: an upload that is not UTF-8 is a 400 naming the file and the offset of its first bad byte', async () => {
  const db = mkdtempSync(join(tmpdir(), 'floe-gaps-rag-'));
  const client = await serve({ rag: { db, embedderName: 'e' } });
  const url = client.baseURL;
  const cases: Array<[string, Buffer, number]> = [
    ['latin1.txt', Buffer.concat([Buffer.from('caf'), Buffer.from([0xe9]), Buffer.from(' au lait\n')]), 3], // é in latin1
    ['cut.md', Buffer.concat([Buffer.from('price: 5 '), Buffer.from('€').subarray(0, 2), Buffer.from(' only\n')]), 9], // a 3-byte sequence cut after 2
    ['late.txt', Buffer.concat([Buffer.from('ünïcödé '.repeat(1000)), Buffer.from([0xc0, 0x80])]), Buffer.byteLength('ünïcödé '.repeat(1000))], // an overlong NUL
  ];
  for (const [name, bytes, at] of cases) {
    const form = new FormData();
    form.append('file', new Blob([bytes]), name);
    const res = await fetch(`${url}/rag/collections/docs/documents`, { method: 'POST', body: form });
    const body = await res.json() as { error: { message: string; param: string } };
    assert.equal(res.status, 400, `${name}: ${JSON.stringify(body)}`);
    assert.equal(body.error.param, 'file');
    assert.match(body.error.message, new RegExp(`^${name.replace('.', '\\.')} is not valid UTF-8 text \\(an invalid byte at offset ${at}: 0x${bytes[at]!.toString(16)}\\)`), name);
  }
});
