// Writes the embedder's contrastive training pairs (JSONL {"query","positive"[,"negative"]}) from the training side of
// the split in bench/retrieval-data.ts: Brown inverse cloze (sentence → rest of its passage), WordNet (definition →
// example) and WordNet lemma pairs (definition → the synset's words, also for synsets without examples). With
// --hard-negatives each pair gets a BM25-mined negative: a highly ranked training text that is not the pair's own.
// Usage: node --import tsx scripts/make-embed-pairs.ts [OUT.jsonl] [--brown N] [--brown-per-passage K] [--wordnet N]
//        [--lemmas N] [--hard-negatives true|false] [--lemma-negatives true|false] [--source-batches B] [--seed S]
//        [--recipe v2|v3]
// Deterministic: the same options give the same file. Evaluation texts never appear (held out by file / by synset).
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { parseArgs } from 'node:util';
import { brownRetrieval, synsetHeldOut, synsetLines, wordnetRetrieval, type Pair } from '../bench/retrieval-data.js';
import { mix32, Rng } from '../src/train/rng.js';
import { packageRoot } from '../src/model/builtin.js';

export interface PairsOptions {
  readonly brown: number; readonly brownPerPassage: number; readonly wordnet: number; readonly lemmas: number;
  readonly hardNegatives: boolean; readonly seed: number;
  /** lemma pairs get a mined negative too: the word list of another definition that BM25 ranks high for the query */
  readonly lemmaNegatives?: boolean;
  /** write the pairs as runs of this many from one source (runs in a seeded order), so that a training step of that
   * batch size (`floe finetune --no-shuffle`) takes its in-batch negatives from the same kind of text; 0: one shuffle */
  readonly sourceBatches?: number;
}
/** v2's pairs (models/floe-embed v2 trained on these). */
export const DEFAULT_PAIRS: PairsOptions = { brown: 16216, brownPerPassage: 2, wordnet: 40268, lemmas: 12000, hardNegatives: true, seed: 1 };
/** v3's pairs: every training-side pair of the three sources (4 cloze pairs per Brown passage, every training synset's
 * word list) and a mined negative for every pair, lemma pairs included; another seed, so the Brown cloze sentences differ. */
export const V3_PAIRS: PairsOptions = { brown: Infinity, brownPerPassage: 4, wordnet: Infinity, lemmas: Infinity, hardNegatives: true, lemmaNegatives: true, sourceBatches: 64, seed: 2 };

export interface TrainPair extends Pair { readonly negative?: string }

const terms = (t: string) => t.toLowerCase().match(/[a-z0-9]+/g) ?? [];

/** Okapi BM25 (k1 1.2, b 0.75) over an inverted index: the top `n` document indices for a text. */
export class Bm25Index {
  private readonly post = new Map<string, { d: Int32Array | number[]; f: number[] }>();
  private readonly len: Float64Array;
  private readonly avg: number;
  constructor(private readonly docs: readonly string[]) {
    this.len = new Float64Array(docs.length);
    docs.forEach((doc, j) => {
      const tf = new Map<string, number>();
      const ws = terms(doc);
      for (const w of ws) tf.set(w, (tf.get(w) ?? 0) + 1);
      this.len[j] = ws.length;
      for (const [w, f] of tf) { let p = this.post.get(w); if (!p) this.post.set(w, p = { d: [], f: [] }); (p.d as number[]).push(j); p.f.push(f); }
    });
    this.avg = this.len.reduce((a, b) => a + b, 0) / Math.max(1, docs.length);
  }
  private scores = new Float64Array(0); // (N) per-query accumulator, reused
  private touched = new Int32Array(0);
  /** The top n documents by score, ties to the lower index (the order a full sort by (score desc, index asc) gives). */
  top(text: string, n: number): number[] {
    const N = this.docs.length, k1 = 1.2, b = 0.75;
    if (this.scores.length !== N) { this.scores = new Float64Array(N); this.touched = new Int32Array(N); }
    const sc = this.scores, touched = this.touched;
    let nt = 0;
    for (const w of new Set(terms(text))) {
      const p = this.post.get(w);
      if (!p || p.d.length > N / 4) continue; // very common words rank nothing and cost the most
      const idf = Math.log(1 + (N - p.d.length + 0.5) / (p.d.length + 0.5));
      for (let i = 0; i < p.d.length; i++) {
        const j = p.d[i]!, f = p.f[i]!;
        if (sc[j] === 0) touched[nt++] = j; // every term's contribution is > 0, so 0 means untouched
        sc[j]! += idf * f * (k1 + 1) / (f + k1 * (1 - b + b * this.len[j]! / this.avg));
      }
    }
    const best: number[] = []; // up to n indices, best first
    const better = (a: number, c: number) => sc[a]! > sc[c]! || (sc[a] === sc[c] && a < c);
    for (let t = 0; t < nt; t++) {
      const j = touched[t]!;
      if (best.length === n && !better(j, best[n - 1]!)) continue;
      let k = best.length < n ? best.length : n - 1;
      while (k > 0 && better(j, best[k - 1]!)) { if (k < n) best[k] = best[k - 1]!; k--; }
      best[k] = j;
    }
    for (let t = 0; t < nt; t++) sc[touched[t]!] = 0;
    return best;
  }
}

