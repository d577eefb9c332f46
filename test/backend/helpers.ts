// Test helpers: seeded PRNG, random tensors, tolerance checks that name the seed, and the backend conformance suite.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, it, type TestContext } from 'node:test';
import type { AttentionBatch, AttentionShape, Backend, KvDType, KvLayer, TrainBackend } from '../../src/backend/backend.js';
import { WEIGHT_DTYPES } from '../../src/backend/backend.js';
import { referenceBackend } from '../../src/backend/reference.js';
import { ropeInvFreq } from '../../src/model/config.js';
import { dequantizeRow } from '../../src/tensor/codecs.js';
import { quantizeTensor } from '../../src/tensor/quantize.js';
import { f32Tensor, Tensor, type DType } from '../../src/tensor/tensor.js';
import { loadAddon } from '../../src/backend/native-addon.js';

// ------------------------------------------------------------------------------------------------- PRNG

/** Base seed: FLOE_SEED from the environment (to replay a failure), else fresh. */
export const BASE_SEED: number = process.env.FLOE_SEED !== undefined ? Number(process.env.FLOE_SEED) >>> 0 : (Math.random() * 2 ** 32) >>> 0;

/** mulberry32: small, seedable, good enough for test data. */
export class Rng {
  private s: number;
  constructor(readonly seed: number) { this.s = seed >>> 0; }
  /** uint32 */
  u32(): number {
    this.s = (this.s + 0x6d2b79f5) >>> 0;
    let t = this.s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }
  /** [0, 1) */
  next(): number { return this.u32() / 2 ** 32; }
  uniform(lo: number, hi: number): number { return lo + (hi - lo) * this.next(); }
  /** integer in [lo, hi) */
  int(lo: number, hi: number): number { return lo + Math.floor(this.next() * (hi - lo)); }
  /** approximately standard normal (Box-Muller) */
  normal(): number {
    const u = 1 - this.next();
    return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * this.next());
  }
  f32(n: number, lo = -1, hi = 1): Float32Array {
    const a = new Float32Array(n);
    for (let i = 0; i < n; i++) a[i] = this.uniform(lo, hi);
    return a;
  }
  normals(n: number, std = 1): Float32Array {
    const a = new Float32Array(n);
    for (let i = 0; i < n; i++) a[i] = this.normal() * std;
    return a;
  }
  shuffle<T>(a: T[]): T[] {
    for (let i = a.length - 1; i > 0; i--) {
      const j = this.int(0, i + 1);
      [a[i], a[j]] = [a[j]!, a[i]!];
    }
    return a;
  }
}

let seedCounter = 0;

/**
 * Run fn with a fresh Rng whose seed is derived from BASE_SEED; a failure is rethrown with the seed and
 * the command to replay it.
 */
export function withSeed<T>(label: string, fn: (rng: Rng) => T): T {
  const seed = (BASE_SEED + Math.imul(++seedCounter, 0x9e3779b1)) >>> 0;
  try {
    return fn(new Rng(seed));
  } catch (e) {
    const err = e instanceof Error ? e : new Error(String(e));
    err.message = `${label} [seed ${seed}; base seed ${BASE_SEED}, replay with FLOE_SEED=${BASE_SEED}]\n${err.message}`;
    throw err;
  }
}

// ------------------------------------------------------------------------------------------ comparisons

/**
 * Assert |got[i] - want[i]| <= atol + rtol * mag[i] for every i, where mag defaults to |want|.
 * Reports the worst element, its index, and the first few offenders.
 */
export function assertClose(what: string, got: Float32Array, want: Float32Array | Float64Array, tol: { atol: number; rtol: number; mag?: ArrayLike<number> }): void {
  assert.equal(got.length, want.length, `${what}: length ${got.length}, expected ${want.length}`);
  let worst = -1;
  let worstRatio = 0;
  let bad = 0;
  const examples: string[] = [];
  for (let i = 0; i < got.length; i++) {
    const g = got[i]!;
    const w = want[i]!;
    const mag = tol.mag ? tol.mag[i]! : Math.abs(w);
    const allowed = tol.atol + tol.rtol * mag;
    const err = Math.abs(g - w);
    const ok = Number.isNaN(w) ? Number.isNaN(g) : err <= allowed;
    if (!ok) {
      bad++;
      if (examples.length < 5) examples.push(`  [${i}] got ${g}, expected ${w} (err ${err.toExponential(3)}, allowed ${allowed.toExponential(3)})`);
      const ratio = Number.isNaN(err) ? Infinity : err / allowed;
      if (ratio > worstRatio) { worstRatio = ratio; worst = i; }
    }
  }
  if (bad > 0) {
    assert.fail(`${what}: ${bad}/${got.length} values outside tolerance (atol ${tol.atol}, rtol ${tol.rtol}); worst at [${worst}] is ${worstRatio.toFixed(2)}x the allowance\n${examples.join('\n')}`);
  }
}

// ---------------------------------------------------------------------------------------- KV cache setup

/** A KV layer with random bytes (so untouched slots are detectable); bf16 and fp8 garbage is kept finite. */
export function makeKvLayer(rng: Rng, dtype: KvDType, numBlocks: number, blockSize: number, K: number, E: number): KvLayer {
  const elems = numBlocks * blockSize * K * E;
  if (dtype === 'fp8_e4m3') {
    const codes = (): Uint8Array => Uint8Array.from({ length: elems }, () => rng.int(0, 0x7f) | (rng.int(0, 2) << 7)); // no NaN codes
    const scales = (): Float32Array => rng.f32(numBlocks * blockSize * K, 0.001, 0.02);
    return { dtype, k: codes(), v: codes(), numBlocks, blockSize, numKvHeads: K, headDim: E, kScale: scales(), vScale: scales() };
  }
  const fill = (): Uint8Array => {
    const vals = rng.f32(elems, -4, 4);
    if (dtype === 'f32') return new Uint8Array(vals.buffer);
    const b = new Uint8Array(elems * 2);
    const u = new Uint32Array(vals.buffer);
    for (let i = 0; i < elems; i++) { b[2 * i] = (u[i]! >>> 16) & 0xff; b[2 * i + 1] = u[i]! >>> 24; }
    return b;
  };
  return { dtype, k: fill(), v: fill(), numBlocks, blockSize, numKvHeads: K, headDim: E };
}

export function cloneKvLayer(l: KvLayer): KvLayer {
  return { ...l, k: l.k.slice(), v: l.v.slice(), ...(l.kScale && l.vScale ? { kScale: l.kScale.slice(), vScale: l.vScale.slice() } : {}) };
}

export interface SeqSpec { readonly ctxLen: number; readonly qLen: number }

/**
 * Allocate non-contiguous, shuffled block tables for the sequences (unused table entries are -1).
 * Returns the batch plus, per token of every sequence, its cache slot.
 */
export function makeBatch(rng: Rng, seqs: readonly SeqSpec[], numBlocks: number, blockSize: number): { batch: AttentionBatch; slotsOf: number[][] } {
  const S = seqs.length;
  const maxBlocks = Math.max(...seqs.map((s) => Math.ceil(s.ctxLen / blockSize)));
  const need = seqs.reduce((a, s) => a + Math.ceil(s.ctxLen / blockSize), 0);
  if (need > numBlocks) throw new Error(`makeBatch: ${need} blocks needed, pool has ${numBlocks}`);
  const free = rng.shuffle(Array.from({ length: numBlocks }, (_, i) => i));
  const blockTables = new Int32Array(S * maxBlocks).fill(-1);
  const qStart = new Int32Array(S + 1);
  const ctxLen = new Int32Array(S);
  const slotsOf: number[][] = [];
  for (let s = 0; s < S; s++) {
    const nb = Math.ceil(seqs[s]!.ctxLen / blockSize);
    for (let b = 0; b < nb; b++) blockTables[s * maxBlocks + b] = free.pop()!;
    qStart[s + 1] = qStart[s]! + seqs[s]!.qLen;
    ctxLen[s] = seqs[s]!.ctxLen;
    const slots: number[] = [];
    for (let i = 0; i < seqs[s]!.ctxLen; i++) slots.push(blockTables[s * maxBlocks + Math.floor(i / blockSize)]! * blockSize + (i % blockSize));
    slotsOf.push(slots);
  }
  return { batch: { numSeqs: S, qStart, ctxLen, blockTables, maxBlocks }, slotsOf };
}

