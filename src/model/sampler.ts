// Sampler: logits (V) → token id, with penalties, temperature, top-k, top-p, min-p and a per-request seeded RNG.

import type { Backend } from '../backend/backend.js';

export interface SamplingParams {
  readonly temperature: number; // 0 → greedy
  readonly topK: number; // ≤ 0 → off
  readonly topP: number; // 1 → off
  readonly minP: number; // 0 → off
  readonly repetitionPenalty: number; // 1 → off (HF: divide positive logits, multiply negative, over prompt + output)
  readonly frequencyPenalty: number; // OpenAI: logit -= count * f over output tokens
  readonly presencePenalty: number; // OpenAI: logit -= p if the token appeared in the output
  readonly logitBias: ReadonlyMap<number, number> | null;
  readonly seed: number | null;
}

export const DEFAULT_SAMPLING: SamplingParams = {
  temperature: 1, topK: 0, topP: 1, minP: 0, repetitionPenalty: 1, frequencyPenalty: 0, presencePenalty: 0, logitBias: null, seed: null,
};

export function validateSampling(p: SamplingParams): void {
  const bad = (what: string, v: unknown): never => { throw new RangeError(`invalid ${what}: ${String(v)}`); };
  if (!(p.temperature >= 0) || !Number.isFinite(p.temperature)) bad('temperature (expected >= 0)', p.temperature);
  if (!Number.isInteger(p.topK)) bad('top_k (expected an integer; 0 or -1 disables)', p.topK);
  if (!(p.topP > 0 && p.topP <= 1)) bad('top_p (expected 0 < top_p <= 1)', p.topP);
  if (!(p.minP >= 0 && p.minP <= 1)) bad('min_p (expected 0 <= min_p <= 1)', p.minP);
  if (!(p.repetitionPenalty > 0) || !Number.isFinite(p.repetitionPenalty)) bad('repetition_penalty (expected > 0)', p.repetitionPenalty);
  if (!(Math.abs(p.frequencyPenalty) <= 2)) bad('frequency_penalty (expected -2..2)', p.frequencyPenalty);
  if (!(Math.abs(p.presencePenalty) <= 2)) bad('presence_penalty (expected -2..2)', p.presencePenalty);
  if (p.seed !== null && !Number.isSafeInteger(p.seed)) bad('seed (expected an integer)', p.seed);
}

/** xoshiro128** seeded by splitmix32: reproducible per request, independent of batch composition. */
export class Rng {
  private s = new Uint32Array(4);
  constructor(seed: number) {
    let x = (seed >>> 0) ^ Math.floor(seed / 2 ** 32);
    for (let i = 0; i < 4; i++) {
      x = (x + 0x9e3779b9) >>> 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      this.s[i] = (z ^ (z >>> 16)) >>> 0;
    }
  }
  /** Uniform in [0, 1) with 32 bits of randomness. */
  next(): number {
    const s = this.s;
    const r = Math.imul(rotl(Math.imul(s[1]!, 5) >>> 0, 7), 9) >>> 0;
    const t = (s[1]! << 9) >>> 0;
    s[2]! ^= s[0]!; s[3]! ^= s[1]!; s[1]! ^= s[2]!; s[0]! ^= s[3]!;
    s[2]! ^= t; s[3] = rotl(s[3]!, 11);
    return r / 2 ** 32;
  }
}
function rotl(x: number, k: number): number { return ((x << k) | (x >>> (32 - k))) >>> 0; }

/** Token history a request keeps for penalties. */
export class TokenCounts {
  readonly output = new Map<number, number>();
  readonly seen = new Set<number>(); // prompt + output (repetition penalty)
  constructor(prompt: ArrayLike<number>) { for (let i = 0; i < prompt.length; i++) this.seen.add(prompt[i]!); }
  add(id: number): void { this.output.set(id, (this.output.get(id) ?? 0) + 1); this.seen.add(id); }
}

export class Sampler {
  private readonly rng: Rng;
  private readonly work: Float32Array; // (V) adjusted logits
  private readonly greedy = { ids: new Int32Array(1), weights: Float64Array.of(1), n: 1, sum: 1 }; // reused: argmax only
  private sel: { w: Float64Array; idx: Int32Array } | null = null; // selectTopP's work buffers (V), made on first use
  // the native candidates (k with top-k on, else V), made on first use
  private cand: { ids: Int32Array; weights: Float64Array; n: number; sum: number; sumOut: Float64Array } | null = null;

