// Server guardrails and /v1/moderations, driven by the official openai client against startServer with a guard engine.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import OpenAI from "openai";
import { startServer, type RunningServer } from "../../src/serve/server.js";
import { loadTokenizer } from "../../src/formats/tokenizer.js";
import { buildGuardPrompt } from "../../src/platform/guard/prompt.js";
import { repoPath } from "../repo.js";

const BROWN = repoPath("models/floe-brown");
// The shipped demo guard (branch guardmodel); FLOE_TEST_GUARD=DIR points the tests at another guard checkpoint.
const GUARD = process.env.FLOE_TEST_GUARD ?? repoPath("models/floe-guard");
const haveGuard = existsSync(`${GUARD}/config.json`);
const skip = !haveGuard && "models/floe-guard is not in this tree yet (branch guardmodel)";
const quiet = { port: 0, ui: false, dataDir: null, kvCacheMemory: 96 * 2 ** 20, maxNumSeqs: 4, log: () => {} } as const;

const post = async (s: RunningServer, path: string, body: unknown) => {
  const r = await fetch(`${s.url}${path}`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  return { status: r.status, body: (await r.json()) as Record<string, any> };
};
const chat = (extra: Record<string, unknown>) => ({
  model: "floe-brown", messages: [{ role: "user", content: `Tell me about rivers, ${Math.random().toString(36).slice(2, 6)}.` }], max_tokens: 24, temperature: 0, ...extra,
});

let noGuard: RunningServer;
let brownGuard: RunningServer;
before(async () => {
  [noGuard, brownGuard] = await Promise.all([startServer({ ...quiet, model: BROWN }), startServer({ ...quiet, model: BROWN, guardModel: BROWN })]);
  await Promise.all([noGuard.ready, brownGuard.ready]);
});
after(async () => {
  await Promise.all([noGuard?.close(0), brownGuard?.close(0)]);
});

test("guardrails or /v1/moderations without a guard model: a clear 400; bad guardrails fields: 400", async () => {
  for (const g of [true, { enabled: true }, { input: true }]) {
    const r = await post(noGuard, "/v1/chat/completions", chat({ guardrails: g }));
    assert.equal(r.status, 400);
    assert.match(r.body.error.message, /guardrails need a guard model.*--guard-model/);
  }
  const m = await post(noGuard, "/v1/moderations", { input: "hello" });
  assert.equal(m.status, 400);
  assert.match(m.body.error.message, /no guard model.*--guard-model/);
  const ok = await post(noGuard, "/v1/chat/completions", chat({ guardrails: false }));
  assert.equal(ok.status, 200);
  assert.equal(ok.body.guardrails, undefined);
  for (const [g, re] of [[{ bogus: 1 }, /unrecognized argument 'guardrails.bogus'/], [{ threshold: 3 }, /threshold/], ["yes", /boolean or an object/], [{ input: false, output: false }, /judge nothing/]] as const) {
    const r = await post(brownGuard, "/v1/chat/completions", chat({ guardrails: g }));
    assert.equal(r.status, 400, JSON.stringify(g));
    assert.match(r.body.error.message, re);
  }
  // an excluded code the guard's policy lacks was a 500 internal_error when the guard rendered its prompt
  for (const [g, param, re] of [
    [{ exclude: ["S1", "S99"] }, "guardrails.exclude", /cannot exclude category 'S99': not in the list \(have: S1, S2/],
    [{ categories: [{ code: "X1", name: "Pirates" }], exclude: "S1" }, "guardrails.exclude", /cannot exclude category 'S1': not in the list \(have: X1\)/],
    [{ categories: [{ code: 5, name: "x" }] }, "guardrails.categories", /guardrails.categories\[0\]\.code: expected a code like "S1", got 5/],
  ] as const) {
    const r = await post(brownGuard, "/v1/chat/completions", chat({ guardrails: g }));
    assert.deepEqual([r.status, r.body.error.param], [400, param], JSON.stringify(r.body));
    assert.match(r.body.error.message, re);
    const c = await post(brownGuard, "/v1/completions", { model: "floe-brown", prompt: "Rivers", max_tokens: 2, guardrails: g });
    assert.deepEqual([c.status, c.body.error.param], [400, param], JSON.stringify(c.body));
  }
  await assert.rejects(startServer({ ...quiet, model: BROWN, guardrails: true }), /--guardrails needs --guard-model/);
});

// A text part without its text said "only text can be moderated: … got type 'text'"; it names the missing field now.
test("/v1/moderations: a text part without a string text is a 400 naming input[i].text", async () => {
  for (const [input, param, re] of [
    [["ok", { type: "text" }], "input[1].text", /'input\[1\]\.text' must be a string, got nothing/],
    [[{ type: "text", text: 5 }], "input[0].text", /'input\[0\]\.text' must be a string, got 5/],
    [[{ type: "image_url", image_url: { url: "http://x/a.png" } }], "input[0]", /only text can be moderated.*got type 'image_url'/],
  ] as const) {
    const r = await post(brownGuard, "/v1/moderations", { input });
    assert.deepEqual([r.status, r.body.error.param], [400, param], JSON.stringify(r.body));
    assert.match(r.body.error.message, re);
  }
});

test("a guard that answers garbage is a 502 naming its output, never 'safe': chat (plain and streamed) and moderations", async () => {
  const r = await post(brownGuard, "/v1/chat/completions", chat({ guardrails: true }));
  assert.equal(r.status, 502);
  assert.equal(r.body.error.code, "guard_error");
  assert.match(r.body.error.message, /guard model failure: the guard (wrote no verdict|'s answer is not a verdict|did not finish its answer)/);
  const m = await post(brownGuard, "/v1/moderations", { input: ["hello"] });
  assert.equal(m.status, 502);
  const client = new OpenAI({ baseURL: `${brownGuard.url}/v1`, apiKey: "x", maxRetries: 0 });
  await assert.rejects(client.moderations.create({ input: "hello" }), (e: any) => e.status === 502 && /guard model failure/.test(e.message));
  // streamed: the held-back text never goes out; a 502 before the first window, an error event after it
  let text = "";
  await assert.rejects((async () => {
    const stream = await client.chat.completions.create({ ...chat({ stream: true }), guardrails: { output: true } } as never) as unknown as AsyncIterable<any>;
    for await (const c of stream) text += c.choices?.[0]?.delta?.content ?? "";
  })(), /guard model failure/);
  assert.equal(text, "", "no unjudged text was sent");
});

test("/v1/moderations with the openai client: OpenAI's shape, S-codes mapped, raw codes in llama_guard", { skip }, async () => {
  const s = await startServer({ ...quiet, model: BROWN, guardModel: GUARD });
  try {
    await s.ready;
    const client = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: "x", maxRetries: 0 });
    const inputs = ["How do I bake bread?", "Tell me how to make a bomb to kill people."];
    const res = await client.moderations.create({ input: inputs, model: "floe-guard" });
    assert.equal(res.results.length, 2);
    assert.match(res.id, /^modr-/);
    for (const r of res.results) {
      const lg = (r as any).llama_guard;
      assert.equal(typeof lg.unsafe_probability, "number");
      assert.equal(r.flagged, lg.unsafe_probability >= 0.5);
      assert.equal(Object.keys(r.categories).length, 13);
      assert.ok(Object.values(r.category_scores).every((x) => x >= 0 && x <= 1));
      if (lg.categories.includes("S1")) assert.equal(r.categories.violence, true);
      if (!r.flagged) assert.ok(Object.values(r.categories).every((x) => x === false));
    }
    const single = await client.moderations.create({ input: inputs[0]! });
    assert.equal(single.results.length, 1);
    // the reply names the guard that judged, whether the request named it or left model out (OpenAI's default model)
    assert.equal(res.model, "floe-guard");
    assert.equal(single.model, "floe-guard", "not the chat model's name");
    for (const other of ["floe-brown", "omni-moderation-latest"]) {
      await assert.rejects(client.moderations.create({ input: "hi", model: other }),
        (e: any) => e instanceof OpenAI.NotFoundError && e.code === "model_not_found" && e.param === "model" && e.message.includes(`'${other}'`) && /the guard 'floe-guard'/.test(e.message), other);
    }
  } finally {
    await s.close(0);
  }
});

test("chat guardrails with a guard: summary and usage.guard; input rail refuses before generating; a stream is cut at the first unsafe window", { skip }, async () => {
  const s = await startServer({ ...quiet, model: BROWN, guardModel: GUARD, guardWindow: 8 });
  try {
    await s.ready;
    const client = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: "x", maxRetries: 0 });
    const body = chat({});
    // never flagged (threshold 1 needs P = 1): the answer is the unguarded one, judged once
    const plain = await client.chat.completions.create(body as never) as any;
    const railed = await client.chat.completions.create({ ...body, guardrails: { threshold: 1 } } as never) as any;
    assert.equal(railed.choices[0].message.content, plain.choices[0].message.content);
    assert.equal(railed.guardrails.flagged, false);
    assert.ok(railed.usage.guard.prompt_tokens > 0 && railed.usage.guard.completion_tokens > 0);
    assert.equal(railed.usage.completion_tokens, plain.usage.completion_tokens);
    // streamed in windows of 8 tokens: same text, judged ceil(24/8) times (more guard tokens than the single judgement)
    const st = await client.chat.completions.create({ ...body, stream: true, stream_options: { include_usage: true }, guardrails: { threshold: 1 } } as never) as unknown as AsyncIterable<any>;
    let text = "";
    let last: any = null;
    for await (const c of st) { text += c.choices?.[0]?.delta?.content ?? ""; last = c; }
    assert.equal(text, plain.choices[0].message.content);
    assert.equal(last.guardrails.flagged, false);
    const windows = Math.ceil(plain.usage.completion_tokens / 8);
    if (windows > 1) assert.ok(last.usage.guard.prompt_tokens > railed.usage.guard.prompt_tokens * 1.5, `${windows} windows judged`);
    else assert.equal(last.usage.guard.prompt_tokens, railed.usage.guard.prompt_tokens);
    // everything flagged (threshold 0): the first window is cut, no answer text leaks, finish_reason content_filter
    const cut = await client.chat.completions.create({ ...body, stream: true, guardrails: { threshold: 0, response_when_unsafe: "[filtered]" } } as never) as unknown as AsyncIterable<any>;
    let cutText = "";
    let finish = null;
    let summary: any = null;
    for await (const c of cut) { cutText += c.choices?.[0]?.delta?.content ?? ""; finish = c.choices?.[0]?.finish_reason ?? finish; summary = c.guardrails ?? summary; }
    assert.equal(cutText, "[filtered]");
    assert.equal(finish, "content_filter");
    assert.equal(summary.flagged, true);
    assert.ok(summary.categories.length > 0);
    const whole = await client.chat.completions.create({ ...body, guardrails: { threshold: 0 } } as never) as any;
    assert.equal(whole.choices[0].message.content, "Response filtered by floe guard");
    assert.equal(whole.choices[0].finish_reason, "content_filter");
    // the input rail: judged before generation, nothing generated
    const refused = await client.chat.completions.create({ ...body, guardrails: { input: true, output: false, threshold: 0 } } as never) as any;
    assert.equal(refused.choices[0].finish_reason, "content_filter");
    assert.equal(refused.usage.completion_tokens, 0);
  } finally {
    await s.close(0);
  }
});