/** An attention case: heads, head dim, optional block size, and the sequences of one batch. */
export interface AttentionCase { readonly H: number; readonly K: number; readonly E: number; readonly L?: number; readonly seqs: readonly SeqSpec[] }

/**
 * One batch of attention on `be` and on the reference backend, from the same cache bytes (every context token written
 * through the reference kvWrite), queries of std 2 and a scale other than 1/sqrt(E) (a kernel that ignores it fails).
 * vmax = max |v| written: the output is a convex combination of v rows, so tolerances are relative to it.
 */
export function attentionCase(rng: Rng, be: Backend, kvDtype: KvDType, c: AttentionCase): { got: Float32Array; want: Float32Array; vmax: number } {
  const ref = referenceBackend;
  const L = c.L ?? 16;
  const numBlocks = c.seqs.reduce((a, s) => a + Math.ceil(s.ctxLen / L), 0) + 4;
  const { batch, slotsOf } = makeBatch(rng, c.seqs, numBlocks, L);
  const layer = makeKvLayer(rng, kvDtype, numBlocks, L, c.K, c.E);
  const allSlots = Int32Array.from(slotsOf.flat());
  const kvN = allSlots.length * c.K * c.E;
  const vv = rng.normals(kvN);
  ref.kvWrite(layer, rng.normals(kvN), vv, allSlots);
  const Tq = batch.qStart[batch.numSeqs]!;
  const q = rng.normals(Tq * c.H * c.E, 2);
  const shape: AttentionShape = { numHeads: c.H, numKvHeads: c.K, headDim: c.E, scale: rng.uniform(0.5, 1.5) / Math.sqrt(c.E) };
  const want = new Float32Array(Tq * c.H * c.E);
  ref.attention(want, q, layer, shape, batch);
  const got = new Float32Array(Tq * c.H * c.E).fill(NaN);
  be.attention(got, q, cloneKvLayer(layer), shape, batch);
  let vmax = 0;
  for (const a of vv) vmax = Math.max(vmax, Math.abs(a));
  return { got, want, vmax };
}

// ------------------------------------------------------------------------------------------ tolerances

/**
 * Matmul tolerance as a fraction of the dot-product magnitude sum_c |x_c * w_c|. A native kernel may feed
 * bf16 / fp8 / q8_0 weights with bf16 or int8-quantized activations, hence ~1e-2 for those.
 */
export const MATMUL_RTOL: Record<(typeof WEIGHT_DTYPES)[number], number> = {
  f32: 1e-5,
  f16: 1e-4,
  bf16: 1e-2,
  fp8_e4m3: 1e-2,
  q8_0: 1e-2,
};

/** Attention tolerance relative to max |v| over the context; bf16 caches may be consumed in bf16 arithmetic. */
export const ATTENTION_RTOL: Record<KvDType, number> = { f32: 1e-5, bf16: 1e-2, fp8_e4m3: 1e-4 };

/** sum_c |x[m,c] * w[n,c]| (M, N), from the dequantized weight. */
function dotMagnitude(x: Float32Array, w: Tensor, M: number): Float64Array {
  const N = w.rows;
  const C = w.cols;
  const mag = new Float64Array(M * N);
  const row = new Float32Array(C);
  for (let n = 0; n < N; n++) {
    dequantizeRow(w, n, row);
    for (let m = 0; m < M; m++) {
      let s = 0;
      for (let c = 0; c < C; c++) s += Math.abs(x[m * C + c]! * row[c]!);
      mag[m * N + n] = s;
    }
  }
  return mag;
}

function fp8BlockFor(dtype: DType, N: number, C: number, rng: Rng): [number, number] | undefined {
  if (dtype !== 'fp8_e4m3') return undefined;
  // per row, per tensor, or 2-D blocks that do not divide the shape
  const choices: [number, number][] = [[1, C], [N, C], [2, 32], [128, 128]];
  return choices[rng.int(0, choices.length)]!;
}

// ---------------------------------------------------------------------------------- conformance suite

type Paths = Readonly<Record<string, readonly string[]>>;

/** One conformance check: runs `be` on fresh random inputs and compares with the reference; throws on mismatch. */
export interface ConformanceCheck {
  readonly name: string;
  /** Counter prefix that must increase while the check runs (e.g. 'matmul.bf16'). */
  readonly kernel: string;
  /** Per ISA, a stricter counter prefix (a kernel only that ISA's own fast path counts), e.g. { avx512: 'attention512' }. */
  readonly isaKernel?: Readonly<Record<string, string>>;
  /**
   * Per ISA, code paths that must each run: counter `matmul.path.<path>.<isa>` increases (native/mm512.inc and friends).
   * A function is read when the check runs (paths that depend on a mode set in a suite's setup, e.g. AMX).
   */
  readonly paths?: Paths | (() => Paths);
  run(be: Backend): void;
}

type WeightDType = (typeof WEIGHT_DTYPES)[number];

/** Rows from which the AVX-512 matmul runs the packed GEMM: gemm_min_m in native/mm512.inc. */
export const GEMM_MIN_M: Record<WeightDType, number> = { q8_0: 32, fp8_e4m3: 64, bf16: 96, f16: 160, f32: 160 };
/** Rows from which a dtype runs a batched-decode kernel below the GEMM (q8_0: qbatch::MIN_M); the others keep the tiles. */
export const BATCH_MIN_M: Record<WeightDType, number> = { q8_0: 8, fp8_e4m3: Infinity, bf16: Infinity, f16: Infinity, f32: Infinity };

/** Rows up to which every dtype runs the GEMV (gemv::MAX_M in native/gemv512.inc: the batch-invariant range). */
export const GEMV_MAX_M = 16;

/**
 * The packed GEMM's path name for a dtype now: bf16 and fp8 take the AMX tile GEMM where it is active (native/amx.inc:
 * the tiles on AMX hosts, or its emulation under FLOE_AMX=emulate), the others the AVX-512 GEMM. TR: training's dx.
 */
export function gemmPath(dtype: string, tr = false): string {
  const amx = loadAddon()?.amx();
  const tiles = (dtype === 'bf16' || dtype === 'fp8_e4m3') && amx?.active;
  return (tiles ? (amx!.mode === 'emulate' ? 'amx_bf16_emu' : 'amx_bf16') : 'gemm') + (tr ? '_tr' : '');
}

/** The path native/mm512.inc's matmul_avx512 takes for x (M, C) · wᵀ, w (N, C). */
export function avx512MatmulPath(dtype: WeightDType, M: number, N: number, C: number): string {
  if (dtype === 'f32' && (N <= 16 || C <= 16)) return 'thin';
  if (M <= GEMV_MAX_M && process.env.FLOE_GEMV !== '0') return 'gemv';
  if (M >= GEMM_MIN_M[dtype]) return gemmPath(dtype);
  return M >= BATCH_MIN_M[dtype] ? 'batch' : 'tiles';
}

/**
 * Matmul shapes [M, C, N] for every AVX-512 path (tiles, q8_0 batch, gemm; f32 also thin) with tails: C and N off
 * multiples of 16/32/64, N below the tile rows, M not a multiple of the tile rows. q8_0 rounds C up to whole blocks.
 */
export function matmulShapes(dtype: WeightDType): [number, number, number][] {
  const g = GEMM_MIN_M[dtype];
  const shapes: [number, number, number][] = [
    [1, 96, 5], [1, 200, 3], [1, 96, 33], // GEMV (f32: thin, then GEMV)
    [2, 256, 7], [3, 96, 130], [5, 32, 1], [6, 200, 33], [7, 72, 2], [16, 136, 9], // GEMV up to GEMV_MAX_M rows
    [17, 64, 33], [17, 328, 67], [23, 40, 50], // tiles; q8_0: batch
    [g + 3, 200, 53], [g + 1, 72, 3], // packed GEMM
  ];
  return dtype === 'q8_0' ? shapes.map(([M, C, N]) => [M, Math.ceil(C / 32) * 32, N]) : shapes;
}

