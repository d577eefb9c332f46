// Per-row sampling cost at the Llama 3 vocabulary (V=128256): the sampler's TypeScript path (native topk, the path
// before the sampling kernels) vs the native kernels (native/sample.*), on flat (random-weight-like) and peaked rows,
// for the sampling settings that matter when serving. Each figure is Sampler.sample on one row: copy, candidates, draw.
//
// usage: node --import tsx bench/sampler-micro.ts [--isa scalar|avx2|avx512] [--ms 400]

import { parseArgs } from 'node:util';
import type { Backend } from '../src/backend/backend.js';
import { loadNativeBackend } from '../src/backend/native.js';
import { loadAddon, type NativeIsa } from '../src/backend/native-addon.js';
import { DEFAULT_SAMPLING, Sampler, type SamplingParams } from '../src/model/sampler.js';
import { machineInfo, machineLine } from './machine.js';

const { values: a } = parseArgs({ options: { isa: { type: 'string' }, ms: { type: 'string' } } });
const native = loadNativeBackend();
const addon = loadAddon();
if (!native || !addon) throw new Error('bench/sampler-micro: the native addon is not built (npx node-gyp rebuild)');
if (a.isa) addon.setIsa(a.isa as NativeIsa);
const budgetMs = Number(a.ms ?? 400);
const oracle = Object.assign(Object.create(native) as Backend, { sampleCandidates: undefined, argmax: undefined });

const V = 128_256;
let seed = 12345;
const u = () => { seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0; return seed / 2 ** 32; };
const normal = () => Math.sqrt(-2 * Math.log(1 - u())) * Math.cos(2 * Math.PI * u());
const flat = Float32Array.from({ length: V }, () => 0.3 * normal()); // a random-weight model's logits
const peaked = Float32Array.from({ length: V }, () => normal()); // a trained model's: a few tokens far above the rest
for (let i = 0; i < 20; i++) peaked[Math.floor(u() * V)] = 10 + 3 * u();

/** Median ms per Sampler.sample over batches of calls filling the time budget. */
function perRow(params: SamplingParams, backend: Backend, z: Float32Array): number {
  const s = new Sampler(params, V, backend);
  s.sample(z, null);
  const times: number[] = [];
  const t0 = performance.now();
  while (performance.now() - t0 < budgetMs || times.length < 5) {
    const t = performance.now();
    s.sample(z, null);
    times.push(performance.now() - t);
  }
  times.sort((x, y) => x - y);
  return times[times.length >> 1]!;
}

const modes: Array<[string, Partial<SamplingParams>]> = [
  ['T 0.8, top-p 0.95', { temperature: 0.8, topP: 0.95 }],
  ['T 1 (OpenAI default)', { temperature: 1 }],
  ['T 0.7, top-k 50', { temperature: 0.7, topK: 50 }],
  ['T 0.7, top-k 50, top-p 0.9', { temperature: 0.7, topK: 50, topP: 0.9 }],
  ['T 1, min-p 0.05', { temperature: 1, minP: 0.05 }],
  ['greedy (argmax)', { temperature: 0 }],
];
const lines = [
  `machine   ${machineLine(machineInfo())}`,
  `kernels   ${addon.isa()} (supported ${addon.supportedIsa()}), V=${V}, median of >= ${budgetMs} ms per figure, ms per row`,
  `${'row'.padEnd(8)} ${'sampling'.padEnd(28)} ${'typescript'.padStart(11)} ${'native'.padStart(9)} ${'ratio'.padStart(8)}`,
];
process.stdout.write(lines.join('\n') + '\n');
for (const [rowName, z] of [['flat', flat], ['peaked', peaked]] as const) {
  for (const [name, over] of modes) {
    const params: SamplingParams = { ...DEFAULT_SAMPLING, seed: 1, ...over };
    const ts = perRow(params, oracle, z);
    const nat = perRow(params, native, z);
    process.stdout.write(`${rowName.padEnd(8)} ${name.padEnd(28)} ${ts.toFixed(3).padStart(11)} ${nat.toFixed(3).padStart(9)} ${(ts / nat).toFixed(1).padStart(7)}x\n`);
  }
}
