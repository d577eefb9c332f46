// The native sampling kernels (native/sample.*) against the sampler's TypeScript path (the oracle) on fresh random
// logits, for every ISA this CPU runs: the same candidate ids, weights and sum, draws that fit the oracle's
// distribution, argmax's first-max rule, counters proving the kernels ran, and clear errors for bad arguments.
//
// V vocab. FLOE_SEED replays a failure (the seed is in every message).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Backend } from '../../src/backend/backend.js';
import { loadNativeBackend, nativeCounters } from '../../src/backend/native.js';
import { loadAddon, type NativeIsa } from '../../src/backend/native-addon.js';
import { referenceBackend } from '../../src/backend/reference.js';
import { DEFAULT_SAMPLING, Sampler, argmax, type SamplingParams, type TokenDistribution } from '../../src/model/sampler.js';
import { BASE_SEED, Rng } from '../backend/helpers.js';
import { assertFits } from './sampler-fit.js';

const native = loadNativeBackend();
const addon = loadAddon();
const skip = !native || !addon ? 'the native addon is not built' : false;
const ORDER: NativeIsa[] = ['scalar', 'avx2', 'avx512'];
const isas = (): NativeIsa[] => (addon ? ORDER.slice(0, ORDER.indexOf(addon.supportedIsa()) + 1) : []);

/** The same backend without the sampling kernels: Sampler runs its TypeScript candidate search (native topk). */
const oracleOf = (b: Backend): Backend => Object.assign(Object.create(b) as Backend, { sampleCandidates: undefined, argmax: undefined });

/** Runs fn with the addon's kernels set to each ISA in turn (the initial one restored). */
function eachIsa(fn: (isa: NativeIsa) => void): void {
  const initial = addon!.isa();
  try {
    for (const isa of isas()) { addon!.setIsa(isa); fn(isa); }
  } finally { addon!.setIsa(initial); }
}

const V = 128_256;
const p = (over: Partial<SamplingParams>): SamplingParams => ({ ...DEFAULT_SAMPLING, seed: 1, ...over });

function flat(r: Rng, n: number, scale: number): Float32Array { return r.normals(n, scale); } // normal() * scale in a loop: Float32Array.from took 2.3x as long
function peaked(r: Rng, n: number): Float32Array {
  const z = flat(r, n, 1);
  for (let i = 0; i < 20; i++) z[r.int(0, n)] = 10 + 3 * r.next();
  return z;
}
/** Logits on a 0.25 grid: whole groups of tokens tie, so cuts fall inside a group. */
function grid(r: Rng, n: number): Float32Array { return Float32Array.from(flat(r, n, 0.7), (x) => Math.round(x * 4) / 4); }

/** A copy of a distribution (the sampler reuses its buffers). */
function snapshot(d: TokenDistribution): { ids: Int32Array; weights: Float64Array; n: number; sum: number } {
  return { ids: d.ids.slice(0, d.n), weights: d.weights.slice(0, d.n), n: d.n, sum: d.sum };
}

/** The oracle's distribution (a copy). */
const oracle = (z: Float32Array, params: SamplingParams) => snapshot(new Sampler(params, z.length, oracleOf(native!)).distribution(z, null));

/**
 * Native and oracle distributions: same ids (as sets; in order when the oracle's order is the sorted one), weights and
 * sum within 1e-6. `want`: the oracle's, when already computed (it does not depend on the ISA: TypeScript over exact topk).
 */
function assertSame(what: string, z: Float32Array, params: SamplingParams, ordered: boolean, want = oracle(z, params)): void {
  const got = snapshot(new Sampler(params, z.length, native!).distribution(z, null));
  assert.equal(got.n, want.n, `${what}: ${got.n} candidates, the oracle keeps ${want.n}`);
  assert.equal(got.ids[0], argmax(z), `${what}: the first candidate is the argmax`);
  const byId = new Map<number, number>();
  for (let i = 0; i < want.n; i++) byId.set(want.ids[i]!, want.weights[i]!);
  // up to V candidates: each message is built only on a failure (building ~3 per candidate was most of the test's time)
  for (let i = 0; i < got.n; i++) {
    const id = got.ids[i]!;
    const w = byId.get(id);
    if (w === undefined) assert.fail(`${what}: token ${id} is a native candidate, not an oracle one`);
    if (!(Math.abs(got.weights[i]! - w) <= 1e-6 * w)) assert.fail(`${what}: token ${id} weight ${got.weights[i]} vs oracle ${w}`);
    if (ordered && id !== want.ids[i]) assert.equal(id, want.ids[i], `${what}: candidate ${i} is ${id}, the oracle's is ${want.ids[i]}`);
  }
  assert.ok(Math.abs(got.sum - want.sum) <= 1e-6 * want.sum, `${what}: sum ${got.sum} vs oracle ${want.sum}`);
  const direct = got.weights.reduce((s, x) => s + x, 0);
  assert.ok(Math.abs(direct - got.sum) <= 1e-9 * got.sum, `${what}: sum ${got.sum} is not the weights' sum ${direct}`);
}

