// Native batched decode (AVX-512, 2 <= M < the GEMM threshold): every weight dtype on shapes crossing the batch
// kernels' edges, against float64; q8_0 also against an exact model of its numerics; 1 vs 2 threads; the path counter.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { WEIGHT_DTYPES } from '../../src/backend/backend.js';
import { loadNativeBackend, nativeCounters } from '../../src/backend/native.js';
import { loadAddon } from '../../src/backend/native-addon.js';
import { f16ToF32 } from '../../src/tensor/codecs.js';
import { quantizeTensor } from '../../src/tensor/quantize.js';
import type { Tensor } from '../../src/tensor/tensor.js';
import { assertClose, avx512MatmulPath, BATCH_MIN_M, f64Matmul, GEMM_MIN_M, MATMUL_RTOL, withSeed } from './helpers.js';

const addon = loadAddon();
const skip = !addon || addon.supportedIsa() !== 'avx512' ? 'needs the AVX-512 native addon' : false;

/**
 * y (M, N) as the q8_0 kernels compute it, in float64: x quantized per 32-block like x_to_q8 (d = max|x|/127 and
 * 127/max|x| in f32, q = RNE(x · 127/max|x|)), int sums exact, each block's sum times f32(d_x · d_w).
 */
function q8Model(x: Float32Array, w: Tensor, M: number): { y: Float64Array; mag: Float64Array } {
  const [N, C] = [w.rows, w.cols];
  const nb = C / 32;
  const qx = new Int32Array(M * C);
  const dx = new Float64Array(M * nb);
  for (let m = 0; m < M; m++) for (let b = 0; b < nb; b++) {
    let amax = 0;
    for (let i = 0; i < 32; i++) amax = Math.max(amax, Math.abs(x[m * C + b * 32 + i]!));
    dx[m * nb + b] = Math.fround(amax / 127);
    const id = amax > 0 ? Math.fround(127 / amax) : 0;
    for (let i = 0; i < 32; i++) {
      const v = Math.fround(x[m * C + b * 32 + i]! * id);
      const r = Math.round(v);
      qx[m * C + b * 32 + i] = Math.abs(v - Math.trunc(v)) === 0.5 ? 2 * Math.round(v / 2) : r; // RNE
    }
  }
  const y = new Float64Array(M * N);
  const mag = new Float64Array(M * N);
  for (let n = 0; n < N; n++) for (let b = 0; b < nb; b++) {
    const o = (n * nb + b) * 34;
    const dw = f16ToF32(w.data[o]! | (w.data[o + 1]! << 8));
    for (let m = 0; m < M; m++) {
      let s = 0;
      for (let i = 0; i < 32; i++) s += qx[m * C + b * 32 + i]! * ((w.data[o + 2 + i]! << 24) >> 24);
      const t = s * Math.fround(dx[m * nb + b]! * dw);
      y[m * N + n] += t;
      mag[m * N + n] += Math.abs(t);
    }
  }
  return { y, mag };
}

