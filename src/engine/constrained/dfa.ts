// Deterministic automata over code points for schema strings (pattern, format) and bounded numbers: the intersection of
// regex NFAs, built eagerly (a 400 when too large), with every state live (each can still reach an accepting one), so a
// decoder walking it never ends up where no character may follow. String lengths are counted beside a DFA, not in it:
// ContinuationLengths says which (state, length so far) pairs can still end within the bounds.

import { Nfa, RegexError, type Ast } from './regex.js';

const MAX_CP = 0x10ffff;
const SUR_LO = 0xd800, SUR_HI = 0xdfff; // surrogates: no JSON string holds one alone, so no transition takes one
export const MAX_DFA_STATES = 4096;

export class Dfa {
  /** (states) sorted disjoint code point ranges [lo, hi] and the state each leads to. */
  constructor(readonly lo: readonly Int32Array[], readonly hi: readonly Int32Array[], readonly to: readonly Int32Array[], readonly accept: readonly boolean[]) {}
  readonly start = 0;
  get size(): number { return this.accept.length; }

  /** The state after `cp` from `q`, or -1. */
  next(q: number, cp: number): number {
    const lo = this.lo[q]!, hi = this.hi[q]!;
    for (let i = 0; i < lo.length; i++) if (cp <= hi[i]!) return cp >= lo[i]! ? this.to[q]![i]! : -1;
    return -1;
  }

  /** Whether some code point in [a, b] leads on from `q` (a partial UTF-8 sequence or \u escape may still end well). */
  overlaps(q: number, a: number, b: number): boolean {
    const lo = this.lo[q]!, hi = this.hi[q]!;
    for (let i = 0; i < lo.length; i++) if (lo[i]! <= b && hi[i]! >= a) return true;
    return false;
  }

  /** Shortest and longest accepted string, in code points (Infinity: unbounded). */
  lengths(): { min: number; max: number } {
    const n = this.size;
    const dist = new Array<number>(n).fill(Infinity);
    dist[0] = 0;
    for (let queue = [0]; queue.length > 0;) {
      const next: number[] = [];
      for (const q of queue) for (const t of this.to[q]!) if (dist[t] === Infinity) { dist[t] = dist[q]! + 1; next.push(t); }
      queue = next;
    }
    let min = Infinity;
    for (let q = 0; q < n; q++) if (this.accept[q]) min = Math.min(min, dist[q]!);
    // longest path to an accepting end; a cycle (every state is live) makes it unbounded
    const memo = new Array<number>(n).fill(-2); // -2 unseen, -1 on the stack
    const longest = (q: number): number => {
      if (memo[q] === -1) return Infinity;
      if (memo[q]! >= 0 || memo[q] === Infinity) return memo[q]!;
      memo[q] = -1;
      let best = this.accept[q] ? 0 : -Infinity;
      for (const t of this.to[q]!) best = Math.max(best, 1 + longest(t));
      memo[q] = best;
      return best;
    };
    return { min, max: longest(0) };
  }
}

/** The DFA of strings every one of `asts` matches whole; null when no string does. Throws RegexError past `limit` states. */
export function intersect(asts: readonly Ast[], limit = MAX_DFA_STATES): Dfa | null {
  return new Subsets(asts.map((a) => new Nfa(a)), limit).dfa(true);
}

const ALPHABET = MAX_CP + 1 - (SUR_HI - SUR_LO + 1); // code points a transition may take
const ANY_REST: Ast = { t: 'rep', x: { t: 'set', ranges: [], neg: true }, min: 0, max: Infinity };

/** A lookahead as an automaton over the rest of the input from where it stands; `universal`: its state that takes every rest (-1: none). */
interface Look { readonly dfa: Dfa; readonly universal: number }

