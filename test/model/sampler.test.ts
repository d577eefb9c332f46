// The sampler against a plain float64 reference of its whole distribution: frequencies of many seeded draws
// (chi-square goodness of fit, exact support) on small random vocabularies, ties, and large vocabularies for the
// top-p candidate shortcut, on the reference and the native backend.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Backend } from '../../src/backend/backend.js';
import { loadNativeBackend } from '../../src/backend/native.js';
import { referenceBackend } from '../../src/backend/reference.js';
import { DEFAULT_SAMPLING, Sampler, TokenCounts, type SamplingParams } from '../../src/model/sampler.js';
import { assertFits } from './sampler-fit.js';

const BACKENDS: Backend[] = [referenceBackend, ...(loadNativeBackend() ? [loadNativeBackend()!] : [])];

/** Deterministic uniform [0, 1) (mulberry32) and standard normal draws for test inputs. */
function rng(seed: number): { u: () => number; normal: () => number } {
  let a = seed >>> 0;
  const u = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
  return { u, normal: () => Math.sqrt(-2 * Math.log(1 - u())) * Math.cos(2 * Math.PI * u()) };
}

/**
 * The sampling distribution (V), float64, in the documented order: repetition penalty (prompt + output), frequency
 * and presence penalties (output), logit bias, temperature softmax, then top-k, top-p (smallest head whose mass
 * reaches top_p), min-p (relative to the most likely token), each renormalizing. Ties rank by lower token id.
 */
function reference(logits: Float32Array, p: SamplingParams, counts: TokenCounts | null): Float64Array {
  const V = logits.length;
  const z = Float64Array.from(logits);
  if (counts) {
    if (p.repetitionPenalty !== 1) for (const id of counts.seen) z[id] = z[id]! > 0 ? z[id]! / p.repetitionPenalty : z[id]! * p.repetitionPenalty;
    for (const [id, c] of counts.output) z[id] = z[id]! - c * p.frequencyPenalty - p.presencePenalty;
  }
  if (p.logitBias) for (const [id, b] of p.logitBias) z[id] = z[id]! + b;
  const probs = new Float64Array(V);
  if (p.temperature === 0) {
    let best = 0;
    for (let i = 1; i < V; i++) if (z[i]! > z[best]!) best = i;
    probs[best] = 1;
    return probs;
  }
  const max = z.reduce((m, v) => Math.max(m, v), -Infinity);
  for (let i = 0; i < V; i++) probs[i] = Math.exp((z[i]! - max) / p.temperature);
  const order = Array.from(probs.keys()).sort((a, b) => probs[b]! - probs[a]! || a - b);
  let kept = p.topK > 0 ? order.slice(0, p.topK) : order;
  const mass = (ids: number[]) => ids.reduce((s, i) => s + probs[i]!, 0);
  if (p.topP < 1) {
    const total = mass(kept);
    let cum = 0;
    const head: number[] = [];
    for (const i of kept) {
      head.push(i);
      cum += probs[i]! / total;
      if (cum >= p.topP) break;
    }
    kept = head;
  }
  if (p.minP > 0) kept = kept.filter((i) => probs[i]! >= p.minP * probs[kept[0]!]!);
  const out = new Float64Array(V);
  const total = mass(kept);
  for (const i of kept) out[i] = probs[i]! / total;
  return out;
}

/**
 * A backend that records the k of every topk call and otherwise is the real one, without the native sampling kernels:
 * the sampler's TypeScript candidate search runs (test/model/sampler-native.test.ts compares the kernels with it).
 */
function spying(b: Backend): { backend: Backend; ks: number[] } {
  const ks: number[] = [];
  const backend = Object.assign(Object.create(b) as Backend, {
    topk: (x: Float32Array, k: number) => { ks.push(k); return b.topk(x, k); },
    sampleCandidates: undefined,
    argmax: undefined,
  });
  return { backend, ks };
}

/** Token frequencies of n draws from one sampler on fixed logits and history. */
function draws(sampler: Sampler, logits: Float32Array, counts: TokenCounts | null, n: number): Float64Array {
  const freq = new Float64Array(logits.length);
  for (let i = 0; i < n; i++) freq[sampler.sample(logits, counts)]!++;
  return freq;
}

function randomLogits(r: ReturnType<typeof rng>, V: number, scale: number): Float32Array {
  return Float32Array.from({ length: V }, () => scale * r.normal());
}

