// The native load-time conversions (native/convert.cc via quantizeWeightFp8 / convertWeightBf16) against the TypeScript
// they replace: fp8 codes and scale bits equal src/tensor/quantize.ts quantizeTensor's for every source dtype and scale
// block (tails included) and the edge values, bf16 bits equal codecs.ts f32BitsToBf16's for every f16 code and f32 edge
// bits, on every ISA this host runs, with 1 and 2 threads; the addon's counters prove the native path ran. Whole loads
// and `floe quantize --fp8` exports give the same bytes with FLOE_NATIVE_CONVERT=0 (the TypeScript path) and without.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { isMapped, loadAddon, type NativeIsa } from '../../src/backend/native-addon.js';
import { convertWeightBf16, loadModel, nativeConvert, quantizeWeightFp8 } from '../../src/formats/load.js';
import { quantizeModelDir } from '../../src/formats/fp8-export.js';
import { dequantizeRow, encodeBf16, encodeF16, f16ToF32Bits, f32BitsToBf16 } from '../../src/tensor/codecs.js';
import { quantizeTensor } from '../../src/tensor/quantize.js';
import { Tensor } from '../../src/tensor/tensor.js';
import { makeTinyHf } from './fixtures.js';

const addon = loadAddon();
const skip = addon ? false : 'needs the native addon (npx node-gyp rebuild)';
const SEED = process.env.FLOE_TEST_SEED ? Number(process.env.FLOE_TEST_SEED) : (Math.random() * 2 ** 31) >>> 0;
const ISAS = (['scalar', 'avx2', 'avx512'] as const).filter((_, i) => addon && i <= ['scalar', 'avx2', 'avx512'].indexOf(addon.supportedIsa()));

/** mulberry32: uniform [0, 1). */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = Math.imul(s ^ (s >>> 15), 1 | s);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  };
}

function gauss(r: () => number): number {
  return Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r());
}

const f32OfBits = (u: number) => new Float32Array(Uint32Array.of(u).buffer)[0]!;

/**
 * Values (N, C): normal with a random scale per row (e^(3·N(0,1))), then edge cases over a few rows spread through the
 * blocks: an all-zero row with -0s; a row whose amax is 448 (scale 1) holding fp8 ties (1.0625, 1.1875, 2^-10, 1.5·2^-9),
 * the last subnormal step and values that round to 448; a NaN (either sign), +inf, -inf among finite values; a row of
 * f32 subnormals (its scale underflows); huge next to tiny values (quotients far below fp8's smallest step).
 */
function values(N: number, C: number, r: () => number): Float32Array {
  const v = new Float32Array(N * C); // (N, C)
  for (let i = 0; i < N; i++) {
    const s = Math.exp(3 * gauss(r));
    for (let c = 0; c < C; c++) v[i * C + c] = gauss(r) * s;
  }
  const row = (k: number) => v.subarray((k % N) * C, (k % N) * C + C);
  const at = (k: number, c: number, x: number) => { row(k)[c % C] = x; };
  row(0).fill(0);
  for (let c = 0; c < C; c += 3) at(0, c, -0);
  const ties = [448, -448, 1.0625, 1.1875, -1.0625, 2 ** -10, 1.5 * 2 ** -9, -2.5 * 2 ** -9, 2 ** -6 - 2 ** -12, 447.9, 440, 0, -0];
  row(13).fill(0.5);
  ties.forEach((x, c) => at(13, c, x));
  at(26, 5 + Math.floor(r() * 10), f32OfBits(r() < 0.5 ? 0x7fc00000 : 0xffc00001));
  at(39, 40 + Math.floor(r() * 10), Infinity);
  at(52, 3, -Infinity);
  at(52, C - 1, Infinity);
  const sub = row(65);
  for (let c = 0; c < C; c++) sub[c] = f32OfBits(1 + Math.floor(r() * 300)) * (r() < 0.5 ? -1 : 1); // 1..300 · 2^-149
  const wide = row(78);
  for (let c = 0; c < C; c++) wide[c] = c % 2 ? 1e30 * gauss(r) : 1e-12 * gauss(r);
  return v;
}

