// bf16 / f16 / fp8 / f32 repacked for decode (bf16r16, f16r16, fp8r16, f32r16): the native repack against the TS decoder of the layout, the
// interleaved GEMV (M below the GEMM's rows) and the GEMM's repacked panels against a float64 oracle of the kernels'
// own x rounding and against the row layout's kernels, batch invariance, embedding, the reference backend, the AVX2 /
// scalar fallback, bad input and the training refusal, and openModel repacking a real GGUF with greedy tokens
// unchanged. Counters prove which path ran.

import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { loadNativeBackend, nativeCounters } from '../../src/backend/native.js';
import { loadAddon } from '../../src/backend/native-addon.js';
import { referenceBackend } from '../../src/backend/reference.js';
import { bf16ToF32, dequantizeRow, encodeBf16, encodeF16, f32ToBf16 } from '../../src/tensor/codecs.js';
import { quantizeTensor } from '../../src/tensor/quantize.js';
import { f32Tensor, Tensor, DTYPE_CODE } from '../../src/tensor/tensor.js';
import { writeRandomGguf } from '../../bench/gguf-gen.js';
import type { LlamaConfig } from '../../src/model/config.js';
import { generate, type GenerateResult } from '../../src/model/generate.js';
import { openModel } from '../../src/model/open.js';
import { assertClose, assertRepackOnHugePages, gemmPath, withSeed, type Rng } from './helpers.js';
import { repoPath, ROOT } from '../repo.js';

const addon = loadAddon();
const skip = !addon || addon.supportedIsa() !== 'avx512' ? 'needs the AVX-512 native addon' : false;
const be = skip ? null : loadNativeBackend()!;

type D2 = 'bf16' | 'f16' | 'fp8_e4m3' | 'f32';
const LAYOUT = { bf16: 'bf16r16', f16: 'f16r16', fp8_e4m3: 'fp8r16', f32: 'f32r16' } as const;
/** Rows from which the native matmul takes the packed GEMM (native/mm512.inc gemm_min_m). */
const GEMM_MIN_M = { bf16: 96, f16: 160, fp8_e4m3: 64, f32: 160 } as const;
/** Bytes per weight element. */
const ES = { bf16: 2, f16: 2, fp8_e4m3: 1, f32: 4 } as const;
/**
 * The interleaved GEMV runs past GEMM_MIN_M while M · C <= R16_GEMV_X (native/mm512.inc r16_gemv_wide), where the host
 * retires one zmm FMA a cycle (addon.bf16Dot().r16Wide, FLOE_R16_WIDE forces it) or a 16-row group is at most 16 KiB:
 * always for f32r16 and f16r16; bf16r16 and fp8r16 also up to R16_GEMV_BF_M rows, where no AMX tiles run and the
 * bf16 products are vdpbf16ps. Elsewhere f32r16 and f16r16 take the GEMM from R16_NARROW_M rows.
 */
const R16_GEMV_X = 1 << 22, R16_GEMV_BF_M = 256, R16_L1_GROUP = 16 << 10, R16_NARROW_M = 96;
const facts = skip ? null : addon!.bf16Dot()!;
const wideBf = skip ? false : !addon!.amx().active && facts!.mode === 'dpbf16';
function pastGemm(dt: D2, C: number): boolean {
  return facts!.r16Wide || 16 * C * ES[dt] <= R16_L1_GROUP;
}
/** Rows from which M rows over C columns take the GEMM unless wideGemv keeps the GEMV. */
function gemmM(dt: D2, C: number): number {
  return (dt === 'f16' || dt === 'f32') && !pastGemm(dt, C) ? R16_NARROW_M : GEMM_MIN_M[dt];
}
function wideGemv(dt: D2, M: number, C: number): boolean {
  if (M * C > R16_GEMV_X || !pastGemm(dt, C)) return false;
  return dt === 'f32' || dt === 'f16' || (wideBf && M <= R16_GEMV_BF_M);
}
/** The path a matmul of M rows over C columns takes on the repacked layout. */
function r16Path(dt: D2, M: number, C: number): string {
  return M < gemmM(dt, C) || wideGemv(dt, M, C) ? 'gemv_r16' : gemmPath(dt);
}
/** fp8 scale grids [br, bc] the tests cycle through: per row, per tensor, 128×128, small blocks (multiples of 4 columns). */
const FP8_BLOCKS: ((C: number, N: number) => [number, number])[] = [(C) => [1, C], (C, N) => [N, C], () => [128, 128], () => [3, 20], () => [16, 8], () => [5, 4]];
let blockTurn = 0;