test('native candidates equal the TypeScript oracle at V=128256: flat, peaked and tied rows; top-k, top-p, both, min-p; T 0.3, 1, 2; every ISA', { skip }, () => {
  const r = new Rng(BASE_SEED);
  const rows: Array<[string, Float32Array]> = [['flat', flat(r, V, 0.3)], ['peaked', peaked(r, V)], ['ties on a 0.25 grid', grid(r, V)]];
  const modes: Array<[string, Partial<SamplingParams>]> = [
    ['top-p 0.95', { topP: 0.95 }], ['no truncation', {}], ['top-k 50', { topK: 50 }], ['top-k 40 + top-p 0.8', { topK: 40, topP: 0.8 }],
    ['min-p 0.05', { minP: 0.05 }], ['top-p 0.6 + min-p 0.3', { topP: 0.6, minP: 0.3 }], ['top-k 3000 + min-p 0.2', { topK: 3000, minP: 0.2 }],
  ];
  // the oracle's distributions, computed once for every ISA (each is up to ~60 ms at this V: ~90% of the test's time)
  const wants = new Map<string, ReturnType<typeof oracle>>();
  eachIsa((isa) => {
    for (const [row, z] of rows) {
      for (const [mode, over] of modes) {
        for (const temperature of [0.3, 1, 2]) {
          const params = p({ ...over, temperature });
          const what = `${isa} ${row} ${mode} T=${temperature} (seed ${BASE_SEED})`;
          const key = `${row} ${mode} ${temperature}`;
          if (!wants.has(key)) wants.set(key, oracle(z, params));
          // the oracle's sorted path (top-k, or a head within 1024 candidates) fixes the order too
          assertSame(what, z, params, (over.topK ?? 0) > 0, wants.get(key)!);
        }
      }
    }
  });
});

test('native candidates on small vocabularies with many exact ties and -Infinity (masked) logits equal the oracle, in its order', { skip }, () => {
  const r = new Rng(BASE_SEED + 1);
  const values = [3, 1.5, 1.5, 0, -1, -Infinity];
  eachIsa((isa) => {
    for (let trial = 0; trial < 60; trial++) {
      const n = 1 + r.int(0, 90);
      const z = Float32Array.from({ length: n }, () => values[r.int(0, values.length)]!);
      z[r.int(0, n)] = 3;
      const over: Partial<SamplingParams> = { topP: [1, 0.3, 0.7, 0.95][trial % 4]!, topK: [0, 0, 2, 5, 200][trial % 5]!, minP: [0, 0.1, 0.5][trial % 3]!, temperature: [0.3, 1, 2][trial % 3]! };
      // with n <= 1024 both paths sort: the order is the oracle's (logit descending, ties by id)
      assertSame(`${isa} V=${n} ${JSON.stringify(over)} trial ${trial} (seed ${BASE_SEED})`, z, p(over), true);
      // a subnormal temperature: the tied maxima weigh 1, every other token 0
      assertSame(`${isa} V=${n} T=1e-310 trial ${trial} (seed ${BASE_SEED})`, z, p({ ...over, temperature: 1e-310 }), true);
    }
  });
});

test('draws through the native candidates fit the oracle distribution (chi-square), flat and peaked rows', { skip }, () => {
  const r = new Rng(BASE_SEED + 2);
  const cases: Array<[string, Float32Array, Partial<SamplingParams>, number]> = [
    ['peaked, T 0.8, top-p 0.95', peaked(r, V), { temperature: 0.8, topP: 0.95 }, 10_000],
    ['flat, T 0.8, top-p 0.95', flat(r, V, 0.3), { temperature: 0.8, topP: 0.95 }, 4000],
    ['small V=300, T 1.3, min-p 0.02', flat(r, 300, 2), { temperature: 1.3, minP: 0.02 }, 20_000],
  ];
  for (const [name, z, over, n] of cases) {
    const params = p({ ...over, seed: BASE_SEED + 3 });
    const want = snapshot(new Sampler(params, z.length, oracleOf(native!)).distribution(z, null));
    const expected = new Float64Array(z.length);
    for (let i = 0; i < want.n; i++) expected[want.ids[i]!] = want.weights[i]! / want.sum;
    const s = new Sampler(params, z.length, native!);
    const observed = new Float64Array(z.length);
    const before = nativeCounters();
    for (let i = 0; i < n; i++) observed[s.sample(z, null)]!++;
    const ran = Object.entries(nativeCounters()).filter(([k]) => k.startsWith('sample.')).reduce((c, [k, v]) => c + v - (before[k] ?? 0), 0);
    assert.equal(ran, n, `${name}: one native sampleCandidates per draw`);
    assertFits(`${name} (seed ${BASE_SEED})`, observed, expected);
  }
});

