// Native batched decode (AVX-512 q8_0, qbatch in native/mm512.inc): shapes crossing the kernel's edges against float64
// and against an exact model of its int8 numerics; 1 vs 2 threads; the path counter.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { loadNativeBackend, nativeCounters } from '../../src/backend/native.js';
import { loadAddon } from '../../src/backend/native-addon.js';
import { f16ToF32 } from '../../src/tensor/codecs.js';
import { quantizeTensor } from '../../src/tensor/quantize.js';
import type { Tensor } from '../../src/tensor/tensor.js';
import { assertClose, avx512MatmulPath, f64Matmul, GEMM_MIN_M, GEMV_MAX_M, MATMUL_RTOL, withSeed } from './helpers.js';

const addon = loadAddon();
const skip = !addon || addon.supportedIsa() !== 'avx512' ? 'needs the AVX-512 native addon' : false;

/**
 * y (M, N) as the q8_0 kernels compute it, in float64: x quantized per 32-block like x_to_q8 (d = max|x|/127 and
 * 127/max|x| in f32, q = RNE(x · 127/max|x|)), int sums exact, each block's sum times f32(d_x · d_w).
 * `mag`: Σ |block sum · d|. `laneMag`: the GEMV's f32 terms instead (rows_q8): it scales each 4-byte lane of a block
 * on its own, with w + 128 unsigned and -128·Σx in lane 0, so those lanes are large and cancel (a block summing to 28
 * can hold lanes near ±20,000); their f32 rounding sets its error, not the block sum's.
 */
function q8Model(x: Float32Array, w: Tensor, M: number): { y: Float64Array; mag: Float64Array; laneMag: Float64Array } {
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
  const laneMag = new Float64Array(M * N);
  for (let n = 0; n < N; n++) for (let b = 0; b < nb; b++) {
    const o = (n * nb + b) * 34;
    const dw = f16ToF32(w.data[o]! | (w.data[o + 1]! << 8));
    for (let m = 0; m < M; m++) {
      let s = 0, sx = 0, lanes = 0;
      const lane = new Float64Array(8);
      for (let i = 0; i < 32; i++) {
        const q = qx[m * C + b * 32 + i]!, wq = (w.data[o + 2 + i]! << 24) >> 24;
        s += q * wq;
        sx += q;
        lane[i >> 2]! += q * (wq + 128);
      }
      lane[0]! -= 128 * sx;
      for (const l of lane) lanes += Math.abs(l);
      const d = Math.fround(dx[m * nb + b]! * dw);
      y[m * N + n] += s * d;
      mag[m * N + n] += Math.abs(s * d);
      laneMag[m * N + n] += lanes * Math.abs(d);
    }
  }
  return { y, mag, laneMag };
}

describe('native batched decode (AVX-512 q8_0, MIN_M <= M < GEMM threshold)', { skip }, () => {
  const be = loadNativeBackend()!;
  // [M, C, N]: M across the 6-row tiles up to the GEMM threshold; C with an odd block count and past a chunk of 16
  // blocks (1056 = 33 blocks); N below a tile row group, across the 32-row groups and the tasks' row chunks.
  const shapes: [number, number, number][] = [[GEMV_MAX_M + 1, 224, 33], [19, 1056, 65], [23, 96, 130], [26, 352, 31], [17, 64, 3], [GEMM_MIN_M.q8_0 - 1, 544, 97]];
  it('q8_0: batch path at 1 and 2 threads, tails, against float64 and against its int8 numerics', () => {
    const a = addon!;
    const prev = a.getThreads();
    try {
      for (const [M, C, N] of shapes) {
        withSeed(`batch q8_0 M=${M} C=${C} N=${N}`, (rng) => {
          assert.equal(avx512MatmulPath('q8_0', M, N, C), 'batch');
          const w = quantizeTensor(rng.normals(N * C, 0.5), [N, C], 'q8_0');
          const x = rng.normals(M * C);
          const ys: Float32Array[] = [];
          for (const t of [1, 2]) {
            a.setThreads(t);
            const y = new Float32Array(M * N).fill(NaN);
            const before = nativeCounters()['matmul.path.batch.avx512'] ?? 0;
            be.matmul(y, x, w, M);
            assert.equal(nativeCounters()['matmul.path.batch.avx512'], before + 1, `batch q8_0 (M=${M}, C=${C}, N=${N}): the batch path ran`);
            ys.push(y);
          }
          const want = f64Matmul(x, w, M);
          assertClose(`batch q8_0 (M=${M}, C=${C}, N=${N})`, ys[0]!, want.y, { atol: 1e-6, rtol: MATMUL_RTOL.q8_0, mag: want.mag });
          // the kernel's own numerics, to f32 accumulation order: a wrong scale on any one block shows
          const exact = q8Model(x, w, M);
          assertClose(`batch q8_0 vs its numerics (M=${M}, C=${C}, N=${N})`, ys[0]!, exact.y, { atol: 1e-6, rtol: 1e-5, mag: exact.mag });
          assert.deepEqual(ys[1], ys[0], `batch q8_0 (M=${M}, C=${C}, N=${N}): 2 threads vs 1`);
        });
      }
    } finally {
      a.setThreads(prev);
    }
  });

  it('q8_0 up to GEMV_MAX_M rows (below the batch kernel) runs the GEMV, with the same numerics', () => {
    withSeed('q8_0 gemv', (rng) => {
      const [N, C] = [40, 96];
      const w = quantizeTensor(rng.normals(N * C, 0.5), [N, C], 'q8_0');
      for (const M of [2, 7, GEMV_MAX_M]) {
        const before = nativeCounters()['matmul.path.gemv.avx512'] ?? 0;
        const x = rng.normals(M * C);
        const y = new Float32Array(M * N);
        be.matmul(y, x, w, M);
        assert.equal(nativeCounters()['matmul.path.gemv.avx512'], before + 1, `q8_0 M=${M}: gemv`);
        const exact = q8Model(x, w, M);
        assertClose(`gemv q8_0 vs its numerics (M=${M})`, y, exact.y, { atol: 1e-6, rtol: 1e-5, mag: exact.laneMag });
      }
    });
  });
});
