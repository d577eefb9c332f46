// Paged-attention micro-benchmark: decode GB/s of KV read and prefill GFLOP/s, per wall second and per CPU second.
//
//   node --import tsx bench/attention-micro.ts [--dims 48,64] [--ctx 4096,32768,131072] [--kv bf16,fp8_e4m3,f32]
//                                             [--chunk 512] [--threads 2] [--reps 3] [--isa avx512] [--no-prefill] [--no-decode]
//                                             [--heads H,K] [--streams 16,300] [--layers 1] [--huge-pages]
//                                             [--amx tiles,off]
// Shapes: E=48 is the small benchmark model (H=6, K=6), E=64 a GQA-4 slice of Llama-3.2-1B (H=8, K=2); --heads
// overrides (32,8 is all of a 1B layer). --layers N rotates the calls over N layers, so with N × the KV of a layer
// past the last-level cache (16 for the 1B model's 16 layers) K/V come from DRAM, as in a served model's step.
// decode: 1 sequence, 1 query at position ctx-1 (the flash-decoding case), plus S streams at ctx C (--streams S,C:
// serving; default 16 at 300).
// prefill: one chunk of `chunk` queries at the end of a ctx-token context (what chunked prefill runs there).
// FLOPs = 4·E per (query head, attended token); KV bytes = K and V rows (+ fp8 scales) of the attended tokens.
// The machine is shared: "cpu" columns divide by process CPU seconds (× threads), the less load-sensitive figure.
// --amx M1,M2,...: prefill once per AMX mode (tiles, emulate, off), the modes alternating rep by rep; tiles and
// emulate run prefill attention on the tile kernel (native/attn_amx.inc: setAmxAttn('on')), off the AVX-512 kernel.

import { loadAddon } from '../src/backend/native-addon.js';
import { loadNativeBackend } from '../src/backend/native.js';
import { machineLine } from './machine.js';
import type { AttentionBatch, AttentionShape, KvDType, KvLayer } from '../src/backend/backend.js';

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1]! : def;
}

const dims = arg('dims', '48,64').split(',').map(Number);
const ctxs = arg('ctx', '4096,32768,131072').split(',').map(Number);
const kvTypes = arg('kv', 'bf16,fp8_e4m3').split(',') as KvDType[];
const chunk = Number(arg('chunk', '512'));
const threads = Number(arg('threads', '2'));
const reps = Number(arg('reps', '3'));
const isa = arg('isa', '');
const doPrefill = !process.argv.includes('--no-prefill');
const doDecode = !process.argv.includes('--no-decode');
const L = 16;
const heads = arg('heads', '');
const [streamsS, streamsCtx] = arg('streams', '16,300').split(',').map(Number) as [number, number];
const nLayers = Number(arg('layers', '1'));
const hugePages = process.argv.includes('--huge-pages');

