// floe plan against floe itself at the Llama-3.2-1B shape: the planned bytes vs the peak RSS growth floe measures for
// (a) serving: weights + a filled KV cache of a given budget + one max-batched-tokens step, (b) a LoRA step (forward,
// backward, AdamW) with and without activation checkpointing. Each measurement is a child process (own peak RSS);
// growth = VmHWM − VmRSS after the imports, before the model is opened.
//
// usage: node --import tsx bench/plan-check.ts [--cache DIR] [--kv 2GiB] [--seq 512] [--rank 16] [--threads N] [--json FILE]
// Uses the random 1B bf16 GGUF of bench/gguf-gen.ts (made in the cache on first use, 2.5 GB).

import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ensureGguf } from './gguf-gen.js';
import { SHAPES } from './shapes.js';

const BENCH = path.dirname(fileURLToPath(import.meta.url));
const status = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(fs.readFileSync('/proc/self/status', 'utf8'))![1]) * 1024;

async function child(mode: string, model: string, a: Record<string, number>): Promise<void> {
  const { selectBackend } = await import('../src/backend/select.js');
  const { loadModel } = await import('../src/formats/load.js');
  const { LlamaModel } = await import('../src/model/llama.js');
  const { KvCache } = await import('../src/model/kv-cache.js');
  const { LlamaTrainModel } = await import('../src/model/llama-train.js');
  const { initLora, LORA_TARGETS } = await import('../src/model/lora.js');
  const { Optimizer, DEFAULT_OPTIMIZER } = await import('../src/train/optimizer.js');
  const be = selectBackend('native', a.threads);
  const baseline = status('VmRSS');
  const loaded = await loadModel(model);
  const c = loaded.config;
  const T = a.seq!;
  let r = 0x12345;
  const rnd = () => ((r = (Math.imul(r, 1103515245) + 12345) >>> 0) / 2 ** 32);
  const tokens = Int32Array.from({ length: T }, () => Math.floor(rnd() * c.vocabSize));
  if (mode === 'serve') {
    const m = LlamaModel.fromTensors(c, loaded.tensors, be, loaded.ropeFreqFactors);
    const perBlock = KvCache.bytesPerToken(c.numLayers, c.numKvHeads, c.headDim, 'bf16') * 16;
    const numBlocks = Math.floor(a.kv! / perBlock);
    const kv = new KvCache(c.numLayers, numBlocks, 16, c.numKvHeads, c.headDim, 'bf16');
    for (const l of kv.layers) { l.k.fill(1); l.v.fill(1); } // a full cache
    const nb = Math.ceil(T / 16);
    m.forward({
      tokens, positions: Int32Array.from({ length: T }, (_, i) => i), slots: Int32Array.from({ length: T }, (_, i) => i),
      attn: { numSeqs: 1, qStart: Int32Array.from([0, T]), ctxLen: Int32Array.from([T]), blockTables: Int32Array.from({ length: nb }, (_, i) => i), maxBlocks: nb },
      logitRows: Int32Array.from([T - 1]),
    }, kv);
    process.stdout.write(JSON.stringify({ growth: status('VmHWM') - baseline, kvTokens: numBlocks * 16 }) + '\n');
    return;
  }
  const ckpt = mode === 'lora-ckpt';
  const adapter = initLora(c, { rank: a.rank!, alpha: 2 * a.rank!, targets: LORA_TARGETS, rslora: false, dropout: 0 }, rnd);
  const m = LlamaTrainModel.fromTensors(c, loaded.tensors, be as never, { adapter, full: false, checkpointActivations: ckpt }, loaded.ropeFreqFactors);
  const opt = new Optimizer(m.params, DEFAULT_OPTIMIZER, m.backend);
  m.zeroGrad();
  m.forwardBackward({ tokens, targets: Int32Array.from({ length: T }, (_, i) => tokens[(i + 1) % T]!), positions: Int32Array.from({ length: T }, (_, i) => i), segStart: Int32Array.from([0, T]) }, 1 / T);
  opt.update(1e-4);
  process.stdout.write(JSON.stringify({ growth: status('VmHWM') - baseline }) + '\n');
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const flag = (name: string, d: string) => { const i = argv.indexOf(`--${name}`); return i >= 0 ? argv[i + 1]! : d; };
  const { parseSize } = await import('../src/cli/args.js');
  const a = { kv: parseSize(flag('kv', '2GiB')), seq: Number(flag('seq', '512')), rank: Number(flag('rank', '16')), threads: Number(flag('threads', '0')) || undefined as unknown as number };
  if (argv[0] === '--child') return child(argv[1]!, argv[2]!, a);
  const { plan, PLAN_DEFAULTS, ALL_LORA_TARGETS } = await import('../src/platform/plan.js');
  const cache = path.resolve(flag('cache', path.join(BENCH, '.cache')));
  fs.mkdirSync(cache, { recursive: true });
  const shape = SHAPES['1b']!;
  const gguf = ensureGguf(cache, '1b', shape.config, 'bf16', (s) => process.stderr.write(s + '\n'));
  const run = (mode: string) => {
    const r = spawnSync(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), '--child', mode, gguf, ...argv], { encoding: 'utf8', maxBuffer: 1 << 20 });
    if (r.status !== 0) throw new Error(`${mode}: ${r.stderr}`);
    return JSON.parse(r.stdout.trim().split('\n').pop()!) as { growth: number; kvTokens?: number };
  };
  const c = shape.config;
  const base = { ...PLAN_DEFAULTS, dtype: 'bf16' as const, context: 1, concurrency: 1, deviceMemory: 1e15 };
  const rows: { what: string; planned: number; measured: number }[] = [];
  const serve = run('serve');
  // the serving step: maxBatchedTokens = seq tokens, one logit row; the KV as allocated (whole blocks of the budget)
  const ps = plan(c, { ...base, maxBatchedTokens: a.seq, context: serve.kvTokens!, concurrency: 1 });
  rows.push({ what: `serve: weights + ${(a.kv / 2 ** 30).toFixed(2)} GiB KV + ${a.seq}-token step`, planned: ps.device.total, measured: serve.growth });
  for (const ckpt of [false, true]) {
    const m = run(ckpt ? 'lora-ckpt' : 'lora');
    const p = plan(c, { ...base, train: { loraRank: a.rank, loraTargets: ALL_LORA_TARGETS, microBatch: 1, seqLen: a.seq, checkpointActivations: ckpt, zero: 0 } });
    rows.push({ what: `LoRA r${a.rank} step, ${a.seq} tokens${ckpt ? ', checkpointed' : ''}`, planned: p.device.total, measured: m.growth });
  }
  const gb = (b: number) => (b / 2 ** 30).toFixed(3).padStart(8) + ' GiB';
  process.stdout.write(`floe plan vs measured peak RSS growth, Llama-3.2-1B shape (bf16 GGUF ${gguf})\n`);
  for (const r of rows) {
    const ratio = r.measured / r.planned;
    process.stdout.write(`${r.what.padEnd(52)} planned ${gb(r.planned)}  measured ${gb(r.measured)}  measured/planned ${ratio.toFixed(3)}${Math.abs(ratio - 1) <= 0.05 ? '' : '  OUTSIDE 5%'}\n`);
  }
  const out = flag('json', '');
  if (out) fs.writeFileSync(out, JSON.stringify({ gguf, ...a, rows }, null, 1) + '\n');
}

await main();
