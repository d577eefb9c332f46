// Segmented LoRA delta micro-benchmark: the native one-call kernel (Backend.loraSegmented) vs the per-segment path
// (two native f32 matmuls, a scale loop and an add per segment), on the 1B shape's q/k/v/o matmuls, 16 decode rows
// over 4 adapters in 4 segments (grouped) and in 16 one-row segments (interleaved). Equal outputs are checked first.
//
//   node --import tsx bench/lora-micro.ts [--threads N] [--rank 16] [--iters 400]
// Prints CPU model / ISA flags, µs per call (wall) and process CPU-µs per call for both paths and their ratios.

import * as os from 'node:os';
import type { Backend } from '../src/backend/backend.js';
import { selectBackend } from '../src/backend/select.js';
import { addSegmentedLora, LoraLinear, LoraScratch, type LoraAdapter, type LoraBatch, type LoraTarget } from '../src/model/lora.js';
import { machineLine } from './machine.js';

const arg = (name: string, def: number): number => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : def;
};
const threads = arg('threads', os.cpus().length);
const rank = arg('rank', 16);
const iters = arg('iters', 400);
console.log(`machine: ${machineLine()}`);
console.log(`threads ${threads}, rank ${rank}, ${iters} calls per case`);

const native = selectBackend('native', threads);
if (!native.loraSegmented) throw new Error('the native backend has no loraSegmented: build the addon (npx node-gyp build)');
const perSegment = Object.assign(Object.create(native) as Backend, { loraSegmented: undefined });

let seed = 12345;
const rnd = () => { seed = (Math.imul(seed, 1103515245) + 12345) & 0x7fffffff; return seed / 2 ** 31 - 0.5; };
const D = 2048, KV = 512, T = 16, A = 4;
const shapes: Array<[LoraTarget, number, number]> = [['q', D, D], ['k', KV, D], ['v', KV, D], ['o', D, D]];
const adapters: LoraAdapter[] = Array.from({ length: A }, () => ({
  config: { rank, alpha: 2 * rank, targets: ['q', 'k', 'v', 'o'], rslora: false, dropout: 0 },
  layers: [Object.fromEntries(shapes.map(([t, N, C]) => [t, new LoraLinear(N, C, rank, Float32Array.from({ length: rank * C }, rnd), Float32Array.from({ length: N * rank }, rnd))]))],
}));
const grouped: LoraBatch = { adapters, segStart: Int32Array.from({ length: A + 1 }, (_, g) => g * (T / A)), segAdapter: Int32Array.from({ length: A }, (_, g) => g) };
const interleaved: LoraBatch = { adapters, segStart: Int32Array.from({ length: T + 1 }, (_, i) => i), segAdapter: Int32Array.from({ length: T }, (_, i) => i % A) };

const time = (be: Backend, batch: LoraBatch, t: LoraTarget, N: number, C: number) => {
  const x = Float32Array.from({ length: T * C }, rnd);
  const y = new Float32Array(T * N);
  const ws = new LoraScratch();
  for (let i = 0; i < 20; i++) addSegmentedLora(be, y, x, C, N, batch, 0, t, ws);
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  for (let i = 0; i < iters; i++) addSegmentedLora(be, y, x, C, N, batch, 0, t, ws);
  const wall = ((performance.now() - t0) * 1000) / iters;
  const cu = process.cpuUsage(c0);
  return { wall, cpu: (cu.user + cu.system) / iters };
};

console.log('\ncase                 target   native µs (cpu-µs)   per-segment µs (cpu-µs)   speed-up wall / cpu');
let sumN = 0, sumP = 0;
for (const [name, batch] of [['grouped 4×4 rows', grouped], ['interleaved 16×1 row', interleaved]] as const) {
  for (const [t, N, C] of shapes) {
    const x = Float32Array.from({ length: T * C }, rnd);
    const y1 = Float32Array.from({ length: T * N }, rnd);
    const y2 = y1.slice();
    addSegmentedLora(native, y1, x, C, N, batch, 0, t, new LoraScratch());
    addSegmentedLora(perSegment, y2, x, C, N, batch, 0, t, new LoraScratch());
    const err = y1.reduce((m, v, i) => Math.max(m, Math.abs(v - y2[i]!)), 0);
    if (!(err < 1e-3)) throw new Error(`${name} ${t}: the paths differ by ${err}`);
    const a = time(native, batch, t, N, C);
    const b = time(perSegment, batch, t, N, C);
    sumN += a.cpu; sumP += b.cpu;
    console.log(`${name.padEnd(21)}${t.padEnd(8)} ${a.wall.toFixed(1).padStart(9)} (${a.cpu.toFixed(1).padStart(7)})   ${b.wall.toFixed(1).padStart(14)} (${b.cpu.toFixed(1).padStart(7)})        ${(b.wall / a.wall).toFixed(2)}× / ${(b.cpu / a.cpu).toFixed(2)}×`);
  }
}
console.log(`\nall cases, CPU time: native ${sumN.toFixed(0)} µs vs per-segment ${sumP.toFixed(0)} µs → ${(sumP / sumN).toFixed(2)}× less CPU with the native kernel`);