/** Sleeps long enough for the background prefault to have committed b. */
function waitPrefault(b: Uint8Array): void {
  // MADV_POPULATE_WRITE keeps contents (zeros), so nothing marks completion: allow the measured ~8 s/GiB.
  const ms = Math.ceil(b.byteLength / 2 ** 30 * 8000) + 50;
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

const SHAPES: Record<number, { H: number; K: number }> = { 48: { H: 6, K: 6 }, 64: { H: 8, K: 2 }, 128: { H: 8, K: 2 } };
const amxModes = arg('amx', '').split(',').filter(Boolean) as ('tiles' | 'emulate' | 'off')[];

let seed = 12345;
function rnd(): number {
  seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
  return seed / 2 ** 32;
}

function elemBytes(dt: KvDType): number {
  return dt === 'f32' ? 4 : dt === 'bf16' ? 2 : 1;
}

/** A layer of numBlocks blocks filled with finite random values of the stored format. */
function randomLayer(dt: KvDType, numBlocks: number, K: number, E: number): KvLayer {
  const n = numBlocks * L * K * E;
  const values = (): Uint8Array => {
    if (dt === 'f32') return new Uint8Array(new Float32Array(n).map(() => rnd() * 2 - 1).buffer);
    if (dt === 'bf16') {
      const h = new Uint16Array(n);
      for (let i = 0; i < n; i++) h[i] = 0x3e00 | ((rnd() * 0x1ff) & 0x1ff) | (rnd() < 0.5 ? 0x8000 : 0);
      return new Uint8Array(h.buffer);
    }
    const b = new Uint8Array(n);
    for (let i = 0; i < n; i++) b[i] = ((rnd() * 0x7e) | 0) | (rnd() < 0.5 ? 0x80 : 0);
    return b;
  };
  const fill = (): Uint8Array => {
    if (!hugePages) return values();
    // what a served KV cache gets from `--kv-prefault`: 2 MiB pages, committed before the values are written
    const b = new Uint8Array(n * elemBytes(dt));
    addon!.prefault([b]);  // loaded (or thrown) below, before any layer is made
    waitPrefault(b);
    b.set(values());
    return b;
  };
  const scales = (): Float32Array => new Float32Array(numBlocks * L * K).map(() => 0.002 + rnd() * 0.004);
  return {
    dtype: dt, k: fill(), v: fill(), numBlocks, blockSize: L, numKvHeads: K, headDim: E,
    ...(dt === 'fp8_e4m3' ? { kScale: scales(), vScale: scales() } : {}),
  };
}

/** S sequences of context ctx, qLen queries each, on shuffled blocks of the layer. */
function makeBatch(S: number, ctx: number, qLen: number, numBlocks: number): AttentionBatch {
  const maxBlocks = Math.ceil(ctx / L);
  const ids = Array.from({ length: numBlocks }, (_, i) => i);
  for (let i = ids.length - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1));
    [ids[i], ids[j]] = [ids[j]!, ids[i]!];
  }
  const blockTables = new Int32Array(S * maxBlocks);
  for (let i = 0; i < S * maxBlocks; i++) blockTables[i] = ids[i]!;
  const qStart = Int32Array.from({ length: S + 1 }, (_, s) => s * qLen);
  return { numSeqs: S, qStart, ctxLen: new Int32Array(S).fill(ctx), blockTables, maxBlocks };
}

const addon = loadAddon();
if (!addon) throw new Error('native addon not built (npx node-gyp rebuild)');
addon.setThreads(threads);
if (isa) addon.setIsa(isa as 'avx512');
const be = loadNativeBackend()!;

/** Best-of-reps wall and CPU seconds per call. */
function time(run: () => void, calls: number, nreps = reps): { wall: number; cpu: number } {
  run();
  let wall = Infinity, cpu = Infinity;
  for (let r = 0; r < nreps; r++) {
    const c0 = process.cpuUsage();
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < calls; i++) run();
    wall = Math.min(wall, Number(process.hrtime.bigint() - t0) / 1e9 / calls);
    const cu = process.cpuUsage(c0);
    cpu = Math.min(cpu, (cu.user + cu.system) / 1e6 / calls);
  }
  return { wall, cpu };
}

const os = await import('node:os');
console.log(`machine: ${machineLine()}`);
console.log(`isa ${addon.isa()}, threads ${threads}, reps ${reps} (best), block ${L}, load ${os.loadavg().map((v) => v.toFixed(1)).join(' ')}`);
console.log('kind            kv      E  H  K  seqs     ctx    q    ms/call   wall GB/s  cpu GB/s   wall GF/s  cpu GF/s');

function line(kind: string, dt: KvDType, E: number, H: number, K: number, S: number, ctx: number, q: number,
  t: { wall: number; cpu: number }, bytes: number, flop: number): void {
  const f = (x: number): string => x.toFixed(1).padStart(10);
  console.log(`${kind.padEnd(15)} ${dt.padEnd(8)} ${String(E).padStart(2)} ${String(H).padStart(2)} ${String(K).padStart(2)} ${String(S).padStart(5)} ${String(ctx).padStart(7)} ${String(q).padStart(4)} ${(t.wall * 1e3).toFixed(3).padStart(10)}`
    + `${f(bytes / t.wall / 1e9)}${f(bytes / t.cpu / 1e9 * threads)}${f(flop / t.wall / 1e9)}${f(flop / t.cpu / 1e9 * threads)}`);
}

