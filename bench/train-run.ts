// Child process: floe LoRA training step timings and peak RSS for one config, one JSON line on stdout.
//
// usage: node --import tsx bench/train-run.ts <model.gguf | HF dir> <tokens-file> --threads N --seq T --rank r
//          --warmup W --steps S [--ckpt] [--fp8-block 128] [--lr 1e-4] [--full] [--sample-len L]
// One step = zeroGrad + forwardBackward over one sample of T tokens (loss on every row) + AdamW on the LoRA params.
// --fp8-block B quantizes the model's seven linears to fp8 with (B, B) scale blocks while loading (bf16 source).

import * as fs from 'node:fs';
import type { TrainBackend } from '../src/backend/backend.js';
import { loadNativeBackend, nativeCounters } from '../src/backend/native.js';
import { selectBackend } from '../src/backend/select.js';
import { loadModel } from '../src/formats/load.js';
import { LlamaTrainModel, type PackedBatch } from '../src/model/llama-train.js';
import { initLora, LORA_TARGETS } from '../src/model/lora.js';
import type { Tensor } from '../src/tensor/tensor.js';
import { DEFAULT_OPTIMIZER, Optimizer } from '../src/train/optimizer.js';
import { Rng } from '../src/train/rng.js';

interface Args {
  model: string;
  tokens: string;
  threads: number;
  seq: number;
  rank: number;
  warmup: number;
  steps: number;
  ckpt: boolean;
  fp8Block: number | null;
  lr: number;
  full: boolean;
  sampleLen: number;
}

