// vLLM's bad_words as token id sequences. A word is banned at the start of a text and in its middle alike: it is
// encoded as written (leading blanks dropped) and, where a leading space makes other tokens (byte-level BPE's
// word-start tokens), with that space too; the engine then masks a sequence's last token wherever the output ends
// with the tokens before it (model/token-masks.ts applyMasks, which the engine's runner calls). vLLM adds the spaced
// form only when it has as many tokens as the plain one, so a word such as " afraid" (one token) beside "afraid"
// (two) is not banned mid-sentence there; floe bans every form that differs.

import type { ServeTokenizer } from './token-text.js';

export function badWordIds(tokenizer: Pick<ServeTokenizer, 'encode'>, words: readonly string[]): number[][] {
  const out: number[][] = [];
  for (const word of words) {
    const plain = tokenizer.encode(word.trimStart(), { addSpecialTokens: false });
    if (plain.length === 0) continue;
    out.push(plain);
    const spaced = tokenizer.encode(' ' + word.trimStart(), { addSpecialTokens: false });
    if (spaced.length !== plain.length || spaced.some((id, i) => id !== plain[i])) out.push(spaced);
  }
  return out;
}