/** The values stored as `dtype` (f16 / bf16 by the codecs' RNE): the tensor the loader would map. */
function stored(dtype: 'f32' | 'f16' | 'bf16', v: Float32Array, shape: [number, number]): Tensor {
  const data = dtype === 'f32' ? new Uint8Array(v.slice().buffer) : dtype === 'f16' ? encodeF16(v) : encodeBf16(v);
  return new Tensor(dtype, shape, data);
}

/** The same tensor one (f32: two) bytes into a buffer: a view no typed array of its element size can take. */
function unaligned(t: Tensor): Tensor {
  const k = t.dtype === 'f32' ? 2 : 1;
  const b = new Uint8Array(t.data.byteLength + k);
  b.set(t.data, k);
  return new Tensor(t.dtype, t.shape, b.subarray(k), t.scale, t.scaleBlock);
}

/** The JavaScript quantizer on the tensor's exact values (what quantizeWeightFp8 did before the addon). */
function referenceFp8(t: Tensor, block: readonly [number, number]): Tensor {
  const v = new Float32Array(t.numel);
  for (let i = 0; i < t.rows; i++) dequantizeRow(t, i, v.subarray(i * t.cols, (i + 1) * t.cols));
  return quantizeTensor(v, t.shape, 'fp8_e4m3', { fp8Block: block });
}

function sameFp8(what: string, got: Tensor, want: Tensor): void {
  assert.equal(got.dtype, 'fp8_e4m3', what);
  assert.deepEqual(got.scaleBlock, want.scaleBlock, `${what}: scale block`);
  const gs = new Uint32Array(got.scale!.slice().buffer), ws = new Uint32Array(want.scale!.slice().buffer);
  assert.equal(gs.length, ws.length, `${what}: scale count`);
  for (let k = 0; k < ws.length; k++) if (gs[k] !== ws[k]) assert.fail(`${what}: scale ${k} bits 0x${gs[k]!.toString(16)}, JS 0x${ws[k]!.toString(16)}`);
  for (let i = 0; i < want.data.length; i++) {
    if (got.data[i] !== want.data[i]) assert.fail(`${what}: code ${i} (row ${Math.floor(i / got.cols)}) 0x${got.data[i]!.toString(16)}, JS 0x${want.data[i]!.toString(16)}`);
  }
}

function sameBytes(what: string, got: Uint8Array, want: Uint8Array): void {
  assert.equal(got.length, want.length, `${what}: length`);
  for (let i = 0; i < want.length; i++) if (got[i] !== want[i]) assert.fail(`${what}: byte ${i} 0x${got[i]!.toString(16)}, want 0x${want[i]!.toString(16)}`);
}

function counter(key: string): number {
  return addon!.counters()[key] ?? 0;
}

/** Runs f on every ISA this host has, with 1 and 2 threads (restored after). */
function eachIsaAndThreads(f: (isa: NativeIsa, threads: number) => void): void {
  const a = addon!, isa0 = a.isa(), th0 = a.getThreads();
  try {
    for (const isa of ISAS) {
      a.setIsa(isa);
      for (const threads of [1, 2]) {
        a.setThreads(threads);
        f(isa, threads);
      }
    }
  } finally {
    a.setIsa(isa0);
    a.setThreads(th0);
  }
}

function withJsConvert<T>(f: () => T): T {
  const prev = process.env.FLOE_NATIVE_CONVERT;
  process.env.FLOE_NATIVE_CONVERT = '0';
  try {
    return f();
  } finally {
    if (prev === undefined) delete process.env.FLOE_NATIVE_CONVERT;
    else process.env.FLOE_NATIVE_CONVERT = prev;
  }
}

async function withJsConvertAsync<T>(f: () => Promise<T>): Promise<T> {
  const prev = process.env.FLOE_NATIVE_CONVERT;
  process.env.FLOE_NATIVE_CONVERT = '0';
  try {
    return await f();
  } finally {
    if (prev === undefined) delete process.env.FLOE_NATIVE_CONVERT;
    else process.env.FLOE_NATIVE_CONVERT = prev;
  }
}

