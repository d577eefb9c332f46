// Paged KV block management: a pool of fixed-size blocks with reference counts, prefix hashes and an LRU of
// free-but-cached blocks, plus the per-request block tables built on it (vLLM v1's KVCacheManager).
//
// L block size (tokens per block).

import { createHash } from 'node:crypto';

/** Hash of a full block: chained on the parent's hash so equal hashes mean equal whole prefixes. */
export function hashBlock(parent: string | null, tokens: ArrayLike<number>, adapterId = 0): string {
  const h = createHash('sha256');
  h.update(parent ?? 'root');
  h.update(Int32Array.of(adapterId, tokens.length));
  h.update(Int32Array.from(tokens as ArrayLike<number>));
  return h.digest('base64');
}

/**
 * Blocks 0..numBlocks-1. A block is in use (refCount > 0) or free. Free blocks sit in an LRU queue (oldest
 * first); a free block may still hold a hashed prefix and be revived by a later lookup until the pool hands it
 * out again, at which point its hash is dropped.
 */
export class BlockPool {
  readonly refCount: Int32Array; // (numBlocks)
  private readonly hashOf: (string | null)[]; // (numBlocks) hash of a cached full block
  private readonly byHash = new Map<string, number>(); // hash → block
  private readonly free = new Map<number, true>(); // insertion-ordered LRU: first = evicted first
  private cachedFree = 0; // free blocks holding a hash

  constructor(readonly numBlocks: number, readonly blockSize: number) {
    if (!(Number.isInteger(numBlocks) && numBlocks >= 1)) throw new RangeError(`BlockPool: numBlocks must be an integer >= 1, got ${numBlocks}`);
    if (!(Number.isInteger(blockSize) && blockSize >= 1)) throw new RangeError(`BlockPool: blockSize must be an integer >= 1, got ${blockSize}`);
    this.refCount = new Int32Array(numBlocks);
    this.hashOf = new Array<string | null>(numBlocks).fill(null);
    for (let b = 0; b < numBlocks; b++) this.free.set(b, true);
  }

  get numFree(): number { return this.free.size; }
  get numUsed(): number { return this.numBlocks - this.free.size; }
  /** Free blocks that still hold a reusable prefix. */
  get numCached(): number { return this.cachedFree; }

  /** n fresh blocks (refCount 1), evicting the least recently freed; null when fewer than n are free. */
  allocate(n: number): number[] | null {
    if (n > this.free.size) return null;
    const out: number[] = [];
    for (const b of this.free.keys()) {
      if (out.length === n) break;
      out.push(b);
    }
    for (const b of out) {
      this.free.delete(b);
      const h = this.hashOf[b];
      if (h !== null) {
        if (this.byHash.get(h) === b) this.byHash.delete(h);
        this.hashOf[b] = null;
        this.cachedFree--;
      }
      this.refCount[b] = 1;
    }
    return out;
  }

  /** Another holder of a block in use, or revival of a cached free block (taken out of the LRU). */
  ref(b: number): void {
    if (this.refCount[b] === 0) {
      if (!this.free.delete(b)) throw new Error(`BlockPool.ref: block ${b} has refCount 0 but is not free`);
      if (this.hashOf[b] !== null) this.cachedFree--;
    }
    this.refCount[b]!++;
  }

  /** Drop one reference per block; blocks reaching 0 join the LRU tail in the order given. */
  release(blocks: readonly number[]): void {
    for (const b of blocks) {
      if (this.refCount[b]! <= 0) throw new Error(`BlockPool.release: block ${b} is not in use`);
      if (--this.refCount[b]! === 0) {
        this.free.set(b, true);
        if (this.hashOf[b] !== null) this.cachedFree++;
      }
    }
  }

  /** The cached block holding this prefix hash, if any (in use or free). */
  lookup(hash: string): number | null {
    return this.byHash.get(hash) ?? null;
  }

  /** Register a full, computed block under its prefix hash; a hash already cached keeps its first block. */
  cache(b: number, hash: string): void {
    if (this.hashOf[b] !== null) return;
    if (this.refCount[b] === 0) throw new Error(`BlockPool.cache: block ${b} is free; only computed blocks in use can be cached`);
    if (this.byHash.has(hash)) return;
    this.hashOf[b] = hash;
    this.byHash.set(hash, b);
  }

  hashOfBlock(b: number): string | null { return this.hashOf[b]!; }
}

/** A block copy the KV storage must perform before the next forward pass (copy-on-write at fork). */
export interface BlockCopy { readonly src: number; readonly dst: number }

interface Table {
  readonly blocks: number[]; // block table: token i lives in blocks[i / L]
  readonly hashes: string[]; // hashes of the leading full blocks that are computed and registered
}

/**
 * Per-request block tables over a BlockPool. Allocation failure is a `false` return: the scheduler decides
 * whom to preempt.
 */
export class KvManager {
  readonly pool: BlockPool;
  private readonly tables = new Map<string, Table>();