const ATTENTION_CASES: { label: string; H: number; K: number; E: number; L?: number; avx512Path?: boolean; seqs: SeqSpec[] }[] = [
  { label: 'GQA H/K=4, decode + chunked prefill', H: 8, K: 2, E: 32, seqs: [{ ctxLen: 37, qLen: 1 }, { ctxLen: 50, qLen: 18 }, { ctxLen: 5, qLen: 5 }] },
  { label: 'MHA', H: 3, K: 3, E: 64, seqs: [{ ctxLen: 16, qLen: 16 }, { ctxLen: 70, qLen: 1 }, { ctxLen: 33, qLen: 7 }] },
  { label: 'MQA', H: 4, K: 1, E: 16, seqs: [{ ctxLen: 1, qLen: 1 }, { ctxLen: 48, qLen: 3 }, { ctxLen: 17, qLen: 1 }] },
  { label: 'GQA long context (many KV tiles)', H: 4, K: 1, E: 64, seqs: [{ ctxLen: 300, qLen: 1 }, { ctxLen: 161, qLen: 20 }, { ctxLen: 129, qLen: 1 }] },
  // head dims other than powers of two: each must run the AVX-512 kernels (decode rows, split context, prefill tiles)
  { label: 'head dim 48 MHA: decode batch + prefill tiles', H: 6, K: 6, E: 48, avx512Path: true, seqs: [{ ctxLen: 300, qLen: 1 }, { ctxLen: 40, qLen: 1 }, { ctxLen: 130, qLen: 100 }] },
  { label: 'head dim 48 GQA 4: one long decode split across tasks', H: 8, K: 2, E: 48, avx512Path: true, seqs: [{ ctxLen: 1100, qLen: 1 }] },
  { label: 'head dim 80 GQA 2: prefill chunk + short chunk, block size 10', H: 4, K: 2, E: 80, L: 10, avx512Path: true, seqs: [{ ctxLen: 200, qLen: 30 }, { ctxLen: 7, qLen: 2 }, { ctxLen: 45, qLen: 1 }] },
  { label: 'head dim 80 MQA: long decode split, 3 queries', H: 3, K: 1, E: 80, avx512Path: true, seqs: [{ ctxLen: 900, qLen: 3 }] },
  { label: 'head dim 80 MHA: one long decode split across tasks', H: 2, K: 2, E: 80, avx512Path: true, seqs: [{ ctxLen: 777, qLen: 1 }] },
  { label: 'head dim 40 (masked tail) GQA 3', H: 6, K: 2, E: 40, avx512Path: true, seqs: [{ ctxLen: 520, qLen: 1 }, { ctxLen: 90, qLen: 33 }] },
  // the decode rows kernel takes a kv head's group rows 4 at a time up to E = 64, 2 at a time up to 128, else 1
  { label: 'head dim 128 GQA 4 (8B-like): decode rows in pairs, verify chunk', H: 8, K: 2, E: 128, avx512Path: true, seqs: [{ ctxLen: 300, qLen: 1 }, { ctxLen: 61, qLen: 5 }] },
  { label: 'head dim 160 GQA 2: decode rows one at a time', H: 4, K: 2, E: 160, avx512Path: true, seqs: [{ ctxLen: 290, qLen: 1 }, { ctxLen: 40, qLen: 3 }] },
];

