// Batch invariance: a forward over k + 1 new positions gives bitwise the logits of k + 1 one-token steps (what
// makes speculative greedy decoding token-exact), on random small Llama models, native backend, 1 and 2 threads.
//
// D hidden, H heads, K kv heads, E head dim, F ffn hidden, V vocab, G = H / K.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { KvDType } from '../../src/backend/backend.js';
import { loadNativeBackend, nativeCounters } from '../../src/backend/native.js';
import { selectBackend } from '../../src/backend/select.js';
import { KvCache } from '../../src/model/kv-cache.js';
import type { LlamaModel } from '../../src/model/llama.js';
import type { DType } from '../../src/tensor/tensor.js';
import { rand } from '../engine/helpers.js';
import { randomModel } from './random-llama.js';

const native = loadNativeBackend();
const SEED = process.env.FLOE_SEED !== undefined ? Number(process.env.FLOE_SEED) >>> 0 : (Math.random() * 2 ** 32) >>> 0;
const BLOCK = 16;
const KMAX = 8; // draft tokens: verify forwards of 2 .. KMAX + 1 rows

/** One sequence in a step: its new tokens at positions start .. start+n-1, in blocks base, base+1, ... */
interface SeqStep { tokens: readonly number[]; start: number; base: number }

/** Logits (sum of n, V) of one forward over several sequences (all rows get logits, in batch order). */
function step(model: LlamaModel, kv: KvCache, seqs: readonly SeqStep[], maxBlocks: number): Float32Array {
  const T = seqs.reduce((a, s) => a + s.tokens.length, 0);
  const tokens = new Int32Array(T), positions = new Int32Array(T), slots = new Int32Array(T);
  const qStart = new Int32Array(seqs.length + 1), ctxLen = new Int32Array(seqs.length);
  const blockTables = new Int32Array(seqs.length * maxBlocks);
  let t = 0;
  seqs.forEach((s, i) => {
    qStart[i] = t;
    ctxLen[i] = s.start + s.tokens.length;
    for (let b = 0; b < maxBlocks; b++) blockTables[i * maxBlocks + b] = s.base + b;
    s.tokens.forEach((id, j) => {
      tokens[t] = id;
      positions[t] = s.start + j;
      slots[t] = s.base * BLOCK + s.start + j;
      t++;
    });
  });
  qStart[seqs.length] = T;
  return model.forward({
    tokens, positions, slots, attn: { numSeqs: seqs.length, qStart, ctxLen, blockTables, maxBlocks },
    logitRows: Int32Array.from({ length: T }, (_, i) => i),
  }, kv);
}

function copyCache(dst: KvCache, src: KvCache): void {
  src.layers.forEach((l, i) => {
    const d = dst.layers[i]!;
    d.k.set(l.k);
    d.v.set(l.v);
    if (l.kScale) d.kScale!.set(l.kScale);
    if (l.vScale) d.vScale!.set(l.vScale);
  });
}

/** First index where a and b differ bitwise (rows of V), with the values; null when identical. */
function firstDiff(a: Float32Array, b: Float32Array, V: number): string | null {
  const ua = new Uint32Array(a.buffer, a.byteOffset, a.length), ub = new Uint32Array(b.buffer, b.byteOffset, b.length);
  let n = 0, first = -1, worst = 0;
  for (let i = 0; i < ua.length; i++) {
    if (ua[i] === ub[i]) continue;
    if (first < 0) first = i;
    n++;
    worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
  }
  return first < 0 ? null : `${n} of ${a.length} logits differ, first row ${Math.floor(first / V)} col ${first % V} (${a[first]} vs ${b[first]}), max |diff| ${worst}`;
}

const DTYPES: DType[] = ['f32', 'bf16', 'q8_0', 'fp8_e4m3'];
const KV: KvDType[] = ['bf16', 'fp8_e4m3'];

/**
 * For each of `seqs` contexts: prefill, then the reference = KMAX + 1 one-token steps (one sequence, M = 1), and
 * the verify = one forward over the first k + 1 of those tokens for k = 1 .. KMAX; with `together`, the verify
 * rows of all sequences go in one batch (k + 1 rows for one, fewer for the others).
 */
