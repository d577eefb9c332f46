// vLLM's `min_tokens` and `include_stop_str_in_output` (extra body fields) through `floe serve` on floe-brown with the
// official `openai` client, each against an oracle built from plain requests:
// - min_tokens: the first min_tokens tokens are what greedy decoding gives with the stop ids pushed down by
//   logit_bias -100 (the sampler's own bias, not the mask under test); stop strings count only from the token after
//   them, so the text is the unstopped greedy text cut at the first stop that ends past those tokens' text (vLLM's rule);
// - include_stop_str_in_output: the same cut, ending after the stop string; a stop token's own text is kept too;
// - both hold streamed, with n = 2 forks, and under --speculative ngram (the verify rows are masked alike).

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { APIError } from 'openai';
import type OpenAI from 'openai';
import { client, serverProcs, startFloeServe, type Floe } from './floe-process.js';
import { repoPath } from '../repo.js';

const BUILT = repoPath('dist/src/cli/main.js');
const procs = serverProcs();
let plain: Floe;
let spec: Floe;
before(async () => {
  [plain, spec] = await Promise.all([
    startFloeServe(null, { built: BUILT, procs }),
    startFloeServe(null, { built: BUILT, procs, args: ['--speculative', 'ngram', '--num-speculative-tokens', '4'] }),
  ]);
});
after(() => { for (const f of [plain, spec]) f?.proc.kill('SIGTERM'); });

type Body = Record<string, unknown>;
interface Out { text: string; ids: number[]; finish: string }

/** A greedy /v1/completions answer (streamed or whole) with its token ids (vLLM's return_token_ids). */
async function complete(c: OpenAI, body: Body, stream = false): Promise<Out[]> {
  const params = { model: 'floe-brown', temperature: 0, return_token_ids: true, ...body } as never;
  if (!stream) {
    const r = await c.completions.create(params) as unknown as { choices: { index: number; text: string; token_ids: number[]; finish_reason: string }[] };
    return r.choices.sort((a, b) => a.index - b.index).map((ch) => ({ text: ch.text, ids: ch.token_ids, finish: ch.finish_reason }));
  }
  const outs: Out[] = [];
  const s = await c.completions.create({ ...(params as object), stream: true } as never) as unknown as AsyncIterable<{ choices: { index: number; text: string; token_ids?: number[]; finish_reason: string | null }[] }>;
  for await (const ch of s) {
    for (const x of ch.choices) {
      const o = (outs[x.index] ??= { text: '', ids: [], finish: '' });
      o.text += x.text;
      o.ids.push(...(x.token_ids ?? []));
      if (x.finish_reason) o.finish = x.finish_reason;
    }
  }
  return outs;
}

async function tokenize(text: string): Promise<number[]> {
  const r = await fetch(plain.url + '/tokenize', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt: text, add_special_tokens: false }) });
  return ((await r.json()) as { tokens: number[] }).tokens;
}

const PROMPTS = ['The old man said that', 'In the morning, the children', 'He looked at the house and'];

test('min_tokens masks the stop ids for the first min_tokens tokens: greedy equals logit_bias -100 on them, then stops as usual', async () => {
  const stops = [...await tokenize('.'), ...await tokenize(','), ...await tokenize(' the')];
  for (const prompt of PROMPTS) {
    const [free] = await complete(client(plain), { prompt, max_tokens: 40, stop_token_ids: stops });
    assert.equal(free!.finish, 'stop', `${prompt}: stops on a stop id without min_tokens`);
    const min = free!.ids.length + 6;
    const bias = Object.fromEntries(stops.map((id) => [String(id), -100]));
    const [oracle] = await complete(client(plain), { prompt, max_tokens: min, logit_bias: bias });
    assert.ok(oracle!.ids.every((id) => !stops.includes(id)));
    for (const f of [plain, spec]) {
      for (const stream of [false, true]) {
        const outs = await complete(client(f), { prompt, max_tokens: 60, min_tokens: min, stop_token_ids: stops, n: 2 }, stream);
        for (const o of outs) {
          const what = `${prompt} ${f === spec ? 'speculative' : 'plain'} stream=${stream}`;
          assert.deepEqual(o.ids.slice(0, min), oracle!.ids, `${what}: the first min_tokens tokens`);
          assert.ok(o.ids.length > min, `${what}: ${o.ids.length} tokens`);
          // after them a stop id ends it, as without min_tokens
          const at = o.ids.findIndex((id, i) => i >= min && stops.includes(id));
          if (o.finish === 'stop') assert.equal(at, o.ids.length - 1, `${what}: ends at its first stop id past min_tokens`);
          else assert.equal(at, -1, what);
        }
      }
    }
  }
});