// shape, block (undefined: quantizeWeightFp8's default, one scale per row)
const FP8_CASES: [[number, number], [number, number] | undefined][] = [
  [[100, 70], undefined], [[100, 70], [1, 70]], [[100, 70], [32, 32]], [[300, 260], [128, 128]], [[100, 70], [7, 5]],
  [[100, 70], [100, 70]], [[100, 70], [1, 16]], [[3, 1], undefined], [[1, 300], [128, 128]],
];

for (const dtype of ['f32', 'f16', 'bf16'] as const) {
  test(`quantizeWeightFp8 native = quantizeTensor's codes and scale bits, ${dtype} source, every block shape, ISAs ${ISAS.join('/')}, 1 and 2 threads (seed ${SEED})`, { skip }, () => {
    assert.ok(nativeConvert(), 'the addon has convertFp8 / convertBf16 (a build from before them is stale: npx node-gyp build)');
    const r = rng(SEED + dtype.length);
    for (const [shape, block] of FP8_CASES) {
      const t = stored(dtype, values(shape[0], shape[1], r), shape);
      const want = referenceFp8(t, block ?? [1, shape[1]]);
      const what = (isa: string, threads: number, view = '') => `${dtype} [${shape.join(', ')}] block ${block ? `[${block.join(', ')}]` : 'per row'} ${isa} ${threads} threads${view}`;
      eachIsaAndThreads((isa, threads) => {
        const key = `convertFp8.${dtype}.${isa}`, n0 = counter(key);
        sameFp8(what(isa, threads), quantizeWeightFp8(t, 'w', block), want);
        sameFp8(what(isa, threads, ', unaligned view'), quantizeWeightFp8(unaligned(t), 'w', block), want);
        assert.equal(counter(key) - n0, 2, `${what(isa, threads)}: ${key} counts both calls (the native path ran)`);
      });
      // the TypeScript fallback gives the same, and does not touch the addon
      const n0 = counter(`convertFp8.${dtype}.${addon!.isa()}`);
      sameFp8(what('js', 1), withJsConvert(() => quantizeWeightFp8(t, 'w', block)), want);
      assert.equal(counter(`convertFp8.${dtype}.${addon!.isa()}`), n0, 'FLOE_NATIVE_CONVERT=0 takes the TypeScript path');
    }
  });
}

test(`quantizeWeightFp8 of a q8_0 weight (a GGUF with --dtype fp8): dequantized a block row at a time natively, = quantizeTensor of its values, every ISA, 1 and 2 threads (seed ${SEED})`, { skip }, () => {
  // block rows that divide N or not (48, 128), column blocks with a tail, more block rows than tasks
  const N = 400, C = 320;
  const r = rng(SEED ^ 0x08);
  const q8 = quantizeTensor(values(N, C, r), [N, C], 'q8_0');
  // a q8_0 block of NaN, of inf and of zero scales (d = f16 NaN / inf / 0): NaN and ±inf values, and zeros
  for (const [row, d] of [[5, 0x7e00], [77, 0x7c00], [130, 0]] as const) q8.data.set([d & 0xff, d >> 8], row * (C / 32) * 34 + 34);
  for (const block of [undefined, [16, 16], [48, 96], [128, 128]] as const) {
    const b = block ?? [1, C];
    const want = referenceFp8(q8, b);
    eachIsaAndThreads((isa, threads) => {
      const key = `convertFp8.q8_0.${isa}`, n0 = counter(key);
      sameFp8(`q8_0 block [${b.join(', ')}] ${isa} ${threads} threads`, quantizeWeightFp8(q8, 'w', block), want);
      assert.equal(counter(key) - n0, 1, `${key} counts the call (the native path ran)`);
    });
  }
  assert.throws(() => addon!.convertFp8(q8.data, 4, N, 48, 1, 48, new Uint8Array(N * 48), new Float32Array(N)), /q8_0 rows must be a multiple of 32 columns, got C=48/);
});

