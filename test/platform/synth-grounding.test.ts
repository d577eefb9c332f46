// Grounding of from-documents answers: content-word support on grounded / ungrounded fixtures, the engine's answer
// log-likelihood against the reference backend's, the passage's log-likelihood gain on floe-brown, and the pipeline
// dropping and counting ungrounded samples (through the package entry, `synth`).

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { contentWords, encodeChat, generate, loadChatTemplate, openModel, startEngine, startServer, synth, wordSupport, type EngineClient, type Gen, type SynthLlm } from '../../src/index.js';
import { EndpointLlm, EngineLlm } from '../../src/platform/synth/llm.js';
import { grounding } from '../../src/platform/synth/grounding.js';
import { loadBrown } from '../../src/train/corpus.js';
import { Rng } from '../../src/train/rng.js';
import { repoPath } from '../repo.js';

const MODEL = repoPath('models/floe-brown');
const dir = mkdtempSync(join(tmpdir(), 'synth-grounding-'));

const PASSAGE = 'The Riverside council voted on Tuesday to close the old mill bridge for repairs. Engineers found cracks in two ' +
  'of its stone piers, and the work is expected to take four months. Traffic will use the Elm Street crossing meanwhile.';
const GROUNDED = [
  'The council closed the old mill bridge because engineers found cracks in two stone piers.',
  'The repairs are expected to take four months.',
  'Traffic will use the Elm Street crossing while the bridge is closed.',
];
const UNGROUNDED = [
  'The mayor resigned after a scandal involving the city budget and a new stadium.',
  'Heavy flooding destroyed the harbour and three warehouses last winter.',
  'Scientists discovered a new species of frog in the tropical rainforest.',
];

test('content-word support: grounded answers are supported, invented ones are not', () => {
  for (const a of GROUNDED) assert.ok(wordSupport(a, PASSAGE).support >= 0.75, `${a}: ${JSON.stringify(wordSupport(a, PASSAGE))}`);
  for (const a of UNGROUNDED) assert.ok(wordSupport(a, PASSAGE).support < 0.35, `${a}: ${JSON.stringify(wordSupport(a, PASSAGE))}`);
  // the ratio is exactly supported / content words, with plural and possessive folded
  const w = wordSupport("The engineers' crack reports mention piers and a dragon.", PASSAGE);
  assert.deepEqual(contentWords("The engineers' crack reports mention piers and a dragon."), ['engineer', 'crack', 'report', 'mention', 'pier', 'dragon']);
  assert.deepEqual(w.unsupported, ['report', 'mention', 'dragon']);
  assert.equal(w.support, 0.5);
  assert.equal(wordSupport('It is what it was.', PASSAGE).support, 1, 'no content words: nothing to contradict');
});

let engine: EngineClient;
let llm: EngineLlm;
before(async () => {
  engine = await startEngine({ model: MODEL, modelId: 'floe-brown', threads: 2, maxNumSeqs: 4 });
  const { tokenizer } = await openModel(MODEL, { backend: 'reference' });
  llm = new EngineLlm(engine, tokenizer!, await loadChatTemplate(MODEL), 'floe-brown');
});
after(async () => { await engine.shutdown(0); });

test("the engine's answer log-likelihood equals the reference backend's over the same tokens", async () => {
  const { model, tokenizer } = await openModel(MODEL, { backend: 'reference' });
  const template = (await loadChatTemplate(MODEL))!;
  const rng = new Rng(Date.now() >>> 0);
  const doc = loadBrown()[rng.int(50)]!;
  const sentence = doc.paragraphs[rng.int(doc.paragraphs.length)]!.join(' ').slice(0, 200);
  const msgs = [{ role: 'user', content: `Say something about this: ${sentence.slice(0, 80)}` }];
  const got = await llm.logprob(msgs, sentence);
  const prompt = encodeChat(tokenizer!, template, msgs, { addGenerationPrompt: true });
  const answer = tokenizer!.encode(sentence, { addSpecialTokens: false });
  const ref = generate(model, [...prompt, ...answer], { maxTokens: 1, promptLogprobs: 0 });
  const want = ref.promptLogprobs!.slice(prompt.length).reduce((a, e) => a + e!.logprob, 0);
  assert.equal(got.tokens, answer.length);
  assert.ok(Math.abs(got.logprob - want) < 1e-3 * answer.length + 1e-3, `engine ${got.logprob} vs reference ${want}`);
});

test("over an endpoint (floe serve, echoed /completions logprobs) the answer's log-likelihood is the engine's", async () => {
  const server = await startServer({ port: 0, ui: false, dataDir: null, kvCacheMemory: 96 * 2 ** 20, maxNumSeqs: 4, threads: 2, log: () => {}, model: MODEL });
  try {
    await server.ready;
    const { tokenizer } = await openModel(MODEL, { backend: 'reference' });
    const ep = await EndpointLlm.open({ url: server.url, template: await loadChatTemplate(MODEL), bos: tokenizer!.bosToken ?? undefined, eos: tokenizer!.eosToken ?? undefined });
    const rng = new Rng((Date.now() ^ 0xe9) >>> 0);
    const doc = loadBrown()[rng.int(100)]!;
    const answer = doc.paragraphs[rng.int(doc.paragraphs.length)]!.join(' ').slice(0, 160);
    const msgs = [{ role: 'user', content: `Passage:\n${PASSAGE}\n\nQuestion: what now?` }];
    const [a, b] = [await ep.logprob(msgs, answer), await llm.logprob(msgs, answer)];
    assert.equal(a.tokens, b.tokens);
    assert.ok(Math.abs(a.logprob - b.logprob) < 1e-3 * b.tokens, `endpoint ${a.logprob} vs engine ${b.logprob}`);
  } finally {
    await server.close(0);
  }
});