test('stop strings count from the token after min_tokens (vLLM): the text is the unstopped text cut at the first stop ending past them', async () => {
  for (const prompt of PROMPTS) {
    const [full] = await complete(client(plain), { prompt, max_tokens: 30, ignore_eos: true });
    for (const min of [1, 4, 9]) {
      const [head] = await complete(client(plain), { prompt, max_tokens: min, ignore_eos: true });
      const L = head!.text.length;
      for (const stop of ['e', 'th', ' a']) {
        const at = full!.text.indexOf(stop, Math.max(0, L - stop.length + 1));
        if (at < 0 || at + stop.length > full!.text.length - 8) continue; // not found in the text the oracle can vouch for
        for (const include of [false, true]) {
          for (const stream of [false, true]) {
            const [o] = await complete(client(plain), { prompt, max_tokens: 30, ignore_eos: true, min_tokens: min, stop: [stop], include_stop_str_in_output: include }, stream);
            const what = `${JSON.stringify(prompt)} min ${min} stop ${JSON.stringify(stop)} include=${include} stream=${stream}`;
            assert.equal(o!.text, full!.text.slice(0, include ? at + stop.length : at), what);
            assert.equal(o!.finish, 'stop', what);
          }
        }
      }
    }
  }
});

test('include_stop_str_in_output without min_tokens keeps the stop string (chat too), and a stop token\'s text', async () => {
  const prompt = PROMPTS[0]!;
  const [full] = await complete(client(plain), { prompt, max_tokens: 30, ignore_eos: true });
  const stop = full!.text.slice(6, 9); // a stop string the greedy text holds
  const at = full!.text.indexOf(stop);
  for (const stream of [false, true]) {
    const [kept] = await complete(client(plain), { prompt, max_tokens: 30, ignore_eos: true, stop: [stop], include_stop_str_in_output: true }, stream);
    assert.equal(kept!.text, full!.text.slice(0, at + stop.length));
    const [cut] = await complete(client(plain), { prompt, max_tokens: 30, ignore_eos: true, stop: [stop] }, stream);
    assert.equal(cut!.text, full!.text.slice(0, at));
  }
  // a stop token: its text is the answer's last text with the flag, left out without it
  const fifth = full!.ids[4]!;
  const [head] = await complete(client(plain), { prompt, max_tokens: 5, ignore_eos: true });
  const [four] = await complete(client(plain), { prompt, max_tokens: 4, ignore_eos: true });
  for (const include of [false, true]) {
    const [o] = await complete(client(plain), { prompt, max_tokens: 30, ignore_eos: true, stop_token_ids: [fifth], include_stop_str_in_output: include });
    assert.equal(o!.finish, 'stop');
    if (!full!.ids.slice(0, 4).includes(fifth)) assert.equal(o!.text, include ? head!.text : four!.text, `stop token include=${include}`);
  }
  // chat completions take both fields
  const c = client(plain);
  const base = { model: 'floe-brown', messages: [{ role: 'user' as const, content: 'Tell me about the river.' }], temperature: 0, max_tokens: 24 };
  const chatFull = (await c.chat.completions.create({ ...base, ignore_eos: true } as never) as OpenAI.ChatCompletion).choices[0]!.message.content!;
  const s = chatFull.slice(4, 6);
  const chatKept = (await c.chat.completions.create({ ...base, ignore_eos: true, stop: [s], include_stop_str_in_output: true } as never) as OpenAI.ChatCompletion).choices[0]!.message.content!;
  assert.equal(chatKept, chatFull.slice(0, chatFull.indexOf(s) + s.length));
  const chatMin = await c.chat.completions.create({ ...base, min_tokens: 24 } as never) as OpenAI.ChatCompletion;
  assert.equal(chatMin.usage!.completion_tokens, 24, 'min_tokens = max_tokens: every token, no EOS before');
});

