// Speculative decoding in generate(): greedy output identical to plain decoding for every proposer, on the
// built-in model and fixtures; the rejection-sampling verifier keeps the sampler's distribution (chi-square).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import cdf from '@stdlib/stats-base-dists-chisquare-cdf';
import { selectBackend } from '../../src/backend/select.js';
import { generate, type GenerateOptions } from '../../src/model/generate.js';
import type { LlamaModel } from '../../src/model/llama.js';
import { openModel } from '../../src/model/open.js';
import { DEFAULT_SAMPLING, Rng, Sampler, type SamplingParams, TokenCounts } from '../../src/model/sampler.js';
import {
  AdaptiveK, DraftModelProposer, NgramIndex, NgramProposer, type Proposal, type Proposer, type ProposeRequest, SpecCosts, SuffixProposer, verifyDraft,
} from '../../src/model/speculation.js';
import { fixtureModel, rand, randomPrompt } from '../engine/helpers.js';
import { repoPath } from '../repo.js';

const BROWN = repoPath('models/floe-brown');
const brown = await openModel(BROWN, { threads: 2 });
const brownFp8 = (await openModel(BROWN, { threads: 2, load: { dtype: 'fp8' } })).model; // a close but different draft
const gqa = await fixtureModel('gqa_f32');
const mha = await fixtureModel('mha_f32');

/** Proposes the target's own greedy continuation (computed once with plain generate()). */
class OracleProposer implements Proposer {
  readonly name = 'oracle';
  constructor(private readonly full: readonly number[]) {}
  propose(reqs: readonly ProposeRequest[]): Proposal[] {
    return reqs.map((r) => ({ tokens: this.full.slice(r.tokens.length, r.tokens.length + r.k) }));
  }
}

/** Always proposes a token the target will not pick under greedy (the greedy token + 1). */
class WrongProposer implements Proposer {
  readonly name = 'wrong';
  constructor(private readonly full: readonly number[], private readonly V: number) {}
  propose(reqs: readonly ProposeRequest[]): Proposal[] {
    return reqs.map((r) => ({ tokens: Array.from({ length: r.k }, (_, j) => ((this.full[r.tokens.length + j] ?? 0) + 1) % this.V) }));
  }
}

const greedy = (m: LlamaModel, prompt: number[], over: Partial<GenerateOptions> = {}) =>
  generate(m, prompt, { maxTokens: 48, sampling: { temperature: 0 }, stopTokenIds: [], kvDtype: 'f32', ...over });

const tok = brown.tokenizer!;
const brownPrompts = [
  'The cat sat on the mat. The cat sat on the mat. The cat', // repeats
  'In the morning the committee said that the state would', // does not
  'one two three four one two three four one two',
].map((s) => tok.encode(s, { addSpecialTokens: true }));

test('greedy generate() with n-gram, suffix, draft model, oracle and always-wrong proposers equals plain decoding (floe-brown)', () => {
  for (const prompt of brownPrompts) {
    const want = greedy(brown.model, prompt);
    const full = [...prompt, ...want.outputIds];
    const plain = greedy(brown.model, prompt, { logprobs: 2 }); // the logprobs of plain decoding, the same for every case
    const cases: [string, GenerateOptions['speculative'], number][] = [
      ['ngram', 'ngram', 4], ['suffix', 'suffix', 5], ['draft fp8', brownFp8, 3], ['draft self', brown.model, 4],
      ['oracle', new OracleProposer(full), 6], ['wrong', new WrongProposer(full, 4096), 3],
    ];
    for (const [name, speculative, K] of cases) {
      // the counts below check the heuristic's schedule, which measured costs move by timing (the target as its own
      // draft costs a whole step per draft token, so measured costs rightly stop it); the simulation test covers costs
      const heuristic = name === 'wrong' || name === 'draft self' || name === 'oracle';
      const got = greedy(brown.model, prompt, { speculative, numSpeculativeTokens: K, logprobs: 2, ...(heuristic ? { speculativeCosts: false } : {}) });
      assert.deepEqual(got.outputIds, want.outputIds, `${name}, prompt of ${prompt.length}`);
      const s = got.timings.speculative!;
      assert.ok(s.accepted <= s.proposed, name);
      if (name === 'oracle' || name === 'draft self') {
        assert.equal(s.accepted, s.proposed, `${name}: drafts equal to the target's greedy tokens are all accepted`);
        assert.ok(s.proposed >= 30, `${name}: ${s.proposed} proposed`);
      }
      // always wrong: k 3, 1, 1, 1, 1, 1, then paused, probing 3 steps with k = 1 after 8 and 16 steps (48 tokens)
      if (name === 'wrong') assert.ok(s.proposed > 0 && s.proposed <= 14 && s.accepted === 0, `wrong: ${JSON.stringify(s)}`);
      // logprobs come from the verify rows: the same as plain decoding's
      got.logprobs!.forEach((e, i) => {
        assert.equal(e.token, plain.logprobs![i]!.token);
        assert.ok(Math.abs(e.logprob - plain.logprobs![i]!.logprob) < 1e-4, `${name} logprob ${i}`);
      });
    }
  }
  // by the timing-free heuristic: with measured costs a slow stretch of the host can rightly stop speculating (CI saw
  // proposed 0 once), and this checks the proposer's hits, not the schedule
  const rep = greedy(brown.model, brownPrompts[0]!, { speculative: 'ngram', speculativeCosts: false }).timings.speculative!;
  assert.ok(rep.accepted >= 20, `a repeating prompt has n-gram hits: ${JSON.stringify(rep)}`);
});

test('seeded sampling with deterministic drafts (n-gram, suffix, oracle, always wrong) draws plain decoding\'s sample, for every k', () => {
  const sampling = { temperature: 0.9, topP: 0.95, repetitionPenalty: 1.05 };
  for (const [pi, prompt] of brownPrompts.entries()) {
    for (const seed of [3, 1000 + pi]) {
      const want = greedy(brown.model, prompt, { sampling: { ...sampling, seed }, logprobs: 1 });
      const full = [...prompt, ...want.outputIds];
      const other = greedy(brown.model, prompt, { sampling: { ...sampling, seed: seed + 1 } });
      assert.notDeepEqual(other.outputIds, want.outputIds, 'another seed draws another sample (the check has power)');
      for (const K of [1, 2, 5]) {
        const cases: [string, GenerateOptions['speculative']][] = [
          ['ngram', 'ngram'], ['suffix', 'suffix'], ['oracle', new OracleProposer(full)], ['wrong', new WrongProposer(full, 4096)],
        ];
        for (const [name, speculative] of cases) {
          const got = greedy(brown.model, prompt, { sampling: { ...sampling, seed }, speculative, numSpeculativeTokens: K, speculativeCosts: false, logprobs: 1 });
          assert.deepEqual(got.outputIds, want.outputIds, `${name}, k ${K}, seed ${seed}, prompt ${pi}`);
          got.logprobs!.forEach((e, i) => assert.ok(Math.abs(e.logprob - want.logprobs![i]!.logprob) < 1e-4, `${name} logprob ${i}`));
          const st = got.timings.speculative!;
          if (name === 'oracle') assert.equal(st.accepted, st.proposed, 'drafts of the seeded sample itself are all kept');
          if (name === 'wrong') assert.equal(st.accepted, 0);
        }
      }
    }
  }
});

