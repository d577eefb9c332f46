// SentencePiece BPE tokenizer as llama.cpp runs it (llm_tokenizer_spm): score-driven bigram merges over characters.
//
// Dimension letters: V vocab.

import { Tokenizer, type DecodeOptions, type EncodeOptions, type TokenizerConfigJson, type TokenizerJson, type TokenizerOptions } from './tokenizer.js';

/** GGUF token_type values (llama.cpp's llama_token_type; sentencepiece's ModelProto.SentencePiece.Type). */
export const SpmTokenType = { NORMAL: 1, UNKNOWN: 2, CONTROL: 3, USER_DEFINED: 4, UNUSED: 5, BYTE: 6 } as const;

export interface SpmModel {
  readonly pieces: readonly string[]; // (V) token text; '▁' stands for a space
  readonly scores: ArrayLike<number>; // (V) merge priority of the piece, higher merges first
  readonly types: ArrayLike<number>; // (V) SpmTokenType
  readonly unkId: number | null;
  /** Prefix the text with a space before tokenizing (sentencepiece add_dummy_prefix, GGUF add_space_prefix). */
  readonly addSpacePrefix: boolean;
  /**
   * Where the space prefix goes. 'llama.cpp': before every text run that starts the input or follows a special
   * token (llama_vocab::impl::tokenize); 'sentencepiece': once, at the start of the input.
   */
  readonly prefixMode: 'llama.cpp' | 'sentencepiece';
  /** sentencepiece remove_extra_whitespaces: trim, and collapse runs of spaces to one (before the prefix). */
  readonly removeExtraWhitespaces?: boolean;
}

export interface SpmEncodeOptions extends EncodeOptions {
  /** Control and unknown tokens written in the text map to their ids (llama.cpp parse_special). Default true. */
  parseSpecial?: boolean;
}

const SPACE = '\u2581';
const utf8 = new TextEncoder();
const EMPTY = new Uint8Array(0);
const BYTE_PIECE = /^<0x([0-9A-Fa-f]{2})>$/;

/** Max-heap of candidate merges: higher score first, then the leftmost (llm_bigram_spm::comparator). */
class BigramQueue {
  private left = new Int32Array(64);
  private right = new Int32Array(64);
  private size = new Int32Array(64);
  private score = new Float64Array(64);
  length = 0;

  private before(i: number, j: number): boolean {
    return this.score[i]! > this.score[j]! || (this.score[i] === this.score[j] && this.left[i]! < this.left[j]!);
  }

  private swap(i: number, j: number): void {
    let t = this.left[i]!; this.left[i] = this.left[j]!; this.left[j] = t;
    t = this.right[i]!; this.right[i] = this.right[j]!; this.right[j] = t;
    t = this.size[i]!; this.size[i] = this.size[j]!; this.size[j] = t;
    const f = this.score[i]!; this.score[i] = this.score[j]!; this.score[j] = f;
  }

  push(left: number, right: number, score: number, size: number): void {
    if (this.length === this.left.length) {
      const grow = <T extends Int32Array | Float64Array>(a: T): T => { const b = new (a.constructor as new (n: number) => T)(a.length * 2); b.set(a); return b; };
      this.left = grow(this.left); this.right = grow(this.right); this.size = grow(this.size); this.score = grow(this.score);
    }
    let i = this.length++;
    this.left[i] = left; this.right[i] = right; this.score[i] = score; this.size[i] = size;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!this.before(i, p)) break;
      this.swap(i, p);
      i = p;
    }
  }

  /** Removes the top into `out` as [left, right, size]. */
  pop(out: Int32Array): void {
    out[0] = this.left[0]!; out[1] = this.right[0]!; out[2] = this.size[0]!;
    const last = --this.length;
    this.swap(0, last);
    let i = 0;
    for (;;) {
      const l = 2 * i + 1, r = l + 1;
      let m = i;
      if (l < last && this.before(l, m)) m = l;
      if (r < last && this.before(r, m)) m = r;
      if (m === i) break;
      this.swap(i, m);
      i = m;
    }
  }
}

