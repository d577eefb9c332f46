// Predicted Outputs through HTTP with the official openai client on the built-in model (floe-brown), a server
// started without --speculative and one with it: the answer is the one without the prediction, streamed or not;
// the verify steps take most of a repeated answer (engine steps from /metrics); malformed predictions are 400s.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { startServer } from '../../src/serve/server.js';
import { repoPath } from '../repo.js';

const BROWN = repoPath('models/floe-brown');
const plain = await startServer({ model: BROWN, port: 0, threads: 2, kvCacheMemory: 48 << 20, log: () => {}, ui: false });
const ngram = await startServer({ model: BROWN, port: 0, threads: 2, kvCacheMemory: 48 << 20, log: () => {}, ui: false, speculative: 'ngram' });
await Promise.all([plain.ready, ngram.ready]);
after(() => Promise.all([plain.close(1000), ngram.close(1000)]));
const clientOf = (srv: typeof plain) => new OpenAI({ baseURL: srv.url + '/v1', apiKey: 'none', maxRetries: 0 });
const model = plain.modelName;
const steps = async (srv: typeof plain): Promise<number> => Number(/^floe_engine_steps_total (\S+)$/m.exec(await (await fetch(srv.url + '/metrics')).text())![1]);

const WORDS = 'the city state house church water school court man people years time first new said would could only other'.split(' ');
const SEED = Number(process.env.FLOE_TEST_SEED ?? Date.now() % 1e9);
let s = SEED >>> 0;
const rnd = (): number => { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; return s / 2 ** 32; };
const pick = (): string => WORDS[Math.floor(rnd() * WORDS.length)]!;
const UNRELATED = 'Once upon a time a small dog ran through the park every morning, chasing birds and barking at the old gardener.';
const edit = (text: string): string => text.split(' ').map((w, i) => (i > 0 && i % 7 === 3 ? pick() : w)).join(' ');

for (const [name, srv] of [['without --speculative', plain], ['with --speculative ngram', ngram]] as const) {
  test(`chat, ${name}: greedy with a prediction equals greedy without, streamed or not (seed ${SEED}); its own answer takes few steps`, async () => {
    const client = clientOf(srv);
    for (let p = 0; p < 2; p++) {
      const messages = [{ role: 'user' as const, content: Array.from({ length: 10 }, pick).join(' ') }];
      const req = { model, messages, temperature: 0, max_tokens: 64 };
      const s0 = await steps(srv);
      const base = await client.chat.completions.create(req);
      const baseSteps = (await steps(srv)) - s0;
      const answer = base.choices[0]!.message.content!;
      assert.equal(base.usage!.completion_tokens_details, undefined, 'no prediction: no prediction counts');
      for (const [kind, text] of [['own', answer], ['edited', edit(answer)], ['unrelated', UNRELATED]] as const) {
        const what = `prompt ${p} (seed ${SEED}), prediction ${kind}: ${JSON.stringify(text)}`;
        const t0 = await steps(srv);
        const r = await client.chat.completions.create({ ...req, prediction: { type: 'content', content: text } });
        const took = (await steps(srv)) - t0;
        assert.equal(r.choices[0]!.message.content, answer, what);
        assert.equal(r.choices[0]!.finish_reason, base.choices[0]!.finish_reason, what);
        const d = r.usage!.completion_tokens_details!;
        assert.equal(typeof d.accepted_prediction_tokens, 'number', what);
        assert.equal(typeof d.rejected_prediction_tokens, 'number', what);
        assert.ok(d.accepted_prediction_tokens! < r.usage!.completion_tokens, what);
        if (kind === 'own' && r.usage!.completion_tokens >= 16) {
          assert.ok(d.accepted_prediction_tokens! >= 0.75 * r.usage!.completion_tokens, `${what}: ${JSON.stringify(r.usage)}`);
          assert.ok(took * 2 < baseSteps, `${what}: ${took} engine steps, ${baseSteps} without the prediction`);
        }
        // the same request streamed, the prediction as text parts: the same text and usage
        const half = Math.floor(text.length / 2);
        const stream = await client.chat.completions.create({
          ...req, stream: true, stream_options: { include_usage: true },
          prediction: { type: 'content', content: [{ type: 'text', text: text.slice(0, half) }, { type: 'text', text: text.slice(half) }] },
        });
        let streamed = '';
        let usage: OpenAI.CompletionUsage | null | undefined;
        for await (const chunk of stream) {
          streamed += chunk.choices[0]?.delta.content ?? '';
          if (chunk.usage) usage = chunk.usage;
        }
        assert.equal(streamed, answer, what);
        assert.deepEqual(usage, r.usage, what);
      }
    }
  });
}