  constructor(readonly params: SamplingParams, readonly vocabSize: number, private readonly backend: Backend) {
    validateSampling(params);
    this.rng = new Rng(params.seed ?? Math.floor(Math.random() * 2 ** 32));
    this.work = new Float32Array(vocabSize);
  }

  /** Pick the next token from raw logits (V); `counts` carries the request's history for penalties. */
  sample(logits: Float32Array, counts: TokenCounts | null): number {
    if (this.params.temperature === 0) return this.argmaxOf(this.adjust(logits, counts, NONE));
    const d = this.distribution(logits, counts);
    return d.ids[this.draw(d.weights, d.n, d.sum)]!;
  }

  /**
   * The distribution sample() draws from: candidates `ids` (n), unnormalized `weights` (n) summing to `sum`
   * (greedy: the argmax with weight 1). `extra` are tokens counted as already generated on top of `counts`
   * (speculative verification scores draft positions one after another). Valid until the next call.
   */
  distribution(logits: Float32Array, counts: TokenCounts | null, extra: readonly number[] = []): TokenDistribution {
    const z = this.adjust(logits, counts, extra);
    if (this.params.temperature === 0) {
      this.greedy.ids[0] = this.argmaxOf(z);
      return this.greedy;
    }
    const d = this.candidates(z);
    // NaN or Inf logits (NaN weights, an overflow): refuse them rather than draw a garbage token. The likeliest
    // candidate comes first; a kernel may drop NaN from its max, so its logit is checked as well as the mass
    if (!(d.n > 0 && d.sum > 0 && d.sum < Infinity && Number.isFinite(z[d.ids[0]!]!))) throw nonFiniteLogits(z);
    return d;
  }

  /** The candidate set of a sampled request (temperature > 0) from adjusted logits z (V). */
  private candidates(z: Float32Array): TokenDistribution {
    const p = this.params;
    if (this.backend.sampleCandidates) return this.nativeCandidates(z);

    // candidates: top-k, or enough of the head of the distribution to cover top-p
    const V = z.length;
    const topK = p.topK > 0 && p.topK < V ? p.topK : 0; // top-k at or above V keeps every token: off, as -1 and 0
    let k = topK > 0 ? topK : V;
    if (k === V && p.topP < 1) k = Math.min(V, 64);
    let total = -1; // Σ exp((z - max) / T) over the vocabulary: the same for every k (max is the top value)
    for (;;) {
      const { ids, values } = this.backend.topk(z, k);
      const probs = softmaxOf(values, p.temperature, z, total);
      total = probs.total;
      const covered = k === V || k === topK || coverage(probs.top, probs.total) >= p.topP;
      // top-k renormalizes: top-p then counts mass within the k candidates
      if (covered) return this.truncate(ids, probs.top, topK > 0 ? coverage(probs.top, 1) : probs.total);
      // A flat distribution over a large vocabulary (a high temperature, a random-weight model) needs most of it
      // for top-p: widening to V costs several full top-k sorts per row, so select the top-p set in O(V) instead.
      if (topK === 0 && V > SELECT_VOCAB && k >= SELECT_AFTER) return this.selectTopP(z);
      k = Math.min(V, k * 4);
    }
  }

  /** The same candidate set from the backend's kernel (native/sample.h), in buffers reused from call to call. */
  private nativeCandidates(z: Float32Array): TokenDistribution {
    const p = this.params;
    const V = z.length;
    const cap = p.topK > 0 && p.topK < V ? p.topK : V;
    const c = this.cand ??= { ids: new Int32Array(cap), weights: new Float64Array(cap), n: 0, sum: 0, sumOut: new Float64Array(1) };
    c.n = this.backend.sampleCandidates!(z, p.temperature, p.topK, p.topP, p.minP, c.ids, c.weights, c.sumOut);
    c.sum = c.sumOut[0]!;
    return c;
  }