test('greedy generate() with speculation equals plain decoding on fixtures (random prompts, a different draft model, stops)', () => {
  const r = rand(11);
  for (let i = 0; i < 12; i++) {
    const base = randomPrompt(r, 3 + Math.floor(r() * 20));
    const prompt = i % 2 ? [...base, ...base, ...base.slice(0, 4)] : base; // half repeat
    const m = i % 3 === 2 ? mha : gqa;
    const eos = m.config.eosTokenIds;
    const maxTokens = 1 + Math.floor(r() * 60);
    const want = greedy(m, prompt, { maxTokens, stopTokenIds: eos });
    for (const speculative of ['ngram', 'suffix', m === gqa ? mha : gqa] as const) {
      // a draft model as costly as the target never pays, so measured costs would stop it: the heuristic keeps the
      // verify path running
      const got = greedy(m, prompt, { maxTokens, stopTokenIds: eos, speculative, numSpeculativeTokens: 1 + (i % 5), ...(typeof speculative === 'string' ? {} : { speculativeCosts: false }) });
      assert.deepEqual(got.outputIds, want.outputIds, `prompt ${i}, ${typeof speculative === 'string' ? speculative : 'draft'}`);
      assert.equal(got.finishReason, want.finishReason);
      if (typeof speculative !== 'string' && maxTokens > 2) assert.ok(got.timings.speculative!.proposed > 0, 'the draft model proposed');
    }
  }
});

