// Core benchmark: floe vs llama.cpp (node-llama-cpp and a C++ harness on the same .so) vs PyTorch, plus the memory ceiling.
//
// usage: node --import tsx bench/core.ts [--shapes small,1b] [--formats f16,bf16,q8_0,fp8] [--threads 1,2]
//          [--engines floe,nlc,harness,torch] [--prompt 512] [--decode 128] [--torch-dtypes bf16,f32]
//          [--torch-f32-1b] [--quick] [--rounds R] [--out FILE]
// --rounds R: floe, llama.cpp and the bandwidth probe R times over per (shape, format, threads), in alternation, so
// that a host whose bandwidth drifts from minute to minute hits both engines alike. Each engine's cells come from its
// run with the median decode speed (use an odd R), the ceiling from the median of the row's probes; the per-round
// floe ÷ llama.cpp ratios and their median (the paired figure, the one to quote) are printed and kept (rows[].rounds).
// Every engine runs in its own child process, one (shape, format, threads) at a time; see bench/README.md.

import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildTools, CACHE_DIR, type Tools } from './harness/build.js';
import { ensureFp8Dir, fp8WeightBytes } from './fp8-gen.js';
import { ensureGguf, ggufWeightBytes, type GgufFormat } from './gguf-gen.js';
import { SHAPES, type BenchShape } from './shapes.js';
import { ggufToHfName, readGguf } from '../src/formats/gguf.js';
import { KvCache } from '../src/model/kv-cache.js';
import { machineInfo, machineLine } from './machine.js';

/** The Python that runs the PyTorch peer: Debian's (apt install python3-torch), or FLOE_PYTHON. */
const PY = process.env.FLOE_PYTHON ?? '/usr/bin/python3';
const BENCH = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.dirname(BENCH);
const GGUF_FORMATS = ['f16', 'bf16', 'q8_0'] as const;
type Format = GgufFormat | 'fp8';
const ALL_FORMATS: readonly Format[] = [...GGUF_FORMATS, 'fp8'];
type Engine = 'floe' | 'nlc' | 'harness' | 'torch';
const ALL_ENGINES: readonly Engine[] = ['floe', 'nlc', 'harness', 'torch'];
const CHILD_TIMEOUT_MS = 900_000;

interface Options {
  shapes: string[];
  formats: Format[];
  threads: number[];
  engines: Engine[];
  prompt: number;
  decode: number;
  torchDtypes: string[];
  torchF32For1b: boolean;
  rounds: number;
  out: string | null;
}

function parseArgs(argv: readonly string[]): Options {
  const o: Options = {
    shapes: ['small', '1b'], formats: [...ALL_FORMATS], threads: [1, 2], engines: [...ALL_ENGINES],
    prompt: 512, decode: 128, torchDtypes: ['bf16', 'f32'], torchF32For1b: false, rounds: 1, out: null,
  };
  const list = (v: string | undefined, flag: string): string[] => {
    if (!v) throw new Error(`${flag} needs a comma-separated value`);
    return v.split(',').map((s) => s.trim()).filter(Boolean);
  };
  const posInt = (v: string | undefined, flag: string): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) throw new Error(`${flag} needs a positive integer, got ${v}`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const v = argv[i + 1];
    switch (a) {
      case '--shapes': o.shapes = list(v, a); i++; break;
      case '--formats': o.formats = list(v, a) as Format[]; i++; break;
      case '--threads': o.threads = list(v, a).map((t) => posInt(t, a)); i++; break;
      case '--engines': o.engines = list(v, a) as Engine[]; i++; break;
      case '--prompt': o.prompt = posInt(v, a); i++; break;
      case '--decode': o.decode = posInt(v, a); i++; break;
      case '--torch-dtypes': o.torchDtypes = list(v, a); i++; break;
      case '--torch-f32-1b': o.torchF32For1b = true; break;
      case '--quick': o.prompt = 64; o.decode = 16; break;
      case '--rounds': o.rounds = posInt(v, a); i++; break;
      case '--out': if (!v) throw new Error('--out needs a file'); o.out = v; i++; break;
      default: throw new Error(`unknown argument ${a}; see the usage line at the top of bench/core.ts`);
    }
  }
  for (const s of o.shapes) if (!SHAPES[s]) throw new Error(`unknown shape "${s}"; known: ${Object.keys(SHAPES).join(', ')}`);
  for (const f of o.formats) if (!ALL_FORMATS.includes(f)) throw new Error(`unknown format "${f}"; known: ${ALL_FORMATS.join(', ')}`);
  for (const e of o.engines) if (!ALL_ENGINES.includes(e)) throw new Error(`unknown engine "${e}"; known: ${ALL_ENGINES.join(', ')}`);
  return o;
}

