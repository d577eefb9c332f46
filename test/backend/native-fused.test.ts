// The native calls that fuse a layer's neighbouring ops, each bitwise its separate calls. addRmsnorm: a residual add
// and the norm after it. ropeKvWrite: rope on q and k, then the cache write. matmulMany: the matmuls that share one x (q/k/v, gate/up) as one native call. On AVX-512, weights of one repacked
// layout at the interleaved GEMV's rows run as one stacked weight (one pool job; counter matmul_many.fused); anything
// else runs one matmul per weight. Either way every output must equal its own matmul bit for bit: checked per
// layout, at row counts on both sides of the GEMV's bounds, on stacks whose groups split unevenly across tasks, at 1
// and 2 threads, on the AVX2 / scalar tables, and through the model's forward. Bad input gets a precise error.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Backend } from '../../src/backend/backend.js';
import { loadNativeBackend, nativeCounters } from '../../src/backend/native.js';
import { loadAddon } from '../../src/backend/native-addon.js';
import { encodeBf16, encodeF16 } from '../../src/tensor/codecs.js';
import { quantizeTensor } from '../../src/tensor/quantize.js';
import { f32Tensor, Tensor, DTYPE_CODE } from '../../src/tensor/tensor.js';
import { LlamaModel } from '../../src/model/llama.js';
import { KvCache } from '../../src/model/kv-cache.js';
import type { LlamaConfig } from '../../src/model/config.js';
import { cloneKvLayer, makeKvLayer, withSeed, type Rng } from './helpers.js';

const addon = loadAddon();
const be = addon ? loadNativeBackend()! : null;
const skip = !addon ? 'needs the native addon' : false;
const avx512 = addon?.supportedIsa() === 'avx512';

type Kind = 'f32' | 'f16' | 'bf16' | 'fp8_e4m3' | 'q8_0';
const KINDS: Kind[] = ['f32', 'f16', 'bf16', 'fp8_e4m3', 'q8_0'];
const LAYOUT = { f32: 'f32r16', f16: 'f16r16', bf16: 'bf16r16', fp8_e4m3: 'fp8r16', q8_0: 'q8_0r16' } as const;

function rowsWeight(rng: Rng, kind: Kind, N: number, C: number): Tensor {
  const f = rng.normals(N * C, 0.5);
  if (kind === 'fp8_e4m3') return quantizeTensor(f, [N, C], kind, { fp8Block: [3, 64] });
  if (kind === 'q8_0') return quantizeTensor(f, [N, C], kind);
  if (kind === 'f32') return f32Tensor([N, C], f);
  return new Tensor(kind, [N, C], kind === 'bf16' ? encodeBf16(f) : encodeF16(f));
}

function repacked(t: Tensor): Tensor {
  const a = addon!;
  if (t.dtype === 'q8_0') return new Tensor('q8_0', t.shape, a.q8Repack(t.data, t.rows, t.cols), undefined, undefined, 'q8_0r16');
  const kind = t.dtype as Exclude<Kind, 'q8_0'>;
  return new Tensor(t.dtype, t.shape, a.r16Repack(t.data, DTYPE_CODE[kind], t.rows, t.cols), t.scale, t.scaleBlock, LAYOUT[kind]);
}

const counter = (key: string): number => nativeCounters()[key] ?? 0;
const FUSED = 'matmul_many.fused.avx512', GEMV = 'matmul.path.gemv_r16.avx512';
const ADD_NORM = `addRmsnorm.${addon?.isa() ?? 'none'}`;

/** Runs matmulMany and the separate matmuls on fresh x; asserts equal bits; returns whether the fused path ran. */
function check(rng: Rng, ws: readonly Tensor[], M: number, at: string): boolean {
  const C = ws[0]!.cols;
  const x = rng.normals(M * C);
  const want = ws.map((w) => new Float32Array(M * w.rows));
  const g0 = counter(GEMV);
  ws.forEach((w, i) => be!.matmul(want[i]!, x, w, M));
  // the fused path applies exactly where every separate call took the repacked layout's GEMV
  const allGemv = counter(GEMV) - g0 === ws.length && ws.every((w) => w.layout === ws[0]!.layout && w.layout !== 'rows');
  const got = ws.map((w) => new Float32Array(M * w.rows).fill(NaN));
  const f0 = counter(FUSED);
  be!.matmulMany!(got, x, ws, M);
  const fused = counter(FUSED) - f0 === 1;
  assert.equal(fused, allGemv && avx512 && addon!.isa() === 'avx512', `${at}: fused ${fused}, every separate call on the GEMV ${allGemv}`);
  ws.forEach((w, i) => assert.deepEqual(got[i], want[i], `${at}: output ${i} (${w.rows} x ${w.cols}) equals its own matmul`));
  return fused;
}