for (const E of dims) {
  const sh = SHAPES[E];
  if (!sh) throw new Error(`no benchmark shape for head dim ${E} (have ${Object.keys(SHAPES).join(', ')})`);
  const { H, K } = heads ? { H: Number(heads.split(',')[0]), K: Number(heads.split(',')[1]) } : sh;
  const shape: AttentionShape = { numHeads: H, numKvHeads: K, headDim: E, scale: 1 / Math.sqrt(E) };
  for (const dt of kvTypes) {
    const tokBytes = 2 * K * (E * elemBytes(dt) + (dt === 'fp8_e4m3' ? 4 : 0));
    // decode: the serving streams (--streams), then one sequence per context length
    const decodeCases: [number, number][] = doDecode ? [[streamsS, streamsCtx], ...ctxs.map((c) => [1, c] as [number, number])] : [];
    for (const [S, ctx] of decodeCases) {
      const layers = Array.from({ length: nLayers }, () => randomLayer(dt, S * Math.ceil(ctx / L), K, E));
      const batch = makeBatch(S, ctx, 1, layers[0]!.numBlocks);
      const q = new Float32Array(S * H * E).map(() => rnd() * 2 - 1);
      const out = new Float32Array(S * H * E);
      const bytes = S * ctx * tokBytes;
      const calls = Math.max(3, Math.min(500, Math.round(2e8 / bytes))) * nLayers;
      let li = 0;
      const run = (): void => { be.attention(out, q, layers[li]!, shape, batch); li = (li + 1) % nLayers; };
      line('decode', dt, E, H, K, S, ctx, 1, time(run, calls), bytes, 4 * E * H * S * ctx);
    }
    if (!doPrefill) continue;
    for (const ctx of ctxs) {
      const layer = randomLayer(dt, Math.ceil(ctx / L), K, E);
      const batch = makeBatch(1, ctx, chunk, layer.numBlocks);
      const q = new Float32Array(chunk * H * E).map(() => rnd() * 2 - 1);
      const out = new Float32Array(chunk * H * E);
      let attended = 0;
      for (let j = 0; j < chunk; j++) attended += ctx - chunk + j + 1;
      const flop = 4 * E * H * attended;
      const calls = Math.max(1, Math.min(50, Math.round(2e10 / flop)));
      const run = (): void => be.attention(out, q, layer, shape, batch);
      if (!amxModes.length) {
        line('prefill', dt, E, H, K, 1, ctx, chunk, time(run, calls), ctx * tokBytes, flop);
        continue;
      }
      // modes alternate rep by rep, each rep its own best-of-1, so host drift reaches all of them alike
      const best = amxModes.map(() => ({ wall: Infinity, cpu: Infinity }));
      for (let r = 0; r < reps; r++) {
        amxModes.forEach((m, i) => {
          addon!.setAmx(m);
          addon!.setAmxAttn(m === 'off' ? 'off' : 'on');
          const t = time(run, calls, 1);
          best[i] = { wall: Math.min(best[i]!.wall, t.wall), cpu: Math.min(best[i]!.cpu, t.cpu) };
        });
      }
      amxModes.forEach((m, i) => line(`prefill ${m}`, dt, E, H, K, 1, ctx, chunk, best[i]!, ctx * tokBytes, flop));
      if (amxModes.includes('off')) {
        const off = best[amxModes.indexOf('off')]!.wall;
        for (const [i, m] of amxModes.entries()) if (m !== 'off') console.log(`  ${m} / off (wall): ${(best[i]!.wall / off).toFixed(3)}`);
      }
    }
  }
}
