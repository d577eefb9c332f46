// Token masks for constrained decoding: the tokenizer's token bytes sorted once, a prefix-sharing walk per grammar state,
// and memoized allowed-token bitsets per state key, so a state seen before costs one pass over the logits (V).
//
// V vocab (the model's logits row), W = ceil(V / 32) bitset words.

import { textCloses, textReads, textReadsFrom, type ByteGrammar, type NearBound } from './grammar.js';

/** What the masker reads of a tokenizer. */
export interface TokenVocab {
  readonly vocabSize: number;
  idToToken(id: number): string | undefined;
  isSpecial(id: number): boolean;
}

/** GPT-2 byte-level alphabet: printable bytes map to themselves, the rest to U+0100 + n. */
function byteDecoder(): Map<number, number> {
  const m = new Map<number, number>();
  let n = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    m.set(printable ? b : 256 + n++, b);
  }
  return m;
}

/** The bytes each token id writes (null: special or unknown, never produced by a constraint). */
export function tokenBytes(vocab: TokenVocab): (Uint8Array | null)[] {
  const strs: (string | undefined)[] = [];
  let sentencePiece = false;
  let byteLevel = false;
  for (let id = 0; id < vocab.vocabSize; id++) {
    const s = vocab.isSpecial(id) ? undefined : vocab.idToToken(id);
    strs.push(s);
    if (s?.includes('\u2581')) sentencePiece = true;
    if (s?.includes('\u0120')) byteLevel = true;
  }
  const dec = byteDecoder();
  const enc = new TextEncoder();
  return strs.map((s) => {
    if (s === undefined || s.length === 0) return null;
    if (byteLevel || !sentencePiece) {
      const out = new Uint8Array(s.length);
      let i = 0;
      for (const ch of s) {
        const b = dec.get(ch.codePointAt(0)!);
        if (b === undefined) return enc.encode(s); // not byte-level after all (e.g. an added plain token)
        out[i++] = b;
      }
      return out.subarray(0, i);
    }
    const hex = /^<0x([0-9A-Fa-f]{2})>$/.exec(s);
    return hex ? Uint8Array.of(parseInt(hex[1]!, 16)) : enc.encode(s.replace(/\u2581/g, ' '));
  });
}

/** Tokens sorted by bytes with the common-prefix length to the previous one: a trie flattened into one walk. */
export class TokenIndex {
  readonly ids: Int32Array; // (N) token ids in byte order
  readonly bytes: Uint8Array[]; // (N)
  readonly lcp: Int32Array; // (N) shared prefix length with the previous entry
  readonly maxLen: number;
  readonly words: number; // W
  /**
   * (reach + 1) reads[c] = 1 where some token can read exactly c code points of a JSON string's text (whole or in
   * part, from any phase of it: the token \n reads one code point where the text goes on, two right after a backslash);
   * reach, the most any token reads. What a length-bounded string's mask can depend on (JsonGrammar.maskKey).
   */
  readonly reads: Uint8Array;
  get reach(): number { return this.reads.length - 1; }

  constructor(table: readonly (Uint8Array | null)[], readonly vocabSize: number) {
    const entries: { id: number; b: Uint8Array }[] = [];
    table.forEach((b, id) => { if (b !== null && b.length > 0 && id < vocabSize) entries.push({ id, b }); });
    entries.sort((x, y) => Buffer.compare(x.b, y.b));
    this.ids = Int32Array.from(entries, (e) => e.id);
    this.bytes = entries.map((e) => e.b);
    this.lcp = new Int32Array(entries.length);
    let maxLen = 0;
    const reads: number[] = [];
    for (let i = 0; i < entries.length; i++) {
      const b = this.bytes[i]!;
      maxLen = Math.max(maxLen, b.length);
      for (const c of textReads(b)) reads[c] = 1;
      if (i === 0) continue;
      const a = this.bytes[i - 1]!;
      let l = 0;
      while (l < a.length && l < b.length && a[l] === b[l]) l++;
      this.lcp[i] = l;
    }
    this.maxLen = maxLen;
    this.reads = Uint8Array.from(reads, (x) => x ?? 0);
    this.words = Math.ceil(vocabSize / 32);
  }

  private readonly readsBy = new Map<number, TextReads>();
  /** What each token reads of a string's text from phase `ph`. */
  readsFrom(ph: number): TextReads {
    let r = this.readsBy.get(ph);
    if (r) return r;
    r = { reads: new Uint16Array(this.vocabSize).fill(0xffff), closes: new Uint8Array(this.vocabSize) };
    for (let t = 0; t < this.ids.length; t++) {
      const b = this.bytes[t]!, id = this.ids[t]!;
      const c = textReadsFrom(b, ph);
      if (c < 0) continue;
      r.reads[id] = Math.min(c, 0xfffe);
      r.closes[id] = textCloses(b, ph) ? 1 : 0;
    }
    this.readsBy.set(ph, r);
    return r;
  }

