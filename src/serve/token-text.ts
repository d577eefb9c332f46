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

const utf8 = new TextDecoder('utf-8');

export interface TokenText {
  readonly text: string;
  readonly bytes: number[];
  readonly special: boolean;
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
    if (!this.tokenizer.isSpecial(id) && [...sym].every((c) => BYTE_OF.has(c))) {
      const bytes = [...sym].map((c) => BYTE_OF.get(c)!);
      return { text: utf8.decode(new Uint8Array(bytes)), bytes, special: false };
    }
    const special = this.tokenizer.isSpecial(id);
    const text = special ? sym : this.tokenizer.decode([id]);
    return { text, bytes: [...Buffer.from(text)], special };
  }
}