/** Every kernel of the Backend and TrainKernels interfaces, on the shapes that tend to break kernels (odd sizes, tails, GQA). */
export function conformanceChecks(): ConformanceCheck[] {
  const ref = referenceBackend;
  const checks: ConformanceCheck[] = [];
  const add: AddCheck = (name, kernel, run, isaKernel, paths) => {
    checks.push({ name, kernel, run, isaKernel, paths });
  };

  for (const dtype of WEIGHT_DTYPES) {
    const shapes = matmulShapes(dtype);
    const avx512 = (): string[] => [...new Set(shapes.map(([M, C, N]) => avx512MatmulPath(dtype, M, N, C)))];
    add(`matmul ${dtype}`, `matmul.${dtype}`, (be) => {
      for (const [M, C, N] of shapes) {
        withSeed(`${be.name} matmul ${dtype} M=${M} C=${C} N=${N}`, (rng) => {
          // fp8: one scale per row, then a random grid (per tensor, or 2-D blocks that do not divide the shape)
          for (const fp8Block of dtype === 'fp8_e4m3' ? [[1, C] as [number, number], fp8BlockFor(dtype, N, C, rng)] : [undefined]) {
            const w = quantizeTensor(rng.normals(N * C, 0.5), [N, C], dtype, { fp8Block });
            const x = rng.normals(M * C);
            const want = new Float32Array(M * N);
            ref.matmul(want, x, w, M);
            const got = new Float32Array(M * N).fill(NaN);
            be.matmul(got, x, w, M);
            assertClose(`matmul ${dtype} (M=${M}, C=${C}, N=${N}${fp8Block ? `, fp8 block ${fp8Block}` : ''})`, got, want,
              { atol: 1e-6, rtol: MATMUL_RTOL[dtype], mag: dotMagnitude(x, w, M) });
          }
        });
      }
    }, undefined, () => ({ avx512: avx512(), avx2: ['tiles'], scalar: ['generic'] }));
  }

  add('rmsnorm (incl. y aliasing x)', 'rmsnorm', (be) => {
    for (const [M, D] of [[1, 96], [3, 130], [17, 64]] as const) {
      withSeed(`${be.name} rmsnorm M=${M} D=${D}`, (rng) => {
        const x = rng.normals(M * D, 3);
        const g = rng.f32(D, 0.5, 1.5);
        const eps = 1e-2; // large enough that dropping it shows
        const want = new Float32Array(M * D);
        ref.rmsnorm(want, x, g, M, eps);
        const got = new Float32Array(M * D).fill(NaN);
        be.rmsnorm(got, x, g, M, eps);
        assertClose(`rmsnorm (M=${M}, D=${D})`, got, want, { atol: 1e-6, rtol: 1e-5 });
        const inPlace = x.slice();
        be.rmsnorm(inPlace, inPlace, g, M, eps);
        assertClose(`rmsnorm in place (M=${M}, D=${D})`, inPlace, want, { atol: 1e-6, rtol: 1e-5 });
      });
    }
  });

  add('rope with llama3 invFreq at positions up to 131071', 'rope', (be) => {
    const cases = [
      { E: 64, theta: 500000, scaling: { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 } as const },
      { E: 128, theta: 500000, scaling: { type: 'llama3', factor: 32, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 } as const },
      { E: 32, theta: 10000, scaling: null },
    ];
    for (const c of cases) {
      withSeed(`${be.name} rope E=${c.E}`, (rng) => {
        const invFreq = ropeInvFreq({ headDim: c.E, ropeTheta: c.theta, ropeScaling: c.scaling });
        const nHeads = 3;
        const positions = Int32Array.from([0, 1, 131071, 131070, 8191, rng.int(0, 131072), rng.int(0, 4096)]);
        const T = positions.length;
        const x = rng.normals(T * nHeads * c.E);
        const want = x.slice();
        ref.rope(want, positions, nHeads, c.E, invFreq);
        const got = x.slice();
        be.rope(got, positions, nHeads, c.E, invFreq);
        // allowance per element scales with the pair (x[i], x[i ± E/2]) it mixes
        const mag = new Float64Array(x.length);
        for (let i = 0; i < x.length; i++) {
          const j = i % c.E;
          const partner = i - j + (j < c.E / 2 ? j + c.E / 2 : j - c.E / 2);
          mag[i] = Math.abs(x[i]!) + Math.abs(x[partner]!);
        }
        assertClose(`rope (E=${c.E}, theta=${c.theta})`, got, want, { atol: 1e-6, rtol: 1e-5, mag });
      });
    }
  });

  add('swiglu (incl. out aliasing gate)', 'swiglu', (be) => {
    withSeed(`${be.name} swiglu`, (rng) => {
      const n = 1001;
      const gate = rng.normals(n, 4);
      gate[0] = 30; gate[1] = -30; gate[2] = 0; gate[3] = -100;
      const up = rng.normals(n);
      const want = new Float32Array(n);
      ref.swiglu(want, gate, up);
      const got = new Float32Array(n).fill(NaN);
      be.swiglu(got, gate, up);
      assertClose('swiglu', got, want, { atol: 1e-6, rtol: 1e-5 });
      const g2 = gate.slice();
      be.swiglu(g2, g2, up);
      assertClose('swiglu in place', g2, want, { atol: 1e-6, rtol: 1e-5 });
    });
  });

  for (const dtype of WEIGHT_DTYPES) {
    add(`embedding ${dtype}`, 'embedding', (be) => {
      withSeed(`${be.name} embedding ${dtype}`, (rng) => {
        const V = 37;
        const D = 96;
        const table = quantizeTensor(rng.normals(V * D), [V, D], dtype, { fp8Block: fp8BlockFor(dtype, V, D, rng) });
        const ids = Int32Array.from([0, V - 1, rng.int(0, V), rng.int(0, V), 5, 5]);
        const want = new Float32Array(ids.length * D);
        ref.embedding(want, table, ids);
        const got = new Float32Array(ids.length * D).fill(NaN);
        be.embedding(got, table, ids);
        assertClose(`embedding ${dtype}`, got, want, { atol: 0, rtol: 1e-6 });
        for (const bad of [-1, V]) {
          assert.throws(() => be.embedding(new Float32Array(D), table, Int32Array.of(bad)), `embedding ${dtype} must throw on id ${bad}`);
        }
      });
    });
  }

  add('add', 'add', (be) => {
    withSeed(`${be.name} add`, (rng) => {
      const x = rng.normals(1001);
      const y0 = rng.normals(1001);
      const want = y0.slice();
      ref.add(want, x);
      const got = y0.slice();
      be.add(got, x);
      assertClose('add', got, want, { atol: 0, rtol: 0 });
    });
  });

  for (const kvDtype of ['f32', 'bf16', 'fp8_e4m3'] as const) {
    add(`kvWrite ${kvDtype}: bytes equal the reference, other slots untouched`, kvDtype === 'fp8_e4m3' ? 'kvWrite.fp8' : 'kvWrite', (be) => {
      withSeed(`${be.name} kvWrite ${kvDtype}`, (rng) => {
        const [numBlocks, L, K, E] = [9, 16, 2, 32];
        const layer = makeKvLayer(rng, kvDtype, numBlocks, L, K, E);
        const T = 21;
        const slots = Int32Array.from(rng.shuffle(Array.from({ length: numBlocks * L }, (_, i) => i)).slice(0, T));
        const k = rng.normals(T * K * E, 2);
        const v = rng.normals(T * K * E, 2);
        // exact bf16 rounding ties in both directions, and a round-up into inf
        const ku = new Uint32Array(k.buffer);
        ku[0] = 0x3f808000; ku[1] = 0x3f818000; ku[2] = 0xbf808000; ku[3] = 0x7f7fffff;
        // fp8: token 1 head 0 has amax 448 (scale 1): E4M3 ties (normal and subnormal) in both directions, signs
        k.set([448, 1.0625, 1.1875, -1.0625, 2 ** -10, 3 * 2 ** -10, -(5 * 2 ** -10), 240, 0, -0], K * E);
        // an all-zero vector (scale 1), one whose scale is subnormal, one whose amax/448 underflows to 0 (scale 1)
        v.fill(0, K * E, K * E + E);
        v.fill(1e-39, K * E + E, 2 * K * E);
        v.fill(-1e-43, 2 * K * E, 2 * K * E + E);
        const want = cloneKvLayer(layer);
        ref.kvWrite(want, k, v, slots);
        const got = cloneKvLayer(layer);
        be.kvWrite(got, k, v, slots);
        for (const part of ['k', 'v'] as const) {
          const d = firstDiff(got[part], want[part]);
          assert.equal(d, -1, `kvWrite ${kvDtype}: ${part} cache bytes differ from the reference first at byte ${d}`);
        }
        if (kvDtype === 'fp8_e4m3') {
          for (const part of ['kScale', 'vScale'] as const) {
            const g = new Uint8Array(got[part]!.buffer), w = new Uint8Array(want[part]!.buffer);
            const d = firstDiff(g, w);
            assert.equal(d, -1, `kvWrite fp8: ${part} differs from the reference at (slot*K + head) ${d >> 2}: got ${got[part]![d >> 2]}, expected ${want[part]![d >> 2]}`);
          }
        }
      });
    });
  }

  for (const kvDtype of ['f32', 'bf16', 'fp8_e4m3'] as const) {
    for (const c of ATTENTION_CASES) {
      add(`attention ${kvDtype} ${c.label}`, kvDtype === 'fp8_e4m3' ? 'attention.fp8kv' : 'attention', (be) => {
        withSeed(`${be.name} attention ${kvDtype} ${c.label}`, (rng) => {
          const { got, want, vmax } = attentionCase(rng, be, kvDtype, c);
          // the output is a convex combination of v rows: the allowance is relative to max |v|
          assertClose(`attention ${kvDtype} ${c.label}`, got, want, { atol: ATTENTION_RTOL[kvDtype] * vmax, rtol: 0 });
        });
      }, c.avx512Path ? { avx512: 'attention512' } : undefined);
    }
  }

  add('logSoftmax (incl. out aliasing logits)', 'logSoftmax', (be) => {
    withSeed(`${be.name} logSoftmax`, (rng) => {
      const [M, V] = [3, 1031];
      const logits = rng.normals(M * V, 5);
      logits[7] = 80; // a dominant logit
      const want = new Float32Array(M * V);
      ref.logSoftmax(want, logits, M);
      const got = new Float32Array(M * V).fill(NaN);
      be.logSoftmax(got, logits, M);
      assertClose('logSoftmax', got, want, { atol: 1e-5, rtol: 1e-6 });
      const l2 = logits.slice();
      be.logSoftmax(l2, l2, M);
      assertClose('logSoftmax in place', l2, want, { atol: 1e-5, rtol: 1e-6 });
    });
  });

  add('topk (ties: lower index first)', 'topk', (be) => {
    withSeed(`${be.name} topk`, (rng) => {
      const x = rng.normals(5000);
      // planted ties among the largest values
      x[10] = 9; x[4000] = 9; x[3] = 9; x[77] = 8.5; x[76] = 8.5;
      for (const k of [1, 5, 40]) {
        const want = ref.topk(x, k);
        const got = be.topk(x, k);
        assert.deepEqual(Array.from(got.ids), Array.from(want.ids), `topk k=${k}: ids`);
        assert.deepEqual(Array.from(got.values), Array.from(want.values), `topk k=${k}: values`);
      }
    });
  });


  trainChecks(add);
  return checks;
}

// ------------------------------------------------------------------------------- training kernel checks

/** The backend as a TrainBackend; fails the check (not a crash) when it lacks the training kernels. */
export function asTrain(be: Backend): TrainBackend {
  const t = be as Partial<TrainBackend>;
  for (const k of ['matmulBackwardInput', 'matmulBackwardWeight', 'rmsnormBackward', 'ropeBackward', 'swigluBackward', 'attentionDense',
    'attentionDenseBackward', 'embeddingBackward', 'crossEntropy'] as const) {
    assert.equal(typeof t[k], 'function', `backend '${be.name}' has no training kernel ${k}`);
  }
  return be as TrainBackend;
}

function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]!));
  return m;
}

/** Packed samples: segStart (S+1) from sample lengths (a 0 makes an empty sample). */
export function segStartOf(lens: readonly number[]): Int32Array {
  const s = new Int32Array(lens.length + 1);
  for (let i = 0; i < lens.length; i++) s[i + 1] = s[i]! + lens[i]!;
  return s;
}