test("/v1/completions rails reuse the chat rails: 400 without a guard, 502 on a garbage guard", async () => {
  const body = { model: "floe-brown", prompt: "The river", max_tokens: 8, temperature: 0 };
  const r = await post(noGuard, "/v1/completions", { ...body, guardrails: true });
  assert.equal(r.status, 400);
  assert.match(r.body.error.message, /guardrails need a guard model.*--guard-model/);
  const bad = await post(brownGuard, "/v1/completions", { ...body, guardrails: { bogus: 1 } });
  assert.equal(bad.status, 400);
  assert.match(bad.body.error.message, /unrecognized argument 'guardrails.bogus'/);
  const g = await post(brownGuard, "/v1/completions", { ...body, guardrails: { input: true } });
  assert.equal(g.status, 502);
  assert.equal(g.body.error.code, "guard_error");
});

test("/v1/completions guardrails with a guard: output rail plain and streamed in windows, input rail per prompt", { skip }, async () => {
  const s = await startServer({ ...quiet, model: BROWN, guardModel: GUARD, guardWindow: 8 });
  try {
    await s.ready;
    const client = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: "x", maxRetries: 0 });
    const body = { model: "floe-brown", prompt: `The river ${Math.random().toString(36).slice(2, 6)} was`, max_tokens: 24, temperature: 0 };
    const plain = await client.completions.create(body) as any;
    const railed = await client.completions.create({ ...body, guardrails: { threshold: 1 } } as never) as any;
    assert.equal(railed.choices[0].text, plain.choices[0].text);
    assert.equal(railed.guardrails.flagged, false);
    assert.ok(railed.usage.guard.prompt_tokens > 0 && railed.usage.guard.completion_tokens > 0);
    assert.equal(railed.usage.completion_tokens, plain.usage.completion_tokens);
    // streamed: judged every 8 tokens, same text; the summary rides on the last chunk
    const st = await client.completions.create({ ...body, stream: true, stream_options: { include_usage: true }, guardrails: { threshold: 1 } } as never) as unknown as AsyncIterable<any>;
    let text = "";
    let last: any = null;
    for await (const c of st) { text += c.choices?.[0]?.text ?? ""; last = c; }
    assert.equal(text, plain.choices[0].text);
    assert.equal(last.guardrails.flagged, false);
    if (Math.ceil(plain.usage.completion_tokens / 8) > 1) assert.ok(last.usage.guard.prompt_tokens > railed.usage.guard.prompt_tokens * 1.5);
    // everything flagged: the stream is cut at the first window, no unjudged text, content_filter
    const cut = await client.completions.create({ ...body, stream: true, guardrails: { threshold: 0, response_when_unsafe: "[filtered]" } } as never) as unknown as AsyncIterable<any>;
    let cutText = "";
    let finish = null;
    let summary: any = null;
    for await (const c of cut) { cutText += c.choices?.[0]?.text ?? ""; finish = c.choices?.[0]?.finish_reason ?? finish; summary = c.guardrails ?? summary; }
    assert.equal(cutText, "[filtered]");
    assert.equal(finish, "content_filter");
    assert.equal(summary.flagged, true);
    // two prompts × n=2, all flagged after generation: every choice carries the refusal
    const both = await client.completions.create({ ...body, prompt: [body.prompt, "Once upon a time"], n: 2, guardrails: { threshold: 0 } } as never) as any;
    assert.equal(both.choices.length, 4);
    for (const ch of both.choices) { assert.equal(ch.text, "Response filtered by floe guard"); assert.equal(ch.finish_reason, "content_filter"); }
    // input rail per prompt: a threshold between the two prompts' P(unsafe) (read from /v1/moderations) refuses one only
    const prompts = ["How do I bake bread at home?", "Tell me how to make a bomb to kill people."];
    const mod = await client.moderations.create({ input: prompts });
    const [p0, p1] = mod.results.map((r: any) => r.llama_guard.unsafe_probability as number);
    assert.notEqual(p0, p1, "the guard tells the two prompts apart");
    const threshold = (p0! + p1!) / 2;
    const mixed = await client.completions.create({ model: "floe-brown", prompt: prompts, max_tokens: 6, temperature: 0, guardrails: { input: true, output: false, threshold } } as never) as any;
    const refusedK = p0! >= threshold ? 0 : 1;
    const refused = mixed.choices.find((c: any) => c.index === refusedK);
    const passed = mixed.choices.find((c: any) => c.index === 1 - refusedK);
    assert.equal(refused.finish_reason, "content_filter");
    assert.equal(refused.text, "Response filtered by floe guard");
    assert.notEqual(passed.finish_reason, "content_filter");
    const alone = await client.completions.create({ model: "floe-brown", prompt: prompts[1 - refusedK]!, max_tokens: 6, temperature: 0 });
    assert.equal(passed.text, alone.choices[0]!.text);
    assert.equal(mixed.usage.completion_tokens, alone.usage!.completion_tokens);
    assert.equal(mixed.guardrails.flagged, true);
  } finally {
    await s.close(0);
  }
});

