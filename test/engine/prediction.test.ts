// Predicted Outputs in the engine and generate(): a prediction drafts tokens for the verifier, with or without the
// engine's own proposer; greedy output is the same token for token, sampled output keeps its distribution.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Engine } from '../../src/engine/engine.js';
import { EngineRequestError, type GenerateRequest } from '../../src/engine/protocol.js';
import { generate } from '../../src/model/generate.js';
import { openModel } from '../../src/model/open.js';
import { PredictionK, PredictionTracker, wordStartTable } from '../../src/model/prediction.js';
import { tokenBytes } from '../../src/engine/constrained/token-mask.js';
import { genReq, rand, runAll } from './helpers.js';
import { repoPath } from '../repo.js';

const BROWN = repoPath('models/floe-brown');
const brown = await openModel(BROWN, { threads: 2 });
const tok = brown.tokenizer!;
const WORDS = ('the of and to a in that is was he for it with as his on be at by had are but from or have an they which one you were ' +
  'her all she there would their we him been has when who will more no if out so said what up its about into than them can only other new ' +
  'some could time these two may then do first any my now such like our over man me even most made after also did many before must through ' +
  'back years where much your way well down should because each just those people city state house church water school court').split(' ');
const SEED = Number(process.env.FLOE_TEST_SEED ?? Date.now() % 1e9);
const r = rand(SEED);
const pick = (): string => WORDS[Math.floor(r() * WORDS.length)]!;
const UNRELATED = 'Once upon a time a small dog ran through the park every morning, chasing birds and barking at the old gardener.';

function engine(speculative?: 'ngram'): Engine {
  return new Engine(brown.model, tok, { kvDtype: 'f32', kvCacheMemory: 64 << 20, speculative });
}

/** Run one request alone on a fresh engine: its tokens, last usage and the engine's step count. */
function runOne(req: GenerateRequest, speculative?: 'ngram') {
  const e = engine(speculative);
  e.add(req);
  const c = runAll(e).byId.get(req.id)!;
  return { tokens: c.tokens, usage: c.outputs.at(-1)!.usage, steps: e.stats().steps, stats: e.stats() };
}

/**
 * The text with up to `n` of its words replaced by random ones (an edit the prediction does not know about), at most a
 * quarter of them: an answer of few words (floe-brown can answer " than 50,000,000,…", two words) would otherwise be
 * replaced whole, leaving nothing for the prediction to draft (seed 580282074).
 */
function edit(text: string, n: number): string {
  const w = text.split(' ');
  const k = Math.min(n, Math.floor((w.length - 1) / 4));
  for (let i = 0; i < k; i++) w[1 + Math.floor(r() * (w.length - 1))] = pick();
  return w.join(' ');
}

test(`greedy with a prediction equals greedy without, for fresh random prompts (seed ${SEED}); its own answer is accepted nearly whole`, () => {
  for (let p = 0; p < 3; p++) {
    const prompt = tok.encode(Array.from({ length: 8 + Math.floor(r() * 8) }, pick).join(' '), { addSpecialTokens: true });
    const req = (id: string, over: Partial<GenerateRequest> = {}) => genReq(id, prompt, { maxTokens: 64, ignoreEos: true, ...over });
    const base = runOne(req('base'));
    assert.equal(base.usage.acceptedPredictionTokens, undefined, 'no prediction: no prediction counts');
    const answer = tok.decode(base.tokens[0]!);
    const predictions = { own: answer, edited: edit(answer, 4), unrelated: UNRELATED };
    for (const [name, text] of Object.entries(predictions)) {
      const ids = tok.encode(text, { addSpecialTokens: false });
      for (const spec of [undefined, 'ngram'] as const) {
        const got = runOne(req('p', { prediction: ids }), spec);
        const what = `prompt ${p} (seed ${SEED}), prediction ${name}, proposer ${spec ?? 'none'}: ${JSON.stringify(text)}`;
        assert.deepEqual(got.tokens, base.tokens, what);
        const u = got.usage;
        assert.ok(u.acceptedPredictionTokens! >= 0 && u.rejectedPredictionTokens! >= 0, what);
        assert.ok(u.acceptedPredictionTokens! <= u.completionTokens - 1, `${what}: the first token comes from the prompt's step`);
        if (name === 'own') {
          assert.ok(u.acceptedPredictionTokens! >= 0.75 * u.completionTokens, `${what}: ${JSON.stringify(u)}`);
          assert.ok(got.steps * 2 < base.steps, `${what}: ${got.steps} steps, ${base.steps} without`);
        }
        if (name === 'edited') assert.ok(got.steps < base.steps, `${what}: ${got.steps} steps, ${base.steps} without`);
      }
    }
    // speculative: false turns the prediction off: the same steps as without, nothing drafted
    const off = runOne(req('off', { prediction: tok.encode(answer, { addSpecialTokens: false }), speculative: false }));
    assert.deepEqual(off.tokens, base.tokens);
    assert.equal(off.steps, base.steps);
    assert.deepEqual([off.usage.acceptedPredictionTokens, off.usage.rejectedPredictionTokens], [0, 0]);
    assert.equal(off.stats.specSteps, 0);
  }
});