/** y (M, N) = x · wᵀ in float64 from the dequantized rows; mag (M, N) = Σ|x·w| per output, for tolerances. */
export function f64Matmul(x: Float32Array, w: Tensor, M: number): { y: Float64Array; mag: Float64Array } {
  const [N, C] = [w.rows, w.cols];
  const y = new Float64Array(M * N);
  const mag = new Float64Array(M * N);
  const row = new Float32Array(C);
  for (let n = 0; n < N; n++) {
    dequantizeRow(w, n, row);
    for (let m = 0; m < M; m++) {
      let s = 0, a = 0;
      for (let c = 0; c < C; c++) {
        const p = x[m * C + c]! * row[c]!;
        s += p;
        a += Math.abs(p);
      }
      y[m * N + n] = s;
      mag[m * N + n] = a;
    }
  }
  return { y, mag };
}

/** dx (M, C) = dy · w in float64 from the dequantized rows (training's backward through w); mag = Σ|dy·w| per output. */
export function f64MatmulInput(dy: Float32Array, w: Tensor, M: number): { y: Float64Array; mag: Float64Array } {
  const [N, C] = [w.rows, w.cols];
  const y = new Float64Array(M * C);
  const mag = new Float64Array(M * C);
  const row = new Float32Array(C);
  for (let n = 0; n < N; n++) {
    dequantizeRow(w, n, row);
    for (let m = 0; m < M; m++) {
      const d = dy[m * N + n]!;
      for (let c = 0; c < C; c++) {
        y[m * C + c] += d * row[c]!;
        mag[m * C + c] += Math.abs(d * row[c]!);
      }
    }
  }
  return { y, mag };
}

const DENSE_CASES: { label: string; H: number; K: number; E: number; lens: number[] }[] = [
  { label: 'GQA H/K=4, four packed samples (one of 1 token, one empty)', H: 8, K: 2, E: 32, lens: [37, 1, 0, 50, 5] },
  { label: 'MHA', H: 3, K: 3, E: 64, lens: [16, 70, 33] },
  { label: 'MQA, odd head dim', H: 4, K: 1, E: 18, lens: [1, 48, 17] },
  { label: 'GQA long sample (many key tiles)', H: 4, K: 2, E: 16, lens: [203, 2] },
  // past 256 keys a sample's keys run as several chunks (native), their partial dQ summed after
  { label: 'GQA samples of several key chunks', H: 4, K: 2, E: 16, lens: [600, 3, 300] },
];

type AddCheck = (name: string, kernel: string, run: (be: Backend) => void, isaKernel?: Record<string, string>, paths?: Paths | (() => Paths)) => void;

