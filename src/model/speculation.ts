// Speculative decoding: proposers (n-gram, suffix index, draft model, or the caller's own) and the
// rejection-sampling verifier that keeps the target's output distribution (greedy: identical tokens).
//
// N committed tokens of a sequence, k draft tokens, V vocab, L block size.

import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { KvCache } from './kv-cache.js';
import type { LlamaModel } from './llama.js';
import { argmax, type Sampler, type TokenCounts } from './sampler.js';
import type { KvDType } from '../backend/backend.js';

/** One sequence asking for a draft continuation. */
export interface ProposeRequest {
  readonly seqId: string; // stable while the sequence lives (release() ends it)
  readonly tokens: readonly number[]; // (N) prompt + output so far; the last one is not in the target's KV yet
  readonly promptLen: number;
  readonly k: number; // propose at most k tokens (k >= 1)
  readonly blockTable: ArrayLike<number>; // the target's block table for seqId; holds positions [0, N + k)
  /** The request's temperature and RNG: a proposer may sample its drafts (and then must return q); absent → greedy. */
  readonly sampling?: { readonly temperature: number; readonly random: () => number };
}

export interface Proposal {
  readonly tokens: readonly number[]; // (<= k) draft continuation of the request's tokens; may be empty
  readonly q?: readonly Float32Array[]; // (tokens.length, V) draft distributions; absent → deterministic (one-hot)
}

/** The target's KV geometry, given to a proposer before its first propose() (again when it changes). */
export interface ProposerGeometry {
  readonly vocabSize: number; // V of the target
  readonly numBlocks: number; // blocks in the target's KV pool; block tables index 0..numBlocks-1
  readonly blockSize: number; // L
  readonly maxPositions: number; // the target's context window
}

/** Anything that guesses the next tokens; the verifier decides what is kept. */
export interface Proposer {
  readonly name: string;
  /** KV bytes per token kept beside the target's (a draft model), so the pool is sized for both. */
  readonly kvBytesPerToken?: number;
  /**
   * Drafting costs next to nothing (a lookup, no model forward) and a call changes no later draft: a sequence whose
   * drafts are paused keeps scoring the drafts it would have made against the tokens decoded (AdaptiveK.watch /
   * seen), so it resumes as soon as they would pay, without waiting for its pause's probe. Its drafts are
   * deterministic (no q): a seeded sample is then plain decoding's, so such requests may take k from timings too.
   */
  readonly free?: boolean;
  init?(geom: ProposerGeometry): void;
  /** Draft continuations for a batch of sequences (one proposal per request, in order). */
  propose(reqs: readonly ProposeRequest[]): Proposal[];
  /** After verification: `accepted` of the `proposed` draft tokens were kept. */
  observe?(seqId: string, proposed: number, accepted: number): void;
  /** The sequence's KV was freed (finished, aborted or preempted): forget its state. */
  release?(seqId: string): void;
  /** A sequence finished with these tokens (prompt + output); an index over past requests learns them. */
  learn?(tokens: readonly number[], promptLen: number): void;
}

/** What generate(), Engine and startEngine accept: a method name, a draft model, or the caller's proposer. */
export type SpeculativeMethod = 'ngram' | 'suffix';
export type SpeculativeSpec = SpeculativeMethod | LlamaModel | Proposer;

export const DEFAULT_NUM_SPECULATIVE_TOKENS = 4;

/**
 * A proposer made by a module: where the engine runs in a worker an object cannot cross, so startEngine takes the
 * module's path (and structured-cloneable options) and the worker imports it. CLI: `--speculative module:PATH`.
 */
export interface SpeculativeModule {
  readonly module: string; // path of an ES module (absolute, or relative to the working directory)
  readonly options?: unknown; // handed to the factory as is (must survive structured clone to reach a worker)
}

/** A proposer module's default export: called once, after the target loaded, where the engine runs. */
export type ProposerFactory = (ctx: { readonly target: LlamaModel; readonly options: unknown }) => Proposer | Promise<Proposer>;

/** `{module}` as given, or `module:PATH` parsed; null for any other spec. */
export function speculativeModuleOf(spec: string | SpeculativeModule | undefined): SpeculativeModule | null {
  if (spec === undefined) return null;
  if (typeof spec === 'object') {
    if (typeof spec.module !== 'string' || spec.module === '') throw new Error(`speculative: expected {module: PATH, options?}, got module ${JSON.stringify(spec.module)}`);
    return spec;
  }
  if (!spec.startsWith('module:')) return null;
  const module = spec.slice('module:'.length);
  if (module === '') throw new Error("speculative: 'module:' needs the path of a proposer module, e.g. module:./my-proposer.js");
  return { module };
}

/** Imports a proposer module and makes its Proposer for `target`, checking the contract with clear errors. */
export async function loadProposerModule(spec: SpeculativeModule, target: LlamaModel): Promise<Proposer> {
  const file = path.resolve(spec.module);
  const where = `speculative module ${file}`;
  let mod: { default?: unknown };
  try { mod = (await import(pathToFileURL(file).href)) as { default?: unknown }; } catch (e) { throw new Error(`${where}: cannot import it: ${(e as Error).message}`); }
  if (typeof mod.default !== 'function') {
    throw new Error(`${where}: its default export must be a function ({target, options}) => Proposer, got ${mod.default === undefined ? 'no default export' : typeof mod.default}`);
  }
  let p: Partial<Proposer> | null | undefined;
  try { p = await (mod.default as ProposerFactory)({ target, options: spec.options }); } catch (e) { throw new Error(`${where}: its factory failed: ${(e as Error).message}`); }
  if (!p || typeof p.propose !== 'function') throw new Error(`${where}: the factory returned ${p === null || typeof p !== 'object' ? String(p) : 'an object'} without a propose(requests) method`);
  if (typeof p.name !== 'string' || p.name === '') throw new Error(`${where}: the proposer needs a name (a non-empty string), got ${JSON.stringify(p.name)}`);
  return p as Proposer;
}

/** A proposer for `spec`, checked against the target model (a draft model must share its vocabulary). */
export function createProposer(spec: SpeculativeSpec, target: LlamaModel): Proposer {
  if (spec === 'ngram') return new NgramProposer();
  if (spec === 'suffix') return new SuffixProposer();
  if (typeof spec === 'string') throw new Error(`speculative: expected 'ngram', 'suffix', a draft model or a Proposer, got '${spec}'`);
  if (isModel(spec)) return new DraftModelProposer(spec, target);
  if (typeof (spec as Proposer).propose !== 'function') throw new Error('speculative: a Proposer needs a propose(requests) method');
  return spec;
}

/** A proposal's tokens, checked: at most k ids inside the vocabulary. */
export function checkProposal(tokens: readonly number[], k: number, V: number, name: string): readonly number[] {
  if (tokens.length > k) throw new Error(`proposer ${name} proposed ${tokens.length} tokens, asked for at most ${k}`);
  for (const id of tokens) {
    if (!Number.isInteger(id) || id < 0 || id >= V) throw new Error(`proposer ${name} proposed token id ${id}, outside the vocabulary [0, ${V})`);
  }
  return tokens;
}

