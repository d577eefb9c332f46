// Long-context benchmark: prefill and decode tokens/s at 4K..128K, peak RSS and KV memory; floe (bf16 / fp8 KV) vs llama.cpp.
//
// usage: node --import tsx bench/long-context.ts [--lengths 4096,16384,32768,65536,131072] [--decode 16] [--threads 2]
//          [--engines floe,nlc] [--kv bf16,fp8_e4m3] [--nlc-kv f16] [--format bf16] [--chunk 512] [--budget-min 15]
//          [--plan] [--force] [--out FILE]
// Every measurement runs in its own child process (this file with --child), so that peak RSS is per run.
// T prompt tokens; the model is the `small` shape with a 131072-token window and llama3 RoPE (see bench/README.md).

import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Backend, KvDType } from '../src/backend/backend.js';
import { nativeCounters } from '../src/backend/native.js';
import { selectBackend } from '../src/backend/select.js';
import { loadModel } from '../src/formats/load.js';
import type { LlamaConfig } from '../src/model/config.js';
import { KvCache } from '../src/model/kv-cache.js';
import { LlamaModel } from '../src/model/llama.js';
import { CACHE_DIR } from './harness/build.js';
import { writeRandomGguf, type GgufFormat } from './gguf-gen.js';
import { SHAPES } from './shapes.js';
import { machineInfo, machineLine } from './machine.js';

const BENCH = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.dirname(BENCH);
const SELF = fileURLToPath(import.meta.url);
const MAX_POS = 131072;
const BLOCK = 16;
const CHILD_TIMEOUT_MS = 3_600_000;
const PROBE_TOKENS = 16; // prompt tokens a memory probe computes at the end of its context

/** The small shape with Llama 3.1's window and RoPE scaling (original window 8192, so long prompts go past it). */
export const LONG_SMALL: LlamaConfig = {
  ...SHAPES.small!.config,
  ropeTheta: 500000,
  ropeScaling: { type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 },
  maxPositionEmbeddings: MAX_POS,
};

/** Attention work of a causal prefill of T tokens: 2E flops for q·k and 2E for p·v per (query, key, head, layer). */
export function attentionFlops(c: LlamaConfig, T: number): number {
  return 4 * c.headDim * c.numHeads * c.numLayers * (T * (T + 1)) / 2;
}

/** The prompt length a requested length becomes: the window must also hold the decode steps (and a margin llama.cpp wants). */
export function promptLength(requested: number, decode: number): number {
  return Math.min(requested, MAX_POS - decode - 64);
}

/** Deterministic prompt ids in [0, V) without the bench vocabulary's control tokens (256, 257). */
function promptIds(V: number, n: number): Int32Array {
  const ids = new Int32Array(n);
  let x = 2463534242;
  for (let i = 0; i < n;) {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    const id = x % V;
    if (id !== 256 && id !== 257) ids[i++] = id;
  }
  return ids;
}

const maxRssBytes = (): number => process.resourceUsage().maxRSS * 1024;
const rssBytes = (): number => process.memoryUsage.rss();

// ---------------------------------------------------------------- child: floe

interface ChildResult {
  engine: string;
  kv: string;
  prompt_tokens: number;
  decode_steps: number;
  prefill_ms: number;
  prefill_tps: number;
  decode_ms: number;
  decode_tps: number;
  peak_rss: number;
  rss_after_load: number;
  weight_bytes?: number;
  kv_bytes?: number;
  overhead_bytes?: number; // peak RSS - weights - KV
  attn_ms?: number;
  attn_gflops?: number;
  [k: string]: unknown;
}

/** A resident KV cache as a full prefill leaves it: every byte written (small finite values, fp8 scales 1/64). */
function fillKv(kv: KvCache): void {
  for (const l of kv.layers) {
    for (const b of [l.k, l.v]) {
      if (l.dtype === 'f32') new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4).fill(0.01);
      else if (l.dtype === 'bf16') new Uint16Array(b.buffer, b.byteOffset, b.byteLength / 2).fill(0x3c23); // ≈ 0.01
      else b.fill(0x38); // E4M3 1.0
    }
    l.kScale?.fill(1 / 64);
    l.vScale?.fill(1 / 64);
  }
}