  /** Bitset (W) of the tokens whose every byte the grammar accepts from `state`. */
  allowed<S>(g: ByteGrammar<S>, state: S): Uint32Array {
    const bits = new Uint32Array(this.words);
    const states: (S | null)[] = new Array(this.maxLen + 1);
    states[0] = state;
    let valid = 0; // states[0..valid] belong to the current token's prefix
    const N = this.ids.length;
    for (let t = 0; t < N; t++) {
      const b = this.bytes[t]!;
      let d = Math.min(this.lcp[t]!, valid);
      let ok = true;
      for (; d < b.length; d++) {
        const s = g.step(states[d]!, b[d]!);
        if (s === null) { ok = false; break; }
        states[d + 1] = s;
      }
      if (ok) {
        valid = b.length;
        const id = this.ids[t]!;
        bits[id >>> 5]! |= 1 << (id & 31);
      } else {
        valid = d;
        // every following token sharing the dead prefix (d + 1 bytes) is dead too
        while (t + 1 < N && this.lcp[t + 1]! > d) t++;
      }
    }
    return bits;
  }
}

/** Per token id (V): the code points it reads of a string's text (textReadsFrom; 0xffff: none, no string text or no bytes), and 1 where it closes the string. */
export interface TextReads { readonly reads: Uint16Array; readonly closes: Uint8Array }

const MEMO_BYTES = 16 << 20; // mask memory kept per compiled constraint (1024 masks at vocab 128K, 4096 at most)

/** A state's allowed tokens: the bitset (W), and the ids themselves when few (then masking is fill + restore). */
export interface Mask { readonly bits: Uint32Array; readonly ids: Int32Array | null }

/** One grammar over one vocabulary: memoized masks per state key. Shared by every request with the same constraint. */
export class CompiledConstraint<S = unknown> {
  private readonly memo = new Map<string, Mask>();
  readonly saved: Float32Array; // (V) scratch: the allowed logits while a row is filled with -Infinity
  stats = { hits: 0, misses: 0, near: 0, belowMin: 0, stepped: 0 }; // near: misses filtered from a far mask (nearMask), not walked; belowMin: those below minLength; stepped: tokens nearMask stepped

  constructor(readonly grammar: ByteGrammar<S>, readonly index: TokenIndex, readonly table: readonly (Uint8Array | null)[], readonly eosIds: readonly number[],
    readonly specials: ReadonlyMap<number, string> = new Map()) { // special tokens (EOS aside) by id: their text, for grammar.special
    this.saved = new Float32Array(index.vocabSize);
    this.memoLimit = Math.max(64, Math.min(4096, Math.floor(MEMO_BYTES / (index.words * 4))));
  }
  private readonly memoLimit: number;

  mask(state: S): Mask {
    const key = this.grammar.maskKey ? this.grammar.maskKey(state, this.index.reads) : this.grammar.key(state);
    let m = this.memo.get(key);
    if (m) { this.stats.hits++; return m; }
    this.stats.misses++;
    const g = this.grammar;
    const near = g.nearBound?.(state, this.index.reads) ?? null;
    const bits = near ? this.nearMask(state, near) : this.index.allowed(g, state);
    if (g.special) for (const [id, text] of this.specials) if (id < this.index.vocabSize && g.special(state, text) !== null) bits[id >>> 5]! |= 1 << (id & 31);
    let n = 0;
    for (const w of bits) n += popcount(w);
    let ids: Int32Array | null = null;
    if (n <= this.index.vocabSize / 8) {
      ids = new Int32Array(n);
      let k = 0;
      for (let v = 0; v < this.index.vocabSize; v++) if ((bits[v >>> 5]! >>> (v & 31)) & 1) ids[k++] = v;
    }
    m = { bits, ids };
    if (this.memo.size >= this.memoLimit) this.memo.clear();
    this.memo.set(key, m);
    return m;
  }

  /**
   * Near a string's minLength or maxLength, where each count is a mask key of its own: the far state's mask (memoized,
   * one for every such count) filtered by the code points each token reads, rather than a walk over the vocabulary.
   * Tokens whose fit depends on where the automaton goes are stepped (none for a string without pattern or format).
   */
  private nearMask(state: S, near: NearBound<S>): Uint32Array {
    this.stats.near++;
    if (near.need > 0) this.stats.belowMin++;
    const far = this.mask(near.far).bits;
    const { reads, closes } = this.index.readsFrom(near.ph);
    const sure = near.left - near.slack;
    const bits = new Uint32Array(this.index.words);
    for (let w = 0; w < far.length; w++) {
      for (let x = far[w]! | 0; x !== 0;) {
        const low = x & -x;
        x ^= low;
        const id = (w << 5) | (31 - Math.clz32(low));
        const c = reads[id]!;
        if (c === 0xffff || (c < near.need && closes[id] === 1)) continue; // a special token (mask() adds those), the quote before minLength
        if (c <= sure) bits[w]! |= low;
        else if (c <= near.left) {
          this.stats.stepped++;
          if (this.fits(state, id)) bits[w]! |= low;
        }
      }
    }
    return bits;
  }