  private argmaxOf(z: Float32Array): number {
    const id = this.backend.argmax ? this.backend.argmax(z) : argmax(z);
    if (!Number.isFinite(z[id]!)) throw nonFiniteLogits(z);
    return id;
  }

  /**
   * Top-p then min-p over the whole vocabulary without sorting it: weights exp((z - max) / T) for every token, then
   * a three-way partition by weight (quickselect on mass) keeps the heaviest tokens until their mass reaches top_p;
   * ties at the cut are taken in index order, as many as the mass needs (the sorted path's rule). The candidates
   * come back unordered except that the most likely token is first.
   */
  private selectTopP(z: Float32Array): TokenDistribution {
    const p = this.params;
    const V = z.length;
    const sel = this.sel ??= { w: new Float64Array(V), idx: new Int32Array(V) };
    const { w, idx } = sel;
    let max = -Infinity;
    for (let i = 0; i < V; i++) if (z[i]! > max) max = z[i]!;
    let total = 0;
    for (let i = 0; i < V; i++) { const e = Math.exp((z[i]! - max) / p.temperature); w[i] = e; total += e; idx[i] = i; }
    // idx[0, lo) is chosen, idx[lo, hi) undecided, idx[hi, V) dropped; `need` is the mass still to choose
    let need = p.topP * total;
    let lo = 0;
    let hi = V;
    while (hi > lo && need > 0) {
      const pivot = w[idx[(lo + hi) >>> 1]!]!;
      let a = lo; // [lo, a): heavier than the pivot, [a, i): equal, [b, hi): lighter
      let i = lo;
      let b = hi;
      while (i < b) {
        const t = idx[i]!;
        const v = w[t]!;
        if (v > pivot) { idx[i] = idx[a]!; idx[a] = t; a++; i++; } else if (v < pivot) { b--; idx[i] = idx[b]!; idx[b] = t; } else i++;
      }
      let heavy = 0;
      for (let j = lo; j < a; j++) heavy += w[idx[j]!]!;
      if (heavy >= need) { hi = a; continue; }
      const eq = (b - a) * pivot;
      if (heavy + eq >= need) {
        // all heavier tokens and as many of the tied ones as the mass needs, lowest ids first
        idx.subarray(a, b).sort();
        let rest = need - heavy;
        let j = a;
        while (j < b && rest > 0) { rest -= pivot; j++; }
        lo = j;
        break;
      }
      need -= heavy + eq;
      lo = b;
    }
    // min-p relative to the most likely token (weight 1): a filter, since the set is unordered
    const floor = p.minP > 0 ? p.minP : 0;
    const ids = new Int32Array(lo);
    const weights = new Float64Array(lo);
    let n = 0;
    let sum = 0;
    let best = 0;
    for (let j = 0; j < lo; j++) {
      const t = idx[j]!;
      const v = w[t]!;
      if (v < floor) continue;
      if (v > weights[best]! || (v === weights[best]! && t < ids[best]!)) best = n;
      ids[n] = t; weights[n] = v; sum += v; n++;
    }
    if (best !== 0) {
      const [ti, tw] = [ids[0]!, weights[0]!];
      ids[0] = ids[best]!; weights[0] = weights[best]!; ids[best] = ti; weights[best] = tw;
    }
    return { ids, weights, n, sum };
  }

  /** Penalties and logit bias applied to a copy of the logits (V), in the sampler's work buffer. */
  private adjust(logits: Float32Array, counts: TokenCounts | null, extra: readonly number[]): Float32Array {
    const p = this.params;
    const z = this.work;
    z.set(logits.subarray(0, this.vocabSize));
    if (counts) applyPenalties(z, p, counts, extra);
    if (p.logitBias) for (const [id, b] of p.logitBias) if (id >= 0 && id < z.length) z[id] = z[id]! + b;
    return z;
  }

  /** Index in [0, n) drawn with probability weights[i] / sum (one RNG draw). */
  draw(weights: Float64Array, n: number, sum: number): number {
    let r = this.rng.next() * sum;
    for (let i = 0; i < n; i++) { r -= weights[i]!; if (r < 0) return i; }
    return n - 1;
  }

  /** Uniform in [0, 1) from this request's RNG (the speculative acceptance test). */
  uniform(): number { return this.rng.next(); }