/** Every TrainKernels kernel against the reference: odd shapes, tails, packed samples, GQA/MHA/MQA, every weight dtype. */
function trainChecks(add: AddCheck): void {
  const ref = referenceBackend;
  loraTrainChecks(add);

  for (const dtype of WEIGHT_DTYPES) {
    add(`matmulBackwardInput ${dtype} (overwrite and accumulate)`, `matmulBackwardInput.${dtype}`, (be) => {
      // [M, N, C]: M around the register tile, N across weight-row tiles, C with column tails (q8_0: whole blocks)
      // (and past the GEMM threshold, where the packed GEMM reads the weight transposed; q8_0 never takes it)
      const shapes = dtype === 'q8_0'
        ? [[1, 5, 32], [7, 33, 96], [13, 300, 64], [3, 2, 160]]
        : [[1, 5, 17], [7, 33, 96], [13, 300, 70], [3, 1, 130], [20, 16, 16], [GEMM_MIN_M[dtype] + 1, 35, 70]];
      for (const [M, N, C] of shapes as [number, number, number][]) {
        withSeed(`${be.name} matmulBackwardInput ${dtype} M=${M} N=${N} C=${C}`, (rng) => {
          // fp8: every scale layout the kernels treat differently (row scales, row-block × 64k-column blocks, other grids)
          const blocks: ([number, number] | undefined)[] = dtype === 'fp8_e4m3' ? [[1, C], [N, C], [2, 32], [128, 128], [2, 64], [4, 128], [3, 64]] : [undefined];
          for (const fp8Block of blocks) {
          const w = quantizeTensor(rng.normals(N * C, 0.5), [N, C], dtype, { fp8Block });
          const dy = rng.normals(M * N);
          const mag = f64MatmulInput(dy, w, M).mag;
          const want = new Float32Array(M * C);
          ref.matmulBackwardInput(want, dy, w, M, false);
          const got = new Float32Array(M * C).fill(NaN);
          asTrain(be).matmulBackwardInput(got, dy, w, M, false);
          assertClose(`matmulBackwardInput ${dtype} (M=${M}, N=${N}, C=${C})`, got, want, { atol: 1e-6, rtol: MATMUL_RTOL[dtype], mag });
          const dx0 = rng.normals(M * C);
          const wantAcc = dx0.slice();
          ref.matmulBackwardInput(wantAcc, dy, w, M, true);
          const gotAcc = dx0.slice();
          asTrain(be).matmulBackwardInput(gotAcc, dy, w, M, true);
          assertClose(`matmulBackwardInput ${dtype} accumulate (M=${M}, N=${N}, C=${C})`, gotAcc, wantAcc,
            { atol: 1e-6, rtol: MATMUL_RTOL[dtype], mag: mag.map((v, i) => v + Math.abs(dx0[i]!)) });
          }
        });
      }
    }, undefined, () => ({ avx512: dtype === 'f32' ? ['thin_tr', 'dx_tiles', 'gemm_tr'] : dtype === 'q8_0' ? ['dx_tiles'] : ['dx_tiles', gemmPath(dtype, true)], avx2: ['dx_generic'], scalar: ['dx_generic'] }));
  }

  add('matmulBackwardInput fp8_e4m3 decodes every byte exactly (row and block scales)', 'matmulBackwardInput.fp8_e4m3', (be) => {
    withSeed(`${be.name} matmulBackwardInput fp8 bytes`, (rng) => {
      // w (4, 256): row r holds all 256 codes rotated by r (NaN codes included); power-of-2 scales keep dx exact
      const [N, C] = [4, 256];
      const data = new Uint8Array(N * C);
      for (let r = 0; r < N; r++) for (let c = 0; c < C; c++) data[r * C + c] = (c + 37 * r) & 0xff;
      for (const block of [[1, C], [2, 128]] as [number, number][]) {
        const grid = Math.ceil(N / block[0]) * Math.ceil(C / block[1]);
        const scale = Float32Array.from({ length: grid }, () => 2 ** rng.int(-6, 7));
        const w = new Tensor('fp8_e4m3', [N, C], data, scale, block);
        const M = N;
        const dy = new Float32Array(M * N);
        for (let m = 0; m < M; m++) dy[m * N + m] = 1; // dx row m = weight row m
        const want = new Float32Array(M * C);
        ref.matmulBackwardInput(want, dy, w, M, false);
        const got = new Float32Array(M * C).fill(12345);
        asTrain(be).matmulBackwardInput(got, dy, w, M, false);
        assertClose(`matmulBackwardInput fp8 every byte, scale block [${block}]`, got, want, { atol: 0, rtol: 0 });
      }
    });
  });

  add('matmulBackwardWeight (accumulates into dw)', 'matmulBackwardWeight', (be) => {
    // [M, N, C]: LoRA-like thin shapes, tails in N and C, M across the 256-row blocks
    for (const [M, N, C] of [[1, 1, 1], [37, 16, 70], [300, 13, 33], [5, 40, 16], [64, 7, 200]] as const) {
      withSeed(`${be.name} matmulBackwardWeight M=${M} N=${N} C=${C}`, (rng) => {
        const dy = rng.normals(M * N);
        const x = rng.normals(M * C);
        const dw0 = rng.normals(N * C);
        const want = dw0.slice();
        ref.matmulBackwardWeight(want, dy, x, M, N, C);
        const got = dw0.slice();
        asTrain(be).matmulBackwardWeight(got, dy, x, M, N, C);
        const mag = new Float64Array(N * C);
        for (let n = 0; n < N; n++) for (let c = 0; c < C; c++) {
          let s = Math.abs(dw0[n * C + c]!);
          for (let m = 0; m < M; m++) s += Math.abs(dy[m * N + n]! * x[m * C + c]!);
          mag[n * C + c] = s;
        }
        assertClose(`matmulBackwardWeight (M=${M}, N=${N}, C=${C})`, got, want, { atol: 1e-6, rtol: 1e-5, mag });
      });
    }
  }, undefined, { avx512: ['dw_thin', 'dw_tiles'], avx2: ['dw_generic'], scalar: ['dw_generic'] });

  add('rmsnormBackward (dx, dg accumulated, dg null)', 'rmsnormBackward', (be) => {
    for (const [M, D] of [[1, 96], [3, 130], [17, 64], [9, 300]] as const) {
      withSeed(`${be.name} rmsnormBackward M=${M} D=${D}`, (rng) => {
        const x = rng.normals(M * D, 3);
        const g = rng.f32(D, 0.5, 1.5);
        const dy = rng.normals(M * D);
        const eps = 1e-2;
        const dg0 = rng.normals(D);
        const [want, wantDg] = [new Float32Array(M * D), dg0.slice()];
        ref.rmsnormBackward(want, wantDg, dy, x, g, M, eps);
        const [got, gotDg] = [new Float32Array(M * D).fill(NaN), dg0.slice()];
        asTrain(be).rmsnormBackward(got, gotDg, dy, x, g, M, eps);
        assertClose(`rmsnormBackward dx (M=${M}, D=${D})`, got, want, { atol: 1e-5 * maxAbs(want), rtol: 1e-4 });
        assertClose(`rmsnormBackward dg (M=${M}, D=${D})`, gotDg, wantDg, { atol: 1e-5 * maxAbs(wantDg), rtol: 1e-4 });
        const noDg = new Float32Array(M * D).fill(NaN);
        asTrain(be).rmsnormBackward(noDg, null, dy, x, g, M, eps);
        assertClose(`rmsnormBackward dx without dg (M=${M}, D=${D})`, noDg, want, { atol: 1e-5 * maxAbs(want), rtol: 1e-4 });
      });
    }
  });

  add('ropeBackward with llama3 invFreq at positions up to 131071', 'ropeBackward', (be) => {
    for (const E of [64, 128, 18]) {
      withSeed(`${be.name} ropeBackward E=${E}`, (rng) => {
        const invFreq = ropeInvFreq({ headDim: E, ropeTheta: 500000, ropeScaling: { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 } });
        const nHeads = 3;
        const positions = Int32Array.from([0, 1, 131071, rng.int(0, 131072), rng.int(0, 4096)]);
        const dy = rng.normals(positions.length * nHeads * E);
        const want = dy.slice();
        ref.ropeBackward(want, positions, nHeads, E, invFreq);
        const got = dy.slice();
        asTrain(be).ropeBackward(got, positions, nHeads, E, invFreq);
        const mag = new Float64Array(dy.length);
        for (let i = 0; i < dy.length; i++) {
          const j = i % E;
          mag[i] = Math.abs(dy[i]!) + Math.abs(dy[i - j + (j < E / 2 ? j + E / 2 : j - E / 2)]!);
        }
        assertClose(`ropeBackward (E=${E})`, got, want, { atol: 1e-6, rtol: 1e-5, mag });
      });
    }
  });

  add('swigluBackward (incl. dgate over gate, dup over up)', 'swigluBackward', (be) => {
    withSeed(`${be.name} swigluBackward`, (rng) => {
      const n = 20001;
      const gate = rng.normals(n, 4);
      gate[0] = 30; gate[1] = -30; gate[2] = 0; gate[3] = -100; gate[4] = 100;
      const up = rng.normals(n);
      const dout = rng.normals(n);
      const [wg, wu] = [new Float32Array(n), new Float32Array(n)];
      ref.swigluBackward(wg, wu, dout, gate, up);
      const [gg, gu] = [new Float32Array(n).fill(NaN), new Float32Array(n).fill(NaN)];
      asTrain(be).swigluBackward(gg, gu, dout, gate, up);
      // allowance relative to |dout·up| and |dout·gate|, the scales of the two gradients
      assertClose('swigluBackward dgate', gg, wg, { atol: 1e-6, rtol: 1e-5, mag: dout.map((d, i) => Math.abs(d * up[i]!) * (1 + Math.abs(gate[i]!))) });
      assertClose('swigluBackward dup', gu, wu, { atol: 1e-6, rtol: 1e-5, mag: dout.map((d, i) => Math.abs(d * gate[i]!)) });
      const [g2, u2] = [gate.slice(), up.slice()];
      asTrain(be).swigluBackward(g2, u2, dout, g2, u2);
      assert.deepEqual(g2, gg, 'swigluBackward with dgate aliasing gate differs');
      assert.deepEqual(u2, gu, 'swigluBackward with dup aliasing up differs');
    });
  });

  for (const c of DENSE_CASES) {
    const setup = (rng: Rng): { T: number; shape: AttentionShape; segStart: Int32Array; q: Float32Array; k: Float32Array; v: Float32Array } => {
      const segStart = segStartOf(c.lens);
      const T = segStart[c.lens.length]!;
      // a scale other than 1/sqrt(E), so a kernel that ignores shape.scale fails
      const shape: AttentionShape = { numHeads: c.H, numKvHeads: c.K, headDim: c.E, scale: rng.uniform(0.5, 1.5) / Math.sqrt(c.E) };
      return { T, shape, segStart, q: rng.normals(T * c.H * c.E, 2), k: rng.normals(T * c.K * c.E), v: rng.normals(T * c.K * c.E) };
    };
    add(`attentionDense ${c.label}`, 'attentionDense', (be) => {
      withSeed(`${be.name} attentionDense ${c.label}`, (rng) => {
        const { T, shape, segStart, q, k, v } = setup(rng);
        const [want, wantLse] = [new Float32Array(T * c.H * c.E), new Float32Array(T * c.H)];
        ref.attentionDense(want, wantLse, q, k, v, segStart, shape);
        const [got, gotLse] = [new Float32Array(T * c.H * c.E).fill(NaN), new Float32Array(T * c.H).fill(NaN)];
        asTrain(be).attentionDense(got, gotLse, q, k, v, segStart, shape);
        // out is a convex combination of v rows: the allowance is relative to max |v|
        assertClose(`attentionDense out ${c.label}`, got, want, { atol: 1e-5 * maxAbs(v), rtol: 0 });
        assertClose(`attentionDense lse ${c.label}`, gotLse, wantLse, { atol: 1e-5, rtol: 1e-5 });
      });
    });
    add(`attentionDenseBackward ${c.label}`, 'attentionDenseBackward', (be) => {
      withSeed(`${be.name} attentionDenseBackward ${c.label}`, (rng) => {
        const { T, shape, segStart, q, k, v } = setup(rng);
        const [out, lse] = [new Float32Array(T * c.H * c.E), new Float32Array(T * c.H)];
        ref.attentionDense(out, lse, q, k, v, segStart, shape);
        const dout = rng.normals(T * c.H * c.E);
        const want = [new Float32Array(q.length), new Float32Array(k.length), new Float32Array(v.length)] as const;
        ref.attentionDenseBackward(want[0], want[1], want[2], dout, q, k, v, out, lse, segStart, shape);
        const got = [new Float32Array(q.length).fill(NaN), new Float32Array(k.length).fill(NaN), new Float32Array(v.length).fill(NaN)] as const;
        asTrain(be).attentionDenseBackward(got[0], got[1], got[2], dout, q, k, v, out, lse, segStart, shape);
        for (const [i, name] of ['dq', 'dk', 'dv'].entries()) {
          assertClose(`attentionDenseBackward ${name} ${c.label}`, got[i]!, want[i]!, { atol: 1e-5 * maxAbs(want[i]!), rtol: 1e-4 });
        }
      });
    });
  }

  add('embeddingBackward (repeated ids, small and column-parallel sizes)', 'embeddingBackward', (be) => {
    for (const [V, D, T] of [[37, 96, 9], [50, 300, 400]] as const) {
      withSeed(`${be.name} embeddingBackward V=${V} D=${D} T=${T}`, (rng) => {
        const ids = Int32Array.from({ length: T }, (_, t) => (t % 3 === 0 ? 5 : rng.int(0, V)));
        ids[T - 1] = V - 1;
        const dy = rng.normals(T * D);
        const d0 = rng.normals(V * D);
        const want = d0.slice();
        ref.embeddingBackward(want, dy, ids, D);
        const got = d0.slice();
        asTrain(be).embeddingBackward(got, dy, ids, D);
        assertClose(`embeddingBackward (V=${V}, D=${D}, T=${T})`, got, want, { atol: 0, rtol: 0 });
        for (const bad of [-1, V]) {
          assert.throws(() => asTrain(be).embeddingBackward(got, dy.subarray(0, D), Int32Array.of(bad), D), `embeddingBackward must throw on id ${bad}`);
        }
      });
    }
  });

  add('crossEntropy (ignored rows, scale, dlogits aliasing logits)', 'crossEntropy', (be) => {
    for (const [M, V] of [[5, 1031], [2, 40000], [1, 3]] as const) {
      withSeed(`${be.name} crossEntropy M=${M} V=${V}`, (rng) => {
        const logits = rng.normals(M * V, 3);
        logits[V - 1] = 60; // a dominant logit
        const targets = Int32Array.from({ length: M }, (_, m) => (m === 1 ? -1 : rng.int(0, V)));
        const scale = rng.uniform(0.1, 2);
        const want = new Float32Array(M * V);
        const wantLoss = ref.crossEntropy(want, logits, targets, M, scale);
        const got = new Float32Array(M * V).fill(NaN);
        const gotLoss = asTrain(be).crossEntropy(got, logits, targets, M, scale);
        assert.ok(Math.abs(gotLoss - wantLoss) <= 1e-5 * Math.max(1, Math.abs(wantLoss)), `crossEntropy (M=${M}, V=${V}) loss ${gotLoss}, expected ${wantLoss}`);
        assertClose(`crossEntropy dlogits (M=${M}, V=${V})`, got, want, { atol: 1e-6 * scale, rtol: 1e-4 });
        const inPlace = logits.slice();
        const l2 = asTrain(be).crossEntropy(inPlace, inPlace, targets, M, scale);
        assert.equal(l2, gotLoss, 'crossEntropy with dlogits aliasing logits: different loss');
        assert.deepEqual(inPlace, got, 'crossEntropy with dlogits aliasing logits: different dlogits');
        assert.throws(() => asTrain(be).crossEntropy(new Float32Array(V), logits.subarray(0, V), Int32Array.of(V), 1, 1), `crossEntropy must throw on target ${V}`);
      });
    }
  });
}

