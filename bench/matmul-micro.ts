// Matmul micro-benchmark: GFLOP/s per wall second and per CPU second (less sensitive to other load), best of reps.
//
//   node --import tsx bench/matmul-micro.ts [--dtypes bf16,fp8,q8_0,f16] [--m 1,512] [--shapes 2048x2048,8192x2048,2048x8192]
//                                          [--threads 2] [--reps 5] [--isa avx512] [--fp8-block 1x0] [--ops fwd,bwd]
//                                          [--ab FLOE_MATMUL_BATCH=0] [--rotate 8]
// --ops: fwd = y (M, N) = x (M, C) · wᵀ (inference, training forward); bwd = dx (M, C) = dy (M, N) · w (training's
// backward through a frozen weight, matmulBackwardInput).
// --ab ENV=VAL: old vs new in one run: two child processes, one with ENV=VAL ("old") and one without ("new"), measured
// in alternation rep by rep (so load changes on a shared machine hit both alike); prints both and new/old time.
// Shapes are NxC (weight rows x columns); --fp8-block BRxBC (0 = whole dimension). Decode rows (M <= 4) also
// report weight GB per CPU-second per thread. Weights are random bytes of the stored format (finite values), built
// directly; dtypes bf16r16, f16r16, fp8r16, f32r16, q8_0r16 are those weights repacked as openModel does. --rotate K cycles through K
// copies so a decode row reads its weight from DRAM (as in a model) rather than from L3. The repack's A/B in one run:
// --dtypes bf16r16,f16r16 --ab FLOE_R16_REPACK=0 (old = the row layout's kernels). The q8_0r16 GEMM's in-place path
// (32 <= M < 384) against the packed GEMM: --dtypes q8_0r16 --m 32,64,128,256 --ab FLOE_Q8R_MAX_M=0.

import { loadAddon } from '../src/backend/native-addon.js';
import { loadNativeBackend, nativeCounters } from '../src/backend/native.js';
import { amxTilesOn, bf16Peak, int8Peak, machineLine } from './machine.js';
import { Tensor, type DType } from '../src/tensor/tensor.js';

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1]! : def;
}

const DT: Record<string, DType> = { bf16: 'bf16', fp8: 'fp8_e4m3', q8_0: 'q8_0', f16: 'f16', f32: 'f32', bf16r16: 'bf16', f16r16: 'f16', fp8r16: 'fp8_e4m3', q8_0r16: 'q8_0', f32r16: 'f32' };
// names ending in r16: the weight repacked as openModel does (Backend.prepareWeights), so the repacked kernels run
const dtypes = arg('dtypes', 'bf16,fp8,q8_0,f16').split(',');
const Ms = arg('m', '1,512').split(',').map(Number);
const shapes = arg('shapes', '2048x2048,8192x2048,2048x8192').split(',').map((s) => s.split('x').map(Number) as [number, number]);
const threads = Number(arg('threads', '2'));
const reps = Number(arg('reps', '5'));
const isa = arg('isa', '');
const [fbr, fbc] = arg('fp8-block', '1x0').split('x').map(Number) as [number, number];
const ops = arg('ops', 'fwd').split(',');
// --rotate K: K copies of each weight, called in turn, so decode rows read from DRAM as in a model (K · bytes > L3)
const rotate = Math.max(1, Number(arg('rotate', '1')));
for (const o of ops) if (o !== 'fwd' && o !== 'bwd') throw new Error(`--ops: fwd or bwd, got ${o}`);

let seed = 12345;
function rnd(): number {
  seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
  return seed / 2 ** 32;
}

function randomWeight(dtype: DType, N: number, C: number): Tensor {
  const n = N * C;
  switch (dtype) {
    case 'bf16': case 'f16': {
      const h = new Uint16Array(n);
      // exponents near 1/64 keep values finite in both formats
      const base = dtype === 'bf16' ? 0x3c00 : 0x2000;
      for (let i = 0; i < n; i++) h[i] = base | ((rnd() * 0x3ff) & 0x3ff) | (rnd() < 0.5 ? 0x8000 : 0);
      return new Tensor(dtype, [N, C], new Uint8Array(h.buffer));
    }
    case 'fp8_e4m3': {
      const b = new Uint8Array(n);
      for (let i = 0; i < n; i++) b[i] = ((rnd() * 0x7e) | 0) | (rnd() < 0.5 ? 0x80 : 0);
      const br = fbr || N, bc = fbc || C;
      const scale = new Float32Array(Math.ceil(N / br) * Math.ceil(C / bc)).map(() => 0.001 + rnd() * 0.01);
      return new Tensor(dtype, [N, C], b, scale, [br, bc]);
    }
    case 'q8_0': {
      const b = new Uint8Array(N * (C / 32) * 34);
      for (let i = 0; i < b.length; i++) b[i] = (rnd() * 256) | 0;
      for (let i = 0; i < b.length; i += 34) { b[i] = 0; b[i + 1] = 0x20; } // f16 scale 2^-7
      return new Tensor(dtype, [N, C], b);
    }
    case 'f32': {
      const f = new Float32Array(n).map(() => rnd() - 0.5);
      return new Tensor(dtype, [N, C], new Uint8Array(f.buffer));
    }
    default: throw new Error(`no random ${dtype}`);
  }
}

