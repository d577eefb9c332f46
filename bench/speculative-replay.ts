// Offline replay of proposers on greedy outputs. A greedy output does not depend on the proposer (speculation is
// exact), so the tokens a step any proposer would get is replayed exactly from the plain output, with the same
// adaptive k as generate(), and without timing noise. Use it to try proposer ideas before running them.
//
//   node --import tsx bench/speculative-replay.ts [--target DIR] [--prompts 4] [--k 4] [--show]
//          [--costs 'label:a,b,j,d;...' | --steps FILE [--seeds N] [--draft-ms D]]
// The prompts are bench/speculative.ts's text workloads. Prints tokens a step and verify rows a step, per workload
// and proposer:
//   ngram    the NgramProposer generate() uses;
//   sub/ins  after a rejected draft, keep copying from the source position, assuming the model substituted
//            (skip one source token) or inserted a token; only when the longest n-gram match is shorter than 2;
//   ngram8   n-gram matches of up to 8 tokens instead of 4;
//   freq     among every earlier occurrence of the longest match, the continuation most of them share, token by
//            token (SuffixDecoding's frequency path; freq8: matches of up to 8).
// Then the n-gram proposer under each way of choosing k (the timing-free rule, measured costs, measured costs with
// paused sequences scoring the drafts they would make), in simulated time: a step costs a + b per row past the
// first + j when it verifies (--costs, ms), or a time drawn from those bench/record-steps.ts recorded on this host
// for its row count (--steps; --seeds runs with other draws), and D ms per draft token.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { generate } from '../src/model/generate.js';
import { openModel } from '../src/model/open.js';
import { AdaptiveK, NgramProposer, SpecCosts } from '../src/model/speculation.js';
import { loadBrown, splitBrown } from '../src/train/corpus.js';
import { firstWords, passage } from './harness/text.js';
import { machineInfo, machineLine } from './machine.js';

const ROOT = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const arg = (name: string, dflt: string): string => { const i = process.argv.indexOf(`--${name}`); return i >= 0 ? process.argv[i + 1]! : dflt; };
const target = arg('target', path.join(ROOT, 'models', 'floe-brown'));
const nPrompts = Number(arg('prompts', '4'));
const K = Number(arg('k', '4'));

/** A proposer for the replay: the sequence so far, k, and its own state (the previous step's draft and acceptance). */
type Propose = (tokens: number[], k: number, st: ReplayState) => number[];
interface ReplayState { last?: { draft: number[]; accepted: number }; src?: number; rejected?: boolean }

/** Steps, accepted drafts and verify rows of generating `out` after `prompt` with `propose`. */
function replay(prompt: readonly number[], out: readonly number[], propose: Propose): { steps: number; rows: number } {
  const ak = new AdaptiveK(K);
  const st: ReplayState = {};
  const seq = [...prompt, out[0]!]; // the first token comes from the prefill
  let i = 1, steps = 0, rows = 0;
  while (i < out.length) {
    const k = ak.next();
    const draft = k > 0 ? propose(seq.slice(), Math.min(k, out.length - i), st) : [];
    let a = 0;
    while (a < draft.length && draft[a] === out[i + a]) a++;
    if (k > 0) ak.update(draft.length, a); else ak.tick();
    st.last = { draft, accepted: a };
    steps++;
    rows += draft.length + 1;
    const emit = Math.min(a + 1, out.length - i);
    for (let j = 0; j < emit; j++) seq.push(out[i + j]!);
    i += emit;
  }
  return { steps, rows };
}

/** A step's simulated time in ms: a + b per row past the first + j when it verifies a draft; d per drafted token. */
interface CostModel { a: number; b: number; j: number; d: number }
type Controller = 'heuristic' | 'costs' | 'shadow';

/**
 * Simulated decode time (ms) of generating `out` after `prompt` with the n-gram proposer, k chosen by `ctl`: the
 * timing-free heuristic, measured costs (a SpecCosts fed the model's step times, shared across prompts as generate()
 * shares it across calls), or measured costs with paused sequences scoring the drafts they would have made.
 */
