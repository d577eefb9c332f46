// Byte-level grammar automata for constrained decoding: a JSON matcher over schema nodes (a set of parse stacks).
//
// A state is every parse the bytes so far allow (anyOf makes several); step() consumes one byte; the key names a state's
// future exactly, and the mask key the tokens allowed next (counts of a length-bounded string far from its bounds share
// one), so masks can be memoized per mask key. Whitespace: at most one space after ':' and ',' (as Llama writes
// {"name": "f", "parameters": {…}}), none elsewhere, so a model cannot stall the output on blanks.

import type { Node } from './json-schema.js';

/** What the token masker needs of an automaton. States are immutable. */
export interface ByteGrammar<S = unknown> {
  readonly start: S;
  step(s: S, byte: number): S | null; // null: the byte is not allowed here
  accepts(s: S): boolean; // the output may end here (EOS allowed)
  key(s: S): string; // equal keys ⇔ equal futures
  /** The mask memo key: shared by states that allow the same tokens, given how many code points of a string's text tokens can read (`reads[c]`: some token reads c; key() if absent). */
  maskKey?(s: S, reads: Uint8Array): string;
  /** Whether every token may follow, special ones included, from here on: the output is left unmasked (lazy.ts). */
  free?(s: S): boolean;
  /** The state after a special token (no bytes) whose text is `text`, or null where it may not come (absent: never). */
  special?(s: S, text: string): S | null;
  /** Where the state is one length-counted string's text near its minLength or maxLength, and nothing else (token-mask's length filter). */
  nearBound?(s: S, reads: Uint8Array): NearBound<S> | null;
}

/**
 * A state inside a length-counted string whose mask depends on its count: `far`, the same state at a count whose mask
 * holds this one's, the string's text phase `ph`, the code points `left` to maxLength (Infinity: none) and `need` to
 * minLength (0: past it), and `slack`, the most code points any state its automaton can reach from here still needs to
 * end (ContinuationLengths.deepestFrom: in a URI's path 2, for a %-escape, where its start's 'http://aa' is 9). A token
 * `far` takes that reads c code points from `ph` (textReadsFrom) fits here where c + slack ≤ left, and does not where
 * c > left, or where it closes the string with c < need; between the two it has to be stepped.
 *  - Near maxLength (past minLength, fewer left than tokens read): `far` has more left; every check of a length is
 *    one of room left, so its mask holds this one's.
 *  - Below minLength, near it: `far` is at minLength, where the quote may come. Where maxLength - minLength ≥
 *    reach + slack and ≥ the automaton's overshoot, a token fits at both or at neither but for the quote, which here
 *    needs c ≥ need (ContinuationLengths.overshoot).
 */
export interface NearBound<S> { readonly far: S; readonly ph: number; readonly left: number; readonly need: number; readonly slack: number }

type LitNode = Extract<Node, { t: 'literal' }>;
type ObjNode = Extract<Node, { t: 'object' }>;
type ArrNode = Extract<Node, { t: 'array' }> | null; // null: an array of any values
type CallsNode = Extract<Node, { t: 'calls' }>;
type StrNode = Extract<Node, { t: 'string' }>;
type NumNode = Extract<Node, { t: 'number' | 'integer' }>;

// number phases: after '-', '0', int digits, '.', frac digits, 'e', exponent sign, exponent digits
const enum N { Sign, Zero, Int, Dot, Frac, E, ESign, Exp }
const NUM_COMPLETE = [false, true, true, false, true, false, false, true];
const MAX_DIGITS = 16; // per digit run: keeps numbers (and state keys) finite
const MAX_EXP_DIGITS = 2; // with 16-digit runs |x| < 1e116 and a nonzero x > 1e-116: a finite double (3 digits let 1e999 parse as Infinity, which zod's z.number() refuses)
const UTF8_SECOND: readonly (readonly [number, number, number])[] = [[0xa0, 0xbf, 11], [0x80, 0x9f, 11], [0x90, 0xbf, 12], [0x80, 0x8f, 12]]; // after E0, ED, F0, F4

