// Native decode GEMV (M = 1): every weight dtype on shapes with column, block-group and row-pass tails and fp8 scale
// grids with partial blocks, at 1, 2 and 3 threads, against the reference backend and, tightly, against a float64
// emulation of the kernel's own rounding of x (bf16 / per-block int8); the counter proves the GEMV path ran.

import './gemv-pool-env.js'; // before the addon loads: small shapes still split over threads
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { WEIGHT_DTYPES } from '../../src/backend/backend.js';
import { loadNativeBackend, nativeCounters } from '../../src/backend/native.js';
import { loadAddon } from '../../src/backend/native-addon.js';
import { referenceBackend as ref } from '../../src/backend/reference.js';
import { bf16ToF32, dequantizeRow, f32ToBf16 } from '../../src/tensor/codecs.js';
import { quantizeTensor } from '../../src/tensor/quantize.js';
import { Tensor } from '../../src/tensor/tensor.js';
import { assertClose, f64Matmul, MATMUL_RTOL, withSeed, type Rng } from './helpers.js';

const addon = loadAddon();
const skip = !addon || addon.supportedIsa() !== 'avx512' ? 'needs the AVX-512 native addon' : false;
const GEMV = 'matmul.path.gemv.avx512';

/** Round half to even, as vcvtps2dq does under the default MXCSR. */
function rne(v: number): number {
  const f = Math.floor(v), d = v - f;
  return d > 0.5 || (d === 0.5 && f % 2 !== 0) ? f + 1 : f;
}

/** x (C) as the kernel consumes it: bf16 (bf16, fp8), per-32-block int8 times d (q8_0, as x_to_q8), else x. */
function kernelX(x: Float32Array, dtype: string): Float64Array {
  const out = new Float64Array(x.length);
  if (dtype === 'bf16' || dtype === 'fp8_e4m3') {
    for (let c = 0; c < x.length; c++) out[c] = bf16ToF32(f32ToBf16(x[c]!));
  } else if (dtype === 'q8_0') {
    for (let b = 0; b < x.length; b += 32) {
      let amax = 0;
      for (let c = b; c < b + 32; c++) amax = Math.max(amax, Math.abs(x[c]!));
      const d = Math.fround(amax / 127), id = amax > 0 ? Math.fround(127 / amax) : 0;
      for (let c = b; c < b + 32; c++) out[c] = rne(Math.fround(x[c]! * id)) * d;
    }
  } else {
    out.set(x);
  }
  return out;
}

/** y (N) = x̂ · wᵀ in float64 with x̂ = kernelX(x); mag = Σ|x̂·w| per output. */
function emulated(x: Float32Array, w: Tensor): { y: Float64Array; mag: Float64Array } {
  const [N, C] = [w.rows, w.cols];
  const xk = kernelX(x, w.dtype);
  const y = new Float64Array(N), mag = new Float64Array(N), row = new Float32Array(C);
  for (let n = 0; n < N; n++) {
    dequantizeRow(w, n, row);
    let s = 0, a = 0;
    for (let c = 0; c < C; c++) {
      s += xk[c]! * row[c]!;
      a += Math.abs(xk[c]! * row[c]!);
    }
    y[n] = s;
    mag[n] = a;
  }
  return { y, mag };
}

