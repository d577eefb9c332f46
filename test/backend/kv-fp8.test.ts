// FP8 KV cache: memory accounting, quantization error bounds, attention over fp8 = attention over its dequantized values,
// and end to end (generate, the engine with prefix caching and n > 1 copy-on-write) against an f32 cache.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { AttentionShape, Backend, KvLayer } from '../../src/backend/backend.js';
import { loadNativeBackend, nativeCounters } from '../../src/backend/native.js';
import { referenceBackend } from '../../src/backend/reference.js';
import { Engine } from '../../src/engine/engine.js';
import { openModel } from '../../src/model/open.js';
import { generate } from '../../src/model/generate.js';
import { copyKvBlocks, KvCache } from '../../src/model/kv-cache.js';
import { f32ToFp8, fp8ToF32 } from '../../src/tensor/codecs.js';
import { conformanceChecks, makeBatch, Rng } from './helpers.js';
import { FIXTURES, genReq, rand, randomPrompt, runAll } from '../engine/helpers.js';

const native = loadNativeBackend();
const backends: [string, Backend][] = [['reference', referenceBackend], ...(native ? [['native', native] as [string, Backend]] : [])];

/** Native fp8-KV attention calls so far, over every ISA. */
function fp8AttentionCalls(): number {
  return Object.entries(nativeCounters()).reduce((a, [key, n]) => a + (key.startsWith('attention.fp8kv.') ? n : 0), 0);
}

/** value of element i (numBlocks, L, K, E) of k or v of an fp8 layer. */
function fp8Value(layer: KvLayer, part: 'k' | 'v', i: number): number {
  const scale = part === 'k' ? layer.kScale! : layer.vScale!;
  return fp8ToF32(layer[part][i]!) * scale[Math.floor(i / layer.headDim)]!;
}

test('KvCache fp8_e4m3: 1 byte per element + one f32 scale per (token, kv head); half of bf16 for E >= 128 up to the scales', () => {
  const [layers, blocks, L, K, E] = [3, 5, 16, 2, 64];
  const c = new KvCache(layers, blocks, L, K, E, 'fp8_e4m3');
  let allocated = 0;
  for (const l of c.layers) {
    assert.equal(l.kScale!.length, blocks * L * K);
    assert.equal(l.vScale!.length, blocks * L * K);
    allocated += l.k.byteLength + l.v.byteLength + l.kScale!.byteLength + l.vScale!.byteLength;
  }
  assert.equal(c.totalBytes, allocated, 'totalBytes counts exactly what is allocated');
  assert.equal(KvCache.bytesPerToken(layers, K, E, 'fp8_e4m3') * blocks * L, allocated);
  const bf16 = KvCache.bytesPerToken(layers, K, E, 'bf16');
  assert.equal(KvCache.bytesPerToken(layers, K, E, 'fp8_e4m3'), bf16 / 2 + 2 * layers * K * 4);
  assert.equal(KvCache.bytesPerToken(80, 8, 128, 'fp8_e4m3') / KvCache.bytesPerToken(80, 8, 128, 'bf16'), 132 / 256, 'Llama-70B-like: 51.6% of bf16');
  assert.equal(new KvCache(1, 1, 16, 2, 64, 'bf16').layers[0]!.kScale, undefined, 'no scales for bf16');
});

