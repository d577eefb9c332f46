// Block pool and per-request tables: reference counts, prefix hashes, LRU eviction of cached blocks, copy-on-write forks.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BlockPool, hashBlock, KvManager } from '../../src/engine/block-pool.js';
import { rand, randomPrompt } from './helpers.js';

test('pool: allocate until empty returns null (not a throw); release restores; refcounts', () => {
  const pool = new BlockPool(5, 4);
  const a = pool.allocate(3)!;
  assert.equal(new Set(a).size, 3);
  assert.equal(pool.allocate(3), null, 'no blocks is a return value');
  assert.equal(pool.numFree, 2);
  pool.ref(a[0]!);
  pool.release(a);
  assert.equal(pool.refCount[a[0]!], 1, 'a shared block survives one release');
  assert.equal(pool.numUsed, 1);
  pool.release([a[0]!]);
  assert.equal(pool.numUsed, 0);
  assert.throws(() => pool.release([a[0]!]), /not in use/);
});

test('hashBlock chains parent, tokens and adapter id', () => {
  const t = [1, 2, 3, 4];
  assert.equal(hashBlock(null, t), hashBlock(null, [...t]));
  assert.notEqual(hashBlock(null, t), hashBlock(null, [1, 2, 3, 5]));
  assert.notEqual(hashBlock(null, t), hashBlock(hashBlock(null, t), t));
  assert.notEqual(hashBlock(null, t, 0), hashBlock(null, t, 1));
  assert.notEqual(hashBlock(null, [1, 2]), hashBlock(null, [1, 2, 0]));
});

test('prefix lookup: longest cached run of full blocks, never the last token', () => {
  const L = 4;
  const kv = new KvManager(16, L);
  const p = randomPrompt(rand(1), 13);
  assert.ok(kv.allocate('a', 13));
  kv.cacheComputed('a', p, 13);
  assert.equal(kv.pool.numCached, 0, 'blocks in use are not counted as cached-free');
  // same 13 tokens: 3 full blocks exist but only floor(12 / 4) = 3 may be reused; with 12 tokens only 2
  assert.equal(kv.findCachedPrefix(p).blocks.length, 3);
  assert.equal(kv.findCachedPrefix(p.slice(0, 12)).blocks.length, 2);
  assert.deepEqual(kv.findCachedPrefix(p).blocks, kv.blockTable('a').slice(0, 3));
  // diverging in the second block: only the first is shared
  const q = [...p.slice(0, 5), (p[5]! + 1) % 256, ...p.slice(6)];
  assert.equal(kv.findCachedPrefix(q).blocks.length, 1);
  // a new request adopts the prefix: shared blocks get a second reference
  const pre = kv.findCachedPrefix(p);
  assert.ok(kv.allocate('b', 14, pre));
  assert.deepEqual(kv.blockTable('b').slice(0, 3), kv.blockTable('a').slice(0, 3));
  for (const b of kv.blockTable('a').slice(0, 3)) assert.equal(kv.pool.refCount[b], 2);
  assert.notEqual(kv.blockTable('b')[3], kv.blockTable('a')[3]);
  kv.free('a');
  kv.free('b');
  assert.equal(kv.pool.numUsed, 0);
  assert.equal(kv.pool.numCached, 3, 'released full blocks stay cached');
  assert.equal(kv.findCachedPrefix(p).blocks.length, 3);
});

test('LRU: cached free blocks are evicted least recently freed first, tails before heads; a revived block leaves the LRU', () => {
  const L = 2;
  const kv = new KvManager(6, L);
  const p1 = [10, 11, 12, 13, 14];
  const p2 = [20, 21, 22, 23, 24];
  kv.allocate('a', 5); kv.cacheComputed('a', p1, 5); // blocks 0,1 full + 2 partial
  kv.allocate('b', 5); kv.cacheComputed('b', p2, 5); // blocks 3,4 full + 5 partial
  kv.free('a');
  kv.free('b');
  assert.equal(kv.pool.numCached, 4);
  // 'a' freed first → its blocks go first, tail (partial, then block 1) before head (block 0)
  assert.ok(kv.allocate('c', 2)); // one block
  assert.deepEqual(kv.blockTable('c'), [2], 'the uncached partial tail of a is evicted first');
  assert.ok(kv.allocate('d', 2));
  assert.equal(kv.findCachedPrefix(p1).blocks.length, 1, 'a lost its second block, keeps its first');
  // revive b's prefix: it is taken out of the free list, so later allocations cannot evict it
  const pre = kv.findCachedPrefix(p2);
  assert.equal(pre.blocks.length, 2);
  assert.ok(kv.allocate('e', 7, pre)); // 2 revived + 2 fresh (block 0 of a, then b's uncached tail)
  assert.equal(kv.pool.numFree, 0);
  assert.equal(kv.findCachedPrefix(p1).blocks.length, 0, 'a fully evicted to make room');
  assert.deepEqual(kv.blockTable('e').slice(0, 2), [3, 4]);
  assert.equal(kv.allocate('f', 1), false, 'pool exhausted: false, nothing changed');
  assert.equal(kv.has('f'), false);
});