/**
 * One floe measurement. With `probe`, the cache is filled without computing it and only the last PROBE_TOKENS
 * prompt tokens run (then the decode steps): the memory of a T-token context and the speed of its last steps,
 * in seconds instead of the T² prefill.
 */
async function childFloe(gguf: string, T: number, threads: number, decode: number, kvDtype: KvDType, chunk: number, probe: boolean): Promise<ChildResult> {
  const backend = selectBackend('native', threads);
  if (backend.name !== 'native') throw new Error('the native addon is not built: run npm install first');
  const loaded = await loadModel(gguf);
  // time every attention call: at long context it is the kernel that grows as T²
  let attnMs = 0;
  const timed: Backend = Object.create(backend) as Backend;
  timed.attention = (...args) => { const t0 = performance.now(); backend.attention(...args); attnMs += performance.now() - t0; };
  const model = LlamaModel.fromTensors(loaded.config, loaded.tensors, timed, loaded.ropeFreqFactors);
  const cfg = model.config;
  let weightBytes = 0;
  for (const t of loaded.tensors.values()) weightBytes += t.data.byteLength;
  const prompt = promptIds(cfg.vocabSize, T);
  const argmax = (x: Float32Array): number => { let b = 0; for (let i = 1; i < x.length; i++) if (x[i]! > x[b]!) b = i; return b; };

  const total = T + decode + 1;
  const numBlocks = Math.ceil(total / BLOCK);
  const blockTables = Int32Array.from({ length: numBlocks }, (_, i) => i);
  const step = (kv: KvCache, tokens: Int32Array, start: number): Float32Array => {
    const n = tokens.length;
    const positions = Int32Array.from({ length: n }, (_, i) => start + i);
    return model.forward({
      tokens, positions, slots: positions,
      attn: { numSeqs: 1, qStart: Int32Array.of(0, n), ctxLen: Int32Array.of(start + n), blockTables, maxBlocks: numBlocks },
      logitRows: Int32Array.of(n - 1),
    }, kv);
  };
  // warm-up: page the weights in, start the thread pool, size the workspace for a full chunk
  const warm = new KvCache(cfg.numLayers, Math.ceil(chunk / BLOCK), BLOCK, cfg.numKvHeads, cfg.headDim, kvDtype);
  step(warm, prompt.subarray(0, Math.min(chunk, T)), 0);
  const rssAfterLoad = rssBytes();
  attnMs = 0;

  const kv = new KvCache(cfg.numLayers, numBlocks, BLOCK, cfg.numKvHeads, cfg.headDim, kvDtype);
  const first = probe ? Math.max(0, T - PROBE_TOKENS) : 0;
  if (probe) fillKv(kv);
  const counters0 = nativeCounters();
  const p0 = performance.now();
  let logits: Float32Array = new Float32Array(0);
  for (let s = first; s < T; s += chunk) logits = step(kv, prompt.subarray(s, Math.min(T, s + chunk)), s); // chunked prefill, as generate()
  const prefillMs = performance.now() - p0;
  const prefillAttnMs = attnMs;
  const one = new Int32Array(1);
  one[0] = argmax(logits);
  const d0 = performance.now();
  for (let i = 0; i < decode; i++) one[0] = argmax(step(kv, one, T + i));
  const decodeMs = performance.now() - d0;
  const peak = maxRssBytes();
  const counters = Object.fromEntries(Object.entries(nativeCounters()).filter(([k, v]) => k.startsWith('attention') && v !== (counters0[k] ?? 0)));
  return {
    engine: 'floe', kv: kvDtype, threads, prompt_tokens: T, decode_steps: decode, chunk, probe,
    prefill_ms: prefillMs, prefill_tps: (T - first) / (prefillMs / 1000),
    decode_ms: decodeMs, decode_tps: decode > 0 ? decode / (decodeMs / 1000) : 0,
    attn_ms: prefillAttnMs, attn_share: prefillAttnMs / prefillMs, attn_gflops: (attentionFlops(cfg, T) - attentionFlops(cfg, first)) / (prefillAttnMs / 1000) / 1e9,
    peak_rss: peak, rss_after_load: rssAfterLoad, weight_bytes: weightBytes, kv_bytes: kv.totalBytes,
    overhead_bytes: peak - weightBytes - kv.totalBytes, attention_counters: counters,
  };
}