for (const [name, be] of backends) {
  test(`${name} kvWrite fp8: scale = amax/448 per (token, head), amax decodes exactly, every value within E4M3 rounding`, () => {
    const rng = new Rng(11);
    const [numBlocks, L, K, E] = [4, 8, 3, 48];
    const layer = new KvCache(1, numBlocks, L, K, E, 'fp8_e4m3').layers[0]!;
    const T = 13;
    const slots = Int32Array.from(rng.shuffle(Array.from({ length: numBlocks * L }, (_, i) => i)).slice(0, T));
    // heads of very different magnitudes: per-head scales must keep the small ones accurate
    const k = rng.normals(T * K * E);
    const v = rng.normals(T * K * E);
    for (let t = 0; t < T; t++) for (let e = 0; e < E; e++) { k[(t * K + 1) * E + e]! *= 1e-3; v[(t * K + 2) * E + e]! *= 300; }
    be.kvWrite(layer, k, v, slots);
    for (const [part, src] of [['k', k], ['v', v]] as const) {
      for (let t = 0; t < T; t++) {
        for (let h = 0; h < K; h++) {
          const vec = slots[t]! * K + h;
          let amax = 0;
          for (let e = 0; e < E; e++) amax = Math.max(amax, Math.abs(src[(t * K + h) * E + e]!));
          const s = (part === 'k' ? layer.kScale! : layer.vScale!)[vec]!;
          assert.equal(s, Math.fround(amax / 448), `${part} scale of token ${t} head ${h}`);
          for (let e = 0; e < E; e++) {
            const x = src[(t * K + h) * E + e]!;
            const got = fp8Value(layer, part, vec * E + e);
            // E4M3: half an ulp is 2^-4 relative for normals; subnormals (|x| < 2^-6 s) are within 2^-10 s
            const tol = Math.max(Math.abs(x) * 2 ** -4, s * 2 ** -10) * (1 + 1e-6);
            assert.ok(Math.abs(got - x) <= tol, `${part} token ${t} head ${h} [${e}]: ${got} for ${x} (scale ${s})`);
            if (Math.abs(x) === amax) assert.equal(Math.abs(Math.fround(got)), Math.fround(448 * s), 'the amax element is exactly ±448 × scale');
          }
        }
      }
    }
  });

  test(`${name} attention over an fp8 cache equals attention over an f32 cache holding the dequantized values`, () => {
    const rng = new Rng(12);
    const [H, K, E, L] = [8, 2, 32, 16];
    const seqs = [{ ctxLen: 45, qLen: 1 }, { ctxLen: 70, qLen: 22 }];
    const numBlocks = 12;
    const { batch, slotsOf } = makeBatch(rng, seqs, numBlocks, L);
    const fp8 = new KvCache(1, numBlocks, L, K, E, 'fp8_e4m3').layers[0]!;
    const slots = Int32Array.from(slotsOf.flat());
    referenceBackend.kvWrite(fp8, rng.normals(slots.length * K * E, 2), rng.normals(slots.length * K * E), slots);
    const f32 = new KvCache(1, numBlocks, L, K, E, 'f32').layers[0]!;
    const fk = new Float32Array(f32.k.buffer), fv = new Float32Array(f32.v.buffer);
    for (const s of slots) for (let j = 0; j < K * E; j++) { fk[s * K * E + j] = fp8Value(fp8, 'k', s * K * E + j); fv[s * K * E + j] = fp8Value(fp8, 'v', s * K * E + j); }
    const Tq = batch.qStart[batch.numSeqs]!;
    const q = rng.normals(Tq * H * E);
    const shape: AttentionShape = { numHeads: H, numKvHeads: K, headDim: E, scale: 1 / Math.sqrt(E) };
    const want = new Float32Array(Tq * H * E);
    referenceBackend.attention(want, q, f32, shape, batch);
    const before = fp8AttentionCalls();
    const got = new Float32Array(Tq * H * E).fill(NaN);
    be.attention(got, q, fp8, shape, batch);
    for (let i = 0; i < got.length; i++) assert.ok(Math.abs(got[i]! - want[i]!) <= 2e-5, `out[${i}] = ${got[i]}, f32 cache gives ${want[i]}`);
    if (name === 'native') assert.ok(fp8AttentionCalls() > before, 'the native fp8 attention kernel ran');
  });
}

test('copyKvBlocks copies fp8 codes and scales of whole blocks (copy-on-write)', () => {
  const c = new KvCache(2, 4, 8, 2, 16, 'fp8_e4m3');
  const rng = new Rng(13);
  for (const l of c.layers) {
    l.k.set(Uint8Array.from({ length: l.k.length }, () => rng.int(0, 256)));
    l.v.set(Uint8Array.from({ length: l.v.length }, () => rng.int(0, 256)));
    l.kScale!.set(rng.f32(l.kScale!.length, 0.1, 1));
    l.vScale!.set(rng.f32(l.vScale!.length, 0.1, 1));
  }
  const before = c.layers.map((l) => ({ k: l.k.slice(), v: l.v.slice(), ks: l.kScale!.slice(), vs: l.vScale!.slice() }));
  copyKvBlocks(c.layers, [{ src: 1, dst: 3 }]);
  const [bb, per] = [8 * 2 * 16, 8 * 2];
  c.layers.forEach((l, i) => {
    const b = before[i]!;
    assert.deepEqual(l.k.subarray(3 * bb, 4 * bb), b.k.subarray(bb, 2 * bb));
    assert.deepEqual(l.v.subarray(3 * bb, 4 * bb), b.v.subarray(bb, 2 * bb));
    assert.deepEqual(l.kScale!.subarray(3 * per, 4 * per), b.ks.subarray(per, 2 * per));
    assert.deepEqual(l.vScale!.subarray(3 * per, 4 * per), b.vs.subarray(per, 2 * per));
    assert.deepEqual(l.k.subarray(0, 3 * bb), b.k.subarray(0, 3 * bb), 'other blocks untouched');
    assert.deepEqual(l.kScale!.subarray(0, 3 * per), b.ks.subarray(0, 3 * per), 'other scales untouched');
  });
});

const fixture = await openModel(FIXTURES + 'gqa_f32', { backend: native ? 'native' : 'reference' });