function replayTimed(prompt: readonly number[], out: readonly number[], ctl: Controller, m: CostModel, costs: SpecCosts | null): { ms: number; steps: number; rows: number } {
  const ak = new AdaptiveK(K, undefined, undefined, undefined, undefined, costs, ctl === 'shadow');
  const ng = new NgramProposer();
  const seq = [...prompt, out[0]!];
  let i = 1, steps = 0, rows = 0, ms = 0;
  while (i < out.length) {
    const k = costs?.wantsPlain() ? 0 : Math.min(ak.next(), out.length - i - 1);
    const draft = k > 0 ? ng.one(seq, k) : [];
    let prop = m.d * draft.length;
    if (k === 0 && ak.wantsShadow()) { ak.watch(ng.one(seq, K)); prop += m.d * K; }
    let a = 0;
    while (a < draft.length && draft[a] === out[i + a]) a++;
    const step = sampled ? sampleStep(1 + draft.length) : m.a + m.b * draft.length + (draft.length > 0 ? m.j : 0);
    if (draft.length > 0) ak.update(draft.length, a);
    else { ak.tick(); ak.seen(out[i]!); }
    const emit = Math.min(a + 1, out.length - i);
    costs?.observe(1 + draft.length, step / 1000, prop / 1000, draft.length, emit, draft.length > 0 ? 1 : 0);
    ms += step + prop;
    steps++;
    rows += draft.length + 1;
    for (let j = 0; j < emit; j++) seq.push(out[i + j]!);
    i += emit;
  }
  return { ms, steps, rows };
}

/**
 * Step times recorded on this host (`--steps FILE`: {rows: [ms, ...]}), drawn at random (seeded) for a step of that
 * many rows, so the controllers meet real timing noise: stalls, cache refills, the spread of each row count.
 */
const stepsFile = arg('steps', '');
const sampled: Record<number, number[]> | null = stepsFile ? JSON.parse(fs.readFileSync(stepsFile, 'utf8')) as Record<number, number[]> : null;
const nSeeds = Number(arg('seeds', '1')); // --steps: runs with different draws, summed
const maxRows = sampled ? Math.max(...Object.keys(sampled).map(Number)) : 0;
let seed = 0x9e3779b9;
function sampleStep(rows: number): number {
  const v = sampled![Math.min(rows, maxRows)]!;
  seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
  return v[seed % v.length]!;
}

/** The end of the latest earlier occurrence of the sequence's final n tokens, or -1. */
function latest(t: readonly number[], n: number): number {
  const N = t.length;
  outer: for (let e = N - 1; e >= n; e--) {
    for (let i = 1; i <= n; i++) if (t[e - i] !== t[N - i]) continue outer;
    return e;
  }
  return -1;
}

/** n-gram lookup (longest of maxN..1), with an optional recovery after a rejected draft. */
function ngramWith(recover: 'none' | 'sub' | 'ins', maxN = 4): Propose {
  return (t, k, st) => {
    if (st.last && st.src !== undefined && st.src >= 0) {
      const { draft, accepted } = st.last;
      st.rejected = draft.length > 0 && accepted < draft.length;
      st.src = draft.length > 0 ? st.src + accepted + 1 : -1;
    }
    let e = -1, n = Math.min(maxN, t.length - 1);
    for (; n >= 1; n--) if ((e = latest(t, n)) >= 0) break;
    if (recover !== 'none' && st.rejected && st.src! >= 0 && n < 2) {
      e = recover === 'sub' ? st.src! : st.src! - 1;
      st.rejected = false;
    }
    st.src = e;
    return e >= 0 ? t.slice(e, Math.min(t.length, e + k)) : [];
  };
}

/**
 * Most frequent path: among every earlier occurrence of the longest matched n-gram (maxN..1), draft token by token
 * the continuation most of them share (ties: the latest), narrowing to the occurrences that agree.
 */
function freqPath(maxN = 4): Propose {
  return (t, k) => {
    const N = t.length;
    for (let n = Math.min(maxN, N - 1); n >= 1; n--) {
      let ends: number[] = [];
      outer: for (let e = N - 1; e >= n; e--) {
        for (let i = 1; i <= n; i++) if (t[e - i] !== t[N - i]) continue outer;
        ends.push(e);
      }
      if (ends.length === 0) continue;
      const out: number[] = [];
      for (let j = 0; j < k; j++) {
        const counts = new Map<number, number>();
        let best = -1, bestC = 0;
        for (const e of ends) {
          if (e + j >= N) continue;
          const x = t[e + j]!;
          const c = (counts.get(x) ?? 0) + 1;
          counts.set(x, c);
          if (c > bestC) { best = x; bestC = c; }
        }
        if (best < 0) break;
        out.push(best);
        ends = ends.filter((e) => e + j < N && t[e + j] === best);
      }
      return out;
    }
    return [];
  };
}

