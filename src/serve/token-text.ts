// Text and raw bytes of single tokens, for logprobs (byte-level BPE symbols map back to exact bytes).

import type { Tokenizer } from '../formats/tokenizer.js';

export type ServeTokenizer = Pick<Tokenizer, 'encode' | 'decode' | 'idToToken' | 'isSpecial' | 'bosToken' | 'eosToken'>;

/** GPT-2 byte-level alphabet: printable bytes stand for themselves, the rest shift to U+0100 onwards. */
const BYTE_OF = ((): Map<string, number> => {
  const m = new Map<string, number>();
  const printable = (b: number) => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  let next = 256;
  for (let b = 0; b < 256; b++) m.set(String.fromCharCode(printable(b) ? b : next++), b);
  return m;
})();

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

export interface TokenText {
  readonly text: string; // as logprobs show it: the decoded text, or vLLM's `bytes:\xe6\x97` when not whole UTF-8
  readonly bytes: number[]; // the token's own UTF-8 bytes (OpenAI's `bytes` field)
  readonly special: boolean;
}

/** vLLM's name for a token that is not whole UTF-8: `bytes:` then `\xNN` per byte. */
export function bytesName(bytes: readonly number[]): string {
  return 'bytes:' + bytes.map((b) => '\\x' + b.toString(16).padStart(2, '0')).join('');
}

/** The text of whole UTF-8 bytes, or null when they hold a partial character. */
function wholeText(bytes: number[]): string | null {
  try {
    return utf8.decode(new Uint8Array(bytes));
  } catch {
    return null;
  }
}

function textOf(bytes: number[]): string {
  return wholeText(bytes) ?? bytesName(bytes);
}

/**
 * Character offsets (JS string units, as OpenAI's text_offset) of successive tokens in the text they decode to:
 * a token inside a multi-byte character sits at that character's offset; the character counts once it completes.
 */
export class TextOffsets {
  private readonly dec = new TextDecoder('utf-8', { ignoreBOM: true });
  private at = 0;

  /** This token's offset; then move past what it adds to the text (nothing when it is absent from the text). */
  push(t: TokenText, inText: boolean): number {
    const at = this.at;
    if (inText) this.at += this.dec.decode(new Uint8Array(t.bytes), { stream: true }).length;
    return at;
  }
}

export class TokenTexts {
  private readonly cache = new Map<number, TokenText>();

  constructor(private readonly tokenizer: ServeTokenizer | null) {}

  get(id: number): TokenText {
    let e = this.cache.get(id);
    if (e) return e;
    e = this.compute(id);
    if (this.cache.size < 1 << 18) this.cache.set(id, e);
    return e;
  }

  text(id: number): string {
    return this.get(id).text;
  }

  private compute(id: number): TokenText {
    const sym = this.tokenizer?.idToToken(id);
    if (this.tokenizer === null || sym === undefined) {
      const text = `<token ${id}>`;
      return { text, bytes: [...Buffer.from(text)], special: false };
    }
    const special = this.tokenizer.isSpecial(id);
    // SentencePiece byte fallback first: '<0xE6>' is also spelled in byte-level symbols, where it would be 6 bytes
    const fallback = /^<0x([0-9A-Fa-f]{2})>$/.exec(sym);
    if (!special && fallback) {
      const bytes = [parseInt(fallback[1]!, 16)];
      return { text: textOf(bytes), bytes, special: false };
    }
    if (!special && [...sym].every((c) => BYTE_OF.has(c))) {
      const bytes = [...sym].map((c) => BYTE_OF.get(c)!);
      const text = wholeText(bytes);
      if (text !== null) return { text, bytes, special: false };
      // Partial UTF-8 if the tokenizer agrees (it decodes to U+FFFD); else not byte-level, e.g. SentencePiece 'é'.
      if (this.tokenizer.decode([id]).includes('\uFFFD')) return { text: bytesName(bytes), bytes, special: false };
    }
    const text = special ? sym : this.tokenizer.decode([id]);
    return { text, bytes: [...Buffer.from(text)], special };
  }
}
