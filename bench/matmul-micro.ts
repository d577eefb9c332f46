// Matmul micro-benchmark: GFLOP/s per wall second and per CPU second (less sensitive to other load), best of reps.
//
//   node --import tsx bench/matmul-micro.ts [--dtypes bf16,fp8,q8_0,f16] [--m 1,512] [--shapes 2048x2048,8192x2048,2048x8192]
//                                          [--threads 2] [--reps 5] [--isa avx512] [--fp8-block 1x0] [--ops fwd,bwd]
// --ops: fwd = y (M, N) = x (M, C) · wᵀ (inference, training forward); bwd = dx (M, C) = dy (M, N) · w (training's
// backward through a frozen weight, matmulBackwardInput).
// Shapes are NxC (weight rows x columns); --fp8-block BRxBC (0 = whole dimension). Decode rows (M <= 4) also
// report weight GB/s per wall second and per CPU second. Weights are random bytes of the stored format (finite
// values), built directly.
// --rotate-mib R (decode rows): cycle through copies of the weight totalling R MiB, so every call reads DRAM, not L3.
// --ab VAR=a,b (e.g. --ab FLOE_GEMV=0,1: tiles vs GEMV at M = 1): runs this script as a child once per value and
// rep, interleaved (a b a b ...), so both sides see the same machine load; prints the best of each and b/a.

import { loadAddon } from '../src/backend/native-addon.js';
import { loadNativeBackend } from '../src/backend/native.js';
import { Tensor, type DType } from '../src/tensor/tensor.js';

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1]! : def;
}

const DT: Record<string, DType> = { bf16: 'bf16', fp8: 'fp8_e4m3', q8_0: 'q8_0', f16: 'f16', f32: 'f32' };
const dtypes = arg('dtypes', 'bf16,fp8,q8_0,f16').split(',');
const Ms = arg('m', '1,512').split(',').map(Number);
const shapes = arg('shapes', '2048x2048,8192x2048,2048x8192').split(',').map((s) => s.split('x').map(Number) as [number, number]);
const threads = Number(arg('threads', '2'));
const reps = Number(arg('reps', '5'));
const isa = arg('isa', '');
const [fbr, fbc] = arg('fp8-block', '1x0').split('x').map(Number) as [number, number];
const ops = arg('ops', 'fwd').split(',');
const rotateMiB = Number(arg('rotate-mib', '0'));
for (const o of ops) if (o !== 'fwd' && o !== 'bwd') throw new Error(`--ops: fwd or bwd, got ${o}`);