test('completions: a prediction gives the same text and reports its counts; speculative: false turns it off', async () => {
  const client = clientOf(plain);
  const req = { model, prompt: 'The committee said on Friday that the city', temperature: 0, max_tokens: 40 };
  const base = await client.completions.create(req);
  const text = base.choices[0]!.text;
  const r = await client.completions.create({ ...req, prediction: { type: 'content', content: text } } as OpenAI.CompletionCreateParamsNonStreaming);
  assert.equal(r.choices[0]!.text, text);
  const d = r.usage!.completion_tokens_details!;
  assert.ok(d.accepted_prediction_tokens! >= 25, JSON.stringify(r.usage));
  const t0 = await steps(plain);
  const off = await client.completions.create({ ...req, prediction: { type: 'content', content: text }, speculative: false } as OpenAI.CompletionCreateParamsNonStreaming);
  assert.equal((await steps(plain)) - t0, 40, 'one step per token without speculation');
  assert.equal(off.choices[0]!.text, text);
  assert.deepEqual(off.usage!.completion_tokens_details, { accepted_prediction_tokens: 0, rejected_prediction_tokens: 0 });
});

test('n = 2 and response_format with a prediction: each choice is the answer without it; the counts add up over choices', async () => {
  const client = clientOf(plain);
  const req = { model, messages: [{ role: 'user' as const, content: 'Give the order as JSON.' }], temperature: 0, max_tokens: 48, n: 2, response_format: { type: 'json_object' as const } };
  const base = await client.chat.completions.create(req);
  const answer = base.choices[0]!.message.content!;
  const r = await client.chat.completions.create({ ...req, prediction: { type: 'content', content: answer } });
  assert.deepEqual(r.choices.map((c) => c.message.content), [answer, answer]);
  assert.ok(r.usage!.completion_tokens_details!.accepted_prediction_tokens! >= 0.75 * r.usage!.completion_tokens, JSON.stringify(r.usage));
});

test('a malformed prediction is a 400 naming the field', async () => {
  const client = clientOf(plain);
  const messages = [{ role: 'user' as const, content: 'x' }];
  const cases: Array<[unknown, string, RegExp]> = [
    ['text', 'prediction', /must be an object/],
    [{ type: 'code', content: 'x' }, 'prediction.type', /must be "content", got "code"/],
    [{ content: 'x' }, 'prediction.type', /required/],
    [{ type: 'content' }, 'prediction.content', /required/],
    [{ type: 'content', content: 5 }, 'prediction.content', /string or an array of text parts/],
    [{ type: 'content', content: [{ type: 'image_url', image_url: { url: 'x' } }] }, 'prediction.content[0].type', /must be "text"/],
    [{ type: 'content', content: [{ type: 'text', text: 'a' }, { type: 'text' }] }, 'prediction.content[1].text', /must be a string/],
    [{ type: 'content', content: 'x', extra: 1 }, 'prediction.extra', /unrecognized/],
  ];
  for (const [prediction, param, message] of cases) {
    await assert.rejects(client.chat.completions.create({ model, messages, max_tokens: 2, prediction } as never),
      (e: unknown) => e instanceof OpenAI.BadRequestError && e.param === param && message.test(e.message), `${JSON.stringify(prediction)} → ${param}`);
    await assert.rejects(client.completions.create({ model, prompt: 'x', max_tokens: 2, prediction } as never),
      (e: unknown) => e instanceof OpenAI.BadRequestError && e.param === param, `completions: ${JSON.stringify(prediction)}`);
  }
});