function isModel(x: object): x is LlamaModel {
  return 'forward' in x && 'config' in x && 'weights' in x;
}

/** A cap on draft tokens per step: an integer >= 1; the error names the option that set it (numPredictionTokens, …). */
export function checkDraftTokens(n: number, option: string): number {
  if (!(Number.isInteger(n) && n >= 1)) throw new RangeError(`${option} must be an integer >= 1, got ${n}`);
  return n;
}

/** Forgetting factor of a sequence's acceptance rate per verify step (about the last 20 steps count). */
const ALPHA_DECAY = 0.95;
/**
 * The same over about the last 5 verify steps: with measured costs, k is chosen at this rate (copy bursts), pausing
 * at the slower one. k at the ~20-step rate trailed the timing-free rule by 3-8% on edit (floe-brown, ngram and
 * suffix); a 5-step rate for pausing too loses up to 5% against the best fixed k where acceptance is i.i.d.
 */
const FAST_DECAY = 0.8;

/**
 * A sequence pauses its drafts only when none would pay even at its acceptance rate divided by this: near the break-even
 * a draft token gains or loses almost nothing, while a pause taken on a noisy low estimate loses what the drafts gain.
 */
const PAUSE_MARGIN = 0.8;

/** How much a step without draft rows weighs in SpecCosts' fit, and how often one is asked for while all steps draft. */
const PLAIN_WEIGHT = 8;
const PLAIN_EVERY = 64;
const PLAIN_FIRST = 4;
const PLAIN_SKIP = 0.9;
/** Pooled acceptance: forgetting per verify step, positions before it counts, and its weight in a new sequence's rate. */
const POOL_DECAY = 0.99;
const POOL_IDLE_DECAY = 0.998; // per step: ~1,000 steps without verifies take a full pool below POOL_MIN
const POOL_MIN = 8;
const PRIOR_POSITIONS = 4;
/** Drafting steps (with forgetting) SpecCosts' fit needs in its window before it is first trusted. */
const MIN_DRAFTING_STEPS = 3;
/**
 * Steps without any drafting step after which a fitted SpecCosts asks paused sequences to probe: a safety net, twice
 * the longest pause, so that it adds nothing where sequences probe at their pauses' ends (a draft model's probes are
 * dear: at probePause() intervals on top of those, floe-brown's draft lost 3% more). Each such probe after which
 * drafting does not resume doubles the wait, up to STALE_MAX.
 */
const STALE_STEPS = 256;
const STALE_MAX = 4096;
/** A step's time counts at most this many times the fitted time in SpecCosts' fit (stalls are not row costs). */
const STALL_CAP = 1.5;
/** The share of tokens a paused sequence's probes may cost (SpecCosts.probePause). */
const PROBE_SHARE = 0.02;

/** Whether generate() and the engine cap k by measured costs (FLOE_SPEC_COSTS=0 turns it off, for A/B runs). */
export const SPEC_COSTS = process.env.FLOE_SPEC_COSTS !== '0';

/**
 * Solves the n × n system held in `A` as n augmented rows of n + 1 (Gaussian elimination with partial pivoting),
 * in place, into x[0..n); false when singular or not finite. No allocation: it runs once per decode step.
 */
function solveInPlace(A: Float64Array, n: number, x: Float64Array): boolean {
  const w = n + 1;
  for (let c = 0; c < n; c++) {
    let piv = c;
    for (let r = c + 1; r < n; r++) if (Math.abs(A[r * w + c]!) > Math.abs(A[piv * w + c]!)) piv = r;
    if (!(Math.abs(A[piv * w + c]!) > 0)) return false;
    if (piv !== c) for (let k = 0; k < w; k++) { const t = A[c * w + k]!; A[c * w + k] = A[piv * w + k]!; A[piv * w + k] = t; }
    for (let r = c + 1; r < n; r++) {
      const q = A[r * w + c]! / A[c * w + c]!;
      for (let k = c; k < w; k++) A[r * w + k] = A[r * w + k]! - q * A[c * w + k]!;
    }
  }
  for (let r = n - 1; r >= 0; r--) {
    let v = A[r * w + n]!;
    for (let k = r + 1; k < n; k++) v -= A[r * w + k]! * x[k]!;
    x[r] = v / A[r * w + r]!;
    if (!Number.isFinite(x[r]!)) return false;
  }
  return true;
}

/**
 * What speculating costs and what a step yields, measured while a generation loop or the engine runs. A step's
 * time (all of it but the proposer's: forward, sampling, verification) is fitted as a + b·rows + j·drafting +
 * p·prompt over recent steps (least squares, forgetting older steps by `decay` a step, so ~100 steps count, and a
 * stalled step capped; drafting = sequences with draft rows; prompt = tokens of prompt chunks the engine scheduled
 * in the same step): b is what a row costs, j what a sequence pays once for drafting at all (going from one row to
 * two can change kernels, and a verify has its own work), p what a prompt token costs, so that under steady
 * arrivals, where most steps carry a chunk of prefill, the fit still learns b and j. The proposer's time per drafted
 * token and the output rate (tokens per second of decode time, drafting included, the prompt chunks' fitted share
 * left out) are averaged the same way. best(α, K) is the k that maximises the tokens a sequence
 * gains, Σ_{i ≤ k} α^i, less the tokens the time it adds, j + k · (b + draft cost), would have given at the current
 * rate: for one sequence the k that gives the most tokens per second (at the optimum the two agree); with many, it
 * stops drafting where verify rows cost nearly a decode row (a big batch on a small model) and keeps drafting where
 * a step is bound by reading the weights.
 *
 * Steps without draft rows anchor a and j, so they weigh `PLAIN_WEIGHT` steps, and while steps draft, wantsPlain()
 * asks the loop for two after `PLAIN_FIRST` steps, then every `PLAIN_EVERY` (not while drafts are kept ≥ 90% of the
 * time: an oracle-like proposer loses a step's gain to each); until one is timed, best() is null (no cap). A plain
 * step right after a drafting one is left out of the fit: a draft model's forward evicts the target's weights from
 * the caches, so that step costs more than plain steps in a run (floe-brown with its draft: 0.75 against 0.6 ms).
 * That cost belongs to drafting, and j takes it.
 */
export class SpecCosts {
  // the fit t = a + b·rows + j·drafting + p·prompt: weighted moments of x = (rows, drafting, prompt) and y, forgetting
  private sw = 0; private sy = 0;
  private draftW = 0; // drafting steps in the window (with forgetting)
  private readonly sx = new Float64Array(3);
  private readonly sxx = new Float64Array(9);
  private readonly sxy = new Float64Array(3);
  // fit()'s scratch: centred moments, the augmented system, its solution, the variables still fitted
  private readonly cov = new Float64Array(9);
  private readonly covy = new Float64Array(3);
  private readonly aug = new Float64Array(12);
  private readonly coef = new Float64Array(3);
  private readonly active = new Int32Array(3);
  private readonly xs = new Float64Array(3); // observe()'s (rows, drafting, prompt)
  private b = 0; // seconds a row adds to a step
  private j = 0; // seconds a drafting sequence adds besides its rows (another kernel at 2 rows, the verify's own work)
  private p = 0; // seconds a prompt token (a chunk of prefill in the same step) adds
  private fitted = false; // plain and drafting steps have both been timed
  private sincePlain = PLAIN_EVERY - PLAIN_FIRST; // steps since the last plain one fitted (the first after PLAIN_FIRST)
  private plainSeen = false;
  private wantPlain = 0; // plain steps the loop is asked for
  private sinceDraft = 0; // steps since the last one with draft rows
  private staleAfter = STALE_STEPS; // steps without draft rows before paused sequences are asked to probe (wantsProbe)
  private lastDrafted = false; // the last step had draft rows
  private draftSec = 0; private drafted = 0; private draftSeqs = 0; // the proposer's time, its tokens, the sequences it drafted for
  private outSec = 0; private outTok = 0;
  private poolKept = 0; private poolLost = 0; // draft positions kept and rejected, all sequences, with forgetting