test('n = 2 forks both draft from the prediction; a stop string inside accepted drafts ends the output there', () => {
  const prompt = tok.encode('The committee said on Friday that the city', { addSpecialTokens: true });
  const base = runOne(genReq('b', prompt, { maxTokens: 48, ignoreEos: true }));
  const ids = tok.encode(tok.decode(base.tokens[0]!), { addSpecialTokens: false });
  const e = engine();
  e.add(genReq('n2', prompt, { maxTokens: 48, ignoreEos: true, n: 2, prediction: ids }));
  const c = runAll(e).byId.get('n2')!;
  assert.deepEqual(c.tokens, [base.tokens[0], base.tokens[0]]);
  for (const i of [0, 1]) {
    const u = c.outputs.filter((o) => o.index === i).at(-1)!.usage;
    assert.ok(u.acceptedPredictionTokens! >= 30, `completion ${i}: ${JSON.stringify(u)}`);
  }
  // a stop string in the middle of the answer: accepted drafts past it are not output, and count as rejected
  const text = tok.decode(base.tokens[0]!);
  const stop = text.split(' ').slice(5, 7).join(' ');
  const plain = new Engine(brown.model, tok, { kvDtype: 'f32', kvCacheMemory: 64 << 20 });
  plain.add(genReq('s0', prompt, { maxTokens: 48, ignoreEos: true, stop: [stop] }));
  const want = runAll(plain).byId.get('s0')!;
  const e2 = engine();
  e2.add(genReq('s1', prompt, { maxTokens: 48, ignoreEos: true, stop: [stop], prediction: ids }));
  const got = runAll(e2).byId.get('s1')!;
  assert.deepEqual(got.tokens, want.tokens);
  assert.equal(got.text[0], want.text[0]);
  const u = got.outputs.at(-1)!.usage;
  assert.ok(u.acceptedPredictionTokens! <= u.completionTokens - 1, JSON.stringify(u));
  assert.ok(u.rejectedPredictionTokens! > 0, `drafts past the stop were not kept: ${JSON.stringify(u)}`);
});

test('sampled output keeps its distribution with a prediction (the first two tokens, 400 seeds each)', () => {
  const prompt = tok.encode('The man said that the', { addSpecialTokens: true });
  const prediction = runOne(genReq('g', prompt, { maxTokens: 6, ignoreEos: true })).tokens[0]!; // the likeliest continuation
  const sampling = { ...genReq('x', [1]).sampling, temperature: 0.3 };
  // how often the output follows the prediction for one token, for two, or not at all
  const hist = (withPrediction: boolean): Record<string, number> => {
    const e = new Engine(brown.model, tok, { kvDtype: 'f32', kvCacheMemory: 64 << 20, maxNumSeqs: 64 });
    for (let s = 0; s < 400; s++) {
      e.add(genReq(`s${s}`, prompt, { maxTokens: 4, ignoreEos: true, sampling: { ...sampling, seed: 1000 * Number(withPrediction) + s }, ...(withPrediction ? { prediction } : {}) }));
    }
    const h: Record<string, number> = { none: 0, one: 0, two: 0 };
    for (const c of runAll(e).byId.values()) {
      const t = c.tokens[0]!;
      h[t[0] !== prediction[0] ? 'none' : t[1] !== prediction[1] ? 'one' : 'two']!++;
    }
    if (withPrediction) assert.ok(e.stats().specAcceptedTokens! > 200, JSON.stringify(e.stats()));
    return h;
  };
  const a = hist(false);
  const b = hist(true);
  const tv = Object.keys(a).reduce((s, k) => s + Math.abs(a[k]! - b[k]!), 0) / 800;
  // two samples of 400 from one distribution: TV about 0.03 here; a verifier that kept every draft gives about 0.3
  assert.ok(tv < 0.1, `total variation ${tv.toFixed(3)}: ${JSON.stringify(a)} without, ${JSON.stringify(b)} with the prediction`);
});

