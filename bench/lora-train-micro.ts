// A trained LoRA linear's factor products on the seven projections of the 1B shape (or floe-brown's), T rows: the fused native kernels
// (Backend.loraForward / loraBackward) against the path the trainer took before them (f32 matmuls, a scale loop and an
// add; matmulBackwardWeight / matmulBackwardInput), alternating rep by rep. Outputs are checked equal first.
//
//   node --import tsx bench/lora-train-micro.ts [--threads 2] [--T 512] [--rank 16] [--reps 5] [--iters 10] [--cpu] [--min]
//                                               [--shape 1b|brown]
// Prints CPU model / ISA flags, ms per call of each path (median of reps), their ratio, and the fused path's rate
// against the f32 FMA peak (3·T·(N + C)·r multiply-adds a linear, forward and backward).

import * as os from 'node:os';
import type { TrainBackend } from '../src/backend/backend.js';
import { loadNativeBackend } from '../src/backend/native.js';
import { selectBackend } from '../src/backend/select.js';
import { f32Tensor } from '../src/tensor/tensor.js';
import { machineInfo, machineLine } from './machine.js';

const arg = (name: string, def: number): number => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : def;
};
const useCpu = process.argv.includes('--cpu');
const threads = arg('threads', os.cpus().length), T = arg('T', 512), r = arg('rank', 16), reps = arg('reps', 5), iters = arg('iters', 10);
selectBackend('native', threads);
const fused = loadNativeBackend();
if (!fused?.loraForward || !fused.loraBackward) throw new Error('the native backend has no loraForward / loraBackward: build the addon (npx node-gyp build)');
const be: TrainBackend = fused;

let seed = 7;
const rnd = (): number => { seed = (Math.imul(seed, 1103515245) + 12345) & 0x7fffffff; return seed / 2 ** 31 - 0.5; };
const fill = (n: number): Float32Array => Float32Array.from({ length: n }, rnd);
const s = 2;

/** The trainer's path before the fused kernels (llama-train.ts linear_forward / linear_backward without them). */
function composite(N: number, C: number, a: Float32Array, b: Float32Array) {
  const aT = f32Tensor([r, C], a), bT = f32Tensor([N, r], b);
  const yb = new Float32Array(T * N), du = new Float32Array(T * r);
  return {
    forward(y: Float32Array, u: Float32Array, x: Float32Array): void {
      be.matmul(u, x, aT, T);
      for (let i = 0; i < u.length; i++) u[i]! *= s;
      be.matmul(yb, u, bT, T);
      be.add(y, yb);
    },
    backward(dx: Float32Array, dA: Float32Array, dB: Float32Array, dy: Float32Array, x: Float32Array, u: Float32Array): void {
      be.matmulBackwardWeight(dB, dy, u, T, N, r);
      be.matmulBackwardInput(du, dy, bT, T, false);
      for (let i = 0; i < du.length; i++) du[i]! *= s;
      be.matmulBackwardWeight(dA, du, x, T, r, C);
      be.matmulBackwardInput(dx, du, aT, T, true);
    },
  };
}

// the median of the reps, or with --min the fastest (what the code can do, on a host whose speed drifts between reps)
const useMin = process.argv.includes('--min');
const median = (v: number[]): number => (useMin ? Math.min(...v) : [...v].sort((p, q) => p - q)[Math.floor((v.length - 1) / 2)]!);
function maxRelDiff(p: Float32Array, q: Float32Array): number {
  let d = 0, m = 0;
  for (let i = 0; i < p.length; i++) { d = Math.max(d, Math.abs(p[i]! - q[i]!)); m = Math.max(m, Math.abs(q[i]!)); }
  return m > 0 ? d / m : d;
}

const info = machineInfo();
console.log(`machine: ${machineLine()}`);
console.log(`threads ${threads}, T ${T}, rank ${r}, ${reps} reps × ${iters} calls, alternating; ${useCpu ? 'process CPU ms' : 'wall ms'} per call, ${useMin ? 'fastest' : 'median'} rep`);
// f32 FMA peak of the run: the machine probe's per-core FMA rate (G multiply-adds/s) × threads, where it has one
const fmaPerCore = info.bf16_dot?.fmaGmacs ?? null;