  constructor(readonly decay = 0.99) {}

  /**
   * One step of `seqs` decoding sequences, `draftingSeqs` of them with draft rows: `rows` decode and verify tokens
   * and `promptTokens` tokens of prompt chunks (prefill scheduled in the same step) in `stepSec` seconds besides
   * `proposeSec` spent drafting `drafted` tokens, `emitted` output tokens (accepted drafts and each sequence's own),
   * and `emitSec` emitting them (text, stops, callbacks: the same per token drafted or not, so outside the fit and
   * inside the rate).
   */
  observe(rows: number, stepSec: number, proposeSec: number, drafted: number, emitted: number, draftingSeqs: number, seqs = 1, promptTokens = 0, emitSec = 0): void {
    if (!(rows > 0 && stepSec >= 0 && proposeSec >= 0 && seqs >= 1 && draftingSeqs >= 0 && promptTokens >= 0 && emitSec >= 0)) return;
    const plain = draftingSeqs === 0;
    const f = this.decay;
    // the pooled acceptance fades while nothing is verified, so a proposer written off is tried again in time
    this.poolKept *= POOL_IDLE_DECAY;
    this.poolLost *= POOL_IDLE_DECAY;
    if (plain) this.wantPlain = Math.max(0, this.wantPlain - 1);
    if (!(plain && this.lastDrafted)) { // a plain step just after a drafting one pays for that one's cache misses
      const w = plain ? PLAIN_WEIGHT : 1;
      const x = this.xs;
      x[0] = rows; x[1] = draftingSeqs; x[2] = promptTokens;
      // a step the OS or the collector stalled says nothing of what its rows cost: it counts at most STALL_CAP times
      // the fitted time (on floe-brown 1 step in 10 takes 1.3–9× the median of its row count)
      const y = this.fitted ? Math.min(stepSec, STALL_CAP * this.predict(rows, draftingSeqs, promptTokens)) : stepSec;
      this.sw = f * this.sw + w;
      this.draftW = f * this.draftW + (plain ? 0 : 1);
      this.sy = f * this.sy + w * y;
      for (let i = 0; i < 3; i++) {
        this.sx[i] = f * this.sx[i]! + w * x[i]!;
        this.sxy[i] = f * this.sxy[i]! + w * x[i]! * y;
        for (let k = 0; k < 3; k++) this.sxx[3 * i + k] = f * this.sxx[3 * i + k]! + w * x[i]! * x[k]!;
      }
      this.sincePlain = plain ? 0 : this.sincePlain + 1;
      this.plainSeen ||= plain;
      this.fit();
    }
    this.lastDrafted = !plain;
    // a probe the costs asked for (wantsProbe) doubles the next wait; drafting that resumed by itself resets it
    if (!plain && this.sinceDraft >= this.staleAfter) this.staleAfter = Math.min(STALE_MAX, 2 * this.staleAfter);
    else if (!plain && this.sinceDraft < STALE_STEPS) this.staleAfter = STALE_STEPS;
    this.sinceDraft = plain ? this.sinceDraft + 1 : 0;
    if (this.sincePlain >= PLAIN_EVERY && this.wantPlain === 0) this.wantPlain = 2;
    if (drafted > 0) {
      this.draftSec = f * this.draftSec + proposeSec;
      this.drafted = f * this.drafted + drafted;
      this.draftSeqs = f * this.draftSeqs + Math.max(1, draftingSeqs);
    }
    // the output rate counts decode time only: a prompt chunk's share of the step is not time the tokens took
    this.outSec = f * this.outSec + Math.max(0, stepSec - this.p * promptTokens) + proposeSec + emitSec;
    this.outTok = f * this.outTok + emitted;
  }

  /**
   * Weighted least squares for b, j and p on centred moments, with a small ridge (where rows and drafting move
   * together, one sequence always drafting one token, it splits their cost evenly instead of failing), none negative:
   * a coefficient that comes out below 0 is held at 0 and the others refitted. p is fitted only where steps with
   * prompt chunks are in the window.
   */
  private fit(): void {
    const W = this.sw, my = this.sy / W, C = this.cov, Cy = this.covy;
    for (let i = 0; i < 3; i++) {
      const mi = this.sx[i]! / W;
      Cy[i] = this.sxy[i]! / W - mi * my;
      for (let k = 0; k < 3; k++) C[3 * i + k] = this.sxx[3 * i + k]! / W - mi * (this.sx[k]! / W);
    }
    // no plain step, or too few drafting ones before the first fit: one slow drafting step must not decide alone.
    // Once fitted, any drafting step refits (a stall counts at most STALL_CAP times the fitted time), so that the
    // rare probes of paused sequences correct a fit that says nothing pays
    if (!this.plainSeen || C[4]! < 1e-3 || (!this.fitted && this.draftW < MIN_DRAFTING_STEPS)) return;
    const ridgeRD = 1e-6 * (C[0]! + C[4]!), ridgeP = 1e-6 * C[8]!; // each in its own scale
    const act = this.active, x = this.coef, A = this.aug;
    let n = C[8]! > 1e-6 ? 3 : 2;
    for (let i = 0; i < 3; i++) act[i] = i;
    while (n > 0) {
      for (let r = 0; r < n; r++) {
        const i = act[r]!;
        for (let c = 0; c < n; c++) A[r * (n + 1) + c] = C[3 * i + act[c]!]! + (r === c ? (i === 2 ? ridgeP : ridgeRD) : 0);
        A[r * (n + 1) + n] = Cy[i]!;
      }
      if (!solveInPlace(A, n, x)) return;
      let worst = -1;
      for (let r = 0; r < n; r++) if (x[r]! < 0 && (worst < 0 || x[r]! < x[worst]!)) worst = r;
      if (worst < 0) break;
      for (let r = worst; r < n - 1; r++) act[r] = act[r + 1]!; // held at 0; the others refitted
      n--;
    }
    this.b = 0; this.j = 0; this.p = 0;
    for (let r = 0; r < n; r++) {
      if (act[r] === 0) this.b = x[r]!;
      else if (act[r] === 1) this.j = x[r]!;
      else this.p = x[r]!;
    }
    this.fitted = true;
  }

