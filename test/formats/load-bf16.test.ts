// loadModel(dir, { dtype: 'bf16' }): every f32 / f16 weight matrix becomes bf16 by round to nearest even (checked
// against a rounding written here from the bit patterns), 1-D tensors and bf16 / fp8 sources stay as stored.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { convertWeightBf16, loadModel } from '../../src/formats/load.js';
import { Tensor } from '../../src/tensor/tensor.js';
import { fileBackingOf } from '../../src/formats/mapfile.js';
import { writeSafetensors } from '../../src/formats/safetensors.js';
import { makeTinyHf } from './fixtures.js';
import { repoPath } from '../repo.js';

const FP8 = repoPath('test/fixtures/models/fp8_block');

/** IEEE half bits -> the f32 value it denotes (exact), from sign, exponent and mantissa. */
function f16Value(h: number): number {
  const s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 0x1f, m = h & 0x3ff;
  if (e === 0x1f) return m ? NaN : s * Infinity;
  return e === 0 ? s * m * 2 ** -24 : s * (1 + m / 1024) * 2 ** (e - 15);
}

/**
 * f32 bits -> the bf16 bits RNE gives: truncate to the upper half, then go one bf16 ulp up when the dropped low half
 * is above half an ulp (0x8000), or exactly half and the kept half is odd. NaN: null (checked as "a NaN" separately).
 */
function rneBf16(u: number): number | null {
  if ((u & 0x7f800000) === 0x7f800000 && (u & 0x7fffff) !== 0) return null;
  const hi = u >>> 16, lo = u & 0xffff;
  return lo > 0x8000 || (lo === 0x8000 && (hi & 1) === 1) ? hi + 1 : hi;
}

const bitsOfF32 = (x: number) => new Uint32Array(Float32Array.of(x).buffer)[0]!;

/** Every stored value of a source tensor as f32 bits (F32: the bits; F16: its exact value, which f32 holds). */
function sourceBits(dtype: string, data: Float32Array | Uint16Array | Uint8Array): Uint32Array {
  if (dtype === 'F32') return new Uint32Array((data as Float32Array).slice().buffer);
  const h = new Uint16Array(data.buffer, data.byteOffset, data.byteLength / 2);
  // a NaN's sign and payload do not survive a JS number: its f32 bits from the half's fields (payload shifted up)
  return Uint32Array.from(h, (v) => Number.isNaN(f16Value(v)) ? (((v & 0x8000) << 16) | 0x7f800000 | ((v & 0x3ff) << 13)) >>> 0 : bitsOfF32(f16Value(v)));
}

function checkConverted(name: string, srcBits: Uint32Array, got: Uint8Array): void {
  const g = new Uint16Array(got.slice().buffer);
  assert.equal(g.length, srcBits.length, `${name}: value count`);
  for (let i = 0; i < g.length; i++) {
    const want = rneBf16(srcBits[i]!);
    if (want === null) {
      assert.ok((g[i]! & 0x7f80) === 0x7f80 && (g[i]! & 0x7f) !== 0, `${name}[${i}]: NaN source gave 0x${g[i]!.toString(16)}, not a NaN`);
      assert.equal(g[i]! >> 15, srcBits[i]! >>> 31, `${name}[${i}]: NaN sign`);
    } else if (g[i] !== want) {
      assert.fail(`${name}[${i}]: source bits 0x${srcBits[i]!.toString(16)} -> bf16 0x${g[i]!.toString(16)}, RNE gives 0x${want.toString(16)}`);
    }
  }
}

for (const [dtype, tied] of [['F32', false], ['F32', true], ['F16', false]] as const) {
  test(`dtype 'bf16' on an ${dtype} checkpoint (${tied ? 'tied' : 'untied'}): every 2-D weight is RNE bf16 of the source, 1-D tensors as stored`, async () => {
    const seed = 11 + (tied ? 1 : 0) + (dtype === 'F16' ? 2 : 0);
    const tiny = makeTinyHf({ dtype, tied, seed });
    if (dtype === 'F32') {
      // the cases a wrong rounding gets wrong, in q_proj of layer 0: ties to even (down and up), just past a tie,
      // NaN with payload in the dropped bits (must stay NaN), ±inf, the largest f32 (rounds to inf), subnormals, -0
      const q = tiny.tensors['model.layers.0.self_attn.q_proj.weight']!.data as Float32Array;
      const special = new Uint32Array([0x3f808000, 0x3f818000, 0x3f808001, 0x7f800001, 0xffc00001, 0x7f800000, 0xff800000,
        0x7f7fffff, 0x00018000, 0x80000001, 0x80000000, 0x3f7fffff]);
      q.set(new Float32Array(special.buffer));
      writeSafetensors(path.join(tiny.dir, 'model.safetensors'), tiny.tensors, { format: 'pt' });
    }
    const m = await loadModel(tiny.dir, { dtype: 'bf16' });
    let converted = 0;
    for (const [name, t] of Object.entries(tiny.tensors)) {
      const got = m.tensors.get(name)!;
      assert.deepEqual(got.shape, t.shape, name);
      if (t.shape.length === 1) {
        assert.equal(got.dtype, dtype.toLowerCase(), `${name}: a 1-D tensor keeps its dtype`);
        assert.deepEqual(got.data, new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength), `${name}: bytes as stored`);
        continue;
      }
      assert.equal(got.dtype, 'bf16', name);
      assert.equal(got.layout, 'rows', name);
      checkConverted(name, sourceBits(dtype, t.data as Float32Array), got.data);
      converted++;
    }
    // 7 linears × 2 layers + embedding (+ head when untied)
    assert.equal(converted, 14 + 1 + (tied ? 0 : 1));
    m.dispose();
  });
}