function weight(rng: Rng, dt: D2, N: number, C: number, block?: [number, number]): Tensor {
  const f = rng.normals(N * C, 0.5);
  if (dt === 'fp8_e4m3') return quantizeTensor(f, [N, C], dt, { fp8Block: block ?? FP8_BLOCKS[blockTurn++ % FP8_BLOCKS.length]!(C, N) });
  if (dt === 'f32') return f32Tensor([N, C], f);
  return new Tensor(dt, [N, C], dt === 'bf16' ? encodeBf16(f) : encodeF16(f));
}
function repacked(t: Tensor): Tensor {
  const dt = t.dtype as D2;
  return new Tensor(dt, t.shape, addon!.r16Repack(t.data, DTYPE_CODE[dt], t.rows, t.cols), t.scale, t.scaleBlock, LAYOUT[dt]);
}

/** y (M, N) = x̂ · wᵀ in float64, x̂ = x as the kernels read it (bf16, fp8: rounded to bf16 once; f16, f32: f32); mag = Σ|x̂·w|. */
function oracle(x: Float32Array, w: Tensor, M: number): { y: Float64Array; mag: Float64Array } {
  const [N, C] = [w.rows, w.cols];
  const xk = w.dtype === 'bf16' || w.dtype === 'fp8_e4m3' ? Float64Array.from(x, (v) => bf16ToF32(f32ToBf16(v))) : Float64Array.from(x);
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
// bf16 GEMV calls whose products ran as this host's choice (vdpbf16ps or f32 FMA; FLOE_BF16_DOT forces one)
const DOT = skip ? 'dpbf16' : addon!.bf16Dot()!.mode;
function dotCount(): number {
  return nativeCounters()[`gemv_r16.${DOT}.avx512`] ?? 0;
}
// GEMV calls that took one pass by halves of the chains (rows_bf16r_halves: bf16r16, 8-12 rows; rows_f16r_halves:
// f16r16, 5-8 rows; f32r16, 5-10 rows)
function halvesCount(dt: string): number {
  return nativeCounters()[`gemv_r16.${dt}_halves.avx512`] ?? 0;
}
const HALVES: Record<string, [number, number]> = { bf16: [8, 12], f16: [5, 8], f32: [5, 10] };

describe('bf16 products: vdpbf16ps or f32 FMA, by a measured host fact', { skip }, () => {
  it('measures both rates and picks FMA only where it runs > 1.25x the multiply-adds; FLOE_BF16_DOT forces a mode', () => {
    const d = addon!.bf16Dot()!;
    assert.ok(d.fmaGmacs > 0 && d.dpbf16Gmacs > 0, JSON.stringify(d));
    const env = process.env.FLOE_BF16_DOT;
    if (env === 'fma' || env === 'dpbf16') assert.deepEqual([d.mode, d.forced], [env, true]);
    else assert.deepEqual([d.mode, d.forced], [d.fmaGmacs > 1.25 * d.dpbf16Gmacs ? 'fma' : 'dpbf16', false], JSON.stringify(d));
    assert.deepEqual(addon!.bf16Dot(), d, 'measured once');
  });
  it('measures the zmm FMAs a cycle and runs the GEMV past the GEMM only below 1.5 of them; FLOE_R16_WIDE forces it', () => {
    const d = addon!.bf16Dot()!;
    // every x86 core this project meets retires one or two zmm FMAs a cycle, at 1-6 GHz
    assert.ok(d.ghz > 0.8 && d.ghz < 7 && d.fmaPerCycle > 0.7 && d.fmaPerCycle < 2.6, JSON.stringify(d));
    const env = process.env.FLOE_R16_WIDE;
    if (env === '0' || env === '1') assert.deepEqual([d.r16Wide, d.r16WideForced], [env === '1', true]);
    else assert.deepEqual([d.r16Wide, d.r16WideForced], [d.fmaPerCycle < 1.5, false], JSON.stringify(d));
  });
});

for (const dt of ['bf16', 'f16', 'fp8_e4m3', 'f32'] as const) {
  describe(`${LAYOUT[dt]}: the repacked ${dt} layout`, { skip }, () => {
    it('repacks every row to the same values (TS decoder of the layout vs the row layout), aligned', () => {
      withSeed(`${dt} r16 repack`, (rng) => {
        // the last shapes pass 2 MiB, not a multiple of it: a buffer of its own mapping (native/addon.cc weight_alloc)
        const shapes: [number, number][] = dt === 'fp8_e4m3' ? [[16, 4], [32, 64], [48, 132], [64, 2048], [1040, 2052]] : [[16, 2], [32, 64], [48, 130], [64, 2048], [528, 2050]];
        if (dt === 'f16' || dt === 'f32') shapes.push([16, 33]);
        for (const [N, C] of shapes) {
          const w = weight(rng, dt, N, C), r = repacked(w);
          assert.equal(r.data.byteLength, w.data.byteLength, 'same bytes, another order');
          assert.equal(r.data.byteOffset, 0);
          assert.notDeepEqual(N > 16 ? r.data : null, N > 16 ? w.data : undefined);
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
      withSeed(`${dt} r16 huge pages`, (rng) => assertRepackOnHugePages(t, weight(rng, dt, 4096, 2048), repacked));
    });

    it(`matmul: GEMV below ${GEMM_MIN_M[dt]} rows${dt === 'f16' || dt === 'f32' ? ` (${R16_NARROW_M} for groups past 16 KiB where the GEMV is not wide)` : ''}, past them where wide (4M x values${dt === 'bf16' || dt === 'fp8_e4m3' ? ' and 256 rows, without AMX' : ''}), GEMM from there, against the float64 oracle and the row layout`, () => {
      withSeed(`${dt} r16 matmul`, (rng) => {
        // [320, 1024] reads >= 320 KB a row: split over the threads from M = 1; the others run on the calling thread
        // while weight bytes × M stay under 256 KiB (FLOE_GEMV_SERIAL)
        const shapes: [number, number][] = [[48, 96], [64, dt === 'fp8_e4m3' ? 164 : 162], [32, 512], [320, 1024]];
        if (dt === 'f16' || dt === 'f32') shapes.push([16, 37]);
        shapes.push([16, 8192]);  // past 4M x values (and 256 rows) at M = 513: the GEMM
        for (const [N, C] of shapes) for (let b = 0; b < (dt === 'fp8_e4m3' && C !== 8192 ? FP8_BLOCKS.length : 1); b++) {
          const w = weight(rng, dt, N, C), r = repacked(w);
          const g = gemmM(dt, C);
          const Ms = C === 8192 ? [1, 9, 95, 96, 160, 256, 257, 511, 513] : [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 16, 17, g - 1, g, g + 3];
          for (const M of Ms) {
            const x = rng.normals(M * C);
            const { y: want, mag } = oracle(x, w, M);
            const got = new Float32Array(M * N), rows = new Float32Array(M * N);
            const path = r16Path(dt, M, C);
            const before = pathCount(path), serial0 = serialCount(), dot0 = dotCount(), halves0 = halvesCount(dt);
            be!.matmul(got, x, r, M);
            assert.equal(pathCount(path), before + 1, `M=${M} ran the ${path} path`);
            const [h0, h1] = HALVES[dt] ?? [0, -1];
            assert.equal(halvesCount(dt) - halves0, M >= h0 && M <= h1 ? 1 : 0, `M=${M}: one pass by halves of the chains (${h0}-${h1} rows)`);
            // bf16 / fp8 GEMVs multiply by this host's bf16 products (addon.bf16Dot()); f16 widens to f32 on its own
            assert.equal(dotCount() - dot0, path === 'gemv_r16' && (dt === 'bf16' || dt === 'fp8_e4m3') ? 1 : 0, `M=${M}: the ${DOT} products ran`);
            const serial = path === 'gemv_r16' && addon!.getThreads() > 1 && N * C * ES[dt] * M < 256 * 1024;
            assert.equal(serialCount() - serial0, serial ? 1 : 0, `[${N},${C}] M=${M}: on the calling thread ${serial}`);
            assertClose(`${LAYOUT[dt]} [${N},${C}] block ${w.scaleBlock ?? '-'} M=${M} vs float64`, got, want, { atol: 1e-6, rtol: 2e-6, mag });
            be!.matmul(rows, x, w, M);
            assertClose(`${LAYOUT[dt]} vs ${dt} rows [${N},${C}] M=${M}`, got, rows, { atol: 1e-6, rtol: 4e-6, mag });
          }
        }
      });
    });

    // also past the GEMM's rows (prefill chunks) where the GEMV still runs (wideGemv)
    const mMax = (C: number): number => (wideGemv(dt, 320, C) ? 320 : gemmM(dt, C) - 1);
    it(`batch invariance: each row of M <= ${mMax(4200)} (C = 4200) equals its M = 1 result bit for bit, at 1 and 2 threads`, () => {
      withSeed(`${dt} r16 invariance`, (rng) => {
        const threads = addon!.getThreads();
        try {
          // fp8 also: a scale block wider than the kernel's 2048-column parts, not dividing C, and one scale per row
          const cases: [number, number, [number, number] | undefined][] = dt === 'fp8_e4m3' ? [[80, 260, [3, 20]], [32, 4200, [16, 2560]], [32, 4400, [1, 4400]]] : [[80, 260, undefined], [48, 262, undefined], [32, 4200, undefined]]; // 262: an odd number of bf16 pairs; 4200: passes over groups of 134 KiB (bf16), L2 not L1
          for (const t of [1, 2]) for (const [N, C, block] of cases) {
            addon!.setThreads(t);
            const Mmax = mMax(C);
            const r = repacked(weight(rng, dt, N, C, block));
            const x = rng.normals(Mmax * C);
            const one = new Float32Array(Mmax * N);
            for (let m = 0; m < Mmax; m++) be!.matmul(one.subarray(m * N, (m + 1) * N), x.subarray(m * C, (m + 1) * C), r, 1);
            for (const M of [2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 16, 17, 31, 64, 160, 257, Mmax].filter((m) => m <= Mmax)) {
              const y = new Float32Array(M * N);
              be!.matmul(y, x.subarray(0, M * C), r, M);
              assert.deepEqual(y, one.subarray(0, M * N), `[${N},${C}] block ${block ?? '-'} M=${M}, ${t} threads`);
            }
          }
        } finally {
          addon!.setThreads(threads);
        }
      });
    });

    it('embedding rows and the reference backend equal the row layout', () => {
      withSeed(`${dt} r16 embedding`, (rng) => {
        const [V, D, M] = [64, 96, 3];
        const w = weight(rng, dt, V, D), r = repacked(w);
        const ids = Int32Array.from({ length: 20 }, () => rng.int(0, V));
        const a = new Float32Array(20 * D), b = new Float32Array(20 * D);
        be!.embedding(a, w, ids);
        be!.embedding(b, r, ids);
        assert.deepEqual(b, a);
        const ref = referenceBackend;
        const x = rng.normals(M * D), ya = new Float32Array(M * V), yb = new Float32Array(M * V);
        ref.matmul(ya, x, w, M);
        ref.matmul(yb, x, r, M);
        assert.deepEqual(yb, ya);
      });
    });

    it('AVX2 and scalar kernels read the layout correctly (generic path)', () => {
      withSeed(`${dt} r16 fallback`, (rng) => {
        const [N, C, M] = [48, 132, 3];
        const w = weight(rng, dt, N, C), r = repacked(w);
        const x = rng.normals(M * C);
        const want = new Float32Array(M * N), row = new Float32Array(C);
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
            assertClose(`${LAYOUT[dt]} on ${isa}`, y, want, { atol: 1e-5, rtol: 1e-5 });
          }
        } finally {
          addon!.setIsa('avx512');
        }
      });
    });

    it('bad input: N not a multiple of 16, odd C for bf16, a wrong dtype code, training on the layout', () => {
      withSeed(`${dt} r16 errors`, (rng) => {
        const w = weight(rng, dt, 24, 64);
        assert.throws(() => addon!.r16Repack(w.data, DTYPE_CODE[dt], 24, 64), new RegExp(`${LAYOUT[dt]} needs N a multiple of 16, got N=24`));
        const bytes = ES[dt];
        assert.throws(() => addon!.r16Repack(w.data, DTYPE_CODE[dt], 16, 64), new RegExp(`bytes has ${24 * 64 * bytes} elements, expected ${16 * 64 * bytes}`));
        assert.throws(() => addon!.r16Repack(w.data, DTYPE_CODE.q8_0, 24, 64), /dtype code must be 2 \(bf16\), 1 \(f16\), 3 \(fp8_e4m3\) or 0 \(f32\), got 4/);
        assert.throws(() => new Tensor(dt, [24, 64], w.data, w.scale, w.scaleBlock, LAYOUT[dt]), /rows a multiple of 16/);
        if (dt === 'bf16' || dt === 'fp8_e4m3') {
          const odd = weight(rng, dt, 16, 34, [1, 34]);
          assert.throws(() => addon!.r16Repack(odd.data, DTYPE_CODE[dt], 16, dt === 'bf16' ? 33 : 34), dt === 'bf16' ? /even C \(bf16 pairs\), got C=33/ : /C a multiple of 4, got C=34/);
          assert.throws(() => new Tensor(dt, [16, 34].map((v, i) => i === 1 && dt === 'bf16' ? 33 : v), dt === 'bf16' ? odd.data.subarray(0, 16 * 33 * 2) : odd.data, odd.scale, dt === 'bf16' ? undefined : odd.scaleBlock, LAYOUT[dt]), dt === 'bf16' ? /columns a multiple of 2/ : /columns a multiple of 4/);
        }
        if (dt === 'fp8_e4m3') {  // a scale grid whose column blocks split a 4-column line
          const odd = weight(rng, dt, 16, 64, [1, 6]);
          const r = new Tensor(dt, [16, 64], addon!.r16Repack(odd.data, DTYPE_CODE[dt], 16, 64), odd.scale, odd.scaleBlock, 'fp8r16');
          assert.throws(() => be!.matmul(new Float32Array(16), rng.normals(64), r, 1), /scale column blocks of a multiple of 4 columns, got 6/);
        }
        const r = repacked(weight(rng, dt, 32, 64));
        const dx = new Float32Array(2 * 64), dy = rng.normals(2 * 32);
        assert.throws(() => be!.matmulBackwardInput(dx, dy, r, 2, false), new RegExp(`a ${LAYOUT[dt]} weight is repacked for inference`));
      });
    });
  });
}

describe('openModel repacks bf16 / f16 weights for decode', { skip }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'floe-r16-'));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const CFG: LlamaConfig = {
    vocabSize: 320, hiddenSize: 64, intermediateSize: 96, numLayers: 2, numHeads: 4, numKvHeads: 2, headDim: 16,
    rmsNormEps: 1e-5, ropeTheta: 500000, ropeScaling: null,
    maxPositionEmbeddings: 4096, tieWordEmbeddings: true, bosTokenId: null, eosTokenIds: [],
  };

  for (const dt of ['bf16', 'f16'] as const) {
    it(`a ${dt} GGUF: every ${dt} matrix (and the tied head) is ${LAYOUT[dt]}; greedy tokens and logprobs equal the row layout`, async () => {
      const file = join(dir, `${dt}.gguf`);
      writeRandomGguf(CFG, dt, file);
      const run = async (repack: boolean) => {
        const prev = process.env.FLOE_R16_REPACK;
        process.env.FLOE_R16_REPACK = repack ? '1' : '0';
        try {
          const o = await openModel(file, { backend: 'native', tokenizerOptional: true });
          const layouts = o.model.weights.layers.flatMap((l) => [l.wq, l.wk, l.wv, l.wo, l.wGate, l.wUp, l.wDown]).map((t) => t.layout);
          const r = generate(o.model, [1, 5, 9, 3, 7, 2, 11, 4, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42], {
            maxTokens: 12, sampling: { temperature: 0 }, stopTokenIds: [], logprobs: 3, promptLogprobs: 3, kvDtype: 'f32',
          });
          return { layouts, head: o.model.weights.head.layout, r };
        } finally {
          if (prev === undefined) delete process.env.FLOE_R16_REPACK;
          else process.env.FLOE_R16_REPACK = prev;
        }
      };
      const rows = await run(false);
      const before = pathCount('gemv_r16');
      const r16 = await run(true);
      assert.ok(pathCount('gemv_r16') > before, 'decode ran the repacked GEMV');
      assert.ok(rows.layouts.every((l) => l === 'rows') && rows.head === 'rows');
      assert.ok(r16.layouts.every((l) => l === LAYOUT[dt]) && r16.head === LAYOUT[dt], `layouts ${r16.layouts.join(',')} head ${r16.head}`);
      assert.deepEqual(r16.r.outputIds, rows.r.outputIds);
      const lp = (r: GenerateResult) => Float32Array.from([...r.logprobs!, ...r.promptLogprobs!.filter((p) => p !== null)].map((p) => p!.logprob));
      assertClose(`logprobs ${LAYOUT[dt]} vs rows`, lp(r16.r), lp(rows.r), { atol: 1e-4, rtol: 1e-4 });
    });
  }
});