  /**
   * The draft tokens that pay for a sequence whose drafts are kept with probability `alpha` per position, up to
   * `max`: the k ≥ 1 maximising Σ_{i ≤ k} α^i − rate · (j + k · (b + draft cost)), the tokens gained less those the
   * added time would have given at the current rate; 0 when none gains. null until the costs are measured.
   */
  best(alpha: number, max: number): number | null {
    if (!this.fitted) return null;
    const R = this.rate();
    const per = this.b + (this.drafted > 0 ? this.draftSec / this.drafted : 0);
    let gain = 0, bestK = 0, bestGain = 0;
    for (let k = 1, p = alpha; k <= max; k++, p *= alpha) {
      gain += p;
      const net = gain - R * (this.j + k * per);
      if (net > bestGain) { bestGain = net; bestK = k; }
    }
    return bestK;
  }

  /**
   * Whether the next step should draft nothing: two plain steps after PLAIN_FIRST drafting ones, then every
   * PLAIN_EVERY, unless drafts are kept so often (pooled acceptance ≥ PLAIN_SKIP) that the fit has nothing to decide.
   */
  wantsPlain(): boolean { return this.wantPlain > 0 && !((this.acceptance() ?? 0) >= PLAIN_SKIP); }

  /**
   * Whether a paused sequence should probe now (draft one token, whatever its pause): no step has had draft rows for
   * STALE_STEPS steps (doubling while such probes do not restart drafting). Sequences shorter than their pause never
   * reach their own probe, and a fit that says nothing pays (fitted on steps the JIT or a stall slowed) would then
   * never meet a drafting step again: every later sequence would start paused and decode plainly for good.
   */
  wantsProbe(): boolean { return this.fitted && this.sinceDraft >= this.staleAfter; }

  /** A verify step's outcome, pooled over the sequences: the acceptance new sequences start from. */
  noteAcceptance(proposed: number, accepted: number): void {
    this.poolKept = POOL_DECAY * this.poolKept + accepted;
    this.poolLost = POOL_DECAY * this.poolLost + (accepted < proposed ? 1 : 0);
  }

  /** The pooled acceptance rate per draft position, or null before POOL_MIN positions. */
  acceptance(): number | null {
    const n = this.poolKept + this.poolLost;
    return n >= POOL_MIN ? this.poolKept / n : null;
  }

  /** What was measured: seconds a row adds, a drafting sequence adds, the proposer takes per token; tokens per second. */
  costs(): { row: number; jump: number; promptToken: number; draftToken: number; rate: number; fitted: boolean } {
    return { row: this.b, jump: this.j, promptToken: this.p, draftToken: this.drafted > 0 ? this.draftSec / this.drafted : 0, rate: this.rate(), fitted: this.fitted };
  }

  /**
   * Steps a sequence whose drafts do not pay should wait before it probes again, so that probes cost about
   * PROBE_SHARE of the tokens: what one costs (the proposer's time for a sequence, which for a draft model includes
   * catching up on the context, plus the verify's jump and row) in tokens at the current rate, over PROBE_SHARE.
   */
  probePause(): number {
    if (!this.fitted) return 0;
    const propose = this.draftSeqs > 0 ? this.draftSec / this.draftSeqs : 0;
    return Math.ceil(this.rate() * (propose + this.j + this.b) / PROBE_SHARE);
  }

  /** The fitted time of a step (a from the weighted means). */
  private predict(rows: number, drafting: number, prompt: number): number {
    const a = (this.sy - this.b * this.sx[0]! - this.j * this.sx[1]! - this.p * this.sx[2]!) / this.sw;
    return a + this.b * rows + this.j * drafting + this.p * prompt;
  }

  /** Whether b and j are measured (best() answers). */
  get ready(): boolean { return this.fitted; }

  /** Output tokens per second over recent steps (0 until measured). */
  rate(): number { return this.outSec > 0 ? this.outTok / this.outSec : 0; }
}

/**
 * k for the next step of one sequence, in [0, K]: shrinks after a rejection, grows after a full acceptance. A
 * sequence whose drafts keep failing (`missStreak` verify steps in a row with nothing accepted) stops speculating
 * (k = 0) for `pause` steps, then probes with k = 1 for `probeSteps` verify steps; a probe that keeps nothing doubles
 * the pause (up to `maxPause`), an accepted token resets it. Chosen by simulation (verify at k = 1 costing 1.2 decode
 * steps, first-token acceptance p i.i.d.): p = 0 loses 0.5%, p = 0.1 0.9%, p = 0.35 keeps 1.09× of the 1.12× that
 * never pausing gets; a streak of 3 with a 1-step probe kept only 1.01× at p = 0.35.
 *
 * With `costs` measured, k is instead SpecCosts.best(α, K), α the sequence's acceptance rate per draft position (kept
 * and rejected positions, the last ~5 verify steps counting, leaning on the ~20-step rate while they are few, which
 * starts from the rate pooled over recent sequences). A sequence for which no k pays at the ~20-step rate, or whose
 * last 2 · `missStreak` verify steps kept nothing, pauses as above (the pause
 * doubling while it keeps not paying, and at least SpecCosts.probePause(); a new one whose pooled rate pays for
 * nothing starts with a pause of `maxPause`, and one with none pooled, with a probe pause) and probes with one k = 1
 * step when the pause ends. With a free proposer (`shadow`) a paused sequence instead scores the drafts it would
 * have made (watch / seen) and resumes when they pay.
 */
export class AdaptiveK {
  k: number; // draft tokens for the next step by the heuristic above; 0 while paused
  private misses = 0; // verify steps in a row that kept no draft token
  private paused = 0; // steps left without speculation
  private backoff: number; // the next pause's length
  private probing = false; // with costs: the step after a pause probes with k = 1 whatever the costs say
  private kept = 0; // draft positions kept, with forgetting
  private lost = 0; // draft positions rejected (the first rejected of a step), with forgetting
  private fastKept = 0; private fastLost = 0; // the same over the last few verify steps (FAST_DECAY): what k follows
  private shades: { draft: readonly number[]; at: number }[] = []; // while paused: drafts the proposer would have made, one a step, and how many of their tokens have come

  /** @param shadow a paused sequence scores a free proposer's drafts (watch / seen) instead of pausing for a fixed time. */
  constructor(readonly max: number, readonly missStreak = 6, readonly minPause = 8, readonly maxPause = 128, readonly probeSteps = 3,
              readonly costs: SpecCosts | null = null, readonly shadow = false) {
    checkDraftTokens(max, 'AdaptiveK max (draft tokens per step)');
    this.k = max;
    this.backoff = minPause;
    // a new sequence starts from the acceptance its proposer has had lately; where that pays for nothing, paused
    const prior = costs?.acceptance();
    if (prior !== undefined && prior !== null) {
      this.kept = PRIOR_POSITIONS * prior;
      this.lost = PRIOR_POSITIONS * (1 - prior);
      if (this.pays() === 0) {
        this.backoff = maxPause; // each probe costs a draft model the whole context so far
        this.pause();
      }
    } else if (costs?.ready && !shadow) {
      // measured costs but no recent verify to pool: drafting has not paid lately, so the first probe waits too
      this.paused = this.probeWait();
    }
  }