test(`quantizeWeightFp8 native keeps quantizeTensor's error for a bad block, and the edge rows give what fp8 says (seed ${SEED})`, { skip }, () => {
  const t = stored('f32', values(100, 70, rng(SEED)), [100, 70]);
  assert.throws(() => quantizeWeightFp8(t, 'w', [0, 4]), /fp8 block must be two positive integers, got \[0,4\]/);
  assert.throws(() => quantizeWeightFp8(t, 'w', [1.5, 4]), /fp8 block must be two positive integers, got \[1.5,4\]/);
  // spot checks independent of the JS quantizer: row 13 has amax 448 -> scale 1, its ties round to even
  const q = quantizeWeightFp8(t, 'w');
  assert.equal(q.scale![13], 1);
  const row13 = [...q.data.subarray(13 * 70, 13 * 70 + 13)];
  // 448, -448, 1.0625 -> 1.0 (0x38), 1.1875 -> 1.25 (0x3a), -1.0625 -> -1.0, 2^-10 -> 0, 1.5·2^-9 -> 2·2^-9, -2.5·2^-9 ->
  // -2·2^-9, 2^-6 - 2^-12 -> 2^-6 (0x08), 447.9 -> 448, 440 -> 448 (0x7e: 416 + 32 steps), 0, -0
  assert.deepEqual(row13, [0x7e, 0xfe, 0x38, 0x3a, 0xb8, 0x00, 0x02, 0x82, 0x08, 0x7e, 0x7e, 0x00, 0x80]);
  assert.equal(q.scale![0], 1, 'an all-zero row (with -0s) has scale 1');
  assert.ok(q.data.subarray(0, 70).every((b) => b === 0 || b === 0x80), 'zeros stay ±0');
  assert.ok(Number.isNaN(q.scale![26]), 'a row with NaN gets a NaN scale, as Math.max makes it');
});

test(`fp8 codes for every f32 upper half from 0 to 448, both signs, low half 0 (each tie) and random (seed ${SEED}): native = JS on every ISA`, { skip }, () => {
  // rows of 256 with 448 first: scale 1, so each code is f32BitsToFp8 of the value itself
  const r = rng(SEED ^ 0x5eed);
  const vals: number[] = [];
  for (let hi = 0; hi <= 0x43e0; hi++) {
    for (const sign of [0, 0x80000000]) {
      vals.push((sign | (hi << 16)) >>> 0);
      if (hi < 0x43e0) vals.push((sign | (hi << 16) | Math.floor(r() * 0x10000)) >>> 0); // (above 448 it would set the scale)
    }
  }
  const C = 256, perRow = C - 1, N = Math.ceil(vals.length / perRow);
  const bits = new Uint32Array(N * C);
  for (let i = 0; i < N; i++) {
    bits[i * C] = 0x43e00000; // 448
    for (let c = 1; c < C; c++) bits[i * C + c] = vals[i * perRow + c - 1] ?? 0;
  }
  const t = f32Tensor(bits, N);
  const want = referenceFp8(t, [1, C]);
  assert.ok(want.scale!.every((s) => s === 1), 'every row has scale 1');
  eachIsaAndThreads((isa, threads) => sameFp8(`upper halves ${isa} ${threads} threads`, quantizeWeightFp8(t, 'w'), want));
});

/** f32 bits (n) as a tensor (rows, n / rows). */
function f32Tensor(bits: Uint32Array, rows: number): Tensor {
  return new Tensor('f32', [rows, bits.length / rows], new Uint8Array(bits.slice().buffer));
}