test('a seeded sample with a prediction is token for token the sample without one (drafts are verified by the coupled rule)', () => {
  const prompt = tok.encode('The man said that the', { addSpecialTokens: true });
  const prediction = runOne(genReq('g', prompt, { maxTokens: 8, ignoreEos: true })).tokens[0]!;
  const run = (withPrediction: boolean): number[][] => {
    const e = new Engine(brown.model, tok, { kvDtype: 'f32', kvCacheMemory: 64 << 20, maxNumSeqs: 32 });
    for (let s = 0; s < 24; s++) {
      e.add(genReq(`s${s}`, prompt, { maxTokens: 8, ignoreEos: true, sampling: { ...genReq('x', [1]).sampling, temperature: 0.4, topP: 0.95, seed: 77 + s }, ...(withPrediction ? { prediction } : {}) }));
    }
    const out = runAll(e).byId;
    if (withPrediction) assert.ok(e.stats().specAcceptedTokens! > 24 && e.stats().specAcceptedTokens! < e.stats().specDraftTokens!, JSON.stringify(e.stats()));
    return Array.from({ length: 24 }, (_, s) => out.get(`s${s}`)!.tokens[0]!);
  };
  const plain = run(false);
  assert.ok(new Set(plain.map((t) => t.join(','))).size > 4, 'the seeds draw different samples');
  assert.deepEqual(run(true), plain);
});

test('a prediction id outside the vocabulary is a 400 naming it', () => {
  const e = engine();
  assert.throws(() => e.add(genReq('bad', [1, 2, 3], { prediction: [5, 4096] })),
    (err: unknown) => err instanceof EngineRequestError && err.status === 400 && /prediction token 1 has id 4096/.test(err.message));
  assert.throws(() => e.add(genReq('bad2', [1, 2, 3], { prediction: [1.5] })), /prediction token 0/);
});

test('generate() with a prediction: the same ids, and timings count accepted and rejected prediction tokens', () => {
  const prompt = tok.encode('It was the first time that the state', { addSpecialTokens: true });
  const opts = { maxTokens: 60, sampling: { temperature: 0 }, stopTokenIds: [], kvDtype: 'f32' as const };
  const base = generate(brown.model, prompt, opts);
  assert.equal(base.timings.prediction, undefined);
  const own = tok.encode(tok.decode(base.outputIds), { addSpecialTokens: false });
  for (const [prediction, spec] of [[own, undefined], [tok.encode(edit(tok.decode(base.outputIds), 3), { addSpecialTokens: false }), 'ngram'],
    [tok.encode(UNRELATED, { addSpecialTokens: false }), undefined]] as const) {
    const got = generate(brown.model, prompt, { ...opts, prediction, speculative: spec });
    assert.deepEqual(got.outputIds, base.outputIds);
    assert.ok(got.timings.prediction!.accepted + got.timings.prediction!.rejected <= got.timings.speculative!.proposed);
  }
  const got = generate(brown.model, prompt, { ...opts, prediction: own });
  assert.ok(got.timings.prediction!.accepted >= 45, JSON.stringify(got.timings));
  assert.throws(() => generate(brown.model, prompt, { ...opts, prediction: [-1] }), /prediction token 0 has id -1/);
});

/** Drafts and kept tokens of decoding `output` (greedy) with a tracker on `prediction`, as the engine steps. */
function replay(prompt: readonly number[], output: readonly number[], prediction: readonly number[], words: Uint8Array | null) {
  const tracker = new PredictionTracker(prediction, words);
  const pk = new PredictionK(15);
  const tokens = [...prompt, output[0]!];
  let steps = 1; // the prompt's
  let accepted = 0;
  let rejected = 0;
  while (tokens.length - prompt.length < output.length) {
    const done = tokens.length - prompt.length;
    const want = Math.min(pk.next(), output.length - done - 1);
    const draft = want > 0 ? tracker.draft(tokens, prompt.length, want) : [];
    steps++;
    let a = 0;
    while (a < draft.length && draft[a] === output[done + a]) a++;
    if (draft.length > 0) pk.update(draft.length, a);
    else pk.tick();
    accepted += a;
    rejected += draft.length - a;
    tokens.push(...output.slice(done, done + a + 1));
  }
  return { steps, accepted, rejected };
}