  /**
   * A request's AdaptiveK with the default schedule: capped by `costs`, except under seeded sampling with a proposer
   * that may sample its drafts (its tokens then depend on k), so that its seed reproduces whatever the timings. A free
   * proposer's drafts are deterministic, and verifyDraft then draws what plain sampling draws, whatever k.
   */
  static forRequest(max: number, costs: SpecCosts | null, sampling: { readonly temperature: number; readonly seed: number | null }, proposer?: Proposer): AdaptiveK {
    const seeded = sampling.temperature > 0 && sampling.seed !== null && proposer?.free !== true;
    const c = seeded ? null : costs;
    return new AdaptiveK(max, undefined, undefined, undefined, undefined, c, c !== null && proposer?.free === true);
  }

  /** The acceptance rate per draft position (smoothed by half a kept and half a rejected position: 1/2 before any verify). */
  alpha(): number { return (this.kept + 0.5) / (this.kept + this.lost + 1); }

  /** The acceptance rate over the last few verify steps, leaning on alpha() while they are few. */
  alphaNow(): number { return (this.fastKept + 2 * this.alpha()) / (this.fastKept + this.fastLost + 2); }

  private score(proposed: number, accepted: number): void {
    this.kept = ALPHA_DECAY * this.kept + accepted;
    this.lost = ALPHA_DECAY * this.lost + (accepted < proposed ? 1 : 0);
    this.fastKept = FAST_DECAY * this.fastKept + accepted;
    this.fastLost = FAST_DECAY * this.fastLost + (accepted < proposed ? 1 : 0);
  }

  /**
   * The draft tokens that pay at the measured costs (SpecCosts.best), null while they are unmeasured; 0 only when
   * none would pay even at an acceptance rate 1 / PAUSE_MARGIN times the measured one, else at least 1.
   */
  pays(): number | null {
    const c = this.costs;
    if (!c) return null;
    const a = this.alpha();
    const k = c.best(a, this.max);
    if (k === null || k > 0) return k;
    return c.best(Math.min(1, a / PAUSE_MARGIN), this.max) === 0 ? 0 : 1;
  }

  /** Steps to wait before a probe, so that probes cost ~PROBE_SHARE of the tokens: in [minPause, maxPause]. */
  private probeWait(): number { return Math.max(this.minPause, Math.min(this.maxPause, this.costs?.probePause() ?? 0)); }

  /** Whether drafts are paused (a failing streak, or costs they do not pay). */
  isPaused(): boolean { return this.paused > 0; }

  /** k for the next decode step: 0 while paused. No side effect (a scheduler may ask more than once). */
  next(): number {
    if (this.paused > 0) return this.costs?.wantsProbe() ? 1 : 0; // no sequence has drafted for long: a probe keeps the costs measured
    if (this.probing) return 1;
    const p = this.pays();
    if (p === null || p === 0) return p ?? this.k;
    return Math.max(1, this.costs!.best(this.alphaNow(), this.max) ?? 1); // pays at the slow rate: k by the recent one
  }

  /**
   * Whether the loop should ask the proposer for the draft it would make now and hand it to watch(): paused, with a
   * free proposer and measured costs.
   */
  wantsShadow(): boolean { return this.shadow && this.paused > 0 && this.costs?.ready === true; }

  /** The draft a paused sequence would have verified this step: scored by the tokens seen() next. */
  watch(draft: readonly number[]): void {
    if (this.paused > 0 && draft.length > 0) this.shades.push({ draft: draft.slice(0, this.max), at: 0 });
  }

  /**
   * A token decoded while paused: scores each watched draft as a verify would have (kept up to the first mismatch),
   * a draft a step, so a copy that begins is seen within a few steps. Once drafts pay at the sequence's acceptance
   * rate (not pays()'s margin: that is for pausing), it resumes drafting.
   */
  seen(token: number): void {
    if (this.shades.length === 0) return;
    let scored = false;
    this.shades = this.shades.filter((sh) => {
      if (token === sh.draft[sh.at] && ++sh.at < sh.draft.length) return true;
      this.costs?.noteAcceptance(sh.draft.length, sh.at);
      this.score(sh.draft.length, sh.at);
      scored = true;
      return false;
    });
    if (scored && this.paused > 0 && (this.costs!.best(this.alpha(), this.max) ?? 0) > 0) {
      this.paused = 0;
      this.probing = false;
      this.misses = 0;
      this.backoff = this.minPause;
      this.shades = [];
    }
  }

  /**
   * A decode step ran without a draft: counts down a pause; when it ends, probe with k = 1. A shadowing sequence
   * probes too: its scored drafts say what they would keep, not what a verify costs, and without drafting steps a
   * cost the fit overestimated (a step that stalled) would never be measured again.
   */
  tick(): void {
    if (this.paused > 0) {
      if (--this.paused === 0) {
        this.k = 1;
        this.probing = this.pays() !== null;
        this.misses = Math.max(0, this.missStreak - this.probeSteps); // probeSteps failed verifies pause again
      }
    } else if (!this.probing && this.pays() === 0) this.pause(); // the costs moved: this sequence's drafts stopped paying
  }

  update(proposed: number, accepted: number): void {
    if (proposed === 0) return;
    this.shades = [];
    this.costs?.noteAcceptance(proposed, accepted);
    this.score(proposed, accepted);
    this.probing = false;
    const pays = this.pays();
    if (pays !== null) { // measured costs decide, and a long run of misses (twice the streak) stops what they misjudge
      this.misses = accepted > 0 ? 0 : this.misses + 1;
      this.k = Math.max(1, pays);
      if (pays > 0) this.paused = 0; // a probe asked by the costs (wantsProbe) found drafts paying again
      if (pays === 0 || this.misses >= 2 * this.missStreak) {
        this.misses = 0;
        this.pause();
        // a probe that costs a draft model's catch-up waits longer than one that costs a verify row
        this.paused = Math.max(this.paused, this.probeWait());
      } else if (accepted > 0) this.backoff = this.minPause;
      return;
    }
    if (accepted > 0) {
      this.misses = 0;
      this.backoff = this.minPause;
    } else if (++this.misses >= this.missStreak) {
      this.misses = 0;
      this.k = 0;
      this.pause();
      return;
    }
    this.k = accepted === proposed ? Math.min(this.max, this.k + 1) : Math.max(1, accepted + 1);
  }

  private pause(): void {
    this.paused = this.backoff;
    this.backoff = Math.min(this.maxPause, this.backoff * 2);
  }
}

export interface Verified {
  readonly tokens: number[]; // (accepted + 1) accepted drafts, then the correction or bonus token
  readonly accepted: number;
}

/**
 * Rejection sampling over the k + 1 verify rows (Leviathan et al. 2023, Chen et al. 2023): draft x at row j is
 * kept with probability min(1, p(x) / q(x)); on rejection the token comes from normalize(max(0, p - q)); after
 * k acceptances one bonus token from p. p is the sampler's own distribution (penalties, bias, temperature,
 * top-k/p, min-p), row by row with the accepted drafts counted as output. Greedy: keep x iff x = argmax. A draft
 * without q (one-hot) is verified by the coupled form of the same rule, which takes one uniform per output token as
 * plain sampling does: the seeded output is then token for token the one without speculation.
 */
