// Numeric bounds (minimum / maximum / exclusive*) → regexes over JSON number text, exact in decimal.
//
// Integers are kept within ±(2^53 - 1), where JSON parsers read them exactly. Bounded numbers are plain decimals
// (no exponent) of at most 15 digits: two such decimals never round to one double and rounding keeps their order, so
// a decimal comparison against the bound's shortest form is the double comparison a validator (ajv, JS) makes.

import { minimize, trimmed, type Dfa } from './dfa.js';
import { RegexError } from './regex.js';

export const MAX_SAFE = 2n ** 53n - 1n;
export const NUMBER_DIGITS = 15;

/** An exact non-negative decimal: integer part and fraction digits (no trailing zeros). */
export interface Dec { readonly int: bigint; readonly frac: string }
export interface Bound { readonly neg: boolean; readonly dec: Dec; readonly incl: boolean }

/** A JS number as its exact shortest decimal (sign apart). */
export function toDec(n: number): { neg: boolean; dec: Dec } {
  const m = /^(\d+)(?:\.(\d+))?(?:e([+-]\d+))?$/.exec(String(Math.abs(n)))!;
  const digits = m[1]! + (m[2] ?? '');
  const point = m[1]!.length + Number(m[3] ?? 0); // digits before the decimal point
  const int = point <= 0 ? '0' : digits.slice(0, point).padEnd(point, '0');
  const frac = point >= digits.length ? '' : (point < 0 ? '0'.repeat(-point) + digits : digits.slice(point));
  return { neg: n < 0, dec: { int: BigInt(int), frac: frac.replace(/0+$/, '') } };
}

const group = (x: string): string => (x.includes('|') ? `(?:${x})` : x);
const cls = (a: number, b: number): string => (a === b ? `${a}` : `[${a}-${b}]`);

/** Integers in [a, b] (0 ≤ a ≤ b) by digit count: [length, regex] (no leading zeros). */
function intsByLength(a: bigint, b: bigint): [number, string][] {
  const out: [number, string][] = [];
  for (let L = String(a).length; L <= String(b).length; L++) {
    const lo = a > (L === 1 ? 0n : 10n ** BigInt(L - 1)) ? a : L === 1 ? 0n : 10n ** BigInt(L - 1);
    const hi = b < 10n ** BigInt(L) - 1n ? b : 10n ** BigInt(L) - 1n;
    if (lo <= hi) out.push([L, sameLength(String(lo), String(hi))]);
  }
  return out;
}

/** Digit strings of one length between lo and hi. */
function sameLength(lo: string, hi: string): string {
  if (lo === hi) return lo;
  if (lo[0] === hi[0]) return lo[0] + group(sameLength(lo.slice(1), hi.slice(1)));
  const n = lo.length - 1;
  const rest = n > 0 ? `\\d{${n}}` : '';
  let from = Number(lo[0]), to = Number(hi[0]);
  const parts: string[] = [];
  if (!/^0*$/.test(lo.slice(1))) { parts.push(lo[0] + group(sameLength(lo.slice(1), '9'.repeat(n)))); from++; }
  const tail = /^9*$/.test(hi.slice(1)) ? null : hi[0] + group(sameLength('0'.repeat(n), hi.slice(1)));
  if (tail !== null) to--;
  if (from <= to) parts.push(cls(from, to) + rest);
  if (tail !== null) parts.push(tail);
  return parts.join('|');
}

/** JSON integers in [lo, hi] (inclusive); '' when none. */
export function integerRegex(lo: bigint, hi: bigint): string {
  const alts: string[] = [];
  if (lo < 0n && hi >= lo) alts.push(`-${group(intsByLength(hi < 0n ? -hi : 1n, -lo).map(([, r]) => r).join('|'))}`);
  if (hi >= 0n && hi >= lo) alts.push(...intsByLength(lo > 0n ? lo : 0n, hi).map(([, r]) => r));
  return alts.join('|');
}

