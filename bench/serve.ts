// Serving benchmark: a seeded request trace replayed against `floe serve` and node-llama-cpp; batched decode vs llama.cpp.
//
// usage: node --import tsx bench/serve.ts [--shapes small,1b] [--formats q8_0,fp8] [--engines floe,nlc,harness]
//          [--threads N] [--concurrency 16] [--requests N] [--rate R] [--prompt MIN-MAX] [--output MIN-MAX]
//          [--arrivals poisson|fixed] [--burst-prompt P] [--burst-decode D] [--max-batched-tokens 512] [--seed 1] [--floe-bin] [--quick] [--out FILE]
// See bench/README.md ("serve.ts") for what each figure means.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildTools, CACHE_DIR, runHarness, type HarnessRun, type Tools } from './harness/build.js';
import { ensureFp8Dir } from './fp8-gen.js';
import { ensureGguf } from './gguf-gen.js';
import { SHAPES } from './shapes.js';
import { burst, replayTrace, streamCompletion, waitHealthy, type Target } from './serve-client.js';
import type { NlcJob, NlcResult } from './serve-nlc.js';
import {
  burstPrompts, makeTrace, singleStreamRate, steadyDecodeRate, summarize,
  type RequestRecord, type TraceRequest, type TraceSummary,
} from './serve-trace.js';
import { readGguf } from '../src/formats/gguf.js';
import { ggufToTokenizerJson } from '../src/formats/gguf-tokenizer.js';
import { KvCache } from '../src/model/kv-cache.js';
import type { LlamaConfig } from '../src/model/config.js';
import { machineInfo, machineLine } from './machine.js';

const BENCH = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.dirname(BENCH);
type FloeFormat = 'q8_0' | 'fp8';
type Engine = 'floe' | 'nlc' | 'harness';
const ALL_ENGINES: readonly Engine[] = ['floe', 'nlc', 'harness'];
const CHILD_TIMEOUT_MS = 900_000;

/** Trace and burst sizes per shape; the 1B trace is scaled down so that a full run stays under 15 minutes. */
interface ShapePlan {
  requests: number;
  prompt: [number, number];
  output: [number, number];
  rate: number; // requests per second
  burstPrompt: number;
  burstDecode: number;
}
const PLANS: Record<string, ShapePlan> = {
  small: { requests: 200, prompt: [200, 400], output: [64, 128], rate: 6, burstPrompt: 256, burstDecode: 128 },
  '1b': { requests: 24, prompt: [128, 256], output: [64, 128], rate: 0.3, burstPrompt: 128, burstDecode: 64 },
};
const QUICK: ShapePlan = { requests: 6, prompt: [16, 32], output: [8, 12], rate: 4, burstPrompt: 16, burstDecode: 8 };

interface Options {
  shapes: string[];
  formats: FloeFormat[];
  engines: Engine[];
  threads: number;
  concurrency: number;
  maxBatchedTokens: number;
  seed: number;
  floeBin: boolean;
  quick: boolean;
  out: string | null;
  overrides: Partial<ShapePlan>;
  arrivals: 'poisson' | 'fixed'; // fixed: one request every 1/rate s (the issue's trace)
  speculative: string | null; // floe serve --speculative MODE: each floe format also runs with it
  numSpeculativeTokens: number | null;
}