type Fragment = string | number; // raw text, or a special token id

/** Encoder/decoder over one SentencePiece vocabulary; plain functions of the vocab, no state between calls. */
export class SpmCodec {
  readonly vocabSize: number;
  private readonly pieces: readonly string[];
  private readonly scores: ArrayLike<number>;
  private readonly types: ArrayLike<number>;
  private readonly ids = new Map<string, number>(); // piece -> id (the last id wins, as llama.cpp's token_to_id)
  private readonly byteIds: (number | null)[] = new Array<number | null>(256).fill(null);
  private readonly byteOf: Int16Array; // (V) byte value of a BYTE token, else -1
  private readonly specials: number[]; // CONTROL, USER_DEFINED, UNKNOWN ids, longest text first
  private readonly unkId: number | null;
  private readonly m: SpmModel;
  private readonly maxPieceLength: number; // longest piece in UTF-16 units: longer pairs cannot be tokens
  private readonly pieceBytes: (Uint8Array | undefined)[] = []; // (V) decode cache: UTF-8 of the piece as printed

  constructor(m: SpmModel, where: string) {
    const V = m.pieces.length;
    if (m.scores.length !== V) throw new Error(`${where}: ${m.scores.length} scores for ${V} tokens`);
    if (m.types.length !== V) throw new Error(`${where}: ${m.types.length} token types for ${V} tokens`);
    if (m.unkId !== null && (m.unkId < 0 || m.unkId >= V)) throw new Error(`${where}: unknown-token id ${m.unkId} is outside the vocabulary (size ${V})`);
    this.m = m;
    this.vocabSize = V;
    this.pieces = m.pieces;
    this.scores = m.scores;
    this.types = m.types;
    this.unkId = m.unkId;
    this.byteOf = new Int16Array(V).fill(-1);
    const specials: number[] = [];
    let maxLen = 0;
    for (let id = 0; id < V; id++) {
      const p = m.pieces[id]!;
      this.ids.set(p, id);
      if (p.length > maxLen) maxLen = p.length;
      const t = m.types[id];
      if (t === SpmTokenType.BYTE) {
        const b = BYTE_PIECE.exec(p);
        if (!b) throw new Error(`${where}: token ${id} has type BYTE but text ${JSON.stringify(p)}, expected <0xNN>`);
        this.byteOf[id] = parseInt(b[1]!, 16);
      } else if (t === SpmTokenType.CONTROL || t === SpmTokenType.USER_DEFINED || t === SpmTokenType.UNKNOWN) {
        if (p.length > 0) specials.push(id);
      }
    }
    // llama_vocab::byte_to_token: "<0xNN>", else the byte itself as a one-character token
    for (let b = 0; b < 256; b++) {
      const hex = `<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`;
      this.byteIds[b] = this.ids.get(hex) ?? (b < 128 ? this.ids.get(String.fromCharCode(b)) ?? null : null);
    }
    this.maxPieceLength = maxLen;
    const bytes = (id: number) => utf8.encode(m.pieces[id]!).length;
    this.specials = specials.sort((a, b) => bytes(b) - bytes(a)); // longest UTF-8 first, as cache_special_tokens
  }

  /** Text -> ids, without BOS/EOS (llama_vocab::impl::tokenize, LLAMA_VOCAB_TYPE_SPM, add_special = false). */
  encode(text: string, parseSpecial: boolean): number[] {
    const out: number[] = [];
    if (text.length === 0) return out;
    if (this.m.removeExtraWhitespaces) {
      text = text.replace(/ +/g, ' ').replace(/^ | $/g, '');
      if (text.length === 0) return out;
    }
    const sp = this.m.addSpacePrefix && this.m.prefixMode === 'sentencepiece';
    if (sp) text = ' ' + text;
    let prevSpecial = true; // prefix the first run
    for (const f of this.partition(text, parseSpecial)) {
      if (typeof f === 'number') {
        out.push(f);
        prevSpecial = true;
      } else {
        const prefix = this.m.addSpacePrefix && !sp && prevSpecial ? SPACE : '';
        this.mergeRun(prefix + f.replaceAll(' ', SPACE), out);
        prevSpecial = false;
      }
    }
    return out;
  }

