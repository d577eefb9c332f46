// The LoRA training step with and without the native fused LoRA kernels and AdamW (what FLOE_TRAIN_FUSED=0 turns off),
// in one process on one loaded base, step by step alternating, so both see the same host phase (this host's memory
// speed drifts by up to 2× within minutes, more than the difference measured). Both adapters start equal and take
// the same batch, so their losses must agree (checked, relative 1e-4, every step).
//
// usage: node --import tsx bench/train-ab.ts [--shape 1b] [--threads 2] [--seq 512] [--rank 16] [--steps 6] [--out FILE]
// Prints CPU model / ISA flags, each path's median step and tok/s, the ratio, and per-op ms a step (median) of both.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TrainBackend } from '../src/backend/backend.js';
import { loadNativeBackend } from '../src/backend/native.js';
import { selectBackend } from '../src/backend/select.js';
import { loadModel } from '../src/formats/load.js';
import { LlamaTrainModel, type PackedBatch } from '../src/model/llama-train.js';
import { initLora, LORA_TARGETS } from '../src/model/lora.js';
import { DEFAULT_OPTIMIZER, Optimizer } from '../src/train/optimizer.js';
import { Rng } from '../src/train/rng.js';
import { ensureGguf } from './gguf-gen.js';
import { machineInfo, machineLine } from './machine.js';
import { SHAPES } from './shapes.js';

const argv = process.argv.slice(2);
const opt = (name: string, def: string): string => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 ? argv[i + 1]! : def;
};
const shape = opt('shape', '1b'), threads = Number(opt('threads', '2')), T = Number(opt('seq', '512'));
const rank = Number(opt('rank', '16')), steps = Number(opt('steps', '6')), out = opt('out', '');
const BENCH = path.dirname(fileURLToPath(import.meta.url));

selectBackend('native', threads);
const fused = loadNativeBackend();
if (!fused?.loraForward || !fused.loraBackward || !fused.adamwUpdate) throw new Error('the native backend has no fused LoRA kernels: build the addon (npx node-gyp build), and leave FLOE_TRAIN_FUSED unset');
const { loraForward: _f, loraBackward: _b, adamwUpdate: _u, ...plainRest } = fused;
const plain: TrainBackend = plainRest;

const cfg = SHAPES[shape]?.config;
if (!cfg) throw new Error(`--shape ${shape}: one of ${Object.keys(SHAPES).join(', ')}`);
console.log(`machine: ${machineLine()}`);
const gguf = ensureGguf(path.join(BENCH, '.cache'), shape, cfg, 'bf16', (s: string) => console.log(s));
const loaded = await loadModel(gguf);
const rng = new Rng(5);
const ids = Int32Array.from({ length: T + 1 }, () => Math.floor(rng.next() * loaded.config.vocabSize));
const batch: PackedBatch = { tokens: ids.slice(0, T), targets: ids.slice(1), positions: Int32Array.from({ length: T }, (_, i) => i), segStart: Int32Array.of(0, T) };

/** Per-op wall ms of one backend's calls (matmuls by weight dtype), while `on`. */
function timed(be: TrainBackend, ms: Map<string, number>): TrainBackend {
  const o = Object.create(be) as TrainBackend;
  for (const key of Object.keys(be) as (keyof TrainBackend)[]) {
    const fn = be[key];
    if (typeof fn !== 'function') continue;
    (o as unknown as Record<string, unknown>)[key] = (...args: unknown[]): unknown => {
      const w = args[2] as { dtype?: string } | undefined;
      const tag = key === 'matmul' || key === 'matmulBackwardInput' ? `${key}.${w?.dtype ?? '?'}` : key;
      const t0 = performance.now();
      const r = (fn as (...x: unknown[]) => unknown).apply(be, args);
      ms.set(tag, (ms.get(tag) ?? 0) + performance.now() - t0);
      return r;
    };
  }
  return o;
}