test("dtype 'bf16' leaves a bf16 checkpoint untouched: the same bytes, still views of the mapped file", async () => {
  const tiny = makeTinyHf({ dtype: 'BF16', seed: 5 });
  const m = await loadModel(tiny.dir, { dtype: 'bf16' });
  for (const [name, t] of Object.entries(tiny.tensors)) {
    const got = m.tensors.get(name)!;
    assert.equal(got.dtype, 'bf16', name);
    assert.deepEqual(got.data, new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength), name);
    assert.ok(fileBackingOf(got.data) !== null, `${name}: not copied`);
  }
  m.dispose();
});

test("dtype 'bf16' keeps fp8 weights fp8 (and their scales) and converts nothing that is not f32 / f16", async () => {
  const plain = await loadModel(FP8);
  const m = await loadModel(FP8, { dtype: 'bf16' });
  let fp8 = 0;
  for (const [name, t] of plain.tensors) {
    const got = m.tensors.get(name)!;
    const want = t.dtype === 'f32' || t.dtype === 'f16' ? (t.shape.length === 2 ? 'bf16' : t.dtype) : t.dtype;
    assert.equal(got.dtype, want, name);
    if (t.dtype === 'fp8_e4m3') {
      fp8++;
      assert.deepEqual(got.data, t.data, `${name}: codes as stored`);
      assert.deepEqual(got.scale, t.scale, `${name}: scales as stored`);
    }
  }
  assert.ok(fp8 > 0, 'the fixture has fp8 weights');
  plain.dispose();
  m.dispose();
});

test('an unknown load dtype names the accepted values', async () => {
  const tiny = makeTinyHf({ seed: 2 });
  await assert.rejects(loadModel(tiny.dir, { dtype: 'f64' as 'bf16' }), /load dtype "f64" is not supported \(expected 'fp8' or 'bf16'\)/);
});

for (const native of [true, false]) {
  test(`convertWeightBf16 over every f16 code and over f32 edge bits, ${native ? 'native (when built)' : 'in TypeScript (FLOE_NATIVE_CONVERT=0)'}: whole aligned views and an unaligned view (TypeScript: the fast paths and the row-by-row path)`, () => {
    const prev = process.env.FLOE_NATIVE_CONVERT;
    if (native) delete process.env.FLOE_NATIVE_CONVERT; else process.env.FLOE_NATIVE_CONVERT = '0';
    try {
      const codes = Uint16Array.from({ length: 65536 }, (_, h) => h);
      const f16 = new Tensor('f16', [256, 256], new Uint8Array(codes.buffer));
      checkConverted('f16 codes', sourceBits('F16', codes), convertWeightBf16(f16, 'f16 codes').data);
      // f16 bytes one byte into a buffer: not a Uint16Array view, so the row-by-row path
      const shifted = new Uint8Array(codes.byteLength + 1);
      shifted.set(new Uint8Array(codes.buffer), 1);
      checkConverted('f16 codes, unaligned', sourceBits('F16', codes), convertWeightBf16(new Tensor('f16', [256, 256], shifted.subarray(1)), 'f16 unaligned').data);
      // f32: ties both ways, just above / below a tie, NaN (quiet, signalling with a low payload), ±inf, the largest finite
      // (rounds to inf), subnormals, -0, and the top of the negative range; then random bits
      const edges = [0x3f808000, 0x3f818000, 0x3f808001, 0x3f807fff, 0x7fc00000, 0x7f800001, 0xff800001, 0x7f800000, 0xff800000,
        0x7f7fffff, 0xff7fffff, 0x00000001, 0x80008000, 0x007fffff, 0x80000000, 0xbf800001, 0xc0000000, 0xfffffffe];
      let seed = 0x9e3779b9;
      const bits = Uint32Array.from({ length: 64 * 64 }, (_, i) => i < edges.length ? edges[i]! : (seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0));
      checkConverted('f32 bits', bits, convertWeightBf16(new Tensor('f32', [64, 64], new Uint8Array(bits.buffer)), 'f32 bits').data);
      const shifted32 = new Uint8Array(bits.byteLength + 2);
      shifted32.set(new Uint8Array(bits.buffer), 2);
      checkConverted('f32 bits, unaligned', bits, convertWeightBf16(new Tensor('f32', [64, 64], shifted32.subarray(2)), 'f32 unaligned').data);
    } finally {
      if (prev === undefined) delete process.env.FLOE_NATIVE_CONVERT; else process.env.FLOE_NATIVE_CONVERT = prev;
    }
  });
}