  /** Splits the text on special tokens, longest first (tokenizer_st_partition); control/unknown only when parseSpecial. */
  private partition(text: string, parseSpecial: boolean): Fragment[] {
    let frags: Fragment[] = [text];
    for (const id of this.specials) {
      const t = this.types[id];
      if (!parseSpecial && (t === SpmTokenType.CONTROL || t === SpmTokenType.UNKNOWN)) continue;
      const s = this.pieces[id]!;
      const next: Fragment[] = [];
      for (const f of frags) {
        if (typeof f === 'number' || !f.includes(s)) { next.push(f); continue; }
        let at = 0;
        for (let k = f.indexOf(s); k >= 0; k = f.indexOf(s, at)) {
          if (k > at) next.push(f.slice(at, k));
          next.push(id);
          at = k + s.length;
        }
        if (at < f.length) next.push(f.slice(at));
      }
      frags = next;
    }
    return frags;
  }

  /** One run of escaped text -> ids (llm_tokenizer_spm_session::tokenize). */
  private mergeRun(text: string, out: number[]): void {
    // symbols: one per code point, as [start, start + len) into text, linked by prev/next
    let N = 0;
    for (let i = 0; i < text.length; N++) i += text.codePointAt(i)! > 0xffff ? 2 : 1;
    const start = new Int32Array(N); // (N)
    const len = new Int32Array(N); // (N) 0 once merged into its left neighbour
    const prev = new Int32Array(N); // (N)
    const next = new Int32Array(N); // (N) -1 at the end
    for (let i = 0, k = 0; i < text.length; k++) {
      const n = text.codePointAt(i)! > 0xffff ? 2 : 1;
      start[k] = i; len[k] = n; prev[k] = k - 1; next[k] = k + 1 < N ? k + 1 : -1;
      i += n;
    }
    const queue = new BigramQueue();
    const top = new Int32Array(3);
    const tryAdd = (l: number, r: number): void => {
      if (l < 0 || r < 0 || len[l]! + len[r]! > this.maxPieceLength) return;
      const id = this.ids.get(text.slice(start[l]!, start[l]! + len[l]! + len[r]!));
      if (id !== undefined) queue.push(l, r, this.scores[id]!, len[l]! + len[r]!);
    };
    for (let i = 1; i < N; i++) tryAdd(i - 1, i);
    while (queue.length > 0) {
      queue.pop(top);
      const l = top[0]!, r = top[1]!, size = top[2]!;
      // stale: one side was merged away since this pair was queued
      if (len[l] === 0 || len[r] === 0 || len[l]! + len[r]! !== size) continue;
      len[l] = size;
      len[r] = 0;
      next[l] = next[r]!;
      if (next[r]! >= 0) prev[next[r]!] = l;
      tryAdd(prev[l]!, l);
      tryAdd(l, next[l]!);
    }
    for (let i = 0; i !== -1 && N > 0; i = next[i]!) {
      const s = text.slice(start[i]!, start[i]! + len[i]!);
      const id = this.ids.get(s);
      if (id !== undefined) { out.push(id); continue; }
      // a merged symbol is always a token, so only single characters get here: their UTF-8 bytes
      for (const b of utf8.encode(s)) {
        const bid = this.byteIds[b] ?? this.unkId;
        if (bid === null) throw new Error(`SentencePiece: no <0x${b.toString(16).toUpperCase().padStart(2, '0')}> byte token and no unknown token for ${JSON.stringify(s)}`);
        out.push(bid);
      }
    }
  }