test('min_tokens and include_stop_str_in_output: bad values and combinations are 400s naming the field', async () => {
  const c = client(plain);
  const cases: [Body, string][] = [
    [{ min_tokens: -1 }, 'min_tokens'], [{ min_tokens: 1.5 }, 'min_tokens'], [{ min_tokens: '3' }, 'min_tokens'],
    [{ min_tokens: 20, max_tokens: 10 }, 'min_tokens'],
    [{ min_tokens: 2, guided_regex: '[a-z]+' }, 'min_tokens'],
    [{ include_stop_str_in_output: 'yes' }, 'include_stop_str_in_output'],
  ];
  for (const [extra, param] of cases) {
    await assert.rejects(c.completions.create({ model: 'floe-brown', prompt: 'The', max_tokens: 8, ...extra } as never),
      (e: unknown) => e instanceof APIError && e.status === 400 && (e.param === param || new RegExp(param).test(e.message)), JSON.stringify(extra));
  }
  await assert.rejects(c.chat.completions.create({ model: 'floe-brown', messages: [{ role: 'user', content: 'hi' }], max_tokens: 8, min_tokens: 2, response_format: { type: 'json_object' } } as never),
    (e: unknown) => e instanceof APIError && e.status === 400 && e.param === 'min_tokens');
  // over what the context leaves (max_tokens left out: the route's budget)
  for (const stream of [false, true]) {
    await assert.rejects(c.chat.completions.create({ model: 'floe-brown', messages: [{ role: 'user', content: 'hi' }], min_tokens: 5000, stream } as never),
      (e: unknown) => e instanceof APIError && e.status === 400 && e.param === 'min_tokens' && /at most the \d+ tokens this answer may have/.test(e.message), `stream=${stream}`);
  }
});

test('allowed_token_ids: only those ids are sampled; greedy and seeded samples equal logit_bias +100 on them (plain and speculative)', async () => {
  const allowed = [...new Set([...await tokenize(' the old man and the river'), ...await tokenize(' was a house.'), ...await tokenize(' he said')])];
  const bias = Object.fromEntries(allowed.map((id) => [String(id), 100]));
  for (const prompt of PROMPTS) {
    for (const sampling of [{ temperature: 0 }, { temperature: 1, seed: 7 }]) {
      const [oracle] = await complete(client(plain), { prompt, max_tokens: 20, ignore_eos: true, logit_bias: bias, ...sampling });
      for (const f of [plain, spec]) {
        for (const stream of [false, true]) {
          const [o] = await complete(client(f), { prompt, max_tokens: 20, ignore_eos: true, allowed_token_ids: allowed, ...sampling }, stream);
          const what = `${prompt} ${JSON.stringify(sampling)} ${f === spec ? 'speculative' : 'plain'} stream=${stream}`;
          assert.ok(o!.ids.every((id) => allowed.includes(id)), `${what}: ${o!.ids}`);
          assert.deepEqual(o!.ids, oracle!.ids, what);
        }
      }
    }
  }
});

test('bad_words: a word\'s token sequences never complete in the output; up to where they would, the greedy text is unchanged', async () => {
  const c = client(plain);
  let tried = 0;
  for (const prompt of [...PROMPTS, 'The story of the old house begins']) {
    const [full] = await complete(c, { prompt, max_tokens: 40, ignore_eos: true });
    // a word of the greedy text that is two or more tokens with its leading space, found there as those tokens
    const words = [...new Set(full!.text.match(/[A-Za-z]{4,}/g) ?? [])];
    for (const word of words) {
      const seq = await tokenize(' ' + word);
      const at = full!.ids.findIndex((_, i) => seq.every((id, j) => full!.ids[i + j] === id));
      if (seq.length < 2 || at < 0) continue;
      tried++;
      const banned = [seq, await tokenize(word)];
      for (const f of [plain, spec]) {
        const [o] = await complete(client(f), { prompt, max_tokens: 40, ignore_eos: true, bad_words: [word] });
        const what = `${JSON.stringify(prompt)} bad word ${JSON.stringify(word)} ${f === spec ? 'speculative' : 'plain'}`;
        const last = at + seq.length - 1; // where the greedy output completed it
        assert.deepEqual(o!.ids.slice(0, last), full!.ids.slice(0, last), `${what}: the same tokens before`);
        assert.notEqual(o!.ids[last], full!.ids[last], what);
        // the token there is greedy's best other than the banned one (the sampler's own bias as the oracle)
        const [next] = await complete(c, { prompt: [...(await tokenize(prompt)), ...full!.ids.slice(0, last)], max_tokens: 1, logit_bias: { [String(seq.at(-1))]: -100 } });
        assert.equal(o!.ids[last], next!.ids[0], `${what}: the next best token`);
        for (const b of banned) {
          if (b.length < 2 && b[0] !== seq.at(-1)) continue;
          const found = o!.ids.findIndex((_, i) => b.every((id, j) => o!.ids[i + j] === id));
          assert.equal(found, -1, `${what}: ${b} completes at ${found}`);
        }
      }
      break;
    }
  }
  assert.ok(tried >= 2, `bad words tried: ${tried}`);
});