function parse(argv: readonly string[]): Args {
  const pos: string[] = [];
  const a: Args = { model: '', tokens: '', threads: 1, seq: 512, rank: 16, warmup: 1, steps: 3, ckpt: false, fp8Block: null, lr: 1e-4, full: false, sampleLen: 0 };
  const num = (v: string | undefined, flag: string): number => {
    const n = Number(v);
    if (!Number.isFinite(n) || n <= 0) throw new Error(`${flag} needs a positive number, got ${v}`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const f = argv[i]!;
    const v = argv[i + 1];
    switch (f) {
      case '--threads': a.threads = num(v, f); i++; break;
      case '--seq': a.seq = num(v, f); i++; break;
      case '--rank': a.rank = num(v, f); i++; break;
      case '--warmup': a.warmup = Number(v); i++; break;
      case '--steps': a.steps = num(v, f); i++; break;
      case '--ckpt': a.ckpt = true; break;
      case '--full': a.full = true; break;
      case '--sample-len': a.sampleLen = num(v, f); i++; break;
      case '--fp8-block': a.fp8Block = num(v, f); i++; break;
      case '--lr': a.lr = num(v, f); i++; break;
      default:
        if (f.startsWith('--')) throw new Error(`unknown flag ${f}; see the usage line of bench/train-run.ts`);
        pos.push(f);
    }
  }
  if (pos.length !== 2) throw new Error('usage: train-run.ts <model.gguf | HF dir> <tokens-file> [flags]');
  [a.model, a.tokens] = pos as [string, string];
  return a;
}

/** Times every backend call by op (matmuls also by weight dtype); wall time outside them is the JS share. */
function profiled(be: TrainBackend, ms: Map<string, number>, calls: Map<string, number>): TrainBackend {
  const out = Object.create(be) as TrainBackend;
  for (const key of Object.keys(be) as (keyof TrainBackend)[]) {
    const fn = be[key];
    if (typeof fn !== 'function') continue;
    (out as unknown as Record<string, unknown>)[key] = (...args: unknown[]): unknown => {
      const w = args[2] as Tensor | undefined;
      const tag = key === 'matmul' || key === 'matmulBackwardInput' ? `${key}.${w?.dtype ?? '?'}` : key;
      const t0 = performance.now();
      const r = (fn as (...x: unknown[]) => unknown).apply(be, args);
      ms.set(tag, (ms.get(tag) ?? 0) + performance.now() - t0);
      calls.set(tag, (calls.get(tag) ?? 0) + 1);
      return r;
    };
  }
  return out;
}

/** Bytes held by the frozen model's tensors (data + scales), each distinct storage counted once. */
function weightBytes(tensors: ReadonlyMap<string, Tensor>): { total: number; byDtype: Record<string, number> } {
  const seen = new Set<Uint8Array>();
  const byDtype: Record<string, number> = {};
  let total = 0;
  for (const t of tensors.values()) {
    if (seen.has(t.data)) continue;
    seen.add(t.data);
    const b = t.data.byteLength + (t.scale?.byteLength ?? 0);
    byDtype[t.dtype] = (byDtype[t.dtype] ?? 0) + b;
    total += b;
  }
  return { total, byDtype };
}

async function main(): Promise<void> {
  const a = parse(process.argv.slice(2));
  const t0 = performance.now();
  selectBackend('native', a.threads); // sets the pool size
  const native = loadNativeBackend();
  if (!native) throw new Error('the native backend is not built: run `npm install`');
  const ids = fs.readFileSync(a.tokens, 'utf8').trim().split(/\s+/).map(Number);
  if (ids.length < a.seq + 1) throw new Error(`${a.tokens} has ${ids.length} ids, need seq + 1 = ${a.seq + 1}`);

  const loaded = await loadModel(a.model, a.fp8Block ? { dtype: 'fp8', fp8Block: [a.fp8Block, a.fp8Block] } : {});
  const cfg = loaded.config;
  const wb = weightBytes(loaded.tensors);
  const opMs = new Map<string, number>();
  const opCalls = new Map<string, number>();
  const backend = profiled(native, opMs, opCalls);
  const adapter = initLora(cfg, { rank: a.rank, alpha: 2 * a.rank, targets: LORA_TARGETS, rslora: false, dropout: 0 }, (() => {
    const r = new Rng(1);
    return () => r.next();
  })());
  const model = LlamaTrainModel.fromTensors(cfg, loaded.tensors, backend, { adapter: a.full ? null : adapter, full: a.full, checkpointActivations: a.ckpt }, loaded.ropeFreqFactors);
  const opt = new Optimizer(model.params, DEFAULT_OPTIMIZER, model.backend);
  const loraParams = model.params.reduce((s, p) => s + p.value.length, 0);
  const loadMs = performance.now() - t0;

  const T = a.seq;
  const batch: PackedBatch = {
    tokens: Int32Array.from(ids.slice(0, T)),
    targets: Int32Array.from(ids.slice(1, T + 1)),
    // --sample-len L: the T rows are packed samples of L tokens (attention stays inside each), as the trainer packs
    positions: Int32Array.from({ length: T }, (_, i) => (a.sampleLen ? i % a.sampleLen : i)),
    segStart: a.sampleLen ? Int32Array.from({ length: Math.ceil(T / a.sampleLen) + 1 }, (_, i) => Math.min(T, i * a.sampleLen)) : Int32Array.of(0, T),
  };
  const step = (): { ms: number; loss: number } => {
    const s0 = performance.now();
    model.zeroGrad();
    const r = model.forwardBackward(batch, 1 / T);
    opt.update(a.lr);
    return { ms: performance.now() - s0, loss: r.lossSum / r.counted };
  };

  const warm: number[] = [];
  let firstLoss: number | null = null;
  for (let i = 0; i < a.warmup; i++) {
    const r = step();
    warm.push(r.ms);
    firstLoss ??= r.loss;
  }
  const rssAfterWarmup = process.memoryUsage().rss;
  opMs.clear();
  opCalls.clear();
  const c0 = nativeCounters();
  const ms: number[] = [];
  const losses: number[] = [];
  const cpu0 = process.cpuUsage();
  for (let i = 0; i < a.steps; i++) {
    const r = step();
    ms.push(r.ms);
    losses.push(r.loss);
    firstLoss ??= r.loss;
  }
  const cpu = process.cpuUsage(cpu0);
  const c1 = nativeCounters();
  const counters: Record<string, number> = {};
  for (const [k, v] of Object.entries(c1)) if (v - (c0[k] ?? 0) > 0) counters[k] = v - (c0[k] ?? 0);
  const sorted = [...ms].sort((x, y) => x - y);
  const median = sorted[Math.floor((sorted.length - 1) / 2)]!;
  const total = ms.reduce((s, x) => s + x, 0);
  const inKernels = [...opMs.values()].reduce((s, x) => s + x, 0);
  const profile: Record<string, { ms_per_step: number; share: number; calls_per_step: number }> = {};
  for (const [k, v] of [...opMs].sort((x, y) => y[1] - x[1])) {
    profile[k] = { ms_per_step: v / a.steps, share: v / total, calls_per_step: opCalls.get(k)! / a.steps };
  }
  profile['(outside backend: JS loops, optimizer, zeroGrad)'] = { ms_per_step: (total - inKernels) / a.steps, share: (total - inKernels) / total, calls_per_step: 0 };

  const out = {
    engine: 'floe',
    threads: a.threads,
    seq: T,
    rank: a.rank,
    ckpt: a.ckpt,
    fp8_block: a.fp8Block,
    load_ms: loadMs,
    warmup_ms: warm,
    step_ms: ms,
    median_step_ms: median,
    tokens_per_s: T / (median / 1000),
    mean_tokens_per_s: (T * a.steps) / (total / 1000),
    // CPU time of the whole process per timed step; ≈ threads × wall time on a quiet machine
    cpu_ms_per_step: (cpu.user + cpu.system) / 1000 / a.steps,
    losses,
    first_loss: firstLoss, // LoRA B = 0: the base model's loss
    lora_params: loraParams,
    weight_bytes: wb.total,
    weight_bytes_by_dtype: wb.byDtype,
    activation_bytes: model.activationBytes,
    rss_after_warmup: rssAfterWarmup,
    peak_rss: process.resourceUsage().maxRSS * 1024,
    profile,
    native_counters: counters,
  };
  process.stdout.write(JSON.stringify(out) + '\n');
}

main().catch((e: unknown) => {
  process.stderr.write(`train-run: ${(e as Error).stack ?? String(e)}\n`);
  process.exit(1);
});