test('log-likelihood gain: mean nats/token with the passage minus without, from the engine; the threshold drops below it', async () => {
  // floe-brown (5M parameters, Brown only) does not copy from its context: measured gains of sentences copied from the
  // passage and of foreign sentences overlap (both about -0.3 .. +0.8 nats/token), so this checks the arithmetic and the
  // cut on real engine scores, and the pipeline test below checks the drop with a model that does use the passage.
  const rng = new Rng((Date.now() ^ 0x5eed) >>> 0);
  const doc = loadBrown()[rng.int(100)]!;
  const passage = doc.paragraphs.slice(0, 2).map((p) => p.join(' ')).join('\n\n').slice(0, 400);
  const answer = doc.paragraphs[0]!.join(' ').slice(0, 100);
  const question = 'What does the passage say?';
  const ask = [{ role: 'user', content: `Passage:\n${passage}\n\nQuestion: ${question}` }];
  const g = await grounding(llm, { minSupport: null, minGain: -100 }, passage, question, ask, answer);
  const [w, wo] = [await llm.logprob(ask, answer), await llm.logprob([{ role: 'user', content: question }], answer)];
  const gain = w.logprob / w.tokens - wo.logprob / wo.tokens;
  assert.ok(Math.abs(g.score.ll_gain! - gain) < 2e-4, `${g.score.ll_gain} vs ${gain}`);
  assert.ok(Math.abs(g.score.ll_with! - w.logprob / w.tokens) < 2e-4);
  assert.equal(g.reason, null);
  assert.equal((await grounding(llm, { minSupport: null, minGain: gain + 0.01 }, passage, question, ask, answer)).reason, 'ungrounded_ll');
  assert.equal((await grounding(llm, { minSupport: null, minGain: gain - 0.01 }, passage, question, ask, answer)).reason, null);
  // support is checked first: an answer with no support is dropped before any scoring
  assert.equal((await grounding(llm, { minSupport: 0.9, minGain: 0 }, PASSAGE, question, ask, UNGROUNDED[0]!)).reason, 'ungrounded_words');
});

/** A scripted model: the question prompt gets a question; the answer prompt gets a grounded or an invented answer by unit. */
class Scripted implements SynthLlm {
  readonly name = 'scripted';
  answers = 0;
  async chat(messages: readonly { content?: unknown }[]): Promise<Gen> {
    const text = String(messages[0]!.content);
    const out = /write one question/.test(text) ? `What happened to the old mill bridge (${this.answers})?`
      : (this.answers++ % 2 === 0 ? GROUNDED : UNGROUNDED)[this.answers % 3]!;
    return { text: out, finish: 'stop', promptTokens: 0, completionTokens: 8 };
  }
  async complete(): Promise<Gen> { throw new Error('not used'); }
  openUserTurn(): null { return null; }
  /** A model that reads its context: an answer whose words are in the prompt is likely (-1 nat/token), else -4. */
  async logprob(messages: readonly { content?: unknown }[], response: string): Promise<{ logprob: number; tokens: number }> {
    const n = response.split(' ').length;
    return { logprob: (wordSupport(response, String(messages[0]!.content)).support > 0.7 ? -1 : -4) * n, tokens: n };
  }
}

test('from-documents through synth(): ungrounded answers are dropped and counted, grounded ones keep their score', async () => {
  const docs = Array.from({ length: 8 }, (_, i) => ({ name: `d${i}`, text: PASSAGE }));
  const out = join(dir, 'grounded.jsonl');
  const s = await synth({ method: 'from-documents', llm: new Scripted(), docs, out, concurrency: 1, dedupThreshold: 1 });
  const lines = readFileSync(out, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
  assert.equal(s.units, 8);
  assert.equal(s.rejected.ungrounded_words, 4, JSON.stringify(s));
  assert.equal(s.kept + (s.rejected.duplicate ?? 0), 4);
  for (const l of lines) {
    assert.ok(GROUNDED.includes(l.messages[1].content));
    assert.ok(l.provenance.scores.grounding.support >= 0.75);
    assert.equal(l.provenance.params.min_support, 0.5);
  }
  // minSupport null keeps them all, with their scores
  const all = await synth({ method: 'from-documents', llm: new Scripted(), docs, out: join(dir, 'all.jsonl'), concurrency: 1, dedupThreshold: 1, grounding: { minSupport: null } });
  assert.equal(all.rejected.ungrounded_words, undefined);
  assert.equal(all.kept + (all.rejected.duplicate ?? 0), 8);
  // the log-likelihood check alone (support off) drops the same four, and keeps the gain with each sample
  const ll = await synth({ method: 'from-documents', llm: new Scripted(), docs, out: join(dir, 'll.jsonl'), concurrency: 1, dedupThreshold: 1, grounding: { minSupport: null, minGain: 1 } });
  assert.equal(ll.rejected.ungrounded_ll, 4, JSON.stringify(ll));
  for (const l of readFileSync(join(dir, 'll.jsonl'), 'utf8').split('\n').filter(Boolean).map((x) => JSON.parse(x))) assert.equal(l.provenance.scores.grounding.ll_gain, 3);
});