function parseArgs(argv: readonly string[]): Options {
  const o: Options = {
    shapes: ['small', '1b'], formats: ['q8_0', 'fp8'], engines: [...ALL_ENGINES], threads: os.cpus().length, concurrency: 16,
    maxBatchedTokens: 512, seed: 1, floeBin: false, quick: false, out: null, overrides: {}, arrivals: 'poisson',
    speculative: null, numSpeculativeTokens: null,
  };
  const list = (v: string | undefined, flag: string): string[] => {
    if (!v) throw new Error(`${flag} needs a comma-separated value`);
    return v.split(',').map((s) => s.trim()).filter(Boolean);
  };
  const pos = (v: string | undefined, flag: string, integer = true): number => {
    const n = Number(v);
    if (!(n > 0) || (integer && !Number.isInteger(n))) throw new Error(`${flag} needs a positive ${integer ? 'integer' : 'number'}, got ${v}`);
    return n;
  };
  const range = (v: string | undefined, flag: string): [number, number] => {
    const m = /^(\d+)(?:-(\d+))?$/.exec(v ?? '');
    if (!m) throw new Error(`${flag} needs MIN-MAX (or one number), got ${v}`);
    const lo = Number(m[1]), hi = Number(m[2] ?? m[1]);
    if (lo < 1 || hi < lo) throw new Error(`${flag}: need 1 <= MIN <= MAX, got ${v}`);
    return [lo, hi];
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const v = argv[i + 1];
    switch (a) {
      case '--shapes': o.shapes = list(v, a); i++; break;
      case '--formats': o.formats = list(v, a) as FloeFormat[]; i++; break;
      case '--engines': o.engines = list(v, a) as Engine[]; i++; break;
      case '--threads': o.threads = pos(v, a); i++; break;
      case '--concurrency': o.concurrency = pos(v, a); i++; break;
      case '--max-batched-tokens': o.maxBatchedTokens = pos(v, a); i++; break;
      case '--seed': o.seed = pos(v, a); i++; break;
      case '--requests': o.overrides.requests = pos(v, a); i++; break;
      case '--rate': o.overrides.rate = pos(v, a, false); i++; break;
      case '--arrivals':
        if (v !== 'poisson' && v !== 'fixed') throw new Error(`--arrivals needs poisson or fixed, got ${v}`);
        o.arrivals = v; i++; break;
      case '--prompt': o.overrides.prompt = range(v, a); i++; break;
      case '--output': o.overrides.output = range(v, a); i++; break;
      case '--burst-prompt': o.overrides.burstPrompt = pos(v, a); i++; break;
      case '--burst-decode': o.overrides.burstDecode = pos(v, a); i++; break;
      case '--floe-bin': o.floeBin = true; break;
      case '--quick': o.quick = true; break;
      case '--speculative': if (!v) throw new Error('--speculative needs ngram, suffix or a draft model path'); o.speculative = v; i++; break;
      case '--num-speculative-tokens': o.numSpeculativeTokens = pos(v, a); i++; break;
      case '--out': if (!v) throw new Error('--out needs a file'); o.out = v; i++; break;
      default: throw new Error(`unknown argument ${a}; see the usage line at the top of bench/serve.ts`);
    }
  }
  for (const s of o.shapes) if (!SHAPES[s] || !PLANS[s]) throw new Error(`unknown shape "${s}"; known: ${Object.keys(PLANS).join(', ')}`);
  for (const f of o.formats) if (f !== 'q8_0' && f !== 'fp8') throw new Error(`unknown floe format "${f}"; known: q8_0, fp8`);
  for (const e of o.engines) if (!ALL_ENGINES.includes(e)) throw new Error(`unknown engine "${e}"; known: ${ALL_ENGINES.join(', ')}`);
  return o;
}

const START = performance.now();
const log = (s: string): void => { process.stderr.write(`[${((performance.now() - START) / 1000).toFixed(0).padStart(4)} s] ${s}\n`); };
const fmt = (x: number | undefined | null, d = 1): string => (x === undefined || x === null || !Number.isFinite(x) ? '—' : x.toFixed(d));
const ratio = (a: number | null | undefined, b: number | null | undefined): number | null => (a && b ? a / b : null);

// ---------------------------------------------------------------- models

/**
 * The FP8 checkpoint plus a tokenizer (from the same shape's GGUF vocabulary), so that floe streams text and token
 * ids per token; weights and config are symlinked from the cached FP8 directory.
 */
async function fp8ServeDir(shapeName: string, c: LlamaConfig, gguf: string): Promise<string> {
  const src = ensureFp8Dir(CACHE_DIR, shapeName, c, log);
  const dir = `${src}-serve`;
  if (fs.existsSync(path.join(dir, 'tokenizer.json'))) return dir;
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  for (const f of fs.readdirSync(src)) fs.symlinkSync(path.join(src, f), path.join(dir, f));
  const files = ggufToTokenizerJson((await readGguf(gguf)).metadata);
  fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify(files.tokenizerConfig));
  fs.writeFileSync(path.join(dir, 'tokenizer.json.tmp'), JSON.stringify(files.tokenizerJson));
  fs.renameSync(path.join(dir, 'tokenizer.json.tmp'), path.join(dir, 'tokenizer.json'));
  return dir;
}