// ---------------------------------------------------------------- child processes

interface RunResult {
  engine: string;
  prefill_tps?: number;
  decode_tps?: number;
  prefill_ms?: number;
  decode_ms?: number;
  tokens?: number[];
  [k: string]: unknown;
}

/** Runs a command, returns every JSON line it printed, or throws with its stderr tail. */
function runJson(cmd: string, args: readonly string[], what: string): RunResult[] {
  const r = spawnSync(cmd, args, { cwd: ROOT, encoding: 'utf8', timeout: CHILD_TIMEOUT_MS, maxBuffer: 1 << 26 });
  if (r.error) throw new Error(`${what}: ${r.error.message}`);
  if (r.status !== 0) {
    const tail = (r.stderr || r.stdout || '').trim().split('\n').slice(-6).join('\n');
    throw new Error(`${what}: exit ${r.status ?? r.signal}: ${tail}`);
  }
  const out = r.stdout.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as RunResult);
  if (out.length === 0) throw new Error(`${what}: printed no JSON result`);
  return out;
}

const START = performance.now();
/** Progress on stderr, stamped with seconds since start. */
const log = (s: string): void => { process.stderr.write(`[${((performance.now() - START) / 1000).toFixed(0).padStart(4)} s] ${s}\n`); };

// ---------------------------------------------------------------- helpers

/** Deterministic prompt ids in [0, V) that skip the two control tokens of the bench vocabulary (256, 257). */
function promptFile(V: number, n: number): string {
  const file = path.join(CACHE_DIR, `prompt-${V}-${n}.txt`);
  if (!fs.existsSync(file)) {
    let x = 2463534242;
    const ids: number[] = [];
    while (ids.length < n) {
      x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
      const id = x % V;
      if (id !== 256 && id !== 257) ids.push(id);
    }
    fs.writeFileSync(file, ids.join(' ') + '\n');
  }
  return file;
}

/** Where each HF-named tensor of a GGUF lies in the file, for scripts/torch_bench.py (which has no GGUF reader). */
async function torchManifest(file: string): Promise<string> {
  const out = file.replace(/\.gguf$/, '.torch-manifest.json');
  if (fs.existsSync(out) && fs.statSync(out).mtimeMs >= fs.statSync(file).mtimeMs) return out;
  const g = await readGguf(file);
  const tensors: Record<string, unknown> = {};
  for (const [name, info] of g.tensors) {
    const hf = ggufToHfName(name);
    if (!hf) continue;
    const permute = name.endsWith('.attn_q.weight') ? 'q' : name.endsWith('.attn_k.weight') ? 'k' : null;
    tensors[hf] = { offset: g.dataOffset + info.offset, shape: [...info.dims].reverse(), type: info.type, permute };
  }
  fs.writeFileSync(out, JSON.stringify({ file: path.resolve(file), tensors }) + '\n');
  return out;
}

function readF32(file: string): Float32Array {
  const b = fs.readFileSync(file);
  return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
}

function topK(x: Float32Array, k: number): number[] {
  return Array.from(x.keys()).sort((a, b) => x[b]! - x[a]! || a - b).slice(0, k);
}