test(`the engine and generate() realign by words: they draft as a tracker with the tokenizer's word starts (seed ${SEED})`, () => {
  const words = wordStartTable(tokenBytes(tok));
  let differs = 0;
  for (let p = 0; p < 3; p++) {
    const prompt = tok.encode(Array.from({ length: 8 + Math.floor(r() * 8) }, pick).join(' '), { addSpecialTokens: true });
    const base = runOne(genReq('b', prompt, { maxTokens: 64, ignoreEos: true }));
    const out = base.tokens[0]!;
    // replace words by longer ones: their token counts differ from the words they replace
    const text = tok.decode(out).split(' ').map((w, i) => (i > 0 && r() < 0.15 ? 'extraordinarily' : w)).join(' ');
    const prediction = tok.encode(text, { addSpecialTokens: false });
    const want = replay(prompt, out, prediction, words);
    const what = `prompt ${p} (seed ${SEED}): ${JSON.stringify(text)}`;
    const got = runOne(genReq('p', prompt, { maxTokens: 64, ignoreEos: true, prediction }));
    assert.deepEqual(got.tokens[0], out, what);
    assert.deepEqual([got.steps, got.usage.acceptedPredictionTokens, got.usage.rejectedPredictionTokens], [want.steps, want.accepted, want.rejected], what);
    const lib = generate(brown.model, prompt, { maxTokens: 64, sampling: { temperature: 0 }, stopTokenIds: [], kvDtype: 'f32', prediction, predictionWordStarts: words });
    assert.deepEqual(lib.outputIds, out, what);
    assert.deepEqual([lib.timings.prediction!.accepted, lib.timings.prediction!.rejected], [want.accepted, want.rejected], what);
    const tokensOnly = replay(prompt, out, prediction, null);
    if (tokensOnly.steps !== want.steps) differs++;
  }
  assert.ok(differs > 0, 'word starts changed no draft in three edited answers: the test no longer tells them apart');
});

test('PredictionTracker: follows the prediction, and finds it again after a substitution, an insertion and a deletion', () => {
  const P = [10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20];
  const t = (out: number[], k = 3) => new PredictionTracker(P).draft([1, 2, ...out], 2, k);
  assert.deepEqual(t([]), [10, 11, 12], 'nothing output yet: the prediction from its start');
  assert.deepEqual(t([10, 11]), [12, 13, 14]);
  assert.deepEqual(t([10, 11, 99]), [13, 14, 15], 'a substitution: the prediction after the replaced token');
  assert.deepEqual(t([10, 11, 99, 98]), [14, 15, 16], 'two substituted: along the diagonal');
  assert.deepEqual(t([10, 11, 99, 12]), [13, 14, 15], 'an insertion: the output comes back to the prediction');
  assert.deepEqual(t([10, 11, 13]), [14, 15, 16], 'a deletion: the output skipped 12');
  assert.deepEqual(t([10, 11, 14]), [13, 14, 15], 'two tokens skipped look like a substitution at first');
  assert.deepEqual(t([10, 11, 14, 15]), [16, 17, 18], 'and a deletion one token later');
  assert.deepEqual(t([10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20]), [], 'the prediction is used up');
  assert.deepEqual(t([50, 51, 52, 53, 14, 15, 16]), [17, 18, 19], 'three tokens found far from where the output departed');
  // incremental: one tracker called as the output grows gives what a fresh one gives
  for (const seq of [[1, 2, 10, 11, 99, 13, 14, 77, 16, 17], [1, 2, 10, 90, 91, 92, 13, 14]]) {
    const inc = new PredictionTracker(P);
    for (let n = 2; n <= seq.length; n++) assert.deepEqual(inc.draft(seq.slice(0, n), 2, 4), new PredictionTracker(P).draft(seq.slice(0, n), 2, 4), `${seq}: after ${n - 2} tokens`);
  }
});