export interface ConformanceOptions {
  /**
   * Calls per kernel path (e.g. {"matmul.bf16.avx512": 3}); when given, every check must increase a counter
   * whose key is its kernel prefix or starts with `prefix.`. Matmul counters must carry the weight dtype
   * (`matmul.<dtype>.<isa>`); the others may (`attention.bf16.avx2`) or not (`add.avx512`).
   */
  readonly counters?: () => Record<string, number>;
  /** With counters: the ISA every kernel must report (keys ending in `.<isa>`), except those in isaIndependent. */
  readonly isa?: string;
  readonly isaIndependent?: readonly string[];
  /** Runs before the block's first test (e.g. select an ISA); teardown after its last. */
  readonly setup?: () => void;
  readonly teardown?: () => void;
}

/** Counters whose key is `prefix` or starts with `prefix.` (and ends with `.isa` when given). */
function countersFor(c: Record<string, number>, prefix: string, isa?: string): Map<string, number> {
  const m = new Map<string, number>();
  for (const [k, v] of Object.entries(c)) {
    if ((k === prefix || k.startsWith(prefix + '.')) && (isa === undefined || k.endsWith('.' + isa))) m.set(k, v);
  }
  return m;
}

function total(m: Map<string, number>): number {
  let s = 0;
  for (const v of m.values()) s += v;
  return s;
}

/**
 * Register node:test cases that run every kernel of `makeBackend()` on fresh random inputs against the
 * reference backend. With opts.counters, also assert that the backend's own path ran for each kernel.
 */
export function runBackendConformance(name: string, makeBackend: () => Backend, opts: ConformanceOptions = {}): void {
  describe(`backend conformance: ${name}`, () => {
    let be: Backend | undefined;
    if (opts.setup) before(opts.setup);
    if (opts.teardown) after(opts.teardown);
    for (const check of conformanceChecks()) {
      it(check.name, () => {
        be ??= makeBackend();
        const counters = opts.counters;
        const isa = opts.isa !== undefined && !(opts.isaIndependent ?? []).includes(check.kernel) ? opts.isa : undefined;
        const kernel = (isa !== undefined ? check.isaKernel?.[isa] : undefined) ?? check.kernel;
        const pathsBefore = counters ? counters() : {};
        const before = total(countersFor(pathsBefore, kernel, isa));
        check.run(be);
        if (counters) {
          const now = counters();
          const after = total(countersFor(now, kernel, isa));
          assert.ok(after > before, `${name}: no '${kernel}[.…]${isa ? '.' + isa : ''}' counter increased during '${check.name}' (before ${before}, after ${after}): the backend did not run its own${isa ? ' ' + isa : ''} path. Counters for '${kernel}': ${JSON.stringify(Object.fromEntries(countersFor(now, kernel)))}`);
          const paths = typeof check.paths === 'function' ? check.paths() : check.paths;
          for (const p of isa !== undefined ? paths?.[isa] ?? [] : []) {
            const key = `matmul.path.${p}.${isa}`;
            assert.ok((now[key] ?? 0) > (pathsBefore[key] ?? 0), `${name}: '${check.name}' never ran the ${p} path on ${isa} (${key} stayed at ${pathsBefore[key] ?? 0}). Path counters: ${JSON.stringify(Object.fromEntries(countersFor(now, 'matmul.path')))}`);
          }
        }
      });
    }
  });
}