/**
 * The subset construction over NFA threads. A thread is a node and the lookaheads it has passed and still owes: each
 * an automaton of the rest of the input ((?=X): the rests in X·Σ*; (?!X): the complement, so it needs the whole DFA)
 * at the state the input read since has led it to. A thread dies where one of them cannot accept any more and drops
 * one that takes every rest; it ends accepted where all of them accept the empty rest. '^' is passed only in the
 * first state's closure (nothing read yet: `atStart`, for a lookahead's automaton where it stands at the input's
 * start), '$' only when the input ends. Threads are coded node + obligations' id · nodes.
 *
 * Lookbehinds ask of the input read so far, the same for every thread: each runs as the automaton of Σ*·X from the
 * input's start beside the threads (a state of the DFA is the threads and those automata's states), and (?<=X) is
 * passed where its automaton accepts, (?<!X) where it does not. The parser keeps lookarounds out of lookbehinds and
 * lookbehinds out of lookaheads, so a lookahead's own construction has none.
 */
class Subsets {
  private readonly looks = new Map<string, number>(); // `${nfa}.${look}.${atStart}` → id in `lookList` (-1: never holds)
  private readonly lookList: Look[] = [];
  private readonly obs: (readonly number[])[] = [[]]; // interned obligations: (lookId, state) pairs, flat and sorted
  private readonly obIds = new Map<string, number>([['', 0]]);
  private readonly behinds: { readonly dfa: Dfa | null; readonly neg: boolean }[] = []; // every NFA's lookbehinds, NFA k's from behindBase[k]: Σ*·X (null: X matches nothing)
  private readonly behindBase: number[] = [];
  private behind: readonly number[] = []; // (behinds) while closing: each lookbehind automaton's state after the input so far
  constructor(private readonly nfas: readonly Nfa[], private readonly limit: number) {
    for (const n of nfas) {
      this.behindBase.push(this.behinds.length);
      for (const { x, neg } of n.behinds) {
        const d = new Subsets([new Nfa({ t: 'cat', xs: [ANY_REST, x] })], limit).dfa(true);
        this.behinds.push({ dfa: d === null ? null : minimize(d), neg });
      }
    }
  }

  dfa(atStart: boolean): Dfa | null {
    const nfas = this.nfas;
    const B = this.behinds.length;
    const behindAt: (readonly number[])[] = [this.behinds.map(() => 0)]; // (states, behinds) each lookbehind automaton's state
    this.behind = behindAt[0]!;
    const sets: (readonly number[])[][] = [nfas.map((n, k) => this.close(k, [n.start], atStart))];
    const asserts = nfas.some((n) => n.nodes.some((x) => x.test !== undefined));
    const stateKey = (next: (readonly number[])[], behind: readonly number[]): string => (B === 0 ? key(next) : `${key(next)}#${behind.join(',')}`);
    const ids = new Map<string, number>([[`${asserts ? '^' : ''}${stateKey(sets[0]!, behindAt[0]!)}`, 0]]); // the first state apart where '^' or a lookaround may tell it from others
    const trans: [number, number, number][][] = [];
    for (let q = 0; q < sets.length; q++) {
      const cur = sets[q]!, curBehind = behindAt[q]!;
      // boundaries of every range the state's nodes and owed lookaheads test: code points between two of them all go to the same place
      const cuts = new Set<number>([0, SUR_LO, SUR_HI + 1, MAX_CP + 1]);
      cur.forEach((set, k) => {
        const N = nfas[k]!.nodes.length;
        for (const c of set) {
          for (const [a, b] of nfas[k]!.nodes[c % N]!.ranges ?? []) { cuts.add(a); cuts.add(b + 1); }
          const o = this.obs[Math.floor(c / N)]!;
          for (let i = 0; i < o.length; i += 2) {
            const d = this.lookList[o[i]!]!.dfa, p = o[i + 1]!;
            for (let j = 0; j < d.lo[p]!.length; j++) { cuts.add(d.lo[p]![j]!); cuts.add(d.hi[p]![j]! + 1); }
          }
        }
      });
      curBehind.forEach((p, g) => {
        const d = this.behinds[g]!.dfa;
        if (d !== null && p >= 0) for (let j = 0; j < d.lo[p]!.length; j++) { cuts.add(d.lo[p]![j]!); cuts.add(d.hi[p]![j]! + 1); }
      });
      const bounds = [...cuts].sort((a, b) => a - b);
      const out: [number, number, number][] = [];
      for (let j = 0; j + 1 < bounds.length; j++) {
        const a = bounds[j]!, b = bounds[j + 1]! - 1;
        if (a >= SUR_LO && b <= SUR_HI) continue;
        const behind = B === 0 ? curBehind : curBehind.map((p, g) => { const d = this.behinds[g]!.dfa; return d === null || p < 0 ? -1 : d.next(p, a); });
        this.behind = behind;
        const next = cur.map((set, k) => this.move(k, set, a));
        if (next.some((s) => s.length === 0)) continue;
        const kk = stateKey(next, behind);
        let t = ids.get(kk);
        if (t === undefined) {
          if (sets.length >= this.limit) throw new RegexError(`too complex: more than ${this.limit} automaton states`);
          t = sets.length;
          ids.set(kk, t);
          sets.push(next);
          behindAt.push(behind);
        }
        const last = out.at(-1);
        if (last && last[2] === t && last[1] === a - 1) last[1] = b;
        else out.push([a, b, t]);
      }
      trans.push(out);
    }
    return trimmed(trans, sets.map((cur, q) => { this.behind = behindAt[q]!; return cur.every((set, k) => this.ends(k, set, atStart && q === 0)); }));
  }