  /** Ids -> text (llama_detokenize, remove_special = false): the first piece loses one leading space when the prefix is on. */
  decode(ids: readonly number[], unparseSpecial: boolean): string {
    const parts: Uint8Array[] = new Array(ids.length);
    let total = 0;
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i]!;
      if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) {
        throw new Error(`decode: token id ${id} at position ${i} is not in the vocabulary (size ${this.vocabSize})`);
      }
      let b = this.bytes(id, unparseSpecial);
      if (i === 0 && this.m.addSpacePrefix && b.length > 0 && b[0] === 0x20) b = b.subarray(1); // lstrip 1 on the first piece only
      parts[i] = b;
      total += b.length;
    }
    const out = new Uint8Array(total);
    let at = 0;
    for (const b of parts) { out.set(b, at); at += b.length; }
    const text = new TextDecoder().decode(out);
    // sentencepiece with remove_extra_whitespaces drops every leading space (its encoder never produces one)
    return this.m.removeExtraWhitespaces ? text.replace(/^ +/, '') : text;
  }

  /** llama_vocab::impl::token_to_piece for SPM, as UTF-8 (one raw byte for BYTE tokens). */
  private bytes(id: number, unparseSpecial: boolean): Uint8Array {
    const t = this.types[id];
    if (t === SpmTokenType.CONTROL || t === SpmTokenType.UNKNOWN) {
      if (!unparseSpecial) return EMPTY;
    } else if (t !== SpmTokenType.USER_DEFINED && t !== SpmTokenType.NORMAL && t !== SpmTokenType.BYTE) {
      return EMPTY; // UNUSED and unknown types are suppressed like control tokens
    }
    let b = this.pieceBytes[id];
    if (b === undefined) {
      const p = this.pieces[id]!;
      b = t === SpmTokenType.BYTE ? Uint8Array.of(this.byteOf[id]!) : utf8.encode(t === SpmTokenType.NORMAL ? p.replaceAll(SPACE, ' ') : p);
      this.pieceBytes[id] = b;
    }
    return b;
  }
}

/**
 * The HF tokenizer.json for a SentencePiece vocabulary, as transformers' LlamaConverter builds it: BPE with
 * byte_fallback and merges ordered by the merged piece's score, Metaspace pre-tokenizer, a decoder that undoes it.
 * Control, user-defined and unknown tokens become added tokens. `bos`/`eos` go into the post-processor when `addBos`/`addEos`.
 * Without `withMerges` the json serves only as vocabulary (SpmTokenizer's base): no merges, built faster.
 */
