// Tests of quantizeTensor (bf16, f16, fp8 block scales, q8_0 as llama.cpp) and dequantizeRow for every weight dtype.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { dequantizeRow, f16ToF32, f32ToBf16, f32ToF16, fp8ToF32 } from '../../src/tensor/codecs.js';
import { quantizeQ8_0, quantizeTensor } from '../../src/tensor/quantize.js';
import { Tensor } from '../../src/tensor/tensor.js';
import { withSeed } from '../backend/helpers.js';

/** Element (r, c) of t decoded from its raw bytes by the format's definition, independent of dequantizeRow. */
function elementOf(t: Tensor, r: number, c: number): number {
  const C = t.cols;
  const b = t.data;
  switch (t.dtype) {
    case 'f32': return new DataView(b.buffer, b.byteOffset).getFloat32((r * C + c) * 4, true);
    case 'f16': return f16ToF32(b[(r * C + c) * 2]! + 256 * b[(r * C + c) * 2 + 1]!);
    case 'bf16': return new DataView(new Uint8Array([0, 0, b[(r * C + c) * 2]!, b[(r * C + c) * 2 + 1]!]).buffer).getFloat32(0, true);
    case 'fp8_e4m3': {
      const [br, bc] = t.scaleBlock!;
      const s = t.scale![Math.floor(r / br) * Math.ceil(C / bc) + Math.floor(c / bc)]!;
      return Math.fround(fp8ToF32(b[r * C + c]!) * s);
    }
    case 'q8_0': {
      const blk = r * (C / 32) * 34 + Math.floor(c / 32) * 34;
      const d = f16ToF32(b[blk]! + 256 * b[blk + 1]!);
      const q = new Int8Array(b.buffer, b.byteOffset + blk + 2 + (c % 32), 1)[0]!;
      return Math.fround(d * q);
    }
    default: throw new Error(`no element decoder for ${t.dtype}`);
  }
}