test('PredictionTracker: a guess along the diagonal that misses is no new departure, so the output finds its way back', () => {
  // 11 12 replaced by 90 91 92: each diagonal guess misses; when 13 comes, it is 2 tokens past the anchor and the
  // output has made 4 since departing (counted from the guesses' misses, it had made 1: the old tracker drafted 15 16 17)
  const P = [10, 11, 12, 13, 14, 15, 16, 17];
  const t = new PredictionTracker(P);
  const out = [1, 2, 10, 90, 91, 92, 13];
  for (let n = 3; n < out.length; n++) t.draft(out.slice(0, n), 2, 4);
  assert.deepEqual(t.draft(out, 2, 3), [14, 15, 16]);
});

test('PredictionTracker: an output that departs at its first token drafts only where 3 tokens line up (unrelated text costs no rows)', () => {
  const P = [10, 11, 12, 13, 14, 15, 16, 17];
  const t = (out: number[]) => new PredictionTracker(P).draft([1, 2, ...out], 2, 4);
  assert.deepEqual(t([90]), [], 'no substitution guess: nothing ever lined up');
  assert.deepEqual(t([90, 91, 12]), [], 'one token in common is chance');
  assert.deepEqual(t([90, 11, 12]), [], 'two as well');
  assert.deepEqual(t([90, 11, 12, 13]), [14, 15, 16, 17], 'three: the answer joins the prediction there');
  assert.deepEqual(t([10, 90]), [12, 13, 14, 15], 'after a first token that lined up, an edit is guessed as before');
});

test('PredictionTracker with word starts: a word replaced by one of another token count goes on at the next word', () => {
  const W = new Uint8Array(200);
  for (let id = 100; id < 200; id++) W[id] = 1; // ids >= 100 begin a word, < 100 go on with one
  const P = [100, 101, 1, 2, 102, 103, 3, 104, 105];
  const t = (out: number[], words: Uint8Array | null = W) => new PredictionTracker(P, words).draft([7, 8, ...out], 2, 3);
  assert.deepEqual(t([100, 150]), [102, 103, 3], 'a 1-token word for 101 1 2: the prediction after the replaced word');
  assert.deepEqual(t([100, 150], null), [1, 2, 102], 'without word starts: the token diagonal');
  assert.deepEqual(t([100, 150, 4]), [102, 103, 3], 'the replacement word goes on: still the next word');
  assert.deepEqual(t([100, 101, 1, 2, 102, 150, 4, 5]), [104, 105], 'a 3-token word for one of 2 (103 3): the word after it');
  assert.deepEqual(t([100, 101, 1, 2, 102, 150, 151]), [105], 'two words begun: two replaced (103 3, 104)');
  assert.deepEqual(t([100, 101, 9]), [2, 102, 103], 'a change inside a word (no word begun): the token diagonal');
});

/** The tracker's search as first written (every far search a scan of the whole prediction): the oracle for the index. */
class ScanTracker {
  private ptr = 0;
  private anchor = 0;
  private seen = 0;
  private lostAt = -1;
  private lostOut = 0;
  private guessed = false;
  constructor(readonly P: readonly number[], readonly W: Uint8Array | null = null, readonly maxN = 8, readonly minFar = 3, readonly window = 64) {}
  draft(tokens: readonly number[], start: number, k: number): number[] {
    const P = this.P;
    const O = tokens.length - start;
    for (let i = this.seen; i < O; i++) {
      if (this.ptr >= 0 && this.ptr < P.length && P[this.ptr] === tokens[start + i]) { this.anchor = ++this.ptr; this.guessed = false; } else if (this.ptr >= 0) {
        if (!this.guessed) { this.lostAt = this.ptr; this.lostOut = i; }
        this.ptr = -1;
      }
    }
    this.seen = O;
    if (this.ptr < 0) this.ptr = this.resync(tokens, start);
    return this.ptr < 0 || k <= 0 ? [] : P.slice(this.ptr, this.ptr + k) as number[];
  }
  private resync(tokens: readonly number[], start: number): number {
    const P = this.P;
    const N = tokens.length;
    const since = N - start - this.lostOut;
    let diag = this.lostAt > 0 && this.lostAt + since < P.length ? this.lostAt + since : -1;
    const words = this.W && this.lostAt > 0 ? tokens.slice(N - since).filter((id) => this.W![id]).length : 0;
    if (words > 0) diag = P.findIndex((id, j) => j > this.lostAt && this.W![id] && P.slice(this.lostAt + 1, j + 1).filter((x) => this.W![x]).length === words);
    const found = (e: number): number => { this.guessed = false; return (this.anchor = e); };
    const guess = (): number => { this.guessed = diag >= 0; return diag; };
    for (let n = Math.min(this.maxN, N - start); n >= 1; n--) {
      const far = n >= this.minFar;
      if (!far && this.lostAt <= 0) break;
      let before = -1;
      const last = far ? P.length - 1 : Math.min(P.length - 1, this.anchor + this.window + n - 1);
      for (let e = far ? n : this.anchor + n; e <= last; e++) {
        let same = true;
        for (let i = 1; i <= n && same; i++) same = P[e - i] === tokens[N - i];
        if (!same) continue;
        if (e - n >= this.anchor && (far || diag < 0 || e - n - this.anchor <= since)) return found(e);
        if (!far) return guess();
        before = e;
      }
      if (before >= 0) return found(before);
    }
    return guess();
  }
}