export function spmTokenizerJson(m: SpmModel, bosId: number | null, eosId: number | null, addBos: boolean, addEos: boolean, withMerges = true): TokenizerJson {
  const V = m.pieces.length;
  const vocab: Record<string, number> = Object.create(null) as Record<string, number>;
  const added: NonNullable<TokenizerJson['added_tokens']> = [];
  for (let id = 0; id < V; id++) {
    const p = m.pieces[id]!;
    const t = m.types[id];
    if (t === SpmTokenType.CONTROL || t === SpmTokenType.USER_DEFINED || t === SpmTokenType.UNKNOWN) {
      added.push({ id, content: p, special: t !== SpmTokenType.USER_DEFINED, single_word: false, lstrip: false, rstrip: false, normalized: false });
    }
    if (!(p in vocab)) vocab[p] = id; // the model vocab holds every piece, added ones too (as LlamaConverter writes it)
  }
  // merges: every split of a normal piece into two vocab pieces, by the piece's score, then by the halves' ids
  const index = new Map<string, number>(Object.entries(vocab));
  const mergeL: number[] = [], mergeR: number[] = [], mergeScore: number[] = [];
  for (let id = 0; id < V && withMerges; id++) {
    if (m.types[id] !== SpmTokenType.NORMAL) continue;
    const p = m.pieces[id]!;
    for (let cut = 1; cut < p.length; cut++) {
      const c = p.charCodeAt(cut);
      if (c >= 0xdc00 && c <= 0xdfff) continue; // not between the halves of a surrogate pair
      const l = index.get(p.slice(0, cut));
      const r = l === undefined ? undefined : index.get(p.slice(cut));
      if (r !== undefined) { mergeL.push(l!); mergeR.push(r); mergeScore.push(m.scores[id]!); }
    }
  }
  const order = Array.from(mergeL, (_, i) => i);
  order.sort((a, b) => mergeScore[b]! - mergeScore[a]! || mergeL[a]! - mergeL[b]! || mergeR[a]! - mergeR[b]!);
  const merges = order.map((i) => [m.pieces[mergeL[i]!]!, m.pieces[mergeR[i]!]!]);
  const special: Record<string, unknown> = {};
  const single: unknown[] = [];
  const wrap = (id: number): void => {
    const tok = m.pieces[id]!;
    single.push({ SpecialToken: { id: tok, type_id: 0 } });
    special[tok] = { id: tok, ids: [id], tokens: [tok] };
  };
  if (addBos && bosId !== null) wrap(bosId);
  single.push({ Sequence: { id: 'A', type_id: 0 } });
  if (addEos && eosId !== null) wrap(eosId);
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: null,
    pre_tokenizer: { type: 'Metaspace', replacement: SPACE, prepend_scheme: m.addSpacePrefix ? (m.prefixMode === 'llama.cpp' ? 'always' : 'first') : 'never', split: false },
    post_processor: single.length > 1 ? { type: 'TemplateProcessing', single, pair: [], special_tokens: special } : null,
    decoder: {
      type: 'Sequence',
      decoders: [
        { type: 'Replace', pattern: { String: SPACE }, content: ' ' },
        { type: 'ByteFallback' },
        { type: 'Fuse' },
        ...(m.addSpacePrefix ? [{ type: 'Strip', content: ' ', start: 1, stop: 0 }] : []),
      ],
    },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: m.unkId === null ? null : m.pieces[m.unkId],
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: true,
      byte_fallback: true,
      ignore_merges: false,
      vocab,
      merges,
    },
  };
}

/**
 * A Tokenizer whose encode/decode run llama.cpp's SentencePiece algorithm (SpmCodec); vocabulary, special ids and
 * BOS/EOS handling come from the HF tokenizer.json built by spmTokenizerJson (without merges). Run by
 * @huggingface/tokenizers, the full json differs from llama.cpp at a leading space and after special tokens
 * (Metaspace prepends only to text not starting with '▁') and is ~10x slower on long texts, so it is not used for ids.
 */
export class SpmTokenizer extends Tokenizer {
  readonly codec: SpmCodec;
  private readonly bosPrefix: readonly number[];
  private readonly eosSuffix: readonly number[];

  constructor(m: SpmModel, where: string, json: TokenizerJson, config: TokenizerConfigJson, opts: TokenizerOptions & { addBos: boolean; addEos: boolean }) {
    super(json, config, opts);
    this.codec = new SpmCodec(m, where);
    this.bosPrefix = opts.addBos && this.bosId !== null ? [this.bosId] : [];
    const eos = this.eosToken === null ? undefined : this.tokenToId(this.eosToken);
    this.eosSuffix = opts.addEos && eos !== undefined ? [eos] : [];
  }

  /** Text -> ids; special tokens in the text map to their ids unless parseSpecial is false. */
  override encode(text: string, opts: SpmEncodeOptions = {}): number[] {
    const ids = this.codec.encode(text, opts.parseSpecial ?? true);
    if (opts.addSpecialTokens === false) return ids;
    return [...this.bosPrefix, ...ids, ...this.eosSuffix];
  }

  /** Ids -> text as llama.cpp detokenizes (special tokens written out unless skipSpecialTokens). */
  override decode(ids: readonly number[], opts: DecodeOptions = {}): string {
    return this.codec.decode(ids, !(opts.skipSpecialTokens ?? false));
  }
}
