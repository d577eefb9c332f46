// Training's dense attention, forward and backward, on one layer of a real shape: ms per call and GFLOP/s against
// the f32 FMA peak of the threads used (the tiles are f32 products).
//
//   node --import tsx bench/attn-train-micro.ts [--threads 2] [--shapes 1b,8b] [--T 512,2048] [--samples 1] [--reps 5]
//                                               [--ab ENV=VAL[,ENV2=VAL2]] [--out FILE]
// Shapes: 1b = 32 query heads, 8 kv heads, head dim 64 (Llama-3.2-1B); 8b = 32, 8, 128 (Llama-3.1-8B); brown = 8, 4,
// 32 (the built-in floe-brown). --samples S packs S equal samples into the T tokens. FLOPs count the products a causal
// pass needs: forward 4·E per (query head, attended key), backward 10·E (S, dP, dV, dK, dQ), whatever a kernel
// recomputes beyond that.
// --ab ENV=VAL runs every rep twice in child processes, once as is and once with ENV=VAL (e.g. FLOE_ADDON=/tmp/old.node,
// another build of the addon), alternating which goes first, so both sides see the same host phase.

import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { AttentionShape, TrainBackend } from '../src/backend/backend.js';
import { loadNativeBackend } from '../src/backend/native.js';
import { selectBackend } from '../src/backend/select.js';
import { machineInfo, machineLine } from './machine.js';

const argv = process.argv.slice(2);
const opt = (name: string, def: string): string => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 ? argv[i + 1]! : def;
};
const threads = Number(opt('threads', '2')), reps = Number(opt('reps', '5')), samples = Number(opt('samples', '1'));
const shapeNames = opt('shapes', '1b,8b').split(','), Ts = opt('T', '512,2048').split(',').map(Number);
const ab = opt('ab', ''), out = opt('out', ''), child = argv.includes('--child');
const SHAPES: Record<string, { H: number; K: number; E: number }> = { '1b': { H: 32, K: 8, E: 64 }, '8b': { H: 32, K: 8, E: 128 }, brown: { H: 8, K: 4, E: 32 } };
for (const s of shapeNames) if (!SHAPES[s]) throw new Error(`--shapes ${s}: one of ${Object.keys(SHAPES).join(', ')}`);
for (const T of Ts) if (!(Number.isInteger(T) && T >= samples)) throw new Error(`--T ${T}: an integer >= --samples (${samples})`);

interface Row { shape: string; T: number; fwd_ms: number; bwd_ms: number }

/** One rep of every (shape, T): the median of `iters` calls each, in this process. */
function measure(): Row[] {
  selectBackend('native', threads);
  const be = loadNativeBackend() as TrainBackend | null;
  if (!be) throw new Error('the native addon is not built: npx node-gyp build');
  let seed = 11;
  const rnd = (): number => { seed = (Math.imul(seed, 1103515245) + 12345) & 0x7fffffff; return seed / 2 ** 31 - 0.5; };
  const rows: Row[] = [];
  for (const name of shapeNames) {
    const { H, K, E } = SHAPES[name]!;
    for (const T of Ts) {
      const fill = (n: number): Float32Array => Float32Array.from({ length: n }, rnd);
      const [q, k, v, dout] = [fill(T * H * E), fill(T * K * E), fill(T * K * E), fill(T * H * E)];
      const seg = Int32Array.from({ length: samples + 1 }, (_, s) => Math.round((s * T) / samples));
      const shape: AttentionShape = { numHeads: H, numKvHeads: K, headDim: E, scale: 1 / Math.sqrt(E) };
      const [o, lse] = [new Float32Array(T * H * E), new Float32Array(T * H)];
      const [dq, dk, dv] = [new Float32Array(T * H * E), new Float32Array(T * K * E), new Float32Array(T * K * E)];
      const time = (f: () => void): number => {
        f();  // warm: scratch, pages
        const t0 = performance.now();
        f();
        const once = performance.now() - t0, iters = Math.max(3, Math.min(50, Math.ceil(300 / Math.max(once, 0.1))));
        const ts: number[] = [];
        for (let i = 0; i < iters; i++) {
          const t = performance.now();
          f();
          ts.push(performance.now() - t);
        }
        return ts.sort((a, b) => a - b)[Math.floor(ts.length / 2)]!;
      };
      const fwd = time(() => be.attentionDense(o, lse, q, k, v, seg, shape));
      const bwd = time(() => be.attentionDenseBackward(dq, dk, dv, dout, q, k, v, o, lse, seg, shape));
      rows.push({ shape: name, T, fwd_ms: fwd, bwd_ms: bwd });
    }
  }
  return rows;
}