describe('native batched decode (AVX-512, 2 <= M < GEMM threshold)', { skip }, () => {
  const be = loadNativeBackend()!;
  // [M, C, N]: M across the 4-row (tiles) and 6-row (q8_0) tiles and up to the GEMM threshold; C with column tails,
  // past a q8_0 chunk of 16 blocks with an odd block count (1056 = 33 blocks), and (M · C large) past one x panel;
  // N below a tile, across the 32-row q8_0 groups and the tasks' row chunks.
  const shapes = (dtype: (typeof WEIGHT_DTYPES)[number]): [number, number, number][] => {
    const top = GEMM_MIN_M[dtype] - 1;
    const s: [number, number, number][] = [[2, 72, 3], [BATCH_MIN_M[dtype], 200, 33], [7, 1056, 65], [13, 96, 130], [16, 328, 31], [31, 544, 97], [top, 160, 17]];
    if (dtype !== 'q8_0') s.push([top, 4500, 20]); // bf16 x of top rows · 4500 columns > one 512 KiB panel
    return dtype === 'q8_0' ? s.map(([M, C, N]) => [M, Math.ceil(C / 32) * 32, N]) : s;
  };
  for (const dtype of WEIGHT_DTYPES) {
    const blocks: ([number, number] | undefined)[] = dtype === 'fp8_e4m3' ? [[1, 0], [128, 128], [2, 32], [3, 20]] : [undefined];
    it(`${dtype}: batch path at 1 and 2 threads, tails${dtype === 'fp8_e4m3' ? ', scale grids' : ''}`, () => {
      const a = addon!;
      const prev = a.getThreads();
      try {
        for (const [M, C, N] of shapes(dtype)) {
          for (const block of blocks) {
            withSeed(`batch ${dtype} M=${M} C=${C} N=${N} block=${block ?? '-'}`, (rng) => {
              if (dtype === 'f32' || avx512MatmulPath(dtype, M, N, C) !== 'batch') return; // f32 with N <= 16 is thin
              const fp8Block: [number, number] | undefined = block ? [block[0], block[1] || C] : undefined;
              const w = quantizeTensor(rng.normals(N * C, 0.5), [N, C], dtype, { fp8Block });
              const x = rng.normals(M * C);
              const ys: Float32Array[] = [];
              for (const t of [1, 2]) {
                a.setThreads(t);
                const y = new Float32Array(M * N).fill(NaN);
                const before = nativeCounters()['matmul.path.batch.avx512'] ?? 0;
                be.matmul(y, x, w, M);
                assert.equal(nativeCounters()['matmul.path.batch.avx512'], before + 1, `batch ${dtype} (M=${M}, C=${C}, N=${N}): the batch path ran`);
                ys.push(y);
              }
              const want = f64Matmul(x, w, M);
              assertClose(`batch ${dtype} (M=${M}, C=${C}, N=${N})`, ys[0]!, want.y, { atol: 1e-6, rtol: MATMUL_RTOL[dtype], mag: want.mag });
              if (dtype === 'q8_0') {
                // the kernel's own numerics, to f32 accumulation order: a wrong scale on any one block shows
                const exact = q8Model(x, w, M);
                assertClose(`batch q8_0 vs its numerics (M=${M}, C=${C}, N=${N})`, ys[0]!, exact.y, { atol: 1e-6, rtol: 1e-5, mag: exact.mag });
              }
              assert.deepEqual(ys[1], ys[0], `batch ${dtype} (M=${M}, C=${C}, N=${N}): 2 threads vs 1`);
            });
          }
        }
      } finally {
        a.setThreads(prev);
      }
    });
  }

  it('f32 batch path (N, C > 16: not the thin kernels)', () => {
    for (const [M, C, N] of [[2, 72, 17], [9, 200, 33], [45, 1000, 70]] as const) {
      withSeed(`batch f32 M=${M} C=${C} N=${N}`, (rng) => {
        const w = quantizeTensor(rng.normals(N * C, 0.5), [N, C], 'f32');
        const x = rng.normals(M * C);
        const y = new Float32Array(M * N).fill(NaN);
        const before = nativeCounters()['matmul.path.batch.avx512'] ?? 0;
        be.matmul(y, x, w, M);
        assert.equal(nativeCounters()['matmul.path.batch.avx512'], before + 1, 'the batch path ran');
        const want = f64Matmul(x, w, M);
        assertClose(`batch f32 (M=${M}, C=${C}, N=${N})`, y, want.y, { atol: 1e-6, rtol: MATMUL_RTOL.f32, mag: want.mag });
      });
    }
  });

  it('q8_0 below its batch threshold runs the register tiles', () => {
    withSeed('q8_0 tiles', (rng) => {
      const [N, C] = [40, 96];
      const w = quantizeTensor(rng.normals(N * C, 0.5), [N, C], 'q8_0');
      for (const M of [2, BATCH_MIN_M.q8_0 - 1]) {
        const before = nativeCounters()['matmul.path.tiles.avx512'] ?? 0;
        const x = rng.normals(M * C);
        const y = new Float32Array(M * N);
        be.matmul(y, x, w, M);
        assert.equal(nativeCounters()['matmul.path.tiles.avx512'], before + 1, `q8_0 M=${M}: tiles`);
        const exact = q8Model(x, w, M);
        assertClose(`tiles q8_0 vs its numerics (M=${M})`, y, exact.y, { atol: 1e-6, rtol: 1e-5, mag: exact.mag });
      }
    });
  });
});