describe('native fused calls: matmulMany, addRmsnorm', { skip }, () => {
  for (const kind of KINDS) {
    it(`${LAYOUT[kind]}: q/k/v and gate/up stacks equal their separate matmuls bit for bit, fused at the GEMV's rows`, { skip: avx512 ? false : 'the repacked layouts need AVX-512' }, () => {
      withSeed(`matmulMany ${kind}`, (rng) => {
        const threads = addon!.getThreads();
        try {
          // q/k/v of floe-brown (256 | 128 | 128 over 256), a 1B-like gate/up over C = 2048 cut small, and stacks whose
          // group counts (1, 3, 5) split unevenly over 8 tasks, so a task's range crosses from one weight into the next
          const C = 256;
          const stacks: [number, number][][] = [
            [[256, C], [128, C], [128, C]],
            [[704, C], [704, C]],
            [[16, 64], [48, 64], [80, 64]],
            [[48, 96], [16, 96]],
          ];
          let fusedRuns = 0;
          for (const t of [1, 2]) {
            addon!.setThreads(t);
            for (const shapes of stacks) {
              const ws = shapes.map(([N, c]) => repacked(rowsWeight(rng, kind, N, c)));
              for (const M of [1, 2, 3, 5, 8, 9, 12, 16, 17, 33, 100, 300]) {
                if (check(rng, ws, M, `${LAYOUT[kind]} ${JSON.stringify(shapes)} M=${M}, ${t} threads`)) fusedRuns++;
              }
            }
          }
          assert.ok(fusedRuns >= 2 * 4 * 5, `the fused path ran at the decode and verify rows (${fusedRuns} runs)`);
        } finally {
          addon!.setThreads(threads);
        }
      });
    });
  }

  it('falls back to one matmul per weight: the row layout, mixed layouts, the GEMM rows, the AVX2 and scalar tables', () => {
    withSeed('matmulMany fallback', (rng) => {
      const C = 128;
      const rows = [rowsWeight(rng, 'f32', 64, C), rowsWeight(rng, 'bf16', 32, C)];
      for (const M of [1, 4, 200]) check(rng, rows, M, `row layout M=${M}`);
      if (!avx512) return;
      const mixed = [repacked(rowsWeight(rng, 'f32', 64, C)), repacked(rowsWeight(rng, 'bf16', 32, C))];
      for (const M of [1, 4]) assert.equal(check(rng, mixed, M, `f32r16 + bf16r16 M=${M}`), false);
      // q8_0r16 takes its GEMM from 32 rows
      const q = [repacked(rowsWeight(rng, 'q8_0', 32, C)), repacked(rowsWeight(rng, 'q8_0', 16, C))];
      assert.equal(check(rng, q, 40, 'q8_0r16 M=40'), false);
      const f32 = [repacked(rowsWeight(rng, 'f32', 64, C)), repacked(rowsWeight(rng, 'f32', 32, C))];
      try {
        for (const isa of ['avx2', 'scalar'] as const) {
          addon!.setIsa(isa);
          for (const M of [1, 5]) assert.equal(check(rng, f32, M, `f32r16 on ${isa} M=${M}`), false);
        }
      } finally {
        addon!.setIsa('avx512');
      }
    });
  });

  it('bad input: weights of different C, an output of the wrong length, a wrong argument count', () => {
    withSeed('matmulMany errors', (rng) => {
      const a = rowsWeight(rng, 'f32', 16, 32), b = rowsWeight(rng, 'f32', 16, 48);
      const x = rng.normals(2 * 32);
      assert.throws(() => be!.matmulMany!([new Float32Array(32), new Float32Array(32)], x, [a, b], 2),
        /floe native matmulMany: the weights need one C: weight 0 has C=32, weight 1 C=48/);
      assert.throws(() => be!.matmulMany!([new Float32Array(32), new Float32Array(31)], x, [a, a], 2),
        /floe native matmulMany: y 1 \(M=2, N=16\) has 31 elements, expected 32/);
      assert.throws(() => be!.matmulMany!([new Float32Array(32)], rng.normals(63), [a], 2),
        /floe native matmulMany: x \(M=2, C=32\) has 63 elements, expected 64/);
      assert.throws(() => addon!.matmulMany(x, 2, new Float32Array(32)), /matmulMany: expected x, M and 1 to 8 groups/);
      assert.throws(() => be!.matmulMany!([new Float32Array(32)], x, [a, a], 2), /1 outputs for 2 weights/);
    });
  });

  it('addRmsnorm equals add then rmsnorm bit for bit, at 1 and 2 threads, on every ISA table; bad input', () => {
    withSeed('addRmsnorm', (rng) => {
      const threads = addon!.getThreads(), isa = addon!.isa();
      const isas = avx512 ? ['avx512', 'avx2', 'scalar'] as const : [isa];
      try {
        for (const t of [1, 2]) {
          addon!.setThreads(t);
          for (const i of isas) {
            addon!.setIsa(i);
            for (const [M, D] of [[1, 256], [8, 256], [9, 2048], [33, 72]] as const) {
              const x = rng.normals(M * D), d = rng.normals(M * D), g = rng.normals(D);
              const x1 = x.slice(), h1 = new Float32Array(M * D).fill(NaN);
              be!.add(x1, d);
              be!.rmsnorm(h1, x1, g, M, 1e-5);
              const x2 = x.slice(), h2 = new Float32Array(M * D).fill(NaN);
              const key = `addRmsnorm.${i}`, c0 = counter(key);
              be!.addRmsnorm!(x2, d, h2, g, M, 1e-5);
              assert.equal(counter(key) - c0, 1, `the ${i} table ran addRmsnorm`);
              assert.deepEqual(x2, x1, `x += d, M=${M} D=${D} ${i} ${t} threads`);
              assert.deepEqual(h2, h1, `rmsnorm(x), M=${M} D=${D} ${i} ${t} threads`);
            }
          }
        }
      } finally {
        addon!.setThreads(threads);
        addon!.setIsa(isa);
      }
      const g = new Float32Array(8);
      assert.throws(() => be!.addRmsnorm!(new Float32Array(16), new Float32Array(15), new Float32Array(16), g, 2, 1e-5),
        /floe native addRmsnorm: d \(M=2, D=8\) has 15 elements, expected 16/);
      assert.throws(() => be!.addRmsnorm!(new Float32Array(16), new Float32Array(16), new Float32Array(8), g, 2, 1e-5),
        /floe native addRmsnorm: y \(M=2, D=8\) has 8 elements, expected 16/);
      assert.throws(() => be!.addRmsnorm!(new Float32Array(16), new Float32Array(16), new Float32Array(16), g, 3, 1e-5),
        /floe native addRmsnorm: x \(M=3, D=8\) has 16 elements, expected 24/);
    });
  });

  it('ropeKvWrite equals rope on q, rope on k and kvWrite bit for bit, for f32, bf16 and fp8 caches; bad input', () => {
    withSeed('ropeKvWrite', (rng) => {
      const threads = addon!.getThreads();
      try {
        for (const t of [1, 2]) {
          addon!.setThreads(t);
          for (const dtype of ['f32', 'bf16', 'fp8_e4m3'] as const) {
            for (const [T, H, K, E] of [[1, 8, 4, 32], [9, 8, 2, 64], [40, 4, 4, 16]] as const) {
              const layer = makeKvLayer(rng, dtype, 8, 16, K, E);
              const positions = Int32Array.from({ length: T }, () => rng.int(0, 4000));
              const slots = Int32Array.from(rng.shuffle(Array.from({ length: 128 }, (_, i) => i)).slice(0, T));
              const invFreq = Float32Array.from({ length: E / 2 }, (_, i) => Math.pow(10000, (-2 * i) / E));
              const q = rng.normals(T * H * E), k = rng.normals(T * K * E), v = rng.normals(T * K * E);
              const [q1, k1, l1] = [q.slice(), k.slice(), cloneKvLayer(layer)];
              be!.rope(q1, positions, H, E, invFreq);
              be!.rope(k1, positions, K, E, invFreq);
              be!.kvWrite(l1, k1, v, slots);
              const [q2, k2, l2] = [q.slice(), k.slice(), cloneKvLayer(layer)];
              const key = `ropeKvWrite.${dtype === 'f32' ? 'f32' : dtype === 'bf16' ? 'bf16' : 'fp8'}.${addon!.isa()}`, c0 = counter(key);
              be!.ropeKvWrite!(q2, k2, v, positions, H, invFreq, l2, slots);
              assert.equal(counter(key) - c0, 1, 'ropeKvWrite ran');
              const at = `${dtype} T=${T} H=${H} K=${K} E=${E}, ${t} threads`;
              assert.deepEqual(q2, q1, `${at}: q`);
              assert.deepEqual(k2, k1, `${at}: k`);
              assert.deepEqual(l2.k, l1.k, `${at}: cache k`);
              assert.deepEqual(l2.v, l1.v, `${at}: cache v`);
              if (l1.kScale) assert.deepEqual([l2.kScale, l2.vScale], [l1.kScale, l1.vScale], `${at}: fp8 scales`);
            }
          }
        }
      } finally {
        addon!.setThreads(threads);
      }
      const layer = makeKvLayer(rng, 'f32', 2, 16, 2, 8);
      const inv = new Float32Array(4), pos = Int32Array.of(0, 1);
      const run = (q: number, k: number, slots: Int32Array): void => be!.ropeKvWrite!(new Float32Array(q), new Float32Array(k), new Float32Array(k), pos, 4, inv, layer, slots);
      assert.throws(() => run(64, 32, Int32Array.of(0)), /floe native ropeKvWrite: slots \(T=2\) has 1 elements, expected 2/);
      assert.throws(() => run(63, 32, Int32Array.of(0, 1)), /floe native ropeKvWrite: q \(T=2, H\*E=32\) has 63 elements, expected 64/);
      assert.throws(() => run(64, 30, Int32Array.of(0, 1)), /floe native ropeKvWrite: k \(T=2, K\*E=16\) has 30 elements, expected 32/);
      assert.throws(() => run(64, 32, Int32Array.of(0, 32)), /floe native ropeKvWrite: slot 32 of token 1 is outside \[0, 32\)/);
    });
  });

  it('a model forward through matmulMany, addRmsnorm and ropeKvWrite equals the forward with one call per op, bit for bit', () => {
    withSeed('matmulMany forward', (rng) => {
      const cfg: LlamaConfig = {
        vocabSize: 96, hiddenSize: 64, intermediateSize: 160, numLayers: 2, numHeads: 4, numKvHeads: 2, headDim: 16,
        rmsNormEps: 1e-5, ropeTheta: 10000, maxPositionEmbeddings: 256, tieWordEmbeddings: true,
        bosTokenId: 1, eosTokenIds: [2], ropeScaling: null,
      };
      const tensors = new Map<string, Tensor>();
      const put = (name: string, N: number, C: number): void => { tensors.set(name, f32Tensor([N, C], rng.normals(N * C, 0.2))); };
      const ones = (name: string, D: number): void => { tensors.set(name, f32Tensor([D], Float32Array.from({ length: D }, () => 1 + 0.1 * rng.normal()))); };
      put('model.embed_tokens.weight', 96, 64);
      ones('model.norm.weight', 64);
      for (let l = 0; l < 2; l++) {
        const p = `model.layers.${l}.`;
        put(p + 'self_attn.q_proj.weight', 64, 64);
        put(p + 'self_attn.k_proj.weight', 32, 64);
        put(p + 'self_attn.v_proj.weight', 32, 64);
        put(p + 'self_attn.o_proj.weight', 64, 64);
        put(p + 'mlp.gate_proj.weight', 160, 64);
        put(p + 'mlp.up_proj.weight', 160, 64);
        put(p + 'mlp.down_proj.weight', 64, 160);
        ones(p + 'input_layernorm.weight', 64);
        ones(p + 'post_attention_layernorm.weight', 64);
      }
      be!.prepareWeights?.(tensors);
      const { matmulMany: _many, addRmsnorm: _addNorm, ropeKvWrite: _ropeKv, ...rest } = be!;
      const plain: Backend = rest;
      const T = 9;
      const prompt = Int32Array.from({ length: T }, () => rng.int(0, 96));
      const run = (b: Backend): Float32Array => {
        const model = LlamaModel.fromTensors(cfg, tensors, b);
        const kv = new KvCache(2, 4, 16, 2, 16, 'f32');
        const table = Int32Array.of(0, 1, 2, 3);
        const step = (tokens: Int32Array, start: number): Float32Array => {
          const positions = Int32Array.from(tokens, (_, i) => start + i);
          return model.forward({
            tokens, positions, slots: positions,
            attn: { numSeqs: 1, qStart: Int32Array.of(0, tokens.length), ctxLen: Int32Array.of(start + tokens.length), blockTables: table, maxBlocks: 4 },
            logitRows: Int32Array.from(tokens, (_, i) => i),
          }, kv);
        };
        return Float32Array.of(...step(prompt, 0), ...step(Int32Array.of(5), T));
      };
      const ROPE_KV = `ropeKvWrite.f32.${addon!.isa()}`;
      const f0 = counter(FUSED), n0 = counter(ADD_NORM), r0 = counter(ROPE_KV);
      const fusedOut = run(be!);
      if (avx512) assert.ok(counter(FUSED) - f0 >= 2 * 2 * 2, 'q/k/v and gate/up of both layers ran fused in both steps');
      // per step: after layer 0's attention, between the layers, after layer 1's attention
      assert.equal(counter(ADD_NORM) - n0, 2 * 3, 'the residual adds before a norm ran as addRmsnorm');
      assert.equal(counter(ROPE_KV) - r0, 2 * 2, 'rope and the cache write ran as ropeKvWrite in every layer');
      const f1 = counter(FUSED), n1 = counter(ADD_NORM), r1 = counter(ROPE_KV);
      const plainOut = run(plain);
      assert.equal(counter(ROPE_KV), r1, 'the plain backend made no ropeKvWrite call');
      assert.equal(counter(FUSED), f1, 'the plain backend made no matmulMany call');
      assert.equal(counter(ADD_NORM), n1, 'the plain backend made no addRmsnorm call');
      assert.deepEqual(fusedOut, plainOut);
    });
  });
});