type Frame =
  | { readonly k: 'val'; readonly node: Node; readonly ws?: boolean } // ws: one space may come first
  | { readonly k: 'str'; readonly ph: number } // any string; ph: 0 text, 1 after '\', 2..5 '\u' hex digits seen + 2, 11..13 UTF-8 continuation bytes left + 10, 14..17 after lead E0 ED F0 F4
  | { readonly k: 'rstr'; readonly node: StrNode; readonly q: number; readonly ph: number; readonly cp: number; readonly n: number } // a string read by node.dfa: q its state; ph as 'str'; cp: the code point being read (UTF-8 bytes, \\u digits); n: code points so far (0 unless node.lens; stops at node.min when node.max is Infinity, the lengths being alike from there)
  | { readonly k: 'num'; readonly int: boolean; readonly ph: N; readonly d: number }
  | { readonly k: 'rnum'; readonly node: NumNode; readonly q: number } // a number read by node.dfa
  | { readonly k: 'lit'; readonly node: LitNode; readonly alive: readonly number[]; readonly pos: number }
  | { readonly k: 'obj'; readonly node: ObjNode; readonly i: number; readonly ph: 'open' | 'key' | 'colon' | 'value' | 'next' | 'comma' | 'commaSp'; readonly alive: readonly number[]; readonly pos: number }
  | { readonly k: 'aobj'; readonly v: Node; readonly ph: 'open' | 'key' | 'colon' | 'value' | 'next' | 'comma' | 'commaSp' } // v: every value's node
  | { readonly k: 'arr'; readonly node: ArrNode; readonly n: number; readonly ph: 'open' | 'value' | 'next' }
  | { readonly k: 'calls'; readonly node: CallsNode; readonly n: number; readonly ph: 'value' | 'next'; readonly pos: number };

interface Stack { readonly f: Frame; readonly p: Stack | null; key?: string }
type Parse = Stack | null; // null: the whole value is complete
export type JsonState = readonly Parse[];

const ANY: Node = { t: 'any', id: -1 };
const KEYWORDS: LitNode = { t: 'literal', id: -2, texts: ['true', 'false', 'null'].map((s) => new TextEncoder().encode(s)) };
const SP = 0x20, Q = 0x22, BS = 0x5c, COMMA = 0x2c, COLON = 0x3a, LB = 0x7b, RB = 0x7d, LS = 0x5b, RS = 0x5d;
const isDigit = (b: number): boolean => b >= 0x30 && b <= 0x39;
const isHex = (b: number): boolean => isDigit(b) || (b >= 0x41 && b <= 0x46) || (b >= 0x61 && b <= 0x66);

const push = (f: Frame, p: Stack | null): Stack => ({ f, p });

/** The parent after its child value completed; null stays null (the root value is done). */
function done(st: Stack | null): Parse {
  if (st === null) return null;
  const f = st.f;
  switch (f.k) {
    case 'obj': return push({ ...f, ph: 'next' }, st.p);
    case 'aobj': return push({ ...f, ph: f.ph === 'key' ? 'colon' : 'next' }, st.p);
    case 'arr': return push({ ...f, n: f.n + 1, ph: 'next' }, st.p);
    case 'calls': return push({ ...f, n: f.n + 1, ph: 'next', pos: 0 }, st.p);
    default: throw new Error(`grammar: frame ${f.k} cannot hold a child value`);
  }
}

/**
 * First byte of a value of `node` under `parent`. `seen`: the nodes already begun under this parent for this byte (an
 * anyOf's alternatives, through $refs): one reached again adds the same parses, so it is skipped; without this,
 * alternatives that share a $ref target, nested k deep, were expanded 2^k times (a 1 KB schema stalled the engine).
 */
