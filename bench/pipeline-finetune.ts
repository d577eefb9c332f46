// Pipeline-parallel LoRA fine-tuning on one host: 2 MPI ranks pinned to one core each (1F1B, M micro-batches) vs one
// process with 2 threads and --grad-accum M (the same steps): training tokens/s, their ratio, and the 1F1B ceiling
// M / (M + P - 1) (the bubble); the two runs' losses must agree (checked).
//
//   node --import tsx bench/pipeline-finetune.ts [--model DIR|FILE.gguf | --shape 1b] [--steps 6] [--micro-batches 8] [--batch-size 2] [--seq-len 128]
// --shape 1b: the Llama-3.2-1B bench shape as q8_0 GGUF (bench/.cache), frozen; its defaults are smaller (2 steps ×
// 8 micro-batches × 1 sample of 64 words: with its 128K-vocabulary head one process trained ~14 tok/s on 2 loaded cores).
// Needs Open MPI (mpirun), the floe_mpi addon and a built floe (npm run build). Run alone: timings on a shared
// machine mean little.

import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { machineLine } from './machine.js';
import { benchModel } from './pipeline-model.js';

const ROOT = join(import.meta.dirname, '..');
const BIN = join(ROOT, 'bin', 'floe.js');
const MPI_ENV = { ...process.env, OMPI_ALLOW_RUN_AS_ROOT: '1', OMPI_ALLOW_RUN_AS_ROOT_CONFIRM: '1' };

const { values } = parseArgs({
  options: {
    model: { type: 'string' }, shape: { type: 'string' }, steps: { type: 'string' },
    'micro-batches': { type: 'string', default: '8' }, 'batch-size': { type: 'string' }, 'seq-len': { type: 'string' },
  },
});
const INFO = await benchModel('bench/pipeline-finetune.ts', values.model, values.shape);
const short = values.shape === '1b';
values.steps ??= short ? '2' : '6';
values['batch-size'] ??= short ? '1' : '2';
values['seq-len'] ??= short ? '64' : '128';
const M = Number(values['micro-batches']);
const P = 2;

// text samples of about seq-len tokens (words of a few tokens each), fixed so both runs see the same data
const dir = mkdtempSync(join(tmpdir(), 'floe-bench-ppft-'));
const data = join(dir, 'train.jsonl');
const words = ['the', 'jury', 'said', 'county', 'election', 'city', 'court', 'mayor', 'of', 'in', 'was', 'and', 'new', 'state', 'report', 'that'];
let x = 12345;
const rnd = () => ((x = (Math.imul(x, 1103515245) + 12345) >>> 0) / 2 ** 32);
writeFileSync(data, Array.from({ length: 256 }, () => JSON.stringify({ text: Array.from({ length: Number(values['seq-len']) }, () => words[Math.floor(rnd() * words.length)]).join(' ') })).join('\n') + '\n');

const common = ['finetune', '--model', INFO.path, '--data', data, '--max-steps', values.steps!, '--batch-size', values['batch-size']!,
  '--max-seq-len', values['seq-len']!, '--lora-rank', '8', '--quiet', '--json', '--overwrite', '--no-shuffle'];

interface Summary { tokensPerSecond: number; finalLoss: number; tokens: number; seconds: number }
function run(pipeline: boolean): { s: Summary; losses: number[] } {
  const out = join(dir, pipeline ? 'pp' : 'single');
  const r = pipeline
    ? spawnSync('mpirun', ['-np', String(P), '--bind-to', 'core', '--map-by', 'core', process.execPath, BIN, ...common, '--out', out, '--threads', '1',
      '--pipeline-parallel-size', String(P), '--micro-batches', String(M)], { encoding: 'utf8', env: MPI_ENV, timeout: 3_600_000 })
    : spawnSync('taskset', ['-c', '0,1', process.execPath, BIN, ...common, '--out', out, '--threads', '2', '--grad-accum', String(M)], { encoding: 'utf8', timeout: 3_600_000 });
  if (r.status !== 0) throw new Error(`${pipeline ? 'pipeline' : 'single'} run failed:\n${r.stdout}${r.stderr}`);
  const losses = readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => (JSON.parse(l) as { loss: number }).loss);
  return { s: JSON.parse(r.stdout.trim().split('\n').pop()!) as Summary, losses };
}

const cfg = INFO.config;
process.stdout.write(`${machineLine()}\nmodel ${INFO.path} (${INFO.weights}, ${cfg.numLayers} layers, D ${cfg.hiddenSize}, V ${cfg.vocabSize}), LoRA r 8 on all linears, ` +
  `${values.steps} steps × ${M} micro-batches × ${values['batch-size']} samples of ${values['seq-len']} words\n\n`);
const single = run(false);
const pp = run(true);
const worst = Math.max(...single.losses.map((l, i) => Math.abs(l - pp.losses[i]!) / Math.abs(l)));
process.stdout.write(`1 process, 2 threads (--grad-accum ${M}):  ${single.s.tokensPerSecond.toFixed(1)} tok/s (${single.s.seconds.toFixed(1)} s)\n`);
process.stdout.write(`2 ranks × 1 core (1F1B, M ${M}):        ${pp.s.tokensPerSecond.toFixed(1)} tok/s (${pp.s.seconds.toFixed(1)} s)\n`);
process.stdout.write(`ratio 2 ranks / 1 process:             ${(pp.s.tokensPerSecond / single.s.tokensPerSecond).toFixed(2)}  ` +
  `(1F1B ceiling M/(M+P-1) = ${(M / (M + P - 1)).toFixed(2)} of perfect 2-core scaling)\n`);
process.stdout.write(`losses agree: worst relative difference ${worst.toExponential(2)} over ${single.losses.length} steps\n`);
if (!(worst <= 1e-5)) process.exitCode = 1;
