// q8_0 repacked for decode (q8_0r16): the native repack against the TS decoder of the same layout, the interleaved
// GEMV (M < 32) and the GEMM's repacked panels (M >= 32) against a float64 emulation of the kernels' int8 x and
// against the row layout's kernels, batch invariance, the int8 AMX tiles (from 4 rows: on the tiles where the host has
// amx_int8, else emulated) against the GEMV bit for bit, embedding, the AVX2 / scalar fallback, the training refusal,
// and openModel repacking a real GGUF's q8_0 weights with logits unchanged. Counters prove which path ran.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { loadNativeBackend, nativeCounters } from '../../src/backend/native.js';
import { loadAddon } from '../../src/backend/native-addon.js';
import { dequantizeRow } from '../../src/tensor/codecs.js';
import { quantizeTensor } from '../../src/tensor/quantize.js';
import { Tensor } from '../../src/tensor/tensor.js';
import { writeRandomGguf } from '../../bench/gguf-gen.js';
import type { LlamaConfig } from '../../src/model/config.js';
import type { AmxMode } from '../../src/backend/native-addon.js';
import { generate, type GenerateResult } from '../../src/model/generate.js';
import { openModel } from '../../src/model/open.js';
import { assertClose, assertRepackOnHugePages, withSeed, type Rng } from './helpers.js';
import { repoUrl } from '../repo.js';

// the int8 tiles for every M from 4 (read when the addon loads; by default they take 16 <= M < 32 only, checked below
// in a child process), so the tests reach their row chunks, tails and single rows
process.env.FLOE_AMX_Q8_MIN_M = '4';
process.env.FLOE_AMX_Q8_MAX_M = '100000';
const addon = loadAddon();
const skip = !addon || addon.supportedIsa() !== 'avx512' ? 'needs the AVX-512 native addon' : false;
const be = skip ? null : loadNativeBackend()!;

function q8(rng: Rng, N: number, C: number): Tensor {
  return quantizeTensor(rng.normals(N * C, 0.5), [N, C], 'q8_0');
}
function repacked(t: Tensor): Tensor {
  return new Tensor('q8_0', t.shape, addon!.q8Repack(t.data, t.rows, t.cols), undefined, undefined, 'q8_0r16');
}

/** Round half to even, as vcvtps2dq does under the default MXCSR. */
function rne(v: number): number {
  const f = Math.floor(v), d = v - f;
  return d > 0.5 || (d === 0.5 && f % 2 !== 0) ? f + 1 : f;
}

/** y (M, N) = x̂ · wᵀ in float64, x̂ = x quantized per 32-block to int8 as the kernels do; mag = Σ|x̂·w|. */
function emulated(x: Float32Array, w: Tensor, M: number): { y: Float64Array; mag: Float64Array } {
  const [N, C] = [w.rows, w.cols];
  const xk = new Float64Array(M * C);
  for (let b = 0; b < M * C; b += 32) {
    let amax = 0;
    for (let c = b; c < b + 32; c++) amax = Math.max(amax, Math.abs(x[c]!));
    const d = Math.fround(amax / 127), id = amax > 0 ? Math.fround(127 / amax) : 0;
    for (let c = b; c < b + 32; c++) xk[c] = rne(Math.fround(x[c]! * id)) * d;
  }
  const y = new Float64Array(M * N), mag = new Float64Array(M * N), row = new Float32Array(C);
  for (let n = 0; n < N; n++) {
    dequantizeRow(w, n, row);
    for (let m = 0; m < M; m++) {
      let s = 0, a = 0;
      for (let c = 0; c < C; c++) {
        s += xk[m * C + c]! * row[c]!;
        a += Math.abs(xk[m * C + c]! * row[c]!);
      }
      y[m * N + n] = s;
      mag[m * N + n] = a;
    }
  }
  return { y, mag };
}

function pathCount(path: string): number {
  return nativeCounters()[`matmul.path.${path}.avx512`] ?? 0;
}
// GEMV calls run on the calling thread (too small to hand to the pool)
function serialCount(): number {
  return nativeCounters()['gemv.serial.avx512'] ?? 0;
}