function begin(node: Node, parent: Stack | null, b: number, out: Parse[], seen?: Set<Node>): void {
  if (seen) {
    if (seen.has(node)) return;
    seen.add(node);
  }
  switch (node.t) {
    case 'any':
      if (b === LB) out.push(push({ k: 'aobj', v: ANY, ph: 'open' }, parent));
      else if (b === LS) out.push(push({ k: 'arr', node: null, n: 0, ph: 'open' }, parent));
      else if (b === Q) out.push(push({ k: 'str', ph: 0 }, parent));
      else if (b === 0x2d || isDigit(b)) numStart(false, parent, b, out);
      else begin(KEYWORDS, parent, b, out);
      return;
    case 'anyObject': if (b === LB) out.push(push({ k: 'aobj', v: node.values ?? ANY, ph: 'open' }, parent)); return;
    case 'object': if (b === LB) out.push(push({ k: 'obj', node, i: 0, ph: 'open', alive: [], pos: 0 }, parent)); return;
    case 'array': if (b === LS) out.push(push({ k: 'arr', node, n: 0, ph: 'open' }, parent)); return;
    case 'string':
      if (b === Q && node.dfa) out.push(push({ k: 'rstr', node, q: node.dfa.start, ph: 0, cp: 0, n: 0 }, parent));
      else if (b === Q) out.push(push({ k: 'str', ph: 0 }, parent)); return;
    case 'number': case 'integer':
      if (node.dfa) { const q = node.dfa.next(node.dfa.start, b); if (q >= 0) out.push(push({ k: 'rnum', node, q }, parent)); }
      else if (b === 0x2d || isDigit(b)) numStart(node.t === 'integer', parent, b, out);
      return;
    case 'ref':
      if (node.to === null) throw new Error(`grammar: $ref ${node.ref} is not compiled yet`);
      begin(node.to, parent, b, out, seen);
      return;
    case 'literal': {
      const alive: number[] = [];
      node.texts.forEach((t, i) => { if (t[0] === b) alive.push(i); });
      if (alive.length > 0) out.push(push({ k: 'lit', node, alive, pos: 1 }, parent));
      return;
    }
    case 'anyOf': {
      // only alternatives that lead on ($ref, anyOf) can meet again: a flat one (a nullable, an enum of types) makes no set
      const s = seen ?? (node.nodes.some((n) => n.t === 'ref' || n.t === 'anyOf') ? new Set<Node>([node]) : undefined);
      for (const n of node.nodes) begin(n, parent, b, out, s);
      return;
    }
    case 'calls': begin(node.item, push({ k: 'calls', node, n: 0, ph: 'value', pos: 0 }, parent), b, out); return;
  }
}

function numStart(int: boolean, parent: Stack | null, b: number, out: Parse[]): void {
  const ph = b === 0x2d ? N.Sign : b === 0x30 ? N.Zero : N.Int;
  out.push(push({ k: 'num', int, ph, d: ph === N.Int ? 1 : 0 }, parent));
}

const CLOSE = -2;

/** A JSON string's text: the phase ('str' frame) after byte b at phase ph; -1: b cannot come here, CLOSE: the closing quote. */
function textPhase(ph: number, b: number): number {
  if (ph === 0) {
    if (b === Q) return CLOSE;
    if (b === BS) return 1;
    if (b >= 0x20 && b < 0x80) return 0;
    if (b >= 0xc2 && b <= 0xdf) return 11;
    if (b === 0xe0) return 14;
    if (b === 0xed) return 15;
    if (b >= 0xe1 && b <= 0xef) return 12;
    if (b === 0xf0) return 16;
    if (b === 0xf4) return 17;
    if (b >= 0xf1 && b <= 0xf3) return 13;
    return -1;
  }
  if (ph === 1) return b === 0x75 ? 2 : b < 0x80 && ESCAPED[b]! >= 0 ? 0 : -1;
  if (ph <= 5) return isHex(b) ? (ph === 5 ? 0 : ph + 1) : -1;
  if (ph >= 14) {
    // second bytes that would make an overlong form or a surrogate are refused (as UTF-8 decoders do)
    const [lo, hi, to] = UTF8_SECOND[ph - 14]!;
    return b >= lo && b <= hi ? to : -1;
  }
  return b >= 0x80 && b <= 0xbf ? (ph === 11 ? 0 : ph - 1) : -1;
}
const TEXT_PHASES = [0, 1, 2, 3, 4, 5, 11, 12, 13, 14, 15, 16, 17];

/**
 * How many code points of a string's text these bytes can read (whole or in part, up to its closing quote), from each
 * phase a string can be at: a token's possible effects on a length count (token-mask computes them once per vocabulary).
 */
