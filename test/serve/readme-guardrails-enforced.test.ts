// README (Guard): "--guardrails turns rails on for every request (then a request cannot turn them off: 400)". The
// output rail is what --guardrails enforces; `"output": false` used to switch it off for that request (with
// `"input": true` the answer came back unjudged, 200).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startServer } from '../../src/serve/server.js';
import { repoPath } from '../repo.js';

const BROWN = repoPath('models/floe-brown');
const GUARD = repoPath('models/floe-guard');

test('under --guardrails a request cannot drop the output rail; it may add the input rail', async (t) => {
  const server = await startServer({
    model: BROWN, guardModel: GUARD, guardrails: true, port: 0, ui: false, dataDir: null, threads: 1,
    kvCacheMemory: 32 * 2 ** 20, guardKvCacheMemory: 16 * 2 ** 20, log: () => {},
  });
  t.after(() => server.close(0));
  await server.ready;
  const chat = async (guardrails: unknown) => {
    const r = await fetch(`${server.url}/v1/chat/completions`, {
      method: 'POST', headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'floe-brown', messages: [{ role: 'user', content: 'hi' }], max_tokens: 4, temperature: 0, guardrails }),
    });
    return { status: r.status, body: (await r.json()) as { error?: { param: string; message: string }; usage?: { guard?: { prompt_tokens: number } } } };
  };
  for (const g of [{ input: true, output: false }, { output: false }]) {
    const r = await chat(g);
    assert.equal(r.status, 400, `${JSON.stringify(g)}: ${JSON.stringify(r.body)}`);
    assert.equal(r.body.error!.param, 'guardrails.output');
    assert.match(r.body.error!.message, /enforces guardrails \(--guardrails\)/);
  }
  // the input rail on top: the prompt and the answer are both judged (two guard prompts, each several hundred tokens)
  const one = await chat({});
  const both = await chat({ input: true });
  assert.equal(one.status, 200, JSON.stringify(one.body));
  assert.equal(both.status, 200, JSON.stringify(both.body));
  assert.ok(both.body.usage!.guard!.prompt_tokens > one.body.usage!.guard!.prompt_tokens * 1.5, JSON.stringify([one.body.usage, both.body.usage]));
});