describe('quantizeTensor', () => {
  it('bf16 and f16 store the RNE code of every value', () => {
    withSeed('quantize bf16/f16', (rng) => {
      const x = rng.normals(3 * 40, 10);
      const bf = quantizeTensor(x, [3, 40], 'bf16');
      const hf = quantizeTensor(x, [3, 40], 'f16');
      for (let i = 0; i < x.length; i++) {
        assert.equal(bf.data[2 * i]! | (bf.data[2 * i + 1]! << 8), f32ToBf16(x[i]!), `bf16[${i}]`);
        assert.equal(hf.data[2 * i]! | (hf.data[2 * i + 1]! << 8), f32ToF16(x[i]!), `f16[${i}]`);
      }
    });
  });

  it('fp8: scale per block = amax/448 over blocks that do not divide the shape; amax maps to ±448; error within half an ulp', () => {
    withSeed('quantize fp8', (rng) => {
      const [N, C] = [5, 70];
      for (const block of [[2, 32], [1, 70], [5, 70], [128, 128], [3, 7]] as [number, number][]) {
        const x = rng.normals(N * C, 3);
        // an all-zero block (rows 0..1, cols 0..31 when the block is [2, 32]) must get scale 1
        for (let r = 0; r < 2; r++) for (let c = 0; c < 32; c++) if (block[0] === 2) x[r * C + c] = 0;
        const t = quantizeTensor(x, [N, C], 'fp8_e4m3', { fp8Block: block });
        const [gr, gc] = [Math.ceil(N / block[0]), Math.ceil(C / block[1])];
        assert.deepEqual(t.scaleBlock, block);
        assert.equal(t.scale!.length, gr * gc);
        for (let bi = 0; bi < gr; bi++) {
          for (let bj = 0; bj < gc; bj++) {
            let amax = 0;
            let at = -1;
            for (let r = bi * block[0]; r < Math.min(N, (bi + 1) * block[0]); r++) {
              for (let c = bj * block[1]; c < Math.min(C, (bj + 1) * block[1]); c++) {
                if (Math.abs(x[r * C + c]!) > amax) { amax = Math.abs(x[r * C + c]!); at = r * C + c; }
              }
            }
            const s = t.scale![bi * gc + bj]!;
            assert.equal(s, amax === 0 ? 1 : Math.fround(amax / 448), `block [${block}] (${bi},${bj}) scale`);
            if (at >= 0) assert.equal(t.data[at]! & 0x7f, 0x7e, `block [${block}] (${bi},${bj}): amax element must be ±448`);
          }
        }
        for (let r = 0; r < N; r++) {
          for (let c = 0; c < C; c++) {
            const s = t.scale![Math.floor(r / block[0]) * gc + Math.floor(c / block[1])]!;
            const v = x[r * C + c]! / s;
            const err = Math.abs(fp8ToF32(t.data[r * C + c]!) - v);
            // 3 mantissa bits: half an ulp is 2^-4 of the binade; subnormal steps are 2^-9
            const allowed = Math.abs(v) >= 2 ** -6 ? 2 ** (Math.floor(Math.log2(Math.abs(v))) - 4) * 1.000001 : 2 ** -10;
            assert.ok(err <= allowed, `block [${block}] (${r},${c}): x/s=${v}, stored ${fp8ToF32(t.data[r * C + c]!)}, err ${err} > ${allowed}`);
          }
        }
      }
    });
  });

  it('fp8 default block is one scale per row', () => {
    const t = quantizeTensor(Float32Array.of(1, -2, 0, 0, 896, 3), [3, 2], 'fp8_e4m3');
    assert.deepEqual(t.scaleBlock, [1, 2]);
    assert.deepEqual(Array.from(t.scale!), [2 / 448, 1, 896 / 448].map(Math.fround));
  });

  it('q8_0 by hand: d = amax/127 as f16, q = round half away from zero', () => {
    // amax 127 -> d = 1, id = 1; 2.5 -> 3, -2.5 -> -3, 0.5 -> 1, -0.5 -> -1, 1.49 -> 1
    const x = new Float32Array(64);
    x.set([127, 2.5, -2.5, 0.5, -0.5, 1.49, -126.6]);
    // second block all zero: d = 0, q = 0
    const b = quantizeQ8_0(x);
    assert.equal(b.length, 68);
    assert.deepEqual(Array.from(b.subarray(0, 2)), [0x00, 0x3c], 'd = f16(1.0) little-endian');
    assert.deepEqual(Array.from(new Int8Array(b.buffer, 2, 8)), [127, 3, -3, 1, -1, 1, -127, 0]);
    assert.deepEqual(Array.from(b.subarray(34)), new Array(34).fill(0));
    assert.throws(() => quantizeQ8_0(new Float32Array(33)), /33 values is not a multiple of 32/);
  });

  it('q8_0 random: d is f16(amax/127), |q| <= 127 with 127 at amax, error <= d/2', () => {
    withSeed('quantize q8_0', (rng) => {
      const [N, C] = [4, 96];
      const x = rng.normals(N * C, 2);
      const t = quantizeTensor(x, [N, C], 'q8_0');
      assert.equal(t.data.length, N * 3 * 34);
      for (let blk = 0; blk < N * C / 32; blk++) {
        const xs = x.subarray(blk * 32, blk * 32 + 32);
        const amax = Math.max(...Array.from(xs, Math.abs));
        const dRaw = Math.fround(amax / 127);
        const d = f16ToF32(t.data[blk * 34]! | (t.data[blk * 34 + 1]! << 8));
        assert.equal(d, f16ToF32(f32ToF16(dRaw)), `block ${blk}: d`);
        const q = new Int8Array(t.data.buffer, t.data.byteOffset + blk * 34 + 2, 32);
        for (let j = 0; j < 32; j++) {
          // q was chosen for the f32 d; the f16 rounding of d adds at most |d - dRaw| * 127
          const err = Math.abs(xs[j]! - d * q[j]!);
          assert.ok(err <= dRaw / 2 * 1.0001 + Math.abs(d - dRaw) * 127, `block ${blk} [${j}]: x=${xs[j]}, q=${q[j]}, d=${d}, err ${err}`);
          if (Math.abs(xs[j]!) === amax) assert.equal(Math.abs(q[j]!), 127, `block ${blk} [${j}]: amax element`);
          assert.equal(q[j], Math.sign(xs[j]! / dRaw) * Math.floor(Math.abs(Math.fround(xs[j]! * Math.fround(1 / dRaw))) + 0.5) || 0, `block ${blk} [${j}]: q`);
        }
      }
    });
  });

  it('rejects a value count that does not match the shape', () => {
    assert.throws(() => quantizeTensor(new Float32Array(5), [2, 3], 'bf16'), /shape \[2,3\] needs 6 values, got 5/);
  });
});

describe('dequantizeRow', () => {
  for (const dtype of ['f32', 'f16', 'bf16', 'fp8_e4m3', 'q8_0'] as const) {
    it(`${dtype}: every row of a 3-D tensor matches the element-wise decode`, () => {
      withSeed(`dequantizeRow ${dtype}`, (rng) => {
        const shape = [2, 3, 64];
        const t = quantizeTensor(rng.normals(2 * 3 * 64), shape, dtype, { fp8Block: [2, 32] });
        const out = new Float32Array(64);
        for (let r = 0; r < 6; r++) {
          dequantizeRow(t, r, out);
          for (let c = 0; c < 64; c++) assert.ok(Object.is(out[c], elementOf(t, r, c)), `${dtype} (${r},${c}): got ${out[c]}, expected ${elementOf(t, r, c)}`);
        }
      });
    });
  }

  it('f32 storage that is not 4-byte aligned', () => {
    withSeed('dequantizeRow unaligned', (rng) => {
      const x = rng.normals(2 * 5);
      const raw = new Uint8Array(41);
      raw.set(new Uint8Array(x.buffer), 1);
      const t = new Tensor('f32', [2, 5], raw.subarray(1));
      const out = new Float32Array(5);
      dequantizeRow(t, 1, out);
      assert.deepEqual(Array.from(out), Array.from(x.subarray(5)));
    });
  });

  it('names the bad row and the tensor', () => {
    const t = quantizeTensor(new Float32Array(64), [2, 32], 'q8_0');
    assert.throws(() => dequantizeRow(t, 2, new Float32Array(32)), /row 2 outside \[0, 2\) of q8_0\[2,32\]/);
    assert.throws(() => dequantizeRow(t, 0, new Float32Array(31)), /out holds 31 values, row has 32/);
  });
});