export function verifyDraft(
  sampler: Sampler, counts: TokenCounts | null,
  logits: Float32Array, // (k + 1, V) target logits at the last committed token and each draft token
  draft: readonly number[], // (k)
  q?: readonly Float32Array[], // (k, V) draft distributions; absent → one-hot at the draft token
): Verified {
  const V = sampler.vocabSize;
  const k = draft.length;
  if (logits.length < (k + 1) * V) throw new Error(`verifyDraft: ${k} draft tokens need ${(k + 1) * V} logits (k + 1 rows of V = ${V}), got ${logits.length}`);
  const greedy = sampler.params.temperature === 0;
  const out: number[] = [];
  for (let j = 0; j <= k; j++) {
    const d = sampler.distribution(logits.subarray(j * V, (j + 1) * V), counts, out);
    if (j === k) {
      out.push(greedy ? d.ids[0]! : d.ids[sampler.draw(d.weights, d.n, d.sum)]!);
      return { tokens: out, accepted: k };
    }
    const x = draft[j]!;
    if (greedy) {
      if (x === d.ids[0]) { out.push(x); continue; }
      out.push(d.ids[0]!);
      return { tokens: out, accepted: j };
    }
    const qj = q?.[j];
    if (!qj) {
      // a deterministic draft (q one-hot at x): draw y from p with the sampler's one uniform and keep x iff y = x.
      // P(keep) = p(x), and a rejection gives y ~ p restricted to y ≠ x = normalize(max(0, p - q)): the rule above
      // for this q, drawing exactly what decoding without speculation draws, so a seed fixes the sample whatever
      // the drafts, k and the load
      const y = d.ids[sampler.draw(d.weights, d.n, d.sum)]!;
      out.push(y);
      if (y === x) continue;
      return { tokens: out, accepted: j };
    }
    let px = 0;
    for (let i = 0; i < d.n; i++) if (d.ids[i] === x) { px = d.weights[i]! / d.sum; break; }
    const qx = qj[x]!;
    if (px > 0 && (px >= qx || sampler.uniform() * qx < px)) { out.push(x); continue; }
    // rejected: residual max(0, p - q) over the candidates (p is 0 elsewhere)
    const r = new Float64Array(d.n);
    let sum = 0;
    for (let i = 0; i < d.n; i++) {
      const id = d.ids[i]!;
      const v = Math.max(0, d.weights[i]! / d.sum - qj[id]!);
      r[i] = v;
      sum += v;
    }
    // sum 0 means p <= q everywhere, i.e. p = q: a rejection then has probability 0; fall back to p
    out.push(sum > 0 ? d.ids[sampler.draw(r, d.n, sum)]! : d.ids[sampler.draw(d.weights, d.n, d.sum)]!);
    return { tokens: out, accepted: j };
  }
  throw new Error('unreachable');
}

/** Last occurrence before the end of `tokens` of its final n tokens; returns the index after that occurrence, or -1. */
function lastMatch(tokens: readonly number[], n: number, end: number, source: readonly number[], searchEnd: number): number {
  // the n-gram tokens[end - n, end) matched against source windows ending before searchEnd
  outer: for (let e = searchEnd; e >= n; e--) {
    for (let i = 1; i <= n; i++) if (source[e - i] !== tokens[end - i]) continue outer;
    return e;
  }
  return -1;
}

/** A 53-bit hash of tokens[from, to) (two 32-bit FNV / multiplicative mixes; collisions are checked by the caller). */
function gramHash(t: readonly number[], from: number, to: number): number {
  let a = 0x811c9dc5, b = 0x9e3779b9;
  for (let i = from; i < to; i++) {
    const x = t[i]!;
    a = Math.imul(a ^ x, 0x01000193);
    b = Math.imul(b ^ (x + 0x7f4a7c15), 0x85ebca6b) ^ (b >>> 13);
  }
  return (a >>> 0) * 0x200000 + ((b >>> 0) & 0x1fffff);
}

/**
 * For one growing sequence: where each of its n-grams (minN ≤ n ≤ maxN) last ended, kept as tokens are appended, so
 * a lookup costs O(n) instead of a scan of the whole context. latest(tokens, n) equals the scan
 * lastMatch(tokens, n, N, tokens, N - 1): the greatest e ≤ N - 1 with tokens[e - n, e) = tokens[N - n, N).
 *
 *   tokens  t0 t1 ... t(e-n) ... t(e-1) | t(e) ...  t(N-n) ... t(N-1)
 *                     └─ window ending at e ─┘        └── the tail ──┘   windows ending at e ≤ N - 1 are indexed
 */
export class NgramIndex {
  private readonly ends: Map<number, number>[]; // [n - minN]: hash of tokens[e - n, e) → greatest indexed e
  private readonly seen: number[] = []; // the tokens indexed so far (a copy: a caller's array may change)
  private indexedEnd = 0; // windows ending at e ≤ indexedEnd are in `ends`

  constructor(readonly minN: number, readonly maxN: number) {
    if (!(Number.isInteger(minN) && minN >= 1 && maxN >= minN)) throw new RangeError(`n-gram sizes must satisfy 1 <= minN <= maxN, got ${minN}, ${maxN}`);
    this.ends = Array.from({ length: maxN - minN + 1 }, () => new Map<number, number>());
  }

  /** Index windows ending before tokens.length; a sequence that does not extend the one seen starts over. */
  update(tokens: readonly number[]): void {
    const N = tokens.length;
    const seen = this.seen;
    let ok = N >= seen.length;
    for (let i = Math.max(0, seen.length - this.maxN - 1); ok && i < seen.length; i++) ok = seen[i] === tokens[i];
    if (!ok) this.reset();
    for (let i = seen.length; i < N; i++) seen.push(tokens[i]!);
    for (let e = this.indexedEnd + 1; e <= N - 1; e++) {
      for (let n = this.minN; n <= this.maxN && n <= e; n++) this.ends[n - this.minN]!.set(gramHash(seen, e - n, e), e);
    }
    this.indexedEnd = Math.max(this.indexedEnd, N - 1);
  }

  /** After update(tokens): the greatest e ≤ N - 1 where the final n tokens also ended, or -1. */
  latest(tokens: readonly number[], n: number): number {
    const N = tokens.length;
    if (n < this.minN || n > this.maxN || n > N - 1) return -1;
    const e = this.ends[n - this.minN]!.get(gramHash(tokens, N - n, N));
    if (e === undefined) return -1;
    for (let i = 1; i <= n; i++) if (this.seen[e - i] !== tokens[N - i]) return lastMatch(tokens, n, N, tokens, N - 1); // hash collision
    return e;
  }

  reset(): void {
    for (const m of this.ends) m.clear();
    this.seen.length = 0;
    this.indexedEnd = 0;
  }
}

/**
 * Prompt lookup: the longest n-gram (maxN down to minN) ending the sequence that occurred earlier in the
 * prompt or output; propose the k tokens that followed its latest occurrence. Each sequence keeps an NgramIndex
 * (dropped by release()), so a step costs O(new tokens + maxN²), not a scan of the context. minN = 1 by default:
 * on floe-brown single-token matches were accepted as often as longer ones (0.38) and raised tokens per verify step.
 */
export class NgramProposer implements Proposer {
  readonly name = 'ngram';
  readonly free = true;
  private readonly seqs = new Map<string, NgramIndex>();
  constructor(readonly minN = 1, readonly maxN = 4) {}

