// Exact scalar and array codecs for bf16, f16, fp8 E4M3FN and q8_0, plus per-row dequantization of any weight Tensor.
//
// Bit-level functions take and return raw bit patterns (uint32 for f32), so NaN payloads survive; the
// number-level wrappers treat their input as an f32 (Math.fround) and may canonicalize NaN.

import { asF32, type Tensor } from './tensor.js';

// Shared scratch for reinterpreting f32 <-> uint32 (little-endian host assumed, as everywhere in floe).
const f32Box = new Float32Array(1);
const u32Box = new Uint32Array(f32Box.buffer);

/** Bits of Math.fround(x). */
export function f32ToBits(x: number): number {
  f32Box[0] = x;
  return u32Box[0]!;
}

export function bitsToF32(u: number): number {
  u32Box[0] = u;
  return f32Box[0]!;
}

/** Round a non-negative double to the nearest integer, ties to even. */
function rintEven(a: number): number {
  const f = Math.floor(a);
  const r = a - f;
  if (r > 0.5) return f + 1;
  if (r < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

// ---------------------------------------------------------------------------------------------- bf16

/** f32 bits -> bf16 bits, round to nearest even; NaN stays NaN (quiet bit set, sign and top payload kept). */
export function f32BitsToBf16(u: number): number {
  u >>>= 0;
  if ((u & 0x7fffffff) > 0x7f800000) return ((u >>> 16) | 0x0040) & 0xffff;
  // Adding 0x7FFF plus the lowest kept bit rounds half to even; a carry into the exponent is the correct result
  // (up to and including overflow to inf). Finite inputs never wrap past 2^32.
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff;
}

export function bf16ToF32Bits(h: number): number {
  return (h << 16) >>> 0;
}

export function f32ToBf16(x: number): number {
  return f32BitsToBf16(f32ToBits(x));
}

export function bf16ToF32(h: number): number {
  return bitsToF32(bf16ToF32Bits(h));
}

// ----------------------------------------------------------------------------------------------- f16

/** f32 bits -> IEEE half bits: RNE, subnormals, overflow to inf, NaN -> quiet NaN (sign, top payload kept). */
export function f32BitsToF16(u: number): number {
  u >>>= 0;
  const sign = (u >>> 16) & 0x8000;
  const exp = (u >>> 23) & 0xff;
  const mant = u & 0x7fffff;
  if (exp === 0xff) return mant === 0 ? sign | 0x7c00 : sign | 0x7e00 | (mant >>> 13);
  const e = exp - 127;
  if (e >= -14) {
    // Normal range for half: keep 10 of 23 mantissa bits; a rounding carry may step the exponent (or reach inf).
    let code = ((e + 15) << 10) + (mant >>> 13);
    const rem = mant & 0x1fff;
    if (rem > 0x1000 || (rem === 0x1000 && (code & 1) === 1)) code++;
    return code >= 0x7c00 ? sign | 0x7c00 : sign | code;
  }
  // Half subnormal (or zero): value / 2^-24 is exact in f64; rounding may give 0x400 = smallest normal.
  const a = Math.abs(bitsToF32(u)) * 2 ** 24;
  return sign | rintEven(a);
}

export function f16ToF32Bits(h: number): number {
  const sign = (h & 0x8000) << 16;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0x1f) return (sign | 0x7f800000 | (mant << 13)) >>> 0;
  if (exp !== 0) return (sign | ((exp - 15 + 127) << 23) | (mant << 13)) >>> 0;
  if (mant === 0) return sign >>> 0;
  // Subnormal half m * 2^-24 is a normal f32.
  return (sign | f32ToBits(mant * 2 ** -24)) >>> 0;
}

export function f32ToF16(x: number): number {
  return f32BitsToF16(f32ToBits(x));
}

export function f16ToF32(h: number): number {
  return bitsToF32(f16ToF32Bits(h));
}

// ----------------------------------------------------------------------------------------- fp8 E4M3FN

/** Largest finite fp8 E4M3FN magnitude (S.1111.110). */
export const FP8_E4M3_MAX = 448;

/**
 * f32 bits -> fp8 E4M3FN (OCP): bias 7, RNE, subnormals in 2^-9 steps. Finite values beyond ±448 and ±inf
 * saturate to ±448 (E4M3FN has no inf); NaN -> 0x7F / 0xFF by sign.
 */
export function f32BitsToFp8(u: number): number {
  u >>>= 0;
  const sign = (u >>> 24) & 0x80;
  const exp = (u >>> 23) & 0xff;
  const mant = u & 0x7fffff;
  if (exp === 0xff && mant !== 0) return sign | 0x7f;
  if (exp === 0xff) return sign | 0x7e;
  const e = exp - 127;
  if (e >= -6) {
    if (e > 8) return sign | 0x7e;
    let code = ((e + 7) << 3) + (mant >>> 20);
    const rem = mant & 0xfffff;
    if (rem > 0x80000 || (rem === 0x80000 && (code & 1) === 1)) code++;
    // 0x7F would be NaN: anything rounding past 448 saturates.
    return sign | Math.min(code, 0x7e);
  }
  // Subnormal: value / 2^-9, exact in f64; 8 means the smallest normal 2^-6.
  return sign | rintEven(Math.abs(bitsToF32(u)) * 512);
}

export function fp8ToF32Bits(b: number): number {
  const sign = (b & 0x80) << 24;
  const exp = (b >>> 3) & 0xf;
  const mant = b & 7;
  if (exp === 0xf && mant === 7) return (sign | 0x7fc00000) >>> 0;
  if (exp === 0) return (sign | f32ToBits(mant * 2 ** -9)) >>> 0;
  return (sign | ((exp - 7 + 127) << 23) | (mant << 20)) >>> 0;
}

export function f32ToFp8(x: number): number {
  return f32BitsToFp8(f32ToBits(x));
}

/** fp8 code (0..255) -> f32 value; all 256 entries. */
export const FP8_E4M3_TO_F32: Float32Array = (() => {
  const t = new Float32Array(256);
  const tu = new Uint32Array(t.buffer);
  for (let b = 0; b < 256; b++) tu[b] = fp8ToF32Bits(b);
  return t;
})();

export function fp8ToF32(b: number): number {
  return FP8_E4M3_TO_F32[b & 0xff]!;
}

// ------------------------------------------------------------------------------------------ array helpers

/** Uint32 bit view of a Float32Array (same memory). */
function bitsOf(a: Float32Array): Uint32Array {
  return new Uint32Array(a.buffer, a.byteOffset, a.length);
}

function needLen(what: string, got: number, want: number): void {
  if (got !== want) throw new Error(`${what}: output holds ${got} values, input has ${want}`);
}

/** src: bf16 bytes (2n, little-endian) -> out (n). */
export function decodeBf16(src: Uint8Array, out: Float32Array): void {
  const n = src.length >> 1;
  needLen('decodeBf16', out.length, n);
  const o = bitsOf(out);
  for (let i = 0; i < n; i++) o[i] = ((src[2 * i]! | (src[2 * i + 1]! << 8)) << 16) >>> 0;
}

export function encodeBf16(src: Float32Array): Uint8Array {
  const s = bitsOf(src);
  const out = new Uint8Array(src.length * 2);
  for (let i = 0; i < s.length; i++) {
    const h = f32BitsToBf16(s[i]!);
    out[2 * i] = h & 0xff;
    out[2 * i + 1] = h >>> 8;
  }
  return out;
}

/** src: f16 bytes (2n, little-endian) -> out (n). */
export function decodeF16(src: Uint8Array, out: Float32Array): void {
  const n = src.length >> 1;
  needLen('decodeF16', out.length, n);
  const o = bitsOf(out);
  for (let i = 0; i < n; i++) o[i] = F16_BITS_TABLE[src[2 * i]! | (src[2 * i + 1]! << 8)]!;
}

export function encodeF16(src: Float32Array): Uint8Array {
  const s = bitsOf(src);
  const out = new Uint8Array(src.length * 2);
  for (let i = 0; i < s.length; i++) {
    const h = f32BitsToF16(s[i]!);
    out[2 * i] = h & 0xff;
    out[2 * i + 1] = h >>> 8;
  }
  return out;
}

/** src: fp8 E4M3FN bytes (n) -> out (n), unscaled. */
export function decodeFp8(src: Uint8Array, out: Float32Array): void {
  needLen('decodeFp8', out.length, src.length);
  for (let i = 0; i < src.length; i++) out[i] = FP8_E4M3_TO_F32[src[i]!]!;
}

export function encodeFp8(src: Float32Array): Uint8Array {
  const s = bitsOf(src);
  const out = new Uint8Array(src.length);
  for (let i = 0; i < s.length; i++) out[i] = f32BitsToFp8(s[i]!);
  return out;
}

// f16 code -> f32 bits, all 65536 (256 KiB; decoding f16 weights is hot enough to want it).
const F16_BITS_TABLE: Uint32Array = (() => {
  const t = new Uint32Array(65536);
  for (let h = 0; h < 65536; h++) t[h] = f16ToF32Bits(h);
  return t;
})();

// ------------------------------------------------------------------------------------------------ q8_0

/** q8_0 block: f16 scale d, then 32 int8 q; value = d * q. */
export const Q8_0_BLOCK = 32;
export const Q8_0_BLOCK_BYTES = 34;

/** src: q8_0 blocks (n/32 * 34 bytes) -> out (n). */
export function decodeQ8_0(src: Uint8Array, out: Float32Array): void {
  const nb = src.length / Q8_0_BLOCK_BYTES;
  if (!Number.isInteger(nb)) throw new Error(`decodeQ8_0: ${src.length} bytes is not a whole number of 34-byte blocks`);
  needLen('decodeQ8_0', out.length, nb * Q8_0_BLOCK);
  for (let b = 0; b < nb; b++) {
    const o = b * Q8_0_BLOCK_BYTES;
    const d = bitsToF32(F16_BITS_TABLE[src[o]! | (src[o + 1]! << 8)]!);
    for (let j = 0; j < Q8_0_BLOCK; j++) {
      const q = (src[o + 2 + j]! << 24) >> 24; // int8
      out[b * Q8_0_BLOCK + j] = d * q;
    }
  }
}

/**
 * Row n of a q8_0r16 weight (native/common.h: groups of 16 rows; per pair of blocks 2·8 lines of 64 bytes, line k =
 * quants 4k..4k+3 (+128) of each of the 16 rows, then the pair's 2·16 f16 scales; a lone last block: 8 lines + 16
 * scales) → out (C).
 */
export function decodeQ8_0r16Row(data: Uint8Array, C: number, n: number, out: Float32Array): void {
  const nb = C / Q8_0_BLOCK, r = n % 16, group = Math.floor(n / 16) * nb * 544;
  needLen('decodeQ8_0r16Row', out.length, C);
  for (let b = 0; b < nb; b++) {
    const pairBase = group + Math.floor(b / 2) * 1088, h = b % 2;
    const lines = pairBase + h * 512;
    const s = pairBase + ((b | 1) < nb ? 1024 : 512) + h * 32 + r * 2;
    const d = bitsToF32(F16_BITS_TABLE[data[s]! | (data[s + 1]! << 8)]!);
    for (let j = 0; j < Q8_0_BLOCK; j++) {
      const q = ((data[lines + (j >> 2) * 64 + r * 4 + (j & 3)]! ^ 0x80) << 24) >> 24;
      out[b * Q8_0_BLOCK + j] = d * q;
    }
  }
}

/**
 * Row n of a bf16r16 / f16r16 / f32r16 weight (native/common.h r16_*: groups of 16 rows, group g at g·32·C bytes
 * (f32: g·64·C); bf16r16: 64-byte line u = the pair (2u, 2u + 1) of each row r at 4r; f16r16: 32 bytes per column
 * c = rows 0..15 at 2r; f32r16: line c = column c of rows 0..15 at 4r) → out (C).
 */
export function decodeR16Row(data: Uint8Array, dtype: 'bf16' | 'f16' | 'f32', C: number, n: number, out: Float32Array): void {
  needLen('decodeR16Row', out.length, C);
  if (dtype === 'f32') {
    const dv = new DataView(data.buffer, data.byteOffset, data.byteLength);
    const g = Math.floor(n / 16) * 64 * C, r = n % 16;
    for (let c = 0; c < C; c++) out[c] = dv.getFloat32(g + c * 64 + r * 4, true);
    return;
  }
  const g = Math.floor(n / 16) * 32 * C, r = n % 16;
  const table = dtype === 'bf16' ? null : F16_BITS_TABLE;
  for (let c = 0; c < C; c++) {
    const o = dtype === 'bf16' ? g + (c >> 1) * 64 + r * 4 + (c & 1) * 2 : g + c * 32 + r * 2;
    const h = data[o]! | (data[o + 1]! << 8);
    out[c] = bitsToF32(table ? table[h]! : h << 16);
  }
}

/**
 * Byte offset of (row n, column c) in an fp8r16 weight (native/common.h fp8r_*: groups of 16 rows at n/16·16·C;
 * 64-byte line c/4 holds columns 4u..4u+3 of the 16 rows, byte 16·(r/4) + 8·(j/2) + 2·(r%4) + j%2 for column 4u + j).
 */
export function fp8r16Offset(C: number, n: number, c: number): number {
  const r = n % 16, j = c & 3;
  return Math.floor(n / 16) * 16 * C + (c >> 2) * 64 + 16 * (r >> 2) + 8 * (j >> 1) + 2 * (r & 3) + (j & 1);
}

// ----------------------------------------------------------------------------------------- dequantizeRow

/** out (C) = row `row` of t (rows = leading dims flattened), dequantized to f32 (fp8 scale applied). */
export function dequantizeRow(t: Tensor, row: number, out: Float32Array): void {
  const N = t.rows;
  const C = t.cols;
  if (!Number.isInteger(row) || row < 0 || row >= N) {
    throw new Error(`dequantizeRow: row ${row} outside [0, ${N}) of ${t.dtype}[${t.shape.join(',')}]`);
  }
  if (out.length !== C) throw new Error(`dequantizeRow: out holds ${out.length} values, row has ${C}`);
  switch (t.dtype) {
    case 'f32':
      if (t.layout === 'f32r16') { decodeR16Row(t.data, 'f32', C, row, out); return; }
      out.set(asF32(t.data.subarray(row * C * 4, (row + 1) * C * 4)));
      return;
    case 'f16':
      if (t.layout === 'f16r16') { decodeR16Row(t.data, 'f16', C, row, out); return; }
      decodeF16(t.data.subarray(row * C * 2, (row + 1) * C * 2), out);
      return;
    case 'bf16':
      if (t.layout === 'bf16r16') { decodeR16Row(t.data, 'bf16', C, row, out); return; }
      decodeBf16(t.data.subarray(row * C * 2, (row + 1) * C * 2), out);
      return;
    case 'fp8_e4m3': {
      const [br, bc] = t.scaleBlock!;
      const scale = t.scale!;
      const gridCols = Math.ceil(C / bc);
      const srow = Math.floor(row / br) * gridCols;
      if (t.layout === 'fp8r16') {
        for (let c = 0; c < C; c++) out[c] = FP8_E4M3_TO_F32[t.data[fp8r16Offset(C, row, c)]!]! * scale[srow + Math.floor(c / bc)]!;
        return;
      }
      const base = row * C;
      for (let c = 0; c < C; c++) {
        out[c] = FP8_E4M3_TO_F32[t.data[base + c]!]! * scale[srow + Math.floor(c / bc)]!;
      }
      return;
    }
    case 'q8_0': {
      if (t.layout === 'q8_0r16') { decodeQ8_0r16Row(t.data, C, row, out); return; }
      const rb = (C / Q8_0_BLOCK) * Q8_0_BLOCK_BYTES;
      decodeQ8_0(t.data.subarray(row * rb, (row + 1) * rb), out);
      return;
    }
    case 'i32':
      throw new Error(`dequantizeRow: i32 tensor [${t.shape.join(',')}] is not a weight`);
  }
}
