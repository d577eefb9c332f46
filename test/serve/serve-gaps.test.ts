// Small gaps an OpenAI client meets: DELETE /v1/models without a data dir, the Responses API's tool_choice echo,
// the RAG upload's size limit and its not-UTF-8 message.

import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI, { APIError } from 'openai';
import { ChatTemplate } from '../../src/formats/chat-template.js';
import { createApp, type AppOptions } from '../../src/serve/app.js';
import { byteTokenizer, CHAT_TEMPLATE, FakeEngine } from './helpers.js';

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

const refusal = async (p: Promise<unknown>) => {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof APIError, String(e));
    return { status: e.status, param: e.param, code: e.code, message: e.message };
  }
  assert.fail('accepted');
};

test('DELETE /v1/models/{id} without a data dir (--no-batch): OpenAI\'s 404 model_not_found naming the model, or a 400 for a served one, not "no route"', async () => {
  const client = await serve({ dataDir: null });
  const gone = await refusal(client.models.delete('ft:tiny:floe:x:ftjob-1'));
  assert.equal(gone.status, 404);
  assert.equal(gone.code, 'model_not_found', 'the code the client expects for a model it cannot delete');
  assert.equal(gone.param, 'model');
  assert.match(gone.message, /the model 'ft:tiny:floe:x:ftjob-1' does not exist/);
  assert.match(gone.message, /no data dir \(--no-batch\)/, 'says why there is nothing to delete');
  const base = await refusal(client.models.delete('tiny'));
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
  assert.equal((await refusal(client.responses.create({ model: 'tiny', input: 'hi', max_output_tokens: 2, tool_choice: 'required' }))).param, 'tool_choice');
  const events: OpenAI.Responses.ResponseStreamEvent[] = [];
  for await (const e of await client.responses.create({ model: 'tiny', input: 'hi', max_output_tokens: 2, stream: true })) events.push(e);
  const done = events.find((e) => e.type === 'response.completed' || e.type === 'response.incomplete') as OpenAI.Responses.ResponseCompletedEvent;
  assert.equal(done.response.tool_choice, 'auto', 'the streamed response too');
  assert.equal((events[0] as OpenAI.Responses.ResponseCreatedEvent).response.tool_choice, 'auto', 'response.created');
});
