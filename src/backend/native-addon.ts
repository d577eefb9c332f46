// Loader and typed surface of the raw C++ addon (build/Release/floe.node); null when it has not been built.

import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export type NativeIsa = 'scalar' | 'avx2' | 'avx512';
export type AmxMode = 'tiles' | 'emulate' | 'off';

/**
 * The addon's functions, as exported by native/addon.cc. Weights travel as (data, dtypeCode, N, C, scale, br, bc)
 * with scale null unless fp8; KV caches as (kBytes, vBytes, kvDtypeCode, numBlocks, L, K, E), fp8 caches (code 3) with their
 * (numBlocks, L, K) kScale, vScale as the last two arguments. Every function checks
 * its arguments and throws an Error naming the argument, expected vs got.
 */
export interface NativeAddon {
  matmul(y: Float32Array, x: Float32Array, w: Uint8Array, dtype: number, N: number, C: number,
    scale: Float32Array | null, br: number, bc: number, M: number): void;
  /** matmuls of one x (M, C): per weight i the arguments (y_i, data, dtype, N, C, scale, br, bc) follow x and M. */
  matmulMany(x: Float32Array, M: number, ...parts: unknown[]): void;
  embedding(out: Float32Array, table: Uint8Array, dtype: number, V: number, D: number,
    scale: Float32Array | null, br: number, bc: number, ids: Int32Array): void;
  rmsnorm(y: Float32Array, x: Float32Array, g: Float32Array, M: number, eps: number): void;
  rope(x: Float32Array, positions: Int32Array, nHeads: number, headDim: number, invFreq: Float32Array): void;
  swiglu(out: Float32Array, gate: Float32Array, up: Float32Array): void;
  add(y: Float32Array, x: Float32Array): void;
  addRmsnorm(x: Float32Array, d: Float32Array, y: Float32Array, g: Float32Array, M: number, eps: number): void;
  ropeKvWrite(q: Float32Array, k: Float32Array, v: Float32Array, positions: Int32Array, numHeads: number, invFreq: Float32Array,
    kc: Uint8Array, vc: Uint8Array, kvDtype: number, numBlocks: number, L: number, K: number, E: number, slots: Int32Array,
    kScale?: Float32Array, vScale?: Float32Array): void;
  loraSegmented(y: Float32Array, x: Float32Array, C: number, N: number, segStart: Int32Array,
    a: ReadonlyArray<Float32Array | null>, bt: ReadonlyArray<Float32Array | null>, scales: Float32Array): void;
  kvWrite(kc: Uint8Array, vc: Uint8Array, kvDtype: number, numBlocks: number, L: number, K: number, E: number,
    k: Float32Array, v: Float32Array, slots: Int32Array, kScale?: Float32Array, vScale?: Float32Array): void;
  attention(out: Float32Array, q: Float32Array, kc: Uint8Array, vc: Uint8Array, kvDtype: number, numBlocks: number,
    L: number, K: number, E: number, H: number, scale: number, numSeqs: number, qStart: Int32Array,
    ctxLen: Int32Array, blockTables: Int32Array, maxBlocks: number, kScale?: Float32Array, vScale?: Float32Array): void;
  logSoftmax(out: Float32Array, logits: Float32Array, M: number): void;
  topk(x: Float32Array, k: number): { ids: Int32Array; values: Float32Array };
  /** Backend.sampleCandidates (native/sample.h): returns n, writes sum[0]. */
  sampleCandidates(z: Float32Array, temperature: number, topK: number, topP: number, minP: number,
    ids: Int32Array, weights: Float64Array, sum: Float64Array): number;
  /** First index of the largest value (sampler.ts argmax's rule). */
  argmax(x: Float32Array): number;
  /**
   * q8_0 weight (N, C) → a new 64-byte aligned buffer in the q8_0r16 layout (native/common.h; N % 16 == 0). `release`:
   * src's pages are handed back to the kernel afterwards (MADV_PAGEOUT; advice only, its data stays valid): pass it for
   * a file mapping (mapfile.ts isMapped), whose pages the kernel re-reads if touched.
   */
  q8Repack(src: Uint8Array, N: number, C: number, release?: boolean): Uint8Array;
  /**
   * bf16 (dtype code 2), f16 (1), fp8_e4m3 (3) or f32 (0) weight (N, C) → a new aligned buffer in bf16r16 / f16r16 /
   * fp8r16 / f32r16 (common.h r16_*, fp8r_*; fp8's scale grid is unchanged), as q8Repack.
   */
  r16Repack(src: Uint8Array, dtype: number, N: number, C: number, release?: boolean): Uint8Array;
  /**
   * Load-time weight conversion (native/convert.cc; the bytes of src/tensor/quantize.ts and codecs.ts): src, an f32 (dtype
   * code 0), f16 (1) or bf16 (2) weight (N, C) in rows, any alignment -> out (N, C) E4M3 codes and scale
   * (ceil(N / br), ceil(C / bc)) = amax / 448 per block, on the thread pool. `release`: src's pages are handed back
   * afterwards, as q8Repack's.
   */
  convertFp8(src: Uint8Array, dtype: number, N: number, C: number, br: number, bc: number, out: Uint8Array, scale: Float32Array, release?: boolean): void;
  /** An f32 (0) or f16 (1) weight (N, C) in rows -> out (N, C) bf16 bits, little-endian (RNE, NaN stays NaN); `release` as convertFp8's. */
  convertBf16(src: Uint8Array, dtype: number, N: number, C: number, out: Uint8Array, release?: boolean): void;
  /** Whole file mapped private read/write (writes never reach the file); unmapped when the buffer is collected. */
  /** The whole file, or bytes [offset, offset + length) from the page holding offset (the range ends the buffer). */
  mmapFile(path: string, offset?: number, length?: number): ArrayBuffer;
  /**
   * Commits the buffers' pages on a background thread (madvise MADV_POPULATE_WRITE; contents unchanged, the buffers may
   * be in use meanwhile) and returns at once: the bytes it will commit.
   */
  prefault(buffers: readonly Uint8Array[]): number;
  /** The ISA kernels run with now, and the best this CPU supports. */
  isa(): NativeIsa;
  supportedIsa(): NativeIsa;
  /** Lower (or restore) the kernel ISA at run time; throws above supportedIsa(). FLOE_ISA sets it at load. */
  setIsa(isa: NativeIsa): void;
  /**
   * AMX tiles (native/amx.inc: the bf16 GEMM of prefill and training; the int8 q8_0r16 matmul from 4 rows):
   * supported where CPUID, the OS (XCR0) and Linux's permission request all allow them (`reason` says which did not);
   * `int8`: the CPU also has amx_int8 (the q8_0r16 kernel runs on tiles only then). mode: 'tiles' (the default where
   * supported; FLOE_AMX=0 at load turns it off), 'off', or 'emulate' (FLOE_AMX=emulate; any host: the same code with
   * the tile operations in scalar C++, for tests); active when not 'off' and the AVX-512 kernels are selected.
   */
  amx(): {
    supported: boolean; mode: AmxMode; active: boolean; int8: boolean; reason: string;
    /** Prefill attention's QKᵀ and PV run on the tiles now (native/attn_amx.inc; bf16 and fp8 KV caches). */
    attn: boolean;
    /**
     * 'default': on under the emulation only (the kernel has not yet run on real tiles, so an AMX host keeps the
     * AVX-512 attention); 'on' / 'off' from FLOE_AMX_ATTN=1 / 0 at load or setAmxAttn.
     */
    attnSetting: 'on' | 'off' | 'default';
  };
  /** Sets the AMX mode at run time; throws for 'tiles' where they are not supported. */
  setAmx(mode: AmxMode): void;
  /** Prefill attention on the tiles: 'on', 'off' or 'default' (see amx().attnSetting). */
  setAmxAttn(setting: 'on' | 'off' | 'default'): void;
  /**
   * How the AVX-512 bf16 / fp8 decode GEMVs multiply bf16 pairs: 'dpbf16' (vdpbf16ps) or 'fma' (f32 FMA on the
   * widened halves), whichever this core runs faster, measured once (G multiply-adds per second of one core);
   * `forced` when FLOE_BF16_DOT chose. null where the AVX-512 kernels cannot run.
   */
  bf16Dot(): { mode: 'fma' | 'dpbf16'; forced: boolean; fmaGmacs: number; dpbf16Gmacs: number; ghz: number; fmaPerCycle: number; r16Wide: boolean; r16WideForced: boolean } | null;
  setThreads(n: number): void;
  getThreads(): number;
  /** Weight streaming (native/stream.cc): open a file, queue a pread of dst.length bytes at fileOffset on the reader
   *  thread (pages dropped from the cache after), wait for a ticket (throws its read error), close. */
  streamOpen(path: string): number;
  streamRead(fd: number, dst: Uint8Array, fileOffset: number, chunkBytes: number): number;
  streamWait(ticket: number): void;
  streamClose(fd: number): void;
  /** Calls per "kernel[.variant].isa", e.g. "matmul.bf16.avx512", since load. */
  counters(): Record<string, number>;
}

