// Bit-exact tests of the bf16 / f16 / fp8 E4M3FN codecs against formula decoders and a brute-force nearest encoder.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  bf16ToF32Bits, decodeBf16, decodeF16, decodeFp8, encodeBf16, encodeF16, encodeFp8, f16ToF32, f16ToF32Bits,
  f32BitsToBf16, f32BitsToF16, f32BitsToFp8, f32ToBf16, f32ToBits, f32ToF16, f32ToFp8, FP8_E4M3_TO_F32, fp8ToF32,
  fp8ToF32Bits, bitsToF32,
} from '../../src/tensor/codecs.js';
import { withSeed } from '../backend/helpers.js';

// ---- independent decoders: the textbook formulas, no bit tricks

interface Format {
  readonly name: string;
  readonly bits: number; // total width
  readonly expBits: number;
  readonly manBits: number;
  readonly bias: number;
  /** code of the largest finite positive value */
  readonly maxFinite: number;
  /** 'inf': beyond max + half an ulp rounds to inf; 'saturate': finite overflow clamps to max */
  readonly overflow: 'inf' | 'saturate';
  isNaN(code: number): boolean;
  encodeBits(u: number): number;
}

function formulaDecode(f: Format, code: number): number {
  const sign = code >> (f.bits - 1) ? -1 : 1;
  const e = (code >> f.manBits) & ((1 << f.expBits) - 1);
  const m = code & ((1 << f.manBits) - 1);
  if (f.isNaN(code)) return NaN;
  if (f.overflow === 'inf' && e === (1 << f.expBits) - 1) return sign * Infinity;
  if (e === 0) return sign * m * 2 ** (1 - f.bias - f.manBits);
  return sign * 2 ** (e - f.bias) * (1 + m / 2 ** f.manBits);
}

const F16: Format = {
  name: 'f16', bits: 16, expBits: 5, manBits: 10, bias: 15, maxFinite: 0x7bff, overflow: 'inf',
  isNaN: (h) => (h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0, encodeBits: f32BitsToF16,
};
const BF16: Format = {
  name: 'bf16', bits: 16, expBits: 8, manBits: 7, bias: 127, maxFinite: 0x7f7f, overflow: 'inf',
  isNaN: (h) => (h & 0x7f80) === 0x7f80 && (h & 0x7f) !== 0, encodeBits: f32BitsToBf16,
};
const FP8: Format = {
  name: 'fp8_e4m3', bits: 8, expBits: 4, manBits: 3, bias: 7, maxFinite: 0x7e, overflow: 'saturate',
  isNaN: (b) => (b & 0x7f) === 0x7f, encodeBits: f32BitsToFp8,
};

/** Nearest code by binary search over the monotonic positive codes; ties to the even code. */
function bruteEncode(f: Format, x: number): number {
  const signBit = 1 << (f.bits - 1);
  const infCode = ((1 << f.expBits) - 1) << f.manBits;
  if (Number.isNaN(x)) throw new Error('bruteEncode: NaN');
  const neg = x < 0 || Object.is(x, -0);
  const a = Math.abs(x);
  const s = neg ? signBit : 0;
  const max = formulaDecode(f, f.maxFinite);
  if (a >= max) {
    if (f.overflow === 'saturate') return s | f.maxFinite;
    const halfUlp = (max - formulaDecode(f, f.maxFinite - 1)) / 2;
    return s | (a >= max + halfUlp ? infCode : f.maxFinite);
  }
  let lo = 0;
  let hi = f.maxFinite; // dec(lo) <= a < dec(hi)
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (formulaDecode(f, mid) <= a) lo = mid; else hi = mid;
  }
  const dl = a - formulaDecode(f, lo);
  const dh = formulaDecode(f, hi) - a;
  if (dl < dh) return s | lo;
  if (dh < dl) return s | hi;
  return s | (lo % 2 === 0 ? lo : hi);
}

