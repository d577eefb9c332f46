// LoRA on floe-brown (f32 as stored) against the same run on a base converted at load (`floe finetune --dtype bf16|fp8`):
// the README's LoRA demo arguments (nlp-corpus register, rank 16, seven targets, 4,096-token batches), cut to --steps,
// each run a fresh `floe finetune` process, the dtypes alternating round by round. Reports the step rate, the final
// train loss, the held-out loss of the adapter on the base it was trained on and on the f32 base (`floe eval
// --adapter`), so that speed and what the adapter learned are read together.
//
// usage: node --import tsx bench/finetune-dtype.ts [--steps 20] [--rounds 3] [--dtypes none,bf16,fp8] [--out FILE.json]

import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { prepareCorpora } from '../src/train/corpus.js';
import { machineInfo, machineLine } from './machine.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.join(HERE, '..');
const CACHE = path.join(HERE, '.cache');
const BIN = path.join(ROOT, 'bin', 'floe.js');
const MODEL = path.join(ROOT, 'models', 'floe-brown');

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1]! : def;
}

function floe(args: string[]): Record<string, unknown> {
  const p = spawnSync(process.execPath, [BIN, ...args, '--json'], { encoding: 'utf8', maxBuffer: 64 << 20 });
  if (p.status !== 0) throw new Error(`floe ${args.join(' ')} failed (${p.status}): ${p.stdout}\n${p.stderr}`);
  return JSON.parse(p.stdout.trim().split('\n').at(-1)!) as Record<string, unknown>;
}

async function main(): Promise<void> {
  const steps = arg('--steps', '20'), rounds = Number(arg('--rounds', '3'));
  const dtypes = arg('--dtypes', 'none,bf16,fp8').split(',');
  const out = arg('--out', '');
  const data = path.join(CACHE, 'corpora');
  if (!fs.existsSync(path.join(data, 'nlp-corpus', 'train.jsonl'))) await prepareCorpora(data);
  const train = path.join(data, 'nlp-corpus', 'train.jsonl');
  const held = path.join(data, 'nlp-corpus', 'heldout-200.jsonl');
  if (!fs.existsSync(held)) fs.writeFileSync(held, fs.readFileSync(path.join(data, 'nlp-corpus', 'heldout.jsonl'), 'utf8').split('\n').filter((l) => l.trim()).slice(0, 200).join('\n') + '\n');
  const mi = machineInfo();
  console.log(machineLine(mi));
  console.log(`floe finetune on models/floe-brown (f32), the LoRA demo's arguments for ${steps} steps, 2 threads, ${rounds} rounds, dtypes alternating`);
  const lora = ['--lora-rank', '16', '--lora-alpha', '32', '--max-steps', steps, '--lr', '2e-3', '--warmup-steps', '5', '--lr-schedule', 'cosine',
    '--batch-tokens', '4096', '--max-seq-len', '256', '--save-steps', steps, '--seed', '0', '--backend', 'native', '--threads', '2'];
  const base = floe(['eval', '--model', MODEL, '--data', held, '--threads', '2']);
  console.log(`held-out (200 nlp-corpus records, ${String(base.tokens)} tokens) loss of floe-brown without an adapter: ${(base.loss as number).toFixed(4)}`);
  const rows: Record<string, unknown>[] = [];
  const work = fs.mkdtempSync(path.join(CACHE, 'ft-dtype-'));
  try {
    for (let r = 1; r <= rounds; r++) {
      for (const d of dtypes) {
        const dir = path.join(work, `${d}-${r}`);
        const flag = d === 'none' ? [] : ['--dtype', d];
        const s = floe(['finetune', '--model', MODEL, '--data', train, '--out', dir, ...lora, ...flag]);
        const adapter = path.join(dir, 'final');
        const onOwn = d === 'none' ? null : floe(['eval', '--model', MODEL, '--adapter', adapter, '--data', held, '--threads', '2', ...flag]);
        const onF32 = floe(['eval', '--model', MODEL, '--adapter', adapter, '--data', held, '--threads', '2']);
        const row = { round: r, dtype: d, tokens_per_s: s.tokensPerSecond, seconds: s.seconds, final_loss: s.finalLoss, base: s.base,
          held_out_on_own_base: (onOwn ?? onF32).loss, held_out_on_f32_base: onF32.loss, peak_rss: s.peakRssBytes };
        rows.push(row);
        console.log(`round ${r} ${d.padEnd(5)} ${(s.tokensPerSecond as number).toFixed(0).padStart(6)} tok/s  train loss ${(s.finalLoss as number).toFixed(4)}  held-out on its base ${(row.held_out_on_own_base as number).toFixed(4)}, on f32 ${(onF32.loss as number).toFixed(4)}  peak RSS ${((s.peakRssBytes as number) / 2 ** 20).toFixed(0)} MiB`);
      }
    }
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
  console.log('\ndtype  tok/s (median)  × f32  train loss  held-out on its base  on the f32 base');
  const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  const f32 = med(rows.filter((x) => x.dtype === 'none').map((x) => x.tokens_per_s as number));
  for (const d of dtypes) {
    const xs = rows.filter((x) => x.dtype === d);
    const tps = med(xs.map((x) => x.tokens_per_s as number));
    console.log(`${(d === 'none' ? 'f32' : d).padEnd(6)} ${tps.toFixed(0).padStart(14)}  ${(tps / f32).toFixed(2).padStart(5)}  ${(xs[0]!.final_loss as number).toFixed(4).padStart(10)}  ${(xs[0]!.held_out_on_own_base as number).toFixed(4).padStart(20)}  ${(xs[0]!.held_out_on_f32_base as number).toFixed(4).padStart(15)}`);
  }
  if (out) fs.writeFileSync(out, JSON.stringify({ machine: mi, steps: Number(steps), rounds, base_held_out: base, rows }, null, 2) + '\n');
}

main().catch((e: unknown) => { console.error(e); process.exit(1); });
