// Regular expressions (guided_regex, guided_choice) → a Thompson NFA over code points, run as a byte grammar (UTF-8 decoded in the state).
//
// The whole output must match (anchors ^ $ are implied). Supported: literals, . [] [^] \d \w \s (and negations), escapes,
// groups (…) (?:…), alternation, * + ? {m} {m,} {m,n} (lazy forms decode the same). Backreferences and lookaround are refused.
// JSON Schema patterns are read as ECMA-262 ('u' flag, as ajv runs them) and searched: see searchRegex(); there anchors may
// stand anywhere and lookaheads (?=…) (?!…) and lookbehinds (?<=…) (?<!…) are taken (dfa.ts builds their automata);
// lookaround inside a lookbehind, a lookbehind inside a lookahead and '$' inside a lookbehind are refused.

import type { ByteGrammar } from './grammar.js';

export type Ast =
  | { readonly t: 'anchor'; readonly end: boolean } // ^ or $ (ECMA patterns only): the input's start / end
  | { readonly t: 'look'; readonly x: Ast; readonly neg: boolean } // (?=x) / (?!x) (ECMA patterns only): the rest of the input (does not) start with a match of x
  | { readonly t: 'behind'; readonly x: Ast; readonly neg: boolean } // (?<=x) / (?<!x) (ECMA patterns only): the input read so far (does not) end with a match of x
  | { readonly t: 'set'; readonly ranges: readonly (readonly [number, number])[]; readonly neg: boolean }
  | { readonly t: 'cat'; readonly xs: readonly Ast[] }
  | { readonly t: 'alt'; readonly xs: readonly Ast[] }
  | { readonly t: 'rep'; readonly x: Ast; readonly min: number; readonly max: number };

export class RegexError extends Error {}

const MAX_CP = 0x10ffff;
const DIGIT: [number, number][] = [[0x30, 0x39]];
const WORD: [number, number][] = [[0x30, 0x39], [0x41, 0x5a], [0x5f, 0x5f], [0x61, 0x7a]];
const SPACE: [number, number][] = [[0x09, 0x0d], [0x20, 0x20]];
const ECMA_SPACE: [number, number][] = [[0x09, 0x0d], [0x20, 0x20], [0xa0, 0xa0], [0x1680, 0x1680], [0x2000, 0x200a], [0x2028, 0x2029], [0x202f, 0x202f], [0x205f, 0x205f], [0x3000, 0x3000], [0xfeff, 0xfeff]];
const ECMA_LINE_END: [number, number][] = [[0x0a, 0x0a], [0x0d, 0x0d], [0x2028, 0x2029]]; // what '.' does not match
const ANY_CP: Ast = { t: 'set', ranges: [], neg: true };
const MAX_REPEAT = 1000;

class Parser {
  private i = 0;
  private readonly cps: number[];
  private inLook: 'lookahead' | 'lookbehind' | null = null; // the lookaround being parsed (the outermost)
  constructor(readonly src: string, readonly ecma = false) { this.cps = [...src].map((c) => c.codePointAt(0)!); }

  parse(): Ast {
    const a = this.alt();
    if (this.i < this.cps.length) this.fail(`unexpected '${String.fromCodePoint(this.cps[this.i]!)}'`);
    return a;
  }
  private fail(msg: string, at = this.i): never { throw new RegexError(`regex ${JSON.stringify(this.src)} at ${at}: ${msg}`); }
  private peek(): number | undefined { return this.cps[this.i]; }
  private eat(c: string): boolean { if (this.peek() === c.codePointAt(0)) { this.i++; return true; } return false; }

