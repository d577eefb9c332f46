// A burst of 18 concurrent streams through `mpirun -np 2 floe serve`: mixed lengths, four cancelled mid-stream; every
// stream ends within a bounded time with the greedy tokens of one process. Regression for the 16-stream hang: the
// burst's last tokens came back in a micro-batch the worker had not awaited yet, the finished engine reported no
// work, and the worker slept with them undelivered until the next request arrived.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import OpenAI from 'openai';
import { rand } from '../engine/helpers.js';
import { launchServe, MPI_SKIP, type Launched } from './mpi-helpers.js';

const V = 4096;
const BOUND_MS = 60_000; // a hang, not a speed limit: the burst takes a few seconds on a busy 2-core host

interface Ask { readonly prompt: number[]; readonly maxTokens: number; readonly ignoreEos: boolean; readonly cancelAfter: number | null }

/** 4 long streams of equal length (they end in the same last wave, split over both micro-batches), 10 mixed, 4 cancelled. */
function plan(seed: number): Ask[] {
  const r = rand(seed);
  const prompt = (n: number) => Array.from({ length: n }, () => 10 + Math.floor(r() * (V - 20)));
  const asks: Ask[] = [];
  for (let i = 0; i < 4; i++) asks.push({ prompt: prompt(20 + Math.floor(r() * 20)), maxTokens: 40, ignoreEos: true, cancelAfter: null });
  for (let i = 0; i < 10; i++) asks.push({ prompt: prompt(3 + Math.floor(r() * 80)), maxTokens: 2 + Math.floor(r() * 28), ignoreEos: false, cancelAfter: null });
  for (let i = 0; i < 4; i++) asks.push({ prompt: prompt(5 + Math.floor(r() * 40)), maxTokens: 400, ignoreEos: true, cancelAfter: 3 + Math.floor(r() * 6) });
  // arrival order shuffled so the long and cancelled streams do not sit together in the queue
  for (let i = asks.length - 1; i > 0; i--) { const j = Math.floor(r() * (i + 1)); [asks[i], asks[j]] = [asks[j]!, asks[i]!]; }
  return asks;
}

type Params = OpenAI.CompletionCreateParamsStreaming & { ignore_eos: boolean; return_token_ids: boolean };
interface Got { readonly ids: number[]; readonly finish: string | null }

/** One streamed greedy completion; with `cancelAfter`, the client stops reading (and hangs up) after that many tokens. */
async function stream(client: OpenAI, a: Ask, maxTokens: number, cancelAfter: number | null): Promise<Got> {
  const params: Params = { model: 'floe-brown', prompt: a.prompt, max_tokens: maxTokens, temperature: 0, stream: true, ignore_eos: a.ignoreEos, return_token_ids: true };
  const s = await client.completions.create(params);
  const ids: number[] = [];
  let finish: string | null = null;
  for await (const chunk of s) {
    for (const ch of chunk.choices) {
      ids.push(...((ch as unknown as { token_ids?: number[] }).token_ids ?? []));
      finish = ch.finish_reason ?? finish;
    }
    if (cancelAfter !== null && ids.length >= cancelAfter) { s.controller.abort(); break; }
  }
  return { ids, finish };
}

/** Every ask at once; throws naming the streams still open after BOUND_MS. */
async function burst(url: string, asks: readonly Ask[], cancel: boolean): Promise<Got[]> {
  const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'unused', maxRetries: 0, timeout: BOUND_MS });
  const open = new Set(asks.map((_, i) => i));
  // a cancelled ask runs to 24 tokens where it is not cancelled (the reference): enough for its cancelled prefix
  const all = Promise.all(asks.map((a, i) => stream(client, a, cancel || a.cancelAfter === null ? a.maxTokens : 24, cancel ? a.cancelAfter : null)
    .finally(() => open.delete(i))));
  let timer: NodeJS.Timeout | undefined;
  const bound = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`hung: streams ${[...open].join(', ')} of ${asks.length} still open after ${BOUND_MS} ms`)), BOUND_MS);
  });
  try { return await Promise.race([all, bound]); } finally { clearTimeout(timer); }
}

async function metric(url: string, name: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(text);
  if (!m) throw new Error(`/metrics has no ${name}`);
  return Number(m[1]);
}

async function stop(s: Launched): Promise<void> {
  s.proc.kill('SIGTERM');
  const t = setTimeout(() => s.proc.kill('SIGKILL'), 20_000);
  await s.exited;
  clearTimeout(t);
}

test('mpirun -np 2 floe serve: 18 concurrent streams, mixed lengths, 4 cancelled, all end with one process\'s greedy tokens', { skip: MPI_SKIP, timeout: 400_000 }, async () => {
  const seed = Math.floor(Math.random() * 2 ** 31);
  const asks = plan(seed);
  const one = await launchServe(0, false, []);
  let want: Got[];
  try { want = await burst(one.url, asks, false); } finally { await stop(one); }

  // paced steps: a finished micro-batch's results arrive while the worker waits between steps (the hang's window)
  const pp = await launchServe(2, false, [], { FLOE_ENGINE_STEP_DELAY_MS: '10' });
  try {
    for (let round = 0; round < 3; round++) {
      const got = await burst(pp.url, asks, true);
      for (const [i, a] of asks.entries()) {
        const g = got[i]!, w = want[i]!;
        const what = `seed ${seed}, round ${round}, stream ${i} (prompt ${a.prompt.length} tokens, max ${a.maxTokens}${a.cancelAfter !== null ? `, cancelled after ${a.cancelAfter}` : ''})`;
        if (a.cancelAfter === null) {
          assert.deepEqual(g.ids, w.ids, what);
          assert.equal(g.finish, w.finish, what);
          if (a.ignoreEos) assert.equal(g.ids.length, a.maxTokens, what);
        } else {
          assert.ok(g.ids.length >= a.cancelAfter && g.ids.length < a.maxTokens, `${what}: got ${g.ids.length} tokens`);
          const n = Math.min(g.ids.length, w.ids.length);
          assert.deepEqual(g.ids.slice(0, n), w.ids.slice(0, n), what);
        }
      }
      // the cancelled streams' requests leave the engine and free their KV blocks
      const end = Date.now() + 30_000;
      while ((await metric(pp.url, 'floe_num_requests_running')) + (await metric(pp.url, 'floe_num_requests_waiting')) > 0) {
        assert.ok(Date.now() < end, `round ${round}: requests still running 30 s after every stream ended`);
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.equal(await metric(pp.url, 'floe_kv_blocks_used'), 0, `round ${round}: KV blocks still held`);
    }
    assert.ok(await metric(pp.url, 'floe_requests_aborted_total') >= 4, 'the cancelled streams reached the engine as aborts');
  } finally {
    await stop(pp);
  }
});