const ab = arg('ab', '');
const child = process.argv.includes('--child');

interface Job { dtype: DType; N: number; C: number; M: number; op: string; repack: boolean }
interface Best { wall: number; cpu: number; path: string }

const addon = loadAddon();
if (!addon) throw new Error('native addon not built (npx node-gyp rebuild)');
addon.setThreads(threads);
if (isa) addon.setIsa(isa as 'avx512');
const be = loadNativeBackend()!;
const weights = new Map<string, Tensor[]>();

/** Best wall and CPU seconds per call over `n` reps of one job (weights built once per process and shape). */
function measure(j: Job, n: number): Best {
  const key = `${j.dtype} ${j.N}x${j.C} ${j.repack}`;
  if (!weights.has(key)) {
    weights.clear();
    seed = 12345;
    const ws = Array.from({ length: rotate }, (_, k) => {
      const m = new Map([['w', randomWeight(j.dtype, j.N, j.C)]]);
      // with --ab FLOE_R16_REPACK=0 (or FLOE_Q8_REPACK=0, FLOE_F32_REPACK=0) the old side keeps the row layout: the repack's A/B
      const off = process.env[j.dtype === 'q8_0' ? 'FLOE_Q8_REPACK' : 'FLOE_R16_REPACK'] === '0' || (j.dtype === 'f32' && process.env.FLOE_F32_REPACK === '0');
      if (j.repack && be.prepareWeights!(m) !== 1 && !off) throw new Error(`${j.dtype} [${j.N},${j.C}] was not repacked (not AVX-512?)`);
      return m.get('w')!;
    });
    weights.set(key, ws);
  }
  const ws = weights.get(key)!;
  const bwd = j.op === 'bwd';
  const x = new Float32Array(j.M * (bwd ? j.N : j.C)).map(() => rnd() * 2 - 1);
  const y = new Float32Array(j.M * (bwd ? j.C : j.N));
  let k = 0;
  const run = bwd ? () => be.matmulBackwardInput(y, x, ws[k++ % rotate]!, j.M, false) : () => be.matmul(y, x, ws[k++ % rotate]!, j.M);
  // enough calls per rep for ~0.2 s at 100 GFLOP/s (decode: ~20 calls)
  const calls = Math.max(3, Math.min(200, Math.round(2e10 / (2 * j.M * j.N * j.C))));
  run();
  const before = nativeCounters();
  let wall = Infinity, cpu = Infinity;
  for (let r = 0; r < n; r++) {
    const c0 = process.cpuUsage();
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < calls; i++) run();
    wall = Math.min(wall, Number(process.hrtime.bigint() - t0) / 1e9 / calls);
    const cu = process.cpuUsage(c0);
    cpu = Math.min(cpu, (cu.user + cu.system) / 1e6 / calls);
  }
  // the matmul path that ran (the counter that grew most), e.g. gemm, amx_bf16, gemv_r16
  const after = nativeCounters();
  let path = '?', most = 0;
  for (const [k, v] of Object.entries(after)) {
    const grew = v - (before[k] ?? 0);
    if (k.startsWith('matmul.path.') && grew > most) most = grew, path = k.split('.')[2]!;
  }
  return { wall, cpu, path };
}

// bf16 / fp8 figures as a fraction of the peak of the ISA that ran them: the AMX tiles (amx_bf16* paths) or vdpbf16ps;
// q8_0 figures (int8 ops) likewise: the AMX int8 tiles (amx_int8* paths) or vpdpbusd. Each peak is probed only when a
// dtype of its kind is measured.
const bf16Dtypes = new Set(['bf16', 'fp8', 'bf16r16', 'fp8r16']);
const int8Dtypes = new Set(['q8_0', 'q8_0r16']);
type Peak = { gflops: number; isa: string } | null;
const probe = (f: () => { gflops: number; isa: string }): Peak => { try { return f(); } catch { return null; } };
const peaks = child ? null : {
  vdp: dtypes.some((d) => bf16Dtypes.has(d)) ? probe(() => bf16Peak(threads, false)) : null,
  amx: dtypes.some((d) => bf16Dtypes.has(d)) && amxTilesOn() ? probe(() => bf16Peak(threads, true)) : null,
  vnni: dtypes.some((d) => int8Dtypes.has(d)) ? probe(() => int8Peak(threads, false)) : null,
  amxInt8: dtypes.some((d) => int8Dtypes.has(d)) && amxTilesOn() && addon.amx().int8 ? probe(() => int8Peak(threads, true)) : null,
};
function ofPeak(name: string, b: Best, flop: number): string {
  if (!peaks) return '—';
  const p = bf16Dtypes.has(name) ? (b.path.startsWith('amx_bf16') ? peaks.amx : peaks.vdp)
    : int8Dtypes.has(name) ? (b.path.startsWith('amx_int8') ? peaks.amxInt8 : peaks.vnni) : null;
  return p ? `${(100 * flop / b.wall / 1e9 / p.gflops).toFixed(0)}%` : '—';
}