test('a draft model with another vocabulary is refused with a clear error', () => {
  assert.throws(() => greedy(gqa, [1, 2, 3], { speculative: brown.model }), /draft model vocabulary \(4096 tokens\) differs from the target's \(256\)/);
});

test('a bad draft cap is refused naming the option given: numSpeculativeTokens or numPredictionTokens (Engine and generate())', async () => {
  const { Engine } = await import('../../src/engine/engine.js');
  const prompt = [1, 2, 3];
  for (const [opts, option] of [[{ numSpeculativeTokens: 0 }, 'numSpeculativeTokens'], [{ numPredictionTokens: 0 }, 'numPredictionTokens'], [{ numPredictionTokens: 2.5 }, 'numPredictionTokens']] as const) {
    const got = opts.numSpeculativeTokens ?? opts.numPredictionTokens;
    const want = new RegExp(`^${option} must be an integer >= 1, got ${got}$`);
    assert.throws(() => new Engine(gqa, null, { kvDtype: 'f32', kvCacheMemory: 1 << 20, speculative: 'ngram', ...opts }), (e: Error) => e instanceof RangeError && want.test(e.message), `Engine ${option}`);
    const g: GenerateOptions = { maxTokens: 4, sampling: { ...DEFAULT_SAMPLING, temperature: 0 }, speculative: 'ngram', prediction: [4, 5, 6], ...opts };
    assert.throws(() => generate(gqa, prompt, g), (e: Error) => e instanceof RangeError && want.test(e.message), `generate ${option}`);
  }
});

test("generate() with 'suffix' keeps one index per model: a call whose output repeats an earlier call's drafts it", () => {
  // a fresh random prompt whose greedy continuation does not loop (ngram, with no memory across calls, keeps at most
  // 12 drafts of it: floe-brown loops on some random prompts, and a loop drafts itself); timing-free k
  let prompt: number[] = [], ng = { proposed: 0, accepted: 0 }, seed = 0;
  for (let t = 0; t < 30 && (t === 0 || ng.accepted > 12); t++) {
    seed = Math.floor(Math.random() * 2 ** 31);
    const r = rand(seed);
    prompt = [128000 % 4096, ...Array.from({ length: 12 }, () => Math.floor(r() * 4000))];
    ng = greedy(brown.model, prompt, { speculative: 'ngram', speculativeCosts: false }).timings.speculative!;
  }
  assert.ok(ng.accepted <= 12, `30 random prompts whose continuations all loop (last seed ${seed})`);
  const opts = { speculative: 'suffix' as const, speculativeCosts: false };
  const want = greedy(brown.model, prompt);
  const first = greedy(brown.model, prompt, opts);
  const again = greedy(brown.model, prompt, opts);
  assert.deepEqual(first.outputIds, want.outputIds, `seed ${seed}`);
  assert.deepEqual(again.outputIds, want.outputIds, `seed ${seed}`);
  const [a, b] = [first.timings.speculative!, again.timings.speculative!];
  // 60 seeds: kept >= 0.85 of proposed, >= 35, >= 19 more than the first call, >= 23 more than ngram
  assert.ok(b.accepted >= 0.75 * b.proposed && b.accepted >= 30, `the repeat drafts the first call's output (seed ${seed}): ${JSON.stringify(b)}`);
  assert.ok(b.accepted >= a.accepted + 12, `and keeps more than the first call (seed ${seed}): ${JSON.stringify([a, b])}`);
  assert.ok(b.accepted >= ng.accepted + 15, `ngram does not learn across calls (seed ${seed}): ${JSON.stringify([ng, b])}`);
});

test('n-gram and suffix proposers: prompt lookup, the index learns finished requests and forgets the oldest', () => {
  const ng = new NgramProposer(2, 3);
  assert.deepEqual(ng.one([5, 6, 7, 8, 9, 5, 6, 7], 3), [8, 9, 5]);
  assert.deepEqual(ng.one([1, 2, 3, 4], 3), []);
  const sx = new SuffixProposer(2, 4, 12);
  assert.deepEqual(sx.one([40, 41, 42], 3), []);
  sx.learn([10, 40, 41, 42, 43, 44, 45]);
  assert.deepEqual(sx.one([7, 40, 41, 42], 3), [43, 44, 45]);
  sx.learn([50, 51, 52, 53, 54, 55, 56, 57]); // 15 tokens > 12: the first document is evicted
  assert.deepEqual(sx.one([7, 40, 41, 42], 3), []);
  assert.deepEqual(sx.one([9, 52, 53], 2), [54, 55]);
  const a = new AdaptiveK(4);
  a.update(4, 1);
  assert.equal(a.k, 2);
  a.update(2, 2);
  assert.equal(a.k, 3);
  a.update(3, 0);
  assert.equal(a.k, 1);
});

/** Brute force: the greatest e <= N - 1 with tokens[e - n, e) = tokens[N - n, N), or -1. */
function bruteLatest(t: readonly number[], n: number): number {
  const N = t.length;
  for (let e = N - 1; e >= n; e--) if (t.slice(e - n, e).every((x, i) => x === t[N - n + i])) return e;
  return -1;
}

test('NgramIndex and the indexed n-gram / suffix proposers equal a brute-force scan on random growing sequences', () => {
  const r = rand(77);
  for (let trial = 0; trial < 40; trial++) {
    const V = 2 + Math.floor(r() * (trial % 4 === 0 ? 200 : 6)); // tiny vocabularies: many repeats
    const [minN, maxN] = trial % 3 === 0 ? [1, 3] : [2, 2 + Math.floor(r() * 6)];
    const ix = new NgramIndex(minN, maxN);
    const ng = new NgramProposer(minN, maxN);
    const sx = new SuffixProposer(minN, maxN);
    const t: number[] = [];
    let checked = 0;
    for (let step = 0; step < 150; step++) {
      // the sequence grows by 1..4 tokens per step (accepted drafts), sometimes it is replaced (a reused seqId)
      if (r() < 0.02) { t.length = Math.floor(r() * t.length); t.push(V); } // diverges from what was indexed
      const add = 1 + Math.floor(r() * 4);
      for (let i = 0; i < add; i++) t.push(Math.floor(r() * V));
      ix.update(t);
      for (let n = minN; n <= maxN; n++) { assert.equal(ix.latest(t, n), bruteLatest(t, n), `trial ${trial} step ${step} n ${n} N ${t.length}`); checked++; }
      const k = 1 + Math.floor(r() * 5);
      let want: number[] = [];
      for (let n = Math.min(maxN, t.length - 1); n >= minN; n--) {
        const e = bruteLatest(t, n);
        if (e >= 0) { want = t.slice(e, Math.min(t.length, e + k)); break; }
      }
      assert.deepEqual(ng.propose([{ seqId: 's', tokens: t, promptLen: 1, k, blockTable: [] }])[0]!.tokens, want, `ngram trial ${trial} step ${step}`);
      assert.deepEqual(sx.propose([{ seqId: 's', tokens: t, promptLen: 1, k, blockTable: [] }])[0]!.tokens, want, `suffix (no documents) trial ${trial} step ${step}`);
      assert.deepEqual(ng.one(t, k), want, 'a one-off lookup without a seqId');
    }
    ng.release('s');
    assert.deepEqual(ng.propose([{ seqId: 's', tokens: t.slice(0, 3), promptLen: 1, k: 2, blockTable: [] }])[0]!.tokens,
      (() => { const u = t.slice(0, 3); for (let n = Math.min(maxN, 2); n >= minN; n--) { const e = bruteLatest(u, n); if (e >= 0) return u.slice(e, Math.min(3, e + 2)); } return []; })(), 'after release the sequence starts over');
    assert.ok(checked >= 150);
  }
  assert.throws(() => new NgramIndex(0, 2), /1 <= minN <= maxN/);
});

test('adaptive k: a failing streak stops speculating, probes with k = 1 after a pause that doubles per failed probe, a hit resets it', () => {
  const a = new AdaptiveK(4, 6, 8, 32, 3);
  const steps: number[] = [];
  const hitAt = 150;
  for (let step = 0; step < 260; step++) {
    const k = a.next();
    steps.push(k);
    if (k > 0) a.update(k, step >= hitAt ? k : 0);
    else a.tick();
  }
  // misses at k 4, 1, 1, 1, 1, 1 → pause 8, probe 3 steps → pause 16, probe → pause 32 (the cap), probe → 32 ...
  assert.deepEqual(steps.slice(0, 7), [4, 1, 1, 1, 1, 1, 0]);
  const spec = steps.map((k, i) => (k > 0 ? i : -1)).filter((i) => i >= 6 && i < hitAt);
  const probes = (start: number): number[] => [start, start + 1, start + 2];
  const p1 = 6 + 8, p2 = p1 + 3 + 16, p3 = p2 + 3 + 32, p4 = p3 + 3 + 32, p5 = p4 + 3 + 32;
  assert.deepEqual(spec, [...probes(p1), ...probes(p2), ...probes(p3), ...probes(p4), ...probes(p5)]);
  assert.ok(spec.every((i) => steps[i] === 1), 'probes use k = 1');
  // the first probe at or after step 150 is accepted: k climbs back to K and stays
  const back = steps.findIndex((k, i) => i >= hitAt && k > 0);
  assert.equal(back, p5 + 3 + 32);
  assert.deepEqual(steps.slice(back, back + 6), [1, 2, 3, 4, 4, 4]);
  assert.ok(steps.slice(back).every((k) => k > 0), 'no pause while drafts are kept');
  // a partial acceptance is not a miss: no pause while something is kept now and then
  const b = new AdaptiveK(4, 2);
  for (let i = 0; i < 50; i++) { const k = b.next(); assert.ok(k >= 1, `step ${i}`); b.update(k, i % 2); }
  // next() has no side effect: asking twice per step (a scheduler's plan) does not shorten a pause
  const c = new AdaptiveK(2, 1, 4, 4, 1);
  c.update(2, 0);
  for (let i = 0; i < 4; i++) { assert.equal(c.next(), 0); assert.equal(c.next(), 0); c.tick(); }
  assert.equal(c.next(), 1);
});

test('SpecCosts: a step\'s time fitted as a + b·rows + j·drafting, the proposer\'s time per token, the rate; best k by net gain', () => {
  const c = new SpecCosts(0.97);
  assert.equal(c.best(0.9, 4), null, 'unmeasured: no cap');
  const r = rand(31);
  let tok = 0, sec = 0;
  for (let i = 0; i < 400; i++) {
    const seqs = 1 + Math.floor(r() * 4);
    const drafting = Math.floor(r() * (seqs + 1));
    const rows = seqs + drafting * (1 + Math.floor(r() * 3));
    const step = 0.010 + 0.002 * rows + 0.003 * drafting; // a = 10 ms, b = 2 ms a row, j = 3 ms a drafting sequence
    const drafted = rows - seqs;
    const prop = 0.0005 * drafted; // 0.5 ms a drafted token
    const emitted = seqs + Math.floor(r() * (drafted + 1));
    c.observe(rows, step, prop, drafted, emitted, drafting, seqs);
    tok = 0.97 * tok + emitted; sec = 0.97 * sec + step + prop;
  }
  const m = c.costs();
  assert.ok(m.fitted && Math.abs(m.row - 0.002) < 1e-6 && Math.abs(m.jump - 0.003) < 1e-6, JSON.stringify(m));
  assert.ok(Math.abs(m.draftToken - 0.0005) < 1e-9 && Math.abs(m.rate - tok / sec) < 1e-6 * m.rate, JSON.stringify(m));
  // best(): the k maximising the tokens gained less what the added time would give at the rate, against brute force
  for (const alpha of [0, 0.1, 0.3, 0.5, 0.7, 0.9, 1]) {
    let want = 0, top = 0;
    for (let k = 1; k <= 6; k++) {
      let g = 0;
      for (let i = 1; i <= k; i++) g += alpha ** i;
      const net = g - m.rate * (m.jump + k * (m.row + m.draftToken));
      if (net > top) { top = net; want = k; }
    }
    assert.equal(c.best(alpha, 6), want, `alpha ${alpha}`);
  }
  // without a plain step in the window there is no anchor: no cap, and the loop is asked for a plain step
  const d = new SpecCosts();
  for (let i = 0; i < 4; i++) { assert.equal(d.wantsPlain(), false, `step ${i}`); d.observe(2 + (i % 3), 0.02 + 0.001 * (i % 3), 0, 1 + (i % 3), 2, 1); }
  assert.equal(d.wantsPlain(), true, 'two plain steps asked for after 4 drafting steps');
  assert.equal(d.best(0.9, 4), null);
  // one sequence that always drafts one token: rows and drafting move together, the ridge splits the step between
  // them; a plain step then anchors the fit
  const e = new SpecCosts();
  e.observe(1, 0.010, 0, 0, 1, 0);
  for (let i = 0; i < 40; i++) e.observe(2, 0.016, 0, 1, 2, 1);
  const em = e.costs();
  assert.ok(em.fitted && Math.abs(em.row + em.jump - 0.006) < 1e-4 && Math.abs(em.row - em.jump) < 1e-4, JSON.stringify(em));
  for (let i = 0; i < 23; i++) e.observe(2, 0.016, 0, 1, 2, 1);
  assert.equal(e.wantsPlain(), false, '63 drafting steps since the plain one');
  e.observe(2, 0.016, 0, 1, 2, 1);
  assert.equal(e.wantsPlain(), true, 'every 64 steps plain ones');
  // the first plain step after a drafting one (its caches refilled after the draft) stays out of the fit; the second counts
  const before = e.costs();
  e.observe(1, 0.050, 0, 0, 1, 0);
  assert.deepEqual([e.costs().row, e.costs().jump], [before.row, before.jump], 'a plain step right after drafting is not fitted');
  assert.equal(e.wantsPlain(), true, 'a second plain step is asked for');
  e.observe(1, 0.010, 0, 0, 1, 0);
  assert.equal(e.wantsPlain(), false);
});

test('SpecCosts under steady arrivals: steps that carry prompt chunks fit b, j and a prompt token\'s cost; the rate counts decode time only', () => {
  const c = new SpecCosts(0.97);
  const r = rand(37);
  let tok = 0, sec = 0;
  for (let i = 0; i < 400; i++) {
    const seqs = 1 + Math.floor(r() * 4);
    const drafting = Math.floor(r() * (seqs + 1));
    const rows = seqs + drafting * (1 + Math.floor(r() * 3));
    const prompt = r() < 0.8 ? 16 + Math.floor(r() * 240) : 0; // most steps carry a chunk of some prompt
    const step = 0.010 + 0.002 * rows + 0.003 * drafting + 0.0004 * prompt;
    const emitted = seqs + Math.floor(r() * (rows - seqs + 1));
    c.observe(rows, step, 0, rows - seqs, emitted, drafting, seqs, prompt);
    tok = 0.97 * tok + emitted; sec = 0.97 * sec + step - 0.0004 * prompt;
  }
  const m = c.costs();
  assert.ok(m.fitted && Math.abs(m.row - 0.002) < 1e-6 && Math.abs(m.jump - 0.003) < 1e-6 && Math.abs(m.promptToken - 0.0004) < 1e-8, JSON.stringify(m));
  // the first steps, before the prompt cost was fitted, counted their chunks' time; by now that has been forgotten
  assert.ok(Math.abs(m.rate - tok / sec) < 1e-3 * m.rate, `${m.rate} against ${tok / sec}`);
  // every step with a prompt chunk: the fit still separates the three (the chunk's size varies)
  const d = new SpecCosts();
  for (let i = 0; i < 200; i++) {
    const drafting = i % 5 === 0 ? 0 : 1 + (i % 2), rows = 2 + drafting * (1 + (i % 3)), prompt = 32 * (1 + (i % 7));
    d.observe(rows, 0.004 + 0.001 * rows + 0.002 * drafting + 0.0001 * prompt, 0, rows - 2, 2, drafting, 2, prompt);
  }
  const n = d.costs();
  assert.ok(n.fitted && Math.abs(n.row - 0.001) < 1e-6 && Math.abs(n.jump - 0.002) < 1e-6 && Math.abs(n.promptToken - 0.0001) < 1e-8, JSON.stringify(n));
  // emitting tokens (text, stops) costs per token whether drafted or not: it slows the rate, never the rows
  const quiet = new SpecCosts(), emitting = new SpecCosts();
  for (let i = 0; i < 100; i++) {
    const drafting = i % 4 === 0 ? 0 : 1, rows = 1 + drafting * (1 + (i % 3)), out = 1 + drafting * (i % 2);
    quiet.observe(rows, 0.001 + 0.0002 * rows + 0.0003 * drafting, 0, rows - 1, out, drafting);
    emitting.observe(rows, 0.001 + 0.0002 * rows + 0.0003 * drafting, 0, rows - 1, out, drafting, 1, 0, 0.0005 * out);
  }
  const [q, e] = [quiet.costs(), emitting.costs()];
  assert.ok(Math.abs(q.row - e.row) < 1e-12 && Math.abs(q.jump - e.jump) < 1e-12 && e.rate < 0.8 * q.rate, JSON.stringify([q, e]));
});

test('adaptive k with measured costs: a fit that says nothing pays is probed and corrected, though every sequence is shorter than its pause', () => {
  // a sequence's first drafting steps ran 5× slow (the JIT compiling the proposer and the verifier, or a stall)
  // after 100 plain steps: nothing pays
  const costs = new SpecCosts();
  for (let i = 0; i < 100; i++) costs.observe(1, 0.001, 0, 0, 1, 0);
  for (let i = 0; i < 4; i++) costs.observe(3, 0.005, 0, 2, 1, 1);
  assert.equal(costs.best(0.95, 4), 0, 'fitted on the slow steps, no k pays even at 95% acceptance');
  // then 40 sequences of 64 steps, each shorter than the 128-step pause a sequence starts with when its pool pays
  // for nothing; true costs: a row adds a tenth of a plain step, drafts are kept 90% of the time
  let seed = 12345;
  const rnd = (): number => ((seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) / 2 ** 32);
  /** Drafting steps of each of `n` sequences of 64 steps: `kept(k)` drafts kept, `rowSec` a draft row's cost. */
  const sequences = (c: SpecCosts, n: number, kept: (k: number) => number, rowSec: number): number[] => Array.from({ length: n }, () => {
    const ak = new AdaptiveK(4, 6, 8, 128, 3, c);
    let drafting = 0;
    for (let i = 0; i < 64; i++) {
      const k = ak.next();
      if (k > 0) {
        const a = kept(k);
        ak.update(k, a);
        c.observe(1 + k, 0.001 + rowSec * k, 0, k, a + 1, 1);
        drafting++;
      } else {
        ak.tick();
        c.observe(1, 0.001, 0, 0, 1, 0);
      }
    }
    return drafting;
  });
  const drafting = sequences(costs, 40, (k) => { let a = 0; while (a < k && rnd() < 0.9) a++; return a; }, 0.0001);
  const late = drafting.slice(-10);
  assert.ok(late.every((n) => n >= 48), `the last 10 sequences draft on most of their 64 steps: ${drafting}`);
  assert.ok((costs.best(0.9, 4) ?? 0) >= 3, `the fit was corrected: ${JSON.stringify(costs.costs())}`);

  // where the fit is right (drafting costs 5 plain steps, a third of drafts kept), these probes grow rarer: each one
  // after which drafting does not resume doubles the wait (256, 512, 1024, ... steps)
  const dear = new SpecCosts();
  for (let i = 0; i < 100; i++) dear.observe(1, 0.001, 0, 0, 1, 0);
  for (let i = 0; i < 4; i++) dear.observe(3, 0.005, 0, 2, 1, 1);
  const probes = sequences(dear, 64, () => (rnd() < 1 / 3 ? 1 : 0), 0.004).reduce((a, b) => a + b, 0); // 4,096 steps
  assert.ok(probes >= 2 && probes <= 5, `probes in 4,096 steps where nothing pays: ${probes} (every 256 steps would be 16)`);
});

test('adaptive k with measured costs: a new sequence starts from the pooled acceptance, paused where it pays for nothing, until the pool fades', () => {
  // costs where a drafting step takes 1.9 plain steps (a draft model on a small target)
  const costs = new SpecCosts();
  costs.observe(1, 0.001, 0, 0, 1, 0);
  for (let i = 0; i < 40; i++) costs.observe(2, 0.0013, 0.0006, 1, 1, 1);
  costs.observe(1, 0.001, 0, 0, 1, 0);
  assert.equal(costs.acceptance(), null, 'no verify outcomes pooled yet');
  // nothing pooled yet with costs measured (drafting has not been tried lately): the first probe waits as long as
  // a probe's cost asks (SpecCosts.probePause: ~2% of the tokens)
  const first = new AdaptiveK(4, 6, 8, 128, 3, costs);
  const wait = Math.max(8, Math.min(128, costs.probePause()));
  assert.ok(wait > 8 && wait < 128, `probe pause ${wait}`);
  for (let i = 0; i < wait; i++) { assert.equal(first.next(), 0, `step ${i}`); first.tick(); }
  assert.equal(first.next(), 1, 'then it probes with k = 1');
  for (let i = 0; i < 30; i++) first.update(1, i % 4 === 0 ? 1 : 0); // kept a quarter of the time
  assert.ok(Math.abs(costs.acceptance()! - 0.25) < 0.05, `pooled ${costs.acceptance()}`);
  const late = new AdaptiveK(4, 6, 8, 128, 3, costs);
  const ks: number[] = [];
  for (let i = 0; i < 135; i++) { const k = late.next(); ks.push(k); if (k > 0) late.update(k, 0); else late.tick(); }
  assert.deepEqual(ks.slice(0, 128), Array(128).fill(0), 'a new sequence starts paused for 128 steps');
  assert.equal(ks[128], 1, 'then probes with one k = 1 step');
  assert.equal(ks[129], 0, 'a probe that keeps nothing pauses again');
  // steps without verifies fade the pool: after ~1,000 a new sequence probes after the probe pause again
  costs.observe(2, 0.0013, 0.0006, 1, 1, 1); // (a drafting step: the costs are not stale)
  for (let i = 0; i < 1300; i++) costs.observe(1, 0.001, 0, 0, 1, 0);
  assert.equal(costs.acceptance(), null, 'the pool has faded');
  const again = new AdaptiveK(4, 6, 8, 128, 3, costs);
  const wait2 = Math.max(8, Math.min(128, costs.probePause()));
  assert.equal(again.next(), 1, 'no step has drafted for 1,300 steps: a paused sequence probes at once (SpecCosts.wantsProbe)');
  costs.observe(2, 0.0013, 0.0006, 1, 1, 1);
  const ks2: number[] = [];
  for (let i = 0; i <= wait2; i++) { const k = again.next(); ks2.push(k); if (k > 0) again.update(k, 0); else again.tick(); }
  assert.ok(wait2 < 100 && ks2.indexOf(1) === wait2, `a new sequence probes after the probe pause (${wait2}), not 128 steps: ${ks2}`);
  // a proposer that is kept 9 times in 10 pools high: a new sequence drafts from its first step
  const good = new SpecCosts();
  good.observe(1, 0.001, 0, 0, 1, 0);
  for (let i = 0; i < 40; i++) good.observe(3, 0.0012, 0, 2, 3, 1);
  good.observe(1, 0.001, 0, 0, 1, 0);
  const g0 = new AdaptiveK(4, 6, 8, 128, 3, good);
  for (let i = 0; i < 30; i++) g0.update(4, i % 10 === 0 ? 2 : 4);
  assert.ok(new AdaptiveK(4, 6, 8, 128, 3, good).next() >= 2);
});

/**
 * A simulated decode loop: a step of 1 + k rows costs 1 + rowCost·k time units (plus `jump` when k > 0: a verify's
 * own work) and draftCost·k for the proposer; each draft position is kept with probability alpha (until the first
 * rejection). Returns tokens per time unit.
 */
function simulate(alpha: number, rowCost: number, draftCost: number, withCosts: boolean, seed: number, jump = 0, steps = 4000): number {
  const r = rand(seed);
  const costs = withCosts ? new SpecCosts() : null;
  const a = new AdaptiveK(4, 6, 8, 128, 3, costs);
  let tokens = 0, time = 0;
  for (let i = 0; i < steps; i++) {
    const k = costs?.wantsPlain() ? 0 : a.next();
    const fwd = 1 + rowCost * k + (k > 0 ? jump : 0), prop = draftCost * k;
    let kept = 0;
    while (kept < k && r() < alpha) kept++;
    tokens += kept + 1;
    time += fwd + prop;
    costs?.observe(1 + k, fwd, prop, k, kept + 1, k > 0 ? 1 : 0);
    if (k > 0) a.update(k, kept); else a.tick();
  }
  return tokens / time;
}

/** The best fixed k in hindsight (k = 0 included), in tokens per time unit. */
function bestFixed(alpha: number, rowCost: number, draftCost: number, jump = 0): number {
  let best = 1;
  for (let k = 1; k <= 4; k++) {
    let e = 0;
    for (let j = 0; j <= k; j++) e += alpha ** j;
    best = Math.max(best, e / (1 + jump + (rowCost + draftCost) * k));
  }
  return best;
}

test('generate() with measured costs and a free proposer: a paused call scores the drafts it would have made and resumes when a copy begins', () => {
  const r = rand(59);
  const m = brown.model; // a verify row costs a fraction of a step: drafts kept 9 times in 10 pay whatever the timing noise
  const prompt = randomPrompt(r, 10, 4096);
  const opts = { maxTokens: 200, sampling: { temperature: 0 }, stopTokenIds: [], kvDtype: 'f32' as const };
  const want = generate(m, prompt, opts).outputIds;
  // wrong for the first 100 output positions, then the target's own greedy tokens
  const phased = (free: boolean): Proposer => ({
    name: `phased-${free}`, free,
    propose: (rs) => rs.map((q) => ({ tokens: Array.from({ length: q.k }, (_, j) => {
      const i = q.tokens.length - q.promptLen + j;
      return ((want[i] ?? 0) + (i < 100 ? 1 : 0)) % 4096;
    }) })),
  });
  const run = (free: boolean) => {
    const proposer = phased(free); // generate() keeps its costs from one call to the next: the third call's are warm
    let out: ReturnType<typeof generate> | null = null;
    for (let i = 0; i < 3; i++) out = generate(m, prompt, { ...opts, speculative: proposer, speculativeCosts: true });
    assert.deepEqual(out!.outputIds, want, `free ${free}`);
    return out!.timings.speculative!;
  };
  // of 100 copyable tokens (70–78 on a quiet host; probing keeps 1–54 here, as its pauses happen to fall). Costs are
  // measured step times, which a loaded host can blur into "nothing pays": up to three tries
  const tries: string[] = [];
  for (let t = 0; t < 3; t++) {
    const shadowing = run(true);
    tries.push(`${shadowing.accepted} of ${shadowing.proposed} kept`);
    if (shadowing.accepted >= 30) return;
  }
  assert.fail(`scoring paused drafts: ${tries.join('; ')} (probing: ${run(false).accepted})`);
});

test('adaptive k, paused with a free proposer: watched drafts are scored as tokens come, and drafting resumes once they pay', () => {
  // costs where a row is cheap: a = 1 ms, b = 0.05 ms, j = 0.2 ms
  const costs = new SpecCosts();
  const rr = rand(61);
  for (let i = 0; i < 200; i++) {
    const drafting = i % 4 === 0 ? 0 : 1, rows = 1 + drafting * (1 + Math.floor(rr() * 4));
    costs.observe(rows, 0.001 + 0.00005 * rows + 0.0002 * drafting, 0, rows - 1, 1, drafting);
  }
  const paused = (shadow: boolean) => {
    const ak = new AdaptiveK(4, undefined, undefined, undefined, undefined, costs, shadow);
    for (let i = 0; i < 12 && !ak.isPaused(); i++) ak.update(ak.next(), 0); // nothing kept: it pauses
    assert.ok(ak.isPaused());
    return ak;
  };
  // a decode loop: the proposer is wrong before position 70, then drafts the text's next tokens right (a copy begins)
  const text = Array.from({ length: 200 }, (_, i) => 10 + i);
  const propose = (pos: number, k: number) => text.slice(pos, pos + k).map((t) => (pos < 70 ? t + 1 : t));
  const firstKept = (ak: AdaptiveK) => {
    for (let pos = 0; pos < text.length - 8;) {
      const k = ak.next();
      if (k > 0) {
        const d = propose(pos, k);
        let a = 0;
        while (a < k && d[a] === text[pos + a]) a++;
        ak.update(k, a);
        if (a > 0) return pos;
        pos += 1;
      } else {
        if (ak.wantsShadow()) ak.watch(propose(pos, 4));
        ak.seen(text[pos]!);
        ak.tick();
        pos += 1;
      }
    }
    return Infinity;
  };
  const shadowed = firstKept(paused(true)), probing = firstKept(paused(false));
  assert.ok(shadowed >= 70 && shadowed <= 82, `scoring paused drafts, the first kept at position ${shadowed}`);
  assert.ok(probing > shadowed + 30, `probing, the first kept at position ${probing}`);
  // wrong drafts scored keep it paused until the pause runs out; then it probes (a verify measures what drafting
  // costs, which scoring cannot)
  const ak = paused(true);
  let t = 0;
  for (; t < 300 && ak.isPaused(); t++) { ak.watch([1, 2, 3, 4]); ak.seen(5); ak.tick(); }
  assert.ok(t >= 8 && t < 300 && ak.next() === 1 && ak.alpha() < 0.1, `probed after ${t} steps, alpha ${ak.alpha()}`);
  // a verify (the sequence drafting again) drops what was watched
  const bk = paused(true);
  bk.watch([7, 8, 9, 10]);
  bk.update(1, 1);
  bk.seen(7);
  assert.ok(bk.alpha() < 0.5, 'a dropped watch scores nothing');
});

test('adaptive k with measured costs: a sequence whose drafts do not pay waits longer between probes the more a probe costs', () => {
  const pauseAfterMisses = (proposeSec: number) => {
    const c = new SpecCosts();
    // a = 0.6 ms, b = 0.05 ms a row, j = 0.1 ms; the proposer takes proposeSec a call (one sequence, one token)
    for (let i = 0; i < 100; i++) {
      const drafting = i % 3 === 0 ? 0 : 1, rows = 1 + drafting * (1 + (i % 2));
      c.observe(rows, 0.0006 + 0.00005 * rows + 0.0001 * drafting, drafting ? proposeSec : 0, rows - 1, 1, drafting);
    }
    const ak = new AdaptiveK(4, undefined, undefined, undefined, undefined, c);
    for (let i = 0; i < 4 && !ak.isPaused(); i++) ak.update(Math.max(1, ak.next()), 0);
    assert.ok(ak.isPaused(), 'drafts that keep nothing pause');
    let steps = 0;
    while (ak.next() === 0 && steps < 1000) { ak.tick(); steps++; }
    return { steps, want: c.probePause() };
  };
  // a probe at ~1.15 ms against ~1.4 ms a token (these steps spend 2/3 ms drafting): ~41 steps for probes to cost
  // ~2% of the tokens
  const slow = pauseAfterMisses(0.001);
  assert.ok(slow.want >= 35 && slow.want <= 50 && slow.steps >= slow.want, JSON.stringify(slow));
  // a free proposer: a probe costs a verify's jump and row, so the shortest pause (8 steps) and its doubling stand
  const free = pauseAfterMisses(0);
  assert.ok(free.want <= 16 && free.steps <= 16, JSON.stringify(free));
});

test('adaptive k with measured costs: k follows a copy burst (the last ~5 verify steps), pausing by the last ~20', () => {
  // a row costs a fifth of a plain step: at 50% acceptance 2 draft tokens pay, at 90% all 4
  const c = new SpecCosts();
  for (let i = 0; i < 100; i++) {
    const drafting = i % 3 === 0 ? 0 : 1, rows = 1 + drafting * (1 + (i % 2));
    c.observe(rows, 0.001 + 0.0002 * (rows - 1), 0, rows - 1, 1, drafting);
  }
  assert.deepEqual([c.best(0.5, 4), c.best(0.9, 4)], [2, 4]);
  const ak = new AdaptiveK(4, undefined, undefined, undefined, undefined, c);
  for (let i = 0; i < 30; i++) ak.update(2, i % 2); // half kept: ~1/3 per position
  assert.ok(ak.next() <= 2, `before the burst: k ${ak.next()}`);
  for (let i = 0; i < 3; i++) ak.update(ak.next(), ak.next()); // a copy begins: everything kept
  assert.equal(ak.next(), 4, `in the burst k grows at once (the ~20-step rate is ${ak.alpha().toFixed(2)})`);
  for (let i = 0; i < 3; i++) ak.update(ak.next(), 0); // the copy ends
  assert.ok(ak.next() <= 2 && !ak.isPaused(), `after it k shrinks (${ak.next()}) without pausing`);
});

test('adaptive k with measured costs: near the best fixed k in hindsight, never far below not speculating', () => {
  const rows: string[] = [];
  // [row, draft, jump]: memory-bound rows, compute-bound rows, draft models, a verify that costs more than its rows
  for (const [rowCost, draftCost, jump] of [[0.02, 0, 0], [0.15, 0, 0], [0.12, 0.2, 0], [0.15, 0.35, 0], [0.05, 0.35, 0], [0.05, 0.3, 0.25], [0.05, 0, 0.25]] as const) {
    for (const alpha of [0.05, 0.2, 0.35, 0.6, 0.9]) {
      const best = bestFixed(alpha, rowCost, draftCost, jump);
      const got = simulate(alpha, rowCost, draftCost, true, 1000 + Math.round(alpha * 100), jump);
      rows.push(`row ${rowCost} draft ${draftCost} jump ${jump} alpha ${alpha}: ${got.toFixed(3)} vs best ${best.toFixed(3)}`);
      assert.ok(got >= 0.96 * best, rows.at(-1));
      assert.ok(got >= 0.98, `${rows.at(-1)}: loses more than 2% against not speculating`);
    }
  }
  // the case the costs are for (a draft model costing a third of the target's step per token, kept a third of the
  // time): the heuristic alone keeps climbing back to k = 4 and the loop loses to plain decoding
  const old = simulate(0.35, 0.15, 0.35, false, 7);
  const capped = simulate(0.35, 0.15, 0.35, true, 7);
  assert.ok(old < 0.9, `heuristic alone ${old.toFixed(3)}`);
  assert.ok(capped >= 0.97, `with measured costs ${capped.toFixed(3)} (heuristic alone ${old.toFixed(3)})`);
});

// ---- the verifier keeps the distribution: a toy target over V = 5 tokens, three tokens per draw ----

const V = 5;
const backend = selectBackend('reference');
const table = (() => { // (V, V) logits of the next token given the previous one
  const r = rand(2024);
  return Array.from({ length: V }, () => Float32Array.from({ length: V }, () => 3 * (r() - 0.5)));
})();
const PIPELINE: SamplingParams = {
  ...DEFAULT_SAMPLING, temperature: 0.9, topK: 4, topP: 0.95, minP: 0.03, repetitionPenalty: 1.3,
  frequencyPenalty: 0.3, presencePenalty: 0.2, logitBias: new Map([[3, 0.7]]),
};
const PROMPT = [0, 1];
const LEN = 3;

function plainDraw(sampler: Sampler): number {
  const counts = new TokenCounts(PROMPT);
  let prev = PROMPT.at(-1)!;
  let code = 0;
  for (let i = 0; i < LEN; i++) {
    prev = sampler.sample(table[prev]!, counts);
    counts.add(prev);
    code = code * V + prev;
  }
  return code;
}

/** Draft tokens from `drawQ` (k per round); `claimQ` is what the proposer tells the verifier (undefined: one-hot). */
function specDraw(sampler: Sampler, draftRng: Rng, k: number, drawQ: Float32Array, claimQ: Float32Array | null | undefined): number {
  const counts = new TokenCounts(PROMPT);
  const out: number[] = [];
  while (out.length < LEN) {
    const prev = out.length > 0 ? out.at(-1)! : PROMPT.at(-1)!;
    const draft: number[] = [];
    for (let j = 0; j < k; j++) {
      let u = draftRng.next();
      let x = 0;
      while (x < V - 1 && (u -= drawQ[x]!) >= 0) x++;
      draft.push(x);
    }
    const rows = new Float32Array((k + 1) * V);
    [prev, ...draft].forEach((t, j) => rows.set(table[t]!, j * V));
    const v = verifyDraft(sampler, counts, rows, draft, claimQ === undefined ? undefined : draft.map(() => claimQ ?? drawQ));
    for (const t of v.tokens) { if (out.length < LEN) { out.push(t); counts.add(t); } }
  }
  return out.reduce((c, t) => c * V + t, 0);
}

/** Two-sample chi-square homogeneity test (equal sizes; sparse cells pooled): the p-value. */
function homogeneity(a: Float64Array, b: Float64Array): number {
  let stat = 0;
  let cells = 0;
  let poolA = 0;
  let poolB = 0;
  for (let i = 0; i < a.length; i++) {
    if (a[i]! + b[i]! < 20) { poolA += a[i]!; poolB += b[i]!; continue; }
    stat += (a[i]! - b[i]!) ** 2 / (a[i]! + b[i]!);
    cells++;
  }
  if (poolA + poolB > 0) { stat += (poolA - poolB) ** 2 / (poolA + poolB); cells++; }
  return 1 - cdf(stat, cells - 1);
}

test('rejection sampling keeps the sampler distribution (penalties, bias, temperature, top-k/p, min-p) position by position', () => {
  const N = 30000;
  const hist = () => new Float64Array(V ** LEN);
  const plain = hist();
  const plainSampler = new Sampler({ ...PIPELINE, seed: 1 }, V, backend);
  for (let i = 0; i < N; i++) plain[plainDraw(plainSampler)]!++;

  const q = Float32Array.from([0.1, 0.35, 0.3, 0.05, 0.2]); // a dense draft distribution unlike p
  const variants: [string, number, Float32Array, Float32Array | null | undefined][] = [
    ['dense q, k = 2', 2, q, null],
    ['dense q, k = 4', 4, q, null],
    ['one-hot (deterministic draft), k = 3', 3, Float32Array.from([0, 0, 1, 0, 0]), undefined],
  ];
  for (const [name, k, drawQ, claim] of variants) {
    const spec = hist();
    const sampler = new Sampler({ ...PIPELINE, seed: 7 + k }, V, backend);
    const draftRng = new Rng(99 + k);
    for (let i = 0; i < N; i++) spec[specDraw(sampler, draftRng, k, drawQ, claim)]!++;
    const pv = homogeneity(plain, spec);
    assert.ok(pv > 1e-3, `${name}: p-value ${pv}`);
  }

  // the test has power: drafts drawn from q but verified as if uniform shift the distribution
  const wrong = hist();
  const sampler = new Sampler({ ...PIPELINE, seed: 5 }, V, backend);
  const draftRng = new Rng(5);
  for (let i = 0; i < N; i++) wrong[specDraw(sampler, draftRng, 3, q, Float32Array.from({ length: V }, () => 1 / V))]!++;
  assert.ok(homogeneity(plain, wrong) < 1e-6, 'a mis-specified q is detected');
});

test('DraftModelProposer keeps its KV per sequence and rolls back past rejected drafts', () => {
  const p = new DraftModelProposer(brownFp8, brown.model);
  p.init({ vocabSize: 4096, numBlocks: 8, blockSize: 16, maxPositions: 1024 });
  const table = [3, 1, 4, 0, 2, 5, 7, 6];
  const prompt = brownPrompts[0]!;
  const a = p.propose([{ seqId: 's', tokens: prompt, promptLen: prompt.length, k: 4, blockTable: table }])[0]!.tokens;
  assert.equal(a.length, 4);
  // the draft's own greedy continuation, as a plain generate() of the draft model gives it
  assert.deepEqual(a, greedy(brownFp8, prompt, { maxTokens: 4 }).outputIds);
  // the target rejected all but the first: a different token follows; the draft resumes from there
  const next = [...prompt, a[0]!, (a[1]! + 1) % 4096];
  const b = p.propose([{ seqId: 's', tokens: next, promptLen: prompt.length, k: 3, blockTable: table }])[0]!.tokens;
  assert.deepEqual(b, greedy(brownFp8, next, { maxTokens: 3 }).outputIds);
  // minConfidence: greedy drafting stops after the first token the draft gives less than that probability
  const plain = greedy(brownFp8, prompt, { maxTokens: 4, logprobs: 0 });
  const probs = plain.logprobs!.map((e) => Math.exp(e.logprob));
  for (const conf of [0, 1.01, [...probs].sort()[1]! + 1e-6, [...probs].sort()[2]! + 1e-6]) {
    const c = new DraftModelProposer(brownFp8, brown.model, 'draft', conf);
    c.init({ vocabSize: 4096, numBlocks: 8, blockSize: 16, maxPositions: 1024 });
    const got = c.propose([{ seqId: 's', tokens: prompt, promptLen: prompt.length, k: 4, blockTable: table }])[0]!.tokens;
    const unsure = probs.findIndex((q) => q < conf);
    assert.deepEqual(got, plain.outputIds.slice(0, unsure < 0 ? 4 : unsure + 1), `minConfidence ${conf}, draft probabilities ${probs.map((q) => q.toFixed(3))}`);
  }
});

test('CLI: floe generate --speculative ngram --json reports timings.speculative and the plain greedy ids', async () => {
  const { spawnSync } = await import('node:child_process');
  const bin = repoPath('bin/floe.js');
  const ids = brownPrompts[0]!.join(',');
  const run = (...extra: string[]) => {
    const r = spawnSync(process.execPath, [bin, 'generate', '--model', BROWN, '--prompt-ids', ids, '--temperature', '0', '--max-tokens', '24', '--threads', '1', '--json', ...extra], { encoding: 'utf8', timeout: 60_000 });
    assert.equal(r.status, 0, r.stderr);
    return JSON.parse(r.stdout) as { output_ids: number[]; timings: { speculative?: { proposed: number; accepted: number } } };
  };
  const plain = run();
  const spec = run('--speculative', 'ngram', '--num-speculative-tokens', '3');
  assert.equal(plain.timings.speculative, undefined);
  assert.deepEqual(spec.output_ids, plain.output_ids);
  assert.deepEqual(spec.output_ids, greedy(brown.model, brownPrompts[0]!, { maxTokens: 24 }).outputIds);
  assert.ok(spec.timings.speculative!.proposed > 0 && spec.timings.speculative!.accepted <= spec.timings.speculative!.proposed);
  // a proposer module, by a path relative to the working directory: proposes the last token again
  const fs = await import('node:fs');
  const os = await import('node:os');
  const path = await import('node:path');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'floe-cli-proposer-'));
  try {
    fs.writeFileSync(path.join(dir, 'repeat.mjs'), `export default ({ target }) => ({
  name: 'repeat-' + target.config.vocabSize,
  propose: (reqs) => reqs.map((r) => ({ tokens: [r.tokens[r.tokens.length - 1]] })),
});
`);
    const r = spawnSync(process.execPath, [bin, 'generate', '--model', BROWN, '--prompt-ids', ids, '--temperature', '0', '--max-tokens', '24', '--threads', '1', '--json', '--speculative', 'module:./repeat.mjs'], { encoding: 'utf8', timeout: 60_000, cwd: dir });
    assert.equal(r.status, 0, r.stderr);
    const mod = JSON.parse(r.stdout) as { output_ids: number[]; timings: { speculative?: { proposed: number; accepted: number } } };
    assert.deepEqual(mod.output_ids, plain.output_ids);
    assert.ok(mod.timings.speculative!.proposed > 0, 'the module proposed');
    const missing = spawnSync(process.execPath, [bin, 'generate', '--model', BROWN, '--prompt-ids', ids, '--speculative', 'module:./nope.mjs'], { encoding: 'utf8', cwd: dir });
    assert.notEqual(missing.status, 0);
    assert.match(missing.stderr, /speculative module .*nope\.mjs: cannot import it/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  const bad = spawnSync(process.execPath, [bin, 'generate', '--model', BROWN, '--prompt-ids', ids, '--num-speculative-tokens', '0', '--speculative', 'ngram'], { encoding: 'utf8' });
  assert.equal(bad.status, 2); // a usage error
  assert.match(bad.stderr, /--num-speculative-tokens expects an integer >= 1, got '0'/);
});

test('a draft model samples its drafts under sampling (dense q): generate() keeps the plain distribution (chi-square), and a seed reproduces', () => {
  const prompt = [17, 42, 99, 3, 17, 42];
  const N = 2500;
  const sampling = { temperature: 1.2, topK: 4, repetitionPenalty: 1.2, presencePenalty: 0.2 };
  const run = (seed: number, speculative?: LlamaModel) =>
    greedy(gqa, prompt, { maxTokens: 3, sampling: { ...sampling, seed }, speculative, numSpeculativeTokens: 2 });
  const plain = new Float64Array(256 ** 2 * 4);
  const spec = new Float64Array(plain.length);
  const code = (ids: number[]) => (ids[0]! * 256 + ids[1]!) * 4 + (ids[2]! % 4);
  let proposed = 0;
  let accepted = 0;
  for (let i = 0; i < N; i++) {
    plain[code(run(i).outputIds)]!++;
    const r = run(N + i, mha);
    spec[code(r.outputIds)]!++;
    proposed += r.timings.speculative!.proposed;
    accepted += r.timings.speculative!.accepted;
  }
  assert.ok(proposed >= N && accepted > 0 && accepted < proposed, `${accepted} of ${proposed}`);
  const pv = homogeneity(plain, spec);
  assert.ok(pv > 1e-3, `p-value ${pv}`);
  assert.deepEqual(run(5, mha).outputIds, run(5, mha).outputIds);
});

test('suffix proposer over many documents with eviction equals a brute-force search of the live documents', () => {
  const r = rand(91);
  for (let trial = 0; trial < 30; trial++) {
    const V = 2 + Math.floor(r() * (trial % 3 === 0 ? 40 : 5));
    const [minN, maxN] = trial % 2 === 0 ? [1, 4] : [2, 2 + Math.floor(r() * 6)];
    const maxTokens = 8 + Math.floor(r() * 60);
    const sx = new SuffixProposer(minN, maxN, maxTokens);
    const live: number[][] = []; // documents as the index should hold them, oldest first
    for (let step = 0; step < 60; step++) {
      const doc = Array.from({ length: 1 + Math.floor(r() * 30) }, () => Math.floor(r() * V));
      sx.learn(doc);
      if (doc.length >= 2) {
        const kept = doc.slice(-maxTokens);
        live.push(kept);
        let total = live.reduce((a, d) => a + d.length, 0);
        while (total > maxTokens) total -= live.shift()!.length;
      }
      assert.equal(sx.numIndexedTokens, live.reduce((a, d) => a + d.length, 0), 'indexed tokens = the live documents');
      // a query whose own tokens never repeat its tail (a fresh token in front of each n-gram), so hits come from documents
      const q = [V + 1 + step, ...Array.from({ length: 1 + Math.floor(r() * 6) }, () => Math.floor(r() * V))];
      const k = 1 + Math.floor(r() * 4);
      let want: number[] = [];
      search: for (let n = Math.min(maxN, q.length - 1); n >= minN; n--) {
        const own = bruteLatest(q, n);
        if (own >= 0) { want = q.slice(own, own + k); break; }
        const tail = q.slice(q.length - n);
        for (let d = live.length - 1; d >= 0; d--) {
          const t = live[d]!;
          for (let e = t.length - 1; e >= n; e--) {
            if (tail.every((x, i) => t[e - n + i] === x)) { want = t.slice(e, e + k); break search; }
          }
        }
      }
      assert.deepEqual(sx.one(q, k), want, `trial ${trial} step ${step} query ${q}`);
    }
  }
});

test('suffix proposer memory: the default 256K-token index holds its n-grams in well under 400 bytes per token', async () => {
  const v8 = await import('node:v8');
  const vm = await import('node:vm');
  v8.setFlagsFromString('--expose-gc');
  const gc = vm.runInNewContext('gc') as () => void;
  gc();
  const before = process.memoryUsage().heapUsed;
  const sx = new SuffixProposer();
  const r = rand(5);
  for (let d = 0; d < 256; d++) sx.learn(Array.from({ length: 1024 }, () => Math.floor(r() * 32000)));
  gc();
  const perToken = (process.memoryUsage().heapUsed - before) / sx.numIndexedTokens;
  assert.equal(sx.numIndexedTokens, 1 << 18);
  // n = 2..8 grams of random text over 32,000 tokens are (nearly) all distinct: ~7 per token, plus the unigrams
  assert.ok(sx.numGrams > 6.9 * (1 << 18), `every n-gram of random text is indexed: ${sx.numGrams}`);
  assert.ok(perToken < 400, `${perToken.toFixed(0)} bytes per indexed token (string keys took ~1,900)`);
});
