// MinHash signatures over word shingles and an LSH index (banding) for near-duplicate detection.
//
// K hash functions, B bands of R rows (B·R = K). Two sets with Jaccard J share a band with probability
// 1 - (1 - J^R)^B; candidates are then confirmed by the signature's Jaccard estimate ≥ threshold.

import { mix32 } from '../../train/rng.js';

/** Lower-case word n-grams ("shingles") of a text, hashed to uint32. */
export function shingles(text: string, n = 3): Uint32Array {
  const words = text.toLowerCase().match(/[\p{L}\p{N}]+/gu) ?? [];
  const out = new Set<number>();
  if (words.length < n) { if (words.length) out.add(hashString(words.join(' '))); }
  else for (let i = 0; i + n <= words.length; i++) out.add(hashString(words.slice(i, i + n).join(' ')));
  return Uint32Array.from(out);
}

/** FNV-1a over UTF-16 code units, finished with mix32. */
export function hashString(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return mix32(h >>> 0);
}

export class MinHasher {
  private readonly salts: Uint32Array; // (K)
  constructor(readonly numHashes = 128, seed = 1) {
    this.salts = Uint32Array.from({ length: numHashes }, (_, i) => mix32(seed, i));
  }

  /** (K) per hash function the least hash over the set; an empty set gives all 0xffffffff. */
  signature(set: ArrayLike<number>): Uint32Array {
    const sig = new Uint32Array(this.numHashes).fill(0xffffffff);
    for (let j = 0; j < set.length; j++) {
      const x = set[j]!;
      for (let i = 0; i < this.numHashes; i++) {
        const h = mix32(x, this.salts[i]!);
        if (h < sig[i]!) sig[i] = h;
      }
    }
    return sig;
  }
}

/** Estimated Jaccard similarity: the share of equal signature entries. */
export function estimateJaccard(a: Uint32Array, b: Uint32Array): number {
  if (a.length !== b.length) throw new Error(`signatures differ in length: ${a.length} vs ${b.length}`);
  let eq = 0;
  for (let i = 0; i < a.length; i++) if (a[i] === b[i]) eq++;
  return eq / a.length;
}

/** Exact Jaccard similarity of two sets. */
export function exactJaccard(a: ArrayLike<number>, b: ArrayLike<number>): number {
  const sa = new Set(Array.from(a));
  const sb = new Set(Array.from(b));
  let inter = 0;
  for (const x of sa) if (sb.has(x)) inter++;
  const union = sa.size + sb.size - inter;
  return union === 0 ? 1 : inter / union;
}

/** Bands × rows (bands·rows = K): the most rows per band (fewest false candidates) that still makes a pair at `threshold` a candidate with probability ≥ 0.97. */
export function chooseBands(numHashes: number, threshold: number): { bands: number; rows: number } {
  let best = { bands: numHashes, rows: 1 };
  for (let rows = 1; rows <= numHashes; rows++) {
    if (numHashes % rows) continue;
    const bands = numHashes / rows;
    if (1 - (1 - threshold ** rows) ** bands >= 0.97) best = { bands, rows };
  }
  return best;
}

export interface DedupHit { readonly id: string; readonly similarity: number }

/** Near-duplicate index: add() returns the first stored item at estimated Jaccard ≥ threshold, else stores the new one. */
export class LshIndex {
  private readonly hasher: MinHasher;
  readonly bands: number;
  readonly rows: number;
  private readonly buckets: Map<string, number[]>[];
  private readonly sigs: Uint32Array[] = [];
  private readonly ids: string[] = [];
  private readonly exact = new Map<string, string>();

  constructor(readonly threshold: number, numHashes = 128, readonly shingleSize = 3, seed = 1) {
    if (!(threshold > 0 && threshold <= 1)) throw new RangeError(`dedup threshold must be in (0, 1], got ${threshold}`);
    this.hasher = new MinHasher(numHashes, seed);
    ({ bands: this.bands, rows: this.rows } = chooseBands(numHashes, threshold));
    this.buckets = Array.from({ length: this.bands }, () => new Map());
  }

  get size(): number { return this.ids.length; }

  /** The stored item this text duplicates (exactly, after whitespace / case folding, or nearly), without storing it. */
  query(text: string): DedupHit | null {
    const key = normalise(text);
    const same = this.exact.get(key);
    if (same !== undefined) return { id: same, similarity: 1 };
    return this.near(this.hasher.signature(shingles(text, this.shingleSize))).hit;
  }

  /** query(), and store the text when it is new. */
  add(id: string, text: string): DedupHit | null {
    const key = normalise(text);
    const same = this.exact.get(key);
    if (same !== undefined) return { id: same, similarity: 1 };
    const sig = this.hasher.signature(shingles(text, this.shingleSize));
    const { hit, keys } = this.near(sig);
    if (hit) return hit;
    const n = this.ids.length;
    this.ids.push(id);
    this.sigs.push(sig);
    this.exact.set(key, id);
    keys.forEach((k, b) => { const l = this.buckets[b]!.get(k); if (l) l.push(n); else this.buckets[b]!.set(k, [n]); });
    return null;
  }

  private near(sig: Uint32Array): { hit: DedupHit | null; keys: string[] } {
    const keys: string[] = [];
    let hit: DedupHit | null = null;
    const seen = new Set<number>();
    for (let b = 0; b < this.bands; b++) {
      const key = Array.prototype.join.call(sig.subarray(b * this.rows, (b + 1) * this.rows), ',');
      keys.push(key);
      if (hit) continue;
      for (const j of this.buckets[b]!.get(key) ?? []) {
        if (seen.has(j)) continue;
        seen.add(j);
        const s = estimateJaccard(sig, this.sigs[j]!);
        if (s >= this.threshold) { hit = { id: this.ids[j]!, similarity: s }; break; }
      }
    }
    return { hit, keys };
  }
}

/** Lower case, whitespace collapsed: the key of exact duplicates. */
export function normalise(text: string): string {
  return text.toLowerCase().replace(/\s+/g, ' ').trim();
}
