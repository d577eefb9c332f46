// Each synth method end to end on the built-in floe-brown, in-process: outputs that `floe finetune`'s reader takes, provenance
// that points back at seeds / passages, filters and dedup counted, and many generations in flight at once.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startEngine } from '../../src/engine/client.js';
import type { EngineClient } from '../../src/engine/protocol.js';
import { loadTextTools } from '../../src/serve/server.js';
import { loadBrown } from '../../src/train/corpus.js';
import { parseJsonl } from '../../src/train/data.js';
import { DocumentChunker } from '../../src/platform/synth/chunk.js';
import { DEFAULT_LIMITS } from '../../src/platform/synth/filters.js';
import { EngineLlm } from '../../src/platform/synth/llm.js';
import { evolInstructUnits, fromDocumentsUnits, magpieUnits, parseSeeds, selfInstructUnits, type WorkUnit } from '../../src/platform/synth/methods.js';
import { LshIndex } from '../../src/platform/synth/minhash.js';
import { runSynth, type SynthSummary } from '../../src/platform/synth/pipeline.js';
import { PromptSet } from '../../src/platform/synth/prompts.js';
import { ROOT } from '../repo.js';

const MODEL = join(ROOT, 'models/floe-brown');
const prompts = new PromptSet([join(ROOT, 'data/synth')]);
const seeds = parseSeeds(readFileSync(join(ROOT, 'data/synth/seeds.jsonl'), 'utf8'), 'seeds.jsonl');
let engine: EngineClient;
let llm: EngineLlm;
const dir = mkdtempSync(join(tmpdir(), 'synth-methods-'));

before(async () => {
  const [e, tools] = await Promise.all([startEngine({ model: MODEL, modelId: 'floe-brown', threads: 2, maxNumSeqs: 16 }), loadTextTools(MODEL)]);
  engine = e;
  llm = new EngineLlm(e, tools.tokenizer!, tools.template, 'floe-brown');
});
after(async () => { await engine.shutdown(0); });

