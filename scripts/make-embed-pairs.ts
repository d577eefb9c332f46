// Writes the embedder's contrastive training pairs (JSONL {"query","positive"}) from the training side of the split in
// bench/retrieval-data.ts: Brown inverse cloze (sentence → rest of its passage) and WordNet (definition → example).
// Usage: node --import tsx scripts/make-embed-pairs.ts [OUT.jsonl] [--brown N] [--wordnet N] [--seed S]
// Deterministic: the same options give the same file. Evaluation texts never appear (held out by file / by synset).
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { parseArgs } from 'node:util';
import { brownRetrieval, wordnetRetrieval, type Pair } from '../bench/retrieval-data.js';
import { mix32, Rng } from '../src/train/rng.js';

export interface PairsOptions { readonly brown: number; readonly wordnet: number; readonly seed: number }
export const DEFAULT_PAIRS: PairsOptions = { brown: 8108, wordnet: 24000, seed: 1 }; // all Brown training passages

/** A seeded sample of each source's training pairs, interleaved in a seeded order. */
export function makePairs(o: PairsOptions = DEFAULT_PAIRS): { pairs: Pair[]; counts: Record<string, number> } {
  const b = brownRetrieval({ seed: o.seed, pairsPerPassage: 1 }).train;
  const w = wordnetRetrieval({ seed: o.seed }).train;
  const sample = (a: Pair[], n: number, salt: number) => new Rng(mix32(o.seed, salt)).shuffle([...a]).slice(0, n);
  const pairs = new Rng(mix32(o.seed, 0x91)).shuffle([...sample(b, o.brown, 1), ...sample(w, o.wordnet, 2)]);
  return { pairs, counts: { brown: Math.min(o.brown, b.length), wordnet: Math.min(o.wordnet, w.length), brownAvailable: b.length, wordnetAvailable: w.length } };
}

export function writePairs(file: string, o: PairsOptions = DEFAULT_PAIRS): Record<string, number> {
  const { pairs, counts } = makePairs(o);
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, pairs.map((p) => JSON.stringify({ query: p.query, positive: p.positive })).join('\n') + '\n');
  return counts;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values: v, positionals } = parseArgs({ allowPositionals: true, options: { brown: { type: 'string' }, wordnet: { type: 'string' }, seed: { type: 'string' } } });
  const out = positionals[0] ?? join(new URL('..', import.meta.url).pathname, 'data', 'work', 'floe-embed', 'pairs.jsonl');
  const o = { brown: Number(v.brown ?? DEFAULT_PAIRS.brown), wordnet: Number(v.wordnet ?? DEFAULT_PAIRS.wordnet), seed: Number(v.seed ?? DEFAULT_PAIRS.seed) };
  const counts = writePairs(out, o);
  process.stderr.write(`[make-embed-pairs] ${out}: ${JSON.stringify(counts)}\n`);
}