function promptFile(ids: readonly number[], name: string): string {
  const file = path.join(CACHE_DIR, name);
  fs.writeFileSync(file, ids.join(' ') + '\n');
  return file;
}

// ---------------------------------------------------------------- floe

interface FloeServer { readonly target: Target; readonly proc: ChildProcess; readonly logTail: () => string }

async function startFloe(model: string, o: Options, kvBytes: number, speculative: boolean): Promise<FloeServer> {
  const entry = o.floeBin ? [path.join(ROOT, 'bin', 'floe.js')] : ['--import', 'tsx', path.join(BENCH, 'serve-floe-src.ts')];
  const args = [...entry, 'serve', '--model', model, '--port', '0', '--model-name', 'bench', '--threads', String(o.threads),
    '--max-num-seqs', String(o.concurrency), '--max-batched-tokens', String(o.maxBatchedTokens), '--kv-cache-memory', String(kvBytes),
    '--max-queue', '100000', '--shutdown-grace', '0',
    // KV committed at start, as llama.cpp's own buffers are (a few hundred MB here, done within the warm-up)
    '--kv-prefault'];
  if (speculative && o.speculative) {
    args.push('--speculative', o.speculative);
    if (o.numSpeculativeTokens !== null) args.push('--num-speculative-tokens', String(o.numSpeculativeTokens));
  }
  const proc = spawn(process.execPath, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let exit: string | null = null;
  proc.stdout!.on('data', (d: Buffer) => { out += d.toString(); });
  proc.stderr!.on('data', (d: Buffer) => { out += d.toString(); });
  proc.on('exit', (code, sig) => { exit = `floe serve exited (${code ?? sig}) before it was ready: ${out.trim().split('\n').slice(-5).join(' | ')}`; });
  const url = await new Promise<string>((resolve, reject) => {
    const t = setInterval(() => {
      const m = /listening on (http:\/\/\S+)/.exec(out);
      if (m) { clearInterval(t); resolve(m[1]!); } else if (exit) { clearInterval(t); reject(new Error(exit)); }
    }, 50);
  });
  await waitHealthy(url, 600_000, () => exit);
  return { target: { url, model: 'bench' }, proc, logTail: () => out.trim().split('\n').slice(-5).join('\n') };
}

async function stopFloe(s: FloeServer): Promise<void> {
  if (s.proc.exitCode !== null || s.proc.signalCode !== null) return;
  const exited = new Promise<void>((r) => s.proc.once('exit', () => r()));
  s.proc.kill('SIGTERM');
  const timer = setTimeout(() => s.proc.kill('SIGKILL'), 10_000);
  await exited;
  clearTimeout(timer);
}

interface ScenarioResult {
  single?: { record: RequestRecord; tps: number | null };
  burst?: { records: RequestRecord[]; steady: ReturnType<typeof steadyDecodeRate>; wallS: number };
  trace?: { records: RequestRecord[]; summary: TraceSummary };
  error?: string;
}

function errorsOf(recs: readonly RequestRecord[]): string | null {
  const e = recs.find((r) => r.error !== null);
  return e ? `request ${e.index}: ${e.error}` : null;
}

async function runFloe(model: string, o: Options, kvBytes: number, single: readonly number[], bp: number[][], decode: number, trace: TraceRequest[], speculative = false): Promise<ScenarioResult> {
  const res: ScenarioResult = {};
  const server = await startFloe(model, o, kvBytes, speculative);
  try {
    await streamCompletion(server.target, -1, single.slice(0, 16), 2, performance.now()); // warm-up: page-in, threads
    const rec = await streamCompletion(server.target, 0, single, decode, performance.now());
    if (rec.error) throw new Error(`single stream: ${rec.error}`);
    res.single = { record: rec, tps: singleStreamRate(rec) };
    log(`    single stream: ${fmt(res.single.tps)} tok/s`);
    const b0 = performance.now();
    const recs = await burst(server.target, bp, decode);
    const be = errorsOf(recs);
    if (be) throw new Error(`burst: ${be}`);
    res.burst = { records: recs, steady: steadyDecodeRate(recs), wallS: (performance.now() - b0) / 1000 };
    log(`    ${bp.length} streams: ${fmt(res.burst.steady?.tps)} tok/s aggregate decode (${fmt(res.burst.wallS)} s)`);
    const tr = await replayTrace(server.target, trace);
    res.trace = { records: tr, summary: summarize(trace, tr) };
    log(`    trace: ${traceLine(res.trace.summary)}`);
  } catch (e) {
    res.error = `${(e as Error).message}\n${server.logTail()}`;
    log(`    floe failed: ${res.error}`);
  } finally {
    await stopFloe(server);
  }
  return res;
}

function traceLine(s: TraceSummary): string {
  return `${s.completed}/${s.requests} ok in ${fmt(s.durationS)} s, ${fmt(s.outputTps)} out tok/s, TTFT p50 ${fmt(s.ttftMs?.p50, 0)} ms, ` +
    `TPOT p50 ${fmt(s.tpotMs?.p50)} ms, e2e p50 ${fmt(s.e2eMs?.p50, 0)} ms p99 ${fmt(s.e2eMs?.p99, 0)} ms` +
    (s.errors ? `, ${s.errors} errors (${s.firstErrors.join('; ')})` : '') + (s.shortOutputs ? `, ${s.shortOutputs} short outputs` : '');
}

// ---------------------------------------------------------------- llama.cpp

function runNlc(job: NlcJob, what: string): ScenarioResult {
  const jobFile = path.join(CACHE_DIR, 'serve-nlc-job.json');
  const outFile = path.join(CACHE_DIR, 'serve-nlc-out.json');
  fs.writeFileSync(jobFile, JSON.stringify(job));
  fs.rmSync(outFile, { force: true });
  const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(BENCH, 'serve-nlc.ts'), jobFile, outFile],
    { cwd: ROOT, encoding: 'utf8', timeout: CHILD_TIMEOUT_MS, maxBuffer: 1 << 26 });
  if (r.error || r.status !== 0 || !fs.existsSync(outFile)) {
    const tail = (r.stderr || r.stdout || '').trim().split('\n').slice(-6).join('\n');
    return { error: `${what}: ${r.error?.message ?? `exit ${r.status ?? r.signal}`}: ${tail}` };
  }
  const n = JSON.parse(fs.readFileSync(outFile, 'utf8')) as NlcResult;
  const res: ScenarioResult = {};
  if (n.single) res.single = { record: n.single, tps: singleStreamRate(n.single) };
  if (n.burst) {
    const wall = (Math.max(...n.burst.map((x) => x.endMs)) - Math.min(...n.burst.map((x) => x.sentMs))) / 1000;
    res.burst = { records: n.burst, steady: steadyDecodeRate(n.burst), wallS: wall };
  }
  if (n.trace) res.trace = { records: n.trace, summary: summarize(job.trace!, n.trace) };
  const errs = [n.single ? errorsOf([n.single]) : null, n.burst ? errorsOf(n.burst) : null].filter(Boolean);
  if (errs.length) res.error = errs.join('; ');
  return res;
}