test('the native top-k order is the reference topk order (ties by id, NaN last) on rows with NaN, -Infinity and ties, every ISA', { skip }, () => {
  const r = new Rng(BASE_SEED + 6);
  eachIsa((isa) => {
    for (let trial = 0; trial < 80; trial++) {
      const n = 2 + r.int(0, trial < 40 ? 200 : 5000);
      const z = Float32Array.from({ length: n }, () => r.int(-4, 4) / 2); // few distinct values: many ties
      for (let i = 0; i < n / 10; i++) z[r.int(0, n)] = NaN;
      for (let i = 0; i < n / 10; i++) z[r.int(0, n)] = -Infinity;
      const k = [1, 5, 50, n - 1][trial % 4]!;
      if (k < 1 || k >= n) continue;
      const ids = new Int32Array(k), w = new Float64Array(k), sum = new Float64Array(1);
      const got = addon!.sampleCandidates(z, 1, k, 1, 0, ids, w, sum);
      assert.equal(got, k, `${isa} V=${n} k=${k}: all k candidates kept`);
      assert.deepEqual([...ids], [...referenceBackend.topk(z, k).ids], `${isa} V=${n} k=${k} trial ${trial} (seed ${BASE_SEED})`);
    }
  });
});

test('native argmax is sampler.ts argmax: the first of equal maxima, -Infinity entries, every length and position, every ISA', { skip }, () => {
  const r = new Rng(BASE_SEED + 4);
  eachIsa((isa) => {
    for (let trial = 0; trial < 300; trial++) {
      const n = trial < 150 ? 1 + r.int(0, 150) : 1 + r.int(0, V);
      const x = trial % 3 === 0 ? Float32Array.from({ length: n }, () => r.int(-3, 3)) : flat(r, n, 2); // integers: many equal maxima
      if (trial % 5 === 0) for (let i = 0; i < n / 4; i++) x[r.int(0, n)] = -Infinity;
      if (trial % 7 === 0) { const m = 50 + r.next(); for (let i = 0; i < 4; i++) x[r.int(0, n)] = m; } // several equal maxima
      if (trial % 11 === 0) x.fill(-Infinity);
      assert.equal(native!.argmax!(x), argmax(x), `${isa} V=${n} trial ${trial} (seed ${BASE_SEED})`);
    }
  });
});

test('counters prove the native kernels ran for the native backend and stay still for the reference backend', { skip }, () => {
  const r = new Rng(BASE_SEED + 5);
  const z = flat(r, 4096, 1);
  const delta = (before: Record<string, number>, prefix: string) =>
    Object.entries(nativeCounters()).filter(([k]) => k.startsWith(prefix)).reduce((c, [k, v]) => c + v - (before[k] ?? 0), 0);
  const isa = addon!.isa();
  let before = nativeCounters();
  new Sampler(p({ topP: 0.9 }), z.length, native!).sample(z, null);
  new Sampler(p({ topK: 20 }), z.length, native!).sample(z, null);
  new Sampler(p({}), z.length, native!).sample(z, null);
  new Sampler(p({ temperature: 0 }), z.length, native!).sample(z, null);
  const now = nativeCounters();
  for (const key of [`sample.topp.${isa}`, `sample.topk.${isa}`, `sample.all.${isa}`, `argmax.${isa}`])
    assert.equal((now[key] ?? 0) - (before[key] ?? 0), 1, `${key} counted once`);
  before = nativeCounters();
  assert.equal(referenceBackend.sampleCandidates, undefined, 'the reference backend keeps the TypeScript sampler');
  for (const over of [{ topP: 0.9 }, { topK: 20 }, { temperature: 0 }]) new Sampler(p(over), z.length, referenceBackend).sample(z, null);
  assert.equal(delta(before, 'sample.') + delta(before, 'argmax.'), 0, 'no native sampling for the reference backend');
});

test('sampleCandidates rejects bad arguments with what was expected', { skip }, () => {
  const z = new Float32Array(100);
  const ids = new Int32Array(100), w = new Float64Array(100), sum = new Float64Array(1);
  const call = (...args: unknown[]) => () => (addon!.sampleCandidates as (...a: unknown[]) => number)(...args);
  assert.throws(call(z, 0, 0, 1, 0, ids, w, sum), /temperature must be a finite number > 0, got 0/);
  assert.throws(call(z, 1, 0, 1.5, 0, ids, w, sum), /topP must be in \(0, 1\], got 1.5/);
  assert.throws(call(z, 1, 0, 1, -0.1, ids, w, sum), /minP must be in \[0, 1\]/);
  assert.throws(call(z, 1, 2.5, 1, 0, ids, w, sum), /topK must be an integer/);
  assert.throws(call(z, 1, 0, 1, 0, new Int32Array(99), w, sum), /ids has 99 elements, expected at least 100 \(V\)/);
  assert.throws(call(z, 1, 10, 1, 0, ids, new Float64Array(9), sum), /weights has 9 elements, expected at least 10 \(topK\)/);
  assert.throws(call(z, 1, 0, 1, 0, ids, new Float32Array(100), sum), /weights must be a Float64Array/);
  assert.throws(call(new Float32Array(0), 1, 0, 1, 0, ids, w, sum), /logits must hold at least one value/);
  assert.throws(() => addon!.argmax(new Float32Array(0)), /argmax: x must hold at least one value/);
});
