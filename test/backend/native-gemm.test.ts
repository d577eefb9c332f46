// Native prefill matmul (packed GEMM, forced from M = 17): every weight dtype on shapes crossing its panel, segment, row-block
// and fp8 scale-block edges, against a float64 dot of the dequantized weights; thread-count independence. Where the
// host has AMX (addon.amx().supported) every case runs twice, bf16 and fp8 on the tile GEMM (path amx_bf16) and again
// with it off; elsewhere bf16 and fp8 run the same tile GEMM with emulated tile operations (amx_bf16_emu: its
// addressing, padding and segments, checked on every host) and again off.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { describe, it } from 'node:test';
import { WEIGHT_DTYPES } from '../../src/backend/backend.js';
import { loadNativeBackend, nativeCounters } from '../../src/backend/native.js';
import { addonPath, loadAddon, type AmxMode } from '../../src/backend/native-addon.js';
import { quantizeTensor } from '../../src/tensor/quantize.js';
import { asTrain, assertClose, f64Matmul, f64MatmulInput, gemmPath, MATMUL_RTOL, withSeed } from './helpers.js';

// every M >= 17 takes the GEMM (read when the addon loads; M <= 16 is the GEMV's); by default each dtype starts where it beats the tiles
process.env.FLOE_GEMM_MIN_M = '17';
const addon = loadAddon();
const skip = !addon || addon.supportedIsa() !== 'avx512' ? 'needs the AVX-512 native addon' : false;
// AMX: the tiles and off where the host has them, else the emulated tile GEMM (the same code, scalar tile operations)
const amxStart = addon?.amx().mode ?? 'off';
const amxModes: AmxMode[] = !addon ? ['off'] : addon.amx().supported ? ['tiles', 'off'] : ['emulate', 'off'];
const amxName = (mode: AmxMode, dtype = 'bf16'): string =>
  dtype !== 'bf16' && dtype !== 'fp8_e4m3' ? '' : mode === 'tiles' ? ' [AMX tiles]' : mode === 'emulate' ? ' [AMX emulated]' : ' [AMX off]';
/** AMX modes a dtype's cases run in: bf16 and fp8 in each of amxModes, the others (never on tiles) once as started. */
const modesFor = (dtype: string): AmxMode[] => (dtype === 'bf16' || dtype === 'fp8_e4m3' ? amxModes : [amxStart]);
/** Runs one case in an AMX mode, then restores the mode the addon started in. */
function withAmx(mode: AmxMode, f: () => void): void {
  if (!addon) return f();
  addon.setAmx(mode);
  try {
    f();
  } finally {
    addon.setAmx(amxStart);
  }
}