  private truncate(ids: Int32Array, top: Float64Array, total: number): TokenDistribution {
    const p = this.params;
    // top-p over the candidates (sorted descending), then min-p relative to the best
    let n = ids.length;
    if (p.topP < 1) {
      let cum = 0;
      for (let i = 0; i < n; i++) { cum += top[i]! / total; if (cum >= p.topP) { n = i + 1; break; } }
    }
    if (p.minP > 0) {
      const floor = p.minP * top[0]!;
      let m = 1;
      while (m < n && top[m]! >= floor) m++;
      n = m;
    }
    let sum = 0;
    for (let i = 0; i < n; i++) sum += top[i]!;
    return { ids, weights: top, n, sum };
  }
}

/** A sampling distribution over candidate tokens: P(ids[i]) = weights[i] / sum for i < n, 0 for every other id. */
export interface TokenDistribution {
  readonly ids: Int32Array; // (≥ n) candidates, most likely first (the rest unordered on selectTopP's path, in id order on the native path above 1024)
  readonly weights: Float64Array; // (≥ n) unnormalized
  readonly n: number;
  readonly sum: number;
}

const NONE: readonly number[] = [];
// Vocabularies above SELECT_VOCAB whose top-p head is not covered by SELECT_AFTER candidates take selectTopP.
const SELECT_VOCAB = 16_384;
const SELECT_AFTER = 1024;

function applyPenalties(z: Float32Array, p: SamplingParams, counts: TokenCounts, extra: readonly number[]): void {
  if (p.repetitionPenalty !== 1) {
    const penalize = (id: number): void => {
      const v = z[id]!;
      z[id] = v > 0 ? v / p.repetitionPenalty : v * p.repetitionPenalty;
    };
    for (const id of counts.seen) penalize(id);
    for (let i = 0; i < extra.length; i++) {
      const id = extra[i]!;
      if (!counts.seen.has(id) && extra.indexOf(id) === i) penalize(id);
    }
  }
  if (p.frequencyPenalty !== 0 || p.presencePenalty !== 0) {
    for (const [id, c] of counts.output) z[id] = z[id]! - c * p.frequencyPenalty - p.presencePenalty;
    for (let i = 0; i < extra.length; i++) {
      const id = extra[i]!;
      // each extra occurrence adds one count; the presence penalty only for a token new to the output
      z[id] = z[id]! - p.frequencyPenalty - (counts.output.has(id) || extra.indexOf(id) < i ? 0 : p.presencePenalty);
    }
  }
}

/** exp((v - max) / temperature) for the candidates, and the same sum over the whole vocabulary (`known` when computed already). */
function softmaxOf(values: Float32Array, temperature: number, all: Float32Array, known = -1): { top: Float64Array; total: number } {
  const max = values[0]!;
  const top = new Float64Array(values.length);
  for (let i = 0; i < values.length; i++) top[i] = Math.exp((values[i]! - max) / temperature);
  if (known >= 0) return { top, total: known };
  let total = 0;
  for (let i = 0; i < all.length; i++) total += Math.exp((all[i]! - max) / temperature);
  return { top, total };
}

function coverage(top: Float64Array, total: number): number {
  let s = 0;
  for (let i = 0; i < top.length; i++) s += top[i]!;
  return s / total;
}

/** The error for logits that hold NaN or ±Inf, naming the first such token and how many there are. */
export function nonFiniteLogits(z: Float32Array): Error {
  let first = -1, count = 0;
  for (let i = 0; i < z.length; i++) if (!Number.isFinite(z[i]!)) { if (first < 0) first = i; count++; }
  const what = first < 0 ? 'a candidate weight is not finite' : `${count} of ${z.length} are NaN or Inf (token ${first}: ${z[first]})`;
  return new NonFiniteOutputError(`the model's logits are not finite: ${what}; its weights hold NaN or Inf, or its activations overflowed (check the checkpoint)`);
}

/** Logits or hidden states with NaN or ±Inf: a broken checkpoint or an overflow, never a token or an embedding. */
export class NonFiniteOutputError extends Error {
  override readonly name = 'NonFiniteOutputError';
}

export function argmax(x: Float32Array): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i]! > x[best]!) best = i;
  return best;
}