  /** Whether lookbehind `b` of NFA `k` holds after the input so far (this.behind). */
  private behindHolds(k: number, b: number): boolean {
    const g = this.behindBase[k]! + b, { dfa, neg } = this.behinds[g]!, p = this.behind[g]!;
    return (dfa !== null && p >= 0 && dfa.accept[p]!) !== neg;
  }

  /** The threads `seeds` lead to without reading: those at a node that reads, at the accept node or at a '$'. */
  private close(k: number, seeds: readonly number[], atStart: boolean): number[] {
    const N = this.nfas[k]!.nodes.length;
    const seen = new Set<number>();
    const stack = [...seeds];
    const out: number[] = [];
    while (stack.length > 0) {
      const c = stack.pop()!;
      if (seen.has(c)) continue;
      seen.add(c);
      const n = this.nfas[k]!.nodes[c % N]!, o = Math.floor(c / N);
      if (n.ranges !== null || n.accept || n.test === 'eol') out.push(c);
      else if (n.test === 'bol') { if (atStart) stack.push(n.outs[0]! + o * N); }
      else if (typeof n.test === 'number') { const o2 = this.owe(k, n.test, atStart, o); if (o2 >= 0) stack.push(n.outs[0]! + o2 * N); }
      else if (typeof n.test === 'object') { if (this.behindHolds(k, n.test.behind)) stack.push(n.outs[0]! + o * N); }
      else for (const t of n.outs) stack.push(t + o * N);
    }
    return out.sort((a, b) => a - b);
  }

  /** Whether a thread of `set` ends accepted here, the input ending: '$' passed, every owed lookahead accepting the empty rest. */
  private ends(k: number, set: readonly number[], atStart: boolean): boolean {
    const N = this.nfas[k]!.nodes.length;
    const seen = new Set<number>();
    const stack = [...set];
    while (stack.length > 0) {
      const c = stack.pop()!;
      if (seen.has(c)) continue;
      seen.add(c);
      const n = this.nfas[k]!.nodes[c % N]!, o = Math.floor(c / N);
      if (n.accept) {
        const ob = this.obs[o]!;
        let ok = true;
        for (let i = 0; i < ob.length && ok; i += 2) ok = this.lookList[ob[i]!]!.dfa.accept[ob[i + 1]!]!;
        if (ok) return true;
      } else if (n.ranges !== null) continue;
      else if (n.test === 'bol') { if (atStart) stack.push(n.outs[0]! + o * N); }
      else if (typeof n.test === 'number') { const o2 = this.owe(k, n.test, atStart, o); if (o2 >= 0) stack.push(n.outs[0]! + o2 * N); }
      else if (typeof n.test === 'object') { if (this.behindHolds(k, n.test.behind)) stack.push(n.outs[0]! + o * N); }
      else for (const t of n.outs) stack.push(t + o * N);
    }
    return false;
  }