export function textReads(bytes: Uint8Array): number[] {
  const out: number[] = [];
  for (const ph0 of TEXT_PHASES) {
    const c = textReadsFrom(bytes, ph0);
    if (c >= 0 && !out.includes(c)) out.push(c);
  }
  return out;
}

/** How many code points of a string's text these bytes read from phase ph0 (as textReads); -1: they are no string text from there. */
export function textReadsFrom(bytes: Uint8Array, ph0: number): number {
  let ph = ph0, c = ph0 === 0 ? 0 : 1; // a code point begun before the bytes is read in part by the first one
  for (let i = 0; i < bytes.length; i++) {
    const next = textPhase(ph, bytes[i]!);
    if (next === CLOSE) break;
    if (next < 0) return -1; // not string text from here: the token never fits, whatever the count
    if (ph === 0) c++;
    ph = next;
  }
  return c;
}

/** Whether these bytes, read as a string's text from phase ph0, reach its closing quote. */
export function textCloses(bytes: Uint8Array, ph0: number): boolean {
  let ph = ph0;
  for (let i = 0; i < bytes.length; i++) {
    const next = textPhase(ph, bytes[i]!);
    if (next === CLOSE) return true;
    if (next < 0) return false;
    ph = next;
  }
  return false;
}

/** Props the next key may name: from i up to and including the first required one. */
function candidates(node: ObjNode, i: number): number[] {
  const c: number[] = [];
  for (let j = i; j < node.props.length; j++) { c.push(j); if (node.props[j]!.required) break; }
  return c;
}
const mayClose = (node: ObjNode, i: number): boolean => node.props.slice(i).every((p) => !p.required);