// --shape brown: the built-in floe-brown's projections (hidden 256, 4 of 8 heads' kv, intermediate 704)
const model = (() => { const i = process.argv.indexOf('--shape'); return i >= 0 ? process.argv[i + 1]! : '1b'; })();
const [D, KV, I] = model === 'brown' ? [256, 128, 704] : model === '1b' ? [2048, 512, 8192] : (() => { throw new Error(`--shape ${model}: 1b or brown`); })();
const layers = model === 'brown' ? 6 : 16;
const shapes: [string, number, number][] = [['q', D, D], ['k', KV, D], ['v', KV, D], ['o', D, D], ['gate', I, D], ['up', I, D], ['down', D, I]];
console.log('\nproj   N     C      fwd old ms  fwd fused ms  ×      bwd old ms  bwd fused ms  ×      fused GFLOP/s  max rel diff');
let [sumOld, sumNew, sumMacs] = [0, 0, 0];
for (const [name, N, C] of shapes) {
  const [x, a, b, y0, dy, dx0] = [fill(T * C), fill(r * C), fill(N * r), fill(T * N), fill(T * N), fill(T * C)];
  const old = composite(N, C, a, b);
  // equal outputs first
  const [y1, u1, y2, u2] = [y0.slice(), new Float32Array(T * r), y0.slice(), new Float32Array(T * r)];
  old.forward(y1, u1, x);
  be.loraForward!(y2, u2, x, a, b, s, T, N, C, r);
  const [dx1, dA1, dB1, dx2, dA2, dB2] = [dx0.slice(), new Float32Array(r * C), new Float32Array(N * r), dx0.slice(), new Float32Array(r * C), new Float32Array(N * r)];
  old.backward(dx1, dA1, dB1, dy, x, u1);
  be.loraBackward!(dx2, dA2, dB2, dy, x, u1, a, b, s, T, N, C, r, true);
  const diff = Math.max(maxRelDiff(y2, y1), maxRelDiff(u2, u1), maxRelDiff(dx2, dx1), maxRelDiff(dA2, dA1), maxRelDiff(dB2, dB1));
  if (diff > 1e-4) throw new Error(`${name}: fused and composite outputs differ by ${diff} (relative to the largest value)`);

  const y = y0.slice(), u = new Float32Array(T * r), dx = dx0.slice(), dA = new Float32Array(r * C), dB = new Float32Array(N * r);
  // wall ms per call, or (--cpu) process CPU ms per call: steadier beside other busy processes, ≈ threads × wall alone
  const time = (f: () => void): number => {
    const [t0, c0] = [performance.now(), process.cpuUsage()];
    for (let i = 0; i < iters; i++) f();
    if (!useCpu) return (performance.now() - t0) / iters;
    const c = process.cpuUsage(c0);
    return (c.user + c.system) / 1000 / iters;
  };
  const t = { fo: [] as number[], ff: [] as number[], bo: [] as number[], bf: [] as number[] };
  for (let rep = 0; rep < reps + 1; rep++) {
    const fo = time(() => old.forward(y, u, x));
    const ff = time(() => be.loraForward!(y, u, x, a, b, s, T, N, C, r));
    const bo = time(() => old.backward(dx, dA, dB, dy, x, u));
    const bf = time(() => be.loraBackward!(dx, dA, dB, dy, x, u, a, b, s, T, N, C, r, true));
    if (rep === 0) continue; // warm-up
    t.fo.push(fo); t.ff.push(ff); t.bo.push(bo); t.bf.push(bf);
  }
  const [fo, ff, bo, bf] = [median(t.fo), median(t.ff), median(t.bo), median(t.bf)];
  const macs = 3 * T * (N + C) * r;
  sumOld += fo + bo; sumNew += ff + bf; sumMacs += macs;
  console.log(`${name.padEnd(6)} ${String(N).padEnd(5)} ${String(C).padEnd(6)} ${fo.toFixed(3).padStart(10)}  ${ff.toFixed(3).padStart(12)}  ${(fo / ff).toFixed(2).padStart(5)}  ${bo.toFixed(3).padStart(10)}  ${bf.toFixed(3).padStart(12)}  ${(bo / bf).toFixed(2).padStart(5)}  ${((2 * macs) / (ff + bf) / 1e6).toFixed(1).padStart(13)}  ${diff.toExponential(1)}`);
}
console.log(`\nper layer (7 projections): old ${sumOld.toFixed(2)} ms, fused ${sumNew.toFixed(2)} ms (${(sumOld / sumNew).toFixed(2)}×); ` +
  `×${layers} layers: ${(layers * sumOld).toFixed(0)} → ${(layers * sumNew).toFixed(0)} ms a step`);
const gflops = (2 * sumMacs) / sumNew / 1e6;
console.log(`fused: ${gflops.toFixed(1)} GFLOP/s` + (fmaPerCore ? `, ${(gflops / (2 * fmaPerCore * threads)).toFixed(2)} of the f32 FMA peak (${(2 * fmaPerCore * threads).toFixed(0)} GFLOP/s)` : ''));