  /** The threads after reading `cp`: nodes that take it, each owed lookahead stepped (the thread dies if one cannot). */
  private move(k: number, set: readonly number[], cp: number): number[] {
    const N = this.nfas[k]!.nodes.length;
    const seeds: number[] = [];
    for (const c of set) {
      const n = this.nfas[k]!.nodes[c % N]!;
      if (n.ranges === null) continue;
      let hit = false;
      for (const [lo, hi] of n.ranges) if (cp >= lo && cp <= hi) { hit = true; break; }
      if (hit === n.neg) continue;
      const o = Math.floor(c / N);
      if (o === 0) { seeds.push(n.out); continue; }
      const ob = this.obs[o]!, after: number[] = [];
      let dead = false;
      for (let i = 0; i < ob.length && !dead; i += 2) {
        const look = this.lookList[ob[i]!]!, p = look.dfa.next(ob[i + 1]!, cp);
        if (p < 0) dead = true;
        else if (p !== look.universal) after.push(ob[i]!, p);
      }
      if (!dead) seeds.push(n.out + this.intern(after) * N);
    }
    return this.close(k, seeds, false);
  }

  /** Obligations `o` and lookahead `look` of NFA `k` from here on (-1: it never holds). */
  private owe(k: number, look: number, atStart: boolean, o: number): number {
    const id = this.look(k, look, atStart);
    if (id < 0) return -1;
    const { universal } = this.lookList[id]!;
    if (universal === 0) return o;
    const ob = this.obs[o]!, pairs: [number, number][] = [[id, 0]];
    for (let i = 0; i < ob.length; i += 2) pairs.push([ob[i]!, ob[i + 1]!]);
    pairs.sort((x, y) => x[0] - y[0] || x[1] - y[1]);
    return this.intern(pairs.filter((x, i) => i === 0 || x[0] !== pairs[i - 1]![0] || x[1] !== pairs[i - 1]![1]).flat());
  }

  private intern(ob: readonly number[]): number {
    const kk = ob.join(',');
    let id = this.obIds.get(kk);
    if (id === undefined) { this.obIds.set(kk, id = this.obs.length); this.obs.push(ob); }
    return id;
  }

  /** The automaton of lookahead `look` of NFA `k` standing at the input's start or not: its id (-1: no rest satisfies it). */
  private look(k: number, look: number, atStart: boolean): number {
    const kk = `${k}.${look}.${atStart}`;
    let id = this.looks.get(kk);
    if (id !== undefined) return id;
    const { x, neg } = this.nfas[k]!.looks[look]!;
    const pos = new Subsets([new Nfa({ t: 'cat', xs: [x, ANY_REST] })], this.limit).dfa(atStart); // the rests X·Σ*
    const d = neg ? complement(pos) : pos === null ? null : minimize(pos);
    if (d === null) id = -1;
    else { id = this.lookList.length; this.lookList.push({ dfa: d, universal: universalState(d) }); }
    this.looks.set(kk, id);
    return id;
  }
}