/** Runs f in an AMX mode (the VNNI paths' tests: 'off'), then restores the mode the addon started in. */
function withAmx<T>(mode: AmxMode, f: () => T): T {
  const start = addon!.amx().mode;
  addon!.setAmx(mode);
  try {
    return f();
  } finally {
    addon!.setAmx(start);
  }
}
/** The int8 tiles where the host has them, else their emulation (the same code, scalar tile operations). */
const int8Mode: AmxMode = addon?.amx().supported && addon.amx().int8 ? 'tiles' : 'emulate';

describe('q8_0r16: the repacked q8_0 layout', { skip }, () => {
  it('repacks every row to the same values (TS decoder of the layout vs the row layout), odd and even block counts', () => {
    withSeed('q8r repack', (rng) => {
      // [1040, 2048] passes 2 MiB, not a multiple of it: a buffer of its own mapping (native/addon.cc weight_alloc)
      for (const [N, C] of [[16, 32], [48, 96], [32, 128], [64, 2048], [1040, 2048]] as const) {
        const w = q8(rng, N, C), r = repacked(w);
        assert.equal(r.data.byteLength, w.data.byteLength, 'same bytes, another order');
        assert.equal(r.data.byteOffset % 64 === 0 && (r.data.buffer.byteLength >= r.data.byteLength), true);
        const a = new Float32Array(C), b = new Float32Array(C);
        for (let n = 0; n < N; n++) {
          dequantizeRow(w, n, a);
          dequantizeRow(r, n, b);
          assert.deepEqual(b, a, `row ${n} of [${N},${C}]`);
        }
      }
    });
  });

  it('a weight of 2 MiB and more is given 2 MiB pages where the host allows them (THP "always" or "madvise")', (t) => {
    withSeed('q8r huge pages', (rng) => assertRepackOnHugePages(t, q8(rng, 4096, 2048), repacked));
  });

  it('matmul: GEMV below 32 rows, the in-place GEMM from 32, the packed GEMM from 384, against the float64 emulation and the row layout', () => {
    withAmx('off', () => withSeed('q8r matmul', (rng) => {
      const threads = addon!.getThreads();
      try {
        // N past a multiple of 48 (a panel of one or two groups), odd block counts, a short last K segment (34 blocks
        // = 16 + 16 + 2), few panels (rows split across tasks at 2 threads) and many
        // [512, 1024] reads 557 KB a row: split over the threads from M = 1; the rest run on the calling thread while
        // weight bytes × M stay under 256 KiB (FLOE_GEMV_SERIAL), so both are checked
        const shapes = [[48, 96], [64, 160], [96, 512], [32, 2048], [208, 1088], [112, 480], [400, 256], [512, 1024]] as const;
        for (const t of [1, 2]) {
          addon!.setThreads(t);
          for (const [N, C] of shapes) {
            const w = q8(rng, N, C), r = repacked(w);
            const Ms = N * C <= 96 * 512 ? [1, 2, 3, 7, 8, 9, 16, 17, 31, 32, 33, 48, 64, 70, 100, 128, 256, 383, 384] : [1, 2, 17, 31, 32, 33, 64, 100, 128, 256];
            for (const M of Ms) {
              const x = rng.normals(M * C);
              const { y: want, mag } = emulated(x, w, M);
              const got = new Float32Array(M * N), rows = new Float32Array(M * N);
              const path = M < 32 ? 'gemv_r16' : M < 384 ? 'gemm_r16' : 'gemm';
              const before = pathCount(path), serial0 = serialCount();
              be!.matmul(got, x, r, M);
              assert.equal(pathCount(path), before + 1, `M=${M} ran the ${path} path`);
              const at = `[${N},${C}] M=${M}, ${t} threads`;
              const serial = path === 'gemv_r16' && t > 1 && (N * C / 32) * 34 * M < 256 * 1024;
              assert.equal(serialCount() - serial0, serial ? 1 : 0, `${at}: on the calling thread ${serial}`);
              assertClose(`q8_0r16 ${at} vs float64`, got, want, { atol: 1e-6, rtol: 2e-6, mag });
              be!.matmul(rows, x, w, M);
              assertClose(`q8_0r16 vs q8_0 rows ${at}`, got, rows, { atol: 1e-6, rtol: 4e-6, mag });
            }
          }
        }
      } finally {
        addon!.setThreads(threads);
      }
    }));
  });

  it('the in-place GEMM (32 <= M < 384) equals the packed GEMM bit for bit (same int32 sums, same f32 steps)', () => {
    withAmx('off', () => withSeed('q8r gemm exact', (rng) => {
      const [N, C] = [208, 1088];
      const r = repacked(q8(rng, N, C));
      for (const M of [32, 33, 100, 256, 383]) {
        const x = rng.normals(M * C);
        // NaN in one block of row 1: that row's outputs are NaN on both paths
        x[C + 40] = NaN;
        const got = new Float32Array(M * N);
        const before = pathCount('gemm_r16');
        be!.matmul(got, x, r, M);
        assert.equal(pathCount('gemm_r16'), before + 1, `M=${M}: the in-place GEMM ran`);
        // the packed GEMM on the same rows: M padded to 384 with zero rows (its rows do not depend on each other)
        const xp = new Float32Array(384 * C);
        xp.set(x);
        const yp = new Float32Array(384 * N);
        const b2 = pathCount('gemm');
        be!.matmul(yp, xp, r, 384);
        assert.equal(pathCount('gemm'), b2 + 1, 'the packed GEMM ran');
        assert.deepEqual(got, yp.subarray(0, M * N), `M=${M}`);
        assert.ok(got.subarray(N, 2 * N).every(Number.isNaN) && got.subarray(0, N).every(Number.isFinite), 'NaN stays in its row');
      }
    }));
  });

  it('batch invariance: each row of M < 32 equals its M = 1 result bit for bit, at 1 and 2 threads', () => {
    withAmx('off', () => withSeed('q8r invariance', (rng) => {
      const threads = addon!.getThreads();
      try {
        for (const t of [1, 2]) {
          addon!.setThreads(t);
          const [N, C] = [80, 256];
          const r = repacked(q8(rng, N, C));
          const x = rng.normals(31 * C);
          const one = new Float32Array(31 * N);
          for (let m = 0; m < 31; m++) be!.matmul(one.subarray(m * N, (m + 1) * N), x.subarray(m * C, (m + 1) * C), r, 1);
          for (const M of [2, 5, 8, 9, 12, 16, 17, 24, 31]) {
            const y = new Float32Array(M * N);
            be!.matmul(y, x.subarray(0, M * C), r, M);
            assert.deepEqual(y, one.subarray(0, M * N), `M=${M}, ${t} threads`);
          }
        }
      } finally {
        addon!.setThreads(threads);
      }
    }));
  });

  it(`int8 AMX tiles [${int8Mode}] from 4 rows: every row equals its M = 1 GEMV result bit for bit, and the float64 emulation`, () => {
    withSeed('q8r amx int8', (rng) => {
      const threads = addon!.getThreads();
      const path = int8Mode === 'tiles' ? 'amx_int8' : 'amx_int8_emu';
      try {
        // odd block counts (a lone last block), one group and many, rows past 16 and past a 64-row chunk
        const shapes = [[16, 32], [48, 96], [64, 160], [208, 1088], [32, 2048]] as const;
        for (const t of [1, 2]) {
          addon!.setThreads(t);
          for (const [N, C] of shapes) {
            const r = repacked(q8(rng, N, C));
            const Ms = N * C <= 64 * 160 ? [3, 4, 5, 15, 16, 17, 31, 32, 33, 64, 65, 100] : [4, 16, 33, 70];
            const Mmax = Ms[Ms.length - 1]!;
            const x = rng.normals(Mmax * C);
            x[2 * C + 5] = NaN; // row 2: NaN in every output, on both paths
            const one = new Float32Array(Mmax * N);
            const g0 = pathCount('gemv_r16');
            withAmx('off', () => {
              for (let m = 0; m < Mmax; m++) be!.matmul(one.subarray(m * N, (m + 1) * N), x.subarray(m * C, (m + 1) * C), r, 1);
            });
            assert.equal(pathCount('gemv_r16'), g0 + Mmax, 'the GEMV made the reference rows');
            for (const M of Ms) {
              const at = `[${N},${C}] M=${M}, ${t} threads`;
              const y = new Float32Array(M * N);
              const before = pathCount(path);
              withAmx(int8Mode, () => be!.matmul(y, x.subarray(0, M * C), r, M));
              assert.equal(pathCount(path), before + (M >= 4 ? 1 : 0), `${at}: the ${path} path ran (from 4 rows)`);
              assert.deepEqual(y, one.subarray(0, M * N), at);
              assert.ok(y.subarray(2 * N, 3 * N).every(Number.isNaN) && y.subarray(0, N).every(Number.isFinite), `${at}: NaN stays in its row`);
              if (M === Ms[1]) {
                const xs = x.slice(0, M * C);
                xs[2 * C + 5] = 0;
                const { y: want, mag } = emulated(xs, r, M);
                const yf = new Float32Array(M * N);
                withAmx(int8Mode, () => be!.matmul(yf, xs, r, M));
                assertClose(`amx int8 ${at} vs float64`, yf, want, { atol: 1e-6, rtol: 2e-6, mag });
              }
            }
          }
        }
      } finally {
        addon!.setThreads(threads);
      }
    });
  });

  it('int8 AMX tiles by default take 16 <= M < 32 (decode batches): below, the GEMV; from 32, the GEMMs', () => {
    const script = `
      const { loadAddon } = await import(${JSON.stringify(repoUrl('src/backend/native-addon.ts').href)});
      const a = loadAddon();
      const { loadNativeBackend, nativeCounters } = await import(${JSON.stringify(repoUrl('src/backend/native.ts').href)});
      const { quantizeTensor } = await import(${JSON.stringify(repoUrl('src/tensor/quantize.ts').href)});
      const { Tensor } = await import(${JSON.stringify(repoUrl('src/tensor/tensor.ts').href)});
      const be = loadNativeBackend();
      const [N, C] = [32, 64];
      const w = quantizeTensor(Float32Array.from({ length: N * C }, (_, i) => Math.sin(i)), [N, C], 'q8_0');
      const r = new Tensor('q8_0', [N, C], a.q8Repack(w.data, N, C), undefined, undefined, 'q8_0r16');
      const out = {};
      for (const M of [8, 15, 16, 31, 32]) {
        const before = { ...nativeCounters() };
        be.matmul(new Float32Array(M * N), Float32Array.from({ length: M * C }, (_, i) => Math.cos(i)), r, M);
        const after = nativeCounters();
        out[M] = Object.keys(after).filter((k) => k.startsWith('matmul.path.') && after[k] !== (before[k] ?? 0)).join(',');
      }
      console.log(JSON.stringify(out));`;
    const env: NodeJS.ProcessEnv = { ...process.env, FLOE_AMX: int8Mode === 'tiles' ? '1' : 'emulate' };
    delete env.FLOE_AMX_Q8_MIN_M;
    delete env.FLOE_AMX_Q8_MAX_M;
    const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { env, encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    const tiles = int8Mode === 'tiles' ? 'amx_int8' : 'amx_int8_emu';
    assert.deepEqual(JSON.parse(r.stdout.trim().split('\n').pop()!), {
      8: 'matmul.path.gemv_r16.avx512', 15: 'matmul.path.gemv_r16.avx512', 16: `matmul.path.${tiles}.avx512`,
      31: `matmul.path.${tiles}.avx512`, 32: 'matmul.path.gemm_r16.avx512',
    });
  });

  it('embedding rows equal the row layout', () => {
    withSeed('q8r embedding', (rng) => {
      const [V, D] = [64, 96];
      const w = q8(rng, V, D), r = repacked(w);
      const ids = Int32Array.from({ length: 20 }, () => rng.int(0, V));
      const a = new Float32Array(20 * D), b = new Float32Array(20 * D);
      be!.embedding(a, w, ids);
      be!.embedding(b, r, ids);
      assert.deepEqual(b, a);
    });
  });

  it('AVX2 and scalar kernels read the layout correctly (generic path)', () => {
    withSeed('q8r fallback', (rng) => {
      const [N, C, M] = [48, 128, 3];
      const w = q8(rng, N, C), r = repacked(w);
      const x = rng.normals(M * C);
      const want = new Float32Array(M * N);
      const row = new Float32Array(C);
      for (let n = 0; n < N; n++) {
        dequantizeRow(w, n, row);
        for (let m = 0; m < M; m++) {
          let s = 0;
          for (let c = 0; c < C; c++) s += x[m * C + c]! * row[c]!;
          want[m * N + n] = s;
        }
      }
      try {
        for (const isa of ['avx2', 'scalar'] as const) {
          addon!.setIsa(isa);
          const y = new Float32Array(M * N);
          be!.matmul(y, x, r, M);
          assertClose(`q8_0r16 on ${isa}`, y, want, { atol: 1e-5, rtol: 1e-5 });
        }
      } finally {
        addon!.setIsa('avx512');
      }
    });
  });

  it('bad input: N not a multiple of 16, training on the layout', () => {
    withSeed('q8r errors', (rng) => {
      const w = q8(rng, 24, 64);
      assert.throws(() => addon!.q8Repack(w.data, 24, 64), /N a multiple of 16, got N=24/);
      assert.throws(() => new Tensor('q8_0', [24, 64], w.data, undefined, undefined, 'q8_0r16'), /rows a multiple of 16/);
      const r = repacked(q8(rng, 32, 64));
      const dx = new Float32Array(2 * 64), dy = rng.normals(2 * 32);
      assert.throws(() => be!.matmulBackwardInput(dx, dy, r, 2, false), /repacked for inference/);
    });
  });
});

describe('openModel repacks q8_0 weights for decode', { skip }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'floe-q8r-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const CFG: LlamaConfig = {
    vocabSize: 320, hiddenSize: 64, intermediateSize: 96, numLayers: 2, numHeads: 4, numKvHeads: 2, headDim: 16,
    rmsNormEps: 1e-5, ropeTheta: 500000, ropeScaling: null,
    maxPositionEmbeddings: 4096, tieWordEmbeddings: true, bosTokenId: null, eosTokenIds: [],
  };

  it('a q8_0 GGUF: every q8_0 matrix (and the tied head) is q8_0r16; greedy tokens and logprobs equal the row layout', async () => {
    const file = join(dir, 'q8.gguf');
    writeRandomGguf(CFG, 'q8_0', file);
    const run = async (repack: boolean) => {
      const prev = process.env.FLOE_Q8_REPACK;
      process.env.FLOE_Q8_REPACK = repack ? '1' : '0';
      try {
        const o = await openModel(file, { backend: 'native', tokenizerOptional: true });
        const layouts = o.model.weights.layers.flatMap((l) => [l.wq, l.wk, l.wv, l.wo, l.wGate, l.wUp, l.wDown]).map((t) => t.layout);
        const r = generate(o.model, [1, 5, 9, 3, 7, 2, 11, 4, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42], {
          maxTokens: 12, sampling: { temperature: 0 }, stopTokenIds: [], logprobs: 3, promptLogprobs: 3, kvDtype: 'f32',
        });
        return { layouts, head: o.model.weights.head.layout, r };
      } finally {
        if (prev === undefined) delete process.env.FLOE_Q8_REPACK;
        else process.env.FLOE_Q8_REPACK = prev;
      }
    };
    const rows = await run(false);
    const before = pathCount('gemv_r16');
    const r16 = await run(true);
    assert.ok(pathCount('gemv_r16') > before, 'decode ran the repacked GEMV');
    assert.ok(rows.layouts.every((l) => l === 'rows') && rows.head === 'rows');
    assert.ok(r16.layouts.every((l) => l === 'q8_0r16') && r16.head === 'q8_0r16', `layouts ${r16.layouts.join(',')} head ${r16.head}`);
    assert.deepEqual(r16.r.outputIds, rows.r.outputIds);
    const lp = (r: GenerateResult) => Float32Array.from([...r.logprobs!, ...r.promptLogprobs!.filter((p) => p !== null)].map((p) => p!.logprob));
    assertClose('logprobs q8_0r16 vs rows', lp(r16.r), lp(rows.r), { atol: 1e-4, rtol: 1e-4 });
  });
});
