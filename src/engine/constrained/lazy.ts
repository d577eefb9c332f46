// Grammars for tool_choice auto with strict tools: free text unless the output opens a call (a lazy grammar), or either
// of two grammars (calls opened as the lazy grammar opens them, or the text response_format asks for).

import type { ByteGrammar, NearBound } from './grammar.js';

/** The Llama 3.1 tag that may open calls, as a special token or as text. */
export const PYTHON_TAG = '<|python_tag|>';
const TAG = new TextEncoder().encode(PYTHON_TAG);
const LB = 0x7b;
const isBlank = (b: number): boolean => b === 0x20 || b === 0x0a || b === 0x09 || b === 0x0d;

/**
 * w: only blanks so far; t: k bytes of the tag written as text; o: after the tag (blanks may come, then '{');
 * f: free text (the output opened no call), every token from here on; i: inside the calls, at `s` of `calls`.
 */
export type LazyState<S> = { readonly m: 'w' | 'o' | 'f' } | { readonly m: 't'; readonly k: number } | { readonly m: 'i'; readonly s: S };

const W = { m: 'w' } as const, O = { m: 'o' } as const, F = { m: 'f' } as const;

/**
 * Free text until the output opens a call, then `calls` for the rest of it. A call opens where, past leading blanks
 * (space, tab, newline, carriage return), the output starts with '{' or <|python_tag|> (then blanks and '{'): where
 * tool-calls.ts starts reading calls, with the tag in the text or skipped, so every output it reads as calls is a whole
 * sentence of `calls`. `freeText` false: the output must open calls (no free text, and no special token but the tag),
 * the calls side of an EitherGrammar whose other side is the text response_format asks for.
 */
export class LazyGrammar<S> implements ByteGrammar<LazyState<S>> {
  readonly start: LazyState<S> = W;
  constructor(readonly calls: ByteGrammar<S>, readonly freeText = true) {}

  step(s: LazyState<S>, b: number): LazyState<S> | null {
    switch (s.m) {
      case 'f': return F;
      case 'i': { const n = this.calls.step(s.s, b); return n === null ? null : { m: 'i', s: n }; }
      case 't':
        if (b !== TAG[s.k]) return this.freeText ? F : null; // not the tag after all: text
        return s.k + 1 === TAG.length ? O : { m: 't', k: s.k + 1 };
      case 'w': case 'o':
        if (b === LB) { const n = this.calls.step(this.calls.start, b); return n === null ? null : { m: 'i', s: n }; }
        if (isBlank(b)) return s;
        if (s.m === 'o') return null;
        return b === TAG[0] ? { m: 't', k: 1 } : this.freeText ? F : null;
    }
  }

  accepts(s: LazyState<S>): boolean { return s.m === 'i' ? this.calls.accepts(s.s) : this.freeText && s.m !== 'o'; }
  key(s: LazyState<S>): string { return s.m === 'i' ? `i${this.calls.key(s.s)}` : s.m === 't' ? `t${s.k}` : s.m; }
  maskKey(s: LazyState<S>, reads: Uint8Array): string {
    return s.m === 'i' && this.calls.maskKey ? `i${this.calls.maskKey(s.s, reads)}` : this.key(s);
  }
  free(s: LazyState<S>): boolean { return s.m === 'f'; }
  nearBound(s: LazyState<S>, reads: Uint8Array): NearBound<LazyState<S>> | null {
    const nb = s.m === 'i' ? this.calls.nearBound?.(s.s, reads) ?? null : null;
    return nb && { ...nb, far: { m: 'i', s: nb.far } };
  }
  /**
   * Before any text, the tag token opens calls; another special token (skipped in the text) leaves free text undecided,
   * and may not come where the output must open calls.
   */
  special(s: LazyState<S>, text: string): LazyState<S> | null {
    if (s.m !== 'w') return null;
    return text === PYTHON_TAG ? O : this.freeText ? s : null;
  }
}

/** Either of two grammars: the bytes so far are a prefix of a sentence of `a` or of `b`. */
export class EitherGrammar<A, B> implements ByteGrammar<readonly [A | null, B | null]> {
  readonly start: readonly [A | null, B | null];
  constructor(readonly a: ByteGrammar<A>, readonly b: ByteGrammar<B>) { this.start = [a.start, b.start]; }

  step(s: readonly [A | null, B | null], byte: number): readonly [A | null, B | null] | null {
    const x = s[0] === null ? null : this.a.step(s[0], byte);
    const y = s[1] === null ? null : this.b.step(s[1], byte);
    return x === null && y === null ? null : [x, y];
  }
  accepts(s: readonly [A | null, B | null]): boolean {
    return (s[0] !== null && this.a.accepts(s[0])) || (s[1] !== null && this.b.accepts(s[1]));
  }
  key(s: readonly [A | null, B | null]): string {
    return JSON.stringify([s[0] === null ? null : this.a.key(s[0]), s[1] === null ? null : this.b.key(s[1])]);
  }
  maskKey(s: readonly [A | null, B | null], reads: Uint8Array): string {
    const ka = s[0] === null ? null : this.a.maskKey ? this.a.maskKey(s[0], reads) : this.a.key(s[0]);
    const kb = s[1] === null ? null : this.b.maskKey ? this.b.maskKey(s[1], reads) : this.b.key(s[1]);
    return JSON.stringify([ka, kb]);
  }
  /** Where one side is gone: the other's. */
  nearBound(s: readonly [A | null, B | null], reads: Uint8Array): NearBound<readonly [A | null, B | null]> | null {
    if (s[0] === null && s[1] !== null) { const nb = this.b.nearBound?.(s[1], reads) ?? null; return nb && { ...nb, far: [null, nb.far] }; }
    if (s[1] === null && s[0] !== null) { const nb = this.a.nearBound?.(s[0], reads) ?? null; return nb && { ...nb, far: [nb.far, null] }; }
    return null;
  }
  /** Every token from here on where either side takes every one. */
  free(s: readonly [A | null, B | null]): boolean {
    return (s[0] !== null && this.a.free?.(s[0]) === true) || (s[1] !== null && this.b.free?.(s[1]) === true);
  }
  /** A special token goes on where either side takes it (the calls side's <|python_tag|>). */
  special(s: readonly [A | null, B | null], text: string): readonly [A | null, B | null] | null {
    const x = s[0] !== null && this.a.special ? this.a.special(s[0], text) : null;
    const y = s[1] !== null && this.b.special ? this.b.special(s[1], text) : null;
    return x === null && y === null ? null : [x, y];
  }
}