test(`convertWeightBf16 native = f32BitsToBf16 for every f16 code and f32 edge and random bits, ISAs ${ISAS.join('/')}, 1 and 2 threads (seed ${SEED})`, { skip }, () => {
  const codes = Uint16Array.from({ length: 65536 }, (_, h) => h);
  const f16 = new Tensor('f16', [256, 256], new Uint8Array(codes.buffer));
  const f16Want = new Uint8Array(Uint16Array.from(codes, (h) => f32BitsToBf16(f16ToF32Bits(h))).buffer);
  // f32: ties both ways, just above / below a tie, NaN (quiet, signalling with a low payload, negative), ±inf, the
  // largest finite (rounds to inf), subnormals, -0, the top of the negative range; then random bits, 512 × 256 in all
  // (more than one task of the pool)
  const edges = [0x3f808000, 0x3f818000, 0x3f808001, 0x3f807fff, 0x7fc00000, 0x7f800001, 0xff800001, 0xffbfffff, 0x7f800000,
    0xff800000, 0x7f7fffff, 0xff7fffff, 0x7f7f8000, 0x00000001, 0x80008000, 0x007fffff, 0x00018000, 0x80000000, 0xbf800001,
    0xc0000000, 0xfffffffe, 0x7fffffff];
  const r = rng(SEED);
  const bits = Uint32Array.from({ length: 512 * 256 }, (_, i) => i < edges.length ? edges[i]! : Math.floor(r() * 2 ** 32));
  const f32 = f32Tensor(bits, 512);
  const f32Want = new Uint8Array(Uint16Array.from(bits, (u) => f32BitsToBf16(u)).buffer);
  eachIsaAndThreads((isa, threads) => {
    const k16 = `convertBf16.f16.${isa}`, k32 = `convertBf16.f32.${isa}`, n16 = counter(k16), n32 = counter(k32);
    sameBytes(`f16 codes ${isa} ${threads} threads`, convertWeightBf16(f16, 'f16').data, f16Want);
    sameBytes(`f16 codes, unaligned, ${isa} ${threads} threads`, convertWeightBf16(unaligned(f16), 'f16').data, f16Want);
    sameBytes(`f32 bits ${isa} ${threads} threads`, convertWeightBf16(f32, 'f32').data, f32Want);
    sameBytes(`f32 bits, unaligned, ${isa} ${threads} threads`, convertWeightBf16(unaligned(f32), 'f32').data, f32Want);
    assert.equal(counter(k16) - n16, 2, `${k16} counts both f16 calls (the native path ran)`);
    assert.equal(counter(k32) - n32, 2, `${k32} counts both f32 calls`);
  });
  // the TypeScript paths (aligned f32 in place, the f16 table, row by row for unaligned views) give the same
  const n0 = counter(`convertBf16.f32.${addon!.isa()}`) + counter(`convertBf16.f16.${addon!.isa()}`);
  withJsConvert(() => {
    sameBytes('js f16', convertWeightBf16(f16, 'f16').data, f16Want);
    sameBytes('js f16 unaligned', convertWeightBf16(unaligned(f16), 'f16').data, f16Want);
    sameBytes('js f32', convertWeightBf16(f32, 'f32').data, f32Want);
    sameBytes('js f32 unaligned', convertWeightBf16(unaligned(f32), 'f32').data, f32Want);
  });
  assert.equal(counter(`convertBf16.f32.${addon!.isa()}`) + counter(`convertBf16.f16.${addon!.isa()}`), n0, 'FLOE_NATIVE_CONVERT=0 takes the TypeScript path');
});

for (const dtype of ['F32', 'F16', 'BF16'] as const) {
  test(`loadModel dtype 'fp8' (per row and [16, 16] blocks) and 'bf16' on an ${dtype} checkpoint: native and FLOE_NATIVE_CONVERT=0 load the same bytes (seed ${SEED})`, { skip }, async () => {
    const tiny = makeTinyHf({ dtype, seed: SEED % 1000, hidden: 48, ffn: 80 });
    const src = dtype.toLowerCase();
    for (const [opt, kernel] of [[{ dtype: 'fp8' }, 'convertFp8'], [{ dtype: 'fp8', fp8Block: [16, 16] }, 'convertFp8'], [{ dtype: 'bf16' }, 'convertBf16']] as const) {
      if (opt.dtype === 'bf16' && dtype === 'BF16') continue; // nothing to convert
      const key = `${kernel}.${src}.${addon!.isa()}`, n0 = counter(key);
      const native = await loadModel(tiny.dir, opt);
      const ran = counter(key) - n0;
      const js = await withJsConvertAsync(() => loadModel(tiny.dir, opt));
      assert.equal(counter(key) - n0, ran, 'the JS load made no native call');
      // fp8: 7 linears × 2 layers; bf16: those, the embedding and the head
      assert.equal(ran, opt.dtype === 'fp8' ? 14 : 16, `${key}: one native call per converted tensor`);
      for (const [name, want] of js.tensors) {
        const got = native.tensors.get(name)!;
        const what = `${JSON.stringify(opt)} ${name}`;
        assert.equal(got.dtype, want.dtype, what);
        sameBytes(what, got.data, want.data);
        if (want.scale) sameBytes(`${what} scale`, new Uint8Array(got.scale!.slice().buffer), new Uint8Array(want.scale.slice().buffer));
      }
      native.dispose();
      js.dispose();
    }
  });
}