describe('openModel repacks the PyTorch-made fixtures (bf16, fp8 128×128 blocks, fp8 per channel, f32)', { skip }, () => {
  const ROOT = repoPath('test/fixtures/models/');
  for (const [fixture, layout] of [['bf16', 'bf16r16'], ['fp8_block', 'fp8r16'], ['fp8_channel', 'fp8r16'], ['gqa_f32', 'f32r16']] as const) {
    it(`${fixture}: linears are ${layout}; greedy tokens equal the row layout and PyTorch's`, async () => {
      const dir = join(ROOT, fixture);
      const ref = JSON.parse(readFileSync(join(dir, 'reference.json'), 'utf8')) as { prompt_ids: number[]; greedy_ids: number[] };
      const run = async (repack: boolean) => {
        const prev = process.env.FLOE_R16_REPACK;
        process.env.FLOE_R16_REPACK = repack ? '1' : '0';
        try {
          const o = await openModel(dir, { backend: 'native', tokenizerOptional: true });
          const layouts = o.model.weights.layers.flatMap((l) => [l.wq, l.wk, l.wv, l.wo, l.wGate, l.wUp, l.wDown]).map((t) => t.layout);
          const r = generate(o.model, ref.prompt_ids, {
            maxTokens: ref.greedy_ids.length, sampling: { temperature: 0 }, stopTokenIds: [], logprobs: 3, kvDtype: 'f32',
          });
          return { layouts, r };
        } finally {
          if (prev === undefined) delete process.env.FLOE_R16_REPACK;
          else process.env.FLOE_R16_REPACK = prev;
        }
      };
      const rows = await run(false);
      const before = pathCount('gemv_r16');
      const r16 = await run(true);
      assert.ok(pathCount('gemv_r16') > before, 'decode ran the repacked GEMV');
      assert.ok(rows.layouts.every((l) => l === 'rows'));
      assert.ok(r16.layouts.every((l) => l === layout), `layouts ${r16.layouts.join(',')}`);
      assert.deepEqual(r16.r.outputIds, rows.r.outputIds);
      assert.deepEqual(r16.r.outputIds, ref.greedy_ids, 'PyTorch greedy tokens');
      const lp = (r: GenerateResult) => Float32Array.from(r.logprobs!.map((p) => p.logprob));
      assertClose(`logprobs ${layout} vs rows`, lp(r16.r), lp(rows.r), { atol: 1e-4, rtol: 1e-4 });
    });
  }
});
