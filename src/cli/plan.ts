// `floe plan`: memory per device for serving or fine-tuning a model on a cluster, and on this machine.

import * as fs from 'node:fs';
import * as path from 'node:path';
import type { KvDType } from '../backend/backend.js';
import { parseHfConfig, readHfConfig, type Fp8Quantization } from '../formats/hf-config.js';
import { readSafetensorsDir } from '../formats/safetensors.js';
import { LOAD_DTYPES, weightHeaders, type LoadDType, type WeightHeader } from '../formats/load.js';
import type { DType } from '../tensor/tensor.js';
import type { LlamaConfig } from '../formats/llama-config.js';
import { loraTargetsFlag } from './train-args.js';
import { ALL_LORA_TARGETS, heldDtype, heldWeightBytes, hostMemory, plan, PLAN_DEFAULTS, presetConfig, PRESETS, type Plan, type PlanDType, type PlanOptions } from '../platform/plan.js';
import { formatStages } from '../parallel/stages.js';
import { conflicts, num, parse, parseSize, swapSpaceFlag, UsageError } from './args.js';

/**
 * The model's config; where the source says, the dtype its first layer's q projection is stored in (null: unknown),
 * which sets the default --dtype and KV dtype as floe's engine picks them (defaultKvDtype); and, for a GGUF or a
 * directory with safetensors, every weight's header (formats/load.ts weightHeaders), which the weights are counted from.
 */
async function modelConfig(model: string | undefined, preset: string | undefined): Promise<{
  config: LlamaConfig; stored: PlanDType | null; fp8Block?: readonly [number, number]; weights?: Map<string, WeightHeader>;
}> {
  if ((model === undefined) === (preset === undefined)) throw new UsageError(`give one of --model CONFIG.json|DIR|FILE.gguf or --preset ${Object.keys(PRESETS).join('|')}`);
  if (preset !== undefined) {
    if (!PRESETS[preset]) throw new UsageError(`--preset expects one of ${Object.keys(PRESETS).join(', ')}, got '${preset}'`);
    return { config: presetConfig(preset), stored: null };
  }
  const p = model!;
  if (!fs.existsSync(p)) throw new Error(`${p}: no such file or directory`);
  const q0 = (w: Map<string, WeightHeader>) => {
    const d = w.get('model.layers.0.self_attn.q_proj.weight')?.dtype;
    return (d && PLAN_DTYPES[d]) ?? null;
  };
  if (fs.statSync(p).isDirectory()) {
    const hf = readHfConfig(p);
    const fallback = hf.quantization ? 'fp8' : TORCH_DTYPES[hf.torchDtype ?? ''] ?? null;
    // the headers only: the files are mapped, not read
    const weights = fs.readdirSync(p).some((f) => f.endsWith('.safetensors')) ? weightHeaders(await readSafetensorsDir(p)) : undefined;
    return { config: hf.config, stored: (weights && q0(weights)) ?? fallback, fp8Block: fp8BlockOf(hf.quantization), weights };
  }
  if (p.toLowerCase().endsWith('.gguf')) {
    const { readGguf, ggufToLlamaConfig } = await import('../formats/gguf.js');
    const g = await readGguf(p);
    const weights = weightHeaders(g);
    return { config: ggufToLlamaConfig(g), stored: q0(weights), weights };
  }
  let j: unknown;
  try { j = JSON.parse(fs.readFileSync(p, 'utf8')); } catch (e) { throw new Error(`${p}: cannot read config JSON: ${(e as Error).message}`); }
  const hf = parseHfConfig(j, path.resolve(p));
  return { config: hf.config, stored: hf.quantization ? 'fp8' : TORCH_DTYPES[hf.torchDtype ?? ''] ?? null, fp8Block: fp8BlockOf(hf.quantization) };
}

const fp8BlockOf = (q: Fp8Quantization | null) => (q ? (q.method === 'fp8' ? q.weightBlockSize : q.blockSize) ?? undefined : undefined);
const TORCH_DTYPES: Record<string, PlanDType> = { float32: 'f32', bfloat16: 'bf16', float16: 'f16' };
const PLAN_DTYPES: Partial<Record<DType, PlanDType>> = { f32: 'f32', bf16: 'bf16', f16: 'f16', fp8_e4m3: 'fp8', q8_0: 'q8_0' };

/** The dtypes weight matrices are held in: 'q8_0', or 'mixed (q8_0 ×14, f16 ×1, f32 ×1)' (the most matrices first, ties by name). */
function matrixDtypes(m: Readonly<Record<string, number>>): string {
  const e = Object.entries(m).sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0])).map(([d, n]) => [PLAN_DTYPES[d as DType] ?? d, n] as const);
  return e.length === 1 ? e[0]![0] : `mixed (${e.map(([d, n]) => `${d} ×${n}`).join(', ')})`;
}

const size = (v: string | undefined, name: string, fallback: number): number => {
  if (v === undefined) return fallback;
  try { return parseSize(v); } catch (e) { throw new UsageError(`--${name}: ${(e as Error).message}`); }
};