function checkModel(label: string, model: LlamaModel, kvDtype: KvDType, ctxs: readonly number[], r: () => number, together: boolean): void {
  const cfg = model.config;
  const V = cfg.vocabSize;
  const maxBlocks = Math.ceil((Math.max(...ctxs) + KMAX + 1) / BLOCK);
  const numBlocks = maxBlocks * ctxs.length;
  const make = () => new KvCache(cfg.numLayers, numBlocks, BLOCK, cfg.numKvHeads, cfg.headDim, kvDtype);
  const base = make();
  const prompts = ctxs.map((n) => Array.from({ length: n }, () => Math.floor(r() * V)));
  const news = ctxs.map(() => Array.from({ length: KMAX + 1 }, () => Math.floor(r() * V)));
  // prefill every context in chunks of up to 64 tokens
  ctxs.forEach((n, i) => {
    for (let s = 0; s < n; s += 64) step(model, base, [{ tokens: prompts[i]!.slice(s, Math.min(n, s + 64)), start: s, base: i * maxBlocks }], maxBlocks);
  });
  const steps = make();
  copyCache(steps, base);
  const want = ctxs.map((n, i) => news[i]!.map((id, j) => step(model, steps, [{ tokens: [id], start: n + j, base: i * maxBlocks }], maxBlocks)));
  const verify = make();
  for (let k = 1; k <= KMAX; k++) {
    copyCache(verify, base);
    // row counts: k + 1 for sequence 0, 1 .. 3 for the others (a batch of at most 16 rows)
    const rows = ctxs.map((_, i) => (i === 0 ? k + 1 : 1 + ((k + i) % 3)));
    const run = (ids: number[]) => ids.map((i) => ({ tokens: news[i]!.slice(0, rows[i]!), start: ctxs[i]!, base: i * maxBlocks }));
    const outs: Float32Array[] = [];
    if (together) {
      const all = step(model, verify, run(ctxs.map((_, i) => i)), maxBlocks);
      let off = 0;
      for (const n of rows) { outs.push(all.subarray(off * V, (off + n) * V)); off += n; }
    } else {
      ctxs.forEach((_, i) => outs.push(step(model, verify, run([i]), maxBlocks)));
    }
    outs.forEach((got, i) => {
      for (let j = 0; j < rows[i]!; j++) {
        const d = firstDiff(got.subarray(j * V, (j + 1) * V), want[i]![j]!, V);
        assert.equal(d, null, `${label}, seed ${SEED}: k=${k}, sequence ${i} (context ${ctxs[i]}, ${rows[i]} rows${together ? ` in a batch of ${rows.reduce((a, b) => a + b, 0)}` : ''}), row ${j}: ${d}`);
      }
    });
  }
}

// the AVX-512 kernel's own counters, or with FLOE_ISA=avx2|scalar the portable kernel's
const ATTN = process.env.FLOE_ISA === 'avx2' || process.env.FLOE_ISA === 'scalar' ? `attention.` : 'attention512.';
const attnCalls = () => Object.entries(nativeCounters()).filter(([k]) => k.startsWith(ATTN)).reduce((a, [, v]) => a + v, 0);

test('a forward over k + 1 new positions equals k + 1 one-token steps bitwise (every weight dtype, GQA 1/2/4/8, E 32/64, bf16/fp8 KV, 1 and 2 threads)', { skip: !native && 'native addon not built' }, () => {
  const r = rand(SEED);
  for (const threads of [1, 2]) {
    const be = selectBackend('native', threads);
    const before = attnCalls();
    for (const dtype of DTYPES) {
      for (const G of [1, 2, 4, 8]) {
        for (const E of [32, 64]) {
          const kvDtype = KV[(G + E / 32 + DTYPES.indexOf(dtype)) % 2]!;
          const H = 8, K = H / G;
          const model = randomModel(r, { H, K, E, D: 128, F: 192, V: 96, layers: 2 }, dtype, be);
          const ctx = 20 + Math.floor(r() * 40);
          checkModel(`${dtype} weights, G=${G}, E=${E}, ${kvDtype} KV, ${threads} threads`, model, kvDtype, [ctx], r, false);
        }
      }
    }
    assert.ok(attnCalls() > before, `the ${ATTN} attention kernel ran`);
  }
});

test('verify rows split across several sequences in one batch, and long contexts (context splits), equal one-token steps bitwise', { skip: !native && 'native addon not built' }, () => {
  const r = rand(SEED ^ 0x9e3779b9);
  // 3 threads: one sequence (or a 2-split context) gives fewer attention tasks than threads, so its kv heads are
  // split over tasks too (2 or 3 head groups, uneven for K = 8)
  const headGroups = () => nativeCounters()['attention512.head_groups.avx512'] ?? 0;
  for (const threads of [1, 2, 3]) {
    const be = selectBackend('native', threads);
    const groups0 = headGroups();
    for (const [dtype, G, kvDtype] of [['q8_0', 4, 'bf16'], ['bf16', 2, 'fp8_e4m3'], ['fp8_e4m3', 8, 'bf16'], ['f32', 1, 'fp8_e4m3'], ['f32', 2, 'f32']] as const) {
      const model = randomModel(r, { H: 8, K: 8 / G, E: 64, D: 128, F: 192, V: 96, layers: 2 }, dtype, be);
      const label = `${dtype} weights, G=${G}, ${kvDtype} KV, ${threads} threads`;
      checkModel(`${label}, 3 sequences`, model, kvDtype, [20 + Math.floor(r() * 30), 5 + Math.floor(r() * 20), 40 + Math.floor(r() * 20)], r, true);
      checkModel(`${label}, long context`, model, kvDtype, [560 + Math.floor(r() * 300)], r, false);
      checkModel(`${label}, context of two splits`, model, kvDtype, [260 + Math.floor(r() * 240)], r, false);
    }
    if (ATTN === 'attention512.') assert.equal(headGroups() > groups0, threads > 1, `${threads} threads: kv heads split over attention tasks`);
  }
});