// ---------------------------------------------------------------- child: llama.cpp through node-llama-cpp

// node-llama-cpp lives in bench/node_modules only: typed by what we use, imported by a computed name.
type Token = number & { __token?: never };
interface NlcSequence {
  evaluateWithoutGeneratingNewTokens(tokens: Token[]): Promise<void>;
  clearHistory(): Promise<void>;
  evaluate(tokens: Token[], opts: { temperature: number; yieldEogToken: boolean }): AsyncGenerator<Token, void, void>;
}
interface NlcContext { getSequence(): NlcSequence; readonly flashAttention: boolean | string; dispose(): Promise<void> }
interface NlcModel {
  createContext(o: Record<string, unknown>): Promise<NlcContext>;
  dispose(): Promise<void>;
}
interface Nlc {
  getLlama(o: Record<string, unknown>): Promise<{
    loadModel(o: { modelPath: string; gpuLayers: number }): Promise<NlcModel>;
    readonly cpuMathCores: number; readonly llamaCppRelease: unknown;
    dispose(): Promise<void>;
  }>;
  LlamaLogLevel: { error: unknown };
}
const NLC_MODULE = 'node-llama-cpp';

async function childNlc(gguf: string, T: number, threads: number, decode: number, kvType: string, chunk: number): Promise<ChildResult> {
  const prompt = Array.from(promptIds(LONG_SMALL.vocabSize, T)) as Token[];
  const { getLlama, LlamaLogLevel } = (await import(NLC_MODULE)) as Nlc;
  const llama = await getLlama({ gpu: false, build: 'never', usePrebuiltBinaries: true, skipDownload: true, maxThreads: 0, logLevel: LlamaLogLevel.error, progressLogs: false });
  const model = await llama.loadModel({ modelPath: gguf, gpuLayers: 0 });
  const context = await model.createContext({
    contextSize: T + decode + 64,
    batchSize: chunk, // n_batch = n_ubatch: the same tokens per step as floe's chunked prefill
    threads: { ideal: threads, min: threads },
    flashAttention: 'auto',
    sequences: 1,
    ...(kvType !== 'f16' ? { experimentalKvCacheKeyType: kvType.toUpperCase(), experimentalKvCacheValueType: kvType.toUpperCase() } : {}),
  });
  const seq = context.getSequence();
  await seq.evaluateWithoutGeneratingNewTokens(prompt.slice(0, 16));
  await seq.clearHistory();
  const rssAfterLoad = rssBytes();
  const gen = seq.evaluate(prompt, { temperature: 0, yieldEogToken: true });
  const p0 = performance.now();
  const first = await gen.next();
  const prefillMs = performance.now() - p0;
  if (first.done) throw new Error('node-llama-cpp produced no token after the prompt');
  const d0 = performance.now();
  for (let i = 0; i < decode; i++) if ((await gen.next()).done) throw new Error(`node-llama-cpp stopped after ${i} decode steps`);
  const decodeMs = performance.now() - d0;
  await gen.return();
  const peak = maxRssBytes();
  const out: ChildResult = {
    engine: 'node-llama-cpp', kv: kvType, threads, prompt_tokens: T, decode_steps: decode, chunk,
    prefill_ms: prefillMs, prefill_tps: T / (prefillMs / 1000),
    decode_ms: decodeMs, decode_tps: decode > 0 ? decode / (decodeMs / 1000) : 0,
    peak_rss: peak, rss_after_load: rssAfterLoad,
    kv_bytes: (T + decode + 64) * 2 * LONG_SMALL.numLayers * LONG_SMALL.numKvHeads * LONG_SMALL.headDim * (kvType === 'q8_0' ? 34 / 32 : 2),
    flash_attention: context.flashAttention, llama_cpp: llama.llamaCppRelease, cpu_math_cores: llama.cpuMathCores,
  };
  await context.dispose();
  await model.dispose();
  await llama.dispose();
  return out;
}