function step(st: Parse, b: number, out: Parse[]): void {
  if (st === null) return;
  const f = st.f;
  const p = st.p;
  switch (f.k) {
    case 'val':
      if (f.ws && b === SP) out.push(push({ k: 'val', node: f.node }, p));
      else begin(f.node, p, b, out);
      return;
    case 'str': {
      const next = textPhase(f.ph, b);
      if (next === CLOSE) out.push(done(p));
      else if (next >= 0) out.push(next === f.ph ? st : push({ k: 'str', ph: next }, p));
      return;
    }
    case 'rstr': stepDfaString(st, b, out); return;
    case 'rnum': {
      const dfa = f.node.dfa!;
      const q = dfa.next(f.q, b);
      if (q >= 0) out.push(push({ ...f, q }, p));
      if (dfa.accept[f.q]) step(done(p), b, out);
      return;
    }
    case 'num': {
      const { int, ph, d } = f;
      let nph = -1;
      let nd = 0;
      if (isDigit(b)) {
        if (ph === N.Sign) nph = b === 0x30 ? N.Zero : N.Int, nd = 1;
        else if ((ph === N.Int || ph === N.Frac || ph === N.Exp) && d < (ph === N.Exp ? MAX_EXP_DIGITS : MAX_DIGITS)) nph = ph, nd = d + 1;
        else if (ph === N.Dot) nph = N.Frac, nd = 1;
        else if (ph === N.E || ph === N.ESign) nph = N.Exp, nd = 1;
      } else if (!int && b === 0x2e && (ph === N.Zero || ph === N.Int)) nph = N.Dot;
      else if (!int && (b === 0x65 || b === 0x45) && (ph === N.Zero || ph === N.Int || ph === N.Frac)) nph = N.E;
      else if ((b === 0x2b || b === 0x2d) && ph === N.E) nph = N.ESign;
      if (nph >= 0) out.push(push({ k: 'num', int, ph: nph, d: nd }, p));
      if (NUM_COMPLETE[ph]) step(done(p), b, out);
      return;
    }
    case 'lit': {
      const texts = f.node.texts;
      const alive = f.alive.filter((i) => texts[i]![f.pos] === b);
      if (alive.length > 0) out.push(push({ ...f, alive, pos: f.pos + 1 }, p));
      if (f.alive.some((i) => texts[i]!.length === f.pos)) step(done(p), b, out);
      return;
    }
    case 'obj': {
      const node = f.node;
      switch (f.ph) {
        case 'open': case 'comma': case 'commaSp': case 'next':
          if (f.ph === 'comma' && b === SP) out.push(push({ ...f, ph: 'commaSp' }, p));
          else if (f.ph !== 'next' && b === Q) {
            const alive = candidates(node, f.i);
            if (alive.length > 0) out.push(push({ ...f, ph: 'key', alive, pos: 0 }, p));
          } else if (f.ph === 'next' && b === COMMA) {
            if (candidates(node, f.i).length > 0) out.push(push({ ...f, ph: 'comma' }, p));
          }
          if ((f.ph === 'open' || f.ph === 'next') && b === RB && mayClose(node, f.i)) out.push(done(p));
          return;
        case 'key': {
          // a key's escaped bytes may hold '"' (after '\'): the key goes on where one does, and ends on '"' where one is whole
          const alive = f.alive.filter((j) => node.props[j]!.key[f.pos] === b);
          if (alive.length > 0) out.push(push({ ...f, alive, pos: f.pos + 1 }, p));
          if (b === Q) {
            const j = f.alive.find((j) => node.props[j]!.key.length === f.pos);
            if (j !== undefined) out.push(push({ ...f, ph: 'colon', i: j + 1, alive: [], pos: 0 }, p));
          }
          return;
        }
        case 'colon':
          if (b === COLON) out.push(push({ k: 'val', node: node.props[f.i - 1]!.node, ws: true }, push({ ...f, ph: 'value' }, p)));
          return;
        default: return;
      }
    }
    case 'aobj':
      switch (f.ph) {
        case 'open': case 'comma': case 'commaSp':
          if (f.ph === 'comma' && b === SP) out.push(push({ ...f, ph: 'commaSp' }, p));
          else if (b === Q) out.push(push({ k: 'str', ph: 0 }, push({ ...f, ph: 'key' }, p)));
          else if (f.ph === 'open' && b === RB) out.push(done(p));
          return;
        case 'colon':
          if (b === COLON) out.push(push({ k: 'val', node: f.v, ws: true }, push({ ...f, ph: 'value' }, p)));
          return;
        case 'next':
          if (b === COMMA) out.push(push({ ...f, ph: 'comma' }, p));
          else if (b === RB) out.push(done(p));
          return;
        default: return;
      }
    case 'arr': {
      const node = f.node;
      const min = node?.min ?? 0;
      const max = node?.max ?? Infinity;
      if (f.ph === 'open') {
        if (b === RS && min === 0) out.push(done(p));
        else if (max > 0) begin(node?.items ?? ANY, push({ ...f, ph: 'value' }, p), b, out);
      } else if (f.ph === 'next') {
        if (b === COMMA && f.n < max) out.push(push({ k: 'val', node: node?.items ?? ANY, ws: true }, push({ ...f, ph: 'value' }, p)));
        else if (b === RS && f.n >= min) out.push(done(p));
      }
      return;
    }
    case 'calls': {
      if (f.ph !== 'next' || f.n >= f.node.max) return;
      const sep = f.node.sep;
      if (f.pos < sep.length) { if (sep[f.pos] === b) out.push(push({ ...f, pos: f.pos + 1 }, p)); }
      else begin(f.node.item, push({ ...f, ph: 'value', pos: 0 }, p), b, out);
      return;
    }
  }
}

const ESCAPED = new Int32Array(128).fill(-1); // after '\\': the character each escape letter stands for (-1: none)
for (const [c, x] of [[0x22, 0x22], [0x5c, 0x5c], [0x2f, 0x2f], [0x62, 8], [0x66, 12], [0x6e, 10], [0x72, 13], [0x74, 9]] as const) ESCAPED[c] = x;
const hexValue = (b: number): number => (b <= 0x39 ? b - 0x30 : (b | 0x20) - 0x57);