  propose(reqs: readonly ProposeRequest[]): Proposal[] {
    return reqs.map((r) => ({ tokens: this.one(r.tokens, r.k, r.seqId) }));
  }

  release(seqId: string): void { this.seqs.delete(seqId); }

  /** The proposal for one sequence; without a seqId the index is built for this call only. */
  one(tokens: readonly number[], k: number, seqId?: string): number[] {
    const ix = indexFor(this.seqs, seqId, this.minN, this.maxN);
    ix.update(tokens);
    const N = tokens.length;
    for (let n = Math.min(this.maxN, N - 1); n >= this.minN; n--) {
      const e = ix.latest(tokens, n);
      if (e >= 0) return tokens.slice(e, Math.min(N, e + k)) as number[];
    }
    return [];
  }
}

function indexFor(seqs: Map<string, NgramIndex>, seqId: string | undefined, minN: number, maxN: number): NgramIndex {
  if (seqId === undefined) return new NgramIndex(minN, maxN);
  let ix = seqs.get(seqId);
  if (!ix) { ix = new NgramIndex(minN, maxN); seqs.set(seqId, ix); }
  return ix;
}

/** A 30-bit hash of n tokens read through `at` (a small integer: V8 keeps it unboxed as a Map key). */
function gramKey30(at: (i: number) => number, from: number, to: number): number {
  let h = 0x811c9dc5;
  for (let i = from; i < to; i++) h = Math.imul(h ^ at(i), 0x01000193);
  return (h ^ (h >>> 15)) & 0x3fffffff;
}

/**
 * A suffix index over recent finished sequences (prompt + output) and the running sequence itself: the longest
 * match (up to maxN tokens) of the sequence's tail is looked up in a hash of every n-gram of the indexed
 * documents, and the tokens that followed it are proposed. Keeps the last `maxTokens` tokens of documents.
 *
 * Memory: the documents' tokens live in one ring of maxTokens int32 (position p at ring[p % maxTokens]); each n-gram
 * size has a Map from a 30-bit hash to the absolute end of the gram's latest occurrence (small integers both, so V8
 * stores them unboxed): about 4 + (maxN - minN + 1) × ~40 bytes per indexed token, measured by the test — string keys
 * and per-entry objects cost ~1.9 KB per token (478 MB at the default 256K tokens) before. A hash collision only
 * loses an entry: hits are checked token by token.
 */
export class SuffixProposer implements Proposer {
  readonly name = 'suffix';
  readonly free = true;
  private readonly ring: Int32Array;
  private readonly docs: { start: number; end: number }[] = []; // live documents, oldest first: absolute [start, end)
  private readonly grams: Map<number, number>[]; // [n - minN]: hash → absolute end of the latest occurrence
  private readonly seqs = new Map<string, NgramIndex>(); // running sequences' own n-grams
  private indexed = 0; // tokens held by docs
  private next = 0; // absolute position of the next token learned
  private readonly at = (p: number): number => this.ring[p % this.maxTokens]!;

  constructor(readonly minN = 1, readonly maxN = 8, readonly maxTokens = 1 << 18) {
    if (!(Number.isInteger(minN) && minN >= 1 && maxN >= minN)) throw new RangeError(`n-gram sizes must satisfy 1 <= minN <= maxN, got ${minN}, ${maxN}`);
    if (!(Number.isInteger(maxTokens) && maxTokens >= 1)) throw new RangeError(`maxTokens must be an integer >= 1, got ${maxTokens}`);
    this.ring = new Int32Array(maxTokens);
    this.grams = Array.from({ length: maxN - minN + 1 }, () => new Map<number, number>());
  }

  propose(reqs: readonly ProposeRequest[]): Proposal[] {
    return reqs.map((r) => ({ tokens: this.one(r.tokens, r.k, r.seqId) }));
  }

  release(seqId: string): void { this.seqs.delete(seqId); }

  /** The proposal for one sequence; without a seqId its own index is built for this call only. */
  one(tokens: readonly number[], k: number, seqId?: string): number[] {
    const ix = indexFor(this.seqs, seqId, this.minN, this.maxN);
    ix.update(tokens);
    const N = tokens.length;
    const tok = (i: number): number => tokens[i]!;
    for (let n = Math.min(this.maxN, N - 1); n >= this.minN; n--) {
      // the sequence itself first (its latest continuation), then past requests
      const e = ix.latest(tokens, n);
      if (e >= 0) return tokens.slice(e, Math.min(N, e + k)) as number[];
      const end = this.grams[n - this.minN]!.get(gramKey30(tok, N - n, N));
      if (end === undefined) continue;
      let same = true;
      for (let i = 1; i <= n && same; i++) same = this.at(end - i) === tokens[N - i];
      if (!same) continue; // a hash collision
      const docEnd = this.docEndOf(end - 1);
      const out: number[] = [];
      for (let p = end; p < Math.min(docEnd, end + k); p++) out.push(this.at(p));
      return out;
    }
    return [];
  }

  learn(tokens: readonly number[]): void {
    if (tokens.length < 2) return;
    const len = Math.min(tokens.length, this.maxTokens);
    while (this.docs.length > 0 && this.indexed + len > this.maxTokens) this.evict();
    const start = this.next;
    for (let i = 0; i < len; i++) this.ring[(start + i) % this.maxTokens] = tokens[tokens.length - len + i]!;
    this.next += len;
    this.docs.push({ start, end: start + len });
    this.indexed += len;
    this.forGrams(start, start + len, (n, h, end) => this.grams[n - this.minN]!.set(h, end));
  }

  get numIndexedTokens(): number { return this.indexed; }

  /** Entries in the n-gram maps (for the memory test). */
  get numGrams(): number { return this.grams.reduce((a, m) => a + m.size, 0); }

  private evict(): void {
    const d = this.docs.shift()!;
    this.indexed -= d.end - d.start;
    this.forGrams(d.start, d.end, (n, h, end) => {
      const m = this.grams[n - this.minN]!;
      if (m.get(h) === end) m.delete(h);
    });
  }

  /** Every gram of the document [start, end) that has a token after it, in order of its end. */
  private forGrams(start: number, end: number, f: (n: number, hash: number, end: number) => void): void {
    for (let e = start + this.minN; e < end; e++) {
      for (let n = this.minN; n <= this.maxN && n <= e - start; n++) f(n, gramKey30(this.at, e - n, e), e);
    }
  }

  /** The end of the live document holding absolute position p. */
  private docEndOf(p: number): number {
    let lo = 0;
    let hi = this.docs.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >>> 1;
      if (this.docs[mid]!.start <= p) lo = mid;
      else hi = mid - 1;
    }
    return this.docs[lo]!.end;
  }
}

/**
 * A smaller model sharing the target's tokenizer proposes: greedily (q one-hot) for greedy requests, else by
 * sampling softmax(draft logits / temperature) with the request's RNG and returning that q. Its KV is a KvCache of its own
 * with the target's block count and size, addressed through the target's block tables: blocks the scheduler
 * allocates (and frees, and preempts) for a sequence hold both models' KV for the same positions.
 */
