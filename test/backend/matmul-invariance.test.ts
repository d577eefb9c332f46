// Batch-invariant matmuls: for M = 1 .. GEMV_MAX_M every row of y (M, N) = x (M, C) · wᵀ is bitwise the row that
// M = 1 gives (decode step vs speculative verify), every weight dtype, tails, 1 and 2 threads; GEMV path asserted,
// values against a float64 reference.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { loadAddon } from '../../src/backend/native-addon.js';
import { loadNativeBackend, nativeCounters } from '../../src/backend/native.js';
import { quantizeTensor } from '../../src/tensor/quantize.js';
import type { DType } from '../../src/tensor/tensor.js';
import { assertClose, f64Matmul, GEMM_MIN_M, GEMV_MAX_M, MATMUL_RTOL, withSeed } from './helpers.js';

const addon = loadAddon();
const avx512 = addon?.isa() === 'avx512';
const skip = !avx512 && 'needs the native addon on an AVX-512 host';

// [label, dtype, fp8 scale block]: fp8 with per-row scales, 64-multiple blocks (x in conv64 order) and 32-column
// blocks (plain order)
const CASES: [string, DType, (readonly [number, number])?][] = [
  ['f32', 'f32'], ['f16', 'f16'], ['bf16', 'bf16'], ['q8_0', 'q8_0'],
  ['fp8 row scales', 'fp8_e4m3'], ['fp8 (16, 128) blocks', 'fp8_e4m3', [16, 128]], ['fp8 (8, 32) blocks', 'fp8_e4m3', [8, 32]],
];

/** First row and column where y (M, N) differs bitwise from the M = 1 rows `one`. */
function diff(y: Float32Array, one: Float32Array, M: number, N: number): string | null {
  const a = new Uint32Array(y.buffer, y.byteOffset, M * N), b = new Uint32Array(one.buffer, one.byteOffset, M * N);
  for (let i = 0; i < M * N; i++) if (a[i] !== b[i]) return `row ${Math.floor(i / N)} col ${i % N}: ${y[i]} vs ${one[i]} at M = 1`;
  return null;
}

describe('batch-invariant matmuls (AVX-512 GEMV, M = 1 .. GEMV_MAX_M)', { skip }, () => {
  const be = loadNativeBackend()!;
  for (const [label, dtype, fp8Block] of CASES) {
    it(`${label}: each row at M = 2 .. ${GEMV_MAX_M} equals its M = 1 result bitwise, 1 and 2 threads`, () => {
      const a = addon!;
      const prev = a.getThreads();
      try {
        // [N, C]: N off the 4-row pass and across thread chunks; C with tails past 16/32/64 (q8_0: whole blocks)
        for (const [N, C] of [[37, 200], [130, 96], [67, 1056]] as const) {
          const Cq = dtype === 'q8_0' ? Math.ceil(C / 32) * 32 : C;
          withSeed(`${label} N=${N} C=${Cq}`, (rng) => {
            const w = quantizeTensor(rng.normals(N * Cq, 0.5), [N, Cq], dtype, fp8Block ? { fp8Block } : {});
            const x = rng.normals(GEMV_MAX_M * Cq, 2);
            for (const t of [1, 2]) {
              a.setThreads(t);
              const one = new Float32Array(GEMV_MAX_M * N);
              for (let m = 0; m < GEMV_MAX_M; m++) be.matmul(one.subarray(m * N, (m + 1) * N), x.subarray(m * Cq, (m + 1) * Cq), w, 1);
              for (let M = 2; M <= GEMV_MAX_M; M++) {
                const before = nativeCounters()['matmul.path.gemv.avx512'] ?? 0;
                const y = new Float32Array(M * N).fill(NaN);
                be.matmul(y, x.subarray(0, M * Cq), w, M);
                assert.equal(nativeCounters()['matmul.path.gemv.avx512'], before + 1, `${label} M=${M}: the GEMV ran`);
                const d = diff(y, one, M, N);
                assert.equal(d, null, `${label} N=${N} C=${Cq} M=${M}, ${t} threads: ${d}`);
              }
              const want = f64Matmul(x, w, GEMV_MAX_M);
              assertClose(`${label} N=${N} C=${Cq} M=${GEMV_MAX_M}`, one, want.y, { atol: 1e-6, rtol: MATMUL_RTOL[dtype as keyof typeof MATMUL_RTOL], mag: want.mag });
            }
          });
        }
      } finally {
        a.setThreads(prev);
      }
    });
  }

  // f32 rows past the GEMV (the register tiles, below the packed GEMM) sum their lanes as the GEMV does, so a row has
  // the same bits on either path while the tiles keep C in one panel: prefill chunks, embedding batches and pipeline
  // micro-batches that land on either side of GEMV_MAX_M agree exactly
  it(`f32: rows at M = ${GEMV_MAX_M + 1} .. ${GEMM_MIN_M.f32 - 1} (register tiles, C in one panel) equal their M = 1 GEMV rows bitwise`, () => {
    const be = loadNativeBackend()!;
    for (const [N, C] of [[37, 200], [67, 1056], [256, 704]] as const) {
      withSeed(`f32 tiles N=${N} C=${C}`, (rng) => {
        const w = quantizeTensor(rng.normals(N * C, 0.5), [N, C], 'f32');
        // from 512 KiB / (4 M) columns on, the tiles split C into panels (tiles.inc panel_cols) and add partial sums
        for (const M of [GEMV_MAX_M + 1, 40, Math.min(GEMM_MIN_M.f32 - 1, Math.floor(128 * 1024 / (Math.ceil(C / 64) * 64)))]) {
          const x = rng.normals(M * C, 2);
          const one = new Float32Array(M * N);
          for (let m = 0; m < M; m++) be.matmul(one.subarray(m * N, (m + 1) * N), x.subarray(m * C, (m + 1) * C), w, 1);
          const before = nativeCounters()['matmul.path.tiles.avx512'] ?? 0;
          const y = new Float32Array(M * N).fill(NaN);
          be.matmul(y, x, w, M);
          assert.equal(nativeCounters()['matmul.path.tiles.avx512'], before + 1, `f32 M=${M}: the register tiles ran`);
          const d = diff(y, one, M, N);
          assert.equal(d, null, `f32 N=${N} C=${C} M=${M}: ${d}`);
        }
      });
    }
  });
});
