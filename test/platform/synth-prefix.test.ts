// Self-instruct's prompt is prefix-cache friendly: the fixed instruction text comes first, so two units' rendered prompts
// share it token for token and the engine serves it from its prefix cache; the task step stops at the end of its line.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { startEngine } from '../../src/engine/client.js';
import type { EngineClient } from '../../src/engine/protocol.js';
import { encodeChat, type ChatMessage, type ChatTemplate } from '../../src/formats/chat-template.js';
import type { Tokenizer } from '../../src/formats/tokenizer.js';
import { loadTextTools } from '../../src/serve/server.js';
import { DEFAULT_LIMITS } from '../../src/platform/synth/filters.js';
import { EngineLlm, type Gen, type GenOptions, type SynthLlm } from '../../src/platform/synth/llm.js';
import { INSTRUCTION_TOKENS, parseSeeds, selfInstructUnits } from '../../src/platform/synth/methods.js';
import { LshIndex } from '../../src/platform/synth/minhash.js';
import { runSynth } from '../../src/platform/synth/pipeline.js';
import { PromptSet } from '../../src/platform/synth/prompts.js';
import { Rng } from '../../src/train/rng.js';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { ROOT } from '../repo.js';

const MODEL = join(ROOT, 'models/floe-brown');
const prompts = new PromptSet([join(ROOT, 'data/synth')]);
const seeds = parseSeeds(readFileSync(join(ROOT, 'data/synth/seeds.jsonl'), 'utf8'), 'seeds.jsonl');
const GEN = { maxTokens: 200, temperature: 0.8, topP: 0.95 };
let tokenizer: Tokenizer;
let template: ChatTemplate;

before(async () => {
  const t = await loadTextTools(MODEL);
  tokenizer = t.tokenizer!;
  template = t.template!;
});

/** A model that records what it is asked and answers `reply(call)`. */
function fake(reply: (msgs: readonly ChatMessage[], o: GenOptions) => Gen) {
  const calls: { msgs: readonly ChatMessage[]; o: GenOptions }[] = [];
  const llm: SynthLlm = {
    name: 'fake', openUserTurn: () => null, complete: async () => { throw new Error('not used'); },
    chat: async (msgs, o) => { calls.push({ msgs, o }); return reply(msgs, o); },
  };
  return { llm, calls };
}

/** The instruction-step messages of self-instruct units 0..n-1 (answers refused, so each unit asks once). */
async function instructionPrompts(n: number): Promise<{ msgs: readonly ChatMessage[]; o: GenOptions }[]> {
  const f = fake(() => ({ text: "I'm sorry, I cannot help with that.", finish: 'stop', promptTokens: 0, completionTokens: 9 }));
  for (const u of selfInstructUnits(seeds, n, 7, new LshIndex(0.7))) {
    await u.run({ llm: f.llm, prompts, limits: DEFAULT_LIMITS, gen: GEN, rng: new Rng(u.seed), chat: (m, x) => f.llm.chat(m, { ...GEN, seed: 0, ...x }), complete: (p) => f.llm.complete(p, { ...GEN, seed: 0 }) });
  }
  return f.calls;
}

const common = <T>(a: readonly T[], b: readonly T[]) => { let k = 0; while (k < a.length && k < b.length && a[k] === b[k]) k++; return k; };

test('self-instruct: the fixed instruction text precedes the seed examples, so two units share its tokens', async () => {
  const calls = await instructionPrompts(6);
  assert.equal(calls.length, 6);
  const file = readFileSync(join(ROOT, 'data/synth/self-instruct/instruction.txt'), 'utf8');
  const fixed = file.slice(0, file.indexOf('{{examples}}')).trim(); // what every unit sends before its examples
  assert.ok(fixed.length > 150, 'the fixed part is the bulk of the instruction text');
  // the fixed part alone, rendered as a user turn and cut where its own text ends: the tokens every unit must share
  const head = template.render([{ role: 'user', content: fixed }], { bosToken: tokenizer.bosToken ?? '', eosToken: tokenizer.eosToken ?? '' });
  const headIds = tokenizer.encode(head.slice(0, head.indexOf(fixed) + fixed.length), { addSpecialTokens: false });
  const ids = calls.map((c) => encodeChat(tokenizer, template, c.msgs, { addGenerationPrompt: true }));
  let differ = 0;
  for (let i = 1; i < ids.length; i++) {
    const k = common(ids[0]!, ids[i]!);
    // BPE may merge the last fixed token with what follows; everything before it is shared
    assert.ok(k >= headIds.length - 1, `units 0 and ${i} share ${k} tokens, the fixed part is ${headIds.length}`);
    if (k < ids[i]!.length) differ++;
  }
  assert.ok(differ > 0, 'the units differ in their examples');
  // every unit's examples come after the whole fixed text, none before
  for (const c of calls) {
    const text = String(c.msgs[0]!.content);
    assert.ok(text.startsWith(fixed), text.slice(0, 80));
    assert.match(text.slice(fixed.length), /\n1\. .+\n2\. .+\n3\. .+\n4\.$/s);
  }
});