/** Fraction digit strings s (at most r) with lo ≤ 0.s ≤ hi relative to what came before (null: no bound): empty s and non-empty ones. */
interface Frac { readonly empty: boolean; readonly ne: string | null }
function frac(lo: string | null, loIncl: boolean, hi: string | null, hiIncl: boolean, r: number): Frac {
  if (lo === '' && loIncl) lo = null;
  if (hi === '' && !hiIncl) return { empty: false, ne: null };
  const empty = lo === null;
  if (r === 0) return { empty, ne: null };
  if (lo === null && hi === null) return { empty, ne: `\\d{1,${r}}` };
  const lo0 = lo === null ? -1 : lo === '' ? 0 : Number(lo[0]);
  const hi0 = hi === null ? 10 : hi === '' ? 0 : Number(hi[0]);
  const conts: (string | null)[] = [];
  for (let d = 0; d <= 9; d++) {
    if (d < lo0 || d > hi0) { conts.push(null); continue; }
    const nlo = d > lo0 ? null : lo === '' ? '' : lo!.slice(1).replace(/0+$/, '');
    const nhi = d < hi0 ? null : hi === '' ? '' : hi!.slice(1).replace(/0+$/, '');
    const sub = frac(nlo, loIncl, nhi, hiIncl, r - 1);
    conts.push(sub.ne !== null ? (sub.empty ? `(?:${sub.ne})?` : group(sub.ne)) : sub.empty ? '' : null);
  }
  const alts: string[] = [];
  for (let d = 0; d <= 9;) {
    let e = d;
    while (e + 1 <= 9 && conts[e + 1] === conts[d]) e++;
    if (conts[d] !== null) alts.push(cls(d, e) + conts[d]);
    d = e + 1;
  }
  return { empty, ne: alts.length > 0 ? alts.join('|') : null };
}

/** Non-negative decimals in [lo, hi] (no sign, at most NUMBER_DIGITS digits). */
function decimals(lo: Dec, loIncl: boolean, hi: Dec, hiIncl: boolean): string[] {
  const alts: string[] = [];
  const piece = (int: bigint, f: Frac): void => {
    const dot = f.ne === null ? '' : f.empty ? `(?:\\.${group(f.ne)})?` : `\\.${group(f.ne)}`;
    if (f.ne !== null || f.empty) alts.push(`${int}${dot}`);
  };
  const room = (int: bigint): number => NUMBER_DIGITS - String(int).length;
  if (lo.int > hi.int) return alts;
  if (lo.int === hi.int) { piece(lo.int, frac(lo.frac, loIncl, hi.frac, hiIncl, room(lo.int))); return alts; }
  piece(lo.int, frac(lo.frac, loIncl, null, true, room(lo.int)));
  if (lo.int + 1n <= hi.int - 1n) {
    for (const [L, r] of intsByLength(lo.int + 1n, hi.int - 1n)) alts.push(group(r) + (L < NUMBER_DIGITS ? `(?:\\.\\d{1,${NUMBER_DIGITS - L}})?` : ''));
  }
  piece(hi.int, frac(null, true, hi.frac, hiIncl, room(hi.int)));
  return alts;
}

const ZERO: Dec = { int: 0n, frac: '' };
const isZero = (d: Dec): boolean => d.int === 0n && d.frac === '';

/** JSON numbers (plain decimals) between two bounds; '' when none. */
export function numberRegex(lo: Bound, hi: Bound): string {
  const alts: string[] = [];
  // negatives: -|x| with |x| between |hi| (or above 0) and |lo|
  if (lo.neg && !isZero(lo.dec)) {
    const [a, aIncl] = hi.neg && !isZero(hi.dec) ? [hi.dec, hi.incl] : [ZERO, false];
    const neg = decimals(a, aIncl, lo.dec, lo.incl);
    if (neg.length > 0) alts.push(`-${group(neg.join('|'))}`);
  }
  if (!hi.neg || isZero(hi.dec)) {
    const [a, aIncl] = lo.neg && !isZero(lo.dec) ? [ZERO, true] : [lo.dec, lo.incl];
    alts.push(...decimals(a, aIncl, hi.dec, hi.incl));
  }
  return alts.join('|');
}