const p = (over: Partial<SamplingParams>): SamplingParams => ({ ...DEFAULT_SAMPLING, seed: 1234, ...over });

test('temperature, top-k, top-p, min-p and their mix: draws follow the reference distribution on random vocabularies', () => {
  const r = rng(42);
  const cases: Array<[string, Partial<SamplingParams>]> = [
    ['temperature 0.6', { temperature: 0.6 }],
    ['temperature 1.5, top-k 5', { temperature: 1.5, topK: 5 }],
    ['top-p 0.7', { topP: 0.7 }],
    ['top-p 0.99 cuts the long tail', { topP: 0.99 }],
    ['min-p 0.15', { minP: 0.15 }],
    ['top-k 12, top-p 0.85, min-p 0.05, temperature 0.9', { topK: 12, topP: 0.85, minP: 0.05, temperature: 0.9 }],
    ['top-k -1 means off', { topK: -1, temperature: 1.2 }],
  ];
  for (const backend of BACKENDS) {
    for (const [name, over] of cases) {
      const V = 8 + Math.floor(r.u() * 40);
      const logits = randomLogits(r, V, 2);
      const params = p({ ...over, seed: Math.floor(r.u() * 2 ** 31) });
      assertFits(`${backend.name} ${name} (V=${V})`, draws(new Sampler(params, V, backend), logits, null, 20_000), reference(logits, params, null));
    }
  }
});

test('repetition, frequency and presence penalties and logit_bias (incl. a ban) shift the distribution as the reference does; temperature 0 is its argmax', () => {
  const r = rng(7);
  for (const backend of BACKENDS) {
    for (let trial = 0; trial < 3; trial++) {
      const V = 16 + Math.floor(r.u() * 24);
      const logits = randomLogits(r, V, 1.5);
      const pick = () => Math.floor(r.u() * V);
      const counts = new TokenCounts(Array.from({ length: 6 }, pick));
      for (let i = 0; i < 10; i++) counts.add(pick());
      const bias = new Map([[pick(), -100], [pick(), 4], [pick(), -3]]);
      const params = p({ repetitionPenalty: 1.4, frequencyPenalty: 0.7, presencePenalty: 0.5, logitBias: bias, seed: 99 + trial });
      const want = reference(logits, params, counts);
      assertFits(`${backend.name} penalties + bias, trial ${trial}`, draws(new Sampler(params, V, backend), logits, counts, 20_000), want);
      const banned = [...bias].find(([, b]) => b === -100)![0];
      assert.ok(want[banned]! < 1e-30, 'the reference bans the -100 token');

      const greedy = p({ ...params, temperature: 0 });
      const argmax = reference(logits, greedy, counts).indexOf(1);
      const s = new Sampler(greedy, V, backend);
      for (let i = 0; i < 50; i++) assert.equal(s.sample(logits, counts), argmax, `${backend.name} greedy after penalties and bias`);
    }
  }
});

test('ties: top-k and top-p cuts inside a group of equal logits keep as many of the group as the reference, with its mass', () => {
  const r = rng(3);
  const values = [2, 1, 0.5, 0, -1];
  for (const backend of BACKENDS) {
    for (const [name, over] of [['top-p 0.5', { topP: 0.5 }], ['top-k 3', { topK: 3 }], ['top-p 0.8, min-p 0.3', { topP: 0.8, minP: 0.3 }]] as const) {
      const V = 30;
      const logits = Float32Array.from({ length: V }, () => values[Math.floor(r.u() * values.length)]!);
      logits[5] = 2; logits[17] = 2; logits[23] = 2; logits[29] = 2; // at least four tied at the top
      const params = p({ ...over, seed: 5 });
      const want = reference(logits, params, null);
      const got = draws(new Sampler(params, V, backend), logits, null, 20_000);
      // Which of equal tokens a cut keeps is arbitrary: compare per value group, and how many of each group appear.
      const group = (x: Float64Array) => Float64Array.from(values, (v) => x.reduce((s, c, i) => s + (logits[i] === v ? c : 0), 0));
      assertFits(`${backend.name} ties, ${name}`, group(got), group(want));
      for (const v of values) {
        const members = [...logits.keys()].filter((i) => logits[i] === v);
        const drawn = members.filter((i) => got[i]! > 0).length;
        const kept = members.filter((i) => want[i]! > 0).length;
        assert.ok(drawn <= kept, `${backend.name} ${name}: ${drawn} tokens of logit ${v} drawn, the reference keeps ${kept}`);
      }
    }
  }
});