/** The strings `d` does not take (null: none), minimal; `d` null is no string, so the complement takes every one. */
export function complement(d: Dfa | null): Dfa | null {
  const n = d === null ? 0 : d.size, sink = n; // every code point a state has no transition for leads to the sink
  const whole = (out: [number, number, number][], lo: number, hi: number): void => { if (lo <= hi) out.push([lo, hi, sink]); };
  const trans: [number, number, number][][] = [];
  for (let q = 0; q < n; q++) {
    const out: [number, number, number][] = [];
    let from = 0;
    for (let i = 0; i < d!.lo[q]!.length; i++) {
      const lo = d!.lo[q]![i]!, hi = d!.hi[q]![i]!;
      gaps(out, from, lo - 1, whole);
      out.push([lo, hi, d!.to[q]![i]!]);
      from = hi + 1;
    }
    gaps(out, from, MAX_CP, whole);
    trans.push(out);
  }
  const all: [number, number, number][] = [];
  gaps(all, 0, MAX_CP, whole);
  trans.push(all);
  const c = trimmed(trans, [...Array.from({ length: n }, (_, q) => !d!.accept[q]), true]);
  return c === null ? null : minimize(c);
}

/** [lo, hi] less the surrogates, each piece given to `put`. */
function gaps(out: [number, number, number][], lo: number, hi: number, put: (out: [number, number, number][], lo: number, hi: number) => void): void {
  put(out, lo, Math.min(hi, SUR_LO - 1));
  put(out, Math.max(lo, SUR_HI + 1), hi);
}

/** The state of a minimal automaton that takes every string from it (-1: none). */
function universalState(d: Dfa): number {
  for (let q = 0; q < d.size; q++) {
    if (!d.accept[q]) continue;
    let covered = 0;
    for (let i = 0; i < d.lo[q]!.length; i++) if (d.to[q]![i] === q) covered += d.hi[q]![i]! - d.lo[q]![i]! + 1;
    if (covered === ALPHABET) return q;
  }
  return -1;
}

/**
 * The automaton of transitions `trans` ((states) [lo, hi, to] sorted, disjoint) from state 0, keeping the live states
 * (an accepting one reachable), renumbered with the start first; null when the start is not live.
 */
export function trimmed(trans: readonly (readonly (readonly [number, number, number])[])[], accept: readonly boolean[]): Dfa | null {
  const rev: number[][] = trans.map(() => []);
  trans.forEach((out, q) => { for (const [, , t] of out) rev[t]!.push(q); });
  const live = accept.map((a) => a);
  const stack = accept.flatMap((a, q) => (a ? [q] : []));
  while (stack.length > 0) for (const p of rev[stack.pop()!]!) if (!live[p]) { live[p] = true; stack.push(p); }
  if (!live[0]) return null;
  const renum = new Map<number, number>();
  live.forEach((l, q) => { if (l) renum.set(q, renum.size); });
  const keep = [...renum.keys()];
  const edges = keep.map((q) => trans[q]!.filter(([, , t]) => live[t]));
  return new Dfa(
    edges.map((e) => Int32Array.from(e, (x) => x[0])), edges.map((e) => Int32Array.from(e, (x) => x[1])),
    edges.map((e) => Int32Array.from(e, (x) => renum.get(x[2])!)), keep.map((q) => accept[q]!),
  );
}

function key(sets: readonly (readonly number[])[]): string { return sets.map((s) => s.join(',')).join('|'); }

/** The strings both automata take (live states only); null when none. Throws RegexError past `limit` states. */
export function intersectDfas(a: Dfa, b: Dfa, limit = MAX_DFA_STATES): Dfa | null {
  const ids = new Map<number, number>([[0, 0]]); // p · b.size + q → state
  const pairs: [number, number][] = [[a.start, b.start]];
  const trans: [number, number, number][][] = [];
  for (let k = 0; k < pairs.length; k++) {
    const [p, q] = pairs[k]!;
    const out: [number, number, number][] = [];
    // the overlaps of two sorted lists of disjoint ranges
    for (let i = 0, j = 0; i < a.lo[p]!.length && j < b.lo[q]!.length;) {
      const lo = Math.max(a.lo[p]![i]!, b.lo[q]![j]!), hi = Math.min(a.hi[p]![i]!, b.hi[q]![j]!);
      if (lo <= hi) {
        const tp = a.to[p]![i]!, tq = b.to[q]![j]!;
        let t = ids.get(tp * b.size + tq);
        if (t === undefined) {
          if (pairs.length >= limit) throw new RegexError(`too complex: more than ${limit} automaton states`);
          ids.set(tp * b.size + tq, t = pairs.length);
          pairs.push([tp, tq]);
        }
        out.push([lo, hi, t]);
      }
      if (a.hi[p]![i]! < b.hi[q]![j]!) i++; else j++;
    }
    trans.push(out);
  }
  return trimmed(trans, pairs.map(([p, q]) => a.accept[p]! && b.accept[q]!));
}