export async function planCmd(args: string[]): Promise<number> {
  const str = { type: 'string' } as const;
  const { values: v } = parse(args, {
    model: str, preset: str, dtype: str, 'kv-dtype': str, context: str, concurrency: str, devices: str, 'device-memory': str, nodes: str,
    'pipeline-parallel': str, 'tensor-parallel': str, 'lora-rank': str, 'lora-targets': str, full: { type: 'boolean' }, 'offload-ratio': str,
    'micro-batch': str, 'seq-len': str, 'checkpoint-activations': { type: 'boolean' }, zero: str, 'max-batched-tokens': str, 'swap-space': str, json: { type: 'boolean' },
  });
  conflicts(v, [['lora-rank', 'full']]);
  const { config: cfg, stored, fp8Block, weights } = await modelConfig(v.model, v.preset);
  // defaults as floe serve and finetune load this model: its weights as stored, an f32 KV cache for f32 weights, else bf16
  const dtype = (v.dtype ?? stored ?? 'bf16') as PlanDType;
  if (!['f32', 'bf16', 'f16', 'fp8', 'q8_0'].includes(dtype)) throw new UsageError(`--dtype expects f32, bf16, f16, fp8 or q8_0, got '${v.dtype}'`);
  const kvArg = v['kv-dtype'] ?? (dtype === 'f32' ? 'f32' : 'bf16');
  const kvDtype = ({ f32: 'f32', bf16: 'bf16', fp8: 'fp8_e4m3' } as Record<string, KvDType>)[kvArg];
  if (!kvDtype) throw new UsageError(`--kv-dtype expects f32, bf16 or fp8, got '${kvArg}'`);
  const one = { min: 1 };
  const training = v['lora-rank'] !== undefined || !!v.full;
  if (!training) for (const k of ['micro-batch', 'seq-len', 'checkpoint-activations', 'zero', 'lora-targets'] as const) {
    if (v[k] !== undefined) throw new UsageError(`--${k} is a training option: give --lora-rank R or --full with it`);
  }
  if (training) for (const k of ['kv-dtype', 'context', 'concurrency', 'max-batched-tokens', 'swap-space'] as const) {
    if (v[k] !== undefined) throw new UsageError(`--${k} is a serving option: a fine-tuning plan (--lora-rank / --full) has no KV cache; size a step with --micro-batch and --seq-len`);
  }
  conflicts(v, [['lora-targets', 'full']]);
  const zero = num(v.zero, 'zero', 0, true, { max: 3 }) as 0 | 1 | 2 | 3;
  // as floe finetune and serve take them: sequences fit the model's context (finetune's default: min(2048, context))
  const ctx = cfg.maxPositionEmbeddings;
  const past = (flag: string, n: string) => new UsageError(`--${flag} ${n} exceeds the model's context of ${ctx} tokens; give at most ${ctx}`);
  const seqLen = num(v['seq-len'], 'seq-len', Math.min(2048, ctx), true, one);
  if (seqLen > ctx) throw past('seq-len', v['seq-len']!);
  const context = num(v.context, 'context', training ? seqLen : ctx, true, one);
  if (context > ctx) throw past('context', v.context!);
  const loraRank = v.full ? null : num(v['lora-rank'], 'lora-rank', 8, true, one);
  if (training && loraRank !== null && loraRank > cfg.hiddenSize) throw new UsageError(`--lora-rank ${loraRank} is above the hidden size (${cfg.hiddenSize}), the most rank an adapter of this model can have (floe finetune refuses it)`);
  // a checkpoint's weights tensor by tensor, as stored or as the loader's --dtype fp8 / bf16 converts them (per-row
  // fp8 scales, as floe's --dtype fp8 makes them); --dtype f32 / f16 / q8_0, which no loader flag makes, all in that dtype
  const load = v.dtype === undefined ? undefined : (LOAD_DTYPES as readonly string[]).includes(v.dtype) ? v.dtype as LoadDType : null;
  const opts: PlanOptions = {
    dtype, kvDtype, source: stored ?? undefined, fp8Block: heldDtype(dtype, stored ?? undefined) === 'fp8' && stored === 'fp8' ? fp8Block : undefined,
    weights: weights && load !== null ? heldWeightBytes(cfg, weights, v.model!, load) : undefined,
    context,
    concurrency: num(v.concurrency, 'concurrency', 1, true, one),
    devices: num(v.devices, 'devices', PLAN_DEFAULTS.devices, true, one),
    deviceMemory: size(v['device-memory'], 'device-memory', 80e9),
    nodes: num(v.nodes, 'nodes', PLAN_DEFAULTS.nodes, true, one),
    pipelineParallel: num(v['pipeline-parallel'], 'pipeline-parallel', PLAN_DEFAULTS.pipelineParallel, true, one),
    tensorParallel: num(v['tensor-parallel'], 'tensor-parallel', PLAN_DEFAULTS.tensorParallel, true, one),
    offloadRatio: num(v['offload-ratio'], 'offload-ratio', 0, false, { max: 1 }),
    ringLayers: PLAN_DEFAULTS.ringLayers,
    maxBatchedTokens: num(v['max-batched-tokens'], 'max-batched-tokens', PLAN_DEFAULTS.maxBatchedTokens, true, one),
    swapSpace: swapSpaceFlag(v['swap-space']),
    train: training ? {
      loraRank,
      loraTargets: loraTargetsFlag(v['lora-targets']) ?? ALL_LORA_TARGETS,
      microBatch: num(v['micro-batch'], 'micro-batch', 1, true, one), seqLen,
      checkpointActivations: !!v['checkpoint-activations'], zero,
    } : undefined,
  };
  let cluster: Plan;
  try { cluster = plan(cfg, opts); } catch (e) { throw e instanceof RangeError ? new UsageError(e.message) : e; }
  // this machine: one device, its RAM, no parallelism
  const mem = fs.existsSync('/proc/meminfo') ? hostMemory(fs.readFileSync('/proc/meminfo', 'utf8')) : null;
  const local = mem ? plan(cfg, { ...opts, devices: 1, nodes: 1, pipelineParallel: 1, tensorParallel: 1, deviceMemory: mem.total, train: opts.train && { ...opts.train, zero: 0 } }) : null;
  if (v.json) {
    process.stdout.write(JSON.stringify({ options: { ...opts, deviceMemory: opts.deviceMemory }, cluster, this_machine: local && { memory_total: mem!.total, memory_available: mem!.available, plan: local } }) + '\n');
    return 0;
  }
  const p = cluster.parameters;
  const held = opts.weights?.matrices ? matrixDtypes(opts.weights.matrices) : heldDtype(dtype, stored ?? undefined);
  // what --dtype left as stored: fp8 converts the linear weights only, bf16 the f32 / f16 ones
  const asStored = v.dtype !== undefined && held !== dtype ? ` (as stored: --dtype ${dtype} converts only ${dtype === 'fp8' ? 'the linear weights' : 'f32 / f16 weights'})` : '';
  const lines = [
    `model       ${cfg.numLayers} layers, hidden ${cfg.hiddenSize}, ffn ${cfg.intermediateSize}, heads ${cfg.numHeads} (kv ${cfg.numKvHeads}), vocab ${cfg.vocabSize}`,
    `parameters  ${p.total.toLocaleString('en-US')}; weights ${gb(cluster.weightBytesTotal)} in ${held}${asStored}; KV ${cluster.kvBytesPerToken.toLocaleString('en-US')} bytes/token (${kvArg})`,
    `layout      ${opts.devices} devices on ${opts.nodes} node(s): pipeline ${opts.pipelineParallel} × tensor ${opts.tensorParallel} × data ${cluster.dataParallel}${opts.pipelineParallel > 1 ? `; stages ${formatStages(cluster.stages)} (floe's split), the fullest device stage ${cluster.fullestStage}` : ''}`,
    `mode        ${cluster.mode}${opts.train ? `: micro-batch ${opts.train.microBatch} × ${opts.train.seqLen} tokens, ${cluster.trainableParams.toLocaleString('en-US')} trainable parameters${opts.train.checkpointActivations ? ', checkpointed activations' : ''}, ZeRO ${opts.train.zero}` : `: ${opts.concurrency} × ${opts.context} tokens`}`,
    '',
    ...table([['per device', cluster], ...(local ? [['this machine', local] as [string, Plan]] : [])]),
  ];
  if (cluster.mode === 'serve') {
    lines.push('', `max concurrent sequences at ${opts.context} tokens: ${cluster.maxConcurrentSequences} per device${local ? `, ${local.maxConcurrentSequences} on this machine` : ''}`);
  }
  process.stdout.write(lines.join('\n') + '\n');
  return 0;
}

/** Decimal bytes with three significant figures where a model is small: 1.23 GB, 21.9 MB, 24.6 kB. */
function gb(b: number): string {
  if (b === 0) return '0';
  if (b >= 1e9) return `${(b / 1e9).toFixed(2)} GB`;
  return b >= 1e6 ? `${(b / 1e6).toFixed(b >= 1e8 ? 0 : b >= 1e7 ? 1 : 2)} MB` : `${(b / 1e3).toFixed(1)} kB`;
}

function table(cols: [string, Plan][]): string[] {
  const rows: [string, (d: Plan['device']) => string][] = [
    ['weights (resident)', (d) => gb(d.weights)], ['offloaded', (d) => gb(d.offloaded)], ['KV cache', (d) => gb(d.kvCache)],
    ['swap space', (d) => gb(d.swapSpace)],
    ['activations', (d) => gb(d.activations)], ['trainable params', (d) => gb(d.loraParams)], ['gradients', (d) => gb(d.gradients)],
    ['optimizer state', (d) => gb(d.optimizer)], ['total', (d) => gb(d.total)], ['memory', (d) => gb(d.capacity)], ['fits', (d) => (d.fits ? 'yes' : 'NO')],
  ];
  const w = 22;
  return [
    ''.padEnd(20) + cols.map(([n]) => n.padStart(w)).join(''),
    ...rows.map(([n, f]) => n.padEnd(20) + cols.map(([, c]) => f(c.device).padStart(w)).join('')),
  ];
}