async function synth(method: string, units: WorkUnit[], extra: { maxTokens?: number; temperature?: number; window?: number; dedup?: number } = {}) {
  const out = join(dir, `${method}-${Math.random().toString(36).slice(2)}.jsonl`);
  const s = await runSynth({
    method, units, llm, prompts, out, format: 'messages', limits: DEFAULT_LIMITS, dedupThreshold: extra.dedup ?? 0.7, window: extra.window ?? 16,
    gen: { maxTokens: extra.maxTokens ?? 160, temperature: extra.temperature ?? 0.8, topP: 0.95 }, params: { method },
  });
  const lines = readFileSync(out, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
  // every line is a finetune example; counts add up
  if (lines.length) assert.equal(parseJsonl(readFileSync(out, 'utf8'), out).length, lines.length);
  assert.equal(lines.length, s.kept);
  assert.equal(s.kept + Object.values(s.rejected).reduce((a, b) => a + b, 0), units.length);
  for (const l of lines) {
    assert.equal(l.provenance.method, method);
    assert.equal(l.provenance.model, 'floe-brown');
    assert.deepEqual(l.messages.map((m: { role: string }) => m.role), ['user', 'assistant']);
    assert.ok(units.some((u) => u.id === l.provenance.id && u.seed === l.provenance.seed));
  }
  return { s, lines, out };
}

test('self-instruct: new instructions from seed examples, none a near-duplicate of a seed, answered', async () => {
  const seedIndex = new LshIndex(0.7);
  seeds.forEach((s, i) => seedIndex.add(`seed-${i}`, s.instruction));
  const { s, lines } = await synth('self-instruct', selfInstructUnits(seeds, 10, 1, seedIndex));
  assert.ok(s.kept >= 1, JSON.stringify(s));
  for (const l of lines) {
    assert.equal(l.provenance.source.seed_tasks.length, 3);
    assert.equal(seedIndex.query(l.messages[0].content), null);
  }
});

test('evol-instruct: each kept instruction went through 1..rounds successful evolutions; failed rounds are counted, not kept', async () => {
  const rounds = 2;
  const { s, lines } = await synth('evol-instruct', evolInstructUnits(seeds, 10, 2, rounds));
  assert.ok(s.kept >= 1, JSON.stringify(s));
  for (const l of lines) {
    const { evolutions, failed_rounds: failed, seed_task: parent } = l.provenance.source;
    assert.ok(evolutions.length >= 1 && evolutions.length <= rounds);
    assert.equal(evolutions.length + Object.values(failed as Record<string, number>).reduce((a, b) => a + b, 0), rounds);
    assert.notEqual(l.messages[0].content, seeds[parent]!.instruction);
  }
});

test('magpie: the template up to the open user header, the user turn ended by the model at end of turn, then answered', async () => {
  const prefix = llm.openUserTurn();
  // the Llama 3 template's user header, as the template renders it before any content
  assert.equal(prefix, '<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n');
  const { s, lines } = await synth('magpie', magpieUnits(10, 3), { maxTokens: 400 });
  assert.ok(s.kept >= 1, JSON.stringify(s));
  for (const l of lines) {
    // the user turn is what the model writes after the prefix: generating it again (same seed) ends with a stop, not the length
    const again = await llm.complete(prefix!, { maxTokens: 400, temperature: 0.8, topP: 0.95, seed: (await import('../../src/train/rng.js')).mix32(l.provenance.seed, 0) });
    assert.equal(again.finish, 'stop');
    assert.equal(again.text.trim(), l.messages[0].content);
  }
});

test('magpie greedy: every unit writes the same user turn, so dedup keeps one and counts the rest as removed', async () => {
  const { s, lines } = await synth('magpie', magpieUnits(6, 4), { maxTokens: 400, temperature: 0 });
  const passed = s.kept + s.duplicates_removed;
  assert.ok(passed >= 2, JSON.stringify(s));
  assert.equal(s.kept, 1);
  assert.equal(s.rejected.duplicate, passed - 1);
  assert.equal(lines.length, 1);
});

test('from-documents: questions and answers per passage, provenance pointing at the passage offsets', async () => {
  const docs = loadBrown().slice(0, 2).map((d) => ({ name: d.id, text: d.paragraphs.map((p) => p.join(' ')).join('\n\n') }));
  const units = fromDocumentsUnits(docs, new DocumentChunker({ maxTokens: 120, countTokens: (t) => llm.tokenizer.encode(t, { addSpecialTokens: false }).length }), 1, 5, { minSupport: null, minGain: null }).slice(0, 10);
  const { s, lines } = await synth('from-documents', units);
  assert.ok(s.kept >= 1, JSON.stringify(s));
  for (const l of lines) {
    const src = l.provenance.source;
    const doc = docs.find((d) => d.name === src.doc)!;
    assert.equal(src.passage_id, `${src.doc}#${src.start}`);
    assert.ok(src.end > src.start && src.end <= doc.text.length);
    assert.ok(l.provenance.id.includes(src.passage_id));
    assert.ok(l.provenance.scores.grounding.support >= 0 && l.provenance.scores.grounding.support <= 1); // recorded, not enforced here
  }
});

test('many generations are in flight at once: the engine runs several sequences per step', async () => {
  const before = await engine.stats();
  let maxRunning = 0;
  let polling = true;
  const poll = (async () => { while (polling) { maxRunning = Math.max(maxRunning, (await engine.stats()).running); await new Promise((r) => setTimeout(r, 5)); } })();
  const { s } = await synth('self-instruct', selfInstructUnits(seeds, 16, 6, new LshIndex(0.7)), { maxTokens: 48, window: 16 });
  polling = false;
  await poll;
  const after = await engine.stats();
  const tokens = after.generatedTokens - before.generatedTokens;
  const steps = after.steps - before.steps;
  assert.ok(s.generated_tokens > 0);
  assert.ok(maxRunning >= 8, `at most ${maxRunning} sequences ran at once`);
  // one request after another would take a step per token; batched decode makes several tokens per step
  assert.ok(tokens / steps > 4, `${tokens} tokens in ${steps} steps`);
});


test('--judge keeps the score with the sample; --min-score drops unparsed ones; a guard model drops unsafe ones, counted per category', async () => {
  const { Judge } = await import('../../src/platform/synth/judge.js');
  const { LlmGuard } = await import('../../src/platform/synth/filters.js');
  const units = () => magpieUnits(4, 8);
  const base = { method: 'magpie', llm, prompts, format: 'prompt-completion' as const, limits: DEFAULT_LIMITS, dedupThreshold: 0.7, window: 8, gen: { maxTokens: 400, temperature: 0.8, topP: 0.95 }, params: {} };
  const plain = await runSynth({ ...base, units: units(), out: join(dir, 'j0.jsonl') });
  assert.ok(plain.kept >= 1, JSON.stringify(plain));
  // the judge runs greedy on each kept sample
  const judged = await runSynth({ ...base, units: units(), out: join(dir, 'j1.jsonl'), judge: new Judge(llm, prompts) });
  assert.equal(judged.kept, plain.kept);
  const lines = readFileSync(join(dir, 'j1.jsonl'), 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
  for (const l of lines) {
    assert.equal(typeof l.prompt, 'string');
    assert.equal(typeof l.completion, 'string');
    assert.ok('judge' in l.provenance.scores);
    assert.equal(l.provenance.scores.judge_model, 'floe-brown');
  }
  assert.ok(parseJsonl(readFileSync(join(dir, 'j1.jsonl'), 'utf8'), 'j1').every((e) => e.example.kind === 'completion'));
  const strict = await runSynth({ ...base, units: units(), out: join(dir, 'j2.jsonl'), judge: new Judge(llm, prompts), minScore: 3 });
  const unparsed = lines.filter((l) => l.provenance.scores.judge === null).length;
  const low = lines.filter((l) => l.provenance.scores.judge !== null && l.provenance.scores.judge < 3).length;
  assert.equal(strict.rejected.judge_unparsed ?? 0, unparsed);
  assert.equal(strict.kept, plain.kept - unparsed - low);
  // floe-brown as the guard: whatever it answers is parsed as Llama Guard's format (unparsed → dropped as 'unparsed')
  const guarded = await runSynth({ ...base, units: units(), out: join(dir, 'j3.jsonl'), guard: new LlmGuard(llm) });
  const unsafeUnits = Object.entries(guarded.rejected).filter(([r]) => r.startsWith('unsafe:')).reduce((a, [, k]) => a + k, 0);
  assert.equal(unsafeUnits, plain.kept - guarded.kept);
  assert.ok(Object.values(guarded.unsafe).reduce((a, b) => a + b, 0) >= unsafeUnits); // a unit may hit several categories
});