/** The automaton with the fewest states that takes the same strings (Moore: split classes by where each range leads). */
export function minimize(d: Dfa): Dfa {
  const n = d.size;
  let cls = Int32Array.from(d.accept, (x) => (x ? 1 : 0));
  let count = new Set(cls).size;
  // a state's ranges with the class each leads to, neighbours to the same class merged
  const edges = (q: number, c: Int32Array): [number, number, number][] => {
    const out: [number, number, number][] = [];
    for (let i = 0; i < d.lo[q]!.length; i++) {
      const lo = d.lo[q]![i]!, hi = d.hi[q]![i]!, t = c[d.to[q]![i]!]!;
      const last = out.at(-1);
      if (last && last[2] === t && last[1] === lo - 1) last[1] = hi;
      else out.push([lo, hi, t]);
    }
    return out;
  };
  for (;;) {
    const ids = new Map<string, number>();
    const next = new Int32Array(n);
    for (let q = 0; q < n; q++) {
      const sig = `${cls[q]}|${edges(q, cls).join(';')}`;
      let c = ids.get(sig);
      if (c === undefined) ids.set(sig, c = ids.size);
      next[q] = c;
    }
    cls = next;
    if (ids.size === count) break;
    count = ids.size;
  }
  // one state per class, numbered in the order a walk from the start meets them
  const order = new Map<number, number>([[cls[d.start]!, 0]]);
  const reps = [d.start];
  for (let k = 0; k < reps.length; k++) {
    for (const t of d.to[reps[k]!]!) if (!order.has(cls[t]!)) { order.set(cls[t]!, reps.length); reps.push(t); }
  }
  const renum = Int32Array.from(cls, (c) => order.get(c) ?? -1);
  const out = reps.map((q) => edges(q, renum));
  return new Dfa(out.map((e) => Int32Array.from(e, (x) => x[0])), out.map((e) => Int32Array.from(e, (x) => x[1])), out.map((e) => Int32Array.from(e, (x) => x[2])), reps.map((q) => d.accept[q]!));
}

const MAX_LENGTH_WORDS = 1 << 20; // R_k bitsets kept while looking for the cycle (4 MiB)
const MAX_LENGTH_WORK = 1 << 26; // states and edges visited while looking for it (a fraction of a second)

/**
 * The lengths, in code points, of the accepted continuations from each DFA state: `next(q, L)` is the least L' ≥ L such
 * that a string of L' code points leads from q to an accepting state (Infinity: none).
 *
 * R_k, the states with an accepted continuation of exactly k code points (R_0 the accepting states, R_k+1 those with a
 * transition into R_k), repeats from some R_j with a period p (a function of the previous set): every state's lengths
 * are its runs of k below T = j + p, then those of [j, T) again every p. Runs are kept per state as [a, b] pairs.
 */
export class ContinuationLengths {
  private constructor(
    readonly j: number, readonly p: number,
    private readonly first: Int32Array, // (states + 1) offset of each state's runs in `runs`
    private readonly runs: Int32Array, // (2 · runs) [a, b]: k in a..b are lengths of the state, sorted
    readonly shortest: Int32Array, // (states) next(q, 0); -1: none
    readonly deepest: number, // the longest of the shortest: max over q of shortest[q]
    readonly deepestFrom: Int32Array, // (states) max of shortest[u] over the u reachable from q (q too) a string can end from; -1: none
  ) {}