if (child) {
  process.on('message', (j: Job) => process.send!(measure(j, 1)));
} else {
  const { fork } = await import('node:child_process');
  const kids = ab ? [ab, ''].map((e) => {
    const [k, v] = e.split('=');
    const env = { ...process.env };
    if (k) env[k] = v ?? '';
    return fork(process.argv[1]!, [...process.argv.slice(2), '--child'], { env, execArgv: process.execArgv });
  }) : [];
  const ask = (i: number, j: Job): Promise<Best> => new Promise((res) => { kids[i]!.once('message', (b) => res(b as Best)); kids[i]!.send(j); });
  console.log(`machine: ${machineLine()}`);
  if (peaks) {
    const f = (label: string, p: Peak, unit: string): string | null => (p ? `${label} ${p.gflops.toFixed(0)} ${unit}` : null);
    const parts = [f('vdpbf16ps', peaks.vdp, 'GF/s'), f('AMX bf16 tiles', peaks.amx, 'GF/s'), f('vpdpbusd', peaks.vnni, 'GOP/s'), f('AMX int8 tiles', peaks.amxInt8, 'GOP/s')].filter(Boolean);
    if (parts.length) console.log(`peaks at ${threads} threads (wall): ${parts.join(', ')}; "of peak": wall GF/s (q8_0: int8 GOP/s) ÷ the peak of the path's ISA`);
  }
  console.log(`isa ${addon.isa()}, threads ${threads}, reps ${reps} (best), load ${(await import('node:os')).loadavg().map((v) => v.toFixed(1)).join(' ')}${ab ? `, old = ${ab}, new = without it, alternating` : ''}`);
  console.log(ab
    ? 'op  dtype    M      N      C   old ms(cpu)  new ms(cpu)  new/old   old ms(wall)  new ms(wall)   new cpu GF/s   old path / of peak   new path / of peak'
    : 'op  dtype      M      N      C   wall GF/s   cpu GF/s  (GF per CPU-s per thread)   ms   weight GB/cpu-s   path / of peak');
  for (const name of dtypes) {
    const dtype = DT[name];
    if (!dtype) throw new Error(`unknown dtype ${name}`);
    for (const [N, C] of shapes) {
      for (const M of Ms) for (const op of ops) {
        const j: Job = { dtype, N, C, M, op, repack: name.endsWith('r16') };
        const flop = 2 * M * N * C;
        const head = `${op} ${name.padEnd(8)} ${String(M).padStart(4)} ${String(N).padStart(6)} ${String(C).padStart(6)}`;
        if (ab) {
          const best: Best[] = [{ wall: Infinity, cpu: Infinity, path: '?' }, { wall: Infinity, cpu: Infinity, path: '?' }];
          for (let r = 0; r < reps; r++) for (const i of r % 2 ? [1, 0] : [0, 1]) {
            const b = await ask(i, j);
            best[i] = { wall: Math.min(best[i]!.wall, b.wall), cpu: Math.min(best[i]!.cpu, b.cpu), path: b.path };
          }
          const [o, n] = best as [Best, Best];
          console.log(`${head} ${(o.cpu * 1e3).toFixed(3).padStart(12)} ${(n.cpu * 1e3).toFixed(3).padStart(12)} ${(n.cpu / o.cpu).toFixed(2).padStart(8)} ${(o.wall * 1e3).toFixed(3).padStart(14)} ${(n.wall * 1e3).toFixed(3).padStart(13)} ${(flop / n.cpu / 1e9 * threads).toFixed(1).padStart(14)}   ${`${o.path} ${ofPeak(name, o, flop)}`.padStart(18)}   ${`${n.path} ${ofPeak(name, n, flop)}`.padStart(18)}`);
        } else {
          const b = measure(j, reps);
          const gbs = M <= 16 ? (weights.values().next().value![0]!.data.byteLength / b.cpu * threads / 1e9).toFixed(1) : '';
          console.log(`${head} ${(flop / b.wall / 1e9).toFixed(1).padStart(10)} ${(flop / b.cpu / 1e9 * threads).toFixed(1).padStart(10)} ${(flop / b.cpu / 1e9).toFixed(1).padStart(16)} ${(b.wall * 1e3).toFixed(2).padStart(17)} ${gbs.padStart(8)}   ${b.path} ${ofPeak(name, b, flop)}`);
        }
      }
    }
  }
  for (const k of kids) k.kill();
}