let seed = 12345;
function rnd(): number {
  seed = (seed * 1103515245 + 12345) >>> 0;
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
if (ab) {
  const { spawnSync } = await import('node:child_process');
  const [name, vals] = ab.split('=') as [string, string];
  const values = vals.split(',');
  const childArgs = process.argv.slice(2).filter((_, i, all) => all[i] !== '--ab' && all[i - 1] !== '--ab' && all[i] !== '--reps' && all[i - 1] !== '--reps');
  const best = new Map<string, { line: string[]; ms: number }[]>();  // row key -> per value
  for (let r = 0; r < reps; r++) {
    for (const [vi, v] of values.entries()) {
      const out = spawnSync(process.execPath, ['--import', 'tsx', new URL(import.meta.url).pathname, ...childArgs, '--reps', '1'],
        { env: { ...process.env, [name]: v }, encoding: 'utf8' });
      if (out.status !== 0) throw new Error(`child ${name}=${v} failed: ${out.stderr}`);
      for (const l of out.stdout.split('\n')) {
        const f = l.trim().split(/\s+/);
        if (f[0] !== 'fwd' && f[0] !== 'bwd') continue;
        const key = f.slice(0, 5).join(' ');
        const ms = Number(f[8]);
        const e = best.get(key) ?? values.map(() => ({ line: [] as string[], ms: Infinity }));
        if (ms < e[vi]!.ms) e[vi] = { line: f, ms };
        best.set(key, e);
      }
    }
  }
  console.log(`${name}=${values.join(' vs ')}, ${reps} interleaved reps, best ms and weight GB/s (wall, cpu) per value`);
  for (const [key, e] of best) {
    const cols = e.map((x, i) => `${values[i]}: ${x.ms.toFixed(3)} ms ${x.line[9] ?? ''} ${x.line[10] ?? ''}`);
    console.log(`${key.padEnd(28)} ${cols.join(' | ')}  ratio ${(e[0]!.ms / e[1]!.ms).toFixed(2)}x`);
  }
  process.exit(0);
}

const addon = loadAddon();
if (!addon) throw new Error('native addon not built (npx node-gyp rebuild)');
addon.setThreads(threads);
if (isa) addon.setIsa(isa as 'avx512');
const be = loadNativeBackend()!;
console.log(`isa ${addon.isa()}, threads ${threads}, reps ${reps} (best), load ${(await import('node:os')).loadavg().map((v) => v.toFixed(1)).join(' ')}`);
console.log('op  dtype    M      N      C   wall GF/s   cpu GF/s  (GF per CPU-s per thread)   ms   weight GB/s (wall, cpu)');
for (const name of dtypes) {
  const dtype = DT[name];
  if (!dtype) throw new Error(`unknown dtype ${name}`);
  for (const [N, C] of shapes) {
    const w = randomWeight(dtype, N, C);
    for (const M of Ms) for (const op of ops) {
      const bwd = op === 'bwd';
      const x = new Float32Array(M * (bwd ? N : C)).map(() => rnd() * 2 - 1);
      const y = new Float32Array(M * (bwd ? C : N));
      const copies = M <= 4 && rotateMiB > 0 ? Math.max(1, Math.ceil(rotateMiB * 2 ** 20 / w.data.byteLength)) : 1;
      const ws = [w, ...Array.from({ length: copies - 1 }, () => new Tensor(w.dtype, w.shape, w.data.slice(), w.scale, w.scaleBlock))];
      let k = 0;
      const next = (): Tensor => ws[k = (k + 1) % ws.length]!;
      const run = bwd ? () => be.matmulBackwardInput(y, x, next(), M, false) : () => be.matmul(y, x, next(), M);
      const flop = 2 * M * N * C;
      // enough calls per rep for ~0.2 s at 100 GFLOP/s (decode: ~20 calls)
      const calls = Math.max(3, Math.min(200, Math.round(2e10 / flop)));
      run();
      let bestWall = Infinity, bestCpu = Infinity;
      for (let r = 0; r < reps; r++) {
        const c0 = process.cpuUsage();
        const t0 = process.hrtime.bigint();
        for (let i = 0; i < calls; i++) run();
        const wall = Number(process.hrtime.bigint() - t0) / 1e9 / calls;
        const cu = process.cpuUsage(c0);
        const cpu = (cu.user + cu.system) / 1e6 / calls;
        bestWall = Math.min(bestWall, wall);
        bestCpu = Math.min(bestCpu, cpu);
      }
      const bytes = w.data.byteLength + (w.scale?.byteLength ?? 0);
      const gbs = M <= 4 ? `${(bytes / bestWall / 1e9).toFixed(1)} ${(bytes / bestCpu / 1e9).toFixed(1).padStart(6)}` : '';
      console.log(`${op} ${name.padEnd(6)} ${String(M).padStart(4)} ${String(N).padStart(6)} ${String(C).padStart(6)} ${(flop / bestWall / 1e9).toFixed(1).padStart(10)} ${(flop / bestCpu / 1e9 * threads).toFixed(1).padStart(10)} ${(flop / bestCpu / 1e9).toFixed(1).padStart(16)} ${(bestWall * 1e3).toFixed(2).padStart(17)} ${gbs.padStart(13)}`);
    }
  }
}
