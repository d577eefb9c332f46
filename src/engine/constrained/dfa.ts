// Deterministic automata over code points for schema strings (pattern, format, length) and bounded numbers: the
// intersection of regex NFAs, built eagerly (a 400 when too large), with every state live (each can still reach an
// accepting one), so a decoder walking it never ends up where no character may follow.

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
  const nfas = asts.map((a) => new Nfa(a));
  const sets: (readonly number[])[][] = [nfas.map((n) => n.closure([n.start]))];
  const ids = new Map<string, number>([[key(sets[0]!), 0]]);
  const trans: [number, number, number][][] = [];
  for (let q = 0; q < sets.length; q++) {
    const cur = sets[q]!;
    // boundaries of every range the state's nodes test: code points between two of them all go to the same place
    const cuts = new Set<number>([0, SUR_LO, SUR_HI + 1, MAX_CP + 1]);
    cur.forEach((set, k) => {
      for (const i of set) for (const [a, b] of nfas[k]!.nodes[i]!.ranges ?? []) { cuts.add(a); cuts.add(b + 1); }
    });
    const bounds = [...cuts].sort((a, b) => a - b);
    const out: [number, number, number][] = [];
    for (let j = 0; j + 1 < bounds.length; j++) {
      const a = bounds[j]!, b = bounds[j + 1]! - 1;
      if (a >= SUR_LO && b <= SUR_HI) continue;
      const next = cur.map((set, k) => nfas[k]!.move(set, a));
      if (next.some((s) => s.length === 0)) continue;
      const kk = key(next);
      let t = ids.get(kk);
      if (t === undefined) {
        if (sets.length >= limit) throw new RegexError(`too complex: more than ${limit} automaton states`);
        t = sets.length;
        ids.set(kk, t);
        sets.push(next);
      }
      const last = out.at(-1);
      if (last && last[2] === t && last[1] === a - 1) last[1] = b;
      else out.push([a, b, t]);
    }
    trans.push(out);
  }
  const accept = sets.map((cur) => cur.every((set, k) => set.some((i) => nfas[k]!.nodes[i]!.accept)));
  // keep the live states (an accepting one reachable), renumbered with the start first
  const rev: number[][] = sets.map(() => []);
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