test('generate with an fp8 KV cache: prompt logprobs near the f32 cache (mean |Δ| < 0.05), coarser than bf16, not identical', () => {
  const model = fixture.model;
  const ids = randomPrompt(rand(5), 150);
  const run = (kvDtype: 'f32' | 'bf16' | 'fp8_e4m3') =>
    generate(model, ids, { maxTokens: 0, promptLogprobs: 1, kvDtype, prefillChunk: 40, sampling: { temperature: 0 } }).promptLogprobs!;
  const a = run('f32');
  const diff = (b: ReturnType<typeof run>) => {
    let max = 0, mean = 0;
    for (let i = 1; i < ids.length; i++) { const d = Math.abs(a[i]!.logprob - b[i]!.logprob); max = Math.max(max, d); mean += d / (ids.length - 1); }
    return { max, mean };
  };
  const fp8 = diff(run('fp8_e4m3'));
  const bf16 = diff(run('bf16'));
  // this random fixture has sharp logits: bf16 KV alone moves logprobs by ~2.5e-3 on average, E4M3 (3 mantissa bits) ~16x that
  assert.ok(fp8.mean < 0.05 && fp8.max < 0.5, `fp8 KV: mean |Δ logprob| ${fp8.mean}, max ${fp8.max}`);
  assert.ok(fp8.mean > 2 * bf16.mean, `fp8 KV (${fp8.mean}) must be coarser than bf16 KV (${bf16.mean}), else it was not fp8`);
});

test('engine with an fp8 KV cache (prefix caching, n = 3 forks): greedy outputs equal generate() with fp8 KV', () => {
  const model = fixture.model;
  const engine = new Engine(model, null, { kvDtype: 'fp8_e4m3', blockSize: 8, maxBatchedTokens: 32, maxNumSeqs: 8 });
  assert.equal(engine.info.kvDtype, 'fp8_e4m3');
  const shared = randomPrompt(rand(21), 37);
  const reqs = [
    genReq('a', shared, { maxTokens: 12, ignoreEos: true }),
    genReq('b', [...shared, 5, 6, 7], { maxTokens: 9, ignoreEos: true, n: 3 }),
    genReq('c', randomPrompt(rand(22), 19), { maxTokens: 15, ignoreEos: true }),
  ];
  for (const q of reqs) engine.add(q);
  const { byId } = runAll(engine);
  for (const q of reqs) {
    const want = generate(model, q.promptIds, { maxTokens: q.maxTokens, sampling: { temperature: 0 }, stopTokenIds: [], kvDtype: 'fp8_e4m3' });
    const got = byId.get(q.id)!;
    for (const toks of got.tokens) assert.deepEqual(toks, want.outputIds, `${q.id}`);
  }
});

// The fp8 conformance checks (test/backend/helpers.ts) must fail plausible fp8 bugs.
const mutants: { check: string; why: string; be: Partial<Backend> }[] = [
  {
    check: 'kvWrite fp8_e4m3', why: 'one scale per token (amax over all kv heads) instead of per (token, head)',
    be: {
      kvWrite: (layer, k, v, slots) => {
        const [K, E] = [layer.numKvHeads, layer.headDim];
        for (const [src, dst, sc] of [[k, layer.k, layer.kScale!], [v, layer.v, layer.vScale!]] as const) {
          for (let t = 0; t < slots.length; t++) {
            let amax = 0;
            for (let j = 0; j < K * E; j++) amax = Math.max(amax, Math.abs(src[t * K * E + j]!));
            const s = Math.fround(amax / 448) || 1;
            for (let j = 0; j < K * E; j++) dst[slots[t]! * K * E + j] = f32ToFp8(src[t * K * E + j]! / s);
            for (let h = 0; h < K; h++) sc[slots[t]! * K + h] = s;
          }
        }
      },
    },
  },
  {
    check: 'attention fp8_e4m3 GQA', why: 'v scales ignored',
    be: { attention: (out, q, layer, shape, batch) => referenceBackend.attention(out, q, { ...layer, vScale: new Float32Array(layer.vScale!.length).fill(1) }, shape, batch) },
  },
  {
    check: 'attention fp8_e4m3 MQA', why: 'k scales of the first token used for the whole block',
    be: {
      attention: (out, q, layer, shape, batch) => {
        const ks = layer.kScale!.slice();
        const per = layer.blockSize * layer.numKvHeads;
        for (let i = 0; i < ks.length; i++) ks[i] = ks[Math.floor(i / per) * per + (i % layer.numKvHeads)]!;
        referenceBackend.attention(out, q, { ...layer, kScale: ks }, shape, batch);
      },
    },
  },
];
for (const m of mutants) {
  test(`fp8 conformance check '${m.check}' catches: ${m.why}`, () => {
    const check = conformanceChecks().find((c) => c.name.startsWith(m.check));
    assert.ok(check, `no conformance check named '${m.check}…'`);
    assert.throws(() => check.run({ ...referenceBackend, ...m.be } as Backend), assert.AssertionError, `'${check.name}' passed a kernel with ${m.why}`);
  });
}