// ---------------------------------------------------------------- main

interface ShapeResult {
  shape: string;
  plan: ShapePlan;
  scaledDown: string | null;
  floe: Partial<Record<string, ScenarioResult>>; // per format, and `<format>+spec:...` with --speculative
  nlc?: ScenarioResult;
  harness?: { multi?: HarnessRun; single?: HarnessRun; error?: string };
  headline: Record<string, number | null>;
}


async function main(): Promise<void> {
  log(`machine: ${machineLine()}`);
  const o = parseArgs(process.argv.slice(2));
  const t0 = performance.now();
  const notes: string[] = [];
  const tools = buildTools();
  notes.push(...tools.notes);
  const load = os.loadavg()[0]!;
  if (load > os.cpus().length * 0.5) notes.push(`load average ${load.toFixed(1)} on ${os.cpus().length} CPUs at start: other processes share the cores, timings are distorted`);
  log(`floe serve bench: shapes ${o.shapes.join(',')}, floe formats ${o.formats.join(',')}, engines ${o.engines.join(',')}, ${o.threads} threads, concurrency ${o.concurrency}${o.quick ? ' (quick: a pipeline check, not a measurement)' : ''}`);
  const results: ShapeResult[] = [];

  for (const shapeName of o.shapes) {
    const c = SHAPES[shapeName]!.config;
    const plan: ShapePlan = { ...(o.quick ? QUICK : PLANS[shapeName]!), ...o.overrides };
    const scaledDown = !o.quick && shapeName === '1b' && plan.requests < 200
      ? `1B trace scaled down to ${plan.requests} requests, prompts ${plan.prompt.join('-')} tokens, at ${plan.rate} req/s, so that a full run stays under 15 minutes` : null;
    if (scaledDown) notes.push(scaledDown);
    const trace = makeTrace({ numRequests: plan.requests, promptMin: plan.prompt[0], promptMax: plan.prompt[1], outputMin: plan.output[0], outputMax: plan.output[1], rate: plan.rate, arrivals: o.arrivals, vocabSize: c.vocabSize, seed: o.seed });
    const bp = burstPrompts(o.concurrency, plan.burstPrompt, c.vocabSize, o.seed + 1);
    const single = burstPrompts(1, plan.burstPrompt, c.vocabSize, o.seed + 2)[0]!;
    log(`${shapeName}: trace of ${plan.requests} requests (prompts ${plan.prompt.join('-')}, outputs ${plan.output.join('-')}, ${plan.rate} req/s), ` +
      `burst of ${o.concurrency} × (${plan.burstPrompt} prompt + ${plan.burstDecode} decode)`);
    const gguf = ensureGguf(CACHE_DIR, shapeName, c, 'q8_0', log);
    const perSeq = Math.max(plan.prompt[1] + plan.output[1], plan.burstPrompt + plan.burstDecode) + 32;
    const kvBytes = Math.ceil(KvCache.bytesPerToken(c.numLayers, c.numKvHeads, c.headDim, 'bf16') * perSeq * (o.concurrency + 2) * 1.25);
    const sr: ShapeResult = { shape: shapeName, plan, scaledDown, floe: {}, headline: {} };
    results.push(sr);

    if (o.engines.includes('floe')) {
      for (const f of o.formats) {
        const model = f === 'fp8' ? await fp8ServeDir(shapeName, c, gguf) : gguf;
        log(`  floe ${f}: ${path.relative(ROOT, model)}`);
        sr.floe[f] = await runFloe(model, o, kvBytes, single, bp, plan.burstDecode, trace);
        if (o.speculative) {
          log(`  floe ${f} --speculative ${o.speculative}`);
          sr.floe[specKey(f, o)] = await runFloe(model, o, kvBytes, single, bp, plan.burstDecode, trace, true);
        }
      }
    }
    if (o.engines.includes('harness') && tools.llamaBench) {
      sr.harness = {};
      try {
        const pf = promptFile(bp[0]!, `serve-prompt-${shapeName}-${plan.burstPrompt}.txt`);
        sr.harness.single = runHarness(tools.llamaBench!, tools.backendsDir, gguf, pf, o.threads, 1, plan.burstDecode, false);
        log(`  llama.cpp harness q8_0 single stream: ${fmt(sr.harness.single.decode_tps)} tok/s`);
        sr.harness.multi = runHarness(tools.llamaBench!, tools.backendsDir, gguf, pf, o.threads, o.concurrency, plan.burstDecode, true);
        log(`  llama.cpp harness q8_0 ${o.concurrency} streams: ${fmt(sr.harness.multi.decode_tps)} tok/s aggregate decode`);
      } catch (e) { sr.harness.error = (e as Error).message; log(`  ${sr.harness.error}`); }
    }
    if (o.engines.includes('nlc') && tools.llamaBench) {
      log(`  node-llama-cpp q8_0: ${o.concurrency} sequences of one context`);
      sr.nlc = runNlc({
        model: gguf, threads: o.threads, sequences: o.concurrency, batchSize: o.maxBatchedTokens, contextPerSeq: perSeq,
        trace, burst: { prompts: bp, decode: plan.burstDecode }, single: { prompt: single, decode: plan.burstDecode },
      }, `node-llama-cpp ${shapeName}`);
      if (sr.nlc.error) log(`    ${sr.nlc.error}`);
      log(`    single stream ${fmt(sr.nlc.single?.tps)} tok/s; ${o.concurrency} streams ${fmt(sr.nlc.burst?.steady?.tps)} tok/s`);
      if (sr.nlc.trace) log(`    trace: ${traceLine(sr.nlc.trace.summary)}`);
    }

    for (const f of o.formats) {
      const fl = sr.floe[f];
      sr.headline[`${f}_floe_multi_over_llama_direct`] = ratio(fl?.burst?.steady?.tps, sr.harness?.multi?.decode_tps);
      sr.headline[`${f}_floe_multi_over_floe_single`] = ratio(fl?.burst?.steady?.tps, fl?.single?.tps);
      sr.headline[`${f}_floe_p50_e2e_over_nlc`] = ratio(fl?.trace?.summary.e2eMs?.p50, sr.nlc?.trace?.summary.e2eMs?.p50);
    }
  }

  // ---------------------------------------------------------------- report
  const lines: string[] = [];
  const table = (head: string[], rows: string[][]): void => {
    const all = [head, ...rows];
    const w = head.map((_, i) => Math.max(...all.map((r) => r[i]!.length)));
    const fmtRow = (r: string[]): string => r.map((cell, i) => (i < 2 ? cell.padEnd(w[i]!) : cell.padStart(w[i]!))).join('  ');
    lines.push(fmtRow(head), w.map((x) => '-'.repeat(x)).join('  '), ...rows.map(fmtRow));
  };
  for (const sr of results) {
    const p = sr.plan;
    lines.push('', `== ${sr.shape}: trace of ${p.requests} requests, prompts ${p.prompt.join('-')} tok, outputs ${p.output.join('-')} tok (ignore_eos), ${o.arrivals === 'fixed' ? 'fixed' : 'Poisson'} ${p.rate} req/s, seed ${o.seed}${sr.scaledDown ? ' (SCALED DOWN: see notes)' : ''}`);
    const rows: string[][] = [];
    const traceRow = (name: string, fmtName: string, s: TraceSummary | undefined): void => {
      if (!s) return;
      rows.push([name, fmtName, `${s.completed}/${s.requests}`, fmt(s.ttftMs?.p50, 0), fmt(s.ttftMs?.p99, 0), fmt(s.tpotMs?.p50), fmt(s.tpotMs?.p99),
        fmt(s.e2eMs?.p50, 0), fmt(s.e2eMs?.p99, 0), fmt(s.outputTps), fmt(s.requestRate, 2)]);
    };
    for (const f of floeKeys(o)) traceRow('floe', f, sr.floe[f]?.trace?.summary);
    traceRow('node-llama-cpp', 'q8_0', sr.nlc?.trace?.summary);
    table(['engine', 'fmt', 'ok', 'TTFT p50 ms', 'p99', 'TPOT p50 ms', 'p99', 'e2e p50 ms', 'p99', 'out tok/s', 'req/s'], rows);
    lines.push('', `decode throughput, tok/s (${o.concurrency} streams: distinct ${p.burstPrompt}-token prompts, ${p.burstDecode} tokens each, all at once; steady window with every stream decoding)`);
    const trows: string[][] = [];
    for (const f of floeKeys(o)) {
      const fl = sr.floe[f];
      if (fl) trows.push(['floe', f, fmt(fl.single?.tps), fmt(fl.burst?.steady?.tps), fmt(ratio(fl.burst?.steady?.tps, fl.single?.tps), 2)]);
    }
    if (sr.harness) trows.push(['llama.cpp direct', 'q8_0', fmt(sr.harness.single?.decode_tps), fmt(sr.harness.multi?.decode_tps), fmt(ratio(sr.harness.multi?.decode_tps, sr.harness.single?.decode_tps), 2)]);
    if (sr.nlc) trows.push(['node-llama-cpp', 'q8_0', fmt(sr.nlc.single?.tps), fmt(sr.nlc.burst?.steady?.tps), fmt(ratio(sr.nlc.burst?.steady?.tps, sr.nlc.single?.tps), 2)]);
    table(['engine', 'fmt', '1 stream', `${o.concurrency} streams`, `×1 stream`], trows);
    lines.push('');
    for (const f of o.formats) {
      const h = sr.headline;
      const mark = (x: number | null | undefined, target: number, lower = false): string => (x === null || x === undefined ? '—' : `${x.toFixed(2)} ${(lower ? x <= target : x >= target) ? 'MEETS' : 'MISSES'} target ${lower ? '≤' : '≥'} ${target.toFixed(2)}`);
      const tgt = sr.shape === '1b';
      lines.push(`${sr.shape} floe ${f}: ${o.concurrency}-stream decode ÷ llama.cpp direct ${o.concurrency}-stream (q8_0) = ${tgt ? mark(h[`${f}_floe_multi_over_llama_direct`], 1.5) : fmt(h[`${f}_floe_multi_over_llama_direct`], 2)}`);
      lines.push(`${sr.shape} floe ${f}: ${o.concurrency}-stream decode ÷ floe single stream = ${tgt ? mark(h[`${f}_floe_multi_over_floe_single`], 5) : fmt(h[`${f}_floe_multi_over_floe_single`], 2)}`);
      lines.push(`${sr.shape} floe ${f}: p50 e2e ÷ node-llama-cpp p50 e2e at ${p.rate} req/s = ${mark(h[`${f}_floe_p50_e2e_over_nlc`], 1 / 3, true)}`);
    }
    for (const [what, r] of [...o.formats.map((f) => [`floe ${f}`, sr.floe[f]] as const), ['node-llama-cpp', sr.nlc] as const]) {
      if (r?.error) notes.push(`${sr.shape} ${what}: ${r.error}`);
      const s = r?.trace?.summary;
      // open loop: an engine slower than the arrivals builds a queue, so its latencies grow with the trace length
      const arrivalSpan = sr.plan.requests > 1 ? (sr.plan.requests - 1) / sr.plan.rate : 0;
      if (s && arrivalSpan > 0 && s.durationS > 1.5 * arrivalSpan + 30) {
        notes.push(`${sr.shape} ${what}: saturated at ${sr.plan.rate} req/s (served ${fmt(s.requestRate, 2)} req/s; the trace took ${fmt(s.durationS, 0)} s for ~${fmt(arrivalSpan, 0)} s of arrivals): its latencies include queueing that grows with the trace length`);
      }
    }
    if (sr.harness?.error) notes.push(`${sr.shape} llama.cpp harness: ${sr.harness.error}`);
  }
  const uniq = [...new Set(notes)];
  if (uniq.length) lines.push('', 'notes:', ...uniq.map((n) => `  - ${n}`));
  const wallS = (performance.now() - t0) / 1000;
  lines.push('', `total ${wallS.toFixed(0)} s`);
  console.log(lines.join('\n'));

  const result = {
    bench: 'serve',
    date: new Date().toISOString(),
    command: `node --import tsx bench/serve.ts ${process.argv.slice(2).join(' ')}`.trim(),
    machine: machineInfo(),
    versions: { node_llama_cpp: nlcVersion(), llama_cpp_release: tools.llamaRelease },
    options: o,
    // per-token arrival times stay in the JSON: every figure above can be recomputed from them
    shapes: results,
    notes: uniq,
    wall_s: wallS,
  };
  const out = o.out ?? path.join(BENCH, 'results', `serve-${result.date.slice(0, 19).replace(/[:T]/g, '-')}.json`);
  fs.mkdirSync(path.dirname(out), { recursive: true });
  fs.writeFileSync(out, JSON.stringify(result) + '\n');
  console.log(`wrote ${path.relative(process.cwd(), out)}`);
}

/** The result key of a floe format run with --speculative. */
function specKey(f: string, o: Options): string {
  return `${f}+spec:${path.basename(o.speculative!)}${o.numSpeculativeTokens !== null ? `:k${o.numSpeculativeTokens}` : ''}`;
}

/** floe's result keys: each format, then the same with speculation when --speculative is given. */
function floeKeys(o: Options): string[] {
  return o.formats.flatMap((f) => (o.speculative ? [f, specKey(f, o)] : [f]));
}

function nlcVersion(): string | null {
  try {
    return (JSON.parse(fs.readFileSync(path.join(BENCH, 'node_modules', 'node-llama-cpp', 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    return null;
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`bench/serve: ${(e as Error).stack ?? String(e)}\n`);
  process.exit(1);
});