/**
 * One byte of a string its DFA reads: the DFA takes the decoded code points (an escape is the character it stands for),
 * and a partial one (UTF-8 lead or continuation bytes, \\u hex digits) is kept only while some code point it can still
 * become leads on, so the string can always go on or end. With node.lens the code points are counted beside the DFA
 * (JSON Schema's length: an escape is one, a character beyond the BMP is one): a code point leads on only to a state
 * from which a string can still end with min ≤ length ≤ max, and the closing quote needs length ≥ min.
 *
 * Runs once per token byte of every mask walk: no closures or other allocation beyond the new frame (none when the DFA
 * stays in its state and no length is counted), so a format / pattern string costs a mask miss about what a plain
 * string does.
 */
function stepDfaString(st: Stack, b: number, out: Parse[]): void {
  const f = st.f as Extract<Frame, { k: 'rstr' }>;
  const node = f.node;
  const dfa = node.dfa!, lens = node.lens;
  const ph = f.ph, q = f.q;
  let c = -1; // a whole code point read: the DFA takes it
  let nph = -1, ncp = 0, lo = 0, hi = 0; // or a partial one (phase nph, value so far ncp), kept while [lo, hi] leads on
  if (ph === 0) {
    if (b === Q) { if (dfa.accept[q] && f.n >= node.min) out.push(done(st.p)); return; }
    if (b === BS) nph = 1, hi = 0xffff; // every escape is a BMP character
    else if (b >= 0x20 && b < 0x80) c = b;
    // a UTF-8 lead: the code points its continuation bytes can still make (overlong forms and surrogates excluded)
    else if (b >= 0xc2 && b <= 0xdf) nph = 11, ncp = b & 0x1f, lo = Math.max(0x80, ncp * 64), hi = ncp * 64 + 63;
    else if (b === 0xe0) nph = 14, lo = 0x800, hi = 0xfff;
    else if (b === 0xed) nph = 15, ncp = 0xd, lo = 0xd000, hi = 0xdfff;
    else if (b >= 0xe1 && b <= 0xef) nph = 12, ncp = b & 0x0f, lo = ncp * 4096, hi = ncp * 4096 + 4095;
    else if (b === 0xf0) nph = 16, lo = 0x10000, hi = 0x3ffff;
    else if (b === 0xf4) nph = 17, ncp = 4, lo = 0x100000, hi = 0x13ffff;
    else if (b >= 0xf1 && b <= 0xf3) nph = 13, ncp = b & 0x07, lo = ncp * 262144, hi = ncp * 262144 + 262143;
    else return;
  } else if (ph === 1) {
    if (b === 0x75) nph = 2, hi = 0xffff; // \u and 4 hex digits
    else if (b < 0x80 && ESCAPED[b]! >= 0) c = ESCAPED[b]!;
    else return;
  } else if (ph <= 5) {
    if (!isHex(b)) return;
    const x = f.cp * 16 + hexValue(b);
    if (ph === 5) c = x; // a surrogate has no transition: a lone one never decodes
    else { const scale = 16 ** (5 - ph); nph = ph + 1, ncp = x, lo = x * scale, hi = (x + 1) * scale - 1; }
  } else {
    let left: number; // continuation bytes after this one
    if (ph >= 14) {
      const second = UTF8_SECOND[ph - 14]!;
      if (b < second[0] || b > second[1]) return;
      left = second[2] - 10;
    } else {
      if (b < 0x80 || b > 0xbf) return;
      left = ph - 11;
    }
    const x = f.cp * 64 + (b & 0x3f);
    if (left === 0) c = x;
    else { const scale = 64 ** left; nph = left + 10, ncp = x, lo = x * scale, hi = (x + 1) * scale - 1; }
  }
  if (c >= 0) {
    const nq = dfa.next(q, c);
    if (nq < 0) return;
    const n = lens !== undefined && (f.n < node.min || node.max < Infinity) ? f.n + 1 : f.n;
    if (lens === undefined || lens.live(nq, n, node.min, node.max)) out.push(nq === q && ph === 0 && n === f.n ? st : push({ k: 'rstr', node, q: nq, ph: 0, cp: 0, n }, st.p));
  } else if (lens === undefined ? dfa.overlaps(q, lo, hi) : leadsOn(node, q, f.n + 1, lo, hi)) out.push(push({ k: 'rstr', node, q, ph: nph, cp: ncp, n: f.n }, st.p));
}