console.log(`machine: ${machineLine(machineInfo())}`);
const opened = await openModel(target, { backend: 'native', threads: 2 });
const tok = opened.tokenizer!;
const held = splitBrown(loadBrown()).heldOut;
const pick = (offset: number): string[] => Array.from({ length: nPrompts }, (_, i) => held[(offset + i * 37) % held.length]!);
// the same prompts as bench/speculative.ts --parts text
const workloads: Record<string, string[]> = {
  edit: pick(1).map((r) => { const p = passage(r, 450); return `Rewrite with one word changed: ${p}\n${firstWords(p, 6)}`; }),
  document: pick(2).map((r) => {
    const p = passage(r, 450);
    const second = passage(p.slice(passage(p, 1).length), 200);
    return `${p}\n\nQuestion: What does the passage above say? Answer in its own words.\nAnswer: "${firstWords(second || p, 5)}`;
  }),
  code: pick(3).map((r) => {
    const words = [...new Set((r.toLowerCase().match(/[a-z]{4,}/g) ?? []))].slice(0, 8);
    const fn = (w: string): string => `def show_${w}(x):\n    print("${w}", x)\n    return x\n\n`;
    return words.slice(0, -1).map(fn).join('') + `def show_${words.at(-1)!}(x):\n`;
  }),
  free: pick(4),
};
const data: { w: string; prompt: number[]; out: number[] }[] = [];
for (const [w, texts] of Object.entries(workloads)) {
  for (const text of texts) {
    let ids = tok.encode(text);
    if (w === 'free') ids = ids.slice(0, 64);
    const r = generate(opened.model, ids, { maxTokens: 128, sampling: { temperature: 0 }, stopTokenIds: [] });
    data.push({ w, prompt: ids, out: r.outputIds });
    if (process.argv.includes('--show')) console.log(`--- ${w}\n${JSON.stringify(tok.decode(r.outputIds))}`);
  }
}
const ng = new NgramProposer();
const proposers: Record<string, Propose> = {
  ngram: (t, k) => ng.one(t, k), sub: ngramWith('sub'), ins: ngramWith('ins'), ngram8: ngramWith('none', 8), freq: freqPath(), freq8: freqPath(8),
};
console.log(`${path.basename(target)}: greedy, 128 tokens, k ${K} adaptive, ${nPrompts} prompts per workload; tokens a step (verify rows a step)`);
for (const [name, p] of Object.entries(proposers)) {
  const per = new Map<string, { steps: number; gen: number; rows: number }>();
  for (const d of data) {
    const r = replay(d.prompt, d.out, p);
    const e = per.get(d.w) ?? { steps: 0, gen: 0, rows: 0 };
    e.steps += r.steps;
    e.gen += d.out.length - 1;
    e.rows += r.rows;
    per.set(d.w, e);
  }
  console.log(name.padEnd(8) + [...per].map(([w, e]) => `${w} ${(e.gen / e.steps).toFixed(2)} (${(e.rows / e.steps).toFixed(2)})`).join(' | '));
}
// simulated time per controller at given costs (ms: a step, b a row past the first, j a verify's jump, d a draft token)
const costArg = sampled ? `${path.basename(stepsFile)}:0,0,0,${arg('draft-ms', '0.005')}` : arg('costs', 'floe-brown:0.6,0.05,0.25,0.005;1b:32,0.5,1.5,0.005');
for (const spec of costArg.split(';')) {
  const [label, nums] = spec.split(':') as [string, string];
  const [a, b, j, d] = nums.split(',').map(Number) as [number, number, number, number];
  const m = { a, b, j, d };
  console.log(`simulated at ${label} costs (a ${a} ms, b ${b}, j ${j}, d ${d}): speedup over plain decoding (verify rows a step)`);
  for (const ctl of ['heuristic', 'costs', 'shadow'] as const) {
    const per = new Map<string, { ms: number; plain: number; steps: number; rows: number }>();
    for (let sd = 0; sd < nSeeds; sd++) {
    seed = 0x9e3779b9 + sd * 7919;
    const costs = ctl === 'heuristic' ? null : new SpecCosts();
    for (const d of data) {
      const r = replayTimed(d.prompt, d.out, ctl, m, costs);
      const e = per.get(d.w) ?? { ms: 0, plain: 0, steps: 0, rows: 0 };
      e.ms += r.ms; e.steps += r.steps; e.rows += r.rows;
      for (let t = 1; t < d.out.length; t++) e.plain += sampled ? sampleStep(1) : a;
      per.set(d.w, e);
    }
    }
    console.log(`  ${ctl.padEnd(10)}` + [...per].map(([w, e]) => `${w} ${(e.plain / e.ms).toFixed(3)}× (${(e.rows / e.steps).toFixed(2)})`).join(' | '));
  }
}
opened.loaded.dispose();
