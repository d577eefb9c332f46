// The output rail with continue_final_message: the guard judges the answer as the client reads it, the final assistant
// message's text followed by its continuation in one turn. Oracle: /v1/moderations on that conversation, written out.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import OpenAI from "openai";
import { startServer, type RunningServer } from "../../src/serve/server.js";
import { repoPath } from "../repo.js";

const quiet = { port: 0, ui: false, dataDir: null, kvCacheMemory: 96 * 2 ** 20, maxNumSeqs: 4, log: () => {} } as const;
let s: RunningServer;
before(async () => {
  s = await startServer({ ...quiet, model: repoPath("models/floe-brown"), guardModel: repoPath("models/floe-guard") });
  await s.ready;
});
after(async () => { await s?.close(0); });

const PREFILL = "Once upon a time, the old man";

test("continue_final_message under the output rail: the prefill and its continuation are judged as one assistant message", async () => {
  const client = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: "unused", maxRetries: 0 });
  for (const content of [PREFILL, [{ type: "text", text: "Once upon a time, " }, { type: "text", text: "the old man" }]]) {
    const user = { role: "user", content: "Tell me a story" };
    const r = await client.chat.completions.create({
      model: "floe-brown", messages: [user, { role: "assistant", content }] as never, max_tokens: 30, temperature: 0,
      add_generation_prompt: false, continue_final_message: true, guardrails: true,
    } as never) as unknown as { choices: { message: { content: string } }[]; guardrails: { unsafe_probability: number } };
    const answer = r.choices[0]!.message.content;
    assert.ok(answer.length > 0);
    const m = await fetch(`${s.url}/v1/moderations`, {
      method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify({ messages: [user, { role: "assistant", content: PREFILL + answer }] }),
    });
    const want = ((await m.json()) as { results: { llama_guard: { unsafe_probability: number } }[] }).results[0]!.llama_guard.unsafe_probability;
    const got = r.guardrails.unsafe_probability;
    assert.ok(Math.abs(got - want) <= 1e-3 * want, `judged P(unsafe) ${got}, the answer as one message ${want}`);
  }
});