// V = 2048, 32 times the first 64 candidates: a flat row widens 64, 256, 1024, then to V (the clamp), as V = 8192 did
// (64, ..., 4096, 8192) at a quarter of the cost per draw; the draw counts, and so the chi-square's power, are unchanged.
// Vocabularies past SELECT_VOCAB (16384) take the O(V) selection instead: the next two tests, at V = 128256.
test('top-p candidate shortcut on a large vocabulary (2048): a peaked head is covered by the first 64 candidates; p near 1 widens them until covered', () => {
  const V = 2048;
  const r = rng(11);
  const peaked = randomLogits(r, V, 1);
  for (let i = 0; i < 12; i++) peaked[Math.floor(r.u() * V)] = 9 + r.u();
  const flat = randomLogits(r, V, 1.5);
  for (const backend of BACKENDS) {
    const n = backend.name === 'native' ? 20_000 : 600; // the reference topk sorts all V per draw
    {
      const params = p({ topP: 0.9, seed: 21 });
      const { backend: b, ks } = spying(backend);
      const got = draws(new Sampler(params, V, b), peaked, null, n);
      assert.ok(ks.length === n && ks.every((k) => k === 64), `${backend.name}: one topk of 64 per draw, got ${[...new Set(ks)].join(',')}`);
      assertFits(`${backend.name} huge vocab, top-p 0.9`, got, reference(peaked, params, null));
    }
    {
      const params = p({ topP: 0.999, temperature: 0.8, seed: 22 });
      const want = reference(flat, params, null);
      // The widening the shortcut must do: k = 64, 256, ... until the head's mass (whole-vocabulary softmax) reaches p.
      const probs = reference(flat, p({ temperature: 0.8 }), null);
      const sorted = Float64Array.from(probs).sort().reverse();
      const expectKs: number[] = [];
      for (let k = 64; ; k = Math.min(V, k * 4)) {
        expectKs.push(k);
        if (k === V || sorted.subarray(0, k).reduce((s, x) => s + x, 0) >= 0.999) break;
      }
      assert.ok(expectKs.length >= 3, 'the case exercises widening');
      const { backend: b, ks } = spying(backend);
      const s = new Sampler(params, V, b);
      s.sample(flat, null);
      assert.deepEqual(ks, expectKs, `${backend.name}: candidate counts tried`);
      const m = backend.name === 'native' ? 6000 : 200;
      const got = draws(s, flat, null, m);
      assertFits(`${backend.name} huge vocab, top-p 0.999`, got, want);
    }
  }
});

test('Llama 3 vocabulary size (128256), native backend: the shortcut takes 64 candidates and draws follow the reference', (t) => {
  const native = BACKENDS.find((b) => b.name === 'native');
  if (!native) { t.skip('the native addon is not built'); return; }
  const V = 128_256;
  const r = rng(12);
  const logits = randomLogits(r, V, 1);
  for (let i = 0; i < 20; i++) logits[Math.floor(r.u() * V)] = 12 + 2 * r.u();
  const params = p({ topP: 0.95, temperature: 0.7, seed: 23 });
  const { backend, ks } = spying(native);
  const got = draws(new Sampler(params, V, backend), logits, null, 3000);
  assert.ok(ks.every((k) => k === 64), `one topk of 64 per draw, got ${[...new Set(ks)].join(',')}`);
  assertFits('native V=128256, top-p 0.95', got, reference(logits, params, null));
});