/** Definition → "word, word" for every training synset (examples or not); held-out synsets are skipped by the same hash. */
export function lemmaPairs(): Pair[] {
  const out: Pair[] = [];
  for (const s of synsetLines()) {
    if (synsetHeldOut(s.id) || s.definition.split(/\s+/).length < 2) continue;
    out.push({ query: s.definition, positive: [...new Set(s.words)].join(', ') });
  }
  return out;
}

/** A BM25-mined negative for each pair: one of the top 10 candidates (seeded pick) among the distinct positives of
 * `all`, never a positive that `all` gives the pair's own query. */
function mine(pairs: readonly Pair[], all: readonly Pair[], r: Rng): TrainPair[] {
  const candidates = [...new Set(all.map((p) => p.positive))];
  const ownOf = new Map<string, Set<string>>();
  for (const p of all) { let s = ownOf.get(p.query); if (!s) ownOf.set(p.query, s = new Set()); s.add(p.positive); }
  const idx = new Bm25Index(candidates);
  return pairs.map((p) => {
    const own = ownOf.get(p.query)!;
    const ok = idx.top(p.query, 12).map((j) => candidates[j]!).filter((c) => !own.has(c)).slice(0, 10);
    return ok.length ? { ...p, negative: ok[r.int(ok.length)]! } : p;
  });
}

/** A seeded sample of each source's training pairs (with mined negatives when asked), interleaved in a seeded order. */
export function makePairs(o: PairsOptions = DEFAULT_PAIRS): { pairs: TrainPair[]; counts: Record<string, number> } {
  const b = brownRetrieval({ seed: o.seed, pairsPerPassage: o.brownPerPassage }).train;
  const w = wordnetRetrieval({ seed: o.seed }).train;
  const l = o.lemmas > 0 ? lemmaPairs() : [];
  const sample = <T>(a: T[], n: number, salt: number) => new Rng(mix32(o.seed, salt)).shuffle([...a]).slice(0, n);
  let bs: TrainPair[] = sample(b, o.brown, 1), ws: TrainPair[] = sample(w, o.wordnet, 2), ls: TrainPair[] = sample(l, o.lemmas, 3);
  if (o.hardNegatives) {
    // Brown: another training passage; WordNet: an example of another synset (not any example of the same definition);
    // lemma pairs: another synset's word list (lists of any synset with the same definition are the query's own)
    bs = mine(bs, b, new Rng(mix32(o.seed, 0x4e1)));
    ws = mine(ws, w, new Rng(mix32(o.seed, 0x4e2)));
    if (o.lemmaNegatives) ls = mine(ls, l, new Rng(mix32(o.seed, 0x4e3)));
  }
  const B = o.sourceBatches ?? 0;
  const pairs = B > 0 ? sourceRuns([bs, ws, ls], B, new Rng(mix32(o.seed, 0x92))) : new Rng(mix32(o.seed, 0x91)).shuffle([...bs, ...ws, ...ls]);
  return {
    pairs,
    counts: {
      written: pairs.length, brown: bs.length, wordnet: ws.length, lemmas: ls.length, withNegative: pairs.filter((p) => p.negative).length,
      brownAvailable: b.length, wordnetAvailable: w.length, lemmasAvailable: l.length,
    },
  };
}

/** Each source (already in a seeded order) cut into runs of B, the runs shuffled; a source's last, short run is dropped. */
function sourceRuns(sources: readonly TrainPair[][], B: number, r: Rng): TrainPair[] {
  const runs: TrainPair[][] = [];
  for (const src of sources) for (let i = 0; i + B <= src.length; i += B) runs.push(src.slice(i, i + B));
  return r.shuffle(runs).flat();
}

export function writePairs(file: string, o: PairsOptions = DEFAULT_PAIRS): Record<string, number> {
  const { pairs, counts } = makePairs(o);
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, pairs.map((p) => JSON.stringify(p.negative ? { query: p.query, positive: p.positive, negative: p.negative } : { query: p.query, positive: p.positive })).join('\n') + '\n');
  return counts;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values: v, positionals } = parseArgs({ allowPositionals: true, options: {
    brown: { type: 'string' }, 'brown-per-passage': { type: 'string' }, wordnet: { type: 'string' }, lemmas: { type: 'string' },
    'hard-negatives': { type: 'string' }, 'lemma-negatives': { type: 'string' }, 'source-batches': { type: 'string' }, seed: { type: 'string' }, recipe: { type: 'string' },
  } });
  const out = positionals[0] ?? join(packageRoot(), 'data', 'work', 'floe-embed', 'pairs.jsonl');
  if (v.recipe !== undefined && v.recipe !== 'v2' && v.recipe !== 'v3') throw new Error(`--recipe must be v2 or v3, got ${v.recipe}`);
  const d = v.recipe === 'v3' ? V3_PAIRS : DEFAULT_PAIRS;
  const o: PairsOptions = {
    brown: Number(v.brown ?? d.brown), brownPerPassage: Number(v['brown-per-passage'] ?? d.brownPerPassage), wordnet: Number(v.wordnet ?? d.wordnet),
    lemmas: Number(v.lemmas ?? d.lemmas), hardNegatives: (v['hard-negatives'] ?? String(d.hardNegatives)) === 'true', seed: Number(v.seed ?? d.seed),
    lemmaNegatives: (v['lemma-negatives'] ?? String(d.lemmaNegatives ?? false)) === 'true', sourceBatches: Number(v['source-batches'] ?? d.sourceBatches ?? 0),
  };
  const counts = writePairs(out, o);
  process.stderr.write(`[make-embed-pairs] ${out}: ${JSON.stringify(counts)}\n`);
}