export class DraftModelProposer implements Proposer {
  readonly name: string;
  readonly kvBytesPerToken: number;
  private kv: KvCache | null = null;
  private readonly kvDtype: KvDType;
  private readonly fed = new Map<string, number[]>(); // tokens whose draft KV is written, per sequence

  /**
   * @param minConfidence greedy drafting stops after a token the draft gives less than this probability: later
   *   drafts would rarely survive, and each costs a draft forward. 0 (default; FLOE_DRAFT_CONF overrides, for A/B
   *   runs) drafts all k. On floe-brown + floe-brown-draft, 0.5 cut verify rows 2.7 → 2.2 and draft time 13% per
   *   step at acceptance 0.38 → 0.46; the end-to-end effect was inside the noise of a loaded host.
   */
  constructor(readonly draft: LlamaModel, target: LlamaModel, name = 'draft', readonly minConfidence = Number(process.env.FLOE_DRAFT_CONF ?? 0)) {
    const dv = draft.config.vocabSize;
    const tv = target.config.vocabSize;
    if (dv !== tv) {
      throw new Error(`draft model vocabulary (${dv} tokens) differs from the target's (${tv}): speculation needs a draft with the same tokenizer and vocab size`);
    }
    this.name = name;
    const w = draft.weights.layers[0]?.wq;
    this.kvDtype = w && w.dtype === 'f32' ? 'f32' : 'bf16';
    const c = draft.config;
    this.kvBytesPerToken = KvCache.bytesPerToken(c.numLayers, c.numKvHeads, c.headDim, this.kvDtype);
  }

  init(geom: ProposerGeometry): void {
    const c = this.draft.config;
    if (this.kv && this.kv.numBlocks === geom.numBlocks && this.kv.blockSize === geom.blockSize) return;
    this.kv = new KvCache(c.numLayers, geom.numBlocks, geom.blockSize, c.numKvHeads, c.headDim, this.kvDtype);
    this.fed.clear();
  }

  release(seqId: string): void { this.fed.delete(seqId); }

  propose(reqs: readonly ProposeRequest[]): Proposal[] {
    const kv = this.kv;
    if (!kv) throw new Error('DraftModelProposer: init() must give the KV geometry before propose()');
    const out: number[][] = reqs.map(() => []);
    const qs: Float32Array[][] = reqs.map(() => []);
    const maxPos = this.draft.config.maxPositionEmbeddings;
    // catch up: every sequence feeds the tokens its draft KV lacks (at least the last one) and drafts one token
    const live: { i: number; fed: number[]; k: number }[] = [];
    for (let i = 0; i < reqs.length; i++) {
      const r = reqs[i]!;
      const k = Math.min(r.k, maxPos - r.tokens.length + 1);
      if (k < 1) continue;
      let fed = this.fed.get(r.seqId);
      if (!fed) { fed = []; this.fed.set(r.seqId, fed); }
      // drop draft KV past the first position where the sequence diverged from what was fed (rejected drafts)
      let c = Math.min(fed.length, r.tokens.length - 1);
      for (let p = 0; p < c; p++) if (fed[p] !== r.tokens[p]) { c = p; break; }
      fed.length = c;
      live.push({ i, fed, k });
    }
    let round = live.map((s) => ({ ...s, feed: reqs[s.i]!.tokens.slice(s.fed.length) as number[] }));
    while (round.length > 0) {
      const next = this.step(round.map((s) => ({ req: reqs[s.i]!, fed: s.fed, feed: s.feed })), kv);
      const more: typeof round = [];
      const V = this.draft.config.vocabSize;
      round.forEach((s, j) => {
        const d = out[s.i]!;
        const row = next.subarray(j * V, (j + 1) * V);
        const smp = reqs[s.i]!.sampling;
        let x: number;
        let sure = true; // greedy: the draft's own probability of x reaches minConfidence
        if (smp && smp.temperature > 0) {
          const q = softmax(row, smp.temperature);
          qs[s.i]!.push(q);
          let u = smp.random();
          x = 0;
          while (x < V - 1 && (u -= q[x]!) >= 0) x++;
          while (q[x] === 0 && x > 0) x--; // rounding at the tail: never a token q gives no mass
        } else {
          x = argmax(row);
          sure = this.minConfidence <= 0 || topProb(row, x) >= this.minConfidence;
        }
        d.push(x);
        // an unsure draft token is still proposed (its verify row costs little) but not drafted past
        if (d.length < s.k && sure) more.push({ ...s, feed: [x] });
      });
      round = more;
    }
    return out.map((tokens, i) => (qs[i]!.length > 0 ? { tokens, q: qs[i]! } : { tokens }));
  }

  /** One packed draft forward: each sequence appends `feed` at its fed length; returns next-token logits (S, V). */
  private step(seqs: { req: ProposeRequest; fed: number[]; feed: number[] }[], kv: KvCache): Float32Array {
    const L = kv.blockSize;
    const S = seqs.length;
    const T = seqs.reduce((a, s) => a + s.feed.length, 0);
    const maxBlocks = Math.max(1, ...seqs.map((s) => s.req.blockTable.length));
    const tokens = new Int32Array(T);
    const positions = new Int32Array(T);
    const slots = new Int32Array(T);
    const qStart = new Int32Array(S + 1);
    const ctxLen = new Int32Array(S);
    const blockTables = new Int32Array(S * maxBlocks); // (S, maxBlocks)
    const logitRows = new Int32Array(S);
    let t = 0;
    seqs.forEach((s, i) => {
      qStart[i] = t;
      const start = s.fed.length;
      blockTables.set(s.req.blockTable, i * maxBlocks);
      for (let j = 0; j < s.feed.length; j++, t++) {
        const pos = start + j;
        const b = s.req.blockTable[Math.floor(pos / L)];
        if (b === undefined) throw new Error(`draft model: position ${pos} of ${s.req.seqId} is beyond its block table (${s.req.blockTable.length} blocks of ${L})`);
        tokens[t] = s.feed[j]!;
        positions[t] = pos;
        slots[t] = b * L + (pos % L);
      }
      ctxLen[i] = start + s.feed.length;
      logitRows[i] = t - 1;
      s.fed.push(...s.feed);
    });
    qStart[S] = t;
    return this.draft.forward({ tokens, positions, slots, attn: { numSeqs: S, qStart, ctxLen, blockTables, maxBlocks }, logitRows }, kv);
  }
}

/** softmax(row)[x] where x is the row's argmax. */
function topProb(row: Float32Array, x: number): number {
  const m = row[x]!;
  let sum = 0;
  for (let i = 0; i < row.length; i++) sum += Math.exp(row[i]! - m);
  return 1 / sum;
}

/** softmax(row / temperature) (V). */
function softmax(row: Float32Array, temperature: number): Float32Array {
  let max = -Infinity;
  for (let i = 0; i < row.length; i++) if (row[i]! > max) max = row[i]!;
  const q = new Float32Array(row.length);
  let sum = 0;
  for (let i = 0; i < row.length; i++) { const e = Math.exp((row[i]! - max) / temperature); q[i] = e; sum += e; }
  for (let i = 0; i < row.length; i++) q[i] = q[i]! / sum;
  return q;
}