interface Arm { name: string; model: LlamaTrainModel; opt: Optimizer; ms: Map<string, number>; stepMs: number[]; perOp: Map<string, number[]>; losses: number[] }
const arms: Arm[] = [['fused', fused], ['composite', plain]].map(([name, be]) => {
  const ms = new Map<string, number>();
  const r = new Rng(1);
  const adapter = initLora(loaded.config, { rank, alpha: 2 * rank, targets: LORA_TARGETS, rslora: false, dropout: 0 }, () => r.next());
  // B = 0 at init would leave dA at 0: give B the same small values in both arms so every product does real work
  for (const layer of adapter.layers) for (const lin of Object.values(layer)) lin!.b.forEach((_, i, b) => { b[i] = Math.sin(i) * 1e-3; });
  const tb = timed(be as TrainBackend, ms);
  const model = LlamaTrainModel.fromTensors(loaded.config, loaded.tensors, tb, { adapter, full: false, checkpointActivations: false }, loaded.ropeFreqFactors);
  return { name: name as string, model, opt: new Optimizer(model.params, DEFAULT_OPTIMIZER, tb), ms, stepMs: [], perOp: new Map(), losses: [] };
});

const step = (a: Arm): void => {
  a.ms.clear();
  const t0 = performance.now();
  a.model.zeroGrad();
  const r = a.model.forwardBackward(batch, 1 / T);
  a.opt.update(1e-4);
  const ms = performance.now() - t0;
  a.stepMs.push(ms);
  a.losses.push(r.lossSum / r.counted);
  const inOps = [...a.ms.values()].reduce((s, v) => s + v, 0);
  a.ms.set('(outside backend)', ms - inOps);
  for (const [k, v] of a.ms) a.perOp.set(k, [...(a.perOp.get(k) ?? []), v]);
};

console.log(`${shape} bf16, T ${T}, rank ${rank} on all seven projections, ${threads} threads; warm-up step each, then ${steps} steps each, alternating`);
for (const a of arms) step(a); // warm-up
for (const a of arms) { a.stepMs.length = 0; a.perOp.clear(); }
for (let s = 0; s < steps; s++) {
  for (const a of s % 2 === 0 ? arms : [...arms].reverse()) step(a);
  const [l0, l1] = [arms[0]!.losses.at(-1)!, arms[1]!.losses.at(-1)!];
  if (Math.abs(l0 - l1) > 1e-4 * Math.abs(l1)) throw new Error(`step ${s}: losses differ, fused ${l0} vs composite ${l1}`);
  console.log(`step ${s}: fused ${arms[0]!.stepMs.at(-1)!.toFixed(0)} ms, composite ${arms[1]!.stepMs.at(-1)!.toFixed(0)} ms, loss ${l0.toFixed(5)} / ${l1.toFixed(5)}`);
}
const med = (v: number[]): number => [...v].sort((p, q) => p - q)[Math.floor((v.length - 1) / 2)]!;
const [f, c] = [med(arms[0]!.stepMs), med(arms[1]!.stepMs)];
console.log(`\nmedian step: fused ${f.toFixed(0)} ms (${(T / (f / 1000)).toFixed(1)} tok/s), composite ${c.toFixed(0)} ms (${(T / (c / 1000)).toFixed(1)} tok/s): ${(c / f).toFixed(3)}×`);
const keys = [...new Set(arms.flatMap((a) => [...a.perOp.keys()]))].sort((p, q) => med(arms[1]!.perOp.get(q) ?? [0]) + med(arms[0]!.perOp.get(q) ?? [0]) - med(arms[1]!.perOp.get(p) ?? [0]) - med(arms[0]!.perOp.get(p) ?? [0]));
console.log('\nop (ms a step, median)                 fused   composite');
for (const k of keys) console.log(`${k.padEnd(38)} ${med(arms[0]!.perOp.get(k) ?? [0]).toFixed(1).padStart(7)}  ${med(arms[1]!.perOp.get(k) ?? [0]).toFixed(1).padStart(9)}`);
if (out) {
  fs.writeFileSync(out, JSON.stringify({
    bench: 'train-ab', date: new Date().toISOString(), command: `node --import tsx bench/train-ab.ts ${argv.join(' ')}`, machine: machineInfo(),
    shape, T, rank, threads,
    arms: arms.map((a) => ({ name: a.name, step_ms: a.stepMs, median_step_ms: med(a.stepMs), tokens_per_s: T / (med(a.stepMs) / 1000), losses: a.losses,
      per_op_ms: Object.fromEntries([...a.perOp].map(([k, v]) => [k, med(v)])) })),
  }, null, 1) + '\n');
  console.log(`wrote ${out}`);
}