const MINUS = 0x2d, DOT = 0x2e, ZERO_CP = 0x30;

/**
 * Number text whose value is a multiple of m = a·10^-s (a, s from m's shortest decimal; the text's shape is left to the
 * bounds automaton it is intersected with): N = |value|·10^s is an integer (no fraction digit but 0 past the s-th) and
 * N ≡ 0 mod a. A state is (phase, x): phase 0 in the integer part, 1 + j after '.' and j fraction digits (j ≤ s), s + 2
 * past the s-th; x what the digits so far add to N, mod a. After j fraction digits the rest of N is below 10^(s-j),
 * so an x that it can no longer bring to 0 is dropped as it is made. An integer step's trailing zeros (m = a'·10^k)
 * are read apart: the integer part ends in k zeros, and the digits before them are ≡ 0 mod a' (a state holds the zeros
 * read last, z ≤ k, and x of the digits before them), so that multipleOf 100000 takes a few states, not 10^5.
 * Minimal; throws RegexError past `limit` states.
 */
export function multipleDfa(m: number, limit: number): Dfa {
  const { dec } = toDec(m);
  const s = dec.frac.length;
  let a = dec.int * 10n ** BigInt(s) + BigInt(dec.frac || '0');
  let k = 0; // the step's trailing zeros (only an integer step has them: a fraction's last digit is not 0)
  while (a % 10n === 0n) { a /= 10n; k++; }
  const pow = (n: number): bigint => 10n ** BigInt(n);
  const ids = new Map<string, number>();
  const states: [number, bigint, number][] = [];
  const id = (phase: number, x: bigint, z = 0): number => {
    const key = `${phase}.${x}.${z}`;
    let q = ids.get(key);
    if (q === undefined) {
      if (states.length >= limit) throw new RegexError(`too complex: more than ${limit} automaton states`);
      ids.set(key, q = states.length);
      states.push([phase, x, z]);
    }
    return q;
  };
  const reachable = (j: number, x: bigint): boolean => (a - x) % a < pow(s - j); // the fraction digits left can add any y < 10^(s-j)
  const whole = (x: bigint, z: number): bigint => (z === k ? x : 1n); // N's part so far once the integer part ends (1n: no multiple)
  id(0, 0n, k); // the value 0 so far: as if its k zeros were read (the integer part '0' is a multiple)
  const trans: [number, number, number][][] = [];
  for (let q = 0; q < states.length; q++) {
    const [phase, x, z] = states[q]!;
    const out: [number, number, number][] = [];
    if (q === 0) out.push([MINUS, MINUS, 0]);
    if (phase === 0) out.push([DOT, DOT, id(1, whole(x, z))]);
    for (let d = 0; d <= 9; d++) {
      let t = -1;
      if (phase === 0 && d === 0) t = z < k ? id(0, x, z + 1) : id(0, (x * 10n) % a, k); // k zeros held: the oldest passes into x
      else if (phase === 0) t = id(0, (x * pow(z + 1) + BigInt(d) * pow(s)) % a); // the held zeros, then d
      else if (phase <= s) {
        const nx = (x + BigInt(d) * pow(s - phase)) % a;
        if (reachable(phase, nx)) t = id(phase + 1, nx);
      } else if (d === 0) t = id(s + 2, x);
      if (t >= 0) out.push([ZERO_CP + d, ZERO_CP + d, t]);
    }
    trans.push(out.sort((u, v) => u[0] - v[0]));
  }
  return minimize(trimmed(trans, states.map(([phase, x, z]) => (phase === 0 ? whole(x, z) : x) === 0n))!); // '0' is a multiple: never null
}