/** floe (a) vs a reference engine (b) logits of the last prompt position on the same weights. */
function compareLogits(a: Float32Array, b: Float32Array): Record<string, number | boolean> {
  if (a.length !== b.length) throw new Error(`logits length differ: floe ${a.length}, llama.cpp ${b.length}`);
  let maxDiff = 0, sb = 0, sbb = 0;
  for (let i = 0; i < a.length; i++) {
    maxDiff = Math.max(maxDiff, Math.abs(a[i]! - b[i]!));
    sb += b[i]!; sbb += b[i]! * b[i]!;
  }
  const mean = sb / b.length;
  const std = Math.sqrt(Math.max(0, sbb / b.length - mean * mean));
  const ta = topK(a, 10), tb = topK(b, 10);
  const sorted = Array.from(b).sort((p, q) => q - p);
  return {
    max_abs_diff: maxDiff,
    ref_logit_std: std,
    max_diff_over_std: maxDiff / std,
    top1_agree: ta[0] === tb[0],
    top10_overlap: ta.filter((t) => tb.includes(t)).length,
    ref_top1_margin: sorted[0]! - sorted[1]!,
  };
}

function leadingAgreement(a: readonly number[] | undefined, b: readonly number[] | undefined): number {
  if (!a || !b) return 0;
  let n = 0;
  while (n < a.length && n < b.length && a[n] === b[n]) n++;
  return n;
}


function nlcVersion(): string | null {
  try {
    return (JSON.parse(fs.readFileSync(path.join(BENCH, 'node_modules', 'node-llama-cpp', 'package.json'), 'utf8')) as { version: string }).version;
  } catch {
    return null;
  }
}

const fmt = (x: number | undefined | null, d = 1): string => (x === undefined || x === null || !Number.isFinite(x) ? '—' : x.toFixed(d));
const ratio = (a: number | undefined, b: number | undefined): number | undefined => (a && b ? a / b : undefined);

// ---------------------------------------------------------------- main

interface Row {
  shape: string;
  format: Format;
  threads: number;
  floe?: RunResult;
  nlc?: RunResult;
  harness?: RunResult;
  llama?: { prefill_tps?: number; decode_tps?: number; prefill_from?: string; decode_from?: string; compared_format: GgufFormat };
  ceiling?: { bytes_per_token: number; gbps: number; decode_tps: number };
  torch_bf16_prefill_tps?: number;
  ratios?: Record<string, number | undefined>;
  sanity?: Record<string, unknown>;
  rounds?: { floe_tg?: number; llama_tg?: number; tg_ratio?: number; gbps: number }[];
  errors: string[];
}

/** The run whose `k` is the median of those that have it (the lower middle for an even count). */
function medianRun(runs: readonly (RunResult | undefined)[], k: 'decode_tps'): RunResult | undefined {
  const have = runs.filter((r): r is RunResult => r?.[k] !== undefined).sort((a, b) => a[k]! - b[k]!);
  return have[Math.floor((have.length - 1) / 2)];
}