test('allowed_token_ids and bad_words: bad values and combinations are 400s naming the field', async () => {
  const c = client(plain);
  const cases: [Body, string][] = [
    [{ allowed_token_ids: [] }, 'allowed_token_ids'], [{ allowed_token_ids: [1 << 20] }, 'allowed_token_ids'], [{ allowed_token_ids: 'x' }, 'allowed_token_ids'],
    [{ allowed_token_ids: [5, 6], guided_choice: ['yes', 'no'] }, 'allowed_token_ids'],
    [{ bad_words: 'the' }, 'bad_words'], [{ bad_words: [''] }, 'bad_words'], [{ bad_words: ['ok', 3] }, 'bad_words'],
    [{ bad_words: ['the'], guided_regex: '[a-z]+' }, 'bad_words'],
    [{ allowed_token_ids: [7], stop_token_ids: [7], min_tokens: 1 }, 'allowed_token_ids'],
  ];
  for (const [extra, param] of cases) {
    await assert.rejects(c.completions.create({ model: 'floe-brown', prompt: 'The', max_tokens: 8, ...extra } as never),
      (e: unknown) => e instanceof APIError && e.status === 400 && (e.param === param || new RegExp(param).test(e.message)), JSON.stringify(extra));
  }
});

test('chat prompt_logprobs: the rendered prompt\'s logprobs, as /v1/completions gives them for the same ids (a prefilled answer scored too); a 400 when streamed', async () => {
  const c = client(plain);
  const convs: { messages: { role: 'user' | 'assistant'; content: string }[]; extra: Body }[] = [
    { messages: [{ role: 'user', content: 'Where is the river?' }], extra: {} },
    { messages: [{ role: 'user', content: 'Tell me a story.' }, { role: 'assistant', content: 'The old man walked to the river' }], extra: { continue_final_message: true, add_generation_prompt: false } },
  ];
  for (const { messages, extra } of convs) {
    for (const k of [0, 3]) {
      const r = await c.chat.completions.create({ model: 'floe-brown', messages, max_tokens: 1, temperature: 0, prompt_logprobs: k, return_token_ids: true, ...extra } as never) as unknown as { prompt_logprobs: (Record<string, { logprob: number; rank: number | null; decoded_token: string }> | null)[]; prompt_token_ids: number[] };
      const tok = await fetch(plain.url + '/tokenize', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ messages, ...(Object.keys(extra).length ? extra : {}) }) });
      const ids = ((await tok.json()) as { tokens: number[] }).tokens;
      assert.deepEqual(r.prompt_token_ids, ids);
      const ref = await c.completions.create({ model: 'floe-brown', prompt: ids, max_tokens: 1, temperature: 0, prompt_logprobs: k } as never) as unknown as { choices: { prompt_logprobs: unknown[] }[] };
      assert.equal(r.prompt_logprobs.length, ids.length);
      assert.equal(r.prompt_logprobs[0], null);
      assert.deepEqual(r.prompt_logprobs, ref.choices[0]!.prompt_logprobs, `k=${k} ${JSON.stringify(extra)}`);
      for (let j = 1; j < ids.length; j++) {
        const e = r.prompt_logprobs[j]!;
        assert.ok(String(ids[j]) in e && Object.keys(e).length <= k + 1 && e[String(ids[j])]!.logprob <= 0);
      }
    }
  }
  // streamed, 0 is taken and gives none: the engine is not asked for them, so the prompt still hits the prefix cache
  const long = [{ role: 'user' as const, content: 'Tell me a long story about the old man, the river, the house and the children in the morning.' }];
  await c.chat.completions.create({ model: 'floe-brown', messages: long, max_tokens: 1 });
  const streamed = { model: 'floe-brown', messages: long, max_tokens: 1, stream: true, stream_options: { include_usage: true } };
  let cached = -1;
  for await (const ch of await c.chat.completions.create({ ...streamed, prompt_logprobs: 0 } as never) as unknown as AsyncIterable<OpenAI.ChatCompletionChunk & { prompt_logprobs?: unknown }>) {
    assert.equal(ch.prompt_logprobs, undefined);
    if (ch.usage) cached = ch.usage.prompt_tokens_details?.cached_tokens ?? 0;
  }
  assert.ok(cached > 0, `cached tokens of a streamed prompt_logprobs 0 request: ${cached}`);
  await assert.rejects(c.chat.completions.create({ model: 'floe-brown', messages: convs[0]!.messages, max_tokens: 1, stream: true, prompt_logprobs: 1 } as never),
    (e: unknown) => e instanceof APIError && e.status === 400 && e.param === 'prompt_logprobs');
});