  private alt(): Ast {
    const xs = [this.cat()];
    while (this.eat('|')) xs.push(this.cat());
    return xs.length === 1 ? xs[0]! : { t: 'alt', xs };
  }
  private cat(): Ast {
    const xs: Ast[] = [];
    for (let c = this.peek(); c !== undefined && c !== 0x7c && c !== 0x29; c = this.peek()) {
      if (c === 0x5e || c === 0x24) { // ^ $: the whole output matches anyway (ECMA: kept for searchRegex)
        if (c === 0x24 && this.inLook === 'lookbehind') this.fail("'$' inside a lookbehind is not supported");
        this.i++;
        if (this.ecma) xs.push({ t: 'anchor', end: c === 0x24 });
        continue;
      }
      const look = this.ecma && c === 0x28 ? /^\(\?(<?)([=!])/.exec(this.rest()) : null;
      if (look) { // a lookaround: an assertion, so no quantifier may follow (as with 'u')
        const kind = look[1] ? 'lookbehind' : 'lookahead';
        if (this.inLook === 'lookbehind' || (kind === 'lookbehind' && this.inLook !== null)) this.fail(`a ${kind} inside a ${this.inLook} is not supported`);
        this.i += look[0].length;
        const outer = this.inLook;
        this.inLook ??= kind;
        const x = this.alt();
        this.inLook = outer;
        if (!this.eat(')')) this.fail("missing ')'");
        xs.push({ t: kind === 'lookbehind' ? 'behind' : 'look', x, neg: look[2] === '!' });
        const c2 = this.peek();
        if (c2 === 0x2a || c2 === 0x2b || c2 === 0x3f || (c2 === 0x7b && /^\{\d+(,\d*)?\}/.test(this.rest()))) this.fail(`a ${kind} cannot be repeated (invalid quantifier '${String.fromCodePoint(c2)}')`);
        continue;
      }
      xs.push(this.quant(this.atom()));
    }
    return { t: 'cat', xs };
  }
  private quant(x: Ast): Ast {
    for (;;) {
      let min: number, max: number;
      if (this.eat('*')) [min, max] = [0, Infinity];
      else if (this.eat('+')) [min, max] = [1, Infinity];
      else if (this.eat('?')) [min, max] = [0, 1];
      else if (this.peek() === 0x7b && /^\{\d+(,\d*)?\}/.test(this.rest())) {
        const m = /^\{(\d+)(,(\d*))?\}/.exec(this.rest())!;
        this.i += m[0].length;
        min = Number(m[1]);
        max = m[2] === undefined ? min : m[3] === '' ? Infinity : Number(m[3]);
        if (min > max || min > MAX_REPEAT || (max !== Infinity && max > MAX_REPEAT)) this.fail(`repetition ${m[0]} out of range (at most ${MAX_REPEAT})`);
      } else return x;
      this.eat('?'); // lazy: same language
      x = { t: 'rep', x, min, max };
    }
  }
  private rest(): string { return String.fromCodePoint(...this.cps.slice(this.i, this.i + 24)); }
  private atom(): Ast {
    const c = this.cps[this.i++]!;
    switch (c) {
      case 0x28: { // (
        if (this.eat('?')) {
          const named = this.ecma && this.peek() === 0x3c && /^<[A-Za-z_$][\w$]*>/.exec(this.rest());
          if (named) this.i += named[0].length; // (?<name>…) groups like (…)
          else if (!this.eat(':')) this.badGroup(this.i - 2);
        }
        const a = this.alt();
        if (!this.eat(')')) this.fail("missing ')'");
        return a;
      }
      case 0x5b: return this.cls();
      case 0x2e: return { t: 'set', ranges: this.ecma ? ECMA_LINE_END : [[0x0a, 0x0a]], neg: true };
      case 0x5c: return this.escape(false);
      case 0x2a: case 0x2b: case 0x3f: this.i--; return this.fail('nothing to repeat');
      default: return { t: 'set', ranges: [[c, c]], neg: false };
    }
  }
  /** Why the group opening '(?' at `at` is refused: lookaround by its kind, else what groups there are. */
  private badGroup(at: number): never {
    const open = String.fromCodePoint(...this.cps.slice(at, at + 4));
    const kind = /^\(\?<[=!]/.test(open) ? `lookbehind ${open}…)` : /^\(\?[=!]/.test(open) ? `lookahead ${open.slice(0, 3)}…)`
      : /^\(\?<[A-Za-z_$]/.test(open) ? 'a named group (?<name>…)' : null;
    const groups = this.ecma ? '(…), (?:…), (?<name>…), lookaheads (?=…) (?!…) and lookbehinds (?<=…) (?<!…)' : '(…) and (?:…)';
    if (kind !== null) this.fail(`${kind} is not supported (supported groups: ${groups})`, at);
    this.fail(`unknown group '${open.slice(0, 3)}' (supported groups: ${groups})`, at);
  }
  private escape(inClass: boolean): Ast & { t: 'set' } {
    const c = this.cps[this.i++];
    if (c === undefined) this.fail('trailing backslash');
    const ch = String.fromCodePoint(c);
    const set = (ranges: [number, number][], neg = false): Ast & { t: 'set' } => ({ t: 'set', ranges, neg });
    switch (ch) {
      case 'd': return set(DIGIT);
      case 'D': return set(DIGIT, true);
      case 'w': return set(WORD);
      case 'W': return set(WORD, true);
      case 's': return set(this.ecma ? ECMA_SPACE : SPACE);
      case 'S': return set(this.ecma ? ECMA_SPACE : SPACE, true);
      case 'n': return set([[10, 10]]);
      case 'r': return set([[13, 13]]);
      case 't': return set([[9, 9]]);
      case 'f': return set([[12, 12]]);
      case 'v': return set([[11, 11]]);
      case 'x': case 'u': {
        if (ch === 'u' && this.ecma && this.peek() === 0x7b) { // \u{1F600}
          const m = /^\{([0-9a-fA-F]{1,6})\}/.exec(this.rest());
          if (!m || parseInt(m[1]!, 16) > MAX_CP) this.fail('\\u{…} needs 1-6 hex digits of a code point');
          this.i += m[0].length;
          const v = parseInt(m[1], 16);
          return set([[v, v]]);
        }
        const n = ch === 'x' ? 2 : 4;
        const hex = String.fromCodePoint(...this.cps.slice(this.i, this.i + n));
        if (!new RegExp(`^[0-9a-fA-F]{${n}}$`).test(hex)) this.fail(`\\${ch} needs ${n} hex digits`);
        this.i += n;
        const v = parseInt(hex, 16);
        return set([[v, v]]);
      }
      default:
        if (ch === '0' && this.ecma && !/[0-9]/.test(String.fromCodePoint(this.peek() ?? 0x20))) return set([[0, 0]]);
        if ((ch === 'b' || ch === 'B') && this.ecma && !inClass) this.fail(`word boundaries (\\${ch}) are not supported`);
        if (ch === 'b' && this.ecma) return set([[8, 8]]); // [\b] is backspace
        if ((ch === 'p' || ch === 'P') && this.ecma) this.fail(`Unicode property escapes (\\${ch}{…}) are not supported`);
        if (/[0-9]/.test(ch) && !inClass) this.fail('backreferences are not supported');
        if (/[a-zA-Z]/.test(ch)) this.fail(`unknown escape \\${ch}`);
        return set([[c, c]]);
    }
  }
  private cls(): Ast {
    const neg = this.eat('^');
    const ranges: [number, number][] = [];
    const negs: (readonly (readonly [number, number])[])[] = [];
    let first = true;
    for (;;) {
      const c = this.peek();
      if (c === undefined) this.fail("missing ']'");
      if (c === 0x5d && !first) { this.i++; break; }
      first = false;
      let lo: number;
      if (c === 0x5c) {
        this.i++;
        const e = this.escape(true);
        if (e.neg) { negs.push(e.ranges); continue; }
        if (e.ranges.length > 1 || e.ranges[0]![0] !== e.ranges[0]![1]) { ranges.push(...e.ranges.map((r) => [r[0], r[1]] as [number, number])); continue; }
        lo = e.ranges[0]![0];
      } else { this.i++; lo = c; }
      if (this.peek() === 0x2d && this.cps[this.i + 1] !== undefined && this.cps[this.i + 1] !== 0x5d) {
        this.i++;
        let hi = this.cps[this.i++]!;
        if (hi === 0x5c) hi = this.escape(true).ranges[0]![0];
        if (hi < lo) this.fail('range out of order');
        ranges.push([lo, hi]);
      } else ranges.push([lo, lo]);
    }
    // a negated escape inside a class (e.g. [\D]) adds its complement
    for (const n of negs) ranges.push(...complement(n));
    return { t: 'set', ranges, neg };
  }
}

function complement(rs: readonly (readonly [number, number])[]): [number, number][] {
  const sorted = [...rs].sort((a, b) => a[0] - b[0]);
  const out: [number, number][] = [];
  let lo = 0;
  for (const [a, b] of sorted) { if (a > lo) out.push([lo, a - 1]); lo = Math.max(lo, b + 1); }
  if (lo <= MAX_CP) out.push([lo, MAX_CP]);
  return out;
}

/**
 * NFA node: a code-point test (ranges, negated) leading to `out`, or an epsilon fan-out (`outs`), or accept. An epsilon
 * node with a `test` is passed only where it holds: 'bol' at the input's start, 'eol' at its end, a number: lookahead
 * `looks[test]`, {behind}: lookbehind `behinds[behind]` (ECMA patterns; dfa.ts runs them, Nfa.closure() stops at them).
 */
interface NfaNode { ranges: readonly (readonly [number, number])[] | null; neg: boolean; out: number; outs: number[]; accept: boolean; test?: 'bol' | 'eol' | number | { readonly behind: number } }

const MAX_NFA = 20000;

export class Nfa {
  readonly nodes: NfaNode[] = [];
  readonly looks: { readonly x: Ast; readonly neg: boolean }[] = [];
  readonly behinds: { readonly x: Ast; readonly neg: boolean }[] = [];
  private readonly lookIds = new Map<Ast, number>(); // a lookaround copied by a bounded repeat is one, compiled once
  readonly start: number;
  constructor(ast: Ast) {
    const acc = this.add({ ranges: null, neg: false, out: -1, outs: [], accept: true });
    this.start = this.build(ast, acc);
  }
  private add(n: NfaNode): number {
    if (this.nodes.length >= MAX_NFA) throw new RegexError(`regex too large (more than ${MAX_NFA} automaton states)`);
    this.nodes.push(n);
    return this.nodes.length - 1;
  }
  private eps(outs: number[]): number { return this.add({ ranges: null, neg: false, out: -1, outs, accept: false }); }
  /** Compile `a` so that it continues to `next` (continuation-passing, built back to front). */
  private build(a: Ast, next: number): number {
    switch (a.t) {
      case 'anchor': return this.add({ ranges: null, neg: false, out: -1, outs: [next], accept: false, test: a.end ? 'eol' : 'bol' });
      case 'look': {
        let id = this.lookIds.get(a);
        if (id === undefined) { this.lookIds.set(a, id = this.looks.length); this.looks.push({ x: a.x, neg: a.neg }); }
        return this.add({ ranges: null, neg: false, out: -1, outs: [next], accept: false, test: id });
      }
      case 'behind': {
        let id = this.lookIds.get(a);
        if (id === undefined) { this.lookIds.set(a, id = this.behinds.length); this.behinds.push({ x: a.x, neg: a.neg }); }
        return this.add({ ranges: null, neg: false, out: -1, outs: [next], accept: false, test: { behind: id } });
      }
      case 'set': return this.add({ ranges: a.ranges, neg: a.neg, out: next, outs: [], accept: false });
      case 'cat': return a.xs.reduceRight((n, x) => this.build(x, n), next);
      case 'alt': return this.eps(a.xs.map((x) => this.build(x, next)));
      case 'rep': {
        let n = next;
        if (a.max === Infinity) {
          const loop = this.eps([]);
          this.nodes[loop]!.outs.push(this.build(a.x, loop), next);
          n = loop;
        } else for (let k = a.min; k < a.max; k++) n = this.eps([this.build(a.x, n), next]);
        for (let k = 0; k < a.min; k++) n = this.build(a.x, n);
        return n;
      }
    }
  }
  /** Epsilon closure of a set of nodes, as a sorted list of consuming / accepting nodes. */
  closure(from: Iterable<number>): number[] {
    const seen = new Set<number>();
    const stack = [...from];
    const out: number[] = [];
    while (stack.length > 0) {
      const i = stack.pop()!;
      if (seen.has(i)) continue;
      seen.add(i);
      const n = this.nodes[i]!;
      if (n.ranges !== null || n.accept) out.push(i);
      else if (n.test === undefined) stack.push(...n.outs);
    }
    return out.sort((a, b) => a - b);
  }
  move(set: readonly number[], cp: number): number[] {
    const next: number[] = [];
    for (const i of set) {
      const n = this.nodes[i]!;
      if (n.ranges === null) continue;
      let hit = false;
      for (const [lo, hi] of n.ranges) if (cp >= lo && cp <= hi) { hit = true; break; }
      if (hit !== n.neg) next.push(n.out);
    }
    return this.closure(next);
  }
}

/** NFA states plus the partial UTF-8 code point being read: cp so far and continuation bytes still due. */
export interface RegexState { readonly set: readonly number[]; readonly cp: number; readonly need: number; readonly min: number; key?: string } // min: smallest code point the lead byte may encode

export class RegexGrammar implements ByteGrammar<RegexState> {
  readonly nfa: Nfa;
  readonly start: RegexState;
  constructor(readonly pattern: string) {
    this.nfa = new Nfa(new Parser(pattern).parse());
    this.start = { set: this.nfa.closure([this.nfa.start]), cp: 0, need: 0, min: 0 };
  }
  step(s: RegexState, b: number): RegexState | null {
    let cp: number;
    if (s.need > 0) {
      if ((b & 0xc0) !== 0x80) return null;
      cp = (s.cp << 6) | (b & 0x3f);
      if (s.need > 1) return this.partial(s.set, cp, s.need - 1, s.min);
      if (cp < s.min) return null; // overlong
    } else if (b < 0x80) cp = b;
    else if (b >= 0xc2 && b <= 0xdf) return this.partial(s.set, b & 0x1f, 1, 0x80);
    else if (b >= 0xe0 && b <= 0xef) return this.partial(s.set, b & 0x0f, 2, 0x800);
    else if (b >= 0xf0 && b <= 0xf4) return this.partial(s.set, b & 0x07, 3, 0x10000);
    else return null;
    const set = this.nfa.move(s.set, cp);
    return set.length === 0 ? null : { set, cp: 0, need: 0, min: 0 };
  }
  /** A code point begun: kept only if some transition takes a code point in its range [cp·64^need, (cp+1)·64^need). */
  private partial(set: readonly number[], cp: number, need: number, min: number): RegexState | null {
    const lo = Math.max(min, cp * 64 ** need);
    const hi = Math.min(MAX_CP, (cp + 1) * 64 ** need - 1);
    if (lo > hi) return null;
    for (const i of set) {
      const n = this.nfa.nodes[i]!;
      if (n.ranges === null) continue;
      if (n.neg) return { set, cp, need, min }; // a negated class takes nearly everything: let the next bytes decide
      for (const [a, z] of n.ranges) if (a <= hi && z >= lo) return { set, cp, need, min };
    }
    return null;
  }
  accepts(s: RegexState): boolean { return s.need === 0 && s.set.some((i) => this.nfa.nodes[i]!.accept); }
  key(s: RegexState): string { return (s.key ??= `${s.set.join(',')}${s.need > 0 ? `:${s.cp}.${s.need}.${s.min}` : ''}`); }
}

/** Parse a regex (ECMA-262 with the 'u' flag when `ecma`: '.' and \\s as JS has them, (?<name>…), \\u{…}). */
export function parseRegex(src: string, ecma = false): Ast { return new Parser(src, ecma).parse(); }

/**
 * A JSON Schema 'pattern' as a language of whole strings: ECMA regexes search (match anywhere), so each top-level
 * alternative gets any text before it unless it starts with '^' and after it unless it ends with '$'. Anchors elsewhere
 * and lookaheads stay in the tree: dfa.ts's intersect() runs them where they stand.
 */
export function searchRegex(src: string): Ast {
  const top = parseRegex(src, true);
  const alts = top.t === 'alt' ? top.xs : [top];
  return {
    t: 'alt', xs: alts.map((a) => {
      const xs = a.t === 'cat' ? [...a.xs] : [a];
      let start = false, end = false;
      while (xs[0]?.t === 'anchor' && !xs[0].end) { xs.shift(); start = true; }
      while (xs.at(-1)?.t === 'anchor' && (xs.at(-1) as { end: boolean }).end) { xs.pop(); end = true; }
      const any: Ast = { t: 'rep', x: ANY_CP, min: 0, max: Infinity };
      return { t: 'cat', xs: [...(start ? [] : [any]), ...xs, ...(end ? [] : [any])] };
    }),
  };
}

/** A regex matching exactly one of the strings (guided_choice). */
export function choiceRegex(choices: readonly string[]): string {
  return choices.map((c) => c.replace(/[\\^$.*+?()[\]{}|/]/g, '\\$&')).join('|');
}