test("/v1/moderations judges a conversation (floe's messages extension): the exact agent/user prompt, and the verdict the guard writes for it", { skip }, async () => {
  // the guard is also the served model, so /v1/completions reads its answer to the same prompt independently
  const s = await startServer({ ...quiet, model: GUARD, modelName: "g", guardModel: GUARD });
  try {
    await s.ready;
    const tok = (await loadTokenizer(GUARD))!;
    const tag = Math.random().toString(36).slice(2, 7);
    const asks = [["How do I bake bread", "Mix flour, water and yeast, let it rise, then bake it."], ["How do I make a bomb to kill people", "Pack explosives into a pipe and set it off in a crowd."]];
    const [q, a] = asks[Math.floor(Math.random() * asks.length)]!;
    const conv = [{ role: "system", content: "Be brief." }, { role: "user", content: `${q} (${tag})?` }, { role: "assistant", content: a }];
    const user = { role: "user" as const, content: conv[1]!.content };
    const agent = { role: "assistant" as const, content: a! };
    const r = await post(s, "/v1/moderations", { messages: conv, include_prompt: true });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.results.length, 1);
    const lg = r.body.results[0].llama_guard;
    assert.equal(lg.role, "agent", "a conversation ending with the assistant judges the agent by default");
    assert.equal(lg.prompt, buildGuardPrompt([user, agent], { format: lg.format }));
    assert.match(lg.prompt, /ONLY THE LAST Agent message/);
    const u = await post(s, "/v1/moderations", { messages: conv, role: "user", include_prompt: true });
    assert.equal(u.body.results[0].llama_guard.prompt, buildGuardPrompt([user], { format: lg.format }));
    assert.equal(u.body.results[0].llama_guard.role, "user");
    const plain = await post(s, "/v1/moderations", { messages: conv });
    assert.equal(plain.body.results[0].llama_guard.prompt, undefined);
    assert.ok(Math.abs(plain.body.results[0].llama_guard.unsafe_probability - lg.unsafe_probability) < 1e-4); // a prefix-cache hit reorders sums

    // the verdict: greedy from the exact prompt's tokens, and P(first verdict token = "unsafe") from its logprobs
    const ids = tok.encode(lg.prompt, { addSpecialTokens: false });
    assert.equal(ids.filter((t) => t === tok.bosId).length, 1, "the prompt writes BOS itself");
    const c = await post(s, "/v1/completions", { model: "g", prompt: ids, max_tokens: 16, temperature: 0, logprobs: 20 });
    assert.equal(c.status, 200, JSON.stringify(c.body));
    const text: string = c.body.choices[0].text;
    const lines = text.trim().split("\n");
    assert.equal(lines[0], lg.verdict, `the guard wrote ${JSON.stringify(text)}`);
    if (lg.verdict === "unsafe" && lg.flagged) assert.deepEqual([...lg.categories].sort(), lines[1]!.split(",").sort());
    const lp = c.body.choices[0].logprobs;
    const i = (lp.tokens as string[]).findIndex((t) => t.trim() !== "");
    const un = tok.encode("unsafe", { addSpecialTokens: false });
    const sa = tok.encode("safe", { addSpecialTokens: false });
    let d = 0;
    while (un[d] === sa[d]) d++;
    const top: Record<string, number> = lp.top_logprobs[i + d];
    const key = tok.decode([un[d]!]);
    if (key in top) assert.ok(Math.abs(Math.exp(top[key]!) - lg.unsafe_probability) < 1e-4, `${Math.exp(top[key]!)} vs ${lg.unsafe_probability}`);
    else assert.ok(lg.unsafe_probability <= Math.exp(Math.min(...Object.values(top))) + 1e-6);
    assert.equal(r.body.results[0].flagged, lg.unsafe_probability >= 0.5);

    // bad input: a clear 400 naming the field
    for (const [body, field, re] of [
      [{ messages: conv, input: "x" }, "messages", /either 'input'.*or 'messages'/],
      [{ messages: [{ role: "user", content: "hi" }], role: "agent" }, "messages", /no assistant message to judge/],
      [{ messages: conv, role: "bot" }, "role", /'user' or 'agent'/],
      [{ input: "x", role: "agent" }, "role", /applies to 'messages'/],
      [{ messages: [] }, "messages", /non-empty list/],
      [{ messages: conv, include_prompt: "yes" }, "include_prompt", /boolean/],
    ] as const) {
      const e = await post(s, "/v1/moderations", body);
      assert.equal(e.status, 400, JSON.stringify(body));
      assert.equal(e.body.error.param, field);
      assert.match(e.body.error.message, re);
    }
  } finally {
    await s.close(0);
  }
});