  /**
   * Lengths up to `horizon` (a maxLength: no longer one is ever asked for; next() says Infinity past it where R_k has
   * not repeated by then). Throws RegexError when R_k repeats only past MAX_LENGTH_WORDS of bitsets or MAX_LENGTH_WORK steps.
   */
  static of(dfa: Dfa, horizon = Infinity): ContinuationLengths {
    const n = dfa.size, W = (n + 31) >>> 5;
    const succ = dfa.to.map((ts) => Int32Array.from(new Set(ts))); // (states) distinct successors: lengths ignore the code point
    const cost = succ.reduce((c, ts) => c + ts.length, n);
    let sets = new Uint32Array(16 * W); // (T, W) R_0, R_1, …
    const latest = new Map<number, number>(); // hash of a set → the last k with it
    const earlier: number[] = []; // (T) the k before it with the same hash, -1: none
    let T = 0, j = -1;
    dfa.accept.forEach((a, q) => { if (a) sets[q >>> 5]! |= 1 << (q & 31); });
    for (;;) {
      const r = T * W;
      let h = 0;
      for (let w = 0; w < W; w++) h = Math.imul(h ^ sets[r + w]!, 0x9e3779b1) >>> 0;
      for (let k = latest.get(h) ?? -1; k >= 0 && j < 0; k = earlier[k]!) {
        let w = 0;
        while (w < W && sets[k * W + w] === sets[r + w]) w++;
        if (w === W) j = k;
      }
      if (j >= 0) break;
      if (T > horizon) { j = T; break; } // R_0 … R_horizon: the cycle, if any, is never reached
      earlier.push(latest.get(h) ?? -1);
      latest.set(h, T++);
      if ((T + 1) * W > MAX_LENGTH_WORDS || T * cost > MAX_LENGTH_WORK) {
        throw new RegexError(`too complex: the lengths of its strings repeat only after more than ${T} code points`);
      }
      if ((T + 1) * W > sets.length) { const grown = new Uint32Array(sets.length * 2); grown.set(sets); sets = grown; }
      // R_T: the states with a transition into R_T-1
      const next = T * W;
      for (let q = 0; q < n; q++) {
        const ts = succ[q]!;
        for (let i = 0; i < ts.length; i++) {
          const t = ts[i]!;
          if ((sets[r + (t >>> 5)]! >>> (t & 31)) & 1) { sets[next + (q >>> 5)]! |= 1 << (q & 31); break; }
        }
      }
    }
    const first = new Int32Array(n + 1);
    const runs: number[] = [];
    const shortest = new Int32Array(n).fill(-1);
    for (let q = 0; q < n; q++) {
      first[q] = runs.length;
      const w = q >>> 5, bit = 1 << (q & 31);
      for (let k = 0; k < T; k++) {
        if ((sets[k * W + w]! & bit) === 0) continue;
        if (shortest[q] < 0) shortest[q] = k;
        if (runs.length > first[q]! && runs[runs.length - 1] === k - 1) runs[runs.length - 1] = k;
        else runs.push(k, k);
      }
    }
    first[n] = runs.length;
    // deepestFrom: the states by falling shortest, each giving its value to the states that reach it and have none yet
    // (those that have one reach a deeper state, and so do the states that reach them)
    const into: number[][] = Array.from({ length: n }, () => []);
    succ.forEach((ts, q) => { for (const t of ts) into[t]!.push(q); });
    const deepestFrom = new Int32Array(n).fill(-1);
    const order = [...shortest.keys()].filter((q) => shortest[q]! >= 0).sort((a, b) => shortest[b]! - shortest[a]!);
    for (const u of order) {
      if (deepestFrom[u]! >= 0) continue;
      deepestFrom[u] = shortest[u]!;
      const stack = [u];
      while (stack.length > 0) {
        for (const q of into[stack.pop()!]!) if (deepestFrom[q]! < 0) { deepestFrom[q] = shortest[u]!; stack.push(q); }
      }
    }
    return new ContinuationLengths(j, Math.max(1, T - j), first, Int32Array.from(runs), shortest, Math.max(0, ...shortest), deepestFrom);
  }