function firstDiff(a: Uint8Array, b: Uint8Array): number {
  for (let i = 0; i < Math.min(a.length, b.length); i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? -1 : Math.min(a.length, b.length);
}

/** The host's transparent-huge-page mode ('always', 'madvise', 'never'), or null where Linux does not say. */
export function thpMode(): string | null {
  try {
    return /\[(\w+)\]/.exec(readFileSync('/sys/kernel/mm/transparent_hugepage/enabled', 'utf8'))?.[1] ?? null;
  } catch {
    return null;
  }
}
/** KiB of this process's anonymous memory on 2 MiB pages. */
export function anonHugeKiB(): number {
  return Number(/AnonHugePages:\s+(\d+)/.exec(readFileSync('/proc/self/smaps_rollup', 'utf8'))?.[1] ?? 0);
}

/**
 * Repacks `w` (2 MiB and more, an even number of rows) and asserts that its buffer came on 2 MiB pages (this process's
 * AnonHugePages grew by at least one) and holds the same rows; skipped where the host gives no huge pages.
 */
export function assertRepackOnHugePages(t: TestContext, w: Tensor, repack: (w: Tensor) => Tensor): void {
  const mode = thpMode();
  if (mode === null || mode === 'never') {
    t.skip(`transparent huge pages: ${mode ?? 'no /sys entry'}`);
    return;
  }
  const before = anonHugeKiB(), r = repack(w), grew = anonHugeKiB() - before;
  assert.ok(grew >= 2048, `AnonHugePages grew ${grew} KiB repacking ${r.data.byteLength >> 20} MiB (THP ${mode})`);
  const a = new Float32Array(w.cols), b = new Float32Array(w.cols);
  for (const n of [0, 1, w.rows / 2 - 1, w.rows - 1]) {
    dequantizeRow(w, n, a);
    dequantizeRow(r, n, b);
    assert.deepEqual(b, a, `row ${n}`);
  }
}

// ------------------------------------------------------------------------------- fused LoRA factor products

/** [M, N, C, r]: the common r <= 16 with C past one 256-column block, rank vectors of 1-4 zmm with tails (r > 64: the portable loops), dy past one 512-column block, M = 0, N = 0. */
const LORA_TRAIN_SHAPES: readonly [number, number, number, number][] = [
  [1, 1, 1, 1], [9, 17, 130, 8], [10, 70, 600, 16], [33, 600, 40, 16], [20, 70, 300, 24], [12, 1100, 33, 40], [5, 64, 16, 64], [7, 30, 50, 72],
  [0, 5, 7, 4], [6, 0, 9, 4],
  // rows split into partial dB / dA sums where the column blocks are few (native AVX-512: M >= 128)
  [300, 130, 200, 8], [257, 700, 70, 24],
];

/** The factor products of Backend.loraForward / loraBackward from the backend's own matmul kernels (backends without them). */
export function loraComposite(be: TrainBackend): Required<Pick<TrainBackend, 'loraForward' | 'loraBackward'>> {
  return {
    loraForward(y, u, x, a, b, s, M, N, C, r) {
      be.matmul(u, x, f32Tensor([r, C], a), M);
      for (let i = 0; i < u.length; i++) u[i]! *= s;
      const yb = new Float32Array(M * N);
      be.matmul(yb, u, f32Tensor([N, r], b), M);
      be.add(y, yb);
    },
    loraBackward(dx, dA, dB, dy, x, u, a, b, s, M, N, C, r, accumulate) {
      be.matmulBackwardWeight(dB, dy, u, M, N, r);
      const du = new Float32Array(M * r);
      be.matmulBackwardInput(du, dy, f32Tensor([N, r], b), M, false);
      for (let i = 0; i < du.length; i++) du[i]! *= s;
      be.matmulBackwardWeight(dA, du, x.slice(), M, r, C);
      be.matmulBackwardInput(dx, du, f32Tensor([r, C], a), M, accumulate);
    },
  };
}

function loraTrainChecks(add: AddCheck): void {
  const fused = { avx512: 'loraForward.fused', avx2: 'loraForward.loops', scalar: 'loraForward.loops' };
  add('loraForward (u = s·x·Aᵀ, y += u·Bᵀ)', 'loraForward', (be) => {
    const t = asTrain(be);
    const k = t.loraForward ? (t as Required<TrainBackend>) : loraComposite(t);
    for (const [M, N, C, r] of LORA_TRAIN_SHAPES) {
      withSeed(`${be.name} loraForward M=${M} N=${N} C=${C} r=${r}`, (rng) => {
        const [x, a, b, y0] = [rng.normals(M * C), rng.normals(r * C, 0.3), rng.normals(N * r, 0.3), rng.normals(M * N)];
        const s = 0.75;
        // f64 oracle, and each output's magnitude (the sum of |terms|, through u)
        const [uw, um] = [new Float64Array(M * r), new Float64Array(M * r)];
        for (let m = 0; m < M; m++) for (let j = 0; j < r; j++) {
          for (let c = 0; c < C; c++) { uw[m * r + j] += s * x[m * C + c]! * a[j * C + c]!; um[m * r + j] += Math.abs(s * x[m * C + c]! * a[j * C + c]!); }
        }
        const [yw, ym] = [new Float64Array(M * N), new Float64Array(M * N)];
        for (let m = 0; m < M; m++) for (let n = 0; n < N; n++) {
          let v = y0[m * N + n]!, g = Math.abs(v);
          for (let j = 0; j < r; j++) { v += uw[m * r + j]! * b[n * r + j]!; g += um[m * r + j]! * Math.abs(b[n * r + j]!); }
          yw[m * N + n] = v; ym[m * N + n] = g;
        }
        const [y, u] = [y0.slice(), new Float32Array(M * r).fill(NaN)];
        k.loraForward(y, u, x, a, b, s, M, N, C, r);
        assertClose(`loraForward u (M=${M}, N=${N}, C=${C}, r=${r})`, u, uw, { atol: 1e-6, rtol: 1e-5, mag: um });
        assertClose(`loraForward y (M=${M}, N=${N}, C=${C}, r=${r})`, y, yw, { atol: 1e-6, rtol: 1e-5, mag: ym });
      });
    }
  }, fused);

  add('loraBackward (dB, dA accumulated; dx overwritten, accumulated, in x\'s place)', 'loraBackward', (be) => {
    const t = asTrain(be);
    const k = t.loraBackward ? (t as Required<TrainBackend>) : loraComposite(t);
    for (const [M, N, C, r] of LORA_TRAIN_SHAPES) {
      for (const mode of ['overwrite', 'accumulate', 'dx is x'] as const) {
        withSeed(`${be.name} loraBackward ${mode} M=${M} N=${N} C=${C} r=${r}`, (rng) => {
          const [dy, x, u, a, b] = [rng.normals(M * N), rng.normals(M * C), rng.normals(M * r), rng.normals(r * C, 0.3), rng.normals(N * r, 0.3)];
          const [dA0, dB0, dx0] = [rng.normals(r * C), rng.normals(N * r), rng.normals(M * C)];
          const s = 1.5;
          const [dBw, dBm] = [Float64Array.from(dB0), Float64Array.from(dB0, Math.abs)];
          for (let n = 0; n < N; n++) for (let j = 0; j < r; j++) for (let m = 0; m < M; m++) {
            dBw[n * r + j] += dy[m * N + n]! * u[m * r + j]!; dBm[n * r + j] += Math.abs(dy[m * N + n]! * u[m * r + j]!);
          }
          const [du, dum] = [new Float64Array(M * r), new Float64Array(M * r)];
          for (let m = 0; m < M; m++) for (let j = 0; j < r; j++) for (let n = 0; n < N; n++) {
            du[m * r + j] += s * dy[m * N + n]! * b[n * r + j]!; dum[m * r + j] += Math.abs(s * dy[m * N + n]! * b[n * r + j]!);
          }
          const [dAw, dAm] = [Float64Array.from(dA0), Float64Array.from(dA0, Math.abs)];
          for (let j = 0; j < r; j++) for (let c = 0; c < C; c++) for (let m = 0; m < M; m++) {
            dAw[j * C + c] += du[m * r + j]! * x[m * C + c]!; dAm[j * C + c] += dum[m * r + j]! * Math.abs(x[m * C + c]!);
          }
          const acc = mode === 'accumulate';
          const [dxw, dxm] = [acc ? Float64Array.from(dx0) : new Float64Array(M * C), acc ? Float64Array.from(dx0, Math.abs) : new Float64Array(M * C)];
          for (let m = 0; m < M; m++) for (let c = 0; c < C; c++) for (let j = 0; j < r; j++) {
            dxw[m * C + c] += du[m * r + j]! * a[j * C + c]!; dxm[m * C + c] += dum[m * r + j]! * Math.abs(a[j * C + c]!);
          }
          const [dA, dB] = [dA0.slice(), dB0.slice()];
          const xin = x.slice();
          const dx = mode === 'dx is x' ? xin : acc ? dx0.slice() : new Float32Array(M * C).fill(NaN);
          k.loraBackward(dx, dA, dB, dy, xin, u, a, b, s, M, N, C, r, acc);
          const what = `loraBackward ${mode} (M=${M}, N=${N}, C=${C}, r=${r})`;
          assertClose(`${what} dB`, dB, dBw, { atol: 1e-6, rtol: 1e-5, mag: dBm });
          assertClose(`${what} dA`, dA, dAw, { atol: 1e-6, rtol: 1e-5, mag: dAm });
          assertClose(`${what} dx`, dx, dxw, { atol: 1e-6, rtol: 1e-5, mag: dxm });
        });
      }
    }
  }, { avx512: 'loraBackward.fused', avx2: 'loraBackward.loops', scalar: 'loraBackward.loops' });
}