/** The package root: the nearest ancestor of this file holding package.json (src/backend or dist/src/backend). */
function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    const up = dirname(dir);
    if (up === dir) throw new Error(`floe: no package.json above ${fileURLToPath(import.meta.url)}`);
    dir = up;
  }
}

let cached: NativeAddon | null | undefined;

/** The addon, loaded once; null if build/Release/floe.node is missing (run `npx node-gyp rebuild`). */
export function loadAddon(): NativeAddon | null {
  if (cached !== undefined) return cached;
  const path = addonPath();
  if (!existsSync(path)) {
    if (process.env.FLOE_ADDON) throw new Error(`FLOE_ADDON=${path}: no such file`);
    return (cached = null);
  }
  const require = createRequire(import.meta.url);
  cached = require(path) as NativeAddon;
  return cached;
}

/**
 * Absolute path the addon is loaded from: build/Release/floe.node, or FLOE_ADDON (another build of it, for A/B runs of
 * two builds in one benchmark, e.g. `bench/decode-ab.ts --ab FLOE_ADDON=/tmp/old.node`).
 */
export function addonPath(): string {
  const e = process.env.FLOE_ADDON;
  return e ? resolve(e) : join(packageRoot(), 'build', 'Release', 'floe.node');
}

// The buffers that are memory mappings of a file (mmapFile's, as formats/mapfile.ts makes them), not bytes read or made
// in memory: their pages can be handed back to the kernel once a converted or repacked copy is made (the `release`
// arguments above; the kernel re-reads them if touched). Handing back anonymous memory would only write it to swap.
const mapped = new WeakSet<ArrayBufferLike>();

/** Records that `ab` is a file mapping (mapfile.ts, for each mmapFile result it keeps). */
export function noteMapped(ab: ArrayBufferLike): void {
  mapped.add(ab);
}

/** Whether `view` lies in a file mapping noted by noteMapped. */
export function isMapped(view: Uint8Array): boolean {
  return mapped.has(view.buffer);
}