  /** The least accepted continuation length ≥ L from q (Infinity: none). */
  next(q: number, L: number): number {
    const T = this.j + this.p;
    let r = L, base = 0;
    if (L >= T) { r = this.j + ((L - this.j) % this.p); base = L - r; }
    const end = this.first[q + 1]! >>> 1;
    let i = this.runFrom(q, r);
    if (i < end) return base + Math.max(this.runs[2 * i]!, r);
    // none from r below T: the cycle's first length, one period on (none in the cycle: no longer string ends)
    i = this.runFrom(q, this.j);
    return i < end ? base + Math.max(this.runs[2 * i]!, this.j) + this.p : Infinity;
  }

  /** Index of q's first run ending at or after x (binary search over its pairs; its end index: none). */
  private runFrom(q: number, x: number): number {
    let lo = this.first[q]! >>> 1, hi = this.first[q + 1]! >>> 1;
    while (lo < hi) { const m = (lo + hi) >>> 1; if (this.runs[2 * m + 1]! >= x) hi = m; else lo = m + 1; }
    return lo;
  }

  /**
   * A length so far that every state answers alike to `n` for tokens that read `reads` code points (reads[c] = 1: some
   * token reads c, whole or in part; reach the most), the same one for all the n it stands for, so a decoder has the
   * same choices at both. What a token reading c code points from n needs: live(u_i, n + i) for the state u_i after its
   * i-th (1 ≤ i ≤ c; for a partial last one, some state it can still lead to), and n + i ≥ min where it closes (i < c).
   *  - n ≥ min: the closing quote may come, and live(u, m) is shortest[u] ≤ max - m (shortest[u] ≥ 0 aside), so the
   *    token fits iff its need, the largest i + shortest[u_i], is ≤ r = max - n; need lies in [c, c + deepest]. With c*
   *    the largest read ≤ r, no need falls in (c* + deepest, r]: r and min(r, c* + deepest) take the same tokens.
   *  - n + reach < min and min - (n + reach) ≥ j: no quote yet, and live(u, m) is next(u, min - m) ≤ max - m with
   *    min - m ≥ j, where next(u, L + p) = next(u, L) + p: n mod p's answers.
   * Elsewhere n itself (where the lengths have not settled into their cycle, or about to pass minLength).
   */
  alike(n: number, min: number, max: number, reads: Uint8Array): number {
    const reach = reads.length - 1;
    if (n >= min) {
      if (max === Infinity) return n; // n stops at min (one count already)
      const r = max - n;
      let c = Math.min(r, reach);
      while (c >= 0 && reads[c] === 0) c--;
      return c < 0 ? n : max - Math.min(r, c + this.deepest);
    }
    if (n + reach < min && min - n - reach >= this.j) return n % this.p;
    return n;
  }

  private over = -1;
  /**
   * The most, over states a string can still end from (shortest ≥ 0) and lengths L ≥ 1, by which the shortest accepted
   * continuation at least L long exceeds L: max next(q, L) - L (Infinity where some such state has no continuation of
   * some length). Below minLength, every such state is live once maxLength - minLength ≥ overshoot (token-mask's
   * filter near minLength). For L ≥ j the excess repeats with period p: lengths 1 … j + p decide it.
   */
  get overshoot(): number {
    if (this.over >= 0) return this.over;
    let g = 0;
    for (let q = 0; q < this.shortest.length && g < Infinity; q++) {
      if (this.shortest[q]! < 0) continue;
      for (let L = 1; L <= this.j + this.p && g < Infinity; L++) g = Math.max(g, this.next(q, L) - L);
    }
    return (this.over = g);
  }

  /** Whether a string at q with `n` code points so far can still end accepted with min ≤ its length ≤ max. */
  live(q: number, n: number, min: number, max: number): boolean {
    if (n > max) return false;
    if (n >= min) { const s = this.shortest[q]!; return s >= 0 && s <= max - n; }
    return this.next(q, min - n) <= max - n;
  }
}