const FORMATS = [F16, BF16, FP8];

function hex(n: number): string {
  return '0x' + (n >>> 0).toString(16);
}

describe('decode: every code matches the formula', () => {
  it('f16: all 65536 codes', () => {
    for (let h = 0; h < 65536; h++) {
      const want = formulaDecode(F16, h);
      const got = f16ToF32(h);
      if (Number.isNaN(want)) {
        assert.ok(Number.isNaN(got), `f16 ${hex(h)}: expected NaN, got ${got}`);
        assert.equal(f16ToF32Bits(h), ((h & 0x8000) << 16 | 0x7f800000 | (h & 0x3ff) << 13) >>> 0, `f16 ${hex(h)}: NaN payload`);
      } else {
        assert.ok(Object.is(got, want), `f16 ${hex(h)}: got ${got}, expected ${want}`);
      }
    }
  });

  it('bf16: all 65536 codes are the top half of the f32 bits', () => {
    for (let h = 0; h < 65536; h++) {
      const want = formulaDecode(BF16, h);
      const got = bitsToF32(bf16ToF32Bits(h));
      if (Number.isNaN(want)) assert.ok(Number.isNaN(got), `bf16 ${hex(h)}: expected NaN`);
      else assert.ok(Object.is(got, want), `bf16 ${hex(h)}: got ${got}, expected ${want}`);
    }
  });

  it('fp8 E4M3FN: all 256 codes, table and scalar; only S.1111.111 is NaN; max ±448, min subnormal 2^-9', () => {
    for (let b = 0; b < 256; b++) {
      const want = formulaDecode(FP8, b);
      for (const [how, got] of [['table', FP8_E4M3_TO_F32[b]!], ['fp8ToF32', fp8ToF32(b)], ['bits', bitsToF32(fp8ToF32Bits(b))]] as const) {
        if (Number.isNaN(want)) assert.ok(Number.isNaN(got), `fp8 ${hex(b)} (${how}): expected NaN, got ${got}`);
        else assert.ok(Object.is(got, want), `fp8 ${hex(b)} (${how}): got ${got}, expected ${want}`);
      }
    }
    assert.equal(Array.from(FP8_E4M3_TO_F32).filter(Number.isNaN).length, 2);
    assert.equal(fp8ToF32(0x7e), 448);
    assert.equal(fp8ToF32(0xfe), -448);
    assert.equal(fp8ToF32(0x01), 2 ** -9);
    assert.equal(fp8ToF32(0x08), 2 ** -6);
    assert.equal(fp8ToF32(0x78), 256); // 0.1111.000: exponent 15 is a normal binade in E4M3FN
  });
});

describe('round trip: decode then encode gives the code back', () => {
  for (const f of FORMATS) {
    it(`${f.name}: all ${2 ** f.bits} codes (NaN comes back quiet, sign kept)`, () => {
      const dec = f === F16 ? f16ToF32Bits : f === BF16 ? bf16ToF32Bits : fp8ToF32Bits;
      const quiet = f === F16 ? 0x200 : f === BF16 ? 0x40 : 0;
      for (let c = 0; c < 2 ** f.bits; c++) {
        const back = f.encodeBits(dec(c));
        const want = f.isNaN(c) ? c | quiet : c;
        assert.equal(back, want, `${f.name} ${hex(c)} -> ${hex(dec(c))} -> ${hex(back)}, expected ${hex(want)}`);
      }
    });
  }
});