describe('native decode GEMV (AVX-512, M = 1)', { skip }, () => {
  const be = loadNativeBackend()!;
  const a = addon!;
  // [C, N]: C under one line, odd q8 block counts around the 16-block scale group (3, 17, 33 blocks), exact groups
  // (512, 1024), C not a multiple of 16/32/64; N under the 4-row pass, odd, and not splitting evenly over threads.
  const shapes: [number, number][] = [[64, 1], [96, 3], [32, 6], [544, 97], [512, 8], [1056, 9], [1024, 130], [200, 33], [1000, 7], [40, 5]];
  const checkOne = (rng: Rng, dtype: (typeof WEIGHT_DTYPES)[number], C: number, N: number, block?: [number, number]): void => {
    const w = quantizeTensor(rng.normals(N * C, 0.5), [N, C], dtype, { fp8Block: block });
    const x = rng.normals(C);
    const y = new Float32Array(N).fill(NaN);
    const before = nativeCounters()[GEMV] ?? 0;
    be.matmul(y, x, w, 1);
    assert.equal((nativeCounters()[GEMV] ?? 0) - before, 1, `${dtype} C=${C} N=${N}: the GEMV path ran`);
    const what = `gemv ${dtype} (C=${C}, N=${N}, block=${block ?? 'none'}, threads=${a.getThreads()})`;
    // the oracle: the reference backend, within the dtype's matmul tolerance
    const want = new Float32Array(N);
    ref.matmul(want, x, w, 1);
    assertClose(`${what} vs reference`, y, want, { atol: 1e-6, rtol: MATMUL_RTOL[dtype], mag: f64Matmul(x, w, 1).mag });
    // the kernel's own x rounding in float64: only f32 summation order may differ
    const emu = emulated(x, w);
    assertClose(`${what} vs float64 emulation`, y, emu.y, { atol: 1e-7, rtol: 2e-5, mag: emu.mag });
  };

  for (const dtype of WEIGHT_DTYPES) {
    it(`${dtype}: tails, row passes, threads 1/2/3${dtype === 'fp8_e4m3' ? ', scale grids' : ''}`, () => {
      const prev = a.getThreads();
      try {
        for (const threads of [1, 2, 3]) {
          a.setThreads(threads);
          for (const [C, N] of shapes) {
            if (dtype === 'q8_0' && C % 32 !== 0) continue;
            if (dtype === 'f32' && N <= 16) continue;  // f32 with a side <= 16 runs the thin (LoRA) kernels
            // fp8: per row, 128×128 (partial blocks both ways), blocks under a 64-column group, 64-multiples, odd grids
            const blocks: ([number, number] | undefined)[] = dtype === 'fp8_e4m3' ? [[1, C], [N, C], [128, 128], [3, 20], [5, 7], [2, 64], [4, 192]] : [undefined];
            for (const block of blocks) withSeed(`gemv ${dtype} C=${C} N=${N} block=${block} t=${threads}`, (rng) => checkOne(rng, dtype, C, N, block));
          }
        }
      } finally {
        a.setThreads(prev);
      }
    });
  }

  it('the 1B decode shapes (2048 → 512, 8192 → 2048) at 2 threads', () => {
    const prev = a.getThreads();
    try {
      a.setThreads(2);
      for (const dtype of ['q8_0', 'bf16', 'f16', 'fp8_e4m3'] as const)
        for (const [C, N] of [[2048, 512], [8192, 64]] as [number, number][])
          withSeed(`gemv 1b ${dtype} C=${C} N=${N}`, (rng) => checkOne(rng, dtype, C, N, dtype === 'fp8_e4m3' ? [128, 128] : undefined));
    } finally {
      a.setThreads(prev);
    }
  });

  it('results do not depend on the thread count (bitwise)', () => {
    const prev = a.getThreads();
    try {
      for (const dtype of WEIGHT_DTYPES) {
        withSeed(`gemv threads ${dtype}`, (rng) => {
          const [C, N] = [320, 203];
          const w = quantizeTensor(rng.normals(N * C), [N, C], dtype, { fp8Block: [16, 64] });
          const x = rng.normals(C);
          const ys = [1, 2, 3].map((t) => {
            a.setThreads(t);
            const y = new Float32Array(N);
            be.matmul(y, x, w, 1);
            return y;
          });
          assert.deepEqual(ys[1], ys[0], `${dtype}: 2 threads vs 1`);
          assert.deepEqual(ys[2], ys[0], `${dtype}: 3 threads vs 1`);
        });
      }
    } finally {
      a.setThreads(prev);
    }
  });

  it('a NaN or infinity in x makes every output non-finite', () => {
    withSeed('gemv nan', (rng) => {
      const [C, N] = [544, 21];
      for (const dtype of WEIGHT_DTYPES) {
        for (const bad of [NaN, Infinity]) {
          const w = quantizeTensor(rng.normals(N * C), [N, C], dtype, { fp8Block: [1, C] });
          const x = rng.normals(C);
          x[37] = bad;
          const y = new Float32Array(N);
          be.matmul(y, x, w, 1);
          assert.equal(y.filter((v) => Number.isFinite(v)).length, 0, `${dtype} x[37] = ${bad}: finite outputs`);
        }
      }
    });
  });

  it('fp8: every byte value (subnormals, both zeros, ±448) on both ISAs; a NaN byte reaches exactly its row', () => {
    const prevIsa = a.isa();
    try {
      for (const isa of ['avx512', 'avx2'] as const) {
        a.setIsa(isa);
        withSeed(`gemv fp8 bytes ${isa}`, (rng) => {
          const [N, C] = [6, 256];
          const b = new Uint8Array(N * C);
          for (let n = 0; n < N; n++) for (let c = 0; c < C; c++) b[n * C + c] = (c * (2 * n + 1) + n) & 0xff;  // each row a permutation
          for (let i = 0; i < b.length; i++) if ((b[i]! & 0x7f) === 0x7f) b[i] = i % 2 ? 0x80 : 0;
          for (let c = 0; c < C; c++) b[5 * C + c] = (c * 7) & 0x8f;  // row 5: exponents 0 and 1 only (subnormals)
          const w = new Tensor('fp8_e4m3', [N, C], b, Float32Array.of(0.75), [N, C]);
          const x = rng.normals(C);
          const y = new Float32Array(N).fill(NaN), want = new Float32Array(N);
          be.matmul(y, x, w, 1);
          ref.matmul(want, x, w, 1);
          assertClose(`fp8 bytes ${isa}`, y, want, { atol: 1e-6, rtol: isa === 'avx2' ? 1e-5 : MATMUL_RTOL.fp8_e4m3, mag: f64Matmul(x, w, 1).mag });
          b[3 * C + 17] = 0x7f;  // NaN
          be.matmul(y, x, w, 1);
          for (let n = 0; n < N; n++) assert.equal(Number.isNaN(y[n]), n === 3, `${isa}: row ${n} NaN`);
        });
      }
    } finally {
      a.setIsa(prevIsa);
    }
  });

  it('AVX2 (FLOE_ISA=avx2) M = 1: row-pass GEMV over the register tiles, tails, threads 1/2/3', () => {
    const prevIsa = a.isa(), prev = a.getThreads();
    try {
      a.setIsa('avx2');
      for (const threads of [1, 2, 3]) {
        a.setThreads(threads);
        for (const dtype of WEIGHT_DTYPES)
          for (const [C, N] of [[96, 3], [544, 97], [1000, 7], [64, 130]] as [number, number][]) {
            if (dtype === 'q8_0' && C % 32 !== 0) continue;
            const blocks: ([number, number] | undefined)[] = dtype === 'fp8_e4m3' ? [[1, C], [128, 128], [3, 20]] : [undefined];
            for (const block of blocks)
              withSeed(`gemv avx2 ${dtype} C=${C} N=${N} block=${block} t=${threads}`, (rng) => {
                const w = quantizeTensor(rng.normals(N * C, 0.5), [N, C], dtype, { fp8Block: block });
                const x = rng.normals(C);
                const y = new Float32Array(N).fill(NaN);
                const before = nativeCounters()['matmul.path.gemv.avx2'] ?? 0;
                be.matmul(y, x, w, 1);
                assert.equal((nativeCounters()['matmul.path.gemv.avx2'] ?? 0) - before, 1, 'the avx2 GEMV ran');
                const want = new Float32Array(N);
                ref.matmul(want, x, w, 1);
                // f32 activations and f32 FMA on exactly dequantized weights: float32 summation order only
                assertClose(`avx2 ${dtype} (C=${C}, N=${N}, block=${block}, threads=${threads})`, y, want, { atol: 1e-6, rtol: 1e-5, mag: f64Matmul(x, w, 1).mag });
              });
          }
      }
    } finally {
      a.setIsa(prevIsa);
      a.setThreads(prev);
    }
  });
});
