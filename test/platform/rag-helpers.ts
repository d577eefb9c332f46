// RAG test helpers: the built-in model's real tokenizer, a feature-hashing bag-of-tokens embedder on it (a stand-in
// with the RagEmbedder shape; the trained embedder is tested by its own suite), random texts.

import { loadTokenizer, type Tokenizer } from '../../src/formats/tokenizer.js';
import type { RagEmbedder } from '../../src/platform/rag/embedder.js';
import { repoPath } from '../repo.js';

export const BROWN = repoPath('models/floe-brown/');

export async function brownTokenizer(): Promise<Tokenizer> {
  const t = await loadTokenizer(BROWN);
  if (!t) throw new Error('models/floe-brown has no tokenizer');
  return t;
}

/** Unit vector of hashed token counts (dim D): texts sharing tokens score higher; deterministic. */
export function hashEmbedder(tok: Tokenizer, dim = 64, maxTokens = 128, name = 'test-hash'): RagEmbedder & { calls: number } {
  const e = {
    name, dim, maxTokens, calls: 0,
    countTokens: (text: string) => tok.encode(text).length,
    embed(texts: readonly string[]): Float32Array[] {
      e.calls++;
      return texts.map((t) => {
        const v = new Float32Array(dim);
        for (const id of tok.encode(t, { addSpecialTokens: false })) v[(Math.imul(id, 2654435761) >>> 0) % dim]! += 1;
        let n = 0;
        for (const x of v) n += x * x;
        n = Math.sqrt(n) || 1;
        for (let i = 0; i < dim; i++) v[i] = v[i]! / n;
        return v;
      });
    },
  };
  return e;
}

export { rng } from '../formats/fixtures.js'; // seeded PRNG (mulberry32)

const WORDS = ('the a of and to in is was he for it with as his on be at by had not are but from or have an they which one you were her all she there ' +
  'would their we him been has when who will more no if out so said what up its about into than them can only other new some could time these ' +
  'two may then do first any my now such like our over man me even most made after also did many before must through back years where much your ' +
  'way well down should because each just those people how too little state good very make world still own see men work long get here between both ' +
  'life being under never day same another know while last might us great old year off come since against go came right used take three').split(' ');

/** Random prose: paragraphs of sentences of common words, sometimes an over-long "word" or odd whitespace. */
export function randomText(r: () => number, paragraphs: number): string {
  const paras: string[] = [];
  for (let p = 0; p < paragraphs; p++) {
    const sents: string[] = [];
    const ns = 1 + Math.floor(r() * 8);
    for (let s = 0; s < ns; s++) {
      const nw = 1 + Math.floor(r() * (r() < 0.1 ? 120 : 25));
      const ws: string[] = [];
      for (let w = 0; w < nw; w++) {
        if (r() < 0.01) ws.push('x'.repeat(50 + Math.floor(r() * 400)) + 'é😀');
        else ws.push(WORDS[Math.floor(r() * WORDS.length)]!);
      }
      const sent = ws.join(r() < 0.05 ? '  ' : ' ');
      sents.push(sent[0]!.toUpperCase() + sent.slice(1) + (r() < 0.8 ? '.' : '?'));
    }
    paras.push(sents.join(r() < 0.1 ? '\n' : ' '));
  }
  return paras.join(r() < 0.5 ? '\n\n' : '\n \n\n');
}