if (child) {
  console.log(JSON.stringify(measure()));
  process.exit(0);
}

const m = machineInfo();
const peak = m.bf16_dot ? 2 * m.bf16_dot.fmaGmacs * threads : NaN;  // f32 FMA GFLOP/s of the threads used
console.log(`machine: ${machineLine(m)}`);
console.log(`${threads} threads, ${samples} sample(s) per T, ${reps} reps (median of each), f32 FMA peak ` +
  (Number.isFinite(peak) ? `${peak.toFixed(0)} GFLOP/s` : 'not probed (no AVX-512): fractions shown as —'));
const sides = ab ? ['base', ab] : ['base'];
const env = (side: string): NodeJS.ProcessEnv => {
  const e = { ...process.env };
  if (side !== 'base') for (const kv of side.split(',')) { const i = kv.indexOf('='); e[kv.slice(0, i)] = kv.slice(i + 1); }
  return e;
};
const got: Record<string, Row[][]> = Object.fromEntries(sides.map((s) => [s, []]));
for (let r = 0; r < reps; r++) {
  const order = r % 2 === 0 ? sides : [...sides].reverse();
  for (const side of order) {
    const p = spawnSync(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), ...argv.filter((a, i) => a !== '--ab' && argv[i - 1] !== '--ab' && a !== '--out' && argv[i - 1] !== '--out'), '--child'], { env: env(side), encoding: 'utf8' });
    if (p.status !== 0) throw new Error(`child (${side}) failed:\n${p.stderr}`);
    got[side]!.push(JSON.parse(p.stdout.trim().split('\n').pop()!) as Row[]);
  }
}
const med = (xs: number[]): number => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const summary: Record<string, unknown>[] = [];
console.log(`\n${'shape'.padEnd(6)}${'T'.padStart(6)}  ${sides.map((s) => `${s.slice(0, 22)}: fwd ms (GF/s, peak) / bwd ms (GF/s, peak)`).join('  |  ')}${ab ? '  |  bwd ratio' : ''}`);
for (let i = 0; i < got.base![0]!.length; i++) {
  const { shape, T } = got.base![0]![i]!;
  const { H, E } = SHAPES[shape]!;
  const L = T / samples, pairs = samples * L * (L + 1) / 2;
  const cells: string[] = [];
  const meds: Record<string, { fwd: number; bwd: number }> = {};
  for (const side of sides) {
    const fwd = med(got[side]!.map((rs) => rs[i]!.fwd_ms)), bwd = med(got[side]!.map((rs) => rs[i]!.bwd_ms));
    meds[side] = { fwd, bwd };
    const gf = (flop: number, ms: number): string => { const g = flop / ms / 1e6; return `${g.toFixed(0)}, ${Number.isFinite(peak) ? (g / peak).toFixed(2) : '—'}`; };
    cells.push(`${fwd.toFixed(2)} (${gf(4 * E * H * pairs, fwd)}) / ${bwd.toFixed(2)} (${gf(10 * E * H * pairs, bwd)})`);
  }
  const ratio = ab ? meds[ab]!.bwd / meds.base!.bwd : NaN;
  console.log(`${shape.padEnd(6)}${String(T).padStart(6)}  ${cells.join('  |  ')}${ab ? `  |  ${ratio.toFixed(3)}` : ''}`);
  summary.push({ shape, T, ...Object.fromEntries(sides.map((s) => [s, meds[s]])), ...(ab ? { bwd_ratio_ab_over_base: ratio } : {}) });
}
if (out) {
  fs.writeFileSync(out, JSON.stringify({ machine: m, threads, samples, reps, ab: ab || null, f32_fma_peak_gflops: peak, rows: summary, raw: got }, null, 2));
  console.log(`wrote ${out}`);
}