async function main(): Promise<void> {
  log(`machine: ${machineLine()}`);
  const opts = parseArgs(process.argv.slice(2));
  const t0 = performance.now();
  const notes: string[] = [];
  log(`floe core bench: shapes ${opts.shapes.join(',')}, formats ${opts.formats.join(',')}, threads ${opts.threads.join(',')}, prompt ${opts.prompt}, decode ${opts.decode}`);
  const tools: Tools = buildTools();
  notes.push(...tools.notes);

  // memory-bandwidth ceiling, measured first on a quiet machine
  const bandwidth: Record<number, number> = {};
  for (const n of opts.threads) {
    const [r] = runJson(tools.bandwidth, ['--mib', '1024', '--threads', String(n), '--reps', '5'], `bandwidth probe (${n} threads)`);
    bandwidth[n] = r!.gbps as number;
    log(`read bandwidth, ${n} thread(s): ${fmt(bandwidth[n], 2)} GB/s`);
  }

  const rows: Row[] = [];
  const torch: Record<string, RunResult[]> = {};
  const hasTorch = fs.existsSync(PY) && spawnSync(PY, ['-c', 'import torch'], { encoding: 'utf8' }).status === 0;
  if (opts.engines.includes('torch') && !hasTorch) notes.push(`PyTorch skipped: ${PY} cannot import torch (apt install python3-torch, or FLOE_PYTHON=<a python with torch>)`);
  if (opts.engines.some((e) => e === 'nlc' || e === 'harness') && !tools.llamaBench) notes.push('llama.cpp skipped: node-llama-cpp is not installed under bench/');

  for (const shapeName of opts.shapes) {
    const shape: BenchShape = SHAPES[shapeName]!;
    const c = shape.config;
    const prompt = promptFile(c.vocabSize, opts.prompt);
    const kvPerToken = KvCache.bytesPerToken(c.numLayers, c.numKvHeads, c.headDim, 'bf16');
    const meanCtx = opts.prompt + opts.decode / 2;
    const gguf: Partial<Record<GgufFormat, string>> = {};
    const needGguf = new Set<GgufFormat>(opts.formats.filter((f): f is GgufFormat => f !== 'fp8'));
    if (opts.formats.includes('fp8')) needGguf.add('q8_0'); // fp8's llama.cpp peer
    if (opts.engines.includes('torch') && hasTorch) needGguf.add('bf16'); // PyTorch reads the BF16 weights
    for (const f of needGguf) gguf[f] = ensureGguf(CACHE_DIR, shapeName, c, f, log);
    const fp8Dir = opts.formats.includes('fp8') && opts.engines.includes('floe') ? ensureFp8Dir(CACHE_DIR, shapeName, c, log) : null;

    // llama.cpp figures per GGUF format and thread count, shared by the fp8 row
    type Peer = { nlc?: RunResult; harness?: RunResult; errors: string[]; logits?: string };
    const llamaRuns = new Map<string, Peer>();
    const llamaFor = (f: GgufFormat, n: number): Peer => {
      const key = `${f}/${n}`;
      const hit = llamaRuns.get(key);
      if (hit) return hit;
      const res = llamaRun(f, n);
      llamaRuns.set(key, res);
      return res;
    };
    // one run of each llama.cpp engine (a later round of --rounds calls this directly: a fresh measurement)
    const llamaRun = (f: GgufFormat, n: number): Peer => {
      const res: { nlc?: RunResult; harness?: RunResult; errors: string[]; logits?: string } = { errors: [] };
      const file = gguf[f]!;
      if (opts.engines.includes('harness') && tools.llamaBench) {
        const logits = path.join(CACHE_DIR, `logits-llama-${shapeName}-${f}.bin`);
        try {
          [res.harness] = runJson(tools.llamaBench, ['--model', file, '--backends', tools.backendsDir, '--prompt-file', prompt,
            '--threads', String(n), '--decode', String(opts.decode), '--logits-out', logits], `llama.cpp harness ${shapeName} ${f} ${n}t`);
          res.logits = logits;
          log(`  harness  ${shapeName} ${f} ${n}t: prefill ${fmt(res.harness!.prefill_tps)} tok/s, decode ${fmt(res.harness!.decode_tps)} tok/s`);
        } catch (e) { res.errors.push((e as Error).message); log(`  ${(e as Error).message}`); }
      }
      if (opts.engines.includes('nlc') && tools.llamaBench) {
        try {
          [res.nlc] = runJson(process.execPath, ['--import', 'tsx', path.join(BENCH, 'run-nlc.ts'), file, prompt, String(n), String(opts.decode)],
            `node-llama-cpp ${shapeName} ${f} ${n}t`);
          log(`  nlc      ${shapeName} ${f} ${n}t: prefill ${fmt(res.nlc!.prefill_tps)} tok/s, decode ${fmt(res.nlc!.decode_tps)} tok/s`);
        } catch (e) { res.errors.push((e as Error).message); log(`  ${(e as Error).message}`); }
      }
      return res;
    };

    for (const f of opts.formats) {
      for (const n of opts.threads) {
        const row: Row = { shape: shapeName, format: f, threads: n, errors: [] };
        rows.push(row);
        const peerFormat: GgufFormat = f === 'fp8' ? 'q8_0' : f;
        const floeLogits = path.join(CACHE_DIR, `logits-floe-${shapeName}-${f}.bin`);
        const floeRuns: (RunResult | undefined)[] = [], nlcRuns: (RunResult | undefined)[] = [], harnessRuns: (RunResult | undefined)[] = [];
        const probes: number[] = [];
        let peer: Peer = { errors: [] };
        for (let round = 0; round < opts.rounds; round++) {
          if (opts.rounds > 1) {
            const [b] = runJson(tools.bandwidth, ['--mib', '1024', '--threads', String(n), '--reps', '5'], `bandwidth probe (${n} threads)`);
            probes.push(b!.gbps as number);
            log(`  round ${round + 1}/${opts.rounds}: read bandwidth, ${n} thread(s): ${fmt(b!.gbps as number, 2)} GB/s`);
          }
          let fr: RunResult | undefined;
          if (opts.engines.includes('floe')) {
            const spec = f === 'fp8' ? fp8Dir! : gguf[f]!;
            try {
              [fr] = runJson(process.execPath, ['--import', 'tsx', path.join(BENCH, 'run-floe.ts'), spec, prompt, String(n), String(opts.decode),
                '--logits-out', floeLogits], `floe ${shapeName} ${f} ${n}t`);
              log(`  floe     ${shapeName} ${f} ${n}t: prefill ${fmt(fr!.prefill_tps)} tok/s, decode ${fmt(fr!.decode_tps)} tok/s`);
            } catch (e) { row.errors.push((e as Error).message); log(`  ${(e as Error).message}`); }
          }
          const p = round === 0 ? llamaFor(peerFormat, n) : llamaRun(peerFormat, n);
          if (round === 0) peer = p;
          else row.errors.push(...p.errors);
          floeRuns.push(fr);
          nlcRuns.push(p.nlc);
          harnessRuns.push(p.harness);
        }
        row.floe = medianRun(floeRuns, 'decode_tps') ?? floeRuns[0];
        row.nlc = medianRun(nlcRuns, 'decode_tps') ?? nlcRuns[0];
        row.harness = medianRun(harnessRuns, 'decode_tps') ?? harnessRuns[0];
        row.errors.push(...peer.errors);
        if (opts.rounds > 1) {
          row.rounds = floeRuns.map((fr, i) => {
            const lt = Math.max(nlcRuns[i]?.decode_tps ?? 0, harnessRuns[i]?.decode_tps ?? 0) || undefined;
            return { floe_tg: fr?.decode_tps, llama_tg: lt, tg_ratio: ratio(fr?.decode_tps, lt), gbps: probes[i]! };
          });
          log(`  ${shapeName} ${f} ${n}t decode floe ÷ llama.cpp per round: ${row.rounds.map((r) => fmt(r.tg_ratio, 2)).join(', ')}`);
        }
        const best = (k: 'prefill_tps' | 'decode_tps'): [number | undefined, string | undefined] => {
          const a = peer.nlc?.[k], b = peer.harness?.[k];
          if (a === undefined && b === undefined) return [undefined, undefined];
          return (a ?? 0) >= (b ?? 0) ? [a, 'node-llama-cpp'] : [b, 'harness'];
        };
        const [pp, ppFrom] = best('prefill_tps');
        const [dd, ddFrom] = best('decode_tps');
        row.llama = { prefill_tps: pp, decode_tps: dd, prefill_from: ppFrom, decode_from: ddFrom, compared_format: peerFormat };

        const weightBytes = f === 'fp8' ? fp8WeightBytes(c) : ggufWeightBytes(c, f);
        const bytes = weightBytes + kvPerToken * meanCtx;
        // with --rounds, the median of the row's own probes (each taken just before its round)
        const gbps = probes.length ? [...probes].sort((a, b) => a - b)[Math.floor((probes.length - 1) / 2)]! : bandwidth[n]!;
        row.ceiling = { bytes_per_token: bytes, gbps, decode_tps: (gbps * 1e9) / bytes };

        // same-model sanity check: floe and llama.cpp on the same GGUF (first thread count only)
        if (f !== 'fp8' && n === opts.threads[0] && row.floe && peer.logits && fs.existsSync(floeLogits)) {
          try {
            row.sanity = {
              ...compareLogits(readF32(floeLogits), readF32(peer.logits)),
              greedy_tokens_agree: leadingAgreement(row.floe.tokens, peer.harness?.tokens),
              floe_tokens: row.floe.tokens?.slice(0, 8),
              llama_tokens: peer.harness?.tokens?.slice(0, 8),
            };
          } catch (e) { row.errors.push((e as Error).message); }
        }
      }
    }

    if (opts.engines.includes('torch') && hasTorch) {
      const dtypes = opts.torchDtypes.filter((d) => d !== 'f32' || shapeName !== '1b' || opts.torchF32For1b);
      if (dtypes.length < opts.torchDtypes.length) notes.push(`PyTorch f32 skipped for ${shapeName} (Debian torch has reference BLAS; its oneDNN f32 path takes minutes at 1B); pass --torch-f32-1b to run it`);
      const logitsPrefix = path.join(CACHE_DIR, `logits-torch-${shapeName}`);
      try {
        torch[shapeName] = runJson(PY, [path.join(ROOT, 'scripts', 'torch_bench.py'), '--config', JSON.stringify(c),
          '--manifest', await torchManifest(gguf.bf16!), '--prompt-file', prompt, '--threads', opts.threads.join(','),
          '--dtypes', dtypes.join(','), '--logits-out', logitsPrefix], `PyTorch ${shapeName}`);
        for (const r of torch[shapeName]!) log(`  torch    ${shapeName} ${String(r.dtype)} ${String(r.threads)}t: prefill ${fmt(r.prefill_tps)} tok/s`);
        // same-model check against floe on the BF16 GGUF
        const floeBf16 = path.join(CACHE_DIR, `logits-floe-${shapeName}-bf16.bin`);
        const row = rows.find((r) => r.shape === shapeName && r.format === 'bf16' && r.threads === opts.threads[0] && r.floe);
        for (const d of dtypes) {
          const tl = `${logitsPrefix}-${d}.bin`;
          if (row && fs.existsSync(floeBf16) && fs.existsSync(tl)) {
            row.sanity = { ...row.sanity, [`vs_torch_${d}`]: compareLogits(readF32(floeBf16), readF32(tl)) };
          }
        }
      } catch (e) { notes.push((e as Error).message); log(`  ${(e as Error).message}`); }
    }
    for (const row of rows.filter((r) => r.shape === shapeName)) {
      row.torch_bf16_prefill_tps = torch[shapeName]?.find((r) => r.dtype === 'bf16' && r.threads === row.threads)?.prefill_tps;
      row.ratios = {
        prefill_floe_over_llama: ratio(row.floe?.prefill_tps, row.llama?.prefill_tps),
        decode_floe_over_llama: ratio(row.floe?.decode_tps, row.llama?.decode_tps),
        prefill_floe_over_torch_bf16: ratio(row.floe?.prefill_tps, row.torch_bf16_prefill_tps),
        decode_floe_over_ceiling: ratio(row.floe?.decode_tps, row.ceiling?.decode_tps),
        decode_llama_over_ceiling: ratio(row.llama?.decode_tps, row.ceiling?.decode_tps),
      };
    }
  }

  // ---------------------------------------------------------------- report
  const head = ['shape', 'fmt', 'thr', 'floe pp', 'llama pp', 'pp ×llama', 'torch bf16 pp', 'pp ×torch', 'floe tg', 'llama tg', 'tg ×llama', 'ceiling tg', 'tg/ceil'];
  const table = [head];
  for (const r of rows) {
    table.push([
      r.shape, r.format === 'fp8' ? 'fp8 (vs q8_0)' : r.format, String(r.threads),
      fmt(r.floe?.prefill_tps), fmt(r.llama?.prefill_tps), fmt(r.ratios?.prefill_floe_over_llama, 2),
      fmt(r.torch_bf16_prefill_tps), fmt(r.ratios?.prefill_floe_over_torch_bf16, 2),
      fmt(r.floe?.decode_tps), fmt(r.llama?.decode_tps), fmt(r.ratios?.decode_floe_over_llama, 2),
      fmt(r.ceiling?.decode_tps), fmt(r.ratios?.decode_floe_over_ceiling, 2),
    ]);
  }
  const widths = head.map((_, i) => Math.max(...table.map((row) => row[i]!.length)));
  const lines = table.map((row) => row.map((cell, i) => (i < 2 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!))).join('  '));
  lines.splice(1, 0, widths.map((w) => '-'.repeat(w)).join('  '));
  console.log(`\nprefill (pp): ${opts.prompt}-token prompt, tok/s; decode (tg): ${opts.decode} greedy steps, tok/s; llama = faster of node-llama-cpp and the C++ harness`);
  console.log(lines.join('\n'));
  const perRound = rows.filter((r) => r.rounds);
  if (perRound.length) {
    console.log(`\n${opts.rounds} rounds in alternation; cells from each engine's median run. Per round (floe ÷ llama.cpp decode, probe GB/s):`);
    for (const r of perRound) {
      const q = r.rounds!.map((x) => x.tg_ratio).filter((x): x is number => x !== undefined).sort((a, b) => a - b);
      const med = q.length ? (q.length % 2 ? q[(q.length - 1) / 2]! : (q[q.length / 2 - 1]! + q[q.length / 2]!) / 2) : undefined;
      r.ratios = { ...r.ratios, decode_floe_over_llama_paired_median: med };
      console.log(`  ${r.shape} ${r.format} ${r.threads}t: ${r.rounds!.map((x) => `${fmt(x.tg_ratio, 2)} (${fmt(x.gbps, 1)})`).join(', ')}; median ${fmt(med, 2)}`);
    }
  }
  const torchLines = Object.entries(torch).flatMap(([s, rs]) => rs.map((r) => `  ${s} ${String(r.dtype)} ${String(r.threads)}t: ${fmt(r.prefill_tps)} tok/s (${String(r.linear)})`));
  if (torchLines.length) console.log(`\nPyTorch ${torch[Object.keys(torch)[0]!]?.[0]?.torch ?? ''} prefill:\n${torchLines.join('\n')}`);
  console.log(`\nread bandwidth: ${opts.threads.map((n) => `${n}t ${fmt(bandwidth[n], 2)} GB/s`).join(', ')}`);
  for (const r of rows.filter((x) => x.sanity)) {
    const s = r.sanity!;
    if (s.max_abs_diff !== undefined) {
      console.log(`sanity ${r.shape} ${r.format}: floe vs llama.cpp last-position logits max|Δ| ${fmt(s.max_abs_diff as number, 4)} (${fmt(s.max_diff_over_std as number, 3)} σ), top-1 ${s.top1_agree ? 'agrees' : 'DIFFERS'}, top-10 overlap ${String(s.top10_overlap)}/10, greedy tokens agree for ${String(s.greedy_tokens_agree)}`);
    }
    for (const [k, v] of Object.entries(s)) {
      if (!k.startsWith('vs_torch_')) continue;
      const t = v as Record<string, number | boolean>;
      console.log(`sanity ${r.shape} ${r.format}: floe vs PyTorch ${k.slice(9)} logits max|Δ| ${fmt(t.max_abs_diff as number, 4)} (${fmt(t.max_diff_over_std as number, 3)} σ), top-1 ${t.top1_agree ? 'agrees' : 'DIFFERS'}, top-10 overlap ${String(t.top10_overlap)}/10`);
    }
  }
  for (const r of rows) for (const e of r.errors) notes.push(`${r.shape} ${r.format} ${r.threads}t: ${e}`);
  const uniqueNotes = [...new Set(notes)];
  if (uniqueNotes.length) console.log(`\nnotes:\n${uniqueNotes.map((n) => `  - ${n}`).join('\n')}`);

  const wallS = (performance.now() - t0) / 1000;
  console.log(`\ntotal ${wallS.toFixed(0)} s`);
  const result = {
    bench: 'core',
    date: new Date().toISOString(),
    command: `node --import tsx bench/core.ts ${process.argv.slice(2).join(' ')}`.trim(),
    machine: machineInfo(),
    versions: { node_llama_cpp: nlcVersion(), llama_cpp_release: tools.llamaRelease, torch: Object.values(torch)[0]?.[0]?.torch ?? null },
    options: opts,
    bandwidth_gbps: bandwidth,
    rows,
    torch,
    notes: uniqueNotes,
    wall_s: wallS,
  };
  const out = opts.out ?? path.join(BENCH, 'results', `core-${result.date.slice(0, 19).replace(/[:T]/g, '-')}.json`);
  fs.mkdirSync(path.dirname(out), { recursive: true });
  fs.writeFileSync(out, JSON.stringify(result, null, 2) + '\n');
  console.log(`wrote ${path.relative(process.cwd(), out)}`);
}

main().catch((e: unknown) => {
  process.stderr.write(`bench/core: ${(e as Error).message}\n`);
  process.exit(1);
});