test(`quantizeModelDir (floe quantize --fp8) writes the same files natively and with FLOE_NATIVE_CONVERT=0 (seed ${SEED})`, { skip }, async () => {
  const tiny = makeTinyHf({ dtype: 'F32', seed: SEED % 1000 });
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'floe-native-convert-'));
  const k8 = `convertFp8.f32.${addon!.isa()}`, k16 = `convertBf16.f32.${addon!.isa()}`, n8 = counter(k8), n16 = counter(k16);
  for (const scheme of [{ kind: 'block', block: 16 }, { kind: 'per-row' }] as const) {
    const a = path.join(out, `${scheme.kind}-native`), b = path.join(out, `${scheme.kind}-js`);
    await quantizeModelDir(tiny.dir, a, { scheme, quantizeHead: true });
    await withJsConvertAsync(() => quantizeModelDir(tiny.dir, b, { scheme, quantizeHead: true }));
    const files = fs.readdirSync(b).sort();
    assert.deepEqual(fs.readdirSync(a).sort(), files);
    for (const f of files) sameBytes(`${scheme.kind} ${f}`, fs.readFileSync(path.join(a, f)), fs.readFileSync(path.join(b, f)));
  }
  // per scheme: 14 linears + the head to fp8, the embedding to bf16 natively
  assert.equal(counter(k8) - n8, 30, `${k8}: the fp8 weights went through the addon`);
  assert.equal(counter(k16) - n16, 2, `${k16}: the embedding went through the addon`);
});

/** Resident KiB of this process's mappings of `file` (/proc/self/smaps), and how many there are. */
function mappedRss(file: string): { kib: number; maps: number } {
  let kib = 0, maps = 0, inFile = false;
  for (const line of fs.readFileSync('/proc/self/smaps', 'utf8').split('\n')) {
    if (/^[0-9a-f]+-[0-9a-f]+ /.test(line)) {
      inFile = line.endsWith(` ${file}`);
      if (inFile) maps++;
    } else if (inFile && line.startsWith('Rss:')) kib += Number(line.split(/\s+/)[1]);
  }
  return { kib, maps };
}

for (const dtype of ['fp8', 'bf16'] as const) {
  test(`loadModel dtype '${dtype}' hands each converted tensor's source pages back: the mapped checkpoint is not resident beside its copy (seed ${SEED})`, { skip: skip || (process.platform !== 'linux' && 'reads /proc/self/smaps') }, async () => {
    // 2 layers at hidden 512, ffn 2048 in f32: 25 MiB of linear weights, converted; the norms and embedding stay views
    // of the mapping (so it stays mapped). Before, every converted tensor's source pages stayed resident: a 1B bf16
    // checkpoint loaded with --dtype fp8 peaked at 4.0 GB, 1.9 GB of it the file (bench/results/s34)
    const tiny = makeTinyHf({ dtype: 'F32', seed: SEED % 1000, hidden: 512, ffn: 2048, heads: 8, kvHeads: 4 });
    const file = fs.realpathSync(path.join(tiny.dir, 'model.safetensors'));
    const m = await loadModel(tiny.dir, { dtype });
    const converted = [...m.tensors.values()].filter((t) => t.dtype !== 'f32').reduce((s, t) => s + t.shape.reduce((a, b) => a * b, 1) * 4, 0);
    assert.ok(converted > 20 * 2 ** 20, `converted ${converted} bytes of f32`);
    const { kib, maps } = mappedRss(file);
    assert.ok(maps > 0, `${file} is still mapped (the unconverted tensors are views of it)`);
    assert.ok(kib * 1024 < converted / 8, `${kib} KiB of the mapped checkpoint resident after converting ${converted >> 20} MiB of it`);
    // what the load passes as `release`: the views of the mapping are mapped, the converted copies are not
    assert.ok(isMapped(m.tensors.get('model.norm.weight')!.data), 'a norm vector is a view of the mapped file');
    assert.ok(!isMapped(m.tensors.get('model.layers.0.mlp.up_proj.weight')!.data), 'a converted weight is memory of its own');
  });
}