describe('encode: against the brute-force nearest code', () => {
  for (const f of FORMATS) {
    it(`${f.name}: every exact tie between neighbours, and one f32 ulp either side`, () => {
      for (let c = 0; c < f.maxFinite; c++) {
        const mid = (formulaDecode(f, c) + formulaDecode(f, c + 1)) / 2;
        const u = f32ToBits(mid);
        assert.equal(bitsToF32(u), mid, `${f.name}: midpoint of ${hex(c)} not exact in f32`);
        for (const v of [u, u - 1, u + 1, (u | 0x80000000) >>> 0]) {
          const x = bitsToF32(v);
          assert.equal(f.encodeBits(v), bruteEncode(f, x), `${f.name}: encode(${x}) [bits ${hex(v)}], codes ${hex(c)}/${hex(c + 1)}`);
        }
      }
      // past the largest finite value
      const max = formulaDecode(f, f.maxFinite);
      const beyond = max + (max - formulaDecode(f, f.maxFinite - 1)) / 2;
      for (const x of [beyond, -beyond, max * 1.5, Math.fround(3e38), Infinity, -Infinity]) {
        assert.equal(f.encodeBits(f32ToBits(x)), bruteEncode(f, x), `${f.name}: encode(${x})`);
      }
    });

    it(`${f.name}: random f32 bit patterns and random values in range`, () => {
      withSeed(`${f.name} random encode`, (rng) => {
        const max = formulaDecode(f, f.maxFinite);
        for (let i = 0; i < 40000; i++) {
          let u: number;
          if (i % 2 === 0) u = rng.u32();
          else u = f32ToBits((rng.next() < 0.5 ? -1 : 1) * max * 2 ** -rng.uniform(0, 2 ** f.expBits + f.manBits + 2));
          const x = bitsToF32(u);
          if (Number.isNaN(x)) {
            assert.ok(f.isNaN(f.encodeBits(u)), `${f.name}: NaN ${hex(u)} must encode to NaN`);
            continue;
          }
          assert.equal(f.encodeBits(u), bruteEncode(f, x), `${f.name}: encode(${x}) [bits ${hex(u)}]`);
        }
      });
    });
  }
});

describe('encode: hand-checked edge cases', () => {
  it('f16', () => {
    const cases: [number, number][] = [
      [0, 0x0000], [-0, 0x8000], [1, 0x3c00], [-2, 0xc000], [65504, 0x7bff],
      [65519.99609375, 0x7bff], [65520, 0x7c00], [1e6, 0x7c00], [-Infinity, 0xfc00],
      [2 ** -14, 0x0400], [2 ** -24, 0x0001], [2 ** -25, 0x0000], [3 * 2 ** -25, 0x0002], [-(2 ** -26), 0x8000],
      [1 + 2 ** -11, 0x3c00], [1 + 3 * 2 ** -11, 0x3c02], [(2 ** -14) * (1023.5 / 1024), 0x0400], [1e-10, 0x0000],
    ];
    for (const [x, h] of cases) assert.equal(f32ToF16(x), h, `f32ToF16(${x})`);
    assert.equal(f32ToF16(NaN) & 0x7e00, 0x7e00, 'NaN -> quiet NaN');
    assert.equal(f32BitsToF16(0xff800001), 0xfe00, 'signalling -NaN -> quiet -NaN');
  });

  it('bf16', () => {
    const cases: [number, number][] = [
      [0x3f800000, 0x3f80], [0x3f808000, 0x3f80], [0x3f818000, 0x3f82], [0x3f808001, 0x3f81], [0xbf80ffff, 0xbf81],
      [0x7f7f7fff, 0x7f7f], [0x7f7f8000, 0x7f80], [0x7f7fffff, 0x7f80], [0x7f800000, 0x7f80], [0xff800000, 0xff80],
      [0x00008000, 0x0000], [0x00018000, 0x0002], [0x80000000, 0x8000],
      [0x7f800001, 0x7fc0], [0xffc00000, 0xffc0], [0x7fa12345, 0x7fe1],
    ];
    for (const [u, h] of cases) assert.equal(f32BitsToBf16(u), h, `f32BitsToBf16(${hex(u)})`);
    assert.equal(f32ToBf16(1), 0x3f80);
  });

  it('fp8 E4M3FN: RNE, subnormals, saturation at 448, NaN', () => {
    const cases: [number, number][] = [
      [0, 0x00], [-0, 0x80], [1, 0x38], [-1, 0xb8], [1.0625, 0x38], [1.1875, 0x3a], [1.125, 0x39],
      [448, 0x7e], [449, 0x7e], [464, 0x7e], [480, 0x7e], [1e6, 0x7e], [-1e6, 0xfe], [Infinity, 0x7e], [-Infinity, 0xfe],
      [432, 0x7e], [424, 0x7d], [416, 0x7d], [240, 0x77], [256, 0x78],
      [2 ** -9, 0x01], [2 ** -10, 0x00], [3 * 2 ** -10, 0x02], [5 * 2 ** -10, 0x02], [-(2 ** -9), 0x81],
      [7 * 2 ** -9, 0x07], [7.5 * 2 ** -9, 0x08], [2 ** -6, 0x08], [1e-10, 0x00],
    ];
    for (const [x, b] of cases) assert.equal(f32ToFp8(x), b, `f32ToFp8(${x})`);
    assert.equal(f32ToFp8(NaN), 0x7f);
    assert.equal(f32BitsToFp8(0xffc00000), 0xff, '-NaN -> 0xFF');
    assert.equal(f32BitsToFp8(0x7f800001), 0x7f);
  });
});