describe('native packed GEMM (AVX-512, M >= 17)', { skip }, () => {
  const be = loadNativeBackend()!;
  // [M, C, N]: row-group tails (M % 8, M % 4), > 512 rows (two M blocks), C past one K segment (256 bf16 / 128 f16 /
  // 512 q8 columns) and odd q8 block counts, N past one 48-row panel and not a multiple of 16.
  // C off a multiple of 32 (not for q8_0, whose rows are whole 32-blocks): the last unit / tile step is partial.
  const shapes: [number, number, number][] = [[17, 64, 48], [23, 96, 50], [37, 544, 97], [261, 160, 33], [521, 96, 20], [18, 1056, 7]];
  const oddC: [number, number, number][] = [[40, 100, 70], [33, 1000, 130], [19, 7, 5]];
  for (const dtype of WEIGHT_DTYPES) for (const amx of modesFor(dtype)) {
    const blocks: ([number, number] | undefined)[] = dtype === 'fp8_e4m3' ? [undefined, [1, 0], [128, 128], [3, 20], [5, 7]] : [undefined];
    it(`${dtype}: tiles, tails, segments${dtype === 'fp8_e4m3' ? ', scale grids' : ''}${amxName(amx, dtype)}`, () => withAmx(amx, () => {
      for (const [M, C, N] of dtype === 'q8_0' ? shapes : [...shapes, ...oddC]) {
        for (const block of blocks) {
          withSeed(`gemm ${dtype} M=${M} C=${C} N=${N} block=${block ?? 'row'}`, (rng) => {
            const fp8Block: [number, number] | undefined = block ? [block[0], block[1] || C] : dtype === 'fp8_e4m3' ? [1, C] : undefined;
            const w = quantizeTensor(rng.normals(N * C, 0.5), [N, C], dtype, { fp8Block });
            const x = rng.normals(M * C);
            const y = new Float32Array(M * N).fill(NaN);
            // f32 with <= 16 rows: the thin LoRA kernels; bf16 and fp8 on AMX hosts: the tile GEMM
            const path = dtype === 'f32' && N <= 16 ? 'thin' : gemmPath(dtype);
            const before = nativeCounters()[`matmul.path.${path}.avx512`] ?? 0;
            be.matmul(y, x, w, M);
            assert.equal(nativeCounters()[`matmul.path.${path}.avx512`], before + 1, `the ${path} path ran`);
            const want = f64Matmul(x, w, M);
            assertClose(`gemm ${dtype}${amxName(amx, dtype)} (M=${M}, C=${C}, N=${N})`, y, want.y, { atol: 1e-6, rtol: MATMUL_RTOL[dtype], mag: want.mag });
          });
        }
      }
    }));
  }

  // Training's dx = dy · w reads the weight transposed (panels of w's columns, reduction over its rows): every dtype,
  // overwrite and accumulate; fp8 grids that fold the scale into dy (one scale column), that scale segments per
  // output column (row blocks >= 16), and the small-row-block grids left to the training kernel's own tiles.
  for (const dtype of WEIGHT_DTYPES) for (const amx of modesFor(dtype)) {
    it(`${dtype}: transposed (matmulBackwardInput), tails, segments${dtype === 'fp8_e4m3' ? ', scale grids' : ''}${amxName(amx, dtype)}`, () => withAmx(amx, () => {
      const blocks: ([number, number] | undefined)[] = dtype === 'fp8_e4m3' ? [undefined, [5, 0], [128, 128], [16, 32], [33, 20], [3, 20]] : [undefined];
      // [M, N (reduction: rows of w), C (outputs: columns of w)]
      const shapes: [number, number, number][] = [[17, 64, 48], [23, 97, 50], [37, 544, 97], [261, 160, 33], [521, 96, 20], [18, 33, 1056], [40, 301, 70]];
      for (const [M, N, C] of shapes) {
        if (dtype === 'q8_0' && C % 32 !== 0) continue;
        for (const block of blocks) {
          withSeed(`gemm-tr ${dtype} M=${M} N=${N} C=${C} block=${block ?? 'row'}`, (rng) => {
            const fp8Block: [number, number] | undefined = block ? [block[0], block[1] || C] : dtype === 'fp8_e4m3' ? [1, C] : undefined;
            const w = quantizeTensor(rng.normals(N * C, 0.5), [N, C], dtype, { fp8Block });
            const dy = rng.normals(M * N);
            const { y: want, mag } = f64MatmulInput(dy, w, M);
            // q8_0 and fp8 grids of several column blocks with row blocks under 16 stay on the training kernel's tiles
            const small = dtype === 'q8_0' || (fp8Block && fp8Block[1] < C && fp8Block[0] < 16);
            const path = small ? 'dx_tiles' : gemmPath(dtype, true);
            const before = nativeCounters()[`matmul.path.${path}.avx512`] ?? 0;
            const got = new Float32Array(M * C).fill(NaN);
            asTrain(be).matmulBackwardInput(got, dy, w, M, false);
            assert.equal(nativeCounters()[`matmul.path.${path}.avx512`], before + 1, `the ${path} path ran`);
            const tol = { atol: 1e-6, rtol: MATMUL_RTOL[dtype], mag };
            assertClose(`gemm-tr ${dtype}${amxName(amx, dtype)} (M=${M}, N=${N}, C=${C})`, got, want, tol);
            const dx0 = rng.normals(M * C);
            const acc = dx0.slice();
            asTrain(be).matmulBackwardInput(acc, dy, w, M, true);
            assertClose(`gemm-tr ${dtype} accumulate (M=${M}, N=${N}, C=${C})`, acc, want.map((v, i) => v + dx0[i]!),
              { ...tol, mag: mag.map((v, i) => v + Math.abs(dx0[i]!)) });
          });
        }
      }
    }));
  }

  it('the AMX mode is reported; tiles are refused where the host lacks them, emulation runs anywhere', () => {
    const a = addon!;
    const info = a.amx();
    assert.equal(info.mode, amxStart);
    try {
      if (info.supported) {
        assert.equal(info.reason, '');
        a.setAmx('tiles');
        assert.deepEqual([a.amx().mode, a.amx().active], ['tiles', true]);
      } else {
        assert.match(info.reason, /amx|tile|XSAVE|AMX/, 'a reason is given');
        assert.throws(() => a.setAmx('tiles'), /AMX tiles are not available here/);
      }
      a.setAmx('off');
      assert.deepEqual([a.amx().mode, a.amx().active], ['off', false]);
      a.setAmx('emulate');
      assert.deepEqual([a.amx().mode, a.amx().active], ['emulate', true]);
      assert.throws(() => a.setAmx('on' as AmxMode), /'tiles', 'emulate' or 'off'/);
    } finally {
      a.setAmx(amxStart);
    }
  });

  it('FLOE_AMX at load: 0 turns the tiles off, emulate selects the emulation, unset takes the tiles where supported', () => {
    const modeWith = (v: string | undefined): string => {
      const env = { ...process.env };
      if (v === undefined) delete env.FLOE_AMX;
      else env.FLOE_AMX = v;
      return execFileSync(process.execPath, ['-e', `console.log(require(${JSON.stringify(addonPath())}).amx().mode)`], { env, encoding: 'utf8' }).trim();
    };
    assert.equal(modeWith('0'), 'off');
    assert.equal(modeWith('emulate'), 'emulate');
    assert.equal(modeWith(undefined), addon!.amx().supported ? 'tiles' : 'off');
  });

  for (const amx of amxModes) it(`results do not depend on the thread count (bitwise)${amxName(amx)}`, () => withAmx(amx, () => {
    const a = addon!;
    const prev = a.getThreads();
    try {
      for (const dtype of ['bf16', 'fp8_e4m3', 'f16', 'f32', 'q8_0'] as const) {
        withSeed(`gemm threads ${dtype}`, (rng) => {
          const [M, C, N] = [40, 320, 200];
          const w = quantizeTensor(rng.normals(N * C), [N, C], dtype, { fp8Block: [16, 64] });
          const x = rng.normals(M * C);
          const dy = rng.normals(M * N);
          const ys = [1, 2, 3].map((t) => {
            a.setThreads(t);
            const y = new Float32Array(M * N);
            be.matmul(y, x, w, M);
            const dx = new Float32Array(M * C);
            asTrain(be).matmulBackwardInput(dx, dy, w, M, false);
            return [y, dx];
          });
          assert.deepEqual(ys[1], ys[0], `${dtype}: 2 threads vs 1 (forward, transposed)`);
          assert.deepEqual(ys[2], ys[0], `${dtype}: 3 threads vs 1 (forward, transposed)`);
        });
      }
    } finally {
      a.setThreads(prev);
    }
  }));

  for (const amx of amxModes) it(`a NaN or infinity in x reaches exactly its row${amxName(amx)}`, () => withAmx(amx, () => {
    withSeed('gemm nan rows', (rng) => {
      const [M, C, N] = [20, 128, 60];
      for (const dtype of ['bf16', 'fp8_e4m3', 'f16', 'q8_0'] as const) {
        const w = quantizeTensor(rng.normals(N * C), [N, C], dtype, { fp8Block: [1, C] });
        const x = rng.normals(M * C);
        x[7 * C + 5] = NaN;
        const y = new Float32Array(M * N);
        be.matmul(y, x, w, M);
        for (let m = 0; m < M; m++) {
          const nans = y.subarray(m * N, (m + 1) * N).filter((v) => !Number.isFinite(v)).length;
          assert.equal(nans, m === 7 ? N : 0, `${dtype}: row ${m} has ${nans} non-finite outputs`);
        }
      }
    });
  }));
});
