// Forward-step A/B inside one process: the same model (one set of weights) behind two backends, the full native one
// and one without some of its optional methods (--drop: matmulMany, addRmsnorm, ropeKvWrite, ...), timed in short
// alternating blocks so that a host whose speed drifts (a shared VM) hits both sides alike; the ratio of the medians
// of the blocks is what changed. Each step is a forward of R new positions after a --ctx-token context, every row's
// logits (a decode step at R = 1, a speculative verify step at R = k + 1).
//
//   node --import tsx bench/step-ab.ts [--model DIR] [--drop matmulMany,addRmsnorm,ropeKvWrite] [--rows 1,8]
//                                      [--threads 2] [--blocks 40] [--steps 25] [--ctx 200] [--out FILE]
// "old" is the backend without the dropped methods, "new" the full one. Writes bench/results/step-ab-<model>.json
// (or --out).

import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Backend } from '../src/backend/backend.js';
import { nativeCounters } from '../src/backend/native.js';
import { LlamaModel } from '../src/model/llama.js';
import { openModel } from '../src/model/open.js';
import { machineInfo, machineLine } from './machine.js';
import { oneSequence } from './one-sequence.js';

const ROOT = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const arg = (name: string, dflt: string): string => { const i = process.argv.indexOf(`--${name}`); return i >= 0 ? process.argv[i + 1]! : dflt; };
const dir = arg('model', path.join(ROOT, 'models', 'floe-brown'));
const drop = arg('drop', 'matmulMany,addRmsnorm,ropeKvWrite').split(',');
const rowsList = arg('rows', '1,8').split(',').map(Number);
const threads = Number(arg('threads', '2')), blocks = Number(arg('blocks', '40')), steps = Number(arg('steps', '25'));
const ctx = Number(arg('ctx', '200'));

console.log(`machine: ${machineLine(machineInfo())}`);
const opened = await openModel(dir, { backend: 'native', threads });
const full = opened.model.backend;
for (const m of drop) if (typeof (full as unknown as Record<string, unknown>)[m] !== 'function') throw new Error(`step-ab: the native backend has no method ${m} to drop`);
const plain = Object.fromEntries(Object.entries(full).filter(([k]) => !drop.includes(k))) as unknown as Backend;
const cfg = opened.loaded.config;
const make = (be: Backend): LlamaModel => LlamaModel.fromTensors(cfg, opened.loaded.tensors, be, opened.loaded.ropeFreqFactors);
const sides = { old: make(plain), new: make(full) };
const V = cfg.vocabSize;
const { forward } = oneSequence(sides.new, ctx + Math.max(...rowsList), Math.max(...rowsList, ctx));
forward(sides.new, Int32Array.from({ length: ctx }, (_, i) => (i * 31 + 7) % V), 0); // the context, once

// both sides give the same logits (the fused calls are exact): checked once per row count before timing
for (const R of rowsList) {
  const tokens = Int32Array.from({ length: R }, (_, j) => (j * 13 + 5) % V);
  const a = forward(sides.old, tokens, ctx).slice(0, R * V), b = forward(sides.new, tokens, ctx).slice(0, R * V);
  if (!a.every((x, i) => Object.is(x, b[i]))) throw new Error(`step-ab: the two backends' logits differ at R=${R}`);
}

const median = (xs: number[]): number => { const s = [...xs].sort((x, y) => x - y); return s[Math.floor((s.length - 1) / 2)]!; };
const results: { rows: number; old_us: number; new_us: number; ratio: number; old_blocks: number[]; new_blocks: number[] }[] = [];
for (const R of rowsList) {
  const tokens = new Int32Array(R);
  const times: Record<'old' | 'new', number[]> = { old: [], new: [] };
  for (let b = 0; b < blocks + 2; b++) {
    for (const side of (b % 2 === 0 ? ['old', 'new'] : ['new', 'old']) as ('old' | 'new')[]) {
      const t0 = process.hrtime.bigint();
      for (let i = 0; i < steps; i++) {
        for (let j = 0; j < R; j++) tokens[j] = (i * 7 + j * 13) % V;
        forward(sides[side], tokens, ctx); // the same positions every step: each forward rewrites their KV
      }
      if (b >= 2) times[side].push(Number(process.hrtime.bigint() - t0) / 1e3 / steps); // two blocks a side to warm up
    }
  }
  const [o, n] = [median(times.old), median(times.new)];
  results.push({ rows: R, old_us: o, new_us: n, ratio: o / n, old_blocks: times.old, new_blocks: times.new });
}
if (!Object.values(nativeCounters()).some((v) => v > 0)) throw new Error('step-ab: no native kernel counter moved');

const name = path.basename(dir);
console.log(`${name}: forward of R new positions after ${ctx} tokens, ${threads} threads, ${blocks} blocks of ${steps} steps a side, alternating;`);
console.log(`old = without ${drop.join(', ')}; new = the full native backend; speedup = old / new step time (medians of the blocks)`);
for (const r of results) console.log(`rows ${String(r.rows).padStart(2)}: old ${r.old_us.toFixed(0)} us  new ${r.new_us.toFixed(0)} us  speedup ${r.ratio.toFixed(3)}`);
const out = path.resolve(arg('out', path.join(ROOT, 'bench', 'results', `step-ab-${name}.json`)));
fs.writeFileSync(out, `${JSON.stringify({ machine: machineInfo(), model: name, drop, threads, ctx, blocks, steps, rows: results }, null, 1)}\n`);
console.log(`wrote ${path.relative(ROOT, out)}`);
opened.loaded.dispose();