// ---------------------------------------------------------------- orchestrator

type Engine = 'floe' | 'nlc';
interface Options {
  lengths: number[]; decode: number; threads: number; engines: Engine[]; kv: KvDType[]; nlcKv: string[];
  format: GgufFormat; chunk: number; budgetMin: number; plan: boolean; force: boolean; out: string | null;
}

function parseArgs(argv: readonly string[]): Options {
  const o: Options = {
    lengths: [4096, 16384, 32768, 65536, 131072], decode: 16, threads: 2, engines: ['floe', 'nlc'], kv: ['bf16', 'fp8_e4m3'], nlcKv: ['f16'],
    format: 'bf16', chunk: 512, budgetMin: 15, plan: false, force: false, out: null,
  };
  const list = (v: string | undefined, flag: string): string[] => {
    if (!v) throw new Error(`${flag} needs a comma-separated value`);
    return v.split(',').map((s) => s.trim()).filter(Boolean);
  };
  const num = (v: string | undefined, flag: string): number => {
    const n = Number(/^(\d+)[kK]$/.test(v ?? '') ? Number(v!.slice(0, -1)) * 1024 : v);
    if (!Number.isFinite(n) || n <= 0) throw new Error(`${flag} needs a positive number, got ${v}`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const v = argv[i + 1];
    switch (a) {
      case '--lengths': o.lengths = list(v, a).map((x) => Math.floor(num(x, a))); i++; break;
      case '--decode': o.decode = Math.floor(num(v, a)); i++; break;
      case '--threads': o.threads = Math.floor(num(v, a)); i++; break;
      case '--engines': o.engines = list(v, a) as Engine[]; i++; break;
      case '--kv': o.kv = list(v, a) as KvDType[]; i++; break;
      case '--nlc-kv': o.nlcKv = list(v, a); i++; break;
      case '--format': o.format = v as GgufFormat; i++; break;
      case '--chunk': o.chunk = Math.floor(num(v, a)); i++; break;
      case '--budget-min': o.budgetMin = num(v, a); i++; break;
      case '--plan': o.plan = true; break;
      case '--force': o.force = true; break;
      case '--out': if (!v) throw new Error('--out needs a file'); o.out = v; i++; break;
      default: throw new Error(`unknown argument ${a}; see the usage line at the top of bench/long-context.ts`);
    }
  }
  for (const e of o.engines) if (e !== 'floe' && e !== 'nlc') throw new Error(`unknown engine "${e}"; known: floe, nlc`);
  for (const k of o.kv) if (!['f32', 'bf16', 'fp8_e4m3'].includes(k)) throw new Error(`unknown floe KV dtype "${k}"; known: f32, bf16, fp8_e4m3`);
  if (!['f16', 'bf16', 'q8_0'].includes(o.format)) throw new Error(`unknown format "${o.format}"; known: f16, bf16, q8_0`);
  for (const l of o.lengths) if (l > MAX_POS) throw new Error(`length ${l} is past the model's window of ${MAX_POS}`);
  o.lengths.sort((a, b) => a - b);
  return o;
}

const START = performance.now();
const log = (s: string): void => { process.stderr.write(`[${((performance.now() - START) / 1000).toFixed(0).padStart(5)} s] ${s}\n`); };

interface Run { engine: Engine; kv: string; label: string }

function runChild(run: Run, gguf: string, T: number, o: Options, probe = false): ChildResult {
  // the same node flags as this process (--import tsx from sources; none when compiled)
  const args = [...process.execArgv, SELF, '--child', run.engine, gguf, String(T), String(o.threads), String(o.decode), run.kv, String(o.chunk), probe ? 'probe' : 'full'];
  const r = spawnSync(process.execPath, args, { cwd: ROOT, encoding: 'utf8', timeout: CHILD_TIMEOUT_MS, maxBuffer: 1 << 24 });
  if (r.error) throw new Error(`${run.label} at ${T}: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`${run.label} at ${T}: exit ${r.status ?? r.signal}: ${(r.stderr || r.stdout).trim().split('\n').slice(-5).join('\n')}`);
  const line = r.stdout.split('\n').find((l) => l.startsWith('{'));
  if (!line) throw new Error(`${run.label} at ${T}: printed no JSON result`);
  return JSON.parse(line) as ChildResult;
}

/** Seconds a run at T takes: prefill a·T + b·T² and decode steps·(c + d·T), fitted on two short calibration runs. */
interface Model { a: number; b: number; c: number; d: number }
function fit(r1: ChildResult, r2: ChildResult): Model {
  const [t1, t2] = [r1.prompt_tokens, r2.prompt_tokens];
  const [p1, p2] = [r1.prefill_ms / 1000, r2.prefill_ms / 1000];
  // p = a t + b t²  → two equations
  const b = Math.max(0, (p2 / t2 - p1 / t1) / (t2 - t1));
  const a = Math.max(0, p1 / t1 - b * t1);
  const [s1, s2] = [r1.decode_ms / 1000 / r1.decode_steps, r2.decode_ms / 1000 / r2.decode_steps];
  const d = Math.max(0, (s2 - s1) / (t2 - t1));
  const c = Math.max(0, s1 - d * t1);
  return { a, b, c, d };
}
const predict = (m: Model, T: number, decode: number): number => m.a * T + m.b * T * T + decode * (m.c + m.d * T) + 3; // + start-up


const f = (x: number | undefined, d = 1): string => (x === undefined || !Number.isFinite(x) ? '—' : x.toFixed(d));
const mib = (b: number | undefined): string => (b === undefined ? '—' : (b / 2 ** 20).toFixed(0));

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  log(`machine: ${machineLine()}`);
  const gguf = path.join(CACHE_DIR, `small128k-${o.format}-v1.gguf`);
  if (!fs.existsSync(gguf)) { log(`writing ${gguf}`); writeRandomGguf(LONG_SMALL, o.format, gguf); }
  const runs: Run[] = [
    ...(o.engines.includes('floe') ? o.kv.map((kv) => ({ engine: 'floe' as const, kv, label: `floe ${kv} KV` })) : []),
    ...(o.engines.includes('nlc') ? o.nlcKv.map((kv) => ({ engine: 'nlc' as const, kv, label: `llama.cpp ${kv} KV` })) : []),
  ];
  const lengths = o.lengths.map((l) => ({ requested: l, T: promptLength(l, o.decode) }));
  const results = new Map<string, ChildResult>(); // `${label}@${T}`: full runs
  const probes = new Map<string, ChildResult>(); // floe memory probes

  // floe memory probes: every length, every KV dtype (seconds each)
  if (!o.plan) {
    for (const run of runs.filter((r) => r.engine === 'floe')) {
      for (const { T } of lengths) {
        let r: ChildResult;
        try { r = runChild(run, gguf, T, o, true); } catch (e) { log(`probe ${run.label} T=${T} failed: ${(e as Error).message}`); continue; }
        probes.set(`${run.label}@${T}`, r);
        log(`probe ${run.label} T=${T}: KV ${mib(r.kv_bytes)} MiB, peak RSS ${mib(r.peak_rss)} MiB, RSS - weights - KV ${mib(r.overhead_bytes)} MiB, decode ${f(r.decode_tps, 1)} tok/s`);
      }
    }
  }

  // calibrate each run on two short prompts, then plan what fits the time budget
  const CAL = [1024, 4096];
  const models = new Map<string, Model>();
  for (const run of runs) {
    let cal: ChildResult[];
    try { cal = CAL.map((T) => runChild(run, gguf, T, o)); } catch (e) { log(`${run.label}: calibration failed, not run: ${(e as Error).message}`); continue; }
    cal.forEach((r) => results.set(`${run.label}@${r.prompt_tokens}`, r));
    models.set(run.label, fit(cal[0]!, cal[1]!));
    log(`${run.label}: calibration prefill ${f(cal[0]!.prefill_tps, 0)} / ${f(cal[1]!.prefill_tps, 0)} tok/s at ${CAL.join(' / ')}`);
  }
  const plan: { run: Run; T: number; requested: number; sec: number; keep: boolean }[] = [];
  for (const run of runs.filter((r) => models.has(r.label))) {
    for (const l of lengths) plan.push({ run, ...l, sec: results.has(`${run.label}@${l.T}`) ? 0 : predict(models.get(run.label)!, l.T, o.decode), keep: true });
  }
  const budget = o.budgetMin * 60 - (performance.now() - START) / 1000;
  const total = (): number => plan.filter((p) => p.keep).reduce((a, p) => a + p.sec, 0);
  // until the plan fits: at the longest length still planned, drop floe's extra KV dtypes first, then the whole length
  // (so that every length kept has both engines and its ratio)
  while (!o.force && total() > budget) {
    const live = plan.filter((p) => p.keep && p.sec > 0);
    if (live.length === 0) break;
    const T = Math.max(...live.map((p) => p.T));
    const atT = live.filter((p) => p.T === T);
    const extra = atT.filter((p) => p.run.engine === 'floe' && p.run.kv !== o.kv[0]);
    for (const p of extra.length > 0 ? extra : atT) p.keep = false;
  }
  for (const p of plan) log(`plan: ${p.run.label.padEnd(20)} T=${String(p.T).padStart(6)}  ~${f(p.sec / 60, 1)} min${p.keep ? '' : '  (skipped: over the time budget; --force runs it)'}`);
  log(`plan: ~${f(total() / 60, 1)} min of ${f(budget / 60, 1)} min left in the budget`);
  if (o.plan) return;

  const out = o.out ?? path.join(BENCH, 'results', `long-context-${new Date().toISOString().replace(/[:.]/g, '-')}.json`);
  fs.mkdirSync(path.dirname(out), { recursive: true });
  // rewritten after every run, so that an interrupted run keeps what it measured
  const save = (): void => fs.writeFileSync(out, JSON.stringify({
    bench: 'long-context', options: o, machine: machineInfo(), config: LONG_SMALL, gguf: path.basename(gguf),
    plan: plan.map((p) => ({ run: p.run.label, T: p.T, requested: p.requested, predicted_s: p.sec, kept: p.keep, ran: results.has(`${p.run.label}@${p.T}`) })),
    results: [...results.values()], probes: [...probes.values()],
  }, null, 2) + '\n');
  save();
  for (const p of plan.filter((q) => q.keep)) {
    const key = `${p.run.label}@${p.T}`;
    if (results.has(key)) continue;
    const t0 = performance.now();
    let r: ChildResult;
    try { r = runChild(p.run, gguf, p.T, o); } catch (e) { log(`${p.run.label} T=${p.T} failed: ${(e as Error).message}`); continue; }
    results.set(key, r);
    log(`${p.run.label} T=${p.T}: prefill ${f(r.prefill_tps, 0)} tok/s, decode ${f(r.decode_tps, 1)} tok/s, peak RSS ${mib(r.peak_rss)} MiB` +
      `${r.overhead_bytes !== undefined ? `, RSS - weights - KV ${mib(r.overhead_bytes)} MiB` : ''}` +
      `${r.attn_gflops !== undefined ? `, attention ${f(r.attn_gflops, 1)} GFLOP/s (${f(100 * (r.attn_share as number), 0)}% of prefill)` : ''} (${f((performance.now() - t0) / 1000, 0)} s, predicted ${f(p.sec, 0)} s)`);
    save();
  }
  printTable(runs, [...new Set([...CAL, ...lengths.map((l) => l.T)])].sort((x, y) => x - y), results, probes);
  save();
  log(`wrote ${path.relative(ROOT, out)}`);
}

/** One row per prompt length: prefill and decode speeds, ratios to llama.cpp, KV and RSS. */
function printTable(runs: readonly Run[], Ts: readonly number[], results: ReadonlyMap<string, ChildResult>, probes: ReadonlyMap<string, ChildResult>): void {
  const floeRuns = runs.filter((r) => r.engine === 'floe');
  const llamaRun = runs.find((r) => r.engine === 'nlc');
  const full = (label: string, T: number): ChildResult | undefined => results.get(`${label}@${T}`);
  // decode speed: the full run's, else the probe's (same work: decode reads the whole cache either way), marked *
  const tg = (label: string, T: number): string => {
    const r = full(label, T);
    if (r) return f(r.decode_tps, 1);
    const p = probes.get(`${label}@${T}`);
    return p ? `${f(p.decode_tps, 1)}*` : '—';
  };
  const mem = (label: string, T: number): ChildResult | undefined => full(label, T) ?? probes.get(`${label}@${T}`);
  const head = ['T', ...floeRuns.map((r) => `pp ${r.kv}`), ...(llamaRun ? ['pp llama', 'pp ×llama'] : []), ...floeRuns.map((r) => `tg ${r.kv}`),
    ...(llamaRun ? ['tg llama', 'tg ×llama'] : []), ...floeRuns.map((r) => `KV ${r.kv} MiB`), ...floeRuns.map((r) => `peak/over ${r.kv} MiB`),
    ...(llamaRun ? ['llama peak MiB'] : []), 'attn GFLOP/s'];
  const rows: string[][] = [];
  for (const T of Ts) {
    const ll = llamaRun ? full(llamaRun.label, T) : undefined;
    const f0 = floeRuns[0] ? full(floeRuns[0].label, T) : undefined;
    if (!ll && floeRuns.every((r) => !full(r.label, T) && !probes.has(`${r.label}@${T}`))) continue;
    rows.push([String(T),
      ...floeRuns.map((r) => f(full(r.label, T)?.prefill_tps, 0)),
      ...(llamaRun ? [f(ll?.prefill_tps, 0), f(f0 && ll ? f0.prefill_tps / ll.prefill_tps : undefined, 2)] : []),
      ...floeRuns.map((r) => tg(r.label, T)),
      ...(llamaRun ? [f(ll?.decode_tps, 1), f(f0 && ll ? f0.decode_tps / ll.decode_tps : undefined, 2)] : []),
      ...floeRuns.map((r) => mib(mem(r.label, T)?.kv_bytes)),
      ...floeRuns.map((r) => { const m = mem(r.label, T); return m ? `${mib(m.peak_rss)}/${mib(m.overhead_bytes)}` : '—'; }),
      ...(llamaRun ? [mib(ll?.peak_rss)] : []), f(f0?.attn_gflops, 1)]);
  }
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (r: string[]): string => r.map((c, i) => c.padStart(widths[i]!)).join('  ');
  process.stdout.write(`\n${line(head)}\n${rows.map(line).join('\n')}\n`);
  process.stdout.write(`pp/tg: prefill/decode tokens per second; ×llama uses floe's ${floeRuns[0]?.kv ?? '—'} KV; * = decode measured by the memory probe ` +
    `(cache filled, not computed); peak/over = peak RSS and peak RSS - weights - KV; attn GFLOP/s = floe prefill attention flops / time in backend.attention.\n`);
}

async function child(argv: readonly string[]): Promise<void> {
  const [engine, gguf, T, threads, decode, kv, chunk, mode] = argv;
  if (!engine || !gguf || !T || !threads || !decode || !kv || !chunk) throw new Error('usage: --child floe|nlc <gguf> <T> <threads> <decode> <kv> <chunk> [full|probe]');
  const r = engine === 'floe'
    ? await childFloe(gguf, Number(T), Number(threads), Number(decode), kv as KvDType, Number(chunk), mode === 'probe')
    : await childNlc(gguf, Number(T), Number(threads), Number(decode), kv, Number(chunk));
  process.stdout.write(JSON.stringify(r) + '\n');
}

const argv = process.argv.slice(2);
if (process.argv[1] && path.resolve(process.argv[1]) === SELF) {
  (argv[0] === '--child' ? child(argv.slice(1)) : main()).catch((e: unknown) => {
    process.stderr.write(`long-context: ${(e as Error).stack ?? String(e)}\n`);
    process.exit(1);
  });
}