/** Whether some code point in [a, b] leads from q to a state where a string of n code points can still end in bounds. */
function leadsOn(node: StrNode, q: number, n: number, a: number, b: number): boolean {
  const dfa = node.dfa!, lens = node.lens!;
  const lo = dfa.lo[q]!, hi = dfa.hi[q]!, to = dfa.to[q]!;
  for (let i = 0; i < lo.length; i++) if (lo[i]! <= b && hi[i]! >= a && lens.live(to[i]!, n, node.min, node.max)) return true;
  return false;
}

function canFinish(st: Parse): boolean {
  if (st === null) return true;
  const f = st.f;
  if (f.k === 'num') return NUM_COMPLETE[f.ph]! && canFinish(done(st.p));
  if (f.k === 'rnum') return f.node.dfa!.accept[f.q]! && canFinish(done(st.p));
  if (f.k === 'lit') return f.alive.some((i) => f.node.texts[i]!.length === f.pos) && canFinish(done(st.p));
  if (f.k === 'calls') return f.ph === 'next' && f.pos === 0 && canFinish(st.p);
  return false;
}

function frameKey(f: Frame): string {
  switch (f.k) {
    case 'val': return `v${f.node.id}${f.ws ? 'w' : ''}`;
    case 'str': return `s${f.ph}`;
    case 'num': return `n${f.int ? 'i' : 'f'}${f.ph}.${f.d}`;
    case 'rstr': return `x${f.node.id}.${f.q}.${f.ph}${f.ph === 0 ? '' : `.${f.cp}`}${f.node.lens ? `:${f.n}` : ''}`;
    case 'rnum': return `m${f.node.id}.${f.q}`;
    case 'lit': return `l${f.node.id}.${f.pos}.${f.alive.join(',')}`;
    case 'obj': return `o${f.node.id}${f.ph}${f.i}${f.ph === 'key' ? `.${f.pos}.${f.alive.join(',')}` : ''}`;
    case 'aobj': return `a${f.v.id}${f.ph}`;
    case 'arr': return `r${f.node?.id ?? 'any'}${f.ph}${f.node && (f.node.min > 0 || f.node.max < Infinity) ? f.n : ''}`;
    case 'calls': return `c${f.node.id}${f.ph}${f.pos}${f.node.max < Infinity ? `.${f.n}` : ''}`;
  }
}

function stackKey(st: Parse): string {
  if (st === null) return '$';
  return (st.key ??= `${frameKey(st.f)}/${stackKey(st.p)}`);
}

/** The most parses a state follows at once (an ambiguous schema's first ones are kept past it). */
export const MAX_PARSES = 4096;

/** The JSON matcher of one compiled schema. */
export class JsonGrammar implements ByteGrammar<JsonState> {
  readonly start: JsonState;
  constructor(readonly root: Node) {
    this.start = [push({ k: 'val', node: root }, null)];
  }
  step(s: JsonState, byte: number): JsonState | null {
    const out: Parse[] = [];
    for (const st of s) step(st, byte, out);
    if (out.length <= 1) return out.length === 0 ? null : out;
    const seen = new Map<string, Parse>();
    for (const st of out) seen.set(stackKey(st), st);
    const parses = [...seen.values()];
    // each parse is a valid reading of the bytes so far that can still complete, so keeping the first MAX_PARSES keeps
    // every output valid; without a bound, a schema ambiguous at every level ({anyOf: [X, {items: X}]} nested k deep
    // through $refs) read '[' n times with C(k, n) parses
    if (parses.length > MAX_PARSES) parses.length = MAX_PARSES;
    return parses;
  }
  accepts(s: JsonState): boolean { return s.some(canFinish); }
  key(s: JsonState): string { return s.length === 1 ? stackKey(s[0]!) : s.map(stackKey).sort().join('|'); }