test('allocation failure changes nothing, even with a prefix to adopt', () => {
  const kv = new KvManager(3, 2);
  const p = [1, 2, 3, 4, 5];
  kv.allocate('a', 5); kv.cacheComputed('a', p, 5);
  kv.free('a');
  const pre = kv.findCachedPrefix([...p, 6, 7, 8]);
  assert.equal(pre.blocks.length, 2);
  kv.allocate('x', 2); // takes the uncached block
  const before = Array.from(kv.pool.refCount);
  assert.equal(kv.allocate('b', 8, pre), false, 'needs 2 more blocks, none left');
  assert.deepEqual(Array.from(kv.pool.refCount), before);
  assert.equal(kv.has('b'), false);
});

test('fork shares full blocks and copies a partial last block (copy-on-write)', () => {
  const L = 4;
  const kv = new KvManager(10, L);
  kv.allocate('p', 10); // blocks for 10 tokens: 2 full + 1 partial
  const copies = kv.fork('p', 'c', 10)!;
  const pt = kv.blockTable('p');
  const ct = kv.blockTable('c');
  assert.deepEqual(ct.slice(0, 2), pt.slice(0, 2));
  assert.equal(copies.length, 1);
  assert.deepEqual(copies[0], { src: pt[2], dst: ct[2] });
  assert.notEqual(ct[2], pt[2]);
  assert.equal(kv.pool.refCount[pt[0]!], 2);
  assert.equal(kv.pool.refCount[pt[2]!], 1);
  // a block-aligned fork copies nothing
  kv.allocate('q', 8);
  assert.deepEqual(kv.fork('q', 'd', 8), []);
  kv.free('p'); kv.free('c'); kv.free('q'); kv.free('d');
  assert.equal(kv.pool.numUsed, 0);
  // no block for the copy: null, nothing changed
  const small = new KvManager(2, 4);
  small.allocate('p', 6);
  assert.equal(small.fork('p', 'c', 6), null);
  assert.equal(small.pool.refCount[small.blockTable('p')[0]!], 1);
});

test('random operations keep refcounts, free and cached counts consistent with the tables', () => {
  const r = rand(99);
  const L = 4;
  const kv = new KvManager(24, L);
  const live = new Map<string, number[]>(); // id → tokens held
  let next = 0;
  const shared = randomPrompt(r, 12); // common prefix so lookups hit
  for (let op = 0; op < 400; op++) {
    const x = r();
    if (x < 0.4) {
      const id = `s${next++}`;
      const tokens = [...shared.slice(0, Math.floor(r() * 12)), ...randomPrompt(r, 1 + Math.floor(r() * 10))];
      const pre = kv.findCachedPrefix(tokens);
      if (kv.allocate(id, tokens.length, pre)) { kv.cacheComputed(id, tokens, tokens.length); live.set(id, tokens); }
      else assert.equal(kv.has(id), false);
    } else if (x < 0.6 && live.size > 0) {
      const [id, tokens] = [...live][Math.floor(r() * live.size)]!;
      tokens.push(5);
      if (kv.allocate(id, tokens.length)) kv.cacheComputed(id, tokens, tokens.length);
      else tokens.pop();
    } else if (x < 0.7 && live.size > 0) {
      const [id, tokens] = [...live][Math.floor(r() * live.size)]!;
      const child = `s${next++}`;
      if (kv.fork(id, child, tokens.length)) live.set(child, [...tokens]);
    } else if (live.size > 0) {
      const id = [...live.keys()][Math.floor(r() * live.size)]!;
      kv.free(id);
      live.delete(id);
    }
    // invariants
    const refs = new Int32Array(24);
    for (const id of live.keys()) for (const b of kv.blockTable(id)) refs[b]!++;
    assert.deepEqual(Array.from(kv.pool.refCount), Array.from(refs), `refcounts after op ${op}`);
    let free = 0, cached = 0;
    for (let b = 0; b < 24; b++) if (refs[b] === 0) { free++; if (kv.pool.hashOfBlock(b) !== null) cached++; }
    assert.equal(kv.pool.numFree, free);
    assert.equal(kv.pool.numCached, cached);
    for (const [id, tokens] of live) {
      assert.equal(kv.blockTable(id).length, Math.ceil(tokens.length / L), id);
      // a hashed block holds exactly the prefix its hash names (what prefix reuse relies on)
      let parent: string | null = null;
      for (let i = 0; i < Math.floor(tokens.length / L); i++) {
        parent = hashBlock(parent, tokens.slice(i * L, (i + 1) * L));
        const h = kv.pool.hashOfBlock(kv.blockTable(id)[i]!);
        if (h !== null) assert.equal(h, parent, `${id} block ${i}`);
      }
    }
  }
});