test('self-instruct: the task step stops at its line end within INSTRUCTION_TOKENS; a cut line is dropped as instruction_truncated', async () => {
  const f = fake((msgs, o) => (o.stop?.includes('\n') ? { text: 'Describe a rainy afternoon in a small town, and why', finish: 'length', promptTokens: 0, completionTokens: o.maxTokens }
    : { text: 'unused', finish: 'stop', promptTokens: 0, completionTokens: 1 }));
  const [u] = selfInstructUnits(seeds, 1, 3, new LshIndex(0.7));
  const r = await u!.run({ llm: f.llm, prompts, limits: DEFAULT_LIMITS, gen: GEN, rng: new Rng(u!.seed), chat: (m, x) => f.llm.chat(m, { ...GEN, seed: 0, ...x }), complete: (p) => f.llm.complete(p, { ...GEN, seed: 0 }) });
  assert.deepEqual(r, { ok: false, reason: 'instruction_truncated' });
  assert.equal(f.calls.length, 1, 'no answer is asked for a cut task');
  assert.deepEqual(f.calls[0]!.o.stop, ['\n']);
  assert.equal(f.calls[0]!.o.maxTokens, Math.min(GEN.maxTokens, INSTRUCTION_TOKENS));
});

let engine: EngineClient;
before(async () => { engine = await startEngine({ model: MODEL, modelId: 'floe-brown', threads: 2, maxNumSeqs: 4 }); });
after(async () => { await engine?.shutdown(0); });

test("the engine's prefix cache serves the shared part to the next unit: cached tokens = the shared prefix's full blocks", async () => {
  const inner = new EngineLlm(engine, tokenizer, template, 'floe-brown');
  const seen: { msgs: readonly ChatMessage[]; g: Gen; instruction: boolean }[] = [];
  const llm: SynthLlm = {
    name: inner.name, openUserTurn: () => null, complete: (p, o) => inner.complete(p, o),
    chat: async (msgs, o) => { const g = await inner.chat(msgs, o); seen.push({ msgs, g, instruction: !!o.stop?.includes('\n') }); return g; },
  };
  const units = selfInstructUnits(seeds, 3, 11, new LshIndex(0.7));
  const before = await engine.stats();
  // one unit at a time: each unit's prompt meets the blocks the earlier units left in the cache
  const s = await runSynth({
    method: 'self-instruct', units, llm, prompts, out: join(mkdtempSync(join(tmpdir(), 'synth-prefix-')), 'o.jsonl'), format: 'messages',
    limits: DEFAULT_LIMITS, dedupThreshold: 0.7, window: 1, gen: { ...GEN, maxTokens: 24 }, params: {},
  });
  const after = await engine.stats();
  const asks = seen.filter((x) => x.instruction).map((x) => ({ ids: encodeChat(tokenizer, template, x.msgs, { addGenerationPrompt: true }), g: x.g }));
  assert.equal(asks.length, 3);
  const L = engine.info.blockSize;
  assert.equal(asks[0]!.g.cachedTokens, 0, 'nothing cached before the first unit');
  for (let i = 1; i < asks.length; i++) {
    // the longest prefix any earlier prompt shares with this one, in whole blocks (one token is always computed)
    const shared = Math.max(...asks.slice(0, i).map((a) => common(a.ids, asks[i]!.ids)));
    const expect = Math.floor(Math.min(shared, asks[i]!.ids.length - 1) / L) * L;
    assert.ok(expect >= 4 * L, `the shared prefix covers ${expect / L} blocks`);
    assert.equal(asks[i]!.g.cachedTokens, expect, `unit ${i}`);
  }
  assert.equal(s.prompt_tokens, seen.reduce((a, x) => a + x.g.promptTokens, 0));
  assert.equal(s.cached_prompt_tokens, seen.reduce((a, x) => a + (x.g.cachedTokens ?? 0), 0));
  assert.equal(after.prefixHitTokens - before.prefixHitTokens, s.cached_prompt_tokens, "the engine's own counter agrees");
});