  /**
   * The state with each length-counted string's count moved to the canonical one of those its automaton state answers
   * alike to for tokens that read `reads` code points (ContinuationLengths.alike): the same tokens fit at both, since
   * below the string nothing depends on its length. Inside a long bounded string (maxLength 200, HttpUrl's 2083) most
   * counts then share a mask instead of each being a miss.
   */
  alike(s: JsonState, reads: Uint8Array): JsonState {
    let out: Parse[] | null = null;
    for (let i = 0; i < s.length; i++) {
      const st = s[i]!;
      if (st === null || st.f.k !== 'rstr' || st.f.node.lens === undefined) continue;
      const f = st.f, node = f.node;
      const n = node.lens!.alike(f.n, node.min, node.max, reads);
      if (n !== f.n) (out ??= [...s])[i] = push({ ...f, n }, st.p);
    }
    return out ?? s;
  }
  maskKey(s: JsonState, reads: Uint8Array): string { return this.key(this.alike(s, reads)); }

  /**
   * One parse inside a length-counted string (reach: the most code points a token reads):
   *  - past minLength with fewer than reach + deepest code points left: the same state at max(minLength, maxLength -
   *    reach - deepest) code points, whose mask is the one alike() gives every count further from the bound;
   *  - below minLength at a count alike() keeps as its own (the quote or the lengths' cycle within reach), where
   *    maxLength - minLength ≥ overshoot: the same state at minLength. Where maxLength - minLength < reach + slack, that
   *    state lacks tokens this count takes (those reading more than the gap), so the far state is the same one in the
   *    string without its maxLength (unbounded()): one walk for every count below minLength instead of one each, where
   *    that pays (unboundedPays()), else each count walks.
   * slack: the deepest shortest ending among the automaton states reachable from this one.
   */
  nearBound(s: JsonState, reads: Uint8Array): NearBound<JsonState> | null {
    const st = s.length === 1 ? s[0]! : null;
    if (st === null || st.f.k !== 'rstr') return null;
    const f = st.f, node = f.node, lens = node.lens;
    if (lens === undefined) return null;
    const reach = reads.length - 1;
    const slack = lens.deepestFrom[f.q]!;
    if (f.n < node.min) {
      if (f.n + reach < node.min && node.min - f.n - reach >= lens.j) return null; // alike() shares this count's mask
      const gap = node.max - node.min;
      if (lens.overshoot === Infinity || gap < lens.overshoot) return null;
      let far = node;
      if (gap < reach + slack) {
        if (!unboundedPays(node, reach)) return null;
        far = unbounded(node);
      }
      return { far: [push({ ...f, node: far, n: node.min }, st.p)], ph: f.ph, left: node.max - f.n, need: node.min - f.n, slack };
    }
    if (node.max === Infinity) return null;
    const far = Math.max(node.min, node.max - reach - lens.deepest);
    if (f.n <= far) return null;
    return { far: [push({ ...f, n: far }, st.p)], ph: f.ph, left: node.max - f.n, need: 0, slack };
  }
}

/**
 * Whether one walk of the unbounded string costs less than a walk per count below minLength within reach: a walk with
 * L code points left costs about min(L, 16) / 16 of an unbounded one (Llama 3.1's vocabulary: a whole string's masks
 * walked count by count took 21 ms at 2..2, 81 at 4..4, 324 at 8..8; one unbounded walk ~100), so it pays from about
 * 1.25 walks' worth (5..5 level, 6..6 1.6× faster, 8..16 3.6×: bench/mask-near-bound.ts).
 */
function unboundedPays(node: StrNode, reach: number): boolean {
  let walks = 0;
  for (let n = Math.max(0, node.min - reach); n < node.min; n++) walks += Math.min(node.max - n, 16) / 16;
  return walks >= 1.25;
}

const unboundedNodes = new WeakMap<StrNode, StrNode>();

/**
 * A length-counted string node without its maxLength, for nearBound()'s far state below minLength: at minLength it takes
 * every token the node takes at any count below it but for the quote (the same automaton, live there wherever it is
 * live with a maxLength: ContinuationLengths.shortest). Its id (-id - 1) keeps its states' keys apart from the node's.
 */
function unbounded(node: StrNode): StrNode {
  let u = unboundedNodes.get(node);
  if (!u) unboundedNodes.set(node, u = { ...node, id: -node.id - 1, max: Infinity });
  return u;
}
