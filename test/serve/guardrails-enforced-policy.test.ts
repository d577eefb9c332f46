// README (Guard): under --guardrails a request cannot make the enforced check weaker: a threshold above 0.5, its own
// `categories` or a non-empty `exclude` is a 400 naming the field; a lower threshold (stricter) is taken. Before,
// `"threshold": 1` (nothing is ever flagged), `"exclude"` of every category or a harmless `categories` list loosened
// the enforced output rail for that request. Without --guardrails the same requests are taken (200).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startServer } from '../../src/serve/server.js';
import { defaultCategories } from '../../src/platform/guard/prompt.js';
import { repoPath } from '../repo.js';

const BROWN = repoPath('models/floe-brown');
const GUARD = repoPath('models/floe-guard');

type Reply = {
  status: number;
  body: { error?: { param: string; message: string }; choices?: { finish_reason: string }[]; guardrails?: { flagged: boolean }; results?: { llama_guard: { format: string } }[] };
};

async function serve(guardrails: boolean) {
  const server = await startServer({
    model: BROWN, guardModel: GUARD, guardrails, port: 0, ui: false, dataDir: null, threads: 1,
    kvCacheMemory: 32 * 2 ** 20, guardKvCacheMemory: 16 * 2 ** 20, log: () => {},
  });
  await server.ready;
  const post = async (path: string, body: object): Promise<Reply> => {
    const r = await fetch(`${server.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    return { status: r.status, body: (await r.json()) as Reply['body'] };
  };
  const chat = (guardrails: unknown) => post('/v1/chat/completions', { model: 'floe-brown', messages: [{ role: 'user', content: 'hi' }], max_tokens: 4, temperature: 0, guardrails });
  const complete = (guardrails: unknown) => post('/v1/completions', { model: 'floe-brown', prompt: 'hi', max_tokens: 4, temperature: 0, guardrails });
  return { server, post, chat, complete };
}

// floe-guard judges with Llama Guard 3's policy (the test asserts the format /v1/moderations reports)
const ALL = defaultCategories('llama-guard-3').map((c) => c.code);
const LOOSER: [string, Record<string, unknown>][] = [
  ['guardrails.threshold', { threshold: 1 }],
  ['guardrails.threshold', { threshold: 0.51, input: true }],
  ['guardrails.exclude', { exclude: ALL }],
  ['guardrails.exclude', { exclude: 'S1' }],
  ['guardrails.categories', { categories: ['Talking about the weather'] }],
  ['guardrails.categories', { categories: defaultCategories('llama-guard-3') }],
];

test('under --guardrails a request cannot loosen the judgement (threshold, categories, exclude); a lower threshold is taken', async (t) => {
  const { server, post, chat, complete } = await serve(true);
  t.after(() => server.close(0));
  const m = await post('/v1/moderations', { input: 'hi' });
  assert.equal(m.body.results?.[0]?.llama_guard.format, 'llama-guard-3', JSON.stringify(m.body));
  for (const [param, g] of LOOSER) {
    for (const r of [await chat(g), await complete(g)]) {
      assert.equal(r.status, 400, `${JSON.stringify(g)}: ${JSON.stringify(r.body)}`);
      assert.equal(r.body.error!.param, param, JSON.stringify(r.body));
      assert.match(r.body.error!.message, /enforces guardrails \(--guardrails\)/);
    }
  }
  // stricter or the same: taken. Threshold 0 flags every answer (flagged when P(unsafe) >= threshold, and P >= 0).
  for (const g of [{ threshold: 0.5 }, { exclude: [] }, { response_when_unsafe: 'no' }]) {
    const r = await chat(g);
    assert.equal(r.status, 200, `${JSON.stringify(g)}: ${JSON.stringify(r.body)}`);
  }
  const strict = await chat({ threshold: 0 });
  assert.equal(strict.status, 200, JSON.stringify(strict.body));
  assert.equal(strict.body.guardrails!.flagged, true, JSON.stringify(strict.body));
  assert.equal(strict.body.choices![0]!.finish_reason, 'content_filter');
});

test('without --guardrails the same per-request settings are taken (200)', async (t) => {
  const { server, chat } = await serve(false);
  t.after(() => server.close(0));
  for (const [, g] of LOOSER) {
    const r = await chat(g);
    assert.equal(r.status, 200, `${JSON.stringify(g)}: ${JSON.stringify(r.body)}`);
  }
});