  constructor(numBlocks: number, readonly blockSize: number, readonly prefixCaching = true) {
    this.pool = new BlockPool(numBlocks, blockSize);
  }

  blockTable(id: string): readonly number[] {
    return this.tables.get(id)?.blocks ?? [];
  }

  has(id: string): boolean { return this.tables.has(id); }

  /**
   * Longest cached prefix of full blocks for `tokens`, never covering the last token (one token must be
   * computed to get logits). Returns the blocks (not yet referenced) and their hashes.
   */
  findCachedPrefix(tokens: readonly number[], adapterId = 0): { blocks: number[]; hashes: string[] } {
    const blocks: number[] = [];
    const hashes: string[] = [];
    if (!this.prefixCaching) return { blocks, hashes };
    const L = this.blockSize;
    const maxBlocks = Math.floor((tokens.length - 1) / L);
    let parent: string | null = null;
    for (let i = 0; i < maxBlocks; i++) {
      const h = hashBlock(parent, tokens.slice(i * L, (i + 1) * L), adapterId);
      const b = this.pool.lookup(h);
      if (b === null) break;
      blocks.push(b);
      hashes.push(h);
      parent = h;
    }
    return { blocks, hashes };
  }

  /**
   * Make the table of `id` hold `numTokens` tokens. For a new request, `prefix` (from findCachedPrefix) is
   * adopted first. Returns false, changing nothing, when the pool cannot supply the blocks.
   */
  allocate(id: string, numTokens: number, prefix?: { blocks: number[]; hashes: string[] }): boolean {
    let t = this.tables.get(id);
    const have = t ? t.blocks.length : 0;
    const fromPrefix = !t && prefix ? prefix.blocks : [];
    const need = Math.ceil(numTokens / this.blockSize) - have - fromPrefix.length;
    // reviving a cached free block takes it out of the free pool too
    const revived = fromPrefix.filter((b) => this.pool.refCount[b] === 0).length;
    if (need > 0 && need + revived > this.pool.numFree) return false;
    if (!t) {
      t = { blocks: [], hashes: [] };
      this.tables.set(id, t);
      for (const b of fromPrefix) this.pool.ref(b);
      t.blocks.push(...fromPrefix);
      if (prefix) t.hashes.push(...prefix.hashes.slice(0, fromPrefix.length));
    }
    if (need > 0) t.blocks.push(...this.pool.allocate(need)!);
    return true;
  }

  /** Blocks a table would still need to hold numTokens tokens. */
  blocksNeeded(id: string, numTokens: number): number {
    return Math.max(0, Math.ceil(numTokens / this.blockSize) - (this.tables.get(id)?.blocks.length ?? 0));
  }

  /** Hash and register every full block of `tokens` among the first `numComputed` (which are in the KV now). */
  cacheComputed(id: string, tokens: readonly number[], numComputed: number, adapterId = 0): void {
    if (!this.prefixCaching) return;
    const t = this.tables.get(id);
    if (!t) return;
    const L = this.blockSize;
    const full = Math.floor(numComputed / L);
    for (let i = t.hashes.length; i < full; i++) {
      const h = hashBlock(i === 0 ? null : t.hashes[i - 1]!, tokens.slice(i * L, (i + 1) * L), adapterId);
      this.pool.cache(t.blocks[i]!, h);
      t.hashes.push(h);
    }
  }

  /**
   * New table `dst` sharing the first ceil(numTokens / L) blocks of `src`. A partially filled last block is
   * copied (copy-on-write: both will append to it), so the caller must apply the returned copy to the KV
   * storage. Returns null, changing nothing, when no block is free for the copy.
   */
  fork(src: string, dst: string, numTokens: number): BlockCopy[] | null {
    const s = this.tables.get(src);
    if (!s) throw new Error(`KvManager.fork: no table for ${src}`);
    if (this.tables.has(dst)) throw new Error(`KvManager.fork: table ${dst} exists`);
    const L = this.blockSize;
    const used = Math.ceil(numTokens / L);
    const partial = numTokens % L !== 0;
    const shared = s.blocks.slice(0, partial ? used - 1 : used);
    const copies: BlockCopy[] = [];
    const blocks = [...shared];
    if (partial) {
      const fresh = this.pool.allocate(1);
      if (!fresh) return null;
      copies.push({ src: s.blocks[used - 1]!, dst: fresh[0]! });
      blocks.push(fresh[0]!);
    }
    for (const b of shared) this.pool.ref(b);
    this.tables.set(dst, { blocks, hashes: s.hashes.slice(0, Math.min(s.hashes.length, shared.length)) });
    return copies;
  }

  /** Release a request's blocks; the tail goes to the LRU first so it is evicted before the shared head. */
  free(id: string): void {
    const t = this.tables.get(id);
    if (!t) return;
    this.tables.delete(id);
    this.pool.release([...t.blocks].reverse());
  }
}