describe('array helpers', () => {
  it('encode/decode arrays match the scalar codecs and are little-endian', () => {
    withSeed('array codecs', (rng) => {
      const x = rng.normals(257, 100);
      x[0] = 1; x[1] = NaN; x[2] = -0;
      const xb = new Uint32Array(x.buffer);
      xb[3] = 0x7fa12345; // NaN with payload

      const bf = encodeBf16(x);
      const f16 = encodeF16(x);
      const f8 = encodeFp8(x);
      assert.deepEqual(Array.from(bf.subarray(0, 2)), [0x80, 0x3f]);
      assert.deepEqual(Array.from(f16.subarray(0, 2)), [0x00, 0x3c]);
      assert.equal(f8[0], 0x38);
      for (let i = 0; i < x.length; i++) {
        assert.equal(bf[2 * i]! | (bf[2 * i + 1]! << 8), f32BitsToBf16(xb[i]!), `bf16[${i}]`);
        assert.equal(f16[2 * i]! | (f16[2 * i + 1]! << 8), f32BitsToF16(xb[i]!), `f16[${i}]`);
        assert.equal(f8[i], f32BitsToFp8(xb[i]!), `fp8[${i}]`);
      }

      const out = new Float32Array(x.length);
      const ob = new Uint32Array(out.buffer);
      decodeBf16(bf, out);
      for (let i = 0; i < x.length; i++) assert.equal(ob[i], bf16ToF32Bits(bf[2 * i]! | (bf[2 * i + 1]! << 8)), `decodeBf16[${i}]`);
      assert.equal(ob[3], 0x7fe10000, 'bf16 NaN payload survives decode');
      decodeF16(f16, out);
      for (let i = 0; i < x.length; i++) assert.equal(ob[i], f16ToF32Bits(f16[2 * i]! | (f16[2 * i + 1]! << 8)), `decodeF16[${i}]`);
      decodeFp8(f8, out);
      for (let i = 0; i < x.length; i++) assert.ok(Object.is(out[i], fp8ToF32(f8[i]!)), `decodeFp8[${i}]`);

      // unaligned source bytes
      const shifted = new Uint8Array(bf.length + 1);
      shifted.set(bf, 1);
      const out2 = new Float32Array(x.length);
      decodeBf16(shifted.subarray(1), out2);
      decodeBf16(bf, out);
      assert.deepEqual(new Uint32Array(out2.buffer), new Uint32Array(out.buffer));

      assert.throws(() => decodeF16(f16, new Float32Array(3)), /output holds 3 values, input has 257/);
    });
  });
});