test(`PredictionTracker: its indexed far search drafts what a scan of the whole prediction drafts (random edits, seed ${SEED})`, () => {
  for (let c = 0; c < 200; c++) {
    const V = 3 + Math.floor(r() * 12); // few distinct tokens: many repeated n-grams, far matches before and after the anchor
    const P = Array.from({ length: 20 + Math.floor(r() * 300) }, () => Math.floor(r() * V));
    // the output: the prediction with substitutions, insertions, deletions and jumps
    const out: number[] = [];
    for (let i = 0; out.length < 150 && i < P.length;) {
      const u = r();
      if (u < 0.8) out.push(P[i++]!);
      else if (u < 0.87) { out.push(Math.floor(r() * V)); i++; } else if (u < 0.93) out.push(Math.floor(r() * V));
      else if (u < 0.97) i += 1 + Math.floor(r() * 5);
      else i = Math.floor(r() * P.length);
    }
    const tokens = [1, 2, ...out];
    const W = c % 2 ? Uint8Array.from({ length: V }, () => (r() < 0.4 ? 1 : 0)) : null; // odd cases: some ids begin words
    const a = new PredictionTracker(P, W);
    const b = new ScanTracker(P, W);
    for (let n = 2; n <= tokens.length; n++) {
      const k = 1 + Math.floor(r() * 15);
      assert.deepEqual(a.draft(tokens.slice(0, n), 2, k), b.draft(tokens.slice(0, n), 2, k), `case ${c} (seed ${SEED}), after ${n - 2} tokens`);
    }
  }
});

test('PredictionTracker: a step\'s search is bounded whatever the prediction\'s length (a million tokens, unrelated or one token repeated)', () => {
  const M = 1_000_000;
  for (const [what, P] of [['unrelated', Array.from({ length: M }, (_, i) => 100 + ((i * 7919) % 12))], ['one token repeated', [...Array<number>(M).fill(7), 8, 9]]] as const) {
    const t = new PredictionTracker(P);
    const tokens = [1, 2, 7, 7];
    for (let s = 0; s < 50; s++) {
      tokens.push(s % 2 ? 7 : 50 + s); // the output never lines up for long
      t.draft(tokens, 2, 15);
    }
    assert.ok(t.compared <= 50 * (8 * 1024 + 8 * 64), `${what}: ${t.compared} positions compared in 50 steps`);
  }
  // with word starts: the next word is looked for within reach, not to the end of a prediction that has none
  const W = new Uint8Array(200);
  W[150] = 1;
  const t = new PredictionTracker([10, ...Array<number>(M).fill(7)], W);
  const tokens = [1, 2, 10];
  t.draft(tokens, 2, 15);
  for (let s = 0; s < 50; s++) { tokens.push(150); t.draft(tokens, 2, 15); }
  assert.ok(t.compared <= 50 * (8 * 1024 + 8 * 64), `no word starts: ${t.compared} positions compared in 50 steps`);
  // the index still finds the prediction again after the million-token prefix
  const far = [...Array.from({ length: M }, (_, i) => 100 + ((i * 7919) % 12)), 20, 21, 22, 23, 24, 25];
  assert.deepEqual(new PredictionTracker(far).draft([1, 2, 9, 9, 20, 21, 22], 2, 3), [23, 24, 25]);
});

test('wordStartTable: a token begins a word where its text opens with whitespace (punctuation and special tokens do not)', () => {
  const b = (s: string) => new TextEncoder().encode(s);
  assert.deepEqual([...wordStartTable([b(' the'), b('the'), b('.'), b(','), null, b('\n'), b('\t'), b('\u00e9'), b('')])], [1, 0, 0, 0, 0, 1, 1, 0, 0]);
});
