// `mpirun -np N floe serve --pipeline-parallel-size N`: the official openai client against rank 0 gets what one
// process gives (continuous batching of concurrent requests, logprobs, chat, Predicted Outputs); kill -9 of a stage ends the job, bounded.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import OpenAI from 'openai';
import { launchServe, MPI_SKIP, rankPid, type Launched } from './mpi-helpers.js';

const WORDS = ['The old man', 'She said that', 'In the morning the', 'It was a', 'They went to the', 'He had never'];
const prompts = Array.from({ length: 5 }, () => WORDS[Math.floor(Math.random() * WORDS.length)]! + ' ' + WORDS[Math.floor(Math.random() * WORDS.length)]!.toLowerCase());

/** Concurrent completions (so they share engine steps), one with prompt logprobs, and a chat completion. */
async function ask(url: string) {
  const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 60_000 });
  const completions = await Promise.all(prompts.map((prompt, i) => client.completions.create({
    model: 'floe-brown', prompt, max_tokens: 8 + i, temperature: 0, logprobs: 2,
  })));
  const chat = await client.chat.completions.create({
    model: 'floe-brown', messages: [{ role: 'user', content: prompts[0]! }], max_tokens: 10, temperature: 0, logprobs: true, top_logprobs: 2,
  });
  // Predicted Outputs: the answer again with itself as the prediction; the same text, its drafts kept
  const plain = await client.chat.completions.create({ model: 'floe-brown', messages: [{ role: 'user', content: prompts[1]! }], max_tokens: 24, temperature: 0 });
  const text = plain.choices[0]!.message.content!;
  const again = await client.chat.completions.create({
    model: 'floe-brown', messages: [{ role: 'user', content: prompts[1]! }], max_tokens: 24, temperature: 0, prediction: { type: 'content', content: text },
  });
  return {
    predicted: { same: again.choices[0]!.message.content === text, accepted: (again.usage?.completion_tokens_details?.accepted_prediction_tokens ?? 0) > 0 },
    completions: completions.map((c) => ({ text: c.choices[0]!.text, logprobs: c.choices[0]!.logprobs, finish: c.choices[0]!.finish_reason, usage: c.usage })),
    chat: { message: chat.choices[0]!.message.content, logprobs: chat.choices[0]!.logprobs },
  };
}

async function stop(s: Launched): Promise<void> {
  s.proc.kill('SIGTERM');
  const t = setTimeout(() => s.proc.kill('SIGKILL'), 20_000);
  await s.exited;
  clearTimeout(t);
}

let want: Awaited<ReturnType<typeof ask>> | undefined;
async function single() {
  if (want) return want;
  const s = await launchServe(0, false, []);
  try { want = await ask(s.url); } finally { await stop(s); }
  return want;
}

/** A deep copy with every number anywhere under a key containing "logprob" rounded to 4 decimals. */
function roundLogprobs<T>(v: T, inside = false): T {
  if (typeof v === 'number') return (inside ? Math.round(v * 1e4) / 1e4 : v) as T;
  if (Array.isArray(v)) return v.map((x) => roundLogprobs(x, inside)) as T;
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, roundLogprobs(x, inside || /logprob/.test(k))])) as T;
  return v;
}

for (const [np, tcp] of [[2, false], [3, true]] as const) {
  test(`mpirun -np ${np} floe serve (${tcp ? 'TCP loopback' : 'shared memory'}): openai client results equal one process`, { skip: MPI_SKIP, timeout: 180_000 }, async () => {
    const expected = await single();
    assert.ok(expected.completions.every((c) => c.text.length > 0));
    assert.deepEqual(expected.predicted, { same: true, accepted: true });
    // the 3-stage job also speculates (ngram): greedy answers stay the one process's
    const s = await launchServe(np, tcp, np === 3 ? ['--speculative', 'ngram'] : []);
    try {
      const got = await ask(s.url);
      // the same tokens; logprobs equal up to the last bits: concurrent requests share engine steps as their arrival
      // times fall, in both servers, and a prefill chunk's rows can take another kernel path (bit equality for the
      // same micro-batches is test/parallel/engine-pipeline.test.ts)
      assert.deepEqual(roundLogprobs(got), roundLogprobs(expected));
      const metrics = await (await fetch(`${s.url}/metrics`)).text();
      if (np === 3) assert.ok(Number(/^floe_spec_decode_num_draft_tokens_total (\S+)$/m.exec(metrics)?.[1]) > 0, 'the stages verified drafts');
    } finally {
      await stop(s);
    }
  });
}

test('kill -9 of a pipeline stage ends the whole job within a bounded time, with a message naming the dead rank', { skip: MPI_SKIP, timeout: 120_000 }, async () => {
  const s = await launchServe(3, false, []);
  const client = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: 'unused', maxRetries: 0, timeout: 60_000 });
  // a long stream in flight when the stage dies
  const inflight = client.completions.create({ model: 'floe-brown', prompt: prompts[0]!, max_tokens: 900, temperature: 0, stream: true })
    .then(async (stream) => { let n = 0; for await (const _ of stream) n++; return n; })
    .then((n) => ({ ok: true as const, n }), (e: Error) => ({ ok: false as const, e }));
  await new Promise((r) => setTimeout(r, 300));
  const victim = rankPid(s.proc.pid!, 1);
  const killedAt = Date.now();
  process.kill(victim, 'SIGKILL');
  const t = setTimeout(() => s.proc.kill('SIGKILL'), 60_000);
  const end = await s.exited;
  clearTimeout(t);
  const took = end.at - killedAt;
  assert.ok(took < 30_000, `the job took ${took} ms to end after the stage died`);
  assert.notEqual(end.code, 0, 'mpirun reports the failure');
  assert.equal(end.signal, null, 'mpirun ended on its own, not by the test\'s SIGKILL');
  assert.match(s.log(), /rank 1 .*(signal 9|Killed)|process rank 1/i, s.log());
  const r = await inflight;
  assert.ok(!r.ok || r.n < 900, 'the in-flight stream did not complete as if nothing happened');
});