// The candidates of each case are checked exactly at V = 128256. The draws (that sample() draws from those candidates)
// run at V = 20000, past SELECT_VOCAB (16384), on the first 20000 of the same logits: each draw redoes the whole
// selection, ~12 ms in TypeScript at 128256 and a sixth of it at 20000, so the same 1000 draws per case (the same
// chi-square, 50 cells) cost ~6 s instead of ~36. Every draw is checked to take the selection (64, 256, 1024, then O(V)).
const DRAW_V = 20_000;
test('a flat distribution over a large vocabulary: after 64, 256 and 1024 candidates the top-p set is selected in O(V), and draws follow the reference (top-p, min-p, ties)', (t) => {
  const native = BACKENDS.find((b) => b.name === 'native');
  if (!native) { t.skip('the native addon is not built'); return; }
  const V = 128_256;
  const seed = (Date.now() ^ 0x70b) >>> 0;
  const r = rng(seed);
  const cases: Array<[string, Float32Array, Partial<SamplingParams>]> = [
    ['random-weight-like logits, T 0.8, top-p 0.95', randomLogits(r, V, 0.3), { topP: 0.95, temperature: 0.8 }],
    ['top-p 0.5 and min-p 0.9', randomLogits(r, V, 0.5), { topP: 0.5, minP: 0.9 }],
    // logits on a coarse grid: whole groups tie, so the cut falls inside a group of equal weights
    ['ties: logits on a 0.25 grid, top-p 0.7', Float32Array.from(randomLogits(r, V, 0.6), (x) => Math.round(x * 4) / 4), { topP: 0.7 }],
  ];
  for (const [name, logits, over] of cases) {
    const params = p({ ...over, seed: seed + 1 });
    const want = reference(logits, params, null);
    const { backend, ks } = spying(native);
    const s = new Sampler(params, V, backend);
    const d = s.distribution(logits, null);
    assert.deepEqual(ks, [64, 256, 1024], `${name}: no topk beyond 1024 candidates (seed ${seed})`);
    // the support and the probabilities are the reference's (ties: as many of the cut group, with its mass)
    const kept = want.reduce((c, x) => c + (x > 0 ? 1 : 0), 0);
    assert.equal(d.n, kept, `${name}: ${d.n} candidates, the reference keeps ${kept} (seed ${seed})`);
    const best = want.reduce((b, x, i) => (x > want[b]! ? i : b), 0);
    assert.equal(want[d.ids[0]!], want[best], `${name}: the most likely token comes first`);
    for (let i = 0; i < d.n; i++) {
      const id = d.ids[i]!;
      const got = d.weights[i]! / d.sum;
      const ref = want[id]!; // ties at the cut: both take the lowest ids of the group
      if (!(Math.abs(got - ref) <= 1e-9 + 1e-6 * ref)) assert.fail(`${name}: token ${id} p ${got} vs reference ${ref} (seed ${seed})`); // up to V checks: the message only on a failure
    }
    // the candidates and their probabilities are checked exactly above; the draws check that sample() draws from
    // them (1000 draws: 50 chi-square cells), on the first DRAW_V logits (see above)
    const z = logits.slice(0, DRAW_V);
    const zWant = reference(z, params, null);
    const draw = spying(native);
    const got = draws(new Sampler(params, DRAW_V, draw.backend), z, null, 1000);
    assert.ok(draw.ks.length === 3000 && draw.ks.every((k, i) => k === [64, 256, 1024][i % 3]), `${name}: every draw took the O(V) selection after 64, 256 and 1024 candidates (seed ${seed})`);
    if (name.startsWith('ties')) {
      const values = [...new Set(z)];
      const group = (x: Float64Array) => Float64Array.from(values, (v) => x.reduce((acc, c, i) => acc + (z[i] === v ? c : 0), 0));
      assertFits(`${name} (seed ${seed})`, group(got), group(zWant));
    } else {
      assertFits(`${name} (seed ${seed})`, got, zWant);
    }
  }
});

test('top-k at or above the vocabulary is off: top-p then counts the mass of the whole vocabulary, not of the first candidates', () => {
  const r = rng(31);
  const V = 300;
  const logits = randomLogits(r, V, 1);
  for (const backend of BACKENDS) {
    for (const topK of [V, V + 7, -1]) {
      const params = p({ topK, topP: 0.9, seed: 8 });
      const want = reference(logits, params, null);
      const { backend: b } = spying(backend); // the TypeScript path (sampler-native.test.ts compares the kernels with it)
      const d = new Sampler(params, V, b).distribution(logits, null);
      const kept = want.reduce((c, x) => c + (x > 0 ? 1 : 0), 0);
      assert.equal(d.n, kept, `${backend.name} top-k ${topK}: ${d.n} candidates, the reference keeps ${kept}`);
      for (let i = 0; i < d.n; i++) assert.ok(want[d.ids[i]!]! > 0, `${backend.name} top-k ${topK}: token ${d.ids[i]} is outside the reference's support`);
    }
  }
});