test('return_tokens_as_token_ids: logprobs name each token token_id:N, the ids the answer holds (chat, completions, streamed)', async () => {
  const c = client(plain);
  const name = (id: number) => `token_id:${id}`;
  for (const stream of [false, true]) {
    // completions, legacy shape: tokens and top_logprobs' keys
    const [base] = await complete(c, { prompt: 'The old man said', max_tokens: 12, ignore_eos: true }, stream);
    const body = { model: 'floe-brown', prompt: 'The old man said', max_tokens: 12, ignore_eos: true, temperature: 0, logprobs: 3, return_tokens_as_token_ids: true };
    const lp = { tokens: [] as string[], top: [] as Record<string, number>[], plainTop: [] as Record<string, number>[] };
    if (!stream) {
      const r = await c.completions.create(body as never) as OpenAI.Completion;
      lp.tokens = r.choices[0]!.logprobs!.tokens!;
      lp.top = r.choices[0]!.logprobs!.top_logprobs! as Record<string, number>[];
    } else {
      for await (const ch of await c.completions.create({ ...body, stream: true } as never) as unknown as AsyncIterable<OpenAI.Completion>) {
        lp.tokens.push(...(ch.choices[0]?.logprobs?.tokens ?? []));
        lp.top.push(...((ch.choices[0]?.logprobs?.top_logprobs ?? []) as Record<string, number>[]));
      }
    }
    assert.deepEqual(lp.tokens, base!.ids.map(name), `completions stream=${stream}`);
    const plain1 = await c.completions.create({ ...body, return_tokens_as_token_ids: false } as never) as OpenAI.Completion;
    lp.top.forEach((t, i) => {
      const want = Object.values(plain1.choices[0]!.logprobs!.top_logprobs![i]!).sort();
      assert.ok(Object.keys(t).every((k) => /^token_id:\d+$/.test(k)) && Object.keys(t).includes(name(base!.ids[i]!)), `top ${i}: ${JSON.stringify(t)}`);
      // the same numbers (a text shared by two tokens merges them in the plain keys, never in ids)
      assert.ok(want.every((v) => Object.values(t).includes(v)));
    });
  }
  // chat: token and top_logprobs' tokens, bytes of the name (vLLM's), the ids return_token_ids gives
  const chat = await c.chat.completions.create({ model: 'floe-brown', messages: [{ role: 'user', content: 'Hello there' }], max_tokens: 10, temperature: 0,
    logprobs: true, top_logprobs: 2, return_tokens_as_token_ids: true, return_token_ids: true } as never) as unknown as { choices: { token_ids: number[]; logprobs: { content: { token: string; bytes: number[]; top_logprobs: { token: string }[] }[] } }[] };
  const ch = chat.choices[0]!;
  assert.deepEqual(ch.logprobs.content.map((e) => e.token), ch.token_ids.map(name));
  for (const e of ch.logprobs.content) {
    assert.deepEqual(e.bytes, [...Buffer.from(e.token)]);
    assert.ok(e.top_logprobs.length === 2 && e.top_logprobs.every((t) => /^token_id:\d+$/.test(t.token)));
  }
  await assert.rejects(c.completions.create({ model: 'floe-brown', prompt: 'x', max_tokens: 1, return_tokens_as_token_ids: 1 } as never),
    (e: unknown) => e instanceof APIError && e.status === 400 && e.param === 'return_tokens_as_token_ids');
});
