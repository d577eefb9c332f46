// What a speculative verify forward costs against a one-token decode step, op by op, on a real model directory
// (default: the built-in floe-brown): forwards of R = 1..8 new positions of one sequence after a context of --ctx
// tokens, every row's logits (as a verify needs), each backend call timed (wall). Rounds alternate the row counts
// (all of them, --rounds times) and the last round's figures are printed, so the first rounds warm caches and clocks.
//
//   node --import tsx bench/verify-ops.ts [--model DIR] [--threads 2] [--rows 1,2,3,4,5,6,8] [--steps 400] [--ctx 200] [--rounds 2]
//                                         [--dtype fp8|bf16] [--out FILE]
// --dtype loads the weights converted, as `floe generate --dtype`. Writes bench/results/verify-ops-<model>-<threads>t.json
// (or --out).

import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { nativeCounters } from '../src/backend/native.js';
import { LlamaModel } from '../src/model/llama.js';
import { openModel } from '../src/model/open.js';
import { machineInfo, machineLine } from './machine.js';
import { oneSequence } from './one-sequence.js';
import { matmulWeights, timedBackend } from './timed-backend.js';

const ROOT = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const arg = (name: string, dflt: string): string => { const i = process.argv.indexOf(`--${name}`); return i >= 0 ? process.argv[i + 1]! : dflt; };
const dir = arg('model', path.join(ROOT, 'models', 'floe-brown'));
const threads = Number(arg('threads', '2'));
const rowsList = arg('rows', '1,2,3,4,5,6,8').split(',').map(Number);
const steps = Number(arg('steps', '400'));
const ctx = Number(arg('ctx', '200'));
const rounds = Number(arg('rounds', '2'));
const dtype = arg('dtype', '');
if (dtype !== '' && dtype !== 'fp8' && dtype !== 'bf16') throw new Error(`--dtype expects fp8 or bf16, got '${dtype}'`);

console.log(`machine: ${machineLine(machineInfo())}`);
const opened = await openModel(dir, { backend: 'native', threads, ...(dtype ? { load: { dtype } } : {}) });
const inner = opened.model.backend;
const stats = new Map<string, { calls: number; ns: bigint }>();
let timing = false;
/** The backend with every call timed into `stats` while `timing` is set (matmuls keyed by weight shape). */
const timed = timedBackend(inner, () => timing, (method, a, ns) => {
  const ws = matmulWeights(method, a);
  const key = ws ? `matmul ${ws.map((w) => `${w.rows}x${w.cols}`).join('+')} ${ws[0]!.dtype}` : method;
  const st = stats.get(key) ?? { calls: 0, ns: 0n };
  st.calls++;
  st.ns += ns;
  stats.set(key, st);
}, { cpu: false });  // wall time only: the CPU reading would add several µs a call to the step it measures
const cfg = opened.loaded.config;
const model = LlamaModel.fromTensors(cfg, opened.loaded.tensors, timed, opened.loaded.ropeFreqFactors);
const seq = oneSequence(model, ctx + Math.max(...rowsList), Math.max(...rowsList, ctx));
const forward = (tokens: Int32Array, start: number): Float32Array => seq.forward(model, tokens, start);
const V = cfg.vocabSize;
forward(Int32Array.from({ length: ctx }, (_, i) => (i * 31 + 7) % V), 0); // the context, once
const counters0 = nativeCounters();

interface Row { rows: number; step_us: number; backend_us: number; js_us: number; ratio: number; ops: { op: string; calls: number; us: number }[] }
let result: Row[] = [];
for (let round = 0; round < rounds; round++) {
  result = [];
  for (const R of rowsList) {
    stats.clear();
    const tokens = new Int32Array(R);
    timing = true;
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < steps; i++) {
      for (let j = 0; j < R; j++) tokens[j] = (i * 7 + j * 13) % V;
      forward(tokens, ctx); // the same positions every step: each forward rewrites their KV
    }
    const stepUs = Number(process.hrtime.bigint() - t0) / 1e3 / steps;
    timing = false;
    const ops = [...stats].sort((a, b) => Number(b[1].ns - a[1].ns)).map(([op, s]) => ({ op, calls: s.calls / steps, us: Number(s.ns) / 1e3 / steps }));
    const backendUs = ops.reduce((a, o) => a + o.us, 0);
    result.push({ rows: R, step_us: stepUs, backend_us: backendUs, js_us: stepUs - backendUs, ratio: 0, ops });
  }
}
if (!Object.entries(nativeCounters()).some(([k, v]) => v !== (counters0[k] ?? 0))) throw new Error('no native kernel counter moved: the native backend did not run');
const one = result.find((r) => r.rows === 1)?.step_us ?? result[0]!.step_us;
for (const r of result) r.ratio = r.step_us / one;

const name = path.basename(dir);
console.log(`${name}${dtype ? ` (--dtype ${dtype})` : ''}: forward of R new positions after ${ctx} tokens, all rows' logits, ${threads} threads, ${steps} steps, round ${rounds} of ${rounds}`);
console.log(`${'rows'.padStart(5)}${'step us'.padStart(10)}${'÷ 1 row'.padStart(9)}${'backend'.padStart(9)}${'js'.padStart(7)}   top ops (us)`);
for (const r of result) {
  const top = r.ops.slice(0, 4).map((o) => `${o.op} ${o.us.toFixed(0)}`).join(', ');
  console.log(`${String(r.rows).padStart(5)}${r.step_us.toFixed(0).padStart(10)}${r.ratio.toFixed(2).padStart(9)}${r.backend_us.toFixed(0).padStart(9)}${r.js_us.toFixed(0).padStart(7)}   ${top}`);
}
const out = path.resolve(arg('out', path.join(ROOT, 'bench', 'results', `verify-ops-${name}${dtype ? `-${dtype}` : ''}-${threads}t.json`)));
fs.writeFileSync(out, JSON.stringify({ machine: machineInfo(), model: name, dtype: dtype || null, threads, ctx, steps, rounds, rows: result }, null, 1));
console.log(`wrote ${path.relative(ROOT, out)}`);
opened.loaded.dispose();