  /** Whether every byte of token `id` steps from `state`. */
  private fits(state: S, id: number): boolean {
    const b = this.table[id];
    if (!b) return false;
    let s: S | null = state;
    for (let i = 0; i < b.length && s !== null; i++) s = this.grammar.step(s, b[i]!);
    return s !== null;
  }

  start(): ConstraintState<S> { return new ConstraintState(this); }
}

/** One completion's position in its grammar. */
export class ConstraintState<S = unknown> {
  private state: S | null;
  private mask: Mask | null = null; // of the current state, cached until it advances
  private readonly eosSaved: Float64Array; // (eos ids) their logits before masking
  constructor(readonly c: CompiledConstraint<S>) {
    this.state = c.grammar.start;
    this.eosSaved = new Float64Array(c.eosIds.length);
  }

  get finished(): boolean { return this.state === null; }

  /** A copy to walk ahead (speculative verification) without moving this one. */
  fork(): ConstraintState<S> {
    const f = new ConstraintState(this.c);
    f.state = this.state;
    f.mask = this.mask;
    return f;
  }

  /** Set every token the grammar forbids next to -Infinity in a logits row (V); EOS only where the value is complete. */
  apply(logits: Float32Array): void {
    const V = logits.length;
    const s = this.state;
    if (s === null) { logits.fill(-Infinity); return; }
    if (this.c.grammar.free?.(s)) return;
    const mask = (this.mask ??= this.c.mask(s));
    const eosIds = this.c.eosIds;
    for (let i = 0; i < eosIds.length && i < this.eosSaved.length; i++) this.eosSaved[i] = eosIds[i]! < V ? logits[eosIds[i]!]! : -Infinity;
    let any = false;
    const ids = mask.ids;
    const bits = mask.bits;
    if (ids) {
      // few allowed: keep their logits, fill the row, put them back
      const saved = this.c.saved;
      for (let i = 0; i < ids.length; i++) saved[i] = logits[ids[i]!]!;
      logits.fill(-Infinity);
      for (let i = 0; i < ids.length; i++) logits[ids[i]!] = saved[i]!;
      any = ids.length > 0;
    } else for (let w = 0, base = 0; base < V; w++, base += 32) {
      const m = bits[w] ?? 0;
      if (m === 0xffffffff) { any = true; continue; }
      const end = Math.min(base + 32, V);
      if (m === 0) { logits.fill(-Infinity, base, end); continue; }
      any = true;
      for (let v = base; v < end; v++) if (((m >>> (v - base)) & 1) === 0) logits[v] = -Infinity;
    }
    // EOS only where the value is complete; a dead end (no token fits) may only stop
    const eos = this.c.grammar.accepts(s) || !any;
    for (let i = 0; i < eosIds.length; i++) {
      const id = eosIds[i]!;
      if (id < V) logits[id] = !eos ? -Infinity : any ? this.eosSaved[i]! : 0;
    }
  }

  /** Consume a sampled token; false if the grammar does not allow it (then the state is left unchanged). */
  advance(token: number): boolean {
    if (this.state === null) return false;
    if (this.c.eosIds.includes(token)) {
      if (!this.c.grammar.accepts(this.state)) return false;
      this.state = null;
      return true;
    }
    const g = this.c.grammar;
    if (g.free?.(this.state)) return true;
    const b = this.c.table[token];
    let s: S | null = this.state;
    if (!b) {
      const text = this.c.specials.get(token);
      s = text !== undefined && g.special ? g.special(s, text) : null;
    } else for (let i = 0; i < b.length && s !== null; i++) s = g.step(s, b[i]!);
    if (s === null) return false;
    this.state = s;
    this.mask = null;
    return true;
  }

  /** Whether the output so far is a complete value. */
  get complete(): boolean { return this.state === null || this.c.grammar.accepts(this.state); }
}

function popcount(x: number): number {
  x -= (x >>> 1) & 0x55555555;
  x = (x & 0x33333333) + ((x >>> 2) & 0x33333333);
  return (Math.imul((x + (x >>> 4)) & 0x0f0f0f0f, 0x01010101) >>> 24);
}
